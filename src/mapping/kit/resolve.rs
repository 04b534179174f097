//! The directive interpreter.
//!
//! [`eval`] walks a mapping value against the data: plain objects and arrays are
//! walked member by member, scalars are returned as they are, and directive objects
//! (one or more `@` keys and nothing else but `_metadata`) run the directive named by
//! their first `@` key. Option checks use JavaScript truthiness on the raw mapping
//! options, exactly where the reference does (`else: ""` is ignored, `value: 0`
//! makes `@case`/`@replace` give `undefined`, ...).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::path::get_dollar;
use super::replace::replace_literal;
use super::template::render;
use super::validate::{problems, MAX_PATTERN_LENGTH, MAX_REPLACEMENT_LENGTH};
use super::value::{js_stringify, json_js_string, opt_truthy, utf16_len, Data, ObjBuilder, Resolved};
use super::MAX_VALUE_BYTES;
use crate::mapping::number::normalize_json_number;

/// Deepest mapping nesting that is resolved (deeper mappings are rejected rather
/// than risking the stack).
pub(crate) const MAX_DEPTH: usize = 200;

/// Key of the reference's root-level directive (`__segment_internal_directive`).
pub(crate) const ROOT_DIRECTIVE_KEY: &str = "__segment_internal_directive";

/// A resolution failure, with the mapping keys it happened under (innermost first).
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) message: String,
    pub(crate) path: Vec<String>,
}

/// A directive whose string result passed [`MAX_VALUE_BYTES`].
pub(crate) fn too_long(directive: &str) -> Fail {
    Fail::new(format!(
        "{directive} gives a string over the limit of {MAX_VALUE_BYTES} bytes per value"
    ))
}

impl Fail {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Fail {
            message: message.into(),
            path: Vec::new(),
        }
    }

    pub(crate) fn under(mut self, key: &str) -> Self {
        self.path.push(key.to_owned());
        self
    }

    /// `"/field/sub <message>"`, or the bare message at the root.
    pub(crate) fn render(&self) -> String {
        if self.path.is_empty() {
            return self.message.clone();
        }
        let path: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
        format!("/{} {}", path.join("/"), self.message)
    }
}

type Out<'a> = Result<Resolved<'a>, Fail>;

/// Whether an object is a directive (the reference's `isDirective`).
pub(crate) fn is_directive(map: &Map<String, Value>) -> bool {
    map.keys().any(|k| k.starts_with('@')) && map.keys().all(|k| k.starts_with('@') || k == "_metadata")
}

/// Applies the reference's root-directive rule: when the mapping has
/// `__segment_internal_directive`, the other fields become that directive's
/// `mapping`.
pub(crate) fn mapping_to_process(mapping: &Value) -> Result<Cow<'_, Value>, Fail> {
    let Some(map) = mapping.as_object() else {
        return Ok(Cow::Borrowed(mapping));
    };
    let Some(root) = map.get(ROOT_DIRECTIVE_KEY) else {
        return Ok(Cow::Borrowed(mapping));
    };
    let customer: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| k.as_str() != ROOT_DIRECTIVE_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut root = match root {
        Value::Object(root) => root.clone(),
        _ => return Err(Fail::new("The root directive must be an object")),
    };
    if root.len() > 1 {
        return Err(Fail::new("The root mapping must only have a single directive object"));
    }
    match root.values_mut().next() {
        Some(Value::Object(directive)) => {
            directive.insert("mapping".to_owned(), Value::Object(customer));
        }
        _ => return Err(Fail::new("The root directive must be an object")),
    }
    Ok(Cow::Owned(Value::Object(root)))
}

/// The reference's `transform(mapping, data)`: validates, resolves and removes
/// `undefined` members.
pub(crate) fn transform<'a>(mapping: &'a Value, data: Data<'a>) -> Out<'a> {
    let mapping = prepare(mapping, data)?;
    let resolved = eval(&mapping, data, 0)?.remove_undefined();
    Ok(resolved.into_owned())
}

/// [`transform`] straight to JSON (`None` for `undefined`), cloning each borrowed
/// leaf once.
pub(crate) fn transform_to_json(mapping: &Value, data: Data<'_>) -> Result<Option<Value>, Fail> {
    let mapping = prepare(mapping, data)?;
    Ok(eval(&mapping, data, 0)?.into_json())
}

/// [`transform_to_json`] for a mapping that already passed validation.
pub(crate) fn transform_validated_to_json(mapping: &Value, data: Data<'_>) -> Result<Option<Value>, Fail> {
    let mapping = prepare_unchecked(mapping, data)?;
    Ok(eval(&mapping, data, 0)?.into_json())
}

