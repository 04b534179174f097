//! The spool: an embedded, crash-safe, on-disk queue of accepted events (redb).
//!
//! # On-disk format
//! One redb file, `<data_dir>/spool.redb`, with four tables:
//! - `queue`: `(destination id, seq) -> event JSON` — events waiting for delivery,
//!   in acceptance order (`seq` grows monotonically across restarts);
//! - `state`: `(destination id, seq) -> JSON {attempts, first_failure_ms,
//!   next_attempt_ms, done}` — retry state of events that failed at least once
//!   (`done`: positions of the event's records already delivered, so a retry sends
//!   only the rest);
//! - `dead`: `id -> JSON dead letter` — permanently rejected or expired events with
//!   the reason, the request sent and Mixpanel's answer;
//! - `meta`: counters.
//!
//! # Durability and recovery
//! Every write goes through one writer thread that commits with redb's immediate
//! durability (fsync) and answers the callers only after the commit: concurrent
//! appends share one commit (group commit). A commit that fails for lack of space
//! answers [`SpoolError::Full`]; any other commit failure is fatal for the process
//! (logged at ERROR, exit code 74): success is never reported for data that is not
//! on disk. After a crash, redb recovers the last committed state; everything in
//! `queue` is delivered again (at least once; Mixpanel deduplicates `$insert_id`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const STATE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("state");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// redb's page cache: the spool is a queue (written once, read once), so a small
/// cache is enough and keeps the process's memory bounded.
pub const SPOOL_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Exit code when the disk fails a commit (EX_SOFTWARE is 70; EX_IOERR 74).
pub const EXIT_STORAGE_FAILURE: i32 = 74;

/// Spool failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The size limit is reached, or the disk is full: accept nothing more now.
    #[error("spool is full: {0}")]
    Full(String),
    /// The spool is closed (shutting down).
    #[error("spool is closed")]
    Closed,
    #[error("spool storage error: {0}")]
    Storage(String),
}

fn storage<E: std::fmt::Display>(e: E) -> SpoolError {
    SpoolError::Storage(e.to_string())
}

/// Retry state of a queued event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryState {
    pub attempts: u32,
    /// Start of the retry age: when the event was accepted (its `receivedAt`).
    pub first_failure_ms: i64,
    pub next_attempt_ms: i64,
    /// Positions of the event's records already delivered.
    #[serde(default)]
    pub done: Vec<u32>,
    /// Fingerprint of the subscriptions `done` refers to.
    #[serde(default)]
    pub config: u64,
}

/// A queued event.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub event: Vec<u8>,
    pub state: Option<RetryState>,
}

/// A permanently failed event, kept with everything needed to understand and
/// replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(default)]
    pub id: u64,
    pub destination: String,
    pub subscription: Option<String>,
    /// `rejected` (Mixpanel or validation said no) or `expired` (retry age limit).
    pub reason: String,
    pub status: Option<u16>,
    pub message: String,
    pub event: serde_json::Value,
    /// The Mixpanel record(s) that were sent, when any.
    pub request: Option<serde_json::Value>,
    pub response: Option<serde_json::Value>,
    pub at_ms: i64,
}

/// The fields of a dead letter that filters look at.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DeadSummary {
    #[serde(default)]
    pub id: u64,
    pub destination: String,
    pub reason: String,
    pub at_ms: i64,
}

/// One write, applied by the writer thread.
#[derive(Debug)]
pub enum Op {
    /// Queue events: `(destination, event JSON)`.
    Append(Vec<(String, Vec<u8>)>),
    /// Remove delivered events (and their retry state).
    Ack(String, Vec<u64>),
    /// Record retry state.
    Retry(String, Vec<(u64, RetryState)>),
    /// Move events to dead letters (removing them from the queue).
    Dead(String, Vec<(u64, DeadLetter)>),
    /// Put dead letters back in the queue.
    Replay(Vec<u64>),
    /// Delete dead letters.
    Purge(Vec<u64>),
}

struct Job {
    op: Op,
    done: oneshot::Sender<Result<u64, SpoolError>>,
}

