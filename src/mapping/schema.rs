//! Field schemas and the payload validation the reference runs before an action.
//!
//! The reference validates a resolved mapping with a JSON-schema validator set to
//! coerce types and drop unknown keys. This module reproduces what users observe of
//! it, in this order:
//!
//! 1. empty values are removed at the top level: `null` unless the field allows
//!    null; `""` always in single-event mode, only from non-string fields in batch
//!    mode (see [`Mode`]); keys that are not fields of the action are dropped;
//! 2. required fields are checked ("The root value is missing the required field
//!    'event'.");
//! 3. each present field is coerced to its type, or reported with the reference's
//!    wording ("Wifi must be a boolean but it was a string.").
//!
//! All errors of one payload are joined with a space, as the reference does.
//! Pure and total: no I/O, and no panic on any input.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::number::{f64_to_json, js_number_from_str, js_number_to_string};
use super::time::is_date_like;

/// A validated payload: field key -> coerced value, keys borrowed from the
/// action's schema (no allocation, no hashing: payloads have at most a few dozen
/// fields, and a scan of short static keys is cheaper than a hash map). A value
/// that needed no coercion is borrowed from the event (or the mapping) it was
/// resolved from, so a payload costs no copy of the event's strings and objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload<'a> {
    entries: Vec<(&'static str, Cow<'a, Value>)>,
}

impl<'a> Payload<'a> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.get_cow(key).map(|v| v.as_ref())
    }

    /// A field's value as the payload holds it: borrowed from the event (or
    /// the mapping) when it was not coerced.
    pub fn get_cow(&self, key: &str) -> Option<&Cow<'a, Value>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Takes a field's value out.
    pub fn remove(&mut self, key: &str) -> Option<Cow<'a, Value>> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.swap_remove(i).1)
    }

    pub fn insert(&mut self, key: &'static str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = Cow::Owned(value),
            None => self.entries.push((key, Cow::Owned(value))),
        }
    }

    /// The fields present, each key once (in schema order until a `remove`),
    /// with the values as the payload holds them (borrowed or coerced).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Cow<'a, Value>)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The payload as a JSON object (for display and tests).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_ref().clone()))
                .collect(),
        )
    }

    /// A payload from a JSON object, keeping only the keys that are fields of
    /// `fields` (no validation: for tests and tools).
    pub fn from_json(fields: &'static [Field], value: Value) -> Payload<'static> {
        let mut out = Payload::default();
        if let Value::Object(map) = value {
            for (k, v) in map {
                if let Some(f) = fields.iter().find(|f| f.key == k) {
                    out.insert(f.key, v);
                }
            }
        }
        out
    }
}

/// The type of one action field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Integer,
    Boolean,
    /// A date-like string or a number (epoch milliseconds).
    Datetime,
    Object,
}

/// One field of an action's schema.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub key: &'static str,
    /// The label the reference names the field by in its messages.
    pub label: &'static str,
    pub ty: FieldType,
    /// An array of `ty`.
    pub multiple: bool,
    pub required: bool,
    pub allow_null: bool,
    /// Declared sub-properties of an object field (validated and coerced).
    pub properties: &'static [Field],
    /// Whether an object with declared sub-properties keeps unknown keys.
    pub additional_properties: bool,
}

impl Field {
    /// A plain optional field.
    pub const fn new(key: &'static str, label: &'static str, ty: FieldType) -> Field {
        Field {
            key,
            label,
            ty,
            multiple: false,
            required: false,
            allow_null: false,
            properties: &[],
            additional_properties: true,
        }
    }

    pub const fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub const fn allow_null(mut self) -> Field {
        self.allow_null = true;
        self
    }

    pub const fn multiple(mut self) -> Field {
        self.multiple = true;
        self
    }

    /// An object whose unknown sub-keys are dropped.
    pub const fn with_properties(mut self, properties: &'static [Field]) -> Field {
        self.properties = properties;
        self.additional_properties = false;
        self
    }

    /// An object whose declared sub-keys are coerced and unknown ones kept.
    pub const fn with_open_properties(mut self, properties: &'static [Field]) -> Field {
        self.properties = properties;
        self.additional_properties = true;
        self
    }