/// Checks the data, applies the root-directive rule and validates.
fn prepare<'m>(mapping: &'m Value, data: Data<'_>) -> Result<Cow<'m, Value>, Fail> {
    let mapping = prepare_unchecked(mapping, data)?;
    let found = problems(&mapping);
    if !found.is_empty() {
        return Err(Fail::new(found.join(" ")));
    }
    Ok(mapping)
}

/// Checks the data and applies the root-directive rule.
fn prepare_unchecked<'m>(mapping: &'m Value, data: Data<'_>) -> Result<Cow<'m, Value>, Fail> {
    check_data(data)?;
    mapping_to_process(mapping)
}

/// The reference's first check: the data must be an object.
pub(crate) fn check_data(data: Data<'_>) -> Result<(), Fail> {
    let type_name = data_type(data);
    if type_name != "object" {
        return Err(Fail::new(format!("data must be an object, got {type_name}")));
    }
    Ok(())
}

fn data_type(data: Data<'_>) -> &'static str {
    match data {
        Data::Json(v) => super::value::json_type_name(v),
        Data::Built(r) => r.type_name(),
    }
}

/// Resolves one mapping value.
pub(crate) fn eval<'a>(mapping: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    if depth > MAX_DEPTH {
        return Err(Fail::new("mapping is nested too deeply"));
    }
    match mapping {
        Value::Object(map) if is_directive(map) => run_directive(map, data, depth + 1),
        Value::Object(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                let resolved = eval(value, data, depth + 1).map_err(|e| e.under(key))?;
                entries.push((key.clone(), resolved));
            }
            Ok(Resolved::Obj(entries))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(eval(item, data, depth + 1).map_err(|e| e.under(&i.to_string()))?);
            }
            Ok(Resolved::Arr(out))
        }
        scalar => Ok(Resolved::Ref(scalar)),
    }
}

fn eval_opt<'a>(mapping: Option<&'a Value>, data: Data<'a>, depth: usize) -> Out<'a> {
    match mapping {
        Some(m) => eval(m, data, depth),
        None => Ok(Resolved::Undef),
    }
}

fn run_directive<'a>(map: &'a Map<String, Value>, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some((name, options)) = map.iter().find(|(k, _)| k.starts_with('@')) else {
        return Ok(Resolved::Undef);
    };
    match name.as_str() {
        "@if" => dir_if(options, data, depth),
        "@case" => dir_case(options, data, depth),
        "@replace" => dir_replace(options, data, depth),
        "@arrayPath" => dir_array_path(options, data, depth),
        "@path" => match options {
            // The common case, a literal path: no allocation.
            Value::String(path) => Ok(get_dollar(data, path)),
            _ => {
                let path = string_option("@path", options, data, depth)?;
                Ok(get_dollar(data, &path))
            }
        },
        "@template" => {
            let template = string_option("@template", options, data, depth)?;
            let text = render(&template, data, MAX_VALUE_BYTES).map_err(|_| too_long("@template"))?;
            Ok(Resolved::Val(Value::String(text)))
        }
        "@literal" => eval(options, data, depth),
        "@flatten" => dir_flatten(options, data, depth),
        "@json" => dir_json(options, data, depth),
        "@merge" => dir_merge(options, data, depth),
        "@transform" => dir_transform(options, data, depth),
        "@excludeWhenNull" => Ok(exclude_nulls(eval(options, data, depth)?)),
        "@liquid" => super::liquid::evaluate(options, data)
            .map(|s| Resolved::Val(Value::String(s)))
            .map_err(Fail::new),
        other => Err(Fail::new(format!("{other} is not a valid directive, got undefined"))),
    }
}

/// Resolves a string directive's option (`@path`, `@template`), which must give a
/// string.
fn string_option<'a>(name: &str, options: &'a Value, data: Data<'a>, depth: usize) -> Result<String, Fail> {
    let resolved = eval(options, data, depth)?;
    match resolved.as_str() {
        Some(s) => Ok(s.to_owned()),
        None => Err(Fail::new(format!(
            "{name}: expected string, got {}",
            resolved.type_name()
        ))),
    }
}

fn dir_if<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new("@if requires an object with an \"exists\" key"));
    };
    let exists = opts.get("exists");
    let blank = opts.get("blank");
    if !opt_truthy(exists) && !opt_truthy(blank) {
        return Err(Fail::new("@if requires an \"exists\" key or a \"blank\" key"));
    }
    let condition = if let Some(exists) = exists {
        !eval(exists, data, depth)?.is_nullish()
    } else {
        let value = eval_opt(blank, data, depth)?;
        !value.is_nullish() && value.as_str() != Some("")
    };
    if condition {
        eval_opt(opts.get("then"), data, depth)
    } else if opt_truthy(opts.get("else")) {
        eval_opt(opts.get("else"), data, depth)
    } else {
        Ok(Resolved::Undef)
    }
}

