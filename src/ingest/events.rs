//! From a parsed request body to checked, enriched Segment events: what Segment's
//! tracking API does before destinations see an event.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::segment::{self, EventError, EventType};

/// What a `/v1/<kind>` route carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Single(EventType),
    Batch,
}

impl RouteKind {
    /// `track`, `identify`, ..., `batch`, `import`, and analytics.js's short forms.
    pub fn parse(kind: &str) -> Option<RouteKind> {
        let single = |t| Some(RouteKind::Single(t));
        match kind {
            "track" | "t" => single(EventType::Track),
            "identify" | "i" => single(EventType::Identify),
            "page" | "p" => single(EventType::Page),
            "screen" | "s" => single(EventType::Screen),
            "group" | "g" => single(EventType::Group),
            "alias" | "a" => single(EventType::Alias),
            "batch" | "b" | "import" => Some(RouteKind::Batch),
            _ => None,
        }
    }
}

/// The write key: the Basic auth user name, else `writeKey` in the body.
pub fn write_key(authorization: Option<&str>, body: &Value) -> Option<String> {
    if let Some(encoded) = authorization.and_then(|a| a.strip_prefix("Basic ").or_else(|| a.strip_prefix("basic "))) {
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
            let text = String::from_utf8_lossy(&decoded);
            let user = text.split(':').next().unwrap_or("");
            if !user.is_empty() {
                return Some(user.to_owned());
            }
        }
    }
    body.get("writeKey")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// Limits applied to the events of one request.
#[derive(Clone, Copy, Debug)]
pub struct EventLimits {
    pub max_event_bytes: usize,
    pub max_batch_events: usize,
}

/// Bytes ingest may add to an event (`messageId`, `receivedAt`,
/// `originalTimestamp`, `timestamp`), allowed on top of `max_event_bytes`.
pub const ENRICHMENT_ALLOWANCE: usize = 256;

/// Checked, enriched events with their serialized form (what the spool stores).
#[derive(Debug, Default)]
pub struct Extracted {
    pub events: Vec<Value>,
    pub serialized: Vec<Vec<u8>>,
}

/// Extracts, enriches and checks the events of a request body.
pub fn extract(kind: RouteKind, body: Value, limits: EventLimits, now: DateTime<Utc>) -> Result<Vec<Value>, ApiError> {
    extract_serialized(kind, body, limits, now).map(|e| e.events)
}

/// [`extract`], keeping each event's JSON bytes (serialized once, after
/// enrichment; the size limit is checked on them).
pub fn extract_serialized(
    kind: RouteKind,
    body: Value,
    limits: EventLimits,
    now: DateTime<Utc>,
) -> Result<Extracted, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "request body must be a JSON object",
        ));
    };
    let mut events = match kind {
        RouteKind::Single(t) => {
            body.remove("writeKey");
            body.insert("type".into(), Value::String(t.as_str().to_owned()));
            vec![Value::Object(body)]
        }
        RouteKind::Batch => batch_events(body, limits)?,
    };
    let received_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut serialized = Vec::with_capacity(events.len());
    for (index, event) in events.iter_mut().enumerate() {
        segment::check(event).map_err(|e| event_error(index, &e))?;
        enrich(event, &received_at, now);
        let bytes = serde_json::to_vec(&*event).unwrap_or_default();
        let size = bytes.len();
        if size > limits.max_event_bytes + ENRICHMENT_ALLOWANCE {
            return Err(ApiError::too_large(format!(
                "event {index} is {size} bytes; the limit is {} bytes per event",
                limits.max_event_bytes
            )));
        }
        serialized.push(bytes);
    }
    Ok(Extracted { events, serialized })
}

fn event_error(index: usize, e: &EventError) -> ApiError {
    let code = match e {
        EventError::MissingIdentity => "missing_user_id",
        EventError::MissingEventName => "missing_event",
        EventError::BadType => "invalid_type",
        _ => "invalid_event",
    };
    ApiError::bad_request(code, format!("event {index}: {e}"))
}

