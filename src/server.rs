//! Running the server: open the spool, start one delivery worker per destination,
//! serve the API, and stop gracefully on SIGTERM/SIGINT: readiness fails first,
//! in-flight requests finish, workers flush what they can within
//! `shutdown_timeout`, and what is left is delivered after the next start.
//!
//! Connections are served by our own accept loop over hyper-util's auto builder
//! (HTTP/1.1, and HTTP/2 with prior knowledge), so hostile clients are bounded:
//! `limits.max_connections` open at once (more are answered 503 and closed at
//! once), `limits.header_timeout` to send a request's headers,
//! `limits.idle_timeout` without a request in flight; `limits.body_timeout`
//! (ingest) and `limits.max_requests` (the router) do the rest.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::{AppConfig, DeliveryMode};
use crate::delivery::backoff::Backoff;
use crate::delivery::spool::{Cursor, DeadLetter, Op, Spool, SpoolLimits};
use crate::delivery::worker::{self, WorkerSettings};
use crate::delivery::{Deliverer, RetryPolicy};
use crate::ingest::{self, AppState};
use crate::mixpanel::client::Client;

/// Largest HTTP/1.1 read buffer per connection, which bounds a request's head
/// (larger heads get 431): 64 KiB per connection instead of hyper's ~400 KiB.
const MAX_HEAD_BUFFER: usize = 64 * 1024;
/// How long to wait before accepting again after `accept` failed for want of
/// file descriptors or memory.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Builds the shared state from a validated configuration (opens the spool in
/// `spool` mode).
pub fn state(config: AppConfig) -> anyhow::Result<AppState> {
    let body_bytes = config.limits.max_body_bytes_in_flight.min(u32::MAX as usize);
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
        lifecycle: Arc::default(),
        ingest_cpu: Arc::new(tokio::sync::Semaphore::new(ingest::ingest_parallelism())),
        body_bytes: Arc::new(tokio::sync::Semaphore::new(body_bytes)),
        credentials: Arc::default(),
    })
}

/// Serves on `listener` until `shutdown` completes, then drains and stops.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let lifecycle = state.lifecycle.clone();
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
    if state.config.check_credentials_at_start {
        tokio::spawn(ingest::check_credentials(state.clone()));
    }
    let spool = state.spool.clone();
    let limits = state.config.limits;
    let app = ingest::app(state)
        .layer(CatchPanicLayer::custom(ingest::error::panicked))
        .layer(TraceLayer::new_for_http());
    lifecycle.serving();
    let stop_lifecycle = lifecycle.clone();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopping_signal = stopping.clone();
    let cancel_workers = stop_workers.clone();
    let stop = async move {
        shutdown.await;
        stop_lifecycle.shutting_down();
        // Workers start flushing now, in parallel with the HTTP drain.
        cancel_workers.cancel();
        stopping_signal.notify_one();
        tracing::info!("shutting down: no new requests, finishing in-flight ones");
    };
    let deadline = state_shutdown_timeout;
    let connections = Connections {
        limits: ConnectionLimits::from(&limits),
        drain: CancellationToken::new(),
        close: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };
    let close_connections = connections.close.clone();
    let serving = accept_loop(listener, app, limits.max_connections, connections, stop);
    tokio::select! {
        () = serving => {}
        () = async { stopping.notified().await; tokio::time::sleep(deadline).await } => {
            tracing::warn!("shutdown timeout: closing connections still in flight");
        }
    }
    close_connections.cancel();
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

/// What every connection task shares.
#[derive(Clone)]
struct Connections {
    limits: ConnectionLimits,
    /// Shutdown: finish the requests in flight, then close.
    drain: CancellationToken,
    /// Shutdown timeout: close now.
    close: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl From<&crate::config::Limits> for ConnectionLimits {
    fn from(l: &crate::config::Limits) -> Self {
        ConnectionLimits {
            header_timeout: l.header_timeout,
            idle_timeout: l.idle_timeout,
        }
    }
}

/// Accepts connections until `stop` completes; then stops listening (new
/// connections are refused), lets every connection finish its requests in
/// flight, and returns when all are closed.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    connections: Connections,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(connections.limits.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.tasks.spawn(serve_connection(
            stream,
            builder.clone(),
            app.clone(),
            connections.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.drain.cancel();
    connections.tasks.close();
    connections.tasks.wait().await;
}

/// Errors of one connection that leave the listener fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// A connection beyond `limits.max_connections`: answered 503 if the socket
/// takes the bytes right away (never waiting on the peer), then closed.
fn refuse(stream: TcpStream, max_connections: usize) {
    let body = format!(
        "{{\"success\":false,\"code\":\"too_many_connections\",\"message\":\"the server has {max_connections} connections open (limits.max_connections); retry later\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!(max_connections, "connection refused: limits.max_connections reached");
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request; `u64::MAX`
    /// before the first one.
    last_end_ms: AtomicU64,
}

impl Activity {
    /// When the connection is idle for too long: `None` while a request is in
    /// flight. Before its first request a connection has `header_timeout` (a
    /// client that sends nothing, or never finishes the first bytes by which
    /// the protocol is recognized, is closed); after one, `idle_timeout`.
    fn idle_deadline(&self, limits: ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(match self.last_end_ms.load(Ordering::SeqCst) {
            u64::MAX => self.opened + limits.header_timeout,
            ms => self.opened + Duration::from_millis(ms) + limits.idle_timeout,
        })
    }
}

/// Counts one request in flight while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.last_end_ms.store(ms.min(u64::MAX - 1), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection until it ends, it is idle too long, or shutdown.
async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    connections: Connections,
    _slot: OwnedSemaphorePermit,
) {
    let limits = connections.limits;
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_end_ms: AtomicU64::new(u64::MAX),
    });
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = Busy::start(&tracked);
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(busy);
            response
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // Checked at least this often, so that no deadline is passed by more
    // than the time it takes to notice it.
    let recheck = limits.header_timeout.min(limits.idle_timeout);
    let timer = tokio::time::sleep(recheck);
    tokio::pin!(timer);
    let mut draining = false;
    let mut idle_closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            () = connections.drain.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = connections.close.cancelled() => return,
            () = &mut timer => {
                // A peer that ignores the graceful close (HTTP/2 GOAWAY) is dropped.
                if idle_closing {
                    return;
                }
                let now = Instant::now();
                match activity.idle_deadline(limits) {
                    None => timer.as_mut().reset(now + recheck),
                    Some(at) if at > now => timer.as_mut().reset(at),
                    Some(_) => {
                        tracing::debug!("closing an idle connection");
                        idle_closing = true;
                        connection.as_mut().graceful_shutdown();
                        timer.as_mut().reset(now + limits.header_timeout);
                    }
                }
            }
        }
    }
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
                    let event = crate::segment::json::from_slice(&e.event).unwrap_or(serde_json::Value::Null);
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