fn dir_case<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new("@case requires an object with a \"operator\" key"));
    };
    let operator = opts.get("operator");
    if !opt_truthy(operator) {
        return Err(Fail::new("@case requires a \"operator\" key"));
    }
    let value_mapping = opts.get("value");
    if !opt_truthy(value_mapping) {
        return Ok(Resolved::Undef);
    }
    let value = eval_opt(value_mapping, data, depth)?;
    let Some(text) = value.as_str() else {
        return Ok(value);
    };
    let changed = match operator.and_then(Value::as_str) {
        Some("lower") => text.to_lowercase(),
        Some("upper") => text.to_uppercase(),
        _ => return Err(Fail::new("operator key should have a value of \"lower\" or \"upper\"")),
    };
    Ok(Resolved::Val(Value::String(changed)))
}

fn dir_replace<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new("@replace requires an object with a \"pattern\" key"));
    };
    let pattern = opts.get("pattern");
    if !opt_truthy(pattern) {
        return Err(Fail::new("@replace requires a \"pattern\" key"));
    }
    let empty = Value::String(String::new());
    let replacement = match opts.get("replacement") {
        None | Some(Value::Null) => &empty,
        Some(r) => r,
    };
    let pattern2 = opts.get("pattern2");
    let replacement2 = match opts.get("replacement2") {
        None | Some(Value::Null) if opt_truthy(pattern2) => Some(&empty),
        other => other,
    };
    let ignore_case = match opts.get("ignorecase") {
        None | Some(Value::Null) => &Value::Bool(false),
        Some(v) => v,
    };
    let global = match opts.get("global") {
        None | Some(Value::Null) => &Value::Bool(true),
        Some(v) => v,
    };
    let value_mapping = opts.get("value");
    if !opt_truthy(value_mapping) {
        return Ok(Resolved::Undef);
    }
    let value = eval_opt(value_mapping, data, depth)?;
    let text = match value.json() {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ (Value::Bool(_) | Value::Number(_))) => {
            let mut s = String::new();
            json_js_string(v, &mut s);
            Some(s)
        }
        _ => None,
    };
    let (
        Some(text),
        Some(Value::String(pattern)),
        Value::String(replacement),
        Value::Bool(ignore_case),
        Value::Bool(global),
    ) = (text, pattern, replacement, ignore_case, global)
    else {
        return Ok(Resolved::Val(empty));
    };
    let mut result = perform_replace(&text, pattern, replacement, *global, *ignore_case)?;
    if let (Some(Value::String(p2)), Some(Value::String(r2))) = (pattern2, replacement2) {
        if !p2.is_empty() {
            result = perform_replace(&result, p2, r2, *global, *ignore_case)?;
        }
    }
    Ok(Resolved::Val(Value::String(result)))
}

fn perform_replace(
    text: &str,
    pattern: &str,
    replacement: &str,
    global: bool,
    ignore_case: bool,
) -> Result<String, Fail> {
    if utf16_len(pattern) > MAX_PATTERN_LENGTH {
        return Err(Fail::new(format!(
            "@replace requires a \"pattern\" less than {MAX_PATTERN_LENGTH} characters"
        )));
    }
    if utf16_len(replacement) > MAX_REPLACEMENT_LENGTH {
        return Err(Fail::new(format!(
            "@replace requires a \"replacement\" less than {MAX_REPLACEMENT_LENGTH} characters"
        )));
    }
    replace_literal(text, pattern, replacement, global, ignore_case, MAX_VALUE_BYTES).map_err(|_| too_long("@replace"))
}

fn dir_array_path<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(items) = options.as_array() else {
        return Err(Fail::new(format!(
            "@arrayPath expected array, got {}",
            super::value::json_type_name(options)
        )));
    };
    let root = match items.first() {
        Some(Value::String(path)) => get_dollar(data, path),
        other => eval_opt(other, data, depth)?,
    };
    let shape = match items.get(1) {
        Some(shape @ Value::Object(map)) if !map.is_empty() => shape,
        _ => return Ok(root),
    };
    if !root.is_object() && !root.is_array() {
        return Ok(root);
    }
    let mapped = match root {
        Resolved::Ref(Value::Array(list)) => list
            .iter()
            .map(|item| eval(shape, Data::Json(item), depth))
            .collect::<Result<Vec<_>, _>>()?,
        Resolved::Ref(object) => vec![eval(shape, Data::Json(object), depth)?],
        owned => map_owned_items(shape, &owned, depth)?,
    };
    Ok(Resolved::Arr(mapped))
}

