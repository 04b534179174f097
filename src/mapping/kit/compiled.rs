//! Compiled mappings: a subscription's mapping read once into a tree of nodes, so
//! that resolving it for every event skips re-reading its shape.
//!
//! [`CompiledMapping::resolve`] gives exactly what [`super::resolve`] gives (the same
//! JSON, the same errors): the hot shapes are compiled and everything else runs the
//! generic interpreter on the original mapping value.
//!
//! Compiled:
//! - JSON without directives (a literal, copied as it is);
//! - plain objects and arrays (their members compiled);
//! - `@path` with a literal path: split once, `$.` removed at compile time, then
//!   the interpreter's own walk ([`KeyPath`]); the `@path`s that read the event
//!   itself (not an `@arrayPath` item) are all looked up in one walk of the
//!   event by the [`PathPlan`] (`plan`), before the nodes are resolved;
//! - `@if` with `exists` or `blank` (their options compiled);
//! - `@template` with a literal text: its `{{...}}` pieces parsed once (a text with
//!   `{{{...}}}` placeholders is rendered by the interpreter's two passes);
//! - `@arrayPath` with a literal path (its shape compiled);
//! - `@literal` (its option compiled, as the interpreter resolves it).
//!
//! Left to the generic interpreter ([`Node::Generic`]): every other directive
//! (`@case`, `@replace`, `@json`, `@flatten`, `@merge`, `@transform`,
//! `@excludeWhenNull`, `@liquid`, unknown names), the compiled directives whose
//! options are not literal (`@path` given by a directive, `@arrayPath` whose path is
//! a directive or missing, `@if` without a truthy `exists`/`blank`, non-object
//! options) and anything nested deeper than the interpreter goes. The root-directive
//! form (`__segment_internal_directive`) is rewritten once at compile time like the
//! interpreter does for each call, and the rewrite is compiled.
//!
//! Generic nodes evaluate at the nesting depth the interpreter would be at, and
//! errors are tagged with the same field keys, so messages match too.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::path::KeyPath;
use super::resolve::{check_data, eval, mapping_to_process, too_long, Fail};
use super::template;
use super::value::{js_string, Data, Resolved};
use super::{MappingError, MAX_VALUE_BYTES};

mod build;
mod plan;
#[cfg(test)]
mod tests;

use build::Compiler;
use plan::{PathPlan, Slots};

/// The members of a resolved object mapping, in order; values borrowed from
/// the event or the mapping where the result would hold a copy.
pub type Members<'a> = Vec<(Cow<'a, str>, Cow<'a, Value>)>;

/// A mapping prepared once (validated, paths pre-split) for fast repeated
/// resolution.
///
/// ```
/// use mixpanel_actions::mapping::kit::CompiledMapping;
/// use serde_json::json;
///
/// let mapping = json!({"app": {"@path": "$.context.app.name"}, "fixed": 1});
/// let compiled = CompiledMapping::compile(&mapping).unwrap();
/// let event = json!({"context": {"app": {"name": "Shop"}}});
/// assert_eq!(compiled.resolve(&event).unwrap(), json!({"app": "Shop", "fixed": 1}));
/// assert_eq!(compiled.source(), &mapping);
/// ```
///
/// Clones share the compiled form (destinations with the same subscriptions,
/// such as the presets, hold one copy).
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    /// The mapping as given.
    source: Value,
    /// The mapping the interpreter resolves when it differs from `source` (the
    /// root-directive rewrite); generic nodes point into it.
    processed: Option<Value>,
    root: Node,
    /// The `@path`s that read the event itself ([`Node::Slot`]), looked up in
    /// one walk.
    plan: PathPlan,
}

impl CompiledMapping {
    /// Validates (exactly like [`super::validate`]) and compiles.
    pub fn compile(mapping: &Value) -> Result<CompiledMapping, MappingError> {
        super::validate(mapping)?;
        let processed = mapping_to_process(mapping)?;
        let mut root = Compiler::default().node(&processed, 0);
        let mut plan = PathPlan::default();
        root.slotify(&mut plan);
        plan.finish();
        let processed = match processed {
            Cow::Borrowed(_) => None,
            Cow::Owned(v) => Some(v),
        };
        Ok(CompiledMapping {
            inner: Arc::new(Compiled {
                source: mapping.clone(),
                processed,
                root,
                plan,
            }),
        })
    }