    fn is_string_like(&self) -> bool {
        !self.multiple && matches!(self.ty, FieldType::String | FieldType::Datetime)
    }
}

/// Whether a payload is validated on its own or as part of a batch. The reference
/// treats top-level empty strings differently in the two modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Single,
    Batch,
}

/// A payload that failed validation; the message joins every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub message: String,
}

/// Validates and coerces a resolved mapping against `fields`.
pub fn validate(fields: &'static [Field], resolved: Value, mode: Mode) -> Result<Payload<'static>, ValidationError> {
    let Value::Object(input) = resolved else {
        return Err(not_an_object(&resolved));
    };
    validate_entries(
        fields,
        input.into_iter().map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))),
        mode,
    )
}

/// The error for a resolved mapping that is not an object.
pub fn not_an_object(resolved: &Value) -> ValidationError {
    ValidationError {
        message: format!("The root value must be an object but it was {}.", describe(resolved)),
    }
}

/// [`validate`] on the members of the resolved object, which may borrow from
/// the event: a value that is already of its field's type is kept as it is
/// (borrowed), any other is coerced on a copy, exactly as [`validate`] does.
pub fn validate_entries<'a, K: AsRef<str>>(
    fields: &'static [Field],
    input: impl IntoIterator<Item = (K, Cow<'a, Value>)>,
    mode: Mode,
) -> Result<Payload<'a>, ValidationError> {
    let mut validator = Validator::new(fields, mode);
    for (key, value) in input {
        validator.push(key.as_ref(), value);
    }
    validator.finish()
}

/// For each of `keys`, the index of its field in `fields` (`None` for a key
/// that is no field): the positions [`Validator::push_at`] takes.
pub fn field_positions<'k>(fields: &[Field], keys: impl IntoIterator<Item = &'k str>) -> Box<[Option<usize>]> {
    keys.into_iter()
        .map(|key| fields.iter().position(|f| f.key == key))
        .collect()
}

/// [`validate_entries`] fed one member at a time, as a mapping resolves them
/// (no list of members in between).
pub struct Validator<'a> {
    fields: &'static [Field],
    mode: Mode,
    /// Each field's value (unknown keys are dropped, empty values removed).
    slots: Vec<Option<Cow<'a, Value>>>,
    /// Where the next key is looked for first: resolved mappings usually list
    /// fields in schema order.
    hint: usize,
}

impl<'a> Validator<'a> {
    pub fn new(fields: &'static [Field], mode: Mode) -> Validator<'a> {
        Validator {
            fields,
            mode,
            slots: vec![None; fields.len()],
            hint: 0,
        }
    }

    /// One member of the resolved object: kept in its field's slot unless it
    /// is empty for the field (unknown keys are dropped).
    pub fn push(&mut self, key: &str, value: Cow<'a, Value>) {
        let fields = self.fields;
        let found = (self.hint..fields.len())
            .chain(0..self.hint)
            .find(|&i| fields.get(i).is_some_and(|f| f.key == key));
        if let Some(i) = found {
            self.store(i, value);
        }
    }

    /// [`Validator::push`] for the field at `position` in the fields (as
    /// [`field_positions`] found it for `key`), without searching.
    pub fn push_at(&mut self, position: usize, key: &str, value: Cow<'a, Value>) {
        debug_assert!(self.fields.get(position).is_some_and(|f| f.key == key));
        self.store(position, value);
    }

    fn store(&mut self, i: usize, value: Cow<'a, Value>) {
        self.hint = i + 1;
        if let (Some(field), Some(slot)) = (self.fields.get(i), self.slots.get_mut(i)) {
            if !is_empty_for(field, &value, self.mode) {
                *slot = Some(value);
            }
        }
    }

    /// The payload, or every problem found.
    pub fn finish(self) -> Result<Payload<'a>, ValidationError> {
        let fields = self.fields;
        let mut errors = Vec::new();
        for (field, slot) in fields.iter().zip(&self.slots) {
            if field.required && slot.is_none() {
                errors.push(format!("The root value is missing the required field '{}'.", field.key));
            }
        }
        let mut out = Payload {
            entries: Vec::with_capacity(fields.len()),
        };
        for (field, slot) in fields.iter().zip(self.slots) {
            let Some(value) = slot else { continue };
            if already_valid(field, &value) {
                out.entries.push((field.key, value));
                continue;
            }
            // Paths only appear in messages about nested values.
            let path = if field.multiple || field.ty == FieldType::Object {
                format!("/{}", field.key)
            } else {
                String::new()
            };
            if let Some(v) = coerce_field(field, value.into_owned(), &path, Some(field.label), &mut errors) {
                out.entries.push((field.key, Cow::Owned(v)));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ValidationError {
                message: errors.join(" "),
            })
        }
    }
}

