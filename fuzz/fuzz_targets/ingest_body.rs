//! Ingest: a request body through the size/gzip/nesting/JSON parser
//! (`ingest::body::parse_json`) and then Segment's extraction and enrichment
//! (`ingest::events::extract_serialized`) for a route.
//!
//! Input: the first byte chooses the encoding (bits 0-1: none, gzip of the
//! rest (compressed here, so the JSON behind it is fuzzed), the rest sent as
//! gzip as it is (the decoder is fuzzed), an unsupported encoding) and the
//! route (bits 2-5); the rest is the body.
//!
//! Checks: no panic; an accepted body is no larger than the limit and nests
//! no deeper than the limit; every extracted event's stored bytes parse back
//! to the event.
#![no_main]

use std::io::Write as _;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use mixpanel_actions::ingest::body::parse_json;
use mixpanel_actions::ingest::events::{extract_serialized, write_key, EventLimits, RouteKind};
use serde_json::Value;

const MAX_BYTES: usize = 64 * 1024;
const MAX_DEPTH: usize = 32;
const ROUTES: [&str; 16] = [
    "track", "identify", "page", "screen", "group", "alias", "batch", "import", "t", "i", "p", "s", "g", "a", "b",
    "nope",
];

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    let compressed;
    let raw: &[u8] = match mode & 3 {
        0 => body,
        1 => {
            headers.insert("content-encoding", HeaderValue::from_static("gzip"));
            compressed = gzip(body);
            &compressed
        }
        2 => {
            headers.insert("content-encoding", HeaderValue::from_static("x-gzip"));
            body
        }
        _ => {
            headers.insert("content-encoding", HeaderValue::from_static("br"));
            body
        }
    };
    let parsed = parse_json(&headers, raw, MAX_BYTES, MAX_DEPTH);
    let Ok(value) = parsed else {
        return;
    };
    assert!(mode & 3 != 3, "an unsupported encoding was accepted");
    assert!(
        depth(&value) <= MAX_DEPTH,
        "nesting {} past the limit {MAX_DEPTH}",
        depth(&value)
    );
    let _ = write_key(None, &value);
    let _ = write_key(Some("Basic dTE6"), &value);
    let Some(kind) = RouteKind::parse(ROUTES[usize::from(mode >> 2) & 15]) else {
        return;
    };
    let limits = EventLimits {
        max_event_bytes: 32 * 1024,
        max_batch_events: 100,
    };
    let now = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).unwrap_or_default();
    if let Ok(extracted) = extract_serialized(kind, value, limits, now) {
        assert_eq!(extracted.events.len(), extracted.serialized.len());
        assert!(extracted.events.len() <= limits.max_batch_events.max(1));
        for (event, bytes) in extracted.events.iter().zip(&extracted.serialized) {
            let back: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            assert_eq!(&back, event, "stored bytes do not parse back to the event");
        }
    }
});
