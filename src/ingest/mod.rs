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
use crate::delivery::Deliverer;
pub use error::ApiError;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<AppConfig>,
    pub deliverer: Deliverer,
    /// False until listening, and again once shutdown starts.
    pub ready: Arc<AtomicBool>,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
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
        .route("/admin/config", get(handlers::admin_config))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}
