//! A path plan: every `@path` of a compiled mapping that reads the event itself,
//! looked up in one walk of the event instead of one walk per path.
//!
//! The paths form a trie by their keys. The walk visits each object of the
//! event that some path goes through once; where many paths continue through
//! one object (`$.context.device.*`, the presets' forty-odd fields), it reads
//! the object's members once and picks out the ones the paths name: one lookup
//! per member in a table of the mapping's keys (not the sender's), instead of
//! one search of the object per path. An object with many more members than
//! the paths name is searched per path instead, so a sender's large object
//! costs what the mapping reads, not what the sender sent.
//!
//! Each slot gets exactly what [`KeyPath::get`] gives for its path: a falsy
//! value on the way ends the walk and is the result; arrays and strings are read
//! by index or `length`. Only objects and arrays are taken apart here; a walk
//! that goes on from a computed value (a string's `length` or character) is left
//! to [`KeyPath::get`] for the slots beneath it.

use std::collections::HashMap;

use serde_json::Value;

use super::super::path::{json_child, KeyPath};
use super::super::value::{json_truthy, Data, Resolved};

/// From this many children up, a node reads its object's members once rather
/// than looking each child up.
const SCAN_FROM: usize = 4;
/// ... and when its object has at most this many members per child (else each
/// child is looked up).
const SCAN_RATIO: usize = 4;

/// The values of a plan's paths in one event, 16 bytes a slot: most are
/// borrowed from the event or `undefined`; the few computed ones are kept aside.
#[derive(Debug, Default)]
pub(super) struct Slots<'a> {
    found: Vec<Found<'a>>,
    computed: Vec<Resolved<'a>>,
}

#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    Undef,
    Ref(&'a Value),
    /// Index into [`Slots::computed`].
    Computed(usize),
}

impl<'a> Slots<'a> {
    /// A slot's value (`undefined` for a slot that does not exist).
    pub(super) fn get(&self, slot: usize) -> Resolved<'a> {
        match self.found.get(slot) {
            Some(Found::Ref(v)) => Resolved::Ref(v),
            Some(Found::Computed(i)) => self.computed.get(*i).cloned().unwrap_or(Resolved::Undef),
            Some(Found::Undef) | None => Resolved::Undef,
        }
    }

    fn set(&mut self, slot: usize, value: Resolved<'a>) {
        let found = match value {
            Resolved::Undef => Found::Undef,
            Resolved::Ref(v) => Found::Ref(v),
            other => {
                self.computed.push(other);
                Found::Computed(self.computed.len() - 1)
            }
        };
        if let Some(s) = self.found.get_mut(slot) {
            *s = found;
        }
    }

    fn set_ref(&mut self, slot: usize, value: &'a Value) {
        if let Some(s) = self.found.get_mut(slot) {
            *s = Found::Ref(value);
        }
    }
}

/// The paths of a mapping, by slot number.
#[derive(Debug, Clone, Default)]
pub(super) struct PathPlan {
    paths: Vec<KeyPath>,
    root: Trie,
}

#[derive(Debug, Clone, Default)]
struct Trie {
    /// Slots whose path ends here.
    ends: Vec<usize>,
    /// Every slot at or below this node.
    below: Vec<usize>,
    children: Vec<(Box<str>, Trie)>,
    /// Child index by key, for nodes that scan their object.
    index: Option<HashMap<Box<str>, usize, foldhash::fast::FixedState>>,
}

impl PathPlan {
    /// The slot of `path` (equal paths share one).
    pub(super) fn slot(&mut self, path: KeyPath) -> usize {
        if let Some(i) = self.paths.iter().position(|p| *p == path) {
            return i;
        }
        let slot = self.paths.len();
        let mut node = &mut self.root;
        node.below.push(slot);
        for key in path.keys() {
            let at = match node.children.iter().position(|(k, _)| k.as_ref() == key) {
                Some(at) => at,
                None => {
                    node.children.push((key.into(), Trie::default()));
                    node.children.len() - 1
                }
            };
            node = match node.children.get_mut(at) {
                Some((_, child)) => child,
                // Just found or pushed.
                None => return slot,
            };
            node.below.push(slot);
        }
        node.ends.push(slot);
        self.paths.push(path);
        slot
    }

    /// Builds the lookup tables; called once all slots are in.
    pub(super) fn finish(&mut self) {
        self.root.finish();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Every slot's value in `data`.
    pub(super) fn run<'a>(&self, data: &'a Value) -> Slots<'a> {
        let mut out = Slots {
            found: vec![Found::Undef; self.paths.len()],
            computed: Vec::new(),
        };
        self.visit(&self.root, data, data, &mut out);
        out
    }

    fn visit<'a>(&self, node: &Trie, value: &'a Value, root: &'a Value, out: &mut Slots<'a>) {
        for &slot in &node.ends {
            out.set_ref(slot, value);
        }
        if node.children.is_empty() {
            return;
        }
        if !json_truthy(value) {
            // The walk stops at a falsy value and gives it.
            for (_, child) in &node.children {
                for &slot in &child.below {
                    out.set_ref(slot, value);
                }
            }
            return;
        }
        let scan = match (value, &node.index) {
            (Value::Object(map), Some(index)) if map.len() <= SCAN_RATIO.saturating_mul(node.children.len()) => {
                Some((map, index))
            }
            _ => None,
        };
        if let Some((map, index)) = scan {
            // Children not found stay `undefined`, as `run` set them.
            for (key, member) in map {
                if let Some((_, child)) = index.get(key.as_str()).and_then(|&i| node.children.get(i)) {
                    self.visit(child, member, root, out);
                }
            }
            return;
        }
        for (key, child) in &node.children {
            match json_child(value, key) {
                Resolved::Ref(member) => self.visit(child, member, root, out),
                // A missing member: `undefined` beneath, as set.
                Resolved::Undef => {}
                // A computed value (a string's `length`, ...): the plain walk.
                _ => {
                    for &slot in &child.below {
                        if let Some(path) = self.paths.get(slot) {
                            out.set(slot, path.get(Data::Json(root)));
                        }
                    }
                }
            }
        }
    }
}

impl Trie {
    fn finish(&mut self) {
        if self.children.len() >= SCAN_FROM {
            self.index = Some(
                self.children
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.clone(), i))
                    .collect(),
            );
        }
        for (_, child) in &mut self.children {
            child.finish();
        }
    }
}