fn batch_events(mut body: Map<String, Value>, limits: EventLimits) -> Result<Vec<Value>, ApiError> {
    let batch = match body.remove("batch") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_batch",
                "field \"batch\" must be an array of events",
            ))
        }
        None => return Err(ApiError::bad_request("invalid_batch", "field \"batch\" is required")),
    };
    if batch.len() > limits.max_batch_events {
        return Err(ApiError::too_large(format!(
            "batch has {} events; the limit is {} per request",
            batch.len(),
            limits.max_batch_events
        )));
    }
    // Batch-level context and sentAt apply to every event that lacks its own.
    let shared_context = body.remove("context");
    let shared_sent_at = body.remove("sentAt");
    batch
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(mut event) = item else {
                return Err(ApiError::bad_request(
                    "invalid_event",
                    format!("event {index}: must be a JSON object"),
                ));
            };
            if let (Some(Value::Object(shared)), false) = (&shared_context, event.contains_key("context")) {
                event.insert("context".into(), Value::Object(shared.clone()));
            }
            if let (Some(sent_at), false) = (&shared_sent_at, event.contains_key("sentAt")) {
                event.insert("sentAt".into(), sent_at.clone());
            }
            Ok(Value::Object(event))
        })
        .collect()
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Segment's ingest enrichment: `messageId` when missing (generated once, so
/// retries of the delivery reuse it as `$insert_id`), `receivedAt`, and
/// `timestamp = receivedAt - (sentAt - timestamp)` when `sentAt` is given
/// (`originalTimestamp` keeps the sender's value).
pub fn enrich(event: &mut Value, received_at: &str, now: DateTime<Utc>) {
    let Value::Object(map) = event else { return };
    let has_message_id = matches!(map.get("messageId"), Some(Value::String(s)) if !s.is_empty());
    if !has_message_id {
        map.insert(
            "messageId".into(),
            Value::String(format!("api-{}", uuid::Uuid::new_v4().simple())),
        );
    }
    map.insert("receivedAt".into(), Value::String(received_at.to_owned()));
    let sent_at = parse_time(map.get("sentAt"));
    let timestamp = parse_time(map.get("timestamp"));
    match (sent_at, timestamp) {
        (Some(sent), Some(ts)) => {
            let corrected = now - (sent - ts);
            if let Some(original) = map.get("timestamp").cloned() {
                map.insert("originalTimestamp".into(), original);
            }
            map.insert(
                "timestamp".into(),
                Value::String(corrected.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
        // Missing or null: the time Segment received it (stable across retries).
        (_, None) if map.get("timestamp").is_none_or(Value::is_null) => {
            map.insert("timestamp".into(), Value::String(received_at.to_owned()));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: EventLimits = EventLimits {
        max_event_bytes: 32 * 1024,
        max_batch_events: 3,
    };

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:10.000Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn route_kinds() {
        assert_eq!(RouteKind::parse("t"), Some(RouteKind::Single(EventType::Track)));
        assert_eq!(RouteKind::parse("import"), Some(RouteKind::Batch));
        assert_eq!(RouteKind::parse("nope"), None);
    }

    #[test]
    fn write_key_from_basic_or_body() {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("wk1:"));
        assert_eq!(write_key(Some(&basic), &json!({})), Some("wk1".into()));
        assert_eq!(write_key(None, &json!({"writeKey": "wk2"})), Some("wk2".into()));
        assert_eq!(write_key(Some("Basic !!!"), &json!({})), None);
    }

    #[test]
    fn single_event_gets_type_and_enrichment() {
        let body = json!({"userId": "u", "event": "E", "timestamp": "2024-01-01T00:00:00.000Z", "sentAt": "2024-01-01T00:00:05.000Z", "writeKey": "k"});
        let events = extract(RouteKind::Single(EventType::Track), body, LIMITS, now()).unwrap();
        let e = &events[0];
        assert_eq!(e["type"], "track");
        assert_eq!(e["timestamp"], "2024-01-01T00:00:05.000Z");
        assert_eq!(e["originalTimestamp"], "2024-01-01T00:00:00.000Z");
        assert_eq!(e["receivedAt"], "2024-01-01T00:00:10.000Z");
        assert!(e["messageId"].as_str().unwrap().starts_with("api-"));
        assert!(e.get("writeKey").is_none());
    }

    #[test]
    fn message_id_is_kept() {
        let body = json!({"batch": [{"type": "identify", "userId": "u", "messageId": "m1"}]});
        let events = extract(RouteKind::Batch, body, LIMITS, now()).unwrap();
        assert_eq!(events[0]["messageId"], "m1");
        assert_eq!(events[0]["timestamp"], "2024-01-01T00:00:10.000Z");
    }

    #[test]
    fn errors_name_event_index_and_field() {
        let body = json!({"batch": [{"type": "track", "userId": "u", "event": "E"}, {"type": "track", "event": "E"}]});
        let e = extract(RouteKind::Batch, body, LIMITS, now()).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(
            e.message.contains("event 1") && e.message.contains("userId"),
            "{}",
            e.message
        );
        let body = json!({"batch": [{"type": "track", "userId": "u"}]});
        let e = extract(RouteKind::Batch, body, LIMITS, now()).unwrap_err();
        assert!(
            e.message.contains("event 0") && e.message.contains("\"event\""),
            "{}",
            e.message
        );
        let body = json!({"batch": [1, 2, 3, 4]});
        assert_eq!(
            extract(RouteKind::Batch, body, LIMITS, now())
                .unwrap_err()
                .status
                .as_u16(),
            413
        );
        let big = json!({"userId": "u", "event": "E", "properties": {"x": "y".repeat(40_000)}});
        let e = extract(RouteKind::Single(EventType::Track), big, LIMITS, now()).unwrap_err();
        assert_eq!(e.status.as_u16(), 413);
        assert!(e.message.contains("32768"));
    }

    #[test]
    fn batch_context_is_shared() {
        let body = json!({"context": {"ip": "1.1.1.1"}, "batch": [{"type": "identify", "userId": "u"}, {"type": "identify", "userId": "v", "context": {}}]});
        let events = extract(RouteKind::Batch, body, LIMITS, now()).unwrap();
        assert_eq!(events[0]["context"]["ip"], "1.1.1.1");
        assert_eq!(events[1]["context"], json!({}));
    }
}