/// Whether [`coerce_field`] would return `value` unchanged without an error:
/// then it need not be copied to be coerced.
fn already_valid(field: &Field, value: &Value) -> bool {
    if value.is_null() && field.allow_null {
        return true;
    }
    if field.multiple {
        return match value {
            Value::Array(items) => items.iter().all(|item| single_valid(field, item)),
            _ => false,
        };
    }
    single_valid(field, value)
}

fn single_valid(field: &Field, value: &Value) -> bool {
    match (field.ty, value) {
        (FieldType::String, Value::String(_))
        | (FieldType::Number, Value::Number(_))
        | (FieldType::Boolean, Value::Bool(_))
        | (FieldType::Datetime, Value::Number(_)) => true,
        (FieldType::Integer, Value::Number(n)) => n.as_f64().is_some_and(|n| n.fract() == 0.0),
        (FieldType::Datetime, Value::String(s)) => is_date_like(s),
        // Declared sub-properties: unchanged when every member is kept as it
        // is (see `coerce_object`).
        (FieldType::Object, Value::Object(map)) => {
            field.properties.is_empty()
                || map
                    .iter()
                    .all(|(key, v)| match field.properties.iter().find(|p| p.key == *key) {
                        Some(sub) => !(v.is_null() && !sub.allow_null && !field.multiple) && already_valid(sub, v),
                        None => field.additional_properties,
                    })
        }
        _ => false,
    }
}

/// Whether the reference's empty-value removal drops this top-level value.
fn is_empty_for(field: &Field, value: &Value, mode: Mode) -> bool {
    match value {
        Value::Null => !field.allow_null,
        Value::String(s) if s.is_empty() => match mode {
            Mode::Single => true,
            Mode::Batch => !field.is_string_like(),
        },
        _ => false,
    }
}

/// Coerces one value to its field's type. `None` with an error pushed on failure.
fn coerce_field(
    field: &Field,
    value: Value,
    path: &str,
    label: Option<&str>,
    errors: &mut Vec<String>,
) -> Option<Value> {
    if value.is_null() && field.allow_null {
        return Some(Value::Null);
    }
    if !field.multiple {
        return coerce_single(field, value, path, label, errors);
    }
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        let item_path = format!("{path}/{i}");
        match coerce_single(field, item, &item_path, None, errors) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(Value::Array(out))
}

fn subject(label: Option<&str>, path: &str) -> String {
    match label {
        Some(l) => l.to_owned(),
        None => format!("The value at {path}"),
    }
}

fn type_error(
    label: Option<&str>,
    path: &str,
    expected: &str,
    value: &Value,
    errors: &mut Vec<String>,
) -> Option<Value> {
    errors.push(format!(
        "{} must be {expected} but it was {}.",
        subject(label, path),
        describe(value)
    ));
    None
}

fn coerce_single(
    field: &Field,
    value: Value,
    path: &str,
    label: Option<&str>,
    errors: &mut Vec<String>,
) -> Option<Value> {
    let (result, expected) = match field.ty {
        FieldType::String => (coerce_scalar(value, to_string_value), "a string"),
        FieldType::Number => (coerce_scalar(value, to_number_value), "a number"),
        FieldType::Integer => (coerce_scalar(value, to_integer_value), "an integer"),
        FieldType::Boolean => (coerce_scalar(value, to_boolean_value), "a boolean"),
        FieldType::Datetime => return coerce_datetime(value, path, label, errors),
        FieldType::Object => return coerce_object(field, value, path, label, errors),
    };
    match result {
        Ok(v) => Some(v),
        Err(v) => type_error(label, path, expected, &v, errors),
    }
}

