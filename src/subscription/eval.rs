//! Evaluates a condition tree against an event, with the reference's
//! JavaScript semantics: property look-ups that stop at falsy values, string
//! indexes and `length`, inherited prototype members, strict typing of each
//! operator. Nothing here allocates.

use serde_json::{Map, Value};

use super::ast::{Condition, Expected, Field, GroupOp, Node, Op, Path, Segment};

/// The reference threw while evaluating (the event then matches nothing).
pub(crate) struct Thrown;

/// A JavaScript value as the reference sees it while walking an event.
#[derive(Clone, Copy)]
enum JsValue<'a> {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Str(&'a str),
    /// One UTF-16 unit of a string, as `"abc"[1]` gives.
    Unit(u16),
    Array(&'a [Value]),
    Object(&'a Map<String, Value>),
    /// An inherited member (a function, or a prototype object).
    Opaque,
}

impl<'a> JsValue<'a> {
    fn from_json(value: &'a Value) -> JsValue<'a> {
        match value {
            Value::Null => JsValue::Null,
            Value::Bool(b) => JsValue::Bool(*b),
            Value::Number(n) => JsValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => JsValue::Str(s),
            Value::Array(a) => JsValue::Array(a),
            Value::Object(o) => JsValue::Object(o),
        }
    }

    fn is_falsy(self) -> bool {
        match self {
            JsValue::Undefined | JsValue::Null | JsValue::Bool(false) => true,
            JsValue::Number(n) => n == 0.0 || n.is_nan(),
            JsValue::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    /// `value[key]` for a value that is not falsy.
    fn member(self, segment: &Segment) -> JsValue<'a> {
        let inherited = segment.inherited;
        let from_proto = |own_proto: bool| {
            if own_proto || inherited.object {
                JsValue::Opaque
            } else {
                JsValue::Undefined
            }
        };
        match self {
            JsValue::Object(map) => match crate::segment::member(map, segment.key.as_str()) {
                Some(value) => JsValue::from_json(value),
                None => from_proto(false),
            },
            JsValue::Array(items) => {
                if let Some(index) = segment.index {
                    items.get(index).map_or(JsValue::Undefined, JsValue::from_json)
                } else if segment.is_length {
                    JsValue::Number(items.len() as f64)
                } else {
                    from_proto(inherited.array)
                }
            }
            JsValue::Str(text) => {
                if let Some(index) = segment.index {
                    text.encode_utf16().nth(index).map_or(JsValue::Undefined, JsValue::Unit)
                } else if segment.is_length {
                    JsValue::Number(text.encode_utf16().count() as f64)
                } else {
                    from_proto(inherited.string)
                }
            }
            JsValue::Unit(unit) => {
                if segment.index == Some(0) {
                    JsValue::Unit(unit)
                } else if segment.is_length {
                    JsValue::Number(1.0)
                } else {
                    from_proto(inherited.string)
                }
            }
            JsValue::Number(_) => from_proto(inherited.number),
            JsValue::Bool(_) | JsValue::Opaque => from_proto(false),
            JsValue::Undefined | JsValue::Null => JsValue::Undefined,
        }
    }
}

/// Evaluates a node; `Err` when the reference would have thrown.
pub(crate) fn eval(node: &Node, event: &Value) -> Result<bool, Thrown> {
    match node {
        Node::Group { op, children } => {
            for child in children {
                let matched = eval(child, event)?;
                match op {
                    GroupOp::And if !matched => return Ok(false),
                    GroupOp::Or if matched => return Ok(true),
                    _ => {}
                }
            }
            Ok(*op == GroupOp::And)
        }
        Node::Condition(condition) => eval_condition(condition, event),
        Node::Hole => Err(Thrown),
    }
}

fn eval_condition(condition: &Condition, event: &Value) -> Result<bool, Thrown> {
    let root = |key: &str| -> Result<JsValue<'_>, Thrown> {
        match event {
            Value::Null => Err(Thrown),
            Value::Object(map) => Ok(crate::segment::member(map, key).map_or(JsValue::Undefined, JsValue::from_json)),
            _ => Ok(JsValue::Undefined),
        }
    };
    let actual = match &condition.field {
        Field::Type => root("type")?,
        Field::Event => root("event")?,
        Field::Name => root("name")?,
        Field::UserId => root("userId")?,
        Field::Properties(path) => walk(root("properties")?, path)?,
        Field::Traits(path) => walk(root("traits")?, path)?,
        Field::Context(path) => walk(root("context")?, path)?,
    };
    Ok(compare(actual, condition.op, &condition.expected))
}

/// The reference's `get(object, path)`.
fn walk<'a>(start: JsValue<'a>, path: &Path) -> Result<JsValue<'a>, Thrown> {
    match path {
        Path::Empty => Ok(JsValue::Undefined),
        Path::Unusable => Err(Thrown),
        Path::Segments(segments) => {
            let mut current = start;
            for segment in segments {
                if current.is_falsy() {
                    break;
                }
                current = current.member(segment);
            }
            Ok(current)
        }
    }
}

