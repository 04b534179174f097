//! Compiling: a mapping value read once into [`Node`]s, and the event's
//! `@path`s turned into slots of the [`PathPlan`].

use serde_json::{Map, Value};

use super::super::path::KeyPath;
use super::super::resolve::{is_directive, MAX_DEPTH};
use super::super::template::{self, Piece};
use super::super::value::{json_truthy, opt_truthy};
use super::super::MAX_VALUE_BYTES;
use super::plan::PathPlan;
use super::{Condition, Node, Step, TemplatePiece};

/// Paths with more keys than this keep their own walk: the plan's trie (built,
/// cloned and dropped recursively) stays as deep as an event can be.
const MAX_PLAN_KEYS: usize = 64;

impl Node {
    /// Turns the `@path`s that read the data this node is resolved against
    /// into slots of `plan` (not those of `@arrayPath` shapes, which read the
    /// items, nor template placeholders).
    pub(super) fn slotify(&mut self, plan: &mut PathPlan) {
        match self {
            Node::Path(path) if path.keys().count() <= MAX_PLAN_KEYS => {
                let slot = plan.slot(path.clone());
                *self = Node::Slot(slot);
            }
            Node::If {
                condition: Condition::Exists(c) | Condition::Blank(c),
                then,
                otherwise,
            } => {
                c.slotify(plan);
                for branch in [then, otherwise].into_iter().flatten() {
                    branch.slotify(plan);
                }
            }
            Node::Object(members) => members.iter_mut().for_each(|(_, node)| node.slotify(plan)),
            Node::Array(items) => items.iter_mut().for_each(|node| node.slotify(plan)),
            Node::Literal(_)
            | Node::Path(_)
            | Node::Slot(_)
            | Node::Template { .. }
            | Node::TemplateText(_)
            | Node::ArrayPath { .. }
            | Node::Generic { .. } => {}
        }
    }
}

/// Builds nodes, tracking where in the mapping it is (for generic nodes).
#[derive(Default)]
pub(super) struct Compiler {
    at: Vec<Step>,
}

impl Compiler {
    /// Compiles `v`, which the interpreter would `eval` at `depth`.
    pub(super) fn node(&mut self, v: &Value, depth: usize) -> Node {
        if depth > MAX_DEPTH {
            return self.generic(depth);
        }
        match v {
            Value::Object(map) if is_directive(map) => self.directive(map, depth),
            Value::Object(map) => {
                let mut members = Vec::with_capacity(map.len());
                for (key, value) in map {
                    let node = self.member(Step::Key(key.as_str().into()), value, depth + 1);
                    members.push((key.clone(), node));
                }
                if members.iter().all(|(_, node)| matches!(node, Node::Literal(_))) {
                    let literal = members
                        .into_iter()
                        .map(|(key, node)| (key, into_literal(node)))
                        .collect();
                    return Node::Literal(Value::Object(literal));
                }
                Node::Object(members.into_boxed_slice())
            }
            Value::Array(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    nodes.push(self.member(Step::Index(i), item, depth + 1));
                }
                if nodes.iter().all(|node| matches!(node, Node::Literal(_))) {
                    return Node::Literal(Value::Array(nodes.into_iter().map(into_literal).collect()));
                }
                Node::Array(nodes.into_boxed_slice())
            }
            scalar => Node::Literal(scalar.clone()),
        }
    }

    /// Compiles the member of the current value reached by `step`.
    fn member(&mut self, step: Step, v: &Value, depth: usize) -> Node {
        self.at.push(step);
        let node = self.node(v, depth);
        self.at.pop();
        node
    }

    /// The current value, left to the interpreter.
    fn generic(&self, depth: usize) -> Node {
        Node::Generic {
            at: self.at.clone().into_boxed_slice(),
            depth,
        }
    }

    /// A directive object the interpreter would `eval` at `depth`: it runs the
    /// first `@` key, and the directive's options are evaluated at `depth + 1`.
    fn directive(&mut self, map: &Map<String, Value>, depth: usize) -> Node {
        let Some((name, options)) = map.iter().find(|(k, _)| k.starts_with('@')) else {
            return self.generic(depth);
        };
        let inner = depth + 1;
        if inner > MAX_DEPTH {
            // Options are evaluated too deep (a `@template` text fails there).
            return self.generic(depth);
        }
        self.at.push(Step::Key(name.as_str().into()));
        let node = match (name.as_str(), options) {
            ("@path", Value::String(path)) => Some(Node::Path(KeyPath::dollar(path))),
            ("@template", Value::String(text)) => Some(compile_template(text)),
            ("@literal", options) => Some(self.node(options, inner)),
            ("@if", Value::Object(opts)) => self.condition(opts, inner),
            ("@arrayPath", Value::Array(items)) => self.array_path(items, inner),
            _ => None,
        };
        self.at.pop();
        node.unwrap_or_else(|| self.generic(depth))
    }

    /// `@if` options (evaluated at `depth`); `None` when the interpreter would
    /// fail on them.
    fn condition(&mut self, opts: &Map<String, Value>, depth: usize) -> Option<Node> {
        let exists = opts.get("exists");
        let blank = opts.get("blank");
        if !opt_truthy(exists) && !opt_truthy(blank) {
            return None;
        }
        let condition = match (exists, blank) {
            (Some(exists), _) => Condition::Exists(Box::new(self.member(Step::Key("exists".into()), exists, depth))),
            (None, Some(blank)) => Condition::Blank(Box::new(self.member(Step::Key("blank".into()), blank, depth))),
            (None, None) => return None,
        };
        let then = opts
            .get("then")
            .map(|then| Box::new(self.member(Step::Key("then".into()), then, depth)));
        let otherwise = opts
            .get("else")
            .filter(|otherwise| json_truthy(otherwise))
            .map(|otherwise| Box::new(self.member(Step::Key("else".into()), otherwise, depth)));
        Some(Node::If {
            condition,
            then,
            otherwise,
        })
    }

    /// `@arrayPath` options (evaluated at `depth`); `None` unless the path is a
    /// literal string.
    fn array_path(&mut self, items: &[Value], depth: usize) -> Option<Node> {
        let Some(Value::String(path)) = items.first() else {
            return None;
        };
        let shape = match items.get(1) {
            Some(shape @ Value::Object(map)) if !map.is_empty() => {
                Some(Box::new(self.member(Step::Index(1), shape, depth)))
            }
            _ => None,
        };
        Some(Node::ArrayPath {
            path: KeyPath::dollar(path),
            shape,
        })
    }
}

fn into_literal(node: Node) -> Value {
    match node {
        Node::Literal(v) => v,
        // Only called on literals.
        _ => Value::Null,
    }
}

fn compile_template(text: &str) -> Node {
    match template::parse(text) {
        Some(pieces) => {
            let pieces: Box<[TemplatePiece]> = pieces
                .into_iter()
                .map(|piece| match piece {
                    Piece::Text(t) => TemplatePiece::Text(t.into()),
                    Piece::Placeholder(path) => TemplatePiece::Path(KeyPath::plain(path)),
                })
                .collect();
            let text_len = pieces
                .iter()
                .map(|piece| match piece {
                    TemplatePiece::Text(t) => t.len(),
                    TemplatePiece::Path(_) => 0,
                })
                .sum();
            Node::Template {
                pieces,
                text_len,
                limit: MAX_VALUE_BYTES.saturating_add(text.len()),
            }
        }
        None => Node::TemplateText(text.into()),
    }
}
