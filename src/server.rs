//! Running the server: bind, serve the API, stop gracefully on SIGTERM/SIGINT
//! (readiness fails first, in-flight requests finish).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::AppConfig;
use crate::delivery::backoff::Backoff;
use crate::delivery::{Deliverer, RetryPolicy};
use crate::ingest::{self, AppState};
use crate::mixpanel::client::Client;

/// Builds the shared state from a validated configuration.
pub fn state(config: AppConfig) -> anyhow::Result<AppState> {
    let client = Client::new(config.delivery.request_timeout)?;
    let retry = RetryPolicy {
        backoff: Backoff {
            initial: config.delivery.backoff_initial,
            max: config.delivery.backoff_max,
        },
        budget: config.delivery.retry_budget,
    };
    Ok(AppState {
        config: Arc::new(config),
        deliverer: Deliverer::new(client, retry),
        ready: Arc::new(AtomicBool::new(false)),
    })
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ready = state.ready.clone();
    let app = ingest::app(state)
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http());
    ready.store(true, Ordering::SeqCst);
    let stop = async move {
        shutdown.await;
        ready.store(false, Ordering::SeqCst);
        tracing::info!("shutting down: finishing in-flight requests");
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
