//! Mapping kit: validate, resolve (the interpreter) and compile + resolve (the
//! compiled path) a mapping against an event, `@liquid` included.
//!
//! Input: the mapping (JSON) on the first line, the event (JSON) after the
//! first `\n`; an event that is missing or not JSON is replaced by a fixed one.
//!
//! Checks: no panic, no hang (libFuzzer's `-timeout`), and the documented
//! equalities: `CompiledMapping::resolve` gives exactly what `kit::resolve`
//! gives (equal JSON, equal errors), `resolve_members` the same members, a
//! mapping that passes `validate` resolves the same through
//! `resolve_validated`, and `compile` refuses exactly what `validate` refuses.
#![no_main]

#[path = "shared.rs"]
mod shared;

use libfuzzer_sys::fuzz_target;
use mixpanel_actions::mapping::kit::{self, CompiledMapping};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mapping, event) = shared::source_and_event(text);
    let Ok(mapping) = serde_json::from_str::<Value>(mapping) else {
        return;
    };

    let _ = kit::liquid_problems(&mapping);
    let valid = kit::validate(&mapping);
    let interpreted = kit::resolve(&mapping, &event);
    if valid.is_ok() {
        assert_eq!(
            kit::resolve_validated(&mapping, &event),
            interpreted,
            "resolve_validated != resolve"
        );
    }
    match CompiledMapping::compile(&mapping) {
        Ok(compiled) => {
            assert!(valid.is_ok(), "compile accepted what validate refused: {valid:?}");
            assert_eq!(compiled.source(), &mapping);
            let resolved = compiled.resolve(&event);
            assert_eq!(resolved, interpreted, "compiled != interpreted");
            match compiled.resolve_members(&event) {
                Ok(Ok(members)) => {
                    let members: serde_json::Map<String, Value> = members
                        .into_iter()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    assert_eq!(Ok(Value::Object(members)), interpreted, "resolve_members != resolve");
                }
                Ok(Err(other)) => assert_eq!(Ok(other), interpreted, "resolve_members (not an object) != resolve"),
                Err(e) => assert_eq!(Err(e), interpreted, "resolve_members error != resolve"),
            }
        }
        Err(e) => assert_eq!(Err(e), valid, "compile refused differently from validate"),
    }
    // One value, as the preview resolves a field.
    let _ = kit::resolve_value(&mapping, &event);
});