    /// Same result as [`super::resolve`]`(self.source(), data)` (equal JSON, equal
    /// errors), without re-validating or re-reading the mapping.
    pub fn resolve(&self, data: &Value) -> Result<Value, MappingError> {
        check_data(Data::Json(data))?;
        let slots = self.slots(data);
        let cx = self.cx(data, &slots);
        Ok(self.inner.root.to_json(cx)?.unwrap_or(Value::Null))
    }

    /// [`CompiledMapping::resolve`] when the result is an object: its members
    /// in order, borrowing from the event and the mapping what the result would
    /// copy (`Err` holds a result that is not an object). Equal to `resolve`'s
    /// members, with equal errors.
    pub fn resolve_members<'a>(&'a self, data: &'a Value) -> Result<Result<Members<'a>, Value>, MappingError> {
        let mut out = Vec::new();
        let resolved = self.resolve_each(data, |_, key, value| out.push((key, value)))?;
        Ok(resolved.map(|()| out))
    }

    /// [`CompiledMapping::resolve_members`], handing each member to `each` as
    /// it is resolved instead of collecting them (on an error, the members
    /// before it have been handed over). `each` also gets the member's
    /// position among [`CompiledMapping::root_keys`] (`None` when the result's
    /// members are only known once resolved).
    pub fn resolve_each<'a>(
        &'a self,
        data: &'a Value,
        mut each: impl FnMut(Option<usize>, Cow<'a, str>, Cow<'a, Value>),
    ) -> Result<Result<(), Value>, MappingError> {
        check_data(Data::Json(data))?;
        let slots = self.slots(data);
        let cx = self.cx(data, &slots);
        match &self.inner.root {
            Node::Object(members) => {
                for (i, (key, node)) in members.iter().enumerate() {
                    if let Some(value) = node.to_cow(cx).map_err(|e| e.under(key))? {
                        each(Some(i), Cow::Borrowed(key.as_str()), value);
                    }
                }
                Ok(Ok(()))
            }
            Node::Literal(Value::Object(map)) => {
                for (i, (k, v)) in map.iter().enumerate() {
                    each(Some(i), Cow::Borrowed(k.as_str()), Cow::Borrowed(v));
                }
                Ok(Ok(()))
            }
            root => match root.to_json(cx)?.unwrap_or(Value::Null) {
                Value::Object(map) => {
                    for (k, v) in map {
                        each(None, Cow::Owned(k), Cow::Owned(v));
                    }
                    Ok(Ok(()))
                }
                other => Ok(Err(other)),
            },
        }
    }

    /// The keys of the resolved object's members when the mapping states
    /// them (a plain object at its root), in order; empty otherwise.
    pub fn root_keys(&self) -> Vec<&str> {
        match &self.inner.root {
            Node::Object(members) => members.iter().map(|(k, _)| k.as_str()).collect(),
            Node::Literal(Value::Object(map)) => map.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `other` is a clone of this mapping (the same compiled form).
    pub fn same(&self, other: &CompiledMapping) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The original mapping.
    pub fn source(&self) -> &Value {
        &self.inner.source
    }

    fn slots<'a>(&self, data: &'a Value) -> Slots<'a> {
        if self.inner.plan.is_empty() {
            Slots::default()
        } else {
            self.inner.plan.run(data)
        }
    }

    fn cx<'a, 's>(&'a self, data: &'a Value, slots: &'s Slots<'a>) -> Cx<'a, 's> {
        Cx {
            mapping: self.inner.processed.as_ref().unwrap_or(&self.inner.source),
            data: Data::Json(data),
            slots,
        }
    }
}

/// What nodes resolve against: the mapping's root (for generic nodes), the
/// data, and the values of the plan's paths when the data is the event.
#[derive(Clone, Copy)]
struct Cx<'a, 's> {
    mapping: &'a Value,
    data: Data<'a>,
    slots: &'s Slots<'a>,
}

impl<'a> Cx<'a, '_> {
    fn slot(&self, slot: usize) -> Resolved<'a> {
        self.slots.get(slot)
    }
}

#[cfg(test)]
impl CompiledMapping {
    /// How many values are left to the generic interpreter.
    fn generic_nodes(&self) -> usize {
        self.inner.root.generic_nodes()
    }
}

