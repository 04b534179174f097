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
/// enrichment).
///
/// `limits.max_event_bytes` applies to the event as sent: its compact JSON
/// before ingest touched it (for a single-event route the request body object,
/// `writeKey` and all; for a batch the element, with the batch-level `context`
/// and `sentAt` it inherits). What ingest adds or replaces (`type`,
/// `messageId`, `receivedAt`, `timestamp`, `originalTimestamp`) does not count.
/// That size is the serialized length minus what those members changed (see
/// [`Members`]), so nothing is serialized twice.
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
    let (mut events, sent): (Vec<Value>, Vec<Members>) = match kind {
        RouteKind::Single(t) => {
            let sent = Members::of(&body);
            body.remove("writeKey");
            body.insert("type".into(), Value::String(t.as_str().to_owned()));
            (vec![Value::Object(body)], vec![sent])
        }
        RouteKind::Batch => batch_events(body, limits)?.into_iter().unzip(),
    };
    let received_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut serialized = Vec::with_capacity(events.len());
    for (index, (event, sent)) in events.iter_mut().zip(sent).enumerate() {
        segment::check(event).map_err(|e| event_error(index, &e))?;
        enrich(event, &received_at, now);
        let bytes = serde_json::to_vec(&*event).unwrap_or_default();
        let size = match event {
            Value::Object(map) => sent.size_as_sent(bytes.len(), &Members::of(map)),
            _ => bytes.len(),
        };
        if size > limits.max_event_bytes {
            return Err(ApiError::too_large(format!(
                "event {index} is {size} bytes as sent; the limit is {} bytes per event (limits.max_event_bytes)",
                limits.max_event_bytes
            )));
        }
        serialized.push(bytes);
    }
    Ok(Extracted { events, serialized })
}

/// The members of an event that ingest may add, remove or replace.
const TOUCHED: [&str; 6] = [
    "writeKey",
    "type",
    "messageId",
    "receivedAt",
    "timestamp",
    "originalTimestamp",
];

/// What the [`TOUCHED`] members of an event object add to its compact JSON, and
/// how many members it has. An object's compact JSON is `{`, `}`, each member's
/// `"key":value`, and a comma between two members; ingest leaves every other
/// member as it is, so comparing two `Members` of one event gives the bytes its
/// serialization changed by.
#[derive(Clone, Copy, Debug, Default)]
pub struct Members {
    touched_bytes: usize,
    count: usize,
}

impl Members {
    pub fn of(map: &Map<String, Value>) -> Members {
        let touched_bytes = TOUCHED
            .iter()
            .filter_map(|key| map.get(*key).map(|v| member_len(key, v)))
            .sum();
        Members {
            touched_bytes,
            count: map.len(),
        }
    }

    fn commas(self) -> usize {
        self.count.saturating_sub(1)
    }

    /// The compact JSON size the event had when these were its members, given
    /// `serialized` bytes now that `now` are.
    pub fn size_as_sent(self, serialized: usize, now: &Members) -> usize {
        (serialized + self.touched_bytes + self.commas()).saturating_sub(now.touched_bytes + now.commas())
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of `"key":value` in compact JSON.
fn member_len(key: &str, value: &Value) -> usize {
    let mut counter = Counter(1);
    // Writing to a counter cannot fail, nor can serializing a `Value`.
    let _ = serde_json::to_writer(&mut counter, key);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
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

fn batch_events(mut body: Map<String, Value>, limits: EventLimits) -> Result<Vec<(Value, Members)>, ApiError> {
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
            let sent = Members::of(&event);
            Ok((Value::Object(event), sent))
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

    /// A track event whose compact JSON is exactly `size` bytes.
    fn event_of(size: usize, extra: Value) -> Value {
        let mut e = json!({"userId": "u", "event": "E", "properties": {"pad": ""}});
        for (k, v) in common_obj(&extra) {
            e[k] = v;
        }
        let base = serde_json::to_vec(&e).unwrap().len();
        e["properties"]["pad"] = Value::String("x".repeat(size - base));
        assert_eq!(serde_json::to_vec(&e).unwrap().len(), size);
        e
    }

    fn common_obj(v: &Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_event_limit_is_on_the_event_as_sent() {
        let limits = EventLimits {
            max_event_bytes: 2000,
            max_batch_events: 3,
        };
        let track = RouteKind::Single(EventType::Track);
        // Whatever ingest adds, replaces or removes: exactly the limit passes,
        // one byte more does not.
        for extra in [
            json!({}),
            json!({"writeKey": "k", "type": "whatever"}),
            json!({"messageId": "m", "timestamp": "2024-01-01T00:00:00.000Z", "sentAt": "2024-01-01T00:00:05.000Z"}),
            json!({"messageId": ["not", "a", "string"], "receivedAt": {"x": 1}, "timestamp": null}),
            json!({"originalTimestamp": "é\u{1}\"", "timestamp": 12}),
        ] {
            let at = event_of(2000, extra.clone());
            assert!(extract(track, at.clone(), limits, now()).is_ok(), "{extra}");
            let over = event_of(2001, extra.clone());
            let e = extract(track, over.clone(), limits, now()).unwrap_err();
            assert_eq!(e.status.as_u16(), 413, "{extra}");
            assert!(
                e.message.contains("2001 bytes") && e.message.contains("2000"),
                "{}",
                e.message
            );
            let mut item = at;
            item["type"] = json!("track");
            let exact = serde_json::to_vec(&item).unwrap().len();
            let batch = json!({"batch": [item.clone()]});
            let fits = exact <= 2000;
            assert_eq!(extract(RouteKind::Batch, batch, limits, now()).is_ok(), fits, "{extra}");
        }
        // A batch element counts the context it inherits.
        let item = event_of(1900, json!({"type": "track"}));
        let body = json!({"context": {"pad": "y".repeat(200)}, "batch": [item.clone()]});
        assert_eq!(
            extract(RouteKind::Batch, body, limits, now())
                .unwrap_err()
                .status
                .as_u16(),
            413
        );
        let body = json!({"context": {"pad": "y".repeat(50)}, "batch": [item]});
        assert!(extract(RouteKind::Batch, body, limits, now()).is_ok());
    }

    #[test]
    fn member_sizes_add_up_to_the_serialization() {
        let cases = [
            json!({}),
            json!({"a": 1}),
            json!({"messageId": "m", "x": [1, 2.5, "é"], "type": "t"}),
            json!({"timestamp": "\u{0}\"\\", "writeKey": {"nested": [null, true]}}),
        ];
        for case in cases {
            let map = case.as_object().unwrap();
            let members: usize = map.iter().map(|(k, v)| member_len(k, v)).sum();
            let commas = map.len().saturating_sub(1);
            assert_eq!(2 + members + commas, serde_json::to_vec(&case).unwrap().len(), "{case}");
        }
    }

    #[test]
    fn batch_context_is_shared() {
        let body = json!({"context": {"ip": "1.1.1.1"}, "batch": [{"type": "identify", "userId": "u"}, {"type": "identify", "userId": "v", "context": {}}]});
        let events = extract(RouteKind::Batch, body, LIMITS, now()).unwrap();
        assert_eq!(events[0]["context"]["ip"], "1.1.1.1");
        assert_eq!(events[1]["context"], json!({}));
    }
}