/// Applies a scalar coercion, unwrapping a one-element array first (the reference
/// coerces `["x"]` to `"x"`). `Err` returns the value to describe in the message.
fn coerce_scalar(value: Value, coerce: fn(Value) -> Result<Value, Value>) -> Result<Value, Value> {
    match value {
        Value::Array(mut items) if items.len() == 1 => match items.pop() {
            Some(item @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => coerce(item),
            Some(item) => Err(Value::Array(vec![item])),
            None => Err(Value::Array(Vec::new())),
        },
        other => coerce(other),
    }
}

fn to_string_value(value: Value) -> Result<Value, Value> {
    match value {
        Value::String(_) => Ok(value),
        Value::Number(ref n) => Ok(Value::String(number_text(n))),
        Value::Bool(b) => Ok(Value::String(b.to_string())),
        Value::Null => Ok(Value::String(String::new())),
        other => Err(other),
    }
}

fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    js_number_to_string(n.as_f64().unwrap_or(f64::NAN))
}

fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if !s.is_empty() => {
            let n = js_number_from_str(s);
            (!n.is_nan()).then_some(n)
        }
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Null => Some(0.0),
        _ => None,
    }
}

fn to_number_value(value: Value) -> Result<Value, Value> {
    if value.is_number() {
        return Ok(value);
    }
    match numeric(&value) {
        Some(n) => Ok(f64_to_json(n)),
        None => Err(value),
    }
}

fn to_integer_value(value: Value) -> Result<Value, Value> {
    match numeric(&value) {
        Some(n) if n.fract() == 0.0 => {
            if value.is_number() {
                Ok(value)
            } else {
                Ok(f64_to_json(n))
            }
        }
        _ => Err(value),
    }
}

fn to_boolean_value(value: Value) -> Result<Value, Value> {
    match &value {
        Value::Bool(_) => Ok(value),
        Value::String(s) if s == "true" => Ok(Value::Bool(true)),
        Value::String(s) if s == "false" => Ok(Value::Bool(false)),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
        Value::Null => Ok(Value::Bool(false)),
        _ => Err(value),
    }
}

const DATE_LIKE_ERROR: &str = "must be a valid date-like string but it was not.";

fn coerce_datetime(value: Value, path: &str, label: Option<&str>, errors: &mut Vec<String>) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value),
        Value::String(ref s) => {
            if is_date_like(s) {
                Some(value)
            } else {
                errors.push(format!("{} {DATE_LIKE_ERROR}", subject(label, path)));
                None
            }
        }
        Value::Bool(_) => {
            errors.push(format!("{} {DATE_LIKE_ERROR}", subject(label, path)));
            None
        }
        // The reference unwraps a one-element array and then reports the element's
        // type against the string-or-number union.
        Value::Array(ref items) if items.len() == 1 => {
            let shown = items.first().cloned().unwrap_or(Value::Null);
            type_error(label, path, "a string or number", &shown, errors)
        }
        other => type_error(label, path, "a string or number", &other, errors),
    }
}

fn coerce_object(
    field: &Field,
    value: Value,
    path: &str,
    label: Option<&str>,
    errors: &mut Vec<String>,
) -> Option<Value> {
    let Value::Object(map) = value else {
        return type_error(label, path, "an object", &value, errors);
    };
    if field.properties.is_empty() {
        return Some(Value::Object(map));
    }
    let mut out = Map::with_capacity(map.len());
    let mut ok = true;
    for (key, sub_value) in map {
        match field.properties.iter().find(|p| p.key == key) {
            // The reference's empty-value removal reaches into object fields
            // (`utm_properties`) but not into the items of an array field
            // (`products`): there a null is coerced like any value (ajv's
            // `coerceTypes`: `""` for a string, `0` for a number).
            Some(sub) if sub_value.is_null() && !sub.allow_null && !field.multiple => {}
            Some(sub) => {
                let sub_path = format!("{path}/{key}");
                match coerce_field(sub, sub_value, &sub_path, Some(sub.label), errors) {
                    Some(v) => {
                        out.insert(key, v);
                    }
                    None => ok = false,
                }
            }
            None if field.additional_properties => {
                out.insert(key, sub_value);
            }
            None => {}
        }
    }
    ok.then_some(Value::Object(out))
}

