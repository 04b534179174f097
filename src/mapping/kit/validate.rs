//! Shape validation of a mapping, modelled on the reference's `validate.ts`.
//!
//! Messages have the reference's form `/<path> <problem>.`, where the path names
//! the field and the directive (`/traits/@json/mode should be one of encode, decode
//! but it is "x".`). Like the reference, a failing check stops the checks below it
//! (a directive with two `@` keys is not looked into), while the members of an
//! object are all checked and their problems collected.

use serde_json::{Map, Value};

use super::value::json_type_name;

/// Deepest nesting that is validated (deeper mappings are rejected rather than
/// risking the stack).
const MAX_DEPTH: usize = 200;

/// Longest `@replace` pattern, in UTF-16 code units.
pub(crate) const MAX_PATTERN_LENGTH: usize = 10;
/// Longest `@replace` replacement, in UTF-16 code units.
pub(crate) const MAX_REPLACEMENT_LENGTH: usize = 10;

type Checked = Result<(), Vec<String>>;
type Validator = fn(&Value, &Stack<'_>) -> Checked;

/// The path to the value being checked, as a borrowed linked list (no allocation
/// unless a message is written).
pub(crate) struct Stack<'s> {
    parent: Option<&'s Stack<'s>>,
    key: &'s str,
    depth: usize,
    /// The value at this path when the generic walk has already validated
    /// it, with no problem, at this same path (see [`validate_fields`]).
    validated: Option<&'s Map<String, Value>>,
}

impl<'s> Stack<'s> {
    const ROOT: Stack<'static> = Stack {
        parent: None,
        key: "",
        depth: 0,
        validated: None,
    };

    fn with<'t>(&'t self, key: &'t str) -> Stack<'t> {
        Stack {
            parent: Some(self),
            key,
            depth: self.depth + 1,
            validated: None,
        }
    }

    /// The path to `value` under `key`, which the generic walk validated
    /// without a problem.
    fn with_validated<'t>(&'t self, key: &'t str, value: &'t Value) -> Stack<'t> {
        Stack {
            validated: value.as_object(),
            ..self.with(key)
        }
    }

    /// Whether `map` is the object already validated at this path: checking it
    /// again would find the same nothing (and nested directives, each checked
    /// twice, would take time exponential in their depth).
    fn already_validated(&self, map: &Map<String, Value>) -> bool {
        self.validated.is_some_and(|v| std::ptr::eq(v, map))
    }

    fn join(&self) -> String {
        let mut keys = Vec::new();
        let mut current = Some(self);
        while let Some(stack) = current {
            if stack.parent.is_some() {
                keys.push(stack.key);
            }
            current = stack.parent;
        }
        keys.reverse();
        keys.join("/")
    }
}

/// Validates a mapping; returns the problems found (deduplicated, in order).
pub(crate) fn problems(mapping: &Value) -> Vec<String> {
    let mut found = match validate(mapping, &Stack::ROOT) {
        Ok(()) => Vec::new(),
        Err(errors) => errors,
    };
    let mut seen = std::collections::HashSet::new();
    found.retain(|m| seen.insert(m.clone()));
    found
}

fn fail(stack: &Stack<'_>, message: &str) -> Checked {
    Err(vec![format!("/{} {}.", stack.join(), message)])
}

fn article(type_name: &str) -> &'static str {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn is_directive_like(map: &Map<String, Value>) -> bool {
    map.keys().any(|k| k.starts_with('@'))
}

/// `realTypeOrDirective`.
fn kind(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Object(map)) if is_directive_like(map) => "directive",
        Some(other) => json_type_name(other),
    }
}

fn describe(v: Option<&Value>) -> String {
    let k = kind(v);
    format!("{} {}", article(k), k)
}

/// The generic entry point: directives are checked, objects are walked, arrays and
/// scalars are accepted as they are.
fn validate(v: &Value, stack: &Stack<'_>) -> Checked {
    if stack.depth > MAX_DEPTH {
        return fail(stack, "is nested too deeply");
    }
    match v {
        Value::Object(map) if is_directive_like(map) => validate_directive(map, stack),
        Value::Object(_) => validate_object(Some(v), stack),
        _ => Ok(()),
    }
}