/// Maps a locally built `@arrayPath` root; the results are detached from it.
fn map_owned_items<'a>(shape: &Value, root: &Resolved<'_>, depth: usize) -> Result<Vec<Resolved<'a>>, Fail> {
    let detach = |r: Resolved<'_>| r.into_owned();
    match root {
        Resolved::Val(Value::Array(list)) => list
            .iter()
            .map(|item| eval(shape, Data::Json(item), depth).map(detach))
            .collect(),
        Resolved::Arr(list) => list
            .iter()
            .map(|item| eval(shape, item.as_data(), depth).map(detach))
            .collect(),
        other => Ok(vec![eval(shape, other.as_data(), depth)?.into_owned()]),
    }
}

fn dir_flatten<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new("@flatten requires an object with a \"separator\" key"));
    };
    let separator = opts.get("separator");
    if !opt_truthy(separator) {
        return Err(Fail::new("@flatten requires a \"separator\" key"));
    }
    let separator = eval_opt(separator, data, depth)?;
    let Some(separator) = separator.as_str().map(str::to_owned) else {
        return Err(Fail::new("@flatten requires a string separator"));
    };
    let value = eval_opt(opts.get("value"), data, depth)?;
    let omit_arrays = opt_truthy(opts.get("omitArrays"));
    let mut out = ObjBuilder::default();
    flatten_into(value, String::new(), &separator, omit_arrays, &mut out);
    Ok(out.finish())
}

fn flatten_into<'a>(value: Resolved<'a>, prefix: String, separator: &str, omit_arrays: bool, out: &mut ObjBuilder<'a>) {
    let key_for = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}{separator}{key}")
        }
    };
    match value {
        Resolved::Ref(Value::Object(map)) => {
            for (k, v) in map {
                flatten_into(Resolved::Ref(v), key_for(k), separator, omit_arrays, out);
            }
        }
        Resolved::Ref(Value::Array(items)) if !omit_arrays => {
            for (i, v) in items.iter().enumerate() {
                flatten_into(Resolved::Ref(v), key_for(&i.to_string()), separator, omit_arrays, out);
            }
        }
        Resolved::Val(Value::Object(map)) => {
            for (k, v) in map {
                let key = key_for(&k);
                flatten_into(Resolved::Val(v), key, separator, omit_arrays, out);
            }
        }
        Resolved::Val(Value::Array(items)) if !omit_arrays => {
            for (i, v) in items.into_iter().enumerate() {
                flatten_into(Resolved::Val(v), key_for(&i.to_string()), separator, omit_arrays, out);
            }
        }
        Resolved::Obj(entries) => {
            for (k, v) in entries {
                let key = key_for(&k);
                flatten_into(v, key, separator, omit_arrays, out);
            }
        }
        Resolved::Arr(items) if !omit_arrays => {
            for (i, v) in items.into_iter().enumerate() {
                flatten_into(v, key_for(&i.to_string()), separator, omit_arrays, out);
            }
        }
        leaf => out.insert(prefix, leaf),
    }
}

fn dir_json<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new("@json requires an object with a \"value\" key"));
    };
    let mode = opts.get("mode");
    if !opt_truthy(mode) {
        return Err(Fail::new("@json requires a \"mode\" key"));
    }
    let value_mapping = opts.get("value");
    if !opt_truthy(value_mapping) {
        return Err(Fail::new("@json requires a \"value\" key"));
    }
    let value = eval_opt(value_mapping, data, depth)?;
    match mode.and_then(Value::as_str) {
        // Encoding escapes quotes and backslashes, so nested encodes grow
        // their text at every level: bounded like any string result.
        Some("encode") => match js_stringify(&value) {
            Some(s) if s.len() > MAX_VALUE_BYTES => Err(too_long("@json")),
            Some(s) => Ok(Resolved::Val(Value::String(s))),
            None => Ok(Resolved::Undef),
        },
        Some("decode") => {
            let Some(text) = value.as_str() else {
                return Ok(value);
            };
            match serde_json::from_str::<Value>(text) {
                Ok(parsed) => Ok(Resolved::Val(normalize_numbers(parsed))),
                Err(_) => Ok(value),
            }
        }
        _ => Ok(Resolved::Undef),
    }
}

