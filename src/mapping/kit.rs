//! The mapping-kit interpreter: turns a subscription's `mapping` and a Segment event
//! into the action's payload, with the semantics of Segment's actions-core 3.170.0.
//!
//! A mapping is JSON. Plain values are copied; objects and arrays are walked; an
//! object whose keys are one `@directive` (plus optionally `_metadata`) is a
//! directive: `@path`, `@if`, `@template`, `@arrayPath`, `@case`, `@replace`,
//! `@literal`, `@json`, `@flatten`, `@merge`, `@transform`, `@excludeWhenNull` and
//! `@liquid`. JavaScript's `undefined` (a missing value) is kept apart from `null`
//! while resolving; in the result, object members that are `undefined` are dropped
//! and `undefined` array items become `null`.
//!
//! Code map:
//! - `validate`: shape checks and their messages (`/field/@directive problem.`);
//! - `resolve`: the directive interpreter;
//! - `compiled`: [`CompiledMapping`], a mapping compiled once for repeated
//!   resolution (hot shapes as nodes, the rest through `resolve`);
//! - `path`: path splitting and lookups with JavaScript property semantics;
//! - `template`, `replace`, `liquid`: the text directives;
//! - `value`: the intermediate value type and JavaScript conversions
//!   (`String()`, `JSON.stringify`, truthiness).
//!
//! Invariants:
//! - pure: no I/O, no clock, no randomness, no global state (the Liquid parser is
//!   built once and only read);
//! - total: never panics on any mapping or event; every failure is a
//!   [`MappingError`] (status 400 in the product) that names the field and the
//!   directive;
//! - the event is never cloned as a whole: leaves are borrowed while resolving and
//!   cloned once into the result.

mod compiled;
mod liquid;
mod path;
mod replace;
mod resolve;
mod template;
mod validate;
mod value;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use self::compiled::{CompiledMapping, Members};
use self::resolve::{eval, mapping_to_process, transform_to_json, transform_validated_to_json, Fail};
use self::value::{Data, Resolved};

/// Longest string a directive may produce for one value (`@template`,
/// `@replace`, `@liquid`), in bytes. Past it the event fails with a message
/// naming the directive; the bound is checked while the string grows, so no
/// mapping can make one event allocate without limit (a `@replace` with
/// `$&$&` nested two hundred deep would otherwise double its text at every
/// level). Mixpanel keeps only the first 255 characters of a string property,
/// so no delivered value is cut by this.
pub const MAX_VALUE_BYTES: usize = 100_000;

/// A mapping that is malformed or failed to resolve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct MappingError {
    /// What went wrong, naming the field and the directive.
    pub message: String,
}

impl From<Fail> for MappingError {
    fn from(fail: Fail) -> Self {
        MappingError { message: fail.render() }
    }
}

/// Validates a mapping's shape like the reference's `validate.ts`: unknown
/// directives, directive objects with other keys, wrong option types, missing
/// required options, `@replace` patterns over 10 characters, `@if` without
/// `exists`/`blank`, ... All problems are listed, separated by a space.
/// Every `@liquid` template in `mapping` that can never render (too long, a tag
/// or filter outside the supported subset, a syntax error), as `(path, problem)`.
/// The reference finds these per event; configuration files are checked with it
/// at load, so such a mapping is refused before any event is accepted.
pub fn liquid_problems(mapping: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(template)) = map.get("@liquid") {
                    if let Err(e) = liquid::check(template) {
                        out.push((path.to_owned(), e));
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(mapping, "mapping", &mut out);
    out
}

pub fn validate(mapping: &Value) -> Result<(), MappingError> {
    let mapping = mapping_to_process(mapping)?;
    let found = validate::problems(&mapping);
    if found.is_empty() {
        Ok(())
    } else {
        Err(MappingError {
            message: found.join(" "),
        })
    }
}

/// Resolves a whole mapping (an object: field -> value) against `data` (the event),
/// after validating it. Keys whose value resolves to undefined are removed
/// recursively in objects; undefined array items become `null`. A mapping that
/// resolves to undefined as a whole gives `null`.
pub fn resolve(mapping: &Value, data: &Value) -> Result<Value, MappingError> {
    Ok(transform_to_json(mapping, Data::Json(data))?.unwrap_or(Value::Null))
}

/// [`resolve`] for a mapping that already passed [`validate`] (subscriptions are
/// validated when they are loaded): the same result without re-validating the
/// mapping for every event.
pub fn resolve_validated(mapping: &Value, data: &Value) -> Result<Value, MappingError> {
    Ok(transform_validated_to_json(mapping, Data::Json(data))?.unwrap_or(Value::Null))
}

/// Resolves one value (validated first); `None` is JavaScript `undefined`.
pub fn resolve_value(value: &Value, data: &Value) -> Result<Option<Value>, MappingError> {
    validate(value)?;
    let resolved: Resolved<'_> = eval(value, Data::Json(data), 0)?;
    Ok(resolved.into_json())
}

/// `@path`-style lookup of a path string (`"$.context.app.name"`,
/// `"properties['k k']"`, `"$."` for the whole event) in `data`; `None` when
/// missing. Like the reference, a falsy value met on the way (`0`, `""`, `false`,
/// `null`) is the result. Computed values (`length` of arrays and strings, a
/// character of a string) exist only for `@path` in mappings and give `None` here.
pub fn get_path<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    match path::get_dollar(Data::Json(data), path) {
        Resolved::Ref(v) => Some(v),
        _ => None,
    }
}