fn validate_directive(map: &Map<String, Value>, stack: &Stack<'_>) -> Checked {
    if stack.depth > MAX_DEPTH {
        return fail(stack, "is nested too deeply");
    }
    if stack.already_validated(map) {
        return Ok(());
    }
    let directive_count = map.keys().filter(|k| k.starts_with('@')).count();
    if directive_count > 1 {
        return fail(
            stack,
            &format!("should only have one @-prefixed key but it has {directive_count} keys"),
        );
    }
    if map.keys().any(|k| !k.starts_with('@') && k != "_metadata") {
        return fail(
            stack,
            &format!("should only have one @-prefixed key but it has {} keys", map.len()),
        );
    }
    let Some((name, options)) = map.iter().find(|(k, _)| k.starts_with('@')) else {
        return Ok(());
    };
    let Some(check) = directive_validator(name) else {
        return fail(stack, &format!("has an invalid directive: {name}"));
    };
    check(options, &stack.with(name))
}

fn directive_validator(name: &str) -> Option<Validator> {
    Some(match name {
        "@if" => validate_if,
        "@case" => validate_case,
        "@replace" => validate_replace,
        "@arrayPath" => validate_array_path,
        "@path" | "@template" => validate_directive_or_string,
        "@literal" | "@excludeWhenNull" => validate_directive_or_raw,
        "@json" => validate_json,
        "@flatten" => validate_flatten,
        "@merge" => validate_merge,
        "@transform" => validate_transform,
        "@liquid" => validate_string,
        _ => return None,
    })
}

fn validate_directive_or_raw(v: &Value, stack: &Stack<'_>) -> Checked {
    match v {
        Value::Object(map) if is_directive_like(map) => validate_directive(map, stack),
        _ => Ok(()),
    }
}

fn validate_directive_or_string(v: &Value, stack: &Stack<'_>) -> Checked {
    match v {
        Value::Object(map) if is_directive_like(map) => validate_directive(map, stack),
        Value::String(_) => Ok(()),
        other => fail(
            stack,
            &format!(
                "should be a string or a mapping directive but it is {}",
                describe(Some(other))
            ),
        ),
    }
}

fn validate_directive_or_object(v: &Value, stack: &Stack<'_>) -> Checked {
    match v {
        Value::Object(map) if is_directive_like(map) => validate_directive(map, stack),
        Value::Object(_) => validate_object(Some(v), stack),
        other => fail(
            stack,
            &format!(
                "should be an object or a mapping directive but it is {}",
                describe(Some(other))
            ),
        ),
    }
}

fn validate_string(v: &Value, stack: &Stack<'_>) -> Checked {
    match kind(Some(v)) {
        "string" => Ok(()),
        _ => fail(stack, &format!("should be a string but it is {}", describe(Some(v)))),
    }
}

fn validate_boolean(v: &Value, stack: &Stack<'_>) -> Checked {
    match v {
        Value::Bool(_) => Ok(()),
        other => fail(
            stack,
            &format!("should be a boolean but it is {}", describe(Some(other))),
        ),
    }
}

fn validate_array(v: Option<&Value>, stack: &Stack<'_>) -> Checked {
    match v {
        Some(Value::Array(_)) => Ok(()),
        other => fail(stack, &format!("should be an array but it is {}", describe(other))),
    }
}

fn string_length(v: &Value, stack: &Stack<'_>, min: usize, max: usize) -> Checked {
    validate_string(v, stack)?;
    let len = v.as_str().map_or(0, super::value::utf16_len);
    if len < min {
        return fail(stack, &format!("should be a string of length {min} or greater"));
    }
    if len > max {
        return fail(stack, &format!("should be a string of length {max} or less"));
    }
    Ok(())
}

fn validate_pattern(v: &Value, stack: &Stack<'_>) -> Checked {
    string_length(v, stack, 1, MAX_PATTERN_LENGTH)
}

fn validate_replacement(v: &Value, stack: &Stack<'_>) -> Checked {
    string_length(v, stack, 0, MAX_REPLACEMENT_LENGTH)
}