#[cfg(test)]
impl Node {
    fn generic_nodes(&self) -> usize {
        let boxed = |node: &Option<Box<Node>>| node.as_ref().map_or(0, |n| n.generic_nodes());
        match self {
            Node::Generic { .. } => 1,
            Node::If {
                condition: Condition::Exists(c) | Condition::Blank(c),
                then,
                otherwise,
            } => c.generic_nodes() + boxed(then) + boxed(otherwise),
            Node::ArrayPath { shape, .. } => boxed(shape),
            Node::Object(members) => members.iter().map(|(_, n)| n.generic_nodes()).sum(),
            Node::Array(items) => items.iter().map(Node::generic_nodes).sum(),
            Node::Literal(_) | Node::Path(_) | Node::Slot(_) | Node::Template { .. } | Node::TemplateText(_) => 0,
        }
    }
}

/// One compiled mapping value.
#[derive(Debug, Clone)]
enum Node {
    /// JSON without directives: copied as it is.
    Literal(Value),
    /// `@path` with a literal path.
    Path(KeyPath),
    /// `@path` with a literal path, on the event itself: its value was looked
    /// up by the [`PathPlan`] (in [`Cx::slots`]).
    Slot(usize),
    /// `@if`; `otherwise` is only kept when the `else` option is truthy (the
    /// interpreter ignores a falsy one).
    If {
        condition: Condition,
        then: Option<Box<Node>>,
        otherwise: Option<Box<Node>>,
    },
    /// `@template` with a literal text without `{{{...}}}` placeholders.
    Template {
        pieces: Box<[TemplatePiece]>,
        text_len: usize,
        /// The longest result: [`MAX_VALUE_BYTES`] more than the template's
        /// text, as the interpreter's rendering allows.
        limit: usize,
    },
    /// `@template` with a literal text that has `{{{...}}}` placeholders.
    TemplateText(Box<str>),
    /// `@arrayPath` with a literal path; `shape` only when it is a non-empty
    /// object (the interpreter returns the value found otherwise).
    ArrayPath { path: KeyPath, shape: Option<Box<Node>> },
    /// A plain object: members in mapping order.
    Object(Box<[(String, Node)]>),
    /// A plain array.
    Array(Box<[Node]>),
    /// The generic interpreter on the mapping value at `at` (from the mapping's
    /// root), at the nesting depth the interpreter would be at.
    Generic { at: Box<[Step]>, depth: usize },
}

#[derive(Debug, Clone)]
enum Condition {
    /// `exists` (present, even when falsy): the value is not `null`/`undefined`.
    Exists(Box<Node>),
    /// `blank`: the value is not `null`/`undefined`/`""`.
    Blank(Box<Node>),
}

#[derive(Debug, Clone)]
enum TemplatePiece {
    Text(Box<str>),
    Path(KeyPath),
}

/// One step from a mapping value to a member.
#[derive(Debug, Clone)]
enum Step {
    Key(Box<str>),
    Index(usize),
}

impl Condition {
    /// Whether `@if` takes its `then` branch.
    fn holds<'a>(&'a self, cx: Cx<'a, '_>) -> Result<bool, Fail> {
        Ok(match self {
            Condition::Exists(node) => !node.test(cx)?.nullish,
            Condition::Blank(node) => {
                let tested = node.test(cx)?;
                !tested.nullish && !tested.empty_string
            }
        })
    }
}

/// What a condition's value is, as `@if` tests it.
struct Tested {
    nullish: bool,
    empty_string: bool,
}

