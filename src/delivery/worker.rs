//! One delivery worker per destination: spool -> pipeline -> Mixpanel -> ack,
//! with several requests in flight.
//!
//! The worker reads the destination's queued events in spool order into a
//! bounded *window*, prepares them (parse, pipeline, records) on the blocking
//! pool, and sends:
//! - events whose records are all `/import` events into one shared queue, sent
//!   in batches of up to `batch_size` by as many concurrent requests as the
//!   [`Limiter`] allows (a partial batch waits up to `linger`);
//! - events with profile or group records into the [lane](super::lanes) of the
//!   profile they touch: a lane sends its events in acceptance order, one round
//!   (the event's phases: `$identify`, then `$set`) at a time.
//!
//! Per event, once every record has an answer:
//! - all delivered or rejected: it leaves the spool (acks are out of order;
//!   rejections and validation failures become dead letters with the reason);
//! - some record failed for now: the event stays, with its attempt count, next
//!   attempt time (exponential backoff with jitter, honouring `Retry-After`) and
//!   the records already delivered persisted; a lane waits for its failed head, so
//!   a profile's later updates never overtake an earlier one;
//! - failing for longer than `max_age` (counted from acceptance): dead letter,
//!   reason `expired`.
//!
//! Each read is transformed under the spool's transform guard: its id range
//! is marked while the transform runs, so an event the process dies on is
//! transformed alone after the restart and, if it kills the process again,
//! becomes a dead letter (`poison`) instead of a crash loop.
//!
//! A `429` or `Retry-After` pauses the whole destination, every lane; an event
//! that was only throttled comes back when the pause ends (the pause, not the
//! event, backs off), so throttled events do not sit out growing backoffs while
//! Mixpanel has room again.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rand::Rng as _;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::lanes::{self, Lane};
use super::limiter::{Limiter, Signal};
use super::prepare::{self, Prepared};
use super::spool::{Cursor, DeadLetter, Entry, EventId, Op, RetryState, Spool, TransformGuard};
use super::{Deliverer, Item, ItemResult};
use crate::config::DestinationConfig;
use crate::telemetry as t;

/// Worker settings.
#[derive(Clone, Copy, Debug)]
pub struct WorkerSettings {
    /// How long a partial batch waits for more events.
    pub linger: Duration,
    /// Retry age limit; older failing events become dead letters.
    pub max_age: Duration,
    pub backoff: Backoff,
    /// Most requests in flight (the adaptive limit stays at or below it).
    pub concurrency: usize,
}

/// Bytes of spooled events held in memory by one worker, at most.
const MAX_WINDOW_BYTES: usize = 64 << 20;
/// Lanes per request slot (`delivery.concurrency`).
const LANES_PER_REQUEST: usize = 4;
/// A lane with this many events waiting sends without lingering.
const LANE_FULL_EVENTS: usize = 200;
/// Bytes asked of the spool per read.
const READ_BYTES: usize = 8 << 20;
/// A failed spool read is tried again after this.
const READ_RETRY: Duration = Duration::from_secs(1);

