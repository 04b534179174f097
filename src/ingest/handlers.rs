//! Route handlers of the tracking API, the destination routes and the probes.
//! Thin: parse, route, call the sink, shape the answer. The admin routes are in
//! `admin`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::body::{parse_json, read_limited};
use super::events::{self, EventLimits, RouteKind};
use super::extract::ApiPath;
use super::sink::{self, DestinationReport};
use super::{ApiError, AppState};
use crate::config::DestinationConfig;
use crate::delivery::spool::{Spool, SpoolError};
use crate::delivery::ItemResult;
use crate::mapping::schema::Mode;
use crate::mixpanel::api::redact_tokens;
use crate::telemetry as t;

/// Retry-After when Mixpanel did not give one.
pub(super) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 while serving with room in the spool; else 503 whose `code` names the
/// reason (`starting`, `shutting_down`, `disk_full`, `spool_full`).
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => {
            let mut e = ApiError::unavailable(reason.message(), Duration::from_secs(5));
            e.code = reason.code();
            e.into_response()
        }
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn read_json(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let (raw, _held) = read_body(state, headers, body).await?;
    let limits = &state.config.limits;
    parse_json(headers, &raw, limits.max_request_bytes, limits.max_nesting_depth)
}

/// Reads a request body, holding its share of `limits.max_body_bytes_in_flight`
/// (its `content-length`, or `max_request_bytes` when it does not say) for as
/// long as the caller keeps the permit. None left: 503 `overloaded` at once,
/// before any byte is read.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(axum::body::Bytes, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let limits = &state.config.limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let share = declared
        .unwrap_or(limits.max_request_bytes)
        .min(limits.max_request_bytes)
        .max(1);
    let held = state
        .body_bytes
        .clone()
        .try_acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
        .map_err(|_| {
            let mut e = ApiError::unavailable(
                format!(
                    "request bodies in flight are at limits.max_body_bytes_in_flight ({} bytes); retry later",
                    limits.max_body_bytes_in_flight
                ),
                Duration::from_secs(1),
            );
            e.code = "overloaded";
            e
        })?;
    // The raw body may not exceed the decompressed limit either.
    let bytes = within_body_timeout(limits.body_timeout, read_limited(body, limits.max_request_bytes)).await??;
    Ok((bytes, held))
}

/// Reading a whole body may take `limit` at most (a client trickling it in
/// would otherwise hold its request slot and its bytes for as long as it likes);
/// then 408 `body_timeout`, and the connection is closed.
pub(super) async fn within_body_timeout<T>(
    limit: Duration,
    read: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(limit, read).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within limits.body_timeout ({limit:?})"),
        )
    })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

fn key_matches(dest: &DestinationConfig, key: &str) -> bool {
    dest.write_keys.iter().any(|k| {
        let k = k.expose_secret();
        k == "*" || k == key
    })
}

