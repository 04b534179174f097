//! Intermediate values produced while resolving a mapping.
//!
//! JavaScript distinguishes `undefined` from `null`, and the reference keeps
//! `undefined` inside objects and arrays until the very end (`Object.assign` in
//! `@merge` copies it, `JSON.stringify` in `@json` skips it). [`Resolved`] models
//! that without cloning the event: leaves borrowed from the event or the mapping are
//! kept as references, and only built containers are owned.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::mapping::number::{js_number_to_string, json_number_to_f64};

/// A value during resolution. `Ref`/`Val` hold complete JSON (no `undefined`
/// inside); `Arr`/`Obj` are containers built by the mapping, whose members may be
/// `Undef`.
#[derive(Debug, Clone)]
pub(crate) enum Resolved<'a> {
    /// JavaScript `undefined`.
    Undef,
    /// JSON borrowed from the event or the mapping.
    Ref(&'a Value),
    /// JSON computed during resolution.
    Val(Value),
    /// An array built by the mapping.
    Arr(Vec<Resolved<'a>>),
    /// An object built by the mapping (keys are unique, in insertion order).
    Obj(Vec<(String, Resolved<'a>)>),
}

/// Where `@path` lookups read from: the event itself, or a built value (an
/// `@arrayPath` item or a `@transform` payload).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Data<'a> {
    Json(&'a Value),
    Built(&'a Resolved<'a>),
}

impl<'a> Resolved<'a> {
    /// The JSON behind `Ref`/`Val`.
    pub(crate) fn json(&self) -> Option<&Value> {
        match self {
            Resolved::Ref(v) => Some(v),
            Resolved::Val(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn as_data(&'a self) -> Data<'a> {
        match self {
            Resolved::Ref(v) => Data::Json(v),
            Resolved::Val(v) => Data::Json(v),
            other => Data::Built(other),
        }
    }

    pub(crate) fn is_undef(&self) -> bool {
        matches!(self, Resolved::Undef)
    }

    /// `value === undefined || value === null`.
    pub(crate) fn is_nullish(&self) -> bool {
        match self {
            Resolved::Undef => true,
            other => matches!(other.json(), Some(Value::Null)),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.json(), Some(Value::Null))
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.json() {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// JavaScript `realTypeOf`: the type name used in error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Resolved::Undef => "undefined",
            Resolved::Arr(_) => "array",
            Resolved::Obj(_) => "object",
            Resolved::Ref(v) => json_type_name(v),
            Resolved::Val(v) => json_type_name(v),
        }
    }

    pub(crate) fn is_object(&self) -> bool {
        match self {
            Resolved::Obj(_) => true,
            other => matches!(other.json(), Some(Value::Object(_))),
        }
    }

    pub(crate) fn is_array(&self) -> bool {
        match self {
            Resolved::Arr(_) => true,
            other => matches!(other.json(), Some(Value::Array(_))),
        }
    }

    /// JavaScript truthiness.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Resolved::Undef => false,
            Resolved::Arr(_) | Resolved::Obj(_) => true,
            Resolved::Ref(v) => json_truthy(v),
            Resolved::Val(v) => json_truthy(v),
        }
    }

    /// Detaches the value from whatever it borrowed (clones borrowed leaves).
    pub(crate) fn into_owned<'b>(self) -> Resolved<'b> {
        match self {
            Resolved::Undef => Resolved::Undef,
            Resolved::Ref(v) => Resolved::Val(v.clone()),
            Resolved::Val(v) => Resolved::Val(v),
            Resolved::Arr(items) => Resolved::Arr(items.into_iter().map(Resolved::into_owned).collect()),
            Resolved::Obj(entries) => Resolved::Obj(entries.into_iter().map(|(k, v)| (k, v.into_owned())).collect()),
        }
    }

    /// The reference's `removeUndefined`: drops `undefined` object members
    /// recursively; array items stay (as `undefined`).
    pub(crate) fn remove_undefined(self) -> Resolved<'a> {
        match self {
            Resolved::Arr(items) => Resolved::Arr(items.into_iter().map(Resolved::remove_undefined).collect()),
            Resolved::Obj(entries) => Resolved::Obj(
                entries
                    .into_iter()
                    .filter(|(_, v)| !v.is_undef())
                    .map(|(k, v)| (k, v.remove_undefined()))
                    .collect(),
            ),
            other => other,
        }
    }

    /// [`Resolved::into_json`], borrowing JSON that was borrowed.
    pub(crate) fn into_cow(self) -> Option<std::borrow::Cow<'a, Value>> {
        match self {
            Resolved::Ref(v) => Some(std::borrow::Cow::Borrowed(v)),
            other => other.into_json().map(std::borrow::Cow::Owned),
        }
    }

    /// Final JSON: `None` for `undefined`, `undefined` object members dropped,
    /// `undefined` array items as `null` (what `JSON.stringify` does).
    pub(crate) fn into_json(self) -> Option<Value> {
        match self {
            Resolved::Undef => None,
            Resolved::Ref(v) => Some(v.clone()),
            Resolved::Val(v) => Some(v),
            Resolved::Arr(items) => Some(Value::Array(
                items
                    .into_iter()
                    .map(|item| item.into_json().unwrap_or(Value::Null))
                    .collect(),
            )),
            Resolved::Obj(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    if let Some(v) = v.into_json() {
                        map.insert(k, v);
                    }
                }
                Some(Value::Object(map))
            }
        }
    }
}

pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JavaScript truthiness of a JSON value.
pub(crate) fn json_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => {
            let f = json_number_to_f64(n);
            f != 0.0 && !f.is_nan()
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// JavaScript truthiness of an optional mapping option (absent = `undefined`).
pub(crate) fn opt_truthy(v: Option<&Value>) -> bool {
    v.is_some_and(json_truthy)
}

/// An object under construction with JavaScript assignment semantics: assigning an
/// existing key replaces its value in place.
#[derive(Default)]
pub(crate) struct ObjBuilder<'a> {
    entries: Vec<(String, Resolved<'a>)>,
    index: HashMap<String, usize>,
}

impl<'a> ObjBuilder<'a> {
    pub(crate) fn insert(&mut self, key: String, value: Resolved<'a>) {
        if let Some(&i) = self.index.get(&key) {
            if let Some(slot) = self.entries.get_mut(i) {
                slot.1 = value;
            }
            return;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
    }

    pub(crate) fn finish(self) -> Resolved<'a> {
        Resolved::Obj(self.entries)
    }
}

/// Whether `key` is an array index in JavaScript's sense (canonical decimal below
/// 2^32 - 1). Such keys are ordered first, numerically, in JavaScript objects.
pub(crate) fn array_index(key: &str) -> Option<u32> {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b.first() == Some(&b'0') {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    if n < u64::from(u32::MAX) {
        u32::try_from(n).ok()
    } else {
        None
    }
}

/// JavaScript `String(value)` for a resolved value (`undefined`/`null` as the
/// words, objects as `[object Object]`, arrays joined with `,`).
pub(crate) fn js_string(r: &Resolved<'_>, out: &mut String) {
    match r {
        Resolved::Undef => out.push_str("undefined"),
        Resolved::Obj(_) => out.push_str("[object Object]"),
        Resolved::Arr(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_nullish() {
                    js_string(item, out);
                }
            }
        }
        Resolved::Ref(v) => json_js_string(v, out),
        Resolved::Val(v) => json_js_string(v, out),
    }
}

/// JavaScript `String(value)` for JSON.
pub(crate) fn json_js_string(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&js_number_to_string(json_number_to_f64(n))),
        Value::String(s) => out.push_str(s),
        Value::Object(_) => out.push_str("[object Object]"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    json_js_string(item, out);
                }
            }
        }
    }
}

