//! The spool: a crash-safe, on-disk queue of accepted events, one append-only
//! segment log per destination, with dead letters in redb.
//!
//! # On-disk format
//! - `<data_dir>/queue/<hex of the destination id's bytes>/`, per destination:
//!   - segment files `<20-digit segment id>.seg`: records appended in acceptance
//!     order; a record holds one ingest request's events for that destination:
//!     `[u32 total len][u32 crc32 of the rest][u32 count][count x u32 event
//!     lengths][event bytes]` (little endian; `total len` counts the whole
//!     record). Events are numbered (ordinals) from 0 within a segment across
//!     its records; an event's id is `(segment, ordinal)`. A new segment starts
//!     when the current one reaches [`segment_bytes`] (`max_bytes / 32`, between
//!     64 KiB and 32 MiB); segment ids grow and are never reused while anything
//!     on disk refers to them.
//!   - `journal`: framed records (`[u32 total len][u32 crc32 of the rest][u8
//!     kind][payload]`): acks (lists of event ids), retry states (binary
//!     `RetryState`), and, at the start of a rewritten journal, a snapshot: the
//!     next segment id, then the acked ordinals of each live segment (runs or a
//!     bitmap, whichever is smaller) and the retry states of queued events.
//! - `<data_dir>/spool.redb` (redb), tables `dead` (`id -> JSON dead letter`:
//!   permanently rejected or expired events with the reason, the request sent
//!   and Mixpanel's answer) and `meta` (`next_dead`). A `queue`/`state` table
//!   left by an earlier version is moved into the segment logs at open (once,
//!   durably, then dropped).
//! - `<data_dir>/transform/<hex of the destination id>`: the transform guard
//!   (crash-loop protection: what the worker is transforming, suspects and
//!   poison ids; format and rules in `guard`), written by the workers, not
//!   fsync'd.
//!
//! In memory, per destination: per segment its committed length, ordinals,
//! live count and a bitset of acked ordinals, and the retry states of queued
//! events; no event bytes. A segment whose events are all acked (delivered or
//! dead-lettered) is deleted at once, the tail segment too, so the disk holds
//! about the queued payload (the tail segment fills, old ones vanish as they
//! are acked). The journal is rewritten as a snapshot when it grows past
//! `max(1 MiB, bytes / 8, 2 x its last snapshot)`, and emptied when the
//! destination's queue is.
//!
//! # Writes
//! One writer thread owns every file and every change (but the transform
//! guards, which each destination's worker writes). It drains all waiting
//! jobs into one group: the group's appends are written to each destination's
//! tail segment, each touched segment is fsync'd (and its directory when a
//! segment was created), and only then are the appends visible to readers and
//! answered (group commit). Acks and retry states are applied in memory and
//! written (write(2), so a killed process loses none of them) to the journal
//! before the job is answered; the journal is fsync'd lazily, when the writer
//! is idle for 100 ms and at least every second while it has unsynced records:
//! power loss can lose the latest acks, which means duplicates, never loss. A
//! dead letter is committed durably in redb before its event is acked; a replay
//! appends the events durably before it removes the dead letters.
//!
//! Readers ([`Spool::read`]) open segment files by path and read only the
//! committed ranges, without holding the metadata lock during I/O.
//!
//! # Recovery
//! At open, per destination: segments are scanned and every record's checksum
//! checked; a torn or corrupt record and everything after it is cut off (WARN
//! for the tail segment, where a crash mid-append leaves one, ERROR for an
//! older one). The journal is replayed up to its first bad record (cut off
//! there); ids of missing segments are ignored. Fully acked segments are
//! deleted. Nothing that was answered as durable is lost: appends are answered
//! after their fsync, and the journal only ever removes events.
//!
//! # Failures
//! - Disk full (ENOSPC, EDQUOT) while appending or fsyncing a segment: the
//!   touched segments are cut back to their length before the group (and
//!   fsync'd), the group's appends answer [`SpoolError::Full`], and
//!   [`Spool::is_full`] holds until an append succeeds or acks have freed at
//!   least as much as the refused group needed. The spool keeps running: acks
//!   continue and deleting segments frees space.
//! - Disk full writing the journal: acks and states stay in memory (they are
//!   what readers see) and the journal is rewritten from memory on a later
//!   turn (tried every second).
//! - Disk full committing dead letters: that job answers `Full` (its events
//!   stay queued) and the redb database is reopened before its next use
//!   (redb refuses writes after an I/O error); a failed reopen is fatal.
//! - Fatal (logged at ERROR, exit code [`EXIT_STORAGE_FAILURE`]), only when the
//!   store would be unusable or could acknowledge unsaved data: any other I/O
//!   error writing or fsyncing a segment or the journal, a failed truncate
//!   after a failed write, any other redb error.
//! - `max_bytes` bounds [`Spool::bytes`], the bytes really on disk for the
//!   queue (segment files and journals): an append that would pass it is
//!   refused (`Full`); the writer's check is the authoritative one, so
//!   concurrent appends cannot pass it.

