//! The admin API (`/admin/*`): the running configuration, the delivery
//! overview, credential checks and dead letters. The console (`console`) is a
//! page over these routes.
//!
//! Authentication is a layer in front of every admin route, before any
//! extractor runs: no `admin_token` configured → 404 (admin is off); a missing
//! or wrong bearer token → 401; only then are paths, queries and bodies read,
//! and their refusals are JSON [`ApiError`]s like every other answer. Nothing
//! here returns a secret: tokens, secrets and write keys are named, never shown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::read_limited;
use super::extract::{ApiPath, ApiQuery};
use super::handlers::{self, admin_ok, within_body_timeout, DEFAULT_RETRY_AFTER};
use super::{ApiError, AppState};
use crate::delivery::spool::{DeadLetter, DeadSummary, Op, Spool};
use crate::history::{self, Window};
use crate::mixpanel::credentials::{self, CredentialStatus};

/// The admin routes: everything under `/admin`, behind [`gate`].
pub fn routes(state: AppState) -> Router<AppState> {
    let gated = middleware::from_fn_with_state(state.clone(), gate);
    Router::new()
        .nest("/admin", router(state))
        // Not covered by the nest: gated too, so it says 401 before 404.
        .route("/admin/", axum::routing::any(unknown).layer(gated))
}

/// The routes below `/admin`, behind [`gate`].
fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/config", get(admin_config))
        .route("/overview", get(overview))
        .route("/credentials", get(credentials_list).post(credentials_check))
        .route("/dead-letters", get(dead_letters_list).delete(dead_letters_purge))
        .route("/dead-letters/replay", post(dead_letters_replay))
        .route("/dead-letters/{id}", get(dead_letters_show))
        .fallback(unknown)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state, gate))
}

/// Admin off → 404; no or a wrong bearer token → 401; else the route.
async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.config.admin_token.is_none() {
        return ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "admin_off",
            "admin endpoints are off: no admin_token is configured",
        )
        .into_response();
    }
    if !admin_ok(&state, request.headers()) {
        return ApiError::unauthorized("admin endpoints need Authorization: Bearer <admin_token>").into_response();
    }
    next.run(request).await
}