fn event_limits(state: &AppState) -> EventLimits {
    EventLimits {
        max_event_bytes: state.config.limits.max_event_bytes,
        max_batch_events: state.config.limits.max_batch_events,
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `POST /v1/{kind}`: Segment's tracking API.
pub async fn segment_api(
    State(state): State<AppState>,
    ApiPath(kind): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let route = RouteKind::parse(&kind).ok_or_else(|| ApiError::not_found(format!("no route for /v1/{kind}")))?;
    let (raw, held) = read_body(&state, &headers, body).await?;
    // In spool mode the CPU work of ingest (parse, validate, enrich,
    // serialize) holds a permit, so senders posting flat out leave the delivery
    // workers their share of the CPU. Reading the body holds none, so a slow
    // sender holds none. Direct mode delivers in the request: no permit.
    let permit = match state.spool {
        Some(_) => state.ingest_cpu.clone().acquire_owned().await.ok(),
        None => None,
    };
    let limits = &state.config.limits;
    let value = parse_json(&headers, &raw, limits.max_request_bytes, limits.max_nesting_depth)?;
    drop(raw);
    drop(held);
    let key = events::write_key(authorization(&headers), &value).ok_or_else(|| {
        ApiError::unauthorized("missing write key: send it as the Basic auth user name or as \"writeKey\"")
    })?;
    let destinations: Vec<&DestinationConfig> = state
        .config
        .destinations
        .iter()
        .filter(|d| key_matches(d, &key))
        .collect();
    if destinations.is_empty() {
        return Err(ApiError::unauthorized("unknown write key"));
    }
    let extracted = events::extract_serialized(route, value, event_limits(&state), Utc::now())?;
    drop(permit);
    if let Some(spool) = &state.spool {
        return accept_into_spool(spool, &destinations, extracted.serialized).await;
    }
    let events = extracted.events;
    let now = now_ms();
    let mut rejected = Vec::new();
    let mut retry: Option<Duration> = None;
    let mut failed = false;
    for dest in destinations {
        let report = sink::deliver(&state.deliverer, dest, &events, now).await;
        for r in report.rejections(dest) {
            tracing::warn!(destination = %dest.id, rejection = %r, "event rejected");
            rejected.push(r);
        }
        if report.any_failed() {
            failed = true;
            retry = retry.max(report.retry_after());
        }
    }
    if failed {
        let mut e = ApiError::unavailable(
            "Mixpanel could not be reached within the retry budget; retry the request",
            retry.unwrap_or(DEFAULT_RETRY_AFTER),
        );
        e.code = "delivery_failed";
        return Err(e);
    }
    let mut answer = Map::new();
    answer.insert("success".into(), Value::Bool(true));
    if !rejected.is_empty() {
        answer.insert("rejected".into(), Value::Array(rejected));
    }
    Ok(Json(Value::Object(answer)).into_response())
}

/// Spool mode: answer 200 once the events are durable for every destination.
async fn accept_into_spool(
    spool: &Spool,
    destinations: &[&DestinationConfig],
    events: Vec<Vec<u8>>,
) -> Result<Response, ApiError> {
    let count = events.len();
    let mut batch = Vec::with_capacity(count * destinations.len());
    for bytes in events {
        for dest in destinations {
            batch.push((dest.id.clone(), bytes.clone()));
        }
    }
    match spool.append(batch).await {
        Ok(()) => {
            for dest in destinations {
                metrics::counter!(t::EVENTS_ACCEPTED, "destination" => dest.id.clone()).increment(count as u64);
                crate::history::count(&dest.id, crate::history::Count::Received, count as u64);
            }
            Ok(Json(json!({"success": true})).into_response())
        }
        Err(SpoolError::Full(reason)) => {
            metrics::counter!(t::EVENTS_REFUSED_FULL).increment(count as u64);
            let mut e = ApiError::unavailable(format!("spool is full ({reason}); retry later"), DEFAULT_RETRY_AFTER);
            e.code = "spool_full";
            Err(e)
        }
        Err(e) => Err(ApiError::unavailable(
            format!("events could not be stored: {e}"),
            DEFAULT_RETRY_AFTER,
        )),
    }
}

/// The destination `id`, for a caller with the admin token or a write key routed
/// to it. Callers without valid credentials learn nothing about which ids exist.
fn destination_for<'a>(state: &'a AppState, id: &str, headers: &HeaderMap) -> Result<&'a DestinationConfig, ApiError> {
    let found = state.config.destinations.iter().find(|d| d.id == id);
    let unknown = || ApiError::not_found(format!("no destination with id \"{id}\""));
    if admin_ok(state, headers) {
        return found.ok_or_else(unknown);
    }
    let key = events::write_key(authorization(headers), &Value::Null)
        .ok_or_else(|| ApiError::unauthorized("missing write key (Basic auth user name) or admin token"))?;
    match found {
        Some(dest) if key_matches(dest, &key) => Ok(dest),
        None if state.config.destinations.iter().any(|d| key_matches(d, &key)) => Err(unknown()),
        _ => Err(ApiError::unauthorized(format!(
            "write key is not routed to destination \"{id}\""
        ))),
    }
}

/// One event, an array of events, or `{"batch": [...]}`.
fn direct_events(value: Value, state: &AppState) -> Result<Vec<Value>, ApiError> {
    let list = match value {
        Value::Array(items) => items,
        Value::Object(mut map) if map.contains_key("batch") => match map.remove("batch") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_batch",
                    "field \"batch\" must be an array of events",
                ))
            }
        },
        other => vec![other],
    };
    let body = json!({ "batch": list });
    events::extract(RouteKind::Batch, body, event_limits(state), Utc::now())
}