/// Delivers one destination's spooled events until `stop` is cancelled and the
/// ready events are flushed (or `drain_deadline` passes after `stop`).
pub async fn run(
    dest: Arc<DestinationConfig>,
    spool: Spool,
    deliverer: Deliverer,
    settings: WorkerSettings,
    stop: CancellationToken,
    drain_deadline: Duration,
) {
    let notify = spool.notifier();
    let mut notified = Box::pin(notify.notified());
    if let Some(marker) = prepare::abort_marker() {
        tracing::warn!(destination = %dest.id, variable = prepare::ABORT_ON_ENV, message_id = marker, "fault injection is on: transforming the event with this messageId aborts the process (tests only)");
    }
    let mut w = Worker::new(dest, spool, deliverer, settings);
    let mut stop_at: Option<Instant> = None;
    let mut next_gauges = Instant::now();
    loop {
        let now = Instant::now();
        if stop.is_cancelled() && stop_at.is_none() {
            stop_at = Some(now + drain_deadline);
        }
        if stop_at.is_some_and(|at| now >= at) {
            break;
        }
        if w.should_read() {
            // Armed before the read, so an append during it is not missed.
            notified.set(notify.notified());
            notified.as_mut().enable();
            w.start_read();
        }
        w.release_due_retries();
        w.dispatch(stop.is_cancelled());
        w.flush().await;
        if now >= next_gauges {
            w.record_gauges();
            next_gauges = now + Duration::from_secs(1);
        }
        if stop.is_cancelled() && w.tasks.is_empty() && !w.has_ready_work(stop.is_cancelled()) {
            break;
        }
        let wake = w.next_wake(now).min(next_gauges);
        tokio::select! {
            done = w.tasks.join_next(), if !w.tasks.is_empty() => {
                if let Some(done) = done {
                    w.complete(done);
                }
            }
            () = &mut notified, if w.exhausted => w.exhausted = false,
            () = tokio::time::sleep_until(wake) => {}
            () = stop.cancelled(), if !stop.is_cancelled() => {}
        }
    }
    // Requests still in flight are dropped: their events stay queued and are
    // delivered after the next start (at least once).
    w.tasks.abort_all();
    w.flush().await;
    let left = w.spool.destination_depth(&w.dest.id).unwrap_or(0);
    tracing::info!(destination = %w.dest.id, left, "worker stopped");
}

/// What a finished task hands back.
enum Done {
    Read {
        cursor: Cursor,
        prepared: Vec<Result<Prepared, (Entry, DeadLetter)>>,
        error: Option<String>,
    },
    Sent {
        lane: Option<usize>,
        /// Request slots the task held.
        slots: usize,
        positions: Vec<(usize, u32)>,
        results: Option<Vec<(Item, ItemResult)>>,
    },
}

/// What happened to an event's records so far.
#[derive(Default)]
struct Tally {
    failed: bool,
    /// A failure other than a throttle (429, `Retry-After`).
    hard_failure: bool,
    retry_after: Option<Duration>,
    last_error: String,
    delivered: Vec<u32>,
    dead: Vec<DeadLetter>,
}

/// An event in the window.
struct Pending {
    id: EventId,
    event: Vec<u8>,
    received_ms: Option<i64>,
    state: Option<RetryState>,
    lane: Option<usize>,
    /// Records waiting to be sent (lane events; import events' failed records).
    records: Vec<(u32, Item)>,
    /// Records queued for `/import` or in flight, not answered yet.
    outstanding: usize,
    /// Not before this time (epoch ms).
    next_attempt_ms: i64,
    /// When it entered the window, or became due again.
    since: Instant,
    tally: Tally,
}

/// A record waiting in the `/import` queue.
struct Queued {
    key: usize,
    position: u32,
    item: Item,
    since: Instant,
}