/// JavaScript `JSON.stringify(value)`; `None` for `undefined`.
pub(crate) fn js_stringify(r: &Resolved<'_>) -> Option<String> {
    if r.is_undef() {
        return None;
    }
    let mut out = String::new();
    stringify_into(r, &mut out);
    Some(out)
}

fn stringify_into(r: &Resolved<'_>, out: &mut String) {
    match r {
        Resolved::Undef => out.push_str("null"),
        Resolved::Ref(v) => stringify_json(v, out),
        Resolved::Val(v) => stringify_json(v, out),
        Resolved::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                stringify_into(item, out);
            }
            out.push(']');
        }
        Resolved::Obj(entries) => {
            let members = js_key_order(
                entries
                    .iter()
                    .filter(|(_, v)| !v.is_undef())
                    .map(|(k, v)| (k.as_str(), v)),
            );
            write_members(members, out, stringify_into);
        }
    }
}

fn stringify_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let f = json_number_to_f64(n);
            if f.is_finite() {
                out.push_str(&js_number_to_string(f));
            } else {
                out.push_str("null");
            }
        }
        Value::String(s) => quote_into(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                stringify_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let members = js_key_order(map.iter().map(|(k, v)| (k.as_str(), v)));
            write_members(members, out, stringify_json);
        }
    }
}

fn write_members<T: ?Sized>(members: Vec<(&str, &T)>, out: &mut String, write: fn(&T, &mut String)) {
    out.push('{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote_into(k, out);
        out.push(':');
        write(v, out);
    }
    out.push('}');
}

/// Orders object members like a JavaScript object: array-index keys first in
/// ascending order, then the other keys in insertion order.
pub(crate) fn js_key_order<'k, T: ?Sized>(members: impl Iterator<Item = (&'k str, &'k T)>) -> Vec<(&'k str, &'k T)> {
    let mut indexed: Vec<(u32, &'k str, &'k T)> = Vec::new();
    let mut named: Vec<(&'k str, &'k T)> = Vec::new();
    for (k, v) in members {
        match array_index(k) {
            Some(i) => indexed.push((i, k, v)),
            None => named.push((k, v)),
        }
    }
    if indexed.is_empty() {
        return named;
    }
    indexed.sort_by_key(|(i, _, _)| *i);
    let mut all: Vec<(&'k str, &'k T)> = indexed.into_iter().map(|(_, k, v)| (k, v)).collect();
    all.extend(named);
    all
}

/// A JSON string literal as `JSON.stringify` writes it.
pub(crate) fn quote_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The UTF-16 length of a string (JavaScript's `length`).
pub(crate) fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}