mod dead;
mod guard;
mod journal;
mod log;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::dead::DeadStore;
use self::log::{Bitset, Budget, Pos, ReadEnd};

pub use self::guard::{Step, TransformGuard};

/// redb's page cache: redb holds only the dead letters, so a small cache is
/// enough and keeps the process's memory bounded.
pub const SPOOL_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Exit code when the disk fails a commit (EX_SOFTWARE is 70; EX_IOERR 74).
pub const EXIT_STORAGE_FAILURE: i32 = 74;

/// Room kept free under `max_bytes` for the journal (acks and retry states of
/// queued events, written after their events were accepted): appends are refused
/// once the queue would come within this of the limit.
pub fn journal_reserve(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(4 * 1024, 16 * 1024 * 1024).min(max_bytes / 2)
}

/// What queued events may use of `max_bytes`: the limit less the journal's reserve.
pub fn queue_limit(max_bytes: u64) -> u64 {
    max_bytes - journal_reserve(max_bytes)
}

/// Journal room kept for each queued event: its retry state or ack, written
/// after it was accepted (a state is about 30 bytes; the rest covers the
/// journal growing by one more round before it is rewritten).
pub const STATE_ROOM: u64 = 64;

/// Whether `n` more events of `size` bytes fit beside `on_disk` bytes and
/// `depth` queued events: the events, and the journal room of every queued
/// event, within [`queue_limit`].
fn fits(on_disk: u64, depth: u64, n: u64, size: u64, max_bytes: u64) -> bool {
    let room = depth.saturating_add(n).saturating_mul(STATE_ROOM);
    on_disk.saturating_add(size).saturating_add(room) <= queue_limit(max_bytes)
}

/// The message of a refused append.
fn full_message(on_disk: u64, depth: u64, max_bytes: u64) -> String {
    format!(
        "{on_disk} bytes on disk, limit {max_bytes} bytes ({} kept free for the ack journal, and {STATE_ROOM} per \
         queued event: {depth} queued)",
        journal_reserve(max_bytes)
    )
}

/// The journal length past which it is rewritten as a snapshot: within the
/// room kept for it (half the reserve and half of each queued event's room),
/// but always a quarter of the reserve past the last snapshot, so rewrites
/// make progress.
fn journal_rewrite_at(max_bytes: u64, depth: u64, snapshot_len: u64) -> u64 {
    let reserve = journal_reserve(max_bytes);
    let room = reserve / 2 + depth.saturating_mul(STATE_ROOM / 2);
    room.max(snapshot_len + reserve / 4)
}

/// Size at which a destination's log starts a new segment, for a spool of at
/// most `max_bytes`: `max_bytes / 32`, between 64 KiB and 32 MiB.
pub fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 32).clamp(64 * 1024, 32 * 1024 * 1024)
}

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

pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// A queued event's id: its segment and its position in it. Ids of one
/// destination are ordered as the events were accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    pub segment: u64,
    pub ordinal: u32,
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
    pub id: EventId,
    pub event: Vec<u8>,
    pub state: Option<RetryState>,
}

/// A read position in one destination's log; the default is its oldest
/// queued event.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    segment: u64,
    pos: Pos,
}

impl Cursor {
    fn at(segment: u64) -> Cursor {
        Cursor {
            segment,
            pos: Pos::default(),
        }
    }
}