fn compare(actual: JsValue<'_>, op: Op, expected: &Expected) -> bool {
    match op {
        Op::Eq => text_of(actual).is_some_and(|text| text.equals(expected)),
        Op::Ne => !text_of(actual).is_some_and(|text| text.equals(expected)),
        Op::NumberEq => number_of(actual).is_some_and(|n| n == expected.number),
        Op::NumberNe => number_of(actual).is_some_and(|n| n != expected.number),
        Op::Lt => number_of(actual).is_some_and(|n| n < expected.number),
        Op::Le => number_of(actual).is_some_and(|n| n <= expected.number),
        Op::Gt => number_of(actual).is_some_and(|n| n > expected.number),
        Op::Ge => number_of(actual).is_some_and(|n| n >= expected.number),
        Op::Contains => text_of(actual).is_some_and(|text| text.contains(expected)),
        Op::NotContains => text_of(actual).is_some_and(|text| !text.contains(expected)),
        Op::StartsWith => text_of(actual).is_some_and(|text| text.starts_with(expected)),
        Op::NotStartsWith => text_of(actual).is_some_and(|text| !text.starts_with(expected)),
        Op::EndsWith => text_of(actual).is_some_and(|text| text.ends_with(expected)),
        Op::NotEndsWith => text_of(actual).is_some_and(|text| !text.ends_with(expected)),
        Op::Exists => !matches!(actual, JsValue::Undefined | JsValue::Null),
        Op::NotExists => matches!(actual, JsValue::Undefined | JsValue::Null),
        Op::IsTrue => matches!(actual, JsValue::Bool(true)),
        Op::IsFalse => matches!(actual, JsValue::Bool(false)),
        Op::Unsupported => false,
    }
}

fn number_of(value: JsValue<'_>) -> Option<f64> {
    match value {
        JsValue::Number(n) => Some(n),
        _ => None,
    }
}

/// A JavaScript string value: a Rust string, or a single UTF-16 unit.
enum Text<'a> {
    Str(&'a str),
    Char(char),
    LoneSurrogate(u16),
}

fn text_of(value: JsValue<'_>) -> Option<Text<'_>> {
    match value {
        JsValue::Str(s) => Some(Text::Str(s)),
        JsValue::Unit(unit) => Some(match char::from_u32(u32::from(unit)) {
            Some(c) => Text::Char(c),
            None => Text::LoneSurrogate(unit),
        }),
        _ => None,
    }
}

impl Text<'_> {
    /// Runs `f` on the text as a `&str`; `None` for a lone surrogate.
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> Option<R> {
        match self {
            Text::Str(s) => Some(f(s)),
            Text::Char(c) => {
                let mut buf = [0_u8; 4];
                Some(f(c.encode_utf8(&mut buf)))
            }
            Text::LoneSurrogate(_) => None,
        }
    }

    /// Whether this text is exactly one lone surrogate equal to the pattern.
    fn is_lone(&self, pattern: &Expected) -> bool {
        match self {
            Text::LoneSurrogate(unit) => pattern.lead == Some(*unit) && pattern.text.is_empty(),
            _ => false,
        }
    }

    fn equals(&self, pattern: &Expected) -> bool {
        if pattern.lead.is_some() {
            return self.is_lone(pattern);
        }
        self.with_str(|s| s == pattern.text).unwrap_or(false)
    }

    fn starts_with(&self, pattern: &Expected) -> bool {
        if pattern.lead.is_some() {
            return self.is_lone(pattern);
        }
        match self {
            Text::LoneSurrogate(_) => pattern.text.is_empty(),
            _ => self.with_str(|s| s.starts_with(pattern.text.as_str())).unwrap_or(false),
        }
    }

    fn ends_with(&self, pattern: &Expected) -> bool {
        match (pattern.lead, self) {
            (_, Text::LoneSurrogate(_)) => self.is_lone(pattern) || (pattern.text.is_empty() && pattern.lead.is_none()),
            (None, _) => self.with_str(|s| s.ends_with(pattern.text.as_str())).unwrap_or(false),
            (Some(low), _) => self
                .with_str(|s| {
                    s.strip_suffix(pattern.text.as_str())
                        .and_then(|before| before.chars().next_back())
                        .is_some_and(|c| low_surrogate(c) == Some(low))
                })
                .unwrap_or(false),
        }
    }

    fn contains(&self, pattern: &Expected) -> bool {
        match (pattern.lead, self) {
            (_, Text::LoneSurrogate(_)) => self.is_lone(pattern) || (pattern.text.is_empty() && pattern.lead.is_none()),
            (None, _) => self.with_str(|s| s.contains(pattern.text.as_str())).unwrap_or(false),
            (Some(low), _) => self
                .with_str(|s| {
                    s.char_indices().any(|(at, c)| {
                        low_surrogate(c) == Some(low)
                            && s.get(at + c.len_utf8()..)
                                .is_some_and(|after| after.starts_with(pattern.text.as_str()))
                    })
                })
                .unwrap_or(false),
        }
    }
}

fn low_surrogate(c: char) -> Option<u16> {
    if c.len_utf16() == 2 {
        let mut units = [0_u16; 2];
        c.encode_utf16(&mut units);
        let [_, low] = units;
        Some(low)
    } else {
        None
    }
}
