//! Mapping: from a Segment event to an action's typed payload.
//!
//! Two steps, both pure (no I/O, no clock, no randomness) and total (they never
//! panic on user input):
//!
//! 1. [`kit`] resolves a subscription's mapping-kit `mapping` (`@path`, `@if`,
//!    `@template`, ...) against the event, giving a JSON object.
//! 2. [`schema`] checks that object against the action's field schema the way the
//!    reference's validator does: empty values removed, unknown keys dropped, types
//!    coerced (`"42"` -> 42 for a number field), required fields enforced, and
//!    the reference's error wording on failure.
//!
//! [`time`] and [`number`] hold the JavaScript-compatible conversions both steps and
//! the actions need (date parsing, `Number()`, number formatting).

pub mod kit;
pub mod number;
pub mod schema;
pub mod time;
