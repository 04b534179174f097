//! Path lookups (`@path`, `@arrayPath`, `{{...}}` in `@template`).
//!
//! Splitting follows the reference: separators are `.`, a `[` followed by a quote or
//! a digit, and a run of `]` preceded by a quote or a digit; empty pieces are
//! dropped and quotes are removed from the rest. So `a['k k']`, `a[0]` and `a.0`
//! work, `a[b]` is the single key `a[b]`, and `a["x.y"]` still splits on the dot.
//!
//! Walking follows JavaScript's `prev && prev[key]`: a falsy value (`0`, `""`,
//! `false`, `null`) ends the walk and is the result; objects are read by own key,
//! arrays and strings by canonical index or `length`; anything else is `undefined`.

use std::borrow::Cow;

use serde_json::Value;

use super::value::{array_index, json_truthy, utf16_len, Data, Resolved};
use crate::mapping::number::f64_to_json;

/// Splits a path into keys (the reference's `get` splitting rules).
pub(crate) fn split_path(path: &str) -> Vec<Cow<'_, str>> {
    // Every separator and anchor is ASCII, so byte positions are enough.
    let bytes = path.as_bytes();
    let is_anchor = |b: u8| b == b'"' || b == b'\'' || b.is_ascii_digit();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let opens_bracket = b == b'[' && bytes.get(i + 1).is_some_and(|&n| is_anchor(n));
        let separator_len = if b == b'.' || opens_bracket {
            1
        } else if b == b']' && i > 0 && bytes.get(i - 1).is_some_and(|&p| is_anchor(p)) {
            bytes
                .get(i..)
                .map_or(1, |rest| rest.iter().take_while(|&&c| c == b']').count())
        } else {
            0
        };
        if separator_len == 0 {
            i += 1;
            continue;
        }
        push_part(&mut parts, path.get(start..i).unwrap_or(""));
        i += separator_len;
        start = i;
    }
    push_part(&mut parts, path.get(start..).unwrap_or(""));
    parts
}

fn push_part<'p>(parts: &mut Vec<Cow<'p, str>>, part: &'p str) {
    if part.is_empty() {
        return;
    }
    if part.contains(['"', '\'']) {
        parts.push(Cow::Owned(part.chars().filter(|&c| c != '"' && c != '\'').collect()));
    } else {
        parts.push(Cow::Borrowed(part));
    }
}

/// The reference's `get(obj, path)` on a raw path (no `$.` handling).
pub(crate) fn get<'a>(data: Data<'a>, path: &str) -> Resolved<'a> {
    if path.is_empty() || path == "." {
        return data_to_resolved(data);
    }
    let keys = split_path(path);
    walk(data, &keys)
}

/// `@path` semantics: the first `$.` is removed, then [`get`].
pub(crate) fn get_dollar<'a>(data: Data<'a>, path: &str) -> Resolved<'a> {
    // The first `$.` is removed wherever it is; at the start (the common case)
    // that is a slice, not a new string.
    if let Some(rest) = path.strip_prefix("$.") {
        get(data, rest)
    } else if path.contains("$.") {
        get(data, &path.replacen("$.", "", 1))
    } else {
        get(data, path)
    }
}

fn data_to_resolved(data: Data<'_>) -> Resolved<'_> {
    match data {
        Data::Json(v) => Resolved::Ref(v),
        Data::Built(r) => r.clone(),
    }
}

enum Cursor<'a> {
    Borrowed(Data<'a>),
    Owned(Resolved<'a>),
}

/// A path split once, for repeated lookups (the compiled mappings): the same
/// result as [`get`] (or [`get_dollar`]) on the path it was made from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyPath {
    keys: Box<[Box<str>]>,
}

impl KeyPath {
    /// [`get`]'s path (no `$.` handling). The whole data (`""`, `"."`) is no key.
    pub(crate) fn plain(path: &str) -> KeyPath {
        KeyPath {
            keys: split_path(path).into_iter().map(|k| Box::from(k.as_ref())).collect(),
        }
    }

    /// [`get_dollar`]'s path: the first `$.` is removed, wherever it is.
    pub(crate) fn dollar(path: &str) -> KeyPath {
        KeyPath::plain(&path.replacen("$.", "", 1))
    }

    /// The keys, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.as_ref())
    }

    /// Looks the path up in `data`.
    pub(crate) fn get<'a>(&self, data: Data<'a>) -> Resolved<'a> {
        walk(data, &self.keys)
    }
}

fn walk<'a, K: AsRef<str>>(data: Data<'a>, keys: &[K]) -> Resolved<'a> {
    let mut cursor = Cursor::Borrowed(data);
    for key in keys {
        let next = match &cursor {
            Cursor::Borrowed(Data::Json(v)) => {
                if !json_truthy(v) {
                    return Resolved::Ref(v);
                }
                json_child(v, key.as_ref())
            }
            Cursor::Borrowed(Data::Built(r)) => {
                if !r.truthy() {
                    return (*r).clone();
                }
                built_child(r, key.as_ref())
            }
            Cursor::Owned(r) => {
                if !r.truthy() {
                    return r.clone();
                }
                built_child(r, key.as_ref()).into_owned()
            }
        };
        cursor = match next {
            Resolved::Ref(v) => Cursor::Borrowed(Data::Json(v)),
            other => Cursor::Owned(other),
        };
    }
    match cursor {
        Cursor::Borrowed(d) => data_to_resolved(d),
        Cursor::Owned(r) => r,
    }
}

pub(crate) fn json_child<'a>(v: &'a Value, key: &str) -> Resolved<'a> {
    match v {
        Value::Object(map) => crate::segment::member(map, key).map_or(Resolved::Undef, Resolved::Ref),
        Value::Array(items) => indexed(key, items.len(), |i| items.get(i).map(Resolved::Ref)),
        Value::String(s) => string_child(s, key),
        _ => Resolved::Undef,
    }
}

fn built_child<'a>(r: &'a Resolved<'a>, key: &str) -> Resolved<'a> {
    match r {
        Resolved::Ref(v) => json_child(v, key),
        Resolved::Val(v) => json_child(v, key),
        Resolved::Arr(items) => indexed(key, items.len(), |i| items.get(i).cloned()),
        Resolved::Obj(entries) => entries
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Resolved::Undef, |(_, v)| v.clone()),
        Resolved::Undef => Resolved::Undef,
    }
}

fn indexed<'a>(key: &str, len: usize, item: impl Fn(usize) -> Option<Resolved<'a>>) -> Resolved<'a> {
    if key == "length" {
        return Resolved::Val(f64_to_json(len as f64));
    }
    array_index(key)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(item)
        .unwrap_or(Resolved::Undef)
}

fn string_child<'a>(s: &str, key: &str) -> Resolved<'a> {
    if key == "length" {
        return Resolved::Val(f64_to_json(utf16_len(s) as f64));
    }
    let Some(index) = array_index(key).and_then(|i| usize::try_from(i).ok()) else {
        return Resolved::Undef;
    };
    let units: Vec<u16> = s.encode_utf16().collect();
    match units.get(index) {
        Some(&unit) => Resolved::Val(Value::String(String::from_utf16_lossy(&[unit]))),
        None => Resolved::Undef,
    }
}
