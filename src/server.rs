//! Running the server: open the spool, start one delivery worker per destination,
//! serve the API, and stop gracefully on SIGTERM/SIGINT: readiness fails first,
//! in-flight requests finish, workers flush what they can within
//! `shutdown_timeout`, and what is left is delivered after the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::{AppConfig, DeliveryMode};
use crate::delivery::backoff::Backoff;
use crate::delivery::spool::{Cursor, DeadLetter, Op, Spool, SpoolLimits};
use crate::delivery::worker::{self, WorkerSettings};
use crate::delivery::{Deliverer, RetryPolicy};
use crate::ingest::{self, AppState};
use crate::mixpanel::client::Client;

/// Requests handled at once; more wait for a slot (bounds memory: each holds up to
/// `max_request_bytes` twice plus its parsed events).
pub const MAX_CONCURRENT_REQUESTS: usize = 256;
/// A client that takes longer than this to send its body is cut off.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the shared state from a validated configuration (opens the spool in
/// `spool` mode).
pub fn state(config: AppConfig) -> anyhow::Result<AppState> {
    let client = Client::new(config.delivery.request_timeout)?;
    let retry = RetryPolicy {
        backoff: Backoff {
            initial: config.delivery.backoff_initial,
            max: config.delivery.backoff_max,
        },
        budget: config.delivery.retry_budget,
    };
    let spool = match config.delivery.mode {
        DeliveryMode::Spool => Some(Spool::open(
            &config.data_dir,
            SpoolLimits {
                max_bytes: config.spool.max_bytes.as_u64(),
                max_dead_letters: config.spool.max_dead_letters,
            },
        )?),
        DeliveryMode::Direct => None,
    };
    Ok(AppState {
        config: Arc::new(config),
        deliverer: Deliverer::new(client, retry),
        spool,
        metrics: crate::telemetry::install_prometheus(),
        ready: Arc::new(AtomicBool::new(false)),
        ingest_cpu: Arc::new(tokio::sync::Semaphore::new(ingest::ingest_parallelism())),
    })
}

/// Serves on `listener` until `shutdown` completes, then drains and stops.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ready = state.ready.clone();
    let state_shutdown_timeout = state.config.shutdown_timeout;
    let stop_workers = CancellationToken::new();
    let workers = TaskTracker::new();
    if let Some(spool) = &state.spool {
        // The spool owns retries: one attempt per round, the schedule persisted.
        let single_attempt = Deliverer::new(
            Client::new(state.config.delivery.request_timeout)?,
            RetryPolicy {
                backoff: Backoff {
                    initial: state.config.delivery.backoff_initial,
                    max: state.config.delivery.backoff_max,
                },
                budget: Duration::ZERO,
            },
        );
        let settings = WorkerSettings {
            linger: state.config.spool.linger,
            max_age: state.config.spool.max_age,
            backoff: Backoff {
                initial: state.config.delivery.backoff_initial,
                max: state.config.delivery.backoff_max,
            },
            concurrency: state.config.delivery.concurrency,
        };
        for dest in &state.config.destinations {
            workers.spawn(worker::run(
                Arc::new(dest.clone()),
                spool.clone(),
                single_attempt.clone(),
                settings,
                stop_workers.clone(),
                state.config.shutdown_timeout,
            ));
        }
    }
    workers.close();
    if let Some(spool) = &state.spool {
        orphaned_to_dead_letters(spool, &state.config).await;
    }
    let spool = state.spool.clone();
    let app = ingest::app(state)
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http());
    ready.store(true, Ordering::SeqCst);
    let stop_ready = ready.clone();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopping_signal = stopping.clone();
    let cancel_workers = stop_workers.clone();
    let stop = async move {
        shutdown.await;
        stop_ready.store(false, Ordering::SeqCst);
        // Workers start flushing now, in parallel with the HTTP drain.
        cancel_workers.cancel();
        stopping_signal.notify_one();
        tracing::info!("shutting down: no new requests, finishing in-flight ones");
    };
    let deadline = state_shutdown_timeout;
    let serving = axum::serve(listener, app).with_graceful_shutdown(stop);
    tokio::select! {
        result = serving => result?,
        () = async { stopping.notified().await; tokio::time::sleep(deadline).await } => {
            tracing::warn!("shutdown timeout: closing connections still in flight");
        }
    }
    stop_workers.cancel();
    if tokio::time::timeout(deadline + Duration::from_secs(1), workers.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout: workers still delivering are stopped; their events stay queued");
    }
    if let Some(spool) = spool {
        tracing::info!(
            queued = spool.depth(),
            "stopped; queued events are delivered after the next start"
        );
        spool.close();
    }
    Ok(())
}

/// Events queued for a destination that is no longer configured would wait
/// forever (and fill the spool): they become dead letters, reported at ERROR.
async fn orphaned_to_dead_letters(spool: &Spool, config: &AppConfig) {
    let queued = match spool.queued_destinations() {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "spool: cannot list queued destinations");
            return;
        }
    };
    for id in queued
        .iter()
        .filter(|id| !config.destinations.iter().any(|d| &d.id == *id))
    {
        let total = spool.destination_depth(id).unwrap_or(0);
        tracing::error!(destination = %id, events = total, "queued events of a destination that is no longer configured: moving them to dead letters");
        // In chunks: the queue may be larger than memory should hold.
        let mut cursor = Cursor::default();
        loop {
            let entries = match spool.read(id, &mut cursor, 1000, 8 << 20) {
                Ok(e) if !e.is_empty() => e,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(destination = %id, error = %e, "spool: reading orphaned events failed");
                    break;
                }
            };
            let now = chrono::Utc::now().timestamp_millis();
            let letters = entries
                .into_iter()
                .map(|e| {
                    let event = serde_json::from_slice(&e.event).unwrap_or(serde_json::Value::Null);
                    (
                        e.id,
                        DeadLetter {
                            id: 0,
                            destination: id.clone(),
                            subscription: None,
                            reason: "unconfigured".into(),
                            status: None,
                            message: format!("destination \"{id}\" is no longer configured"),
                            event,
                            request: None,
                            response: None,
                            at_ms: now,
                        },
                    )
                })
                .collect();
            if let Err(e) = spool.submit(Op::Dead(id.clone(), letters)).await {
                tracing::error!(destination = %id, error = %e, "spool: moving orphaned events failed");
                break;
            }
        }
    }
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