/// Rounds parsed numbers the way `JSON.parse` would hold them.
fn normalize_numbers(v: Value) -> Value {
    match v {
        Value::Number(n) => normalize_json_number(&n),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, normalize_numbers(v))).collect()),
        other => other,
    }
}

fn dir_merge<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new(
            "@merge requires an object with an \"objects\" key and a \"direction\" key",
        ));
    };
    let direction = opts.get("direction");
    if !opt_truthy(direction) {
        return Err(Fail::new("@merge requires a \"direction\" key"));
    }
    let direction = eval_opt(direction, data, depth)?;
    let objects = opts.get("objects");
    if !opt_truthy(objects) {
        return Err(Fail::new("@merge requires a \"objects\" key"));
    }
    let Some(list) = objects.and_then(Value::as_array) else {
        let type_of = match objects {
            Some(Value::String(_)) => "string",
            Some(Value::Number(_)) => "number",
            Some(Value::Bool(_)) => "boolean",
            _ => "object",
        };
        return Err(Fail::new(format!("@merge: expected opts.array, got {type_of}")));
    };
    let mut resolved = list
        .iter()
        .map(|m| eval(m, data, depth))
        .collect::<Result<Vec<_>, _>>()?;
    if direction.as_str() == Some("left") {
        resolved.reverse();
    }
    let mut out = ObjBuilder::default();
    for source in resolved {
        assign(source, &mut out);
    }
    Ok(out.finish())
}

/// One source of `Object.assign`: own enumerable members of objects, arrays (by
/// index) and strings (by UTF-16 unit); other values contribute nothing.
fn assign<'a>(source: Resolved<'a>, out: &mut ObjBuilder<'a>) {
    match source {
        Resolved::Ref(Value::Object(map)) => {
            for (k, v) in map {
                out.insert(k.clone(), Resolved::Ref(v));
            }
        }
        Resolved::Val(Value::Object(map)) => {
            for (k, v) in map {
                out.insert(k, Resolved::Val(v));
            }
        }
        Resolved::Obj(entries) => {
            for (k, v) in entries {
                out.insert(k, v);
            }
        }
        Resolved::Ref(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                out.insert(i.to_string(), Resolved::Ref(v));
            }
        }
        Resolved::Val(Value::Array(items)) => {
            for (i, v) in items.into_iter().enumerate() {
                out.insert(i.to_string(), Resolved::Val(v));
            }
        }
        Resolved::Arr(items) => {
            for (i, v) in items.into_iter().enumerate() {
                out.insert(i.to_string(), v);
            }
        }
        other => {
            if let Some(s) = other.as_str() {
                for (i, unit) in s.encode_utf16().enumerate() {
                    let text = String::from_utf16_lossy(&[unit]);
                    out.insert(i.to_string(), Resolved::Val(Value::String(text)));
                }
            }
        }
    }
}

fn dir_transform<'a>(options: &'a Value, data: Data<'a>, depth: usize) -> Out<'a> {
    let Some(opts) = options.as_object() else {
        return Err(Fail::new(
            "@transform requires an object with an \"apply\" key and a \"mapping\" key",
        ));
    };
    let mapping = opts.get("mapping");
    if !opt_truthy(mapping) {
        return Err(Fail::new("@transform requires a \"mapping\" key"));
    }
    let apply = opts.get("apply");
    if !opt_truthy(apply) {
        return Err(Fail::new("@transform requires a \"apply\" key"));
    }
    let Some(apply @ Value::Object(_)) = apply else {
        return Err(Fail::new("@transform \"apply\" key should be an object"));
    };
    let payload = transform(apply, data)?;
    let result = eval_opt(mapping, payload.as_data(), depth)?;
    Ok(result.into_owned())
}

/// `@excludeWhenNull`: `null` becomes `undefined`; objects lose their `null` members,
/// recursively through nested objects (arrays are left as they are).
fn exclude_nulls(value: Resolved<'_>) -> Resolved<'_> {
    if value.is_null() {
        return Resolved::Undef;
    }
    strip_null_members(value)
}

fn strip_null_members(value: Resolved<'_>) -> Resolved<'_> {
    match value {
        Resolved::Ref(Value::Object(map)) => Resolved::Obj(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_null_members(Resolved::Ref(v))))
                .collect(),
        ),
        Resolved::Val(Value::Object(map)) => Resolved::Obj(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_null_members(Resolved::Val(v))))
                .collect(),
        ),
        Resolved::Obj(entries) => Resolved::Obj(
            entries
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_null_members(v)))
                .collect(),
        ),
        other => other,
    }
}
