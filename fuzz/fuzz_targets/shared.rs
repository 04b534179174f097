//! What the targets that take "a source line, then an event" share.

use serde_json::{json, Value};

/// The event used when the input has none, or none that is JSON: a track with
/// properties, traits and context of every JSON type, so every input that
/// parses also evaluates against something.
pub fn fixed_event() -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "name": "Home",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "properties": {"price": 9.5, "count": 0, "tags": ["a", "b"], "items": [{"sku": "x", "qty": 2}, {"sku": "y"}],
                       "name": "Shoe", "empty": "", "flag": true, "nil": null, "text": "a-b-c"},
        "traits": {"email": "a@example.com", "name": "Ann", "employees": 10},
        "context": {"ip": "8.8.8.8", "app": {"name": "Shop"}, "library": {"name": "analytics.js", "version": "1"}}
    })
}

/// Splits an input into its first line and the event after the first `\n`
/// (the fixed event when that is missing or not JSON).
pub fn source_and_event(text: &str) -> (&str, Value) {
    let (source, event) = text.split_once('\n').unwrap_or((text, ""));
    (source, serde_json::from_str(event).unwrap_or_else(|_| fixed_event()))
}