impl Node {
    /// Resolves the node to its final JSON (`None` for `undefined`), like the
    /// interpreter's `eval(..).into_json()`, against `cx` (the data, the
    /// plan's slots, and the mapping's root for generic nodes).
    fn to_json<'a>(&'a self, cx: Cx<'a, '_>) -> Result<Option<Value>, Fail> {
        let data = cx.data;
        match self {
            Node::Literal(v) => Ok(Some(v.clone())),
            Node::Path(path) => Ok(path.get(data).into_json()),
            Node::Slot(slot) => Ok(cx.slot(*slot).into_json()),
            // The branch taken, copied (`to_cow` picks it).
            Node::If { .. } => Ok(self.to_cow(cx)?.map(Cow::into_owned)),
            Node::Template {
                pieces,
                text_len,
                limit,
            } => {
                let mut out = String::with_capacity(*text_len);
                for piece in pieces.iter() {
                    match piece {
                        TemplatePiece::Text(text) => out.push_str(text),
                        TemplatePiece::Path(path) => {
                            let value = path.get(data);
                            if !value.is_nullish() {
                                js_string(&value, &mut out);
                            }
                        }
                    }
                    if out.len() > *limit {
                        return Err(too_long("@template"));
                    }
                }
                Ok(Some(Value::String(out)))
            }
            Node::TemplateText(text) => template::render(text, data, MAX_VALUE_BYTES)
                .map(|text| Some(Value::String(text)))
                .map_err(|_| too_long("@template")),
            Node::ArrayPath { path, shape } => {
                let found = path.get(data);
                match shape {
                    Some(shape) if found.is_object() || found.is_array() => {
                        map_items(shape, &found, cx.mapping).map(|items| Some(Value::Array(items)))
                    }
                    _ => Ok(found.into_json()),
                }
            }
            Node::Object(members) => {
                // Sized to the members that are defined (often none: an
                // object of paths the event does not have).
                let mut defined = Vec::new();
                for (key, node) in members.iter() {
                    if let Some(value) = node.to_json(cx).map_err(|e| e.under(key))? {
                        defined.push((key, value));
                    }
                }
                let mut out = Map::with_capacity(defined.len());
                for (key, value) in defined {
                    out.insert(key.clone(), value);
                }
                Ok(Some(Value::Object(out)))
            }
            Node::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, node) in items.iter().enumerate() {
                    let value = node.to_json(cx).map_err(|e| e.under(&i.to_string()))?;
                    out.push(value.unwrap_or(Value::Null));
                }
                Ok(Some(Value::Array(out)))
            }
            Node::Generic { at, depth } => {
                let value = locate(cx.mapping, at)?;
                Ok(eval(value, data, *depth)?.into_json())
            }
        }
    }

    /// [`Node::to_json`], borrowing what it would copy from the event or the
    /// mapping.
    fn to_cow<'a>(&'a self, cx: Cx<'a, '_>) -> Result<Option<Cow<'a, Value>>, Fail> {
        match self {
            Node::Literal(v) => Ok(Some(Cow::Borrowed(v))),
            Node::Path(path) => Ok(path.get(cx.data).into_cow()),
            Node::Slot(slot) => Ok(cx.slot(*slot).into_cow()),
            Node::If {
                condition,
                then,
                otherwise,
            } => {
                let branch = if condition.holds(cx)? { then } else { otherwise };
                match branch {
                    Some(node) => node.to_cow(cx),
                    None => Ok(None),
                }
            }
            other => Ok(other.to_json(cx)?.map(Cow::Owned)),
        }
    }

    /// What `@if` needs to know of the node's value (a path's value is not
    /// copied).
    fn test<'a>(&'a self, cx: Cx<'a, '_>) -> Result<Tested, Fail> {
        let tested = |value: &Resolved<'_>| Tested {
            nullish: value.is_nullish(),
            empty_string: value.as_str() == Some(""),
        };
        match self {
            Node::Path(path) => return Ok(tested(&path.get(cx.data))),
            Node::Slot(slot) => return Ok(tested(&cx.slot(*slot))),
            _ => {}
        }
        Ok(match self.to_json(cx)? {
            None | Some(Value::Null) => Tested {
                nullish: true,
                empty_string: false,
            },
            Some(Value::String(s)) => Tested {
                nullish: false,
                empty_string: s.is_empty(),
            },
            Some(_) => Tested {
                nullish: false,
                empty_string: false,
            },
        })
    }
}

/// `@arrayPath`'s mapping of the value found (an array: each item; an object:
/// the object alone) through `shape`; `undefined` results become `null`.
fn map_items(shape: &Node, found: &Resolved<'_>, mapping: &Value) -> Result<Vec<Value>, Fail> {
    // The shape reads the item, not the event: it has no slots.
    let one = |data: Data<'_>| {
        shape
            .to_json(Cx {
                mapping,
                data,
                slots: &Slots::default(),
            })
            .map(|v| v.unwrap_or(Value::Null))
    };
    match found {
        Resolved::Ref(Value::Array(list)) => list.iter().map(|item| one(Data::Json(item))).collect(),
        Resolved::Val(Value::Array(list)) => list.iter().map(|item| one(Data::Json(item))).collect(),
        Resolved::Arr(list) => list.iter().map(|item| one(item.as_data())).collect(),
        other => Ok(vec![one(other.as_data())?]),
    }
}

/// The mapping value a generic node stands for.
fn locate<'m>(mapping: &'m Value, at: &[Step]) -> Result<&'m Value, Fail> {
    let mut current = mapping;
    for step in at {
        let next = match step {
            Step::Key(key) => current.as_object().and_then(|map| map.get(key.as_ref())),
            Step::Index(i) => current.as_array().and_then(|items| items.get(*i)),
        };
        // Compiled from this very value, so a step never misses.
        current = next.ok_or_else(|| Fail::new("compiled mapping does not match its source"))?;
    }
    Ok(current)
}