/// Limits of the spool.
#[derive(Clone, Copy, Debug)]
pub struct SpoolLimits {
    /// Bytes of queued events above which appends are refused.
    pub max_bytes: u64,
    /// Dead letters kept; the oldest are dropped beyond this.
    pub max_dead_letters: u64,
}

/// What the writer thread and the handles share.
struct Inner {
    db: Database,
    bytes: AtomicU64,
    depth: AtomicU64,
    dead_dropped: AtomicU64,
    /// Set when an append was refused for lack of room (cleared by `is_full`).
    refusing: std::sync::atomic::AtomicBool,
    limits: SpoolLimits,
    /// Wakes the destination workers when events are queued.
    notify: Arc<tokio::sync::Notify>,
}

/// Handle to the spool (cheap to clone). The writer thread stops, and the file is
/// closed, when the last handle is dropped ([`Spool::close`] waits for that).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
    writer: mpsc::Sender<Job>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("bytes", &self.bytes())
            .field("depth", &self.depth())
            .finish()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and starts its writer thread.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let db = Database::builder()
            .set_cache_size(SPOOL_CACHE_BYTES)
            .create(dir.join("spool.redb"))
            .map_err(storage)?;
        let tx = db.begin_write().map_err(storage)?;
        {
            tx.open_table(QUEUE).map_err(storage)?;
            tx.open_table(STATE).map_err(storage)?;
            tx.open_table(DEAD).map_err(storage)?;
            tx.open_table(META).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        let (bytes, depth) = {
            let rtx = db.begin_read().map_err(storage)?;
            let q = rtx.open_table(QUEUE).map_err(storage)?;
            let mut bytes = 0u64;
            let mut depth = 0u64;
            for row in q.iter().map_err(storage)? {
                let (_, v) = row.map_err(storage)?;
                bytes += v.value().len() as u64;
                depth += 1;
            }
            (bytes, depth)
        };
        let inner = Arc::new(Inner {
            db,
            bytes: AtomicU64::new(bytes),
            depth: AtomicU64::new(depth),
            dead_dropped: AtomicU64::new(0),
            refusing: std::sync::atomic::AtomicBool::new(false),
            limits,
            notify: Arc::new(tokio::sync::Notify::new()),
        });
        let (writer, rx) = mpsc::channel::<Job>(4096);
        let thread_inner = inner.clone();
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer_loop(&thread_inner, rx))
            .map_err(storage)?;
        Ok(Spool {
            inner,
            writer,
            thread: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Drops this handle and, when it is the last one, waits until the writer
    /// thread has finished and the file is closed.
    pub fn close(self) {
        let thread = self.thread.clone();
        drop(self);
        if Arc::strong_count(&thread) == 1 {
            let handle = thread.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }

    /// Bytes of queued events.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Number of queued events (all destinations).
    pub fn depth(&self) -> u64 {
        self.inner.depth.load(Ordering::Relaxed)
    }

    /// Dead letters dropped because of the size bound, since start.
    pub fn dead_dropped(&self) -> u64 {
        self.inner.dead_dropped.load(Ordering::Relaxed)
    }

    /// Whether the spool is (nearly) full: at its size limit, or it refused an
    /// append and has not yet drained below 90% of the limit. `/readyz` fails
    /// while this holds, so load balancers send traffic elsewhere.
    pub fn is_full(&self) -> bool {
        let bytes = self.bytes();
        let max = self.inner.limits.max_bytes;
        if bytes >= max {
            return true;
        }
        if self.inner.refusing.load(Ordering::Relaxed) {
            if bytes < max / 10 * 9 {
                self.inner.refusing.store(false, Ordering::Relaxed);
                return false;
            }
            return true;
        }
        false
    }

    /// Notified whenever events are queued.
    pub fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.inner.notify.clone()
    }

    /// Queues events durably; returns once they are on disk.
    pub async fn append(&self, events: Vec<(String, Vec<u8>)>) -> Result<(), SpoolError> {
        let size: u64 = events.iter().map(|(_, e)| e.len() as u64).sum();
        if self.bytes().saturating_add(size) > self.inner.limits.max_bytes {
            self.inner.refusing.store(true, Ordering::Relaxed);
            return Err(SpoolError::Full(format!(
                "{} bytes queued, limit {} bytes",
                self.bytes(),
                self.inner.limits.max_bytes
            )));
        }
        self.submit(Op::Append(events)).await.map(|_| ())
    }

    /// Applies one write op durably.
    pub async fn submit(&self, op: Op) -> Result<u64, SpoolError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Job { op, done })
            .await
            .map_err(|_| SpoolError::Closed)?;
        wait.await.map_err(|_| SpoolError::Closed)?
    }

    /// Up to `max` queued events of `destination`, oldest first.
    pub fn read(&self, destination: &str, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let rtx = self.inner.db.begin_read().map_err(storage)?;
        let queue = rtx.open_table(QUEUE).map_err(storage)?;
        let state = rtx.open_table(STATE).map_err(storage)?;
        let mut out = Vec::new();
        for row in queue
            .range((destination, 0u64)..=(destination, u64::MAX))
            .map_err(storage)?
        {
            if out.len() >= max {
                break;
            }
            let (k, v) = row.map_err(storage)?;
            let seq = k.value().1;
            let st = state
                .get((destination, seq))
                .map_err(storage)?
                .and_then(|s| serde_json::from_slice::<RetryState>(s.value()).ok());
            out.push(Entry {
                seq,
                event: v.value().to_vec(),
                state: st,
            });
        }
        Ok(out)
    }

    /// The destination ids that have queued events.
    pub fn queued_destinations(&self) -> Result<Vec<String>, SpoolError> {
        let rtx = self.inner.db.begin_read().map_err(storage)?;
        let queue = rtx.open_table(QUEUE).map_err(storage)?;
        let mut ids: Vec<String> = Vec::new();
        for row in queue.iter().map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            let id = k.value().0;
            if ids.last().map(String::as_str) != Some(id) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// Number of queued events of `destination`.
    pub fn destination_depth(&self, destination: &str) -> Result<u64, SpoolError> {
        let rtx = self.inner.db.begin_read().map_err(storage)?;
        let queue = rtx.open_table(QUEUE).map_err(storage)?;
        let n = queue
            .range((destination, 0u64)..=(destination, u64::MAX))
            .map_err(storage)?
            .count();
        Ok(n as u64)
    }

    /// Dead letters, newest first, matching `keep`, at most `limit`.
    pub fn dead_letters(
        &self,
        limit: usize,
        keep: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>, SpoolError> {
        self.scan_dead(limit, keep)
    }

    /// Ids of the dead letters whose summary matches `keep`, newest first, at most
    /// `limit`; reads only the summary fields (memory stays small).
    pub fn dead_letter_ids(&self, limit: usize, keep: impl Fn(&DeadSummary) -> bool) -> Result<Vec<u64>, SpoolError> {
        Ok(self
            .scan_dead(limit, keep)?
            .into_iter()
            .map(|s: DeadSummary| s.id)
            .collect())
    }

    /// Dead letters read as `T` (the whole letter or a summary), newest first.
    fn scan_dead<T: serde::de::DeserializeOwned>(
        &self,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, SpoolError> {
        let rtx = self.inner.db.begin_read().map_err(storage)?;
        let dead = rtx.open_table(DEAD).map_err(storage)?;
        let mut out = Vec::new();
        for row in dead.iter().map_err(storage)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = row.map_err(storage)?;
            if let Ok(item) = serde_json::from_slice::<T>(v.value()) {
                if keep(&item) {
                    out.push(item);
                }
            }
        }
        Ok(out)
    }

    /// One dead letter.
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, SpoolError> {
        let rtx = self.inner.db.begin_read().map_err(storage)?;
        let dead = rtx.open_table(DEAD).map_err(storage)?;
        let found = dead.get(id).map_err(storage)?;
        Ok(found.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Number of dead letters.
    pub fn dead_count(&self) -> Result<u64, SpoolError> {
        let rtx = self.inner.db.begin_read().map_err(storage)?;
        let dead = rtx.open_table(DEAD).map_err(storage)?;
        dead.len().map_err(storage)
    }
}

fn writer_loop(inner: &Inner, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        inner.commit_group(jobs);
    }
}

impl Inner {
    /// Applies a group of jobs in one transaction with one fsync.
    fn commit_group(&self, jobs: Vec<Job>) {
        let result = self.apply(jobs.iter().map(|j| &j.op));
        match result {
            Ok(changes) => {
                self.bytes.store(changes.bytes, Ordering::Relaxed);
                self.depth.store(changes.depth, Ordering::Relaxed);
                for (job, n) in jobs.into_iter().zip(changes.per_job) {
                    let _ = job.done.send(n);
                }
                if changes.appended {
                    self.notify.notify_waiters();
                }
            }
            Err(CommitError::Full(msg)) => {
                tracing::warn!(error = %msg, "spool: disk full, refusing writes");
                for job in jobs {
                    let _ = job.done.send(Err(SpoolError::Full(msg.clone())));
                }
            }
            Err(CommitError::Fatal(msg)) => {
                tracing::error!(error = %msg, "spool: a commit to disk failed; exiting so no unsaved event is acknowledged");
                for job in jobs {
                    let _ = job.done.send(Err(SpoolError::Storage(msg.clone())));
                }
                std::process::exit(EXIT_STORAGE_FAILURE);
            }
        }
    }

    fn apply<'a>(&self, ops: impl Iterator<Item = &'a Op>) -> Result<Applied, CommitError> {
        let mut tx = self.db.begin_write().map_err(CommitError::from_display)?;
        tx.set_durability(Durability::Immediate);
        let mut bytes = self.bytes.load(Ordering::Relaxed);
        let mut depth = self.depth.load(Ordering::Relaxed);
        let mut per_job = Vec::new();
        let mut appended = false;
        let mut dropped = 0u64;
        {
            let mut queue = tx.open_table(QUEUE).map_err(CommitError::from_display)?;
            let mut state = tx.open_table(STATE).map_err(CommitError::from_display)?;
            let mut dead = tx.open_table(DEAD).map_err(CommitError::from_display)?;
            let mut meta = tx.open_table(META).map_err(CommitError::from_display)?;
            let mut next_seq = meta
                .get("next_seq")
                .map_err(CommitError::from_display)?
                .map_or(1, |v| v.value());
            let mut next_dead = meta
                .get("next_dead")
                .map_err(CommitError::from_display)?
                .map_or(1, |v| v.value());
            for op in ops {
                let mut n = 0u64;
                match op {
                    Op::Append(events) => {
                        // The authoritative size check: concurrent appends that
                        // passed the caller's check are limited here.
                        let size: u64 = events.iter().map(|(_, e)| e.len() as u64).sum();
                        if bytes.saturating_add(size) > self.limits.max_bytes {
                            self.refusing.store(true, Ordering::Relaxed);
                            per_job.push(Err(SpoolError::Full(format!(
                                "{bytes} bytes queued, limit {} bytes",
                                self.limits.max_bytes
                            ))));
                            continue;
                        }
                        for (dest, event) in events {
                            queue
                                .insert((dest.as_str(), next_seq), event.as_slice())
                                .map_err(CommitError::from_storage)?;
                            next_seq += 1;
                            bytes += event.len() as u64;
                            depth += 1;
                            n += 1;
                        }
                        appended |= !events.is_empty();
                    }
                    Op::Ack(dest, seqs) => {
                        for seq in seqs {
                            if let Some(v) = queue.remove((dest.as_str(), *seq)).map_err(CommitError::from_storage)? {
                                bytes = bytes.saturating_sub(v.value().len() as u64);
                                depth = depth.saturating_sub(1);
                                n += 1;
                            }
                            state.remove((dest.as_str(), *seq)).map_err(CommitError::from_storage)?;
                        }
                    }
                    Op::Retry(dest, states) => {
                        for (seq, st) in states {
                            let json = serde_json::to_vec(st).map_err(CommitError::from_display)?;
                            state
                                .insert((dest.as_str(), *seq), json.as_slice())
                                .map_err(CommitError::from_storage)?;
                            n += 1;
                        }
                    }
                    Op::Dead(dest, letters) => {
                        for (seq, letter) in letters {
                            if let Some(v) = queue.remove((dest.as_str(), *seq)).map_err(CommitError::from_storage)? {
                                bytes = bytes.saturating_sub(v.value().len() as u64);
                                depth = depth.saturating_sub(1);
                            }
                            state.remove((dest.as_str(), *seq)).map_err(CommitError::from_storage)?;
                            let mut letter = letter.clone();
                            letter.id = next_dead;
                            let json = serde_json::to_vec(&letter).map_err(CommitError::from_display)?;
                            dead.insert(next_dead, json.as_slice())
                                .map_err(CommitError::from_storage)?;
                            next_dead += 1;
                            n += 1;
                        }
                        // Bounded: drop the oldest beyond the limit.
                        let mut over = dead
                            .len()
                            .map_err(CommitError::from_storage)?
                            .saturating_sub(self.limits.max_dead_letters);
                        while over > 0 {
                            if dead.pop_first().map_err(CommitError::from_storage)?.is_none() {
                                break;
                            }
                            over -= 1;
                            dropped += 1;
                        }
                    }
                    Op::Replay(ids) => {
                        for id in ids {
                            let letter = dead
                                .remove(*id)
                                .map_err(CommitError::from_storage)?
                                .and_then(|v| serde_json::from_slice::<DeadLetter>(v.value()).ok());
                            if let Some(letter) = letter {
                                let event = serde_json::to_vec(&letter.event).map_err(CommitError::from_display)?;
                                queue
                                    .insert((letter.destination.as_str(), next_seq), event.as_slice())
                                    .map_err(CommitError::from_storage)?;
                                next_seq += 1;
                                bytes += event.len() as u64;
                                depth += 1;
                                n += 1;
                                appended = true;
                            }
                        }
                    }
                    Op::Purge(ids) => {
                        for id in ids {
                            if dead.remove(*id).map_err(CommitError::from_storage)?.is_some() {
                                n += 1;
                            }
                        }
                    }
                }
                per_job.push(Ok(n));
            }
            meta.insert("next_seq", next_seq).map_err(CommitError::from_storage)?;
            meta.insert("next_dead", next_dead).map_err(CommitError::from_storage)?;
        }
        tx.commit().map_err(CommitError::from_commit)?;
        if dropped > 0 {
            self.dead_dropped.fetch_add(dropped, Ordering::Relaxed);
            metrics::counter!(crate::telemetry::DEAD_LETTERS_DROPPED).increment(dropped);
        }
        Ok(Applied {
            bytes,
            depth,
            per_job,
            appended,
        })
    }
}

struct Applied {
    bytes: u64,
    depth: u64,
    per_job: Vec<Result<u64, SpoolError>>,
    appended: bool,
}

enum CommitError {
    Full(String),
    Fatal(String),
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

impl CommitError {
    fn from_display<E: std::fmt::Display>(e: E) -> CommitError {
        CommitError::Fatal(e.to_string())
    }

    fn from_storage(e: redb::StorageError) -> CommitError {
        match &e {
            redb::StorageError::Io(io) if is_disk_full(io) => CommitError::Full(e.to_string()),
            _ => CommitError::Fatal(e.to_string()),
        }
    }

    fn from_commit(e: redb::CommitError) -> CommitError {
        match e {
            redb::CommitError::Storage(s) => CommitError::from_storage(s),
            other => CommitError::Fatal(other.to_string()),
        }
    }
}

/// Groups entries' retry states by their seq (helper for workers).
pub fn states_by_seq(entries: &[Entry]) -> HashMap<u64, RetryState> {
    entries
        .iter()
        .filter_map(|e| e.state.clone().map(|s| (e.seq, s)))
        .collect()
}

#[cfg(test)]
mod tests;