/// A permanently failed event, kept with everything needed to understand and
/// replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(default)]
    pub id: u64,
    pub destination: String,
    pub subscription: Option<String>,
    /// `rejected` (Mixpanel or validation said no), `expired` (retry age
    /// limit), `unconfigured` (its destination is gone) or `poison` (the
    /// process died twice while transforming it).
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
    /// Queue events `(destination, event JSON)`: all events of one request;
    /// answered once they are on disk (fsync'd).
    Append(Vec<(String, Vec<u8>)>),
    /// Remove delivered events (and their retry state), in any order.
    Ack(String, Vec<EventId>),
    /// Record retry states of queued events.
    Retry(String, Vec<(EventId, RetryState)>),
    /// Move events to dead letters (committed before the events are acked).
    Dead(String, Vec<(EventId, DeadLetter)>),
    /// Put dead letters back in their destination's queue.
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
    /// Bytes on disk (segments and journals) above which appends are refused.
    pub max_bytes: u64,
    /// Dead letters kept; the oldest are dropped beyond this.
    pub max_dead_letters: u64,
}

/// One segment, as readers and the writer see it.
#[derive(Debug, Default)]
struct SegMeta {
    /// Bytes fsync'd (readers read no further).
    committed: u64,
    /// Events in the committed bytes.
    ordinals: u32,
    /// Events not acked.
    live: u32,
    acked: Bitset,
}

impl SegMeta {
    fn queued(&self, ordinal: u32) -> bool {
        ordinal < self.ordinals && !self.acked.get(ordinal)
    }
}

/// A destination's queue metadata.
#[derive(Debug, Default)]
struct DestMeta {
    segments: BTreeMap<u64, SegMeta>,
    /// Retry states of queued events.
    states: HashMap<EventId, RetryState>,
    depth: u64,
}

impl DestMeta {
    fn queued(&self, id: EventId) -> bool {
        self.segments.get(&id.segment).is_some_and(|s| s.queued(id.ordinal))
    }

    /// Whether any event from `first` to `last` (inclusive) is queued.
    fn queued_in(&self, first: EventId, last: EventId) -> bool {
        if first > last {
            return false;
        }
        self.segments.range(first.segment..=last.segment).any(|(&id, seg)| {
            let lo = if id == first.segment { first.ordinal } else { 0 };
            let hi = if id == last.segment {
                last.ordinal.min(seg.ordinals.saturating_sub(1))
            } else {
                seg.ordinals.saturating_sub(1)
            };
            seg.ordinals > 0 && (lo..=hi).any(|o| seg.queued(o))
        })
    }
}

struct DestShared {
    dir: PathBuf,
    meta: Mutex<DestMeta>,
}

impl DestShared {
    fn lock(&self) -> MutexGuard<'_, DestMeta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the writer thread and the handles share.
struct Inner {
    dests: RwLock<HashMap<String, Arc<DestShared>>>,
    dead: DeadStore,
    bytes: AtomicU64,
    depth: AtomicU64,
    dead_dropped: AtomicU64,
    fsyncs: AtomicU64,
    /// Set when an append was refused for the size limit (cleared by `is_full`).
    refusing: AtomicBool,
    /// Set when the disk refused a write; cleared by a successful append.
    disk_full: AtomicBool,
    limits: SpoolLimits,
    /// Wakes the destination workers when events are queued.
    notify: Arc<tokio::sync::Notify>,
    /// The transform guards (crash-loop protection), per destination.
    guards: Mutex<HashMap<String, Arc<TransformGuard>>>,
    guard_dir: PathBuf,
}

impl Inner {
    fn dest(&self, id: &str) -> Option<Arc<DestShared>> {
        self.dests
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

/// Handle to the spool (cheap to clone). The writer thread stops, and the files
/// are closed, when the last handle is dropped ([`Spool::close`] waits for that).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
    writer: mpsc::Sender<Job>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("bytes", &self.bytes())
            .field("depth", &self.depth())
            .finish()
    }
}

/// Encoded size of an append: one record per destination.
fn encoded_size(events: &[(String, Vec<u8>)]) -> u64 {
    let mut dests: Vec<&str> = events.iter().map(|(d, _)| d.as_str()).collect();
    dests.sort_unstable();
    dests.dedup();
    let bytes: usize = events.iter().map(|(_, e)| e.len()).sum();
    log::record_len(events.len(), bytes) + (dests.len().saturating_sub(1) * log::RECORD_HEADER) as u64
}

impl Spool {
    /// Opens (or creates) the spool in `dir`: recovers the logs, migrates a
    /// queue left in `spool.redb` by an earlier version, and starts the writer
    /// thread.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        Spool::open_with_segment_bytes(dir, limits, segment_bytes(limits.max_bytes))
    }

