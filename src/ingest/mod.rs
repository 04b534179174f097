//! The HTTP API: Segment's tracking API (so Segment's SDKs work by changing their
//! host), the synchronous per-event endpoint, preview, health, admin
//! (`admin`: authenticated by a layer before anything else is read) and the
//! browser console (`console`).
//!
//! A request goes: body limits and gzip ([`body`]) -> write key -> events
//! (Segment's enrichment: `messageId`, `receivedAt`, clock-skew correction, `type`
//! from the route) -> checks naming the event index and field -> the destinations
//! routed to by the write key -> [`sink`] (the one seam between accepting and
//! delivering) -> the answer. Every refusal is an [`ApiError`].

mod admin;
pub mod body;
mod console;
pub mod error;
pub mod events;
mod extract;
mod handlers;
pub mod sink;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;

use crate::config::AppConfig;
use crate::delivery::spool::Spool;
use crate::delivery::Deliverer;
pub use admin::{check_all as check_credentials, Credentials};
pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<AppConfig>,
    /// Synchronous delivery (the destination events endpoint, `direct` mode).
    pub deliverer: Deliverer,
    /// The durable queue (`spool` mode).
    pub spool: Option<Spool>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Starting, serving, or shutting down (`/readyz`).
    pub lifecycle: Arc<Lifecycle>,
    /// Permits to parse and validate request bodies: half the cores, so
    /// senders posting flat out leave the delivery workers their share of the
    /// CPU (the spool absorbs what they cannot deliver yet).
    pub ingest_cpu: Arc<tokio::sync::Semaphore>,
    /// Bytes of request bodies being read or parsed at once
    /// (`limits.max_body_bytes_in_flight`).
    pub body_bytes: Arc<tokio::sync::Semaphore>,
    /// The last credential check of each destination (`/admin/credentials`).
    pub credentials: Arc<admin::Credentials>,
}

/// How many request bodies are parsed at once: half the cores, at least one.
pub fn ingest_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1)
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

/// Where the process is in its life: `/readyz` is 200 only while serving.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

/// A phase of [`Lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not listening yet (the spool is being opened or recovered).
    Starting,
    /// Listening and accepting.
    Serving,
    /// Shutdown started: the listener drains, nothing new should be routed here.
    ShuttingDown,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::ShuttingDown,
        }
    }

    /// Listening: ready, unless the spool says otherwise.
    pub fn serving(&self) {
        // Never back from shutting down.
        let _ = self.0.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) {
        self.0.store(2, Ordering::SeqCst);
    }
}

/// Why `/readyz` is not 200: the reason code and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    Starting,
    ShuttingDown,
    /// The disk refused a write (no space); cleared by the next append that succeeds.
    DiskFull,
    /// The spool is at its size limit (`spool.max_bytes`).
    SpoolFull,
}

impl NotReady {
    pub fn code(self) -> &'static str {
        match self {
            NotReady::Starting => "starting",
            NotReady::ShuttingDown => "shutting_down",
            NotReady::DiskFull => "disk_full",
            NotReady::SpoolFull => "spool_full",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            NotReady::Starting => "not ready: starting (the listener is not open yet)",
            NotReady::ShuttingDown => "not ready: shutting down; in-flight requests are being finished",
            NotReady::DiskFull => {
                "not ready: the disk refused a spool write (no space left); events are refused until a write succeeds"
            }
            NotReady::SpoolFull => "not ready: the spool is at spool.max_bytes; delivering the backlog frees room",
        }
    }
}

impl AppState {
    /// Ready (`Ok`): serving, and the spool (if any) has room; else the reason.
    pub fn readiness(&self) -> Result<(), NotReady> {
        match self.lifecycle.phase() {
            Phase::Starting => return Err(NotReady::Starting),
            Phase::ShuttingDown => return Err(NotReady::ShuttingDown),
            Phase::Serving => {}
        }
        match &self.spool {
            Some(spool) if spool.disk_refused() => Err(NotReady::DiskFull),
            Some(spool) if spool.is_full() => Err(NotReady::SpoolFull),
            _ => Ok(()),
        }
    }
}

/// The router of the whole API. Every route but the probes (`/healthz`,
/// `/readyz`, `/metrics`) counts against `limits.max_requests`: beyond it a
/// request is answered at once with 503 `overloaded` and `Retry-After`, instead
/// of waiting (the probes stay answerable under load, so an orchestrator does not
/// restart a process that is only busy).
pub fn app(state: AppState) -> Router {
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(state.config.limits.max_requests));
    let api = Router::new()
        .route("/v1/destinations/{id}/events", post(handlers::destination_events))
        .route("/v1/destinations/{id}/preview", post(handlers::destination_preview))
        .route("/v1/{kind}", post(handlers::segment_api))
        .merge(admin::routes(state.clone()))
        .merge(console::router())
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(shed);
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .merge(api)
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// How long a sender refused for load should wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The answer when `limits.max_requests` requests are already being handled.
async fn overloaded(error: BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "overloaded",
            message: "too many requests in progress (limits.max_requests); retry later".into(),
            retry_after: Some(OVERLOADED_RETRY_AFTER),
        }
    } else {
        tracing::error!(error = %error, "request failed in a middleware");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_goes_forward_only() {
        let life = Lifecycle::default();
        assert_eq!(life.phase(), Phase::Starting);
        life.serving();
        assert_eq!(life.phase(), Phase::Serving);
        life.shutting_down();
        assert_eq!(life.phase(), Phase::ShuttingDown);
        life.serving();
        assert_eq!(life.phase(), Phase::ShuttingDown, "never back from shutting down");
        let codes: Vec<&str> = [
            NotReady::Starting,
            NotReady::ShuttingDown,
            NotReady::DiskFull,
            NotReady::SpoolFull,
        ]
        .iter()
        .map(|r| r.code())
        .collect();
        assert_eq!(codes, ["starting", "shutting_down", "disk_full", "spool_full"]);
    }
}
