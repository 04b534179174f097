//! The parsed form of a trigger: groups of conditions, each with its field
//! (paths already split into segments), operator and expected value.

use super::js::{self, Inherited};

/// How a group combines its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupOp {
    And,
    Or,
}

/// A node of the condition tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Group {
        op: GroupOp,
        children: Vec<Node>,
    },
    Condition(Condition),
    /// What the reference makes of empty parentheses inside a group: a hole
    /// that makes its evaluation throw when reached (the event never matches).
    Hole,
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) field: Field,
    pub(crate) op: Op,
    pub(crate) expected: Expected,
}

/// Where a condition reads its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    /// `event.type`
    Type,
    /// `event.event`
    Event,
    /// `event.name`
    Name,
    /// `event.userId`
    UserId,
    /// A path inside `event.properties`.
    Properties(Path),
    /// A path inside `event.traits`.
    Traits(Path),
    /// A path inside `event.context`.
    Context(Path),
}

/// A path below `properties`, `traits` or `context`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Path {
    /// Empty path: the value is always missing.
    Empty,
    /// A path made only of `.`, `[` and `]`: the reference throws on it.
    Unusable,
    Segments(Vec<Segment>),
}

impl Path {
    /// Splits like the reference's `get`: on `.`, `[` and `]`, dropping empty parts.
    pub(crate) fn parse(name: &str) -> Path {
        if name.is_empty() {
            return Path::Empty;
        }
        let segments: Vec<Segment> = name
            .split(['.', '[', ']'])
            .filter(|part| !part.is_empty())
            .map(Segment::new)
            .collect();
        if segments.is_empty() {
            Path::Unusable
        } else {
            Path::Segments(segments)
        }
    }
}

/// One property key, with what it means on arrays, strings and prototypes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub(crate) key: String,
    pub(crate) index: Option<usize>,
    pub(crate) is_length: bool,
    pub(crate) inherited: Inherited,
}

impl Segment {
    fn new(key: &str) -> Segment {
        Segment {
            key: key.to_string(),
            index: js::array_index(key),
            is_length: key == "length",
            inherited: Inherited::of(key),
        }
    }
}

/// A comparison operator, named after the reference's operator names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// The value is a string equal to the expected text.
    Eq,
    /// The value is not a string equal to the expected text.
    Ne,
    /// The value is a number equal to the expected number.
    NumberEq,
    /// The value is a number different from the expected number.
    NumberNe,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    NotContains,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    Exists,
    NotExists,
    IsTrue,
    IsFalse,
    /// Anything else the reference accepts as an operator: never true.
    Unsupported,
}

impl Op {
    /// The operator a token's text names, as the reference's switch reads it.
    pub(crate) fn from_text(text: &str) -> Op {
        match text {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            "number_equals" => Op::NumberEq,
            "number_not_equals" => Op::NumberNe,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "contains" => Op::Contains,
            "not_contains" => Op::NotContains,
            "starts_with" => Op::StartsWith,
            "not_starts_with" => Op::NotStartsWith,
            "ends_with" => Op::EndsWith,
            "not_ends_with" => Op::NotEndsWith,
            "exists" => Op::Exists,
            "not_exists" => Op::NotExists,
            "is_true" => Op::IsTrue,
            "is_false" => Op::IsFalse,
            _ => Op::Unsupported,
        }
    }
}

/// The expected value, as the two conversions the reference applies to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expected {
    /// `String(expected)`, minus a leading lone low surrogate (see `lead`).
    pub(crate) text: String,
    /// A lone low surrogate that precedes `text` in the reference's string
    /// (left by `match` removing the first UTF-16 unit of an emoji).
    pub(crate) lead: Option<u16>,
    /// `Number(expected)`.
    pub(crate) number: f64,
}

impl Expected {
    pub(crate) fn none() -> Expected {
        Expected::from_text(String::from("undefined"))
    }

    pub(crate) fn from_text(text: String) -> Expected {
        let number = js::string_to_number(&text);
        Expected {
            text,
            lead: None,
            number,
        }
    }

    pub(crate) fn from_number(number: f64) -> Expected {
        Expected {
            text: js::number_to_string(number),
            lead: None,
            number,
        }
    }

    pub(crate) fn from_bool(value: bool) -> Expected {
        Expected {
            text: value.to_string(),
            lead: None,
            number: if value { 1.0 } else { 0.0 },
        }
    }
}
