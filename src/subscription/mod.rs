//! FQL subscription triggers: which events run a subscription's action.
//!
//! A subscription's `subscribe` string (for example
//! `type = "track" and event != "Order Completed"`) is parsed once with
//! [`Trigger::parse`], then [`Trigger::matches`] tells, per event, whether the
//! action runs. Users migrate their Segment triggers unchanged, so this module
//! reproduces Segment's implementation (`@segment/destination-subscriptions`
//! 3.37 with the `@segment/fql-ts` tokenizer) exactly, quirks included, and
//! [`Trigger::warnings`] names the quirks a trigger relies on.
//!
//! # Invariants
//! - Pure: no I/O, no clock, no global state; the same trigger and event
//!   always give the same answer.
//! - Never panics on user input: any source string either parses or gives an
//!   [`FqlError`] with a message and a 0-based char position, and `matches`
//!   accepts any JSON value. Where the reference would throw while evaluating
//!   (empty parentheses reached, a path made only of `.`/`[`/`]`, a `null`
//!   event), the event does not match.
//! - Cheap to evaluate: paths are split into segments at parse time and
//!   `matches` does not allocate.
//!
//! # Code map
//! - `lexer`: the tokenizer, on UTF-16 units like the reference.
//! - `parser`: tokens to the condition tree, token by token like the reference.
//! - `ast`: the condition tree.
//! - `eval`: the condition tree against an event, with JavaScript semantics.
//! - `js`: JavaScript number/string conversions and prototype member names.
//!
//! # Quirks reproduced
//! - Fields: only `type`, `event`, `name`, `userId`, `properties.*`,
//!   `traits.*` and `context.*` form conditions (by their first segment, so
//!   `event.x` reads `event`); other words (`not`, `foo`, `TYPE`) are skipped,
//!   so `not type = "track"` means `type = "track"`. A trigger left with no
//!   condition is an error.
//! - A field takes the next two tokens as operator and value, whatever they
//!   are: `type == "track"` compares `type` with the text `=` (never matches),
//!   `type = ` compares with the text `eos`, `properties.x` alone is the error
//!   "Value token is missing".
//! - Strings: double quotes are removed, single quotes are kept
//!   (`event = 'A'` never matches `A`).
//! - `=` / `!=` compare strings strictly: `event = 123` matches only the string
//!   `"123"`; `!=` is true for missing and non-string values.
//! - On `properties.*`, `traits.*`, `context.*`: `= true`/`= false` test for that
//!   boolean, `= null` means missing or null, `!= null` present and not null,
//!   `= 10`/`!= 10` require a number (`!= 10` is false when missing), and
//!   `= "10"` is string equality only. `name` and `userId` support the null
//!   checks, `userId` the boolean ones too.
//! - `<`, `<=`, `>`, `>=` require a number value (the expected value goes
//!   through JavaScript's `Number()`, so `< "0x10"` means `< 16`).
//! - `contains(f, "x")` and `!contains(...)` require a string. `match(f, "ab*")`
//!   tests starts-with `ab`; any other pattern tests ends-with the pattern
//!   minus its first character (`"*ed"`: ends with `ed`; `"A"`: ends with `""`).
//! - Without parentheses the last `and`/`or` of a group combines all of its
//!   conditions (`a and b or c` means `a or b or c`). One level of parentheses
//!   forms a group, which ends at the first `)` (a function call's own);
//!   nested parentheses and an unclosed `(` are errors.
//! - Paths are looked up like JavaScript: split on `.`, `[` and `]`, stopping
//!   at falsy values (`properties.count.x` is `0` when `count` is `0`), with
//!   array and string indexes, `length`, and members every object inherits
//!   (`properties.constructor != null` is true).
//! - Tokenizer oddities (see `lexer`): `<=5` is `<`, `=`, `5`; `!=` must be
//!   followed by a space; a string's closing quote must be followed by a
//!   space, `,`, `]`, `)` or the end.

mod ast;
mod eval;
mod js;
mod lexer;
mod parser;

#[cfg(test)]
mod tests;

use serde_json::Value;

use ast::Node;

/// Why a trigger does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at position {position})")]
pub struct FqlError {
    /// What is wrong.
    pub message: String,
    /// Where, as a 0-based char index into the source.
    pub position: usize,
}

/// A parsed FQL subscription trigger (clones share the parsed tree).
#[derive(Debug, Clone)]
pub struct Trigger {
    source: String,
    root: std::sync::Arc<Node>,
    warnings: Vec<String>,
}

impl Trigger {
    /// Parses an FQL trigger. Errors carry a message and 0-based char position.
    pub fn parse(source: &str) -> Result<Trigger, FqlError> {
        let tokens = lexer::tokenize(source)?;
        let parsed = parser::parse(tokens, source.chars().count())?;
        Ok(Trigger {
            source: source.to_string(),
            root: std::sync::Arc::new(parsed.root),
            warnings: parsed.warnings,
        })
    }

    /// True when the Segment event (a JSON object) matches. Never panics.
    pub fn matches(&self, event: &Value) -> bool {
        eval::eval(&self.root, event).unwrap_or(false)
    }

    /// The trigger's source text, as given to [`Trigger::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Human-readable warnings about reference quirks this trigger relies on
    /// (single-quoted strings keep their quotes, mixed and/or without parentheses,
    /// `==`, ignored `not`, ...). Empty when none.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}