fn validate_object(v: Option<&Value>, stack: &Stack<'_>) -> Checked {
    let map = match v {
        Some(Value::Object(map)) if !is_directive_like(map) => map,
        other => return fail(stack, &format!("should be an object but it is {}", describe(other))),
    };
    if stack.already_validated(map) {
        return Ok(());
    }
    let mut errors = Vec::new();
    for (key, value) in map {
        if let Err(mut e) = validate(value, &stack.with(key)) {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

enum Field {
    Required(Validator),
    Optional(Validator),
}

/// Like the reference: every member is first validated as any value would be,
/// and only when none has a problem are the named fields checked by their own
/// rules. A field's directive or object was validated by the first walk at the
/// same path, so the second does not descend into it again.
fn validate_fields(v: &Value, fields: &[(&str, Field)], stack: &Stack<'_>) -> Checked {
    validate_object(Some(v), stack)?;
    let mut errors = Vec::new();
    for (name, field) in fields {
        let value = v.get(*name);
        let result = match (field, value) {
            (Field::Required(_), None) => fail(stack, &format!("should have field \"{name}\" but it doesn't")),
            (Field::Required(check) | Field::Optional(check), Some(value)) => {
                check(value, &stack.with_validated(name, value))
            }
            (Field::Optional(_), None) => Ok(()),
        };
        if let Err(mut e) = result {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn validate_if(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("exists", Field::Optional(validate_directive_or_raw)),
            ("blank", Field::Optional(validate_directive_or_raw)),
            ("then", Field::Optional(validate_directive_or_raw)),
            ("else", Field::Optional(validate_directive_or_raw)),
        ],
        stack,
    )?;
    if v.get("exists").is_none() && v.get("blank").is_none() {
        return fail(stack, "should have field \"exists\" or \"blank\" but it doesn't");
    }
    Ok(())
}

fn validate_case(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("operator", Field::Optional(validate_string)),
            ("value", Field::Optional(validate_directive_or_string)),
        ],
        stack,
    )
}

fn validate_replace(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("pattern", Field::Required(validate_pattern)),
            ("replacement", Field::Optional(validate_replacement)),
            ("pattern2", Field::Optional(validate_pattern)),
            ("replacement2", Field::Optional(validate_replacement)),
            ("value", Field::Required(validate_directive_or_string)),
            ("ignorecase", Field::Optional(validate_boolean)),
            ("global", Field::Optional(validate_boolean)),
        ],
        stack,
    )
}

fn validate_array_path(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_array(Some(v), stack)?;
    match v.get(0) {
        Some(first) => validate_directive_or_string(first, stack)?,
        None => {
            return fail(
                stack,
                &format!("should be a string or a mapping directive but it is {}", describe(None)),
            )
        }
    }
    match v.get(1) {
        Some(shape) => validate(shape, stack),
        None => Ok(()),
    }
}

fn validate_mode(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_string(v, stack)?;
    let mode = v.as_str().unwrap_or("");
    let lower = mode.to_lowercase();
    if lower == "encode" || lower == "decode" {
        return Ok(());
    }
    let quoted = serde_json::to_string(mode).unwrap_or_default();
    fail(stack, &format!("should be one of encode, decode but it is {quoted}"))
}

fn validate_json(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("value", Field::Required(validate_directive_or_raw)),
            ("mode", Field::Required(validate_mode)),
        ],
        stack,
    )
}

fn validate_flatten(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("separator", Field::Required(validate_directive_or_string)),
            ("value", Field::Optional(validate_directive_or_raw)),
            ("omitArrays", Field::Optional(validate_boolean)),
        ],
        stack,
    )
}

fn validate_direction(v: &Value, stack: &Stack<'_>) -> Checked {
    match v {
        Value::String(s) if s == "left" || s == "right" => Ok(()),
        Value::String(s) => {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            fail(stack, &format!("should be one of left, right but it is {quoted}"))
        }
        other => fail(
            stack,
            &format!("should be a string but it is {}", describe(Some(other))),
        ),
    }
}

fn validate_merge_objects(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_array(Some(v), stack)?;
    let mut errors = Vec::new();
    for (i, item) in v.as_array().into_iter().flatten().enumerate() {
        if let Err(mut e) = validate_directive_or_object(item, &stack.with(&i.to_string())) {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn validate_merge(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("objects", Field::Required(validate_merge_objects)),
            ("direction", Field::Required(validate_direction)),
        ],
        stack,
    )
}

fn validate_apply(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_object(Some(v), stack)
}

fn validate_transform(v: &Value, stack: &Stack<'_>) -> Checked {
    validate_fields(
        v,
        &[
            ("apply", Field::Required(validate_apply)),
            ("mapping", Field::Required(validate)),
        ],
        stack,
    )
}