/// How the reference describes a value's type in messages ("a string", "an array").
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SUB: &[Field] = &[Field::new("a", "A", FieldType::String)];
    const FIELDS: &[Field] = &[
        Field::new("event", "Event Name", FieldType::String).required(),
        Field::new("user_id", "User ID", FieldType::String).allow_null(),
        Field::new("wifi", "Wifi", FieldType::Boolean),
        Field::new("width", "Screen width", FieldType::Number),
        Field::new("qty", "Quantity", FieldType::Integer),
        Field::new("time", "Timestamp", FieldType::Datetime),
        Field::new("props", "Event Properties", FieldType::Object),
        Field::new("utm", "UTM", FieldType::Object).with_properties(SUB),
        Field::new("items", "Items", FieldType::Object)
            .multiple()
            .with_open_properties(SUB),
    ];

    fn ok(v: Value, mode: Mode) -> Value {
        validate(FIELDS, v, mode).unwrap().to_json()
    }

    fn err(v: Value) -> String {
        validate(FIELDS, v, Mode::Single).unwrap_err().message
    }

    #[test]
    fn required_and_unknown_keys() {
        assert_eq!(err(json!({})), "The root value is missing the required field 'event'.");
        assert_eq!(ok(json!({"event": "e", "zzz": 1}), Mode::Single), json!({"event": "e"}));
    }

    #[test]
    fn empty_values_by_mode() {
        let v = json!({"event": "e", "user_id": "", "width": "", "time": ""});
        assert_eq!(ok(v.clone(), Mode::Single), json!({"event": "e"}));
        assert_eq!(
            validate(FIELDS, v, Mode::Batch).unwrap_err().message,
            "Timestamp must be a valid date-like string but it was not."
        );
        let v = json!({"event": "e", "user_id": null, "wifi": null});
        assert_eq!(ok(v, Mode::Single), json!({"event": "e", "user_id": null}));
        assert_eq!(
            err(json!({"event": ""})),
            "The root value is missing the required field 'event'."
        );
    }

    #[test]
    fn string_coercion() {
        assert_eq!(ok(json!({"event": 42}), Mode::Single), json!({"event": "42"}));
        assert_eq!(ok(json!({"event": true}), Mode::Single), json!({"event": "true"}));
        assert_eq!(ok(json!({"event": 1.5}), Mode::Single), json!({"event": "1.5"}));
        assert_eq!(ok(json!({"event": ["x"]}), Mode::Single), json!({"event": "x"}));
        assert_eq!(
            err(json!({"event": ["x", "y"]})),
            "Event Name must be a string but it was an array."
        );
        assert_eq!(
            err(json!({"event": {}})),
            "Event Name must be a string but it was an object."
        );
    }

    #[test]
    fn number_boolean_integer_coercion() {
        assert_eq!(
            ok(json!({"event": "e", "width": "1080"}), Mode::Single)["width"],
            json!(1080)
        );
        assert_eq!(
            ok(json!({"event": "e", "width": " 7 "}), Mode::Single)["width"],
            json!(7)
        );
        assert_eq!(
            err(json!({"event": "e", "width": "abc"})),
            "Screen width must be a number but it was a string."
        );
        assert_eq!(
            ok(json!({"event": "e", "wifi": "true"}), Mode::Single)["wifi"],
            json!(true)
        );
        assert_eq!(ok(json!({"event": "e", "wifi": 0}), Mode::Single)["wifi"], json!(false));
        assert_eq!(
            err(json!({"event": "e", "wifi": "yes"})),
            "Wifi must be a boolean but it was a string."
        );
        assert_eq!(ok(json!({"event": "e", "qty": "3"}), Mode::Single)["qty"], json!(3));
        assert_eq!(
            err(json!({"event": "e", "qty": 1.5})),
            "Quantity must be an integer but it was a number."
        );
    }

    #[test]
    fn datetime_rules() {
        assert_eq!(ok(json!({"event": "e", "time": 5}), Mode::Single)["time"], json!(5));
        assert_eq!(
            err(json!({"event": "e", "time": "nope"})),
            "Timestamp must be a valid date-like string but it was not."
        );
        assert_eq!(
            err(json!({"event": "e", "time": true})),
            "Timestamp must be a valid date-like string but it was not."
        );
        assert_eq!(
            err(json!({"event": "e", "time": {"a": 1}})),
            "Timestamp must be a string or number but it was an object."
        );
        assert_eq!(
            err(json!({"event": "e", "time": ["2021-08-17T15:21:15Z"]})),
            "Timestamp must be a string or number but it was a string."
        );
    }

    #[test]
    fn objects_and_arrays() {
        assert_eq!(
            err(json!({"event": "e", "props": []})),
            "Event Properties must be an object but it was an array."
        );
        let v = ok(json!({"event": "e", "utm": {"a": 1, "b": 2}}), Mode::Single);
        assert_eq!(v["utm"], json!({"a": "1"}));
        let v = ok(
            json!({"event": "e", "utm": {"a": null}, "props": {"a": null}}),
            Mode::Single,
        );
        assert_eq!((v["utm"].clone(), v["props"].clone()), (json!({}), json!({"a": null})));
        let v = ok(json!({"event": "e", "items": [{"a": 2, "z": 1}]}), Mode::Single);
        assert_eq!(v["items"], json!([{"a": "2", "z": 1}]));
        let v = ok(json!({"event": "e", "items": {"a": "x"}}), Mode::Single);
        assert_eq!(v["items"], json!([{"a": "x"}]));
        assert_eq!(
            err(json!({"event": "e", "width": "x", "items": ["s"]})),
            "Screen width must be a number but it was a string. The value at /items/0 must be an object but it was a string."
        );
    }

    #[test]
    fn errors_are_joined_required_first() {
        assert_eq!(
            err(json!({"time": "nope", "props": "str"})),
            "The root value is missing the required field 'event'. Timestamp must be a valid date-like string but it was not. Event Properties must be an object but it was a string."
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            prop_oneof![
                Just("".to_owned()),
                Just("true".to_owned()),
                Just("2024-01-02T03:04:05Z".to_owned()),
                Just("12".to_owned()),
                "[a-z0-9 .:-]{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(("[ab]{1}", inner), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_field() -> impl Strategy<Value = Field> {
        let ty = prop_oneof![
            Just(FieldType::String),
            Just(FieldType::Number),
            Just(FieldType::Integer),
            Just(FieldType::Boolean),
            Just(FieldType::Datetime),
            Just(FieldType::Object),
        ];
        (ty, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(ty, multiple, allow_null, sub, open)| {
                let mut f = Field::new("f", "F", ty);
                f.multiple = multiple;
                f.allow_null = allow_null;
                if sub {
                    f.properties = SUB;
                    f.additional_properties = open;
                }
                f
            },
        )
    }

    #[test]
    fn values_of_their_type_are_kept_borrowed() {
        let event = json!({"event": "e", "width": 3, "props": {"a": 1}, "time": "2024-01-02", "utm": {"a": "x"}});
        let members: Vec<(&str, Cow<'_, Value>)> = event
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v)))
            .collect();
        let payload = validate_entries(FIELDS, members, Mode::Single).unwrap();
        let borrowed: Vec<&str> = payload
            .entries
            .iter()
            .filter(|(_, v)| matches!(v, Cow::Borrowed(_)))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(borrowed, ["event", "width", "time", "props", "utm"]);
        // A member that coercion changes makes the object a coerced copy.
        let event = json!({"event": "e", "utm": {"a": 1}});
        let members = event
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v)));
        let payload = validate_entries(FIELDS, members, Mode::Single).unwrap();
        assert!(matches!(payload.entries.last(), Some(("utm", Cow::Owned(v))) if v == &json!({"a": "1"})));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// What validation keeps borrowed is exactly what coercion leaves
        /// unchanged, without an error.
        #[test]
        fn values_kept_borrowed_are_what_coercion_leaves_alone(field in arb_field(), value in arb_value()) {
            let mut errors = Vec::new();
            let coerced = coerce_field(&field, value.clone(), "/f", Some(field.label), &mut errors);
            if already_valid(&field, &value) {
                prop_assert!(errors.is_empty(), "{errors:?}");
                prop_assert_eq!(coerced, Some(value));
            }
        }
    }
}