/// The reference's per-event "multistatus" answer for one event.
fn multistatus(dest: &DestinationConfig, report: &DestinationReport, event: usize) -> Value {
    let name = |i: usize| {
        dest.destination
            .subscriptions
            .get(i)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let mut subscriptions = Vec::new();
    let mut status = 200u16;
    let mut error: Option<String> = None;
    for f in report.refused.iter().filter(|f| f.event == event) {
        status = if status == 200 { f.status } else { status };
        error.get_or_insert_with(|| f.message.clone());
        subscriptions.push(json!({"subscription": name(f.subscription), "status": f.status,
                                  "errortype": "PAYLOAD_VALIDATION_FAILED", "errormessage": f.message}));
    }
    let mut sent = Vec::new();
    for (item, result) in report.delivered.iter().filter(|(i, _)| i.event == event) {
        let shown = redact_tokens(item.record.to_value());
        sent.push(shown.clone());
        let entry = match result {
            ItemResult::Delivered { status, body } => {
                json!({"subscription": name(item.subscription), "status": status, "sent": shown, "body": body})
            }
            ItemResult::Rejected { status: s, message, .. } => {
                if status == 200 {
                    status = *s;
                }
                error.get_or_insert_with(|| message.clone());
                json!({"subscription": name(item.subscription), "status": s, "errortype": "BAD_REQUEST",
                       "errormessage": message, "sent": shown})
            }
            ItemResult::Failed { message, .. } => {
                status = 503;
                error.get_or_insert_with(|| message.clone());
                json!({"subscription": name(item.subscription), "status": 503, "errortype": "RETRYABLE_ERROR",
                       "errormessage": message, "sent": shown})
            }
        };
        subscriptions.push(entry);
    }
    let mut out = Map::new();
    out.insert("status".into(), json!(status));
    out.insert("ok".into(), json!(status == 200));
    if let Some(e) = error {
        out.insert("errormessage".into(), Value::String(e));
    }
    out.insert("sent".into(), Value::Array(sent));
    out.insert("subscriptions".into(), Value::Array(subscriptions));
    Value::Object(out)
}

/// `POST /v1/destinations/{id}/events`: synchronous delivery, per-event results.
pub async fn destination_events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let dest = destination_for(&state, &id, &headers)?;
    let value = read_json(&state, &headers, body).await?;
    let events = direct_events(value, &state)?;
    let report = sink::deliver(&state.deliverer, dest, &events, now_ms()).await;
    let results: Vec<Value> = (0..events.len()).map(|i| multistatus(dest, &report, i)).collect();
    let status = if report.any_failed() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(json!({ "results": results }))).into_response();
    if report.any_failed() {
        let secs = report.retry_after().unwrap_or(DEFAULT_RETRY_AFTER).as_secs().max(1);
        if let Ok(v) = secs.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    Ok(response)
}

/// `POST /v1/destinations/{id}/preview`: what would be sent; nothing is delivered.
pub async fn destination_preview(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let dest = destination_for(&state, &id, &headers)?;
    let value = read_json(&state, &headers, body).await?;
    let (events, mode) = match value {
        Value::Object(mut map) if map.contains_key("event") && map.get("event").is_some_and(Value::is_object) => {
            (vec![map.remove("event").unwrap_or(Value::Null)], Mode::Single)
        }
        Value::Object(mut map) if map.contains_key("events") => match map.remove("events") {
            Some(Value::Array(items)) => (items, Mode::Batch),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_events",
                    "field \"events\" must be an array",
                ))
            }
        },
        Value::Array(items) => (items, Mode::Batch),
        other => (vec![other], Mode::Single),
    };
    let mut result = crate::preview::run_destination(&dest.destination, &[], &events, mode, now_ms());
    crate::preview::redact_secrets(&mut result);
    Ok(Json(result).into_response())
}

pub(super) fn admin_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.config.admin_token else {
        return false;
    };
    let Some(given) = authorization(headers).and_then(|a| a.strip_prefix("Bearer ")) else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.expose_secret().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(spool) = &state.spool {
        metrics::gauge!(t::SPOOL_DEPTH).set(spool.depth() as f64);
        metrics::gauge!(t::SPOOL_BYTES).set(spool.bytes() as f64);
    }
    match &state.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::not_found("metrics are not enabled in this process").into_response(),
    }
}