    /// [`Spool::open`] with another segment size (tests use small segments).
    pub(crate) fn open_with_segment_bytes(
        dir: &Path,
        limits: SpoolLimits,
        segment_bytes: u64,
    ) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let dead = DeadStore::open(&dir.join("spool.redb"))?;
        let inner = Arc::new(Inner {
            dests: RwLock::new(HashMap::new()),
            dead,
            bytes: AtomicU64::new(0),
            depth: AtomicU64::new(0),
            dead_dropped: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            limits,
            notify: Arc::new(tokio::sync::Notify::new()),
            guards: Mutex::new(HashMap::new()),
            guard_dir: dir.join(guard::GUARD_DIR),
        });
        let mut writer = writer::Writer::recover(inner.clone(), &dir.join("queue"), segment_bytes)?;
        writer.migrate()?;
        // Before the writer thread takes appends: a guard's ids must all be
        // ids of events queued now.
        let guards = guard::recover_all(&inner, &inner.guard_dir);
        *inner.guards.lock().unwrap_or_else(PoisonError::into_inner) = guards;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(storage)?;
        let (tx, rx) = mpsc::channel::<Job>(4096);
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(&runtime, rx))
            .map_err(storage)?;
        Ok(Spool {
            inner,
            writer: tx,
            thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Drops this handle and, when it is the last one, waits until the writer
    /// thread has finished and the files are closed.
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

    /// Bytes on disk for the queue: segment files and journals (what
    /// `max_bytes` bounds).
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Number of queued events (all destinations).
    pub fn depth(&self) -> u64 {
        self.inner.depth.load(Ordering::Relaxed)
    }

    /// fsync calls made since open (segments, directories, journals).
    pub fn fsyncs(&self) -> u64 {
        self.inner.fsyncs.load(Ordering::Relaxed)
    }

    /// Dead letters dropped because of the size bound, since start.
    pub fn dead_dropped(&self) -> u64 {
        self.inner.dead_dropped.load(Ordering::Relaxed)
    }

    /// Whether the disk refused a write (no space) and no append has succeeded
    /// since: `/readyz` says `disk_full`.
    pub fn disk_refused(&self) -> bool {
        self.inner.disk_full.load(Ordering::Relaxed)
    }

    /// Whether the spool is (nearly) full: at its size limit, or it refused an
    /// append and has not yet drained below 90% of the limit, or the disk
    /// refused a write and no append has succeeded since (nor have acks freed
    /// as much as was refused). `/readyz` fails while this holds, so load
    /// balancers send traffic elsewhere.
    pub fn is_full(&self) -> bool {
        if self.inner.disk_full.load(Ordering::Relaxed) {
            return true;
        }
        let bytes = self.bytes();
        let usable = queue_limit(self.inner.limits.max_bytes).saturating_sub(self.depth().saturating_mul(STATE_ROOM));
        if bytes >= usable {
            return true;
        }
        if self.inner.refusing.load(Ordering::Relaxed) {
            if bytes < usable / 10 * 9 {
                self.inner.refusing.store(false, Ordering::Relaxed);
                return false;
            }
            return true;
        }
        false
    }

    /// Notified whenever events are queued (after they are durable).
    pub fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.inner.notify.clone()
    }

    /// Queues events durably; returns once they are on disk.
    pub async fn append(&self, events: Vec<(String, Vec<u8>)>) -> Result<(), SpoolError> {
        let size = encoded_size(&events);
        let bytes = self.bytes();
        let max = self.inner.limits.max_bytes;
        let depth = self.depth();
        if !events.is_empty() && !fits(bytes, depth, events.len() as u64, size, max) {
            self.inner.refusing.store(true, Ordering::Relaxed);
            return Err(SpoolError::Full(full_message(bytes, depth, max)));
        }
        self.submit(Op::Append(events)).await.map(|_| ())
    }

    /// Applies one write op; returns the number of events (or dead letters) it
    /// changed.
    pub async fn submit(&self, op: Op) -> Result<u64, SpoolError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Job { op, done })
            .await
            .map_err(|_| SpoolError::Closed)?;
        wait.await.map_err(|_| SpoolError::Closed)?
    }

    /// Queued events of `dest` after `cursor`, oldest first, skipping acked
    /// ones: at most `max_events`, and about `max_bytes` of event bytes (at
    /// least one event when there is any); advances the cursor. Only events
    /// whose append was committed are returned, with their retry state.
    pub fn read(
        &self,
        dest: &str,
        cursor: &mut Cursor,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, SpoolError> {
        let mut out: Vec<Entry> = Vec::new();
        let Some(shared) = self.inner.dest(dest) else {
            return Ok(out);
        };
        let mut bytes = 0usize;
        while out.len() < max_events && (bytes < max_bytes || out.is_empty()) {
            let (segment, committed, acked, last) = {
                let m = shared.lock();
                let Some((&id, seg)) = m.segments.range(cursor.segment..).next() else {
                    break;
                };
                if id != cursor.segment {
                    *cursor = Cursor::at(id);
                }
                let last = m.segments.range(id + 1..).next().is_none();
                (id, seg.committed, seg.acked.view_from(cursor.pos.next), last)
            };
            if cursor.pos.offset >= committed {
                if last {
                    break;
                }
                *cursor = Cursor::at(segment + 1);
                continue;
            }
            let budget = Budget {
                events: max_events - out.len(),
                bytes: max_bytes.saturating_sub(bytes),
                taken: out.len(),
            };
            let mut found = Vec::new();
            let path = shared.dir.join(log::segment_name(segment));
            let end = log::read_events(&path, &mut cursor.pos, committed, &acked, &budget, &mut found)
                .map_err(|e| SpoolError::Storage(format!("reading {}: {e}", path.display())))?;
            {
                let m = shared.lock();
                if let Some(seg) = m.segments.get(&segment) {
                    for (ordinal, event) in found {
                        if !seg.queued(ordinal) {
                            continue;
                        }
                        let id = EventId { segment, ordinal };
                        bytes += event.len();
                        out.push(Entry {
                            id,
                            event,
                            state: m.states.get(&id).cloned(),
                        });
                    }
                }
            }
            match end {
                ReadEnd::Gone => *cursor = Cursor::at(segment + 1),
                ReadEnd::Exhausted | ReadEnd::Budget => {}
            }
        }
        Ok(out)
    }

    /// The destination ids that have queued events, sorted.
    pub fn queued_destinations(&self) -> Result<Vec<String>, SpoolError> {
        let dests = self.inner.dests.read().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<String> = dests
            .iter()
            .filter(|(_, d)| d.lock().depth > 0)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The transform guard of `dest` (see [`TransformGuard`]).
    pub fn transform_guard(&self, dest: &str) -> Arc<TransformGuard> {
        let mut guards = self.inner.guards.lock().unwrap_or_else(PoisonError::into_inner);
        guards
            .entry(dest.to_owned())
            .or_insert_with(|| {
                let path = self.inner.guard_dir.join(writer::hex(dest));
                Arc::new(TransformGuard::new(dest.to_owned(), path, Default::default()))
            })
            .clone()
    }

    /// Number of queued events of `dest`.
    pub fn destination_depth(&self, dest: &str) -> Result<u64, SpoolError> {
        Ok(self.inner.dest(dest).map_or(0, |d| d.lock().depth))
    }

    /// Dead letters, newest first, matching `keep`, at most `limit`.
    pub fn dead_letters(
        &self,
        limit: usize,
        keep: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>, SpoolError> {
        self.inner.dead.scan(limit, keep)
    }

    /// Ids of the dead letters whose summary matches `keep`, newest first, at most
    /// `limit`; reads only the summary fields (memory stays small).
    pub fn dead_letter_ids(&self, limit: usize, keep: impl Fn(&DeadSummary) -> bool) -> Result<Vec<u64>, SpoolError> {
        Ok(self
            .inner
            .dead
            .scan(limit, keep)?
            .into_iter()
            .map(|s: DeadSummary| s.id)
            .collect())
    }

    /// One dead letter.
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, SpoolError> {
        self.inner.dead.letter(id)
    }

    /// Number of dead letters.
    pub fn dead_count(&self) -> Result<u64, SpoolError> {
        self.inner.dead.count()
    }
}

#[cfg(test)]
mod tests;
