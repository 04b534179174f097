//! The HTTP API: Segment's tracking API (so Segment's SDKs work by changing their
//! host), the synchronous per-event endpoint, preview, health and admin.
//!
//! A request goes: body limits and gzip ([`body`]) -> write key -> events
//! (Segment's enrichment: `messageId`, `receivedAt`, clock-skew correction, `type`
//! from the route) -> checks naming the event index and field -> the destinations
//! routed to by the write key -> [`sink`] (the one seam between accepting and
//! delivering) -> the answer. Every refusal is an [`ApiError`].

pub mod body;
pub mod error;
pub mod events;
mod handlers;
pub mod sink;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::config::AppConfig;
use crate::delivery::spool::Spool;
use crate::delivery::Deliverer;
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
    /// False until listening, and again once shutdown starts.
    pub ready: Arc<AtomicBool>,
    /// Permits to parse and validate request bodies: half the cores, so
    /// senders posting flat out leave the delivery workers their share of the
    /// CPU (the spool absorbs what they cannot deliver yet).
    pub ingest_cpu: Arc<tokio::sync::Semaphore>,
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

impl AppState {
    /// Ready: listening, not shutting down, and the spool (if any) has room.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.spool.as_ref().is_some_and(Spool::is_full)
    }
}

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/v1/destinations/{id}/events", post(handlers::destination_events))
        .route("/v1/destinations/{id}/preview", post(handlers::destination_preview))
        .route("/v1/{kind}", post(handlers::segment_api))
        .route("/metrics", get(handlers::metrics))
        .route("/admin/config", get(handlers::admin_config))
        .route(
            "/admin/dead-letters",
            get(handlers::dead_letters_list).delete(handlers::dead_letters_purge),
        )
        .route("/admin/dead-letters/replay", post(handlers::dead_letters_replay))
        .route("/admin/dead-letters/{id}", get(handlers::dead_letters_show))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}
