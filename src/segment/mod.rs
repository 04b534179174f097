//! The Segment event model: the six event types over JSON, and the checks Segment's
//! tracking API makes before an event is accepted.
//!
//! Events stay `serde_json::Value`s end to end (mappings may read any path, and
//! what is not read must pass through untouched); this module gives them a type and
//! names the fields the pipeline relies on. Pure; never panics on input.

pub mod json;

use serde_json::{Map, Value};

/// Objects up to this many members are searched by comparing keys, which is
/// cheaper than hashing the key (SipHash, in `serde_json`'s maps) for small
/// objects.
const LINEAR_SEARCH_MAX: usize = 12;

/// An own member of an object, as `map.get(key)` (keys are unique, so any
/// search finds the same one).
pub fn member<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= LINEAR_SEARCH_MAX {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

/// A Segment event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Track,
        EventType::Page,
        EventType::Screen,
        EventType::Identify,
        EventType::Group,
        EventType::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Identify => "identify",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The type of an event object, from its `type` field.
    pub fn of(event: &Value) -> Option<EventType> {
        event.get("type").and_then(Value::as_str).and_then(EventType::parse)
    }
}

/// Why an event is not a valid Segment event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event must be a JSON object")]
    NotAnObject,
    #[error("field \"type\" is missing or not one of track, page, screen, identify, group, alias")]
    BadType,
    #[error("one of \"userId\" or \"anonymousId\" is required")]
    MissingIdentity,
    #[error("field \"event\" is required for a track event")]
    MissingEventName,
    #[error("field \"{0}\" must be a string")]
    NotAString(&'static str),
}

fn present(event: &Value, key: &str) -> bool {
    match event.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// The checks Segment's tracking API makes: a known type, a user identity, and an
/// event name on track calls.
pub fn check(event: &Value) -> Result<EventType, EventError> {
    if !event.is_object() {
        return Err(EventError::NotAnObject);
    }
    let kind = EventType::of(event).ok_or(EventError::BadType)?;
    if !present(event, "userId") && !present(event, "anonymousId") {
        return Err(EventError::MissingIdentity);
    }
    if kind == EventType::Track {
        match event.get("event") {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) | None | Some(Value::Null) => return Err(EventError::MissingEventName),
            Some(_) => return Err(EventError::NotAString("event")),
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::of(&json!({"type": "TRACK"})), None);
    }

    #[test]
    fn checks() {
        assert_eq!(
            check(&json!({"type": "track", "userId": "u", "event": "E"})),
            Ok(EventType::Track)
        );
        assert_eq!(check(&json!([])), Err(EventError::NotAnObject));
        assert_eq!(check(&json!({"type": "nope", "userId": "u"})), Err(EventError::BadType));
        assert_eq!(
            check(&json!({"type": "identify", "userId": ""})),
            Err(EventError::MissingIdentity)
        );
        assert_eq!(
            check(&json!({"type": "identify", "anonymousId": 5})),
            Ok(EventType::Identify)
        );
        assert_eq!(
            check(&json!({"type": "track", "userId": "u"})),
            Err(EventError::MissingEventName)
        );
        assert_eq!(
            check(&json!({"type": "track", "userId": "u", "event": 3})),
            Err(EventError::NotAString("event"))
        );
    }
}
