//! Mixpanel's per-event limits, checked before sending so a bad event is reported
//! with a reason instead of failing a whole batch. Pure.
//!
//! From Mixpanel's ingestion documentation: an event must be under 1 MB of JSON,
//! have fewer than 255 properties, nested objects with fewer than 255 keys (and at
//! most 3 levels deep), arrays with fewer than 255 items, a `time` no earlier than
//! 1971-01-01 and no later than one hour from now, and a `distinct_id` that is not
//! one of the placeholder values Mixpanel refuses.

use serde_json::Value;

use super::actions::record::PropertiesView;

/// Largest event, serialized.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Properties per event, keys per nested object, items per array: fewer than this.
pub const MAX_KEYS: usize = 255;
/// Deepest nesting of object properties.
pub const MAX_OBJECT_DEPTH: usize = 3;
/// 1971-01-01T00:00:00Z in epoch milliseconds.
pub const MIN_TIME_MS: i64 = 31_536_000_000;
/// How far in the future an event may be.
pub const MAX_FUTURE_MS: i64 = 3_600_000;

/// `distinct_id` values Mixpanel refuses (compared case-insensitively).
pub const INVALID_DISTINCT_IDS: [&str; 17] = [
    "00000000-0000-0000-0000-000000000000",
    "anon",
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "<nil>",
    "0",
    "-1",
    "true",
    "false",
    "[]",
    "{}",
];

fn depth_and_width(value: &Value, depth: usize) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if depth > MAX_OBJECT_DEPTH {
                return Err(format!("object properties nest deeper than {MAX_OBJECT_DEPTH} levels"));
            }
            if map.len() >= MAX_KEYS {
                return Err(format!(
                    "a nested object has {} keys (limit {})",
                    map.len(),
                    MAX_KEYS - 1
                ));
            }
            map.values().try_for_each(|v| depth_and_width(v, depth + 1))
        }
        Value::Array(items) => {
            if items.len() >= MAX_KEYS {
                return Err(format!(
                    "an array property has {} items (limit {})",
                    items.len(),
                    MAX_KEYS - 1
                ));
            }
            items.iter().try_for_each(|v| depth_and_width(v, depth))
        }
        _ => Ok(()),
    }
}

/// Checks one `/import` event against Mixpanel's limits; `Err` names the reason.
pub fn check_import_event(event: &Value, now_ms: i64) -> Result<(), String> {
    let size = serde_json::to_vec(event).map(|v| v.len()).unwrap_or(0);
    let props = event
        .get("properties")
        .and_then(Value::as_object)
        .map(PropertiesView::Json);
    check_import_properties(props, size, now_ms)
}

/// [`check_import_event`] on an event's properties (`None`: it has no
/// properties object), the event's compact JSON being `size` bytes long (the
/// caller serialized it already).
pub fn check_import_properties(props: Option<PropertiesView<'_>>, size: usize, now_ms: i64) -> Result<(), String> {
    let Some(props) = props else {
        return Err("event has no properties object".into());
    };
    if props.len() >= MAX_KEYS {
        return Err(format!("event has {} properties (limit {})", props.len(), MAX_KEYS - 1));
    }
    if let Some(Value::String(id)) = props.get("distinct_id") {
        let lower = id.trim().to_ascii_lowercase();
        if INVALID_DISTINCT_IDS.contains(&lower.as_str()) {
            return Err(format!("distinct_id \"{id}\" is a placeholder value Mixpanel rejects"));
        }
    }
    if let Some(time) = props.get("time").and_then(Value::as_f64) {
        if time < MIN_TIME_MS as f64 {
            return Err(format!("time {time} is before 1971-01-01"));
        }
        if time > (now_ms.saturating_add(MAX_FUTURE_MS)) as f64 {
            return Err(format!("time {time} is more than one hour in the future"));
        }
    }
    props.values().try_for_each(|v| depth_and_width(v, 1))?;
    if size >= MAX_EVENT_BYTES {
        return Err(format!("event is {size} bytes of JSON (limit {MAX_EVENT_BYTES})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn ev(props: Value) -> Value {
        json!({"event": "E", "properties": props})
    }

    #[test]
    fn accepts_a_normal_event() {
        assert_eq!(
            check_import_event(
                &ev(json!({"time": NOW, "distinct_id": "u1", "a": {"b": {"c": 1}}})),
                NOW
            ),
            Ok(())
        );
    }

    #[test]
    fn rejects_each_limit() {
        let cases = [
            ev(json!({"distinct_id": "Anonymous"})),
            ev(json!({"time": 1000})),
            ev(json!({"time": NOW + 2 * 3_600_000})),
            ev(json!({"a": {"b": {"c": {"d": {"e": 1}}}}})),
            ev(json!({"list": vec![1; 255]})),
            ev(Value::Object((0..255).map(|i| (format!("k{i}"), json!(1))).collect())),
            ev(json!({"big": "x".repeat(MAX_EVENT_BYTES)})),
            json!({"event": "E"}),
        ];
        for c in cases {
            assert!(
                check_import_event(&c, NOW).is_err(),
                "{}",
                &c.to_string()[..60.min(c.to_string().len())]
            );
        }
    }
}