async fn unknown(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no admin route for {}", uri.path()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `GET /admin/config`: the running configuration without secrets, with each
/// subscription's trigger warnings (FQL quirks, as `check` prints them).
async fn admin_config(State(state): State<AppState>) -> Response {
    let c = &state.config;
    let destinations: Vec<Value> = c
        .destinations
        .iter()
        .map(|d| {
            let s = &d.destination.settings;
            let import_auth = match &s.import_auth {
                crate::mixpanel::ImportAuth::SecretOrToken if s.api_secret.is_some() => "secret",
                crate::mixpanel::ImportAuth::SecretOrToken => "project_token (no api_secret)",
                crate::mixpanel::ImportAuth::ProjectToken => "project_token",
                crate::mixpanel::ImportAuth::ServiceAccount { .. } => "service_account",
            };
            json!({
                "id": d.id,
                "write_keys": d.write_keys.len(),
                "region": format!("{:?}", s.region).to_uppercase(),
                "base_url": s.base_url(),
                "import_auth": import_auth,
                "strict_mode": s.strict_mode,
                "repair_insert_ids": s.repair_insert_ids,
                "traits_from_context": s.traits_from_context,
                "source_name": s.source_name,
                "dry_run": d.dry_run,
                "batch_size": d.batch_size,
                "gzip": d.gzip,
                "subscriptions": d.destination.subscriptions.iter().map(|s| json!({
                    "name": s.name,
                    "subscribe": s.trigger.source(),
                    "partnerAction": s.action.name(),
                    "enabled": s.enabled,
                    "mapping": s.mapping.source(),
                    "warnings": s.trigger.warnings(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "listen": c.listen.to_string(),
        "delivery_mode": format!("{:?}", c.delivery.mode).to_lowercase(),
        "limits": {
            "max_event_bytes": c.limits.max_event_bytes,
            "max_request_bytes": c.limits.max_request_bytes,
            "max_nesting_depth": c.limits.max_nesting_depth,
            "max_batch_events": c.limits.max_batch_events,
            "header_timeout_ms": millis(c.limits.header_timeout),
            "body_timeout_ms": millis(c.limits.body_timeout),
            "idle_timeout_ms": millis(c.limits.idle_timeout),
            "max_connections": c.limits.max_connections,
            "max_requests": c.limits.max_requests,
        },
        "destinations": destinations,
    }))
    .into_response()
}

/// `window` of the overview.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverviewQuery {
    /// `10m`, `1h` or `24h`.
    window: Option<String>,
}

/// `GET /admin/overview?window=10m|1h|24h`: per destination, the counts over the
/// window, a series of points (per minute; per 15 minutes over 24 h), Mixpanel's
/// latency and status classes, and the spool's depth and oldest event.
async fn overview(State(state): State<AppState>, ApiQuery(q): ApiQuery<OverviewQuery>) -> Result<Response, ApiError> {
    let (minutes, step) = match q.window.as_deref().unwrap_or("1h") {
        "10m" => (10, 1),
        "1h" => (60, 1),
        "24h" => (history::MINUTES, 15),
        other => {
            return Err(ApiError::bad_request(
                "invalid_window",
                format!("window must be 10m, 1h or 24h, not {:?}", truncate(other, 16)),
            ))
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let h = history::global();
    let destinations: Vec<Value> = state
        .config
        .destinations
        .iter()
        .map(|d| {
            let w: Window = h.window(&d.id, now, minutes, step);
            let depth = state.spool.as_ref().map(|s| s.destination_depth(&d.id).unwrap_or(0));
            let mut v = w.to_json();
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), json!(d.id));
                m.insert("dry_run".into(), json!(d.dry_run));
                m.insert(
                    "spool".into(),
                    json!({"depth": depth, "oldest_event_age_seconds": h.oldest_age(&d.id)}),
                );
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "now_ms": now,
        "since_ms": h.started_ms(),
        "window_minutes": minutes,
        "step_minutes": step,
        "delivery_mode": format!("{:?}", state.config.delivery.mode).to_lowercase(),
        "destinations": destinations,
    }))
    .into_response())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The last credential check of each destination.
#[derive(Debug, Default)]
pub struct Credentials {
    last: Mutex<HashMap<String, CredentialStatus>>,
}

impl Credentials {
    fn get(&self, id: &str) -> Option<CredentialStatus> {
        self.last.lock().ok().and_then(|m| m.get(id).cloned())
    }

    fn set(&self, id: &str, status: CredentialStatus) {
        if let Ok(mut m) = self.last.lock() {
            m.insert(id.to_owned(), status);
        }
    }
}

/// Checks every destination's credentials (the reference's "test
/// authentication") and keeps the results for the console; logs the refused
/// ones at WARN. Run at start when `check_credentials_at_start` is set.
pub async fn check_all(state: AppState) {
    let timeout = state.config.delivery.request_timeout.min(Duration::from_secs(10));
    let checks = state.config.destinations.iter().map(|d| async {
        let status = credentials::check(&d.destination.settings, d.dry_run, timeout).await;
        if status.status == "invalid" || status.status == "unreachable" {
            tracing::warn!(destination = %d.id, status = status.status, message = %status.message, "credential check failed");
        } else {
            tracing::info!(destination = %d.id, status = status.status, "credential check");
        }
        state.credentials.set(&d.id, status);
    });
    futures_util::future::join_all(checks).await;
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialQuery {
    destination: Option<String>,
}

/// `GET /admin/credentials`: the last check of each destination (`null` when
/// none ran yet).
async fn credentials_list(State(state): State<AppState>) -> Response {
    let list: Vec<Value> = state
        .config
        .destinations
        .iter()
        .map(|d| json!({"destination": d.id, "check": state.credentials.get(&d.id)}))
        .collect();
    Json(json!({ "credentials": list })).into_response()
}

/// `POST /admin/credentials?destination=<id>`: checks now (one destination, or
/// all) and answers as the list does.
async fn credentials_check(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CredentialQuery>,
) -> Result<Response, ApiError> {
    let timeout = state.config.delivery.request_timeout.min(Duration::from_secs(10));
    let chosen: Vec<_> =
        match &q.destination {
            Some(id) => {
                let d =
                    state.config.destinations.iter().find(|d| &d.id == id).ok_or_else(|| {
                        ApiError::not_found(format!("no destination with id \"{}\"", truncate(id, 100)))
                    })?;
                vec![d]
            }
            None => state.config.destinations.iter().collect(),
        };
    let checks = chosen.iter().map(|d| async {
        let status = credentials::check(&d.destination.settings, d.dry_run, timeout).await;
        state.credentials.set(&d.id, status.clone());
        json!({"destination": d.id, "check": status})
    });
    let list = futures_util::future::join_all(checks).await;
    Ok(Json(json!({ "credentials": list })).into_response())
}

fn spool_of(state: &AppState) -> Result<&Spool, ApiError> {
    state
        .spool
        .as_ref()
        .ok_or_else(|| ApiError::not_found("dead letters exist only with delivery.mode = \"spool\""))
}

/// Filters of the dead-letter list, replay and purge.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    pub destination: Option<String>,
    pub reason: Option<String>,
    /// Epoch ms, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<usize>,
    /// Explicit ids (replay, purge).
    pub ids: Option<Vec<u64>>,
}

impl DeadFilter {
    fn keep(&self, d: &DeadLetter) -> bool {
        self.keep_summary(&DeadSummary {
            id: d.id,
            destination: d.destination.clone(),
            reason: d.reason.clone(),
            at_ms: d.at_ms,
        })
    }

    fn keep_summary(&self, d: &DeadSummary) -> bool {
        self.destination.as_ref().is_none_or(|x| *x == d.destination)
            && self.reason.as_ref().is_none_or(|x| *x == d.reason)
            && self.since_ms.is_none_or(|x| d.at_ms >= x)
            && self.until_ms.is_none_or(|x| d.at_ms <= x)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&d.id))
    }
}

const MAX_DEAD_PAGE: usize = 10_000;
/// Largest filter body of replay and purge.
const MAX_FILTER_BYTES: usize = 1 << 20;

/// `GET /admin/dead-letters?destination=&reason=&since_ms=&until_ms=&limit=`
async fn dead_letters_list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<DeadFilter>,
) -> Result<Response, ApiError> {
    let spool = spool_of(&state)?;
    let limit = filter.limit.unwrap_or(100).min(MAX_DEAD_PAGE);
    // Counted before listing: letters only arrive in between, so the list never
    // shows fewer letters than the total says.
    let total = spool.dead_count().unwrap_or(0);
    let letters = spool
        .dead_letters(limit, |d| filter.keep(d))
        .map_err(|e| ApiError::unavailable(e.to_string(), DEFAULT_RETRY_AFTER))?;
    Ok(
        Json(json!({"total": total, "dropped_since_start": spool.dead_dropped(), "dead_letters": letters}))
            .into_response(),
    )
}

/// `GET /admin/dead-letters/{id}`
async fn dead_letters_show(State(state): State<AppState>, ApiPath(id): ApiPath<u64>) -> Result<Response, ApiError> {
    let spool = spool_of(&state)?;
    match spool
        .dead_letter(id)
        .map_err(|e| ApiError::unavailable(e.to_string(), DEFAULT_RETRY_AFTER))?
    {
        Some(letter) => Ok(Json(letter).into_response()),
        None => Err(ApiError::not_found(format!("no dead letter with id {id}"))),
    }
}

async fn selected_ids(spool: &Spool, filter: &DeadFilter) -> Result<Vec<u64>, ApiError> {
    spool
        .dead_letter_ids(filter.limit.unwrap_or(usize::MAX), |d| filter.keep_summary(d))
        .map_err(|e| ApiError::unavailable(e.to_string(), DEFAULT_RETRY_AFTER))
}

async fn filter_body(body: Body, body_timeout: Duration) -> Result<DeadFilter, ApiError> {
    let raw = within_body_timeout(body_timeout, read_limited(body, MAX_FILTER_BYTES)).await??;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeadFilter::default());
    }
    serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request("invalid_filter", format!("invalid filter: {e}")))
}

/// Applies `op` to the dead letters selected by the filter body; answers
/// `{<verb>: count}`.
async fn dead_letters_apply(
    state: &AppState,
    body: Body,
    op: fn(Vec<u64>) -> Op,
    verb: &str,
) -> Result<Response, ApiError> {
    let spool = spool_of(state)?;
    let filter = filter_body(body, state.config.limits.body_timeout).await?;
    let ids = selected_ids(spool, &filter).await?;
    let n = spool
        .submit(op(ids))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string(), DEFAULT_RETRY_AFTER))?;
    Ok(Json(json!({ verb: n })).into_response())
}

/// `POST /admin/dead-letters/replay` with a filter body (`{}` = all): re-queues them.
async fn dead_letters_replay(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    dead_letters_apply(&state, body, Op::Replay, "replayed").await
}

/// `DELETE /admin/dead-letters` with a filter body (`{}` = all): deletes them.
async fn dead_letters_purge(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    dead_letters_apply(&state, body, Op::Purge, "purged").await
}