struct Worker {
    dest: Arc<DestinationConfig>,
    spool: Spool,
    deliverer: Deliverer,
    settings: WorkerSettings,
    fingerprint: u64,
    cursor: Option<Cursor>,
    /// The last read found nothing new: wait for an append.
    exhausted: bool,
    /// The last read failed: not again before this.
    read_again_at: Option<Instant>,
    /// A spool write failed: the next flush not before this.
    flush_again_at: Option<Instant>,
    window: HashMap<usize, Pending>,
    window_bytes: usize,
    max_window: usize,
    next_key: usize,
    imports: VecDeque<Queued>,
    lanes: Vec<Lane>,
    next_lane: usize,
    prefer_import: bool,
    /// Import events waiting for their next attempt: `(epoch ms, key)`.
    waiting: BTreeSet<(i64, usize)>,
    limiter: Limiter,
    /// Marks what is being transformed, so a crash there cannot repeat.
    guard: Arc<TransformGuard>,
    tasks: JoinSet<Done>,
    acks: Vec<EventId>,
    deads: Vec<(EventId, DeadLetter)>,
    retries: Vec<(EventId, RetryState)>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Worker {
    fn new(dest: Arc<DestinationConfig>, spool: Spool, deliverer: Deliverer, settings: WorkerSettings) -> Worker {
        let concurrency = settings.concurrency.max(1);
        // Enough events to keep every request slot busy with a full batch, and
        // one batch filling.
        let max_window = dest.batch_size.max(1) * (concurrency + 2);
        Worker {
            fingerprint: prepare::config_fingerprint(&dest),
            guard: spool.transform_guard(&dest.id),
            dest,
            spool,
            deliverer,
            settings,
            cursor: Some(Cursor::default()),
            exhausted: false,
            read_again_at: None,
            flush_again_at: None,
            window: HashMap::new(),
            window_bytes: 0,
            max_window,
            next_key: 0,
            imports: VecDeque::new(),
            // More lanes than requests: a profile whose updates keep failing
            // holds up its lane, a small share of the others.
            lanes: (0..concurrency * LANES_PER_REQUEST).map(|_| Lane::default()).collect(),
            next_lane: 0,
            prefer_import: false,
            waiting: BTreeSet::new(),
            limiter: Limiter::new(concurrency, Duration::from_secs(1), settings.backoff.max),
            tasks: JoinSet::new(),
            acks: Vec::new(),
            deads: Vec::new(),
            retries: Vec::new(),
        }
    }

    fn should_read(&self) -> bool {
        // Events queued behind a lane head that waits for a retry do not hold up
        // the rest of the destination, up to a second window of them.
        let active = self.window.len().saturating_sub(self.blocked_events());
        self.cursor.is_some()
            && !self.exhausted
            && self.read_again_at.is_none_or(|at| Instant::now() >= at)
            && active < self.max_window
            && self.window.len() < self.max_window * 2
            && self.window_bytes < MAX_WINDOW_BYTES
    }

    /// Events in lanes whose head waits for its next attempt.
    fn blocked_events(&self) -> usize {
        let now = now_ms();
        self.lanes
            .iter()
            .filter(|l| {
                l.queue
                    .front()
                    .and_then(|k| self.window.get(k))
                    .is_some_and(|head| head.state.is_some() && head.next_attempt_ms > now)
            })
            .map(|l| l.queue.len())
            .sum()
    }

    /// Reads and prepares the next events in the background.
    fn start_read(&mut self) {
        let Some(mut cursor) = self.cursor.take() else {
            return;
        };
        let room = self.max_window.saturating_sub(self.window.len()).max(1);
        let max_events = room.min(self.dest.batch_size.max(1));
        let spool = self.spool.clone();
        let dest = self.dest.clone();
        let guard = self.guard.clone();
        // A failed read leaves the position where it was: the read is tried
        // again, and nothing is skipped.
        let saved = cursor.clone();
        self.tasks.spawn(async move {
            let id = dest.id.clone();
            let read = tokio::task::spawn_blocking(move || {
                let entries = spool.read(&id, &mut cursor, max_events, READ_BYTES);
                (cursor, entries)
            })
            .await;
            let failed = |error: String| Done::Read {
                cursor: saved.clone(),
                prepared: Vec::new(),
                error: Some(error),
            };
            match read {
                Ok((cursor, Ok(entries))) => Done::Read {
                    cursor,
                    prepared: prepare::prepare_guarded(&dest, &guard, entries, now_ms()).await,
                    error: None,
                },
                Ok((_, Err(e))) => failed(e.to_string()),
                Err(e) => failed(format!("spool read task failed: {e}")),
            }
        });
    }

    fn complete(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Read {
                cursor,
                prepared,
                error,
            }) => {
                self.cursor = Some(cursor);
                if let Some(e) = error {
                    tracing::error!(destination = %self.dest.id, error = %e, "spool read failed; trying again in 1s");
                    self.read_again_at = Some(Instant::now() + READ_RETRY);
                } else {
                    self.read_again_at = None;
                    self.exhausted = prepared.is_empty();
                }
                for p in prepared {
                    self.admit(p);
                }
            }
            Ok(Done::Sent {
                lane,
                slots,
                positions,
                results,
            }) => self.answered(lane, slots, positions, results),
            // Tasks catch their panics; a join error is a cancellation at stop.
            Err(e) => tracing::error!(destination = %self.dest.id, error = %e, "delivery task failed"),
        }
    }

    /// Takes a prepared event into the window.
    fn admit(&mut self, prepared: Result<Prepared, (Entry, DeadLetter)>) {
        let p = match prepared {
            Ok(p) => p,
            Err((entry, letter)) => {
                self.deads.push((entry.id, letter));
                return;
            }
        };
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        let mut records = p.records;
        for (_, item) in &mut records {
            item.event = key;
        }
        let lane = lanes::profile_key(records.iter().map(|(_, i)| i)).map(|h| (h % self.lanes.len() as u64) as usize);
        let next_attempt_ms = p.entry.state.as_ref().map_or(0, |s| s.next_attempt_ms);
        let pending = Pending {
            id: p.entry.id,
            event: p.entry.event,
            received_ms: p.received_ms,
            state: p.entry.state,
            lane,
            records,
            outstanding: 0,
            next_attempt_ms,
            since: Instant::now(),
            tally: Tally {
                dead: p.refused,
                ..Tally::default()
            },
        };
        self.window_bytes += pending.event.len();
        let empty = pending.records.is_empty();
        self.window.insert(key, pending);
        if empty {
            self.finish(key, 0.0);
            return;
        }
        match lane {
            Some(l) => {
                if let Some(lane) = self.lanes.get_mut(l) {
                    lane.queue.push_back(key);
                }
            }
            None if next_attempt_ms > now_ms() => {
                self.waiting.insert((next_attempt_ms, key));
            }
            None => self.enqueue_imports(key),
        }
    }

    /// Moves an import event's waiting records to the `/import` queue.
    fn enqueue_imports(&mut self, key: usize) {
        let Some(p) = self.window.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        p.since = now;
        for (position, item) in p.records.drain(..) {
            p.outstanding += 1;
            self.imports.push_back(Queued {
                key,
                position,
                item,
                since: now,
            });
        }
    }

    /// Import events whose next attempt has come go back to the queue.
    fn release_due_retries(&mut self) {
        let now = now_ms();
        while let Some(&(at, key)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            self.enqueue_imports(key);
        }
    }

    fn import_ready(&self, now: Instant, draining: bool) -> bool {
        match self.imports.front() {
            None => false,
            Some(front) => {
                draining || self.imports.len() >= self.dest.batch_size || now >= front.since + self.settings.linger
            }
        }
    }

    /// Whether lane `l` can send a round now.
    fn lane_ready(&self, l: usize, now: Instant, now_ms: i64, draining: bool) -> bool {
        let Some(lane) = self.lanes.get(l) else {
            return false;
        };
        if lane.busy {
            return false;
        }
        let Some(head) = lane.queue.front().and_then(|k| self.window.get(k)) else {
            return false;
        };
        head.outstanding == 0
            && head.next_attempt_ms <= now_ms
            && (draining
                || lane.queue.len() >= LANE_FULL_EVENTS
                || now >= head.since + self.settings.linger
                || head.state.is_some())
    }

    fn has_ready_work(&self, draining: bool) -> bool {
        if self.limiter.paused_until(Instant::now()).is_some() {
            return false;
        }
        let now = Instant::now();
        let ms = now_ms();
        self.should_read()
            || self.import_ready(now, draining)
            || (0..self.lanes.len()).any(|l| self.lane_ready(l, now, ms, draining))
    }

    /// Starts as many requests as the limiter allows: lane rounds and `/import`
    /// batches in turn.
    fn dispatch(&mut self, draining: bool) {
        loop {
            let now = Instant::now();
            if !self.limiter.may_send(now) {
                return;
            }
            let ms = now_ms();
            let lane = (0..self.lanes.len())
                .map(|i| (self.next_lane + i) % self.lanes.len())
                .find(|&l| self.lane_ready(l, now, ms, draining));
            let import = self.import_ready(now, draining);
            match (lane, import) {
                (Some(_), true) if self.prefer_import => self.send_imports(),
                (Some(l), _) => {
                    if !self.send_lane(l, ms) {
                        // The round waits for enough free slots; imports must not
                        // take them one by one as they free up, or lanes starve.
                        return;
                    }
                }
                (None, true) => self.send_imports(),
                (None, false) => return,
            }
            self.prefer_import = !self.prefer_import;
        }
    }

    fn send_imports(&mut self) {
        let n = self.imports.len().min(self.dest.batch_size.max(1));
        let mut items = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for q in self.imports.drain(..n) {
            positions.push((q.key, q.position));
            items.push(q.item);
        }
        self.spawn_send(None, positions, items);
    }

    /// One round of lane `l`: its ready events from the head, in order, at most
    /// one request per endpoint and phase.
    /// Whether a round was sent (it waits when its requests would pass the limit).
    fn send_lane(&mut self, l: usize, now_ms: i64) -> bool {
        self.next_lane = (l + 1) % self.lanes.len();
        // Request slots free: a round sends at most one request per endpoint at once.
        let free = match self.limiter.in_flight() {
            0 => 4,
            busy => self.limiter.limit().saturating_sub(busy),
        };
        let Some(lane) = self.lanes.get_mut(l) else {
            return false;
        };
        let mut counts = [0usize; 4];
        let mut items = Vec::new();
        let mut positions = Vec::new();
        for key in lane.queue.iter() {
            let Some(p) = self.window.get_mut(key) else {
                continue;
            };
            if p.outstanding > 0 || p.next_attempt_ms > now_ms {
                break;
            }
            let mut add = [0usize; 4];
            for (_, item) in &p.records {
                if let Some(c) = add.get_mut(lanes::slot(item.record.endpoint)) {
                    *c += 1;
                }
            }
            let over = [
                crate::mixpanel::api::Endpoint::Import,
                crate::mixpanel::api::Endpoint::Track,
                crate::mixpanel::api::Endpoint::Engage,
                crate::mixpanel::api::Endpoint::Groups,
            ]
            .into_iter()
            .enumerate()
            .any(|(i, e)| {
                counts.get(i).copied().unwrap_or(0) + add.get(i).copied().unwrap_or(0)
                    > lanes::round_limit(e, self.dest.batch_size)
            });
            let endpoints = counts.iter().zip(&add).filter(|(c, a)| **c + **a > 0).count();
            if (over || endpoints > free) && !items.is_empty() {
                break;
            }
            if endpoints > free {
                return false;
            }
            for (c, a) in counts.iter_mut().zip(add) {
                *c += a;
            }
            p.records.sort_by_key(|(pos, _)| *pos);
            for (position, item) in p.records.drain(..) {
                p.outstanding += 1;
                positions.push((*key, position));
                items.push(item);
            }
        }
        if items.is_empty() {
            return false;
        }
        lane.busy = true;
        self.spawn_send(Some(l), positions, items);
        true
    }

    fn spawn_send(&mut self, lane: Option<usize>, positions: Vec<(usize, u32)>, items: Vec<Item>) {
        // A lane round may send one request per endpoint at once (a phase).
        let mut endpoints = [false; 4];
        for item in &items {
            if let Some(e) = endpoints.get_mut(lanes::slot(item.record.endpoint)) {
                *e = true;
            }
        }
        let slots = if lane.is_some() {
            endpoints.iter().filter(|&&e| e).count().max(1)
        } else {
            1
        };
        self.limiter.start_n(slots);
        let deliverer = self.deliverer.clone();
        let dest = self.dest.clone();
        self.tasks.spawn(async move {
            let sent = std::panic::AssertUnwindSafe(deliverer.deliver(&dest, items, lane.is_some()))
                .catch_unwind()
                .await;
            Done::Sent {
                lane,
                slots,
                positions,
                results: sent.ok(),
            }
        });
    }

    /// Mixpanel answered a task's requests.
    fn answered(
        &mut self,
        lane: Option<usize>,
        slots: usize,
        positions: Vec<(usize, u32)>,
        results: Option<Vec<(Item, ItemResult)>>,
    ) {
        if let Some(l) = lane.and_then(|l| self.lanes.get_mut(l)) {
            l.busy = false;
        }
        let now = Instant::now();
        let Some(results) = results else {
            // A panic while delivering is a bug: the events become dead letters
            // rather than block the queue.
            self.limiter.finish_n(slots, Signal::Ok, now);
            tracing::error!(destination = %self.dest.id, records = positions.len(), "internal error while delivering; events go to dead letters");
            let mut keys: Vec<usize> = positions.iter().map(|(k, _)| *k).collect();
            for key in &keys {
                if let Some(p) = self.window.get_mut(key) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                }
            }
            keys.sort_unstable();
            keys.dedup();
            for key in &keys {
                if let Some(p) = self.window.get_mut(key) {
                    // Not retried: the event may be what makes delivery fail.
                    p.tally.failed = false;
                    p.tally.hard_failure = false;
                    let event = crate::segment::json::from_slice(&p.event).unwrap_or(Value::Null);
                    p.tally.dead.push(prepare::dead(
                        &self.dest,
                        None,
                        "rejected",
                        None,
                        "internal error while delivering".into(),
                        event,
                    ));
                }
            }
            self.finish_settled(keys.into_iter(), 0.0);
            return;
        };
        let mut signal = Signal::Ok;
        for (_, result) in &results {
            if let ItemResult::Failed {
                retry_after, throttled, ..
            } = result
            {
                signal = match (signal, *throttled) {
                    (Signal::Throttled(a), true) => Signal::Throttled(a.max(*retry_after)),
                    (Signal::Throttled(a), false) => Signal::Throttled(a),
                    (_, true) => Signal::Throttled(*retry_after),
                    (_, false) => Signal::Overloaded,
                };
            }
        }
        self.limiter.finish_n(slots, signal, now);
        let mut keys = Vec::with_capacity(positions.len());
        for ((item, result), (key, position)) in results.into_iter().zip(positions) {
            keys.push(key);
            let Some(p) = self.window.get_mut(&key) else {
                continue;
            };
            p.outstanding = p.outstanding.saturating_sub(1);
            match result {
                ItemResult::Delivered { .. } => p.tally.delivered.push(position),
                ItemResult::Rejected {
                    status,
                    message,
                    answer,
                } => {
                    let sub_name = self
                        .dest
                        .destination
                        .subscriptions
                        .get(item.subscription)
                        .map(|s| s.name.clone());
                    let event = crate::segment::json::from_slice(&p.event).unwrap_or(Value::Null);
                    let mut letter = prepare::dead(&self.dest, sub_name, "rejected", Some(status), message, event);
                    letter.request = Some(crate::mixpanel::api::redact_tokens(item.record.to_value()));
                    letter.response = Some(serde_json::json!({"status": status, "body": answer}));
                    p.tally.dead.push(letter);
                }
                ItemResult::Failed {
                    message,
                    retry_after,
                    throttled,
                } => {
                    p.tally.failed = true;
                    p.tally.hard_failure |= !throttled;
                    p.tally.retry_after = p.tally.retry_after.max(retry_after);
                    p.tally.last_error = message;
                    p.records.push((position, item));
                }
            }
        }
        // One jitter per answer: events that failed together are retried together.
        let jitter: f64 = rand::rng().random();
        keys.sort_unstable();
        keys.dedup();
        self.finish_settled(keys.into_iter(), jitter);
    }

    /// Finishes the events among `keys` that have every record answered.
    fn finish_settled(&mut self, keys: impl Iterator<Item = usize>, jitter: f64) {
        let mut lanes_touched = Vec::new();
        for key in keys {
            let settled = self.window.get(&key).is_some_and(|p| p.outstanding == 0);
            if settled {
                if let Some(l) = self.window.get(&key).and_then(|p| p.lane) {
                    lanes_touched.push(l);
                }
                self.finish(key, jitter);
            }
        }
        lanes_touched.sort_unstable();
        lanes_touched.dedup();
        for l in lanes_touched {
            if let Some(lane) = self.lanes.get_mut(l) {
                let window = &self.window;
                lane.queue.retain(|k| window.contains_key(k));
            }
        }
    }

    /// An event with every record answered: ack, dead letter, or retry later.
    fn finish(&mut self, key: usize, jitter: f64) {
        let Some(mut p) = self.window.remove(&key) else {
            return;
        };
        if !p.tally.failed {
            self.window_bytes = self.window_bytes.saturating_sub(p.event.len());
            match prepare::merge_letters(std::mem::take(&mut p.tally.dead)) {
                None => self.acks.push(p.id),
                Some(letter) => self.deads.push((p.id, letter)),
            }
            return;
        }
        let now = now_ms();
        let mut st = p.state.take().unwrap_or_else(|| RetryState {
            // The retry age counts from when the event was accepted, so events
            // queued behind a failing batch do not wait a full age each.
            first_failure_ms: p.received_ms.unwrap_or(now).min(now),
            config: self.fingerprint,
            ..RetryState::default()
        });
        if st.config != self.fingerprint {
            // The subscriptions changed: record positions mean something else now.
            st.done.clear();
            st.config = self.fingerprint;
        }
        st.attempts = st.attempts.saturating_add(1);
        st.done.append(&mut p.tally.delivered);
        let age = Duration::from_millis(u64::try_from(now.saturating_sub(st.first_failure_ms)).unwrap_or(0));
        if age >= self.settings.max_age {
            self.window_bytes = self.window_bytes.saturating_sub(p.event.len());
            let message = format!(
                "gave up after {} attempts over {}s: {}",
                st.attempts,
                age.as_secs(),
                p.tally.last_error
            );
            let event = crate::segment::json::from_slice(&p.event).unwrap_or(Value::Null);
            self.deads
                .push((p.id, prepare::dead(&self.dest, None, "expired", None, message, event)));
            return;
        }
        let delay = if p.tally.hard_failure {
            self.settings
                .backoff
                .delay(st.attempts.saturating_sub(1), jitter, p.tally.retry_after)
        } else {
            // Only throttled: the destination's pause is the backoff (it grows
            // while the throttles go on); the event comes back when it ends.
            let pause = self
                .limiter
                .paused_until(Instant::now())
                .map_or(Duration::ZERO, |at| at - Instant::now());
            pause.max(p.tally.retry_after.unwrap_or_default()) + Duration::from_millis((jitter * 50.0) as u64)
        };
        st.next_attempt_ms = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        if p.tally.hard_failure {
            // The last attempt comes when the event reaches `max_age`, not a
            // whole backoff step after: an event expires close to its age.
            let max_age_ms = i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX);
            let expires_ms = st.first_failure_ms.saturating_add(max_age_ms);
            st.next_attempt_ms = st.next_attempt_ms.min(expires_ms.max(now));
        }
        p.next_attempt_ms = st.next_attempt_ms;
        self.retries.push((p.id, st.clone()));
        p.state = Some(st);
        // Rejections of this event so far stay in its tally for the dead letter.
        p.tally.failed = false;
        p.tally.hard_failure = false;
        p.tally.retry_after = None;
        if p.lane.is_none() {
            self.waiting.insert((p.next_attempt_ms, key));
        }
        self.window.insert(key, p);
    }

    /// Persists acks, retry states and dead letters. What the spool refuses
    /// (disk full, a failing disk) stays here and is tried again a second
    /// later: those events are out of the window, so dropping the op would
    /// leave them queued but unread until a restart.
    async fn flush(&mut self) {
        if self.flush_again_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.flush_again_at = None;
        let id = self.dest.id.clone();
        let labels = [("destination", id.clone())];
        if !self.retries.is_empty() {
            let retries = std::mem::take(&mut self.retries);
            let n = retries.len() as u64;
            match self.spool.submit(Op::Retry(id.clone(), retries.clone())).await {
                Ok(_) => {
                    metrics::counter!(t::EVENTS_RETRIED, &labels).increment(n);
                    crate::history::count(&id, crate::history::Count::Retried, n);
                    tracing::info!(destination = %id, events = n, "delivery failed for now; will retry");
                }
                Err(e) => return self.flush_failed(e, |w| w.retries = retries),
            }
        }
        if !self.deads.is_empty() {
            let deads = std::mem::take(&mut self.deads);
            let n = deads.len() as u64;
            match self.spool.submit(Op::Dead(id.clone(), deads.clone())).await {
                Ok(_) => {
                    metrics::counter!(t::EVENTS_DEAD_LETTERED, &labels).increment(n);
                    crate::history::count(&id, crate::history::Count::DeadLettered, n);
                    log_dead_letters(&id, &deads);
                }
                Err(e) => return self.flush_failed(e, |w| w.deads = deads),
            }
        }
        if !self.acks.is_empty() {
            let acks = std::mem::take(&mut self.acks);
            if let Err(e) = self.spool.submit(Op::Ack(id, acks.clone())).await {
                self.flush_failed(e, |w| w.acks = acks);
            }
        }
    }

    /// A spool write failed: keep its records (`restore`) and try again later.
    fn flush_failed(&mut self, error: super::spool::SpoolError, restore: impl FnOnce(&mut Worker)) {
        tracing::error!(destination = %self.dest.id, error = %error, "spool write failed; trying again in 1s");
        restore(self);
        self.flush_again_at = Some(Instant::now() + READ_RETRY);
    }

    fn record_gauges(&self) {
        let now = now_ms();
        let oldest = self.window.values().filter_map(|p| p.received_ms).min();
        let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        metrics::gauge!(t::OLDEST_EVENT_AGE, "destination" => self.dest.id.clone()).set(age);
        crate::history::oldest_age(&self.dest.id, age);
        metrics::gauge!(t::SPOOL_DEPTH).set(self.spool.depth() as f64);
        metrics::gauge!(t::SPOOL_BYTES).set(self.spool.bytes() as f64);
    }

    /// When the loop must look again even if nothing is answered.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(1);
        if let Some(at) = self.limiter.paused_until(now) {
            wake = wake.min(at);
        }
        // Work already due was dispatched unless the limiter had no room (with
        // nothing in flight it always has): an answer wakes the loop for it.
        // Only times still ahead need a timer.
        let ms = now_ms();
        let in_ms = |at: i64| now + Duration::from_millis(u64::try_from(at.saturating_sub(ms)).unwrap_or(0));
        let mut ahead = vec![self.read_again_at, self.flush_again_at];
        ahead.push(self.imports.front().map(|f| f.since + self.settings.linger));
        ahead.push(self.waiting.first().map(|&(at, _)| in_ms(at)));
        for lane in &self.lanes {
            if let Some(head) = lane.queue.front().and_then(|k| self.window.get(k)) {
                if !lane.busy && head.outstanding == 0 {
                    ahead.push(Some(in_ms(head.next_attempt_ms).max(head.since + self.settings.linger)));
                }
            }
        }
        for at in ahead.into_iter().flatten() {
            if at > now {
                wake = wake.min(at);
            }
        }
        wake.max(now + Duration::from_millis(1))
    }
}

/// Dead letters logged one line each (at most [`LOGGED_LETTERS`] per write, then
/// a count): the event's `messageId`, the reason, Mixpanel's status and the
/// first 200 characters of the message.
fn log_dead_letters(destination: &str, deads: &[(EventId, DeadLetter)]) {
    for (_, letter) in deads.iter().take(LOGGED_LETTERS) {
        let message_id = letter.event.get("messageId").and_then(Value::as_str).unwrap_or("");
        let message: String = letter.message.chars().take(200).collect();
        tracing::warn!(
            destination,
            message_id,
            reason = %letter.reason,
            status = letter.status,
            subscription = letter.subscription.as_deref().unwrap_or(""),
            %message,
            "event moved to dead letters"
        );
    }
    if deads.len() > LOGGED_LETTERS {
        tracing::warn!(
            destination,
            more = deads.len() - LOGGED_LETTERS,
            "more events moved to dead letters"
        );
    }
}

/// Dead letters logged one by one per spool write.
const LOGGED_LETTERS: usize = 20;
