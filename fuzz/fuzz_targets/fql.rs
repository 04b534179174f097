//! FQL: parse a trigger, then evaluate it against an event.
//!
//! Input: the trigger on the first line, the event (JSON) after the first
//! `\n`; an event that is missing or not JSON is replaced by a fixed one, so
//! every input parses and (when it parses) evaluates.
//!
//! Checks: no panic; a parse error's position is within the source (0-based,
//! in chars, at most its length); evaluation is pure (the same answer twice)
//! and accepts any JSON value (also `null`, arrays, scalars).
#![no_main]

#[path = "shared.rs"]
mod shared;

use libfuzzer_sys::fuzz_target;
use mixpanel_actions::subscription::Trigger;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, event) = shared::source_and_event(text);
    match Trigger::parse(source) {
        Ok(trigger) => {
            let first = trigger.matches(&event);
            assert_eq!(first, trigger.matches(&event), "evaluation is not pure");
            let _ = trigger.matches(&Value::Null);
            let _ = trigger.matches(&json!([event]));
            let _ = trigger.warnings();
            assert_eq!(trigger.source(), source);
        }
        Err(e) => {
            let chars = source.chars().count();
            assert!(
                e.position <= chars,
                "error position {} past the end ({chars} chars): {e}",
                e.position
            );
            assert!(!e.message.is_empty());
        }
    }
});
