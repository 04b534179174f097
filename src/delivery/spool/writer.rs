//! The writer thread: recovery at open, group commits of appends, acks and
//! retry states in memory and the journal, segment deletion, dead letters.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::dead::{DbFail, DeadOp};
use super::journal::{self, Record};
use super::log::{self, segment_name, Bitset};
use super::{
    encoded_size, is_disk_full, storage, DestMeta, DestShared, EventId, Inner, Job, Op, RetryState, SegMeta,
    SpoolError, EXIT_STORAGE_FAILURE,
};

/// A dirty journal is fsync'd when the writer is idle this long...
const IDLE_SYNC: Duration = Duration::from_millis(100);
/// ...and at least this often while it stays dirty.
const MAX_UNSYNCED: Duration = Duration::from_secs(1);
/// Journal rewrites and segment deletions that failed are retried this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A journal is rewritten as a snapshot past max(this, bytes / 8, 2 x snapshot).
const JOURNAL_REWRITE_MIN: u64 = 1 << 20;
/// Jobs drained into one group at most.
const GROUP_JOBS: usize = 1024;

const JOURNAL: &str = "journal";
const JOURNAL_TMP: &str = "journal.tmp";

type Answer = oneshot::Sender<Result<u64, SpoolError>>;

/// A failed file operation.
enum Fail {
    /// No space left on the device (or quota): refuse and keep running.
    Full(String),
    /// Anything else: the process must stop.
    Fatal(String),
}

fn fail(what: impl std::fmt::Display, e: io::Error) -> Fail {
    if is_disk_full(&e) {
        Fail::Full(format!("{what}: {e}"))
    } else {
        Fail::Fatal(format!("{what}: {e}"))
    }
}

fn fatal(msg: &str) -> ! {
    tracing::error!(error = %msg, "spool: a write to disk failed; exiting so no unsaved event is acknowledged");
    std::process::exit(EXIT_STORAGE_FAILURE)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn hex(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(name: &str) -> Option<String> {
    if !name.len().is_multiple_of(2) || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&name[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Counters the writer keeps and publishes to the handles.
#[derive(Default)]
struct Totals {
    bytes: u64,
    depth: u64,
    fsyncs: u64,
    /// Bytes freed by deleted segments since the disk last refused a group.
    freed: u64,
}

struct Tail {
    id: u64,
    file: File,
    len: u64,
    ordinals: u32,
}

struct Journal {
    dir: PathBuf,
    file: Option<File>,
    len: u64,
    snapshot_len: u64,
    /// Encoded records of the current group.
    pending: Vec<u8>,
    unsynced_since: Option<Instant>,
    /// A write failed: the file is behind memory and must be rewritten.
    broken: bool,
    last_try: Option<Instant>,
}

impl Journal {
    fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    fn open(&mut self) -> Result<&mut File, Fail> {
        if self.file.is_none() {
            let path = self.path();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| fail(format_args!("opening {}", path.display()), e))?;
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| Fail::Fatal("journal file missing".into()))
    }

    fn due(&self, now: Instant) -> bool {
        self.last_try.is_none_or(|t| now.duration_since(t) >= RETRY_EVERY)
    }
}

/// The writer's side of one destination.
struct WDest {
    shared: Arc<DestShared>,
    tail: Option<Tail>,
    next_segment: u64,
    journal: Journal,
    /// Deleting an acked segment failed; retried later.
    undeleted: bool,
}

impl WDest {
    fn segment_path(&self, id: u64) -> PathBuf {
        self.shared.dir.join(segment_name(id))
    }

    /// Marks events delivered; returns how many were queued.
    fn ack(&mut self, ids: &[EventId], totals: &mut Totals) -> u64 {
        let mut newly = Vec::new();
        {
            let mut guard = self.shared.lock();
            let DestMeta {
                segments,
                states,
                depth,
            } = &mut *guard;
            for id in ids {
                if let Some(s) = segments.get_mut(&id.segment) {
                    if id.ordinal < s.ordinals && s.acked.set(id.ordinal) {
                        s.live -= 1;
                        newly.push(*id);
                    }
                }
            }
            for id in &newly {
                states.remove(id);
            }
            *depth -= newly.len() as u64;
        }
        totals.depth -= newly.len() as u64;
        if journal::encode_acks(&newly, &mut self.journal.pending).is_err() {
            self.journal.broken = true;
        }
        newly.len() as u64
    }

    /// Records retry states of queued events; returns how many.
    fn retry<'a>(&mut self, states: impl IntoIterator<Item = (EventId, &'a RetryState)>) -> u64 {
        let mut kept = Vec::new();
        {
            let mut m = self.shared.lock();
            for (id, st) in states {
                if m.queued(id) {
                    m.states.insert(id, st.clone());
                    kept.push((id, st));
                }
            }
        }
        if journal::encode_states(kept.iter().copied(), &mut self.journal.pending).is_err() {
            self.journal.broken = true;
        }
        kept.len() as u64
    }

    /// After a group: deletes fully acked segments, writes the journal records,
    /// rewrites or empties the journal when due.
    fn finish(&mut self, totals: &mut Totals) -> Result<(), Fail> {
        let drained = {
            let mut m = self.shared.lock();
            let empty: Vec<u64> = m
                .segments
                .iter()
                .filter(|(_, s)| s.live == 0)
                .map(|(id, _)| *id)
                .collect();
            self.undeleted = false;
            for id in empty {
                let path = self.segment_path(id);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        tracing::warn!(error = %e, path = %path.display(), "spool: could not delete a delivered segment; will retry");
                        self.undeleted = true;
                        continue;
                    }
                    _ => {}
                }
                if let Some(s) = m.segments.remove(&id) {
                    totals.bytes -= s.committed;
                    totals.freed += s.committed;
                }
                if self.tail.as_ref().is_some_and(|t| t.id == id) {
                    self.tail = None;
                }
            }
            m.segments.is_empty() && self.tail.is_none()
        };
        if drained {
            return self.reset_journal(totals);
        }
        self.write_journal(totals)
    }

    fn write_journal(&mut self, totals: &mut Totals) -> Result<(), Fail> {
        if self.journal.pending.is_empty() {
            return Ok(());
        }
        if self.journal.broken {
            // The rewrite writes everything from memory.
            self.journal.pending.clear();
            return Ok(());
        }
        let pending = std::mem::take(&mut self.journal.pending);
        let before = self.journal.len;
        let file = match self.journal.open() {
            Ok(f) => f,
            Err(Fail::Full(msg)) => {
                tracing::warn!(error = %msg, "spool: disk full opening the journal; acks kept in memory, journal to be rewritten");
                self.journal.broken = true;
                self.journal.last_try = Some(Instant::now());
                return Ok(());
            }
            Err(f) => return Err(f),
        };
        match file.write_all(&pending) {
            Ok(()) => {
                self.journal.len += pending.len() as u64;
                totals.bytes += pending.len() as u64;
                self.journal.unsynced_since.get_or_insert_with(Instant::now);
            }
            Err(e) if is_disk_full(&e) => {
                tracing::warn!(error = %e, "spool: disk full writing the journal; acks kept in memory, journal to be rewritten");
                let _ = file.set_len(before);
                let real = file.metadata().map_or(before, |m| m.len());
                totals.bytes = totals.bytes - before + real;
                self.journal.len = real;
                self.journal.broken = true;
                self.journal.last_try = Some(Instant::now());
                return Ok(());
            }
            Err(e) => return Err(fail("writing the journal", e)),
        }
        let limit = JOURNAL_REWRITE_MIN
            .max(totals.bytes / 8)
            .max(2 * self.journal.snapshot_len);
        if self.journal.len > limit {
            self.rewrite_journal(totals)?;
        }
        Ok(())
    }

    /// Replaces the journal with a snapshot of the metadata.
    fn rewrite_journal(&mut self, totals: &mut Totals) -> Result<(), Fail> {
        let mut buf = Vec::new();
        {
            let m = self.shared.lock();
            journal::encode_snapshot(
                self.next_segment,
                m.segments.iter().map(|(id, s)| (*id, &s.acked, s.ordinals)),
                m.states.iter().map(|(id, s)| (*id, s)),
                &mut buf,
            )
            .map_err(Fail::Fatal)?;
        }
        let dir = self.shared.dir.clone();
        let tmp = dir.join(JOURNAL_TMP);
        let path = self.journal.path();
        let attempt = || -> io::Result<File> {
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = OpenOptions::new().create_new(true).append(true).open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)?;
            Ok(f)
        };
        self.journal.last_try = Some(Instant::now());
        match attempt() {
            Ok(f) => {
                totals.fsyncs += 2;
                totals.bytes = totals.bytes - self.journal.len + buf.len() as u64;
                self.journal.file = Some(f);
                self.journal.len = buf.len() as u64;
                self.journal.snapshot_len = buf.len() as u64;
                self.journal.broken = false;
                self.journal.unsynced_since = None;
                Ok(())
            }
            Err(e) if is_disk_full(&e) => {
                let _ = fs::remove_file(&tmp);
                tracing::warn!(error = %e, "spool: disk full rewriting the journal; will retry");
                self.journal.broken = true;
                Ok(())
            }
            Err(e) => Err(fail("rewriting the journal", e)),
        }
    }

    /// Empties the journal of a destination whose queue is empty.
    fn reset_journal(&mut self, totals: &mut Totals) -> Result<(), Fail> {
        self.journal.pending.clear();
        if self.journal.len == 0 && !self.journal.broken {
            return Ok(());
        }
        // The segment deletions first, so the journal never forgets acks of a
        // segment that could come back.
        match sync_dir(&self.shared.dir) {
            Ok(()) => totals.fsyncs += 1,
            Err(e) if is_disk_full(&e) => {
                self.journal.broken = true;
                self.journal.last_try = Some(Instant::now());
                return Ok(());
            }
            Err(e) => return Err(fail("syncing a queue directory", e)),
        }
        let file = self.journal.open()?;
        file.set_len(0).map_err(|e| fail("emptying the journal", e))?;
        totals.bytes -= self.journal.len;
        self.journal.len = 0;
        self.journal.snapshot_len = 0;
        self.journal.broken = false;
        self.journal.unsynced_since = None;
        Ok(())
    }

    /// Periodic work: fsync a dirty journal, retry failed rewrites and deletions.
    fn tick(&mut self, idle: bool, now: Instant, totals: &mut Totals) -> Result<(), Fail> {
        if let Some(since) = self.journal.unsynced_since {
            if idle || now.duration_since(since) >= MAX_UNSYNCED {
                if let Some(file) = self.journal.file.as_ref() {
                    match file.sync_data() {
                        Ok(()) => totals.fsyncs += 1,
                        Err(e) if is_disk_full(&e) => {
                            self.journal.broken = true;
                            self.journal.last_try = Some(now);
                        }
                        Err(e) => return Err(fail("syncing the journal", e)),
                    }
                }
                self.journal.unsynced_since = None;
            }
        }
        if (self.journal.broken || self.undeleted) && self.journal.due(now) {
            self.journal.last_try = Some(now);
            self.finish(totals)?;
            if self.journal.broken {
                let empty = self.shared.lock().segments.is_empty() && self.tail.is_none();
                if empty {
                    self.reset_journal(totals)?;
                } else {
                    self.rewrite_journal(totals)?;
                }
            }
        }
        Ok(())
    }

    fn needs_tick(&self) -> Option<Duration> {
        if self.journal.unsynced_since.is_some() {
            Some(IDLE_SYNC)
        } else if self.journal.broken || self.undeleted {
            Some(RETRY_EVERY)
        } else {
            None
        }
    }
}

/// A segment written to in the current group.
struct Touched {
    dest: String,
    seg: u64,
    file: File,
    before_len: u64,
    before_ordinals: u32,
    len: u64,
    ordinals: u32,
    created: bool,
}

/// The appends of one group, until they are committed or rolled back.
#[derive(Default)]
struct Staging {
    touched: Vec<Touched>,
    /// Directories that got a new entry.
    dirs: Vec<PathBuf>,
    bytes: u64,
}

impl Staging {
    fn dir(&mut self, path: &Path) {
        if !self.dirs.iter().any(|d| d == path) {
            self.dirs.push(path.to_owned());
        }
    }
}

pub(super) struct Writer {
    inner: Arc<Inner>,
    queue_dir: PathBuf,
    segment_bytes: u64,
    dests: HashMap<String, WDest>,
    totals: Totals,
    buf: Vec<u8>,
    /// What the group the disk refused needed (see `Totals::freed`).
    full_need: u64,
}

impl Writer {
    /// Recovers every destination's log under `queue_dir`.
    pub fn recover(inner: Arc<Inner>, queue_dir: &Path, segment_bytes: u64) -> Result<Writer, SpoolError> {
        fs::create_dir_all(queue_dir).map_err(storage)?;
        let mut w = Writer {
            inner,
            queue_dir: queue_dir.to_owned(),
            segment_bytes,
            dests: HashMap::new(),
            totals: Totals::default(),
            buf: Vec::new(),
            full_need: 0,
        };
        for entry in fs::read_dir(queue_dir).map_err(storage)? {
            let entry = entry.map_err(storage)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().map_err(storage)?.is_dir() {
                continue;
            }
            let Some(id) = unhex(&name) else {
                tracing::warn!(directory = %name, "spool: ignoring a queue directory that is not a destination id");
                continue;
            };
            let dest = recover_dest(&entry.path(), &id, &mut w.totals)
                .map_err(|e| SpoolError::Storage(format!("recovering the queue of {id}: {e}")))?;
            w.inner
                .dests
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), dest.shared.clone());
            w.dests.insert(id, dest);
        }
        w.publish();
        Ok(w)
    }

    /// Moves a queue left in `spool.redb` by an earlier version into the logs.
    pub fn migrate(&mut self) -> Result<(), SpoolError> {
        let inner = self.inner.clone();
        let moved = inner.dead.old_queue(|dest, chunk| {
            let events: Vec<&[u8]> = chunk.iter().map(|(e, _)| e.as_slice()).collect();
            let mut st = Staging::default();
            let written = self
                .write_record(dest, &events, &mut st)
                .and_then(|at| self.sync_staged(&st).map(|()| at));
            let (seg, base) = match written {
                Ok(at) => at,
                Err(f) => {
                    self.rollback(st);
                    return Err(match f {
                        Fail::Full(m) => SpoolError::Full(m),
                        Fail::Fatal(m) => SpoolError::Storage(m),
                    });
                }
            };
            self.commit_staged(st);
            if let Some(wd) = self.dests.get_mut(dest) {
                wd.retry(chunk.iter().enumerate().filter_map(|(i, (_, s))| {
                    s.as_ref().map(|s| {
                        (
                            EventId {
                                segment: seg,
                                ordinal: base + i as u32,
                            },
                            s,
                        )
                    })
                }));
            }
            Ok(())
        })?;
        let Some(moved) = moved else {
            return Ok(());
        };
        for wd in self.dests.values_mut() {
            let flushed = wd
                .write_journal(&mut self.totals)
                .and_then(|()| match wd.journal.file.as_ref() {
                    Some(f) if wd.journal.unsynced_since.is_some() => {
                        f.sync_data().map_err(|e| fail("syncing the journal", e))
                    }
                    _ => Ok(()),
                });
            if let Err(Fail::Full(m) | Fail::Fatal(m)) = flushed {
                return Err(SpoolError::Storage(m));
            }
            wd.journal.unsynced_since = None;
        }
        self.publish();
        inner.dead.clear_old()?;
        tracing::info!(
            events = moved,
            "spool: moved the queue of an earlier version into the segment logs"
        );
        Ok(())
    }

    /// Serves jobs until every handle is dropped.
    pub fn run(mut self, runtime: &tokio::runtime::Runtime, mut rx: mpsc::Receiver<Job>) {
        loop {
            let wait = self.dests.values().filter_map(WDest::needs_tick).min();
            let first = match wait {
                None => runtime.block_on(rx.recv()),
                Some(d) => match runtime.block_on(async { tokio::time::timeout(d, rx.recv()).await }) {
                    Ok(job) => job,
                    Err(_) => {
                        self.tick(true);
                        continue;
                    }
                },
            };
            let Some(first) = first else {
                break;
            };
            let mut jobs = vec![first];
            while jobs.len() < GROUP_JOBS {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.group(jobs);
            self.tick(false);
        }
        self.tick(true);
    }

    fn tick(&mut self, idle: bool) {
        let now = Instant::now();
        for wd in self.dests.values_mut() {
            if let Err(Fail::Full(m) | Fail::Fatal(m)) = wd.tick(idle, now, &mut self.totals) {
                fatal(&m);
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let inner = &self.inner;
        inner.bytes.store(self.totals.bytes, Ordering::Relaxed);
        inner.depth.store(self.totals.depth, Ordering::Relaxed);
        inner.fsyncs.store(self.totals.fsyncs, Ordering::Relaxed);
        if inner.disk_full.load(Ordering::Relaxed) && self.totals.freed >= self.full_need {
            inner.disk_full.store(false, Ordering::Relaxed);
        }
    }

    /// Applies one group of jobs.
    fn group(&mut self, jobs: Vec<Job>) {
        let (ops, mut senders): (Vec<Op>, Vec<Option<Answer>>) = jobs.into_iter().map(|j| (j.op, Some(j.done))).unzip();
        let mut results: Vec<Option<Result<u64, SpoolError>>> = ops.iter().map(|_| None).collect();
        let max = self.inner.limits.max_bytes;

        if ops
            .iter()
            .any(|op| matches!(op, Op::Dead(..) | Op::Replay(_) | Op::Purge(_)))
        {
            if let Err(e) = self.inner.dead.reopen_if_stale() {
                fatal(&format!("reopening the dead letters: {e}"));
            }
        }

        // Appends (and replays) are written to the tail segments.
        let mut st = Staging::default();
        let mut staged: Vec<(usize, u64)> = Vec::new();
        let mut replayed: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut seen_dead: HashSet<u64> = HashSet::new();
        let mut disk_full: Option<String> = None;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Append(events) => {
                    if events.is_empty() {
                        results[i] = Some(Ok(0));
                        continue;
                    }
                    if let Some(msg) = &disk_full {
                        results[i] = Some(Err(SpoolError::Full(msg.clone())));
                        continue;
                    }
                    let size = encoded_size(events);
                    if size > u64::from(u32::MAX) {
                        results[i] = Some(Err(SpoolError::Storage(format!(
                            "a request of {size} bytes is too large"
                        ))));
                        continue;
                    }
                    let on_disk = self.totals.bytes + st.bytes;
                    if on_disk.saturating_add(size) > super::queue_limit(max) {
                        self.inner.refusing.store(true, Ordering::Relaxed);
                        results[i] = Some(Err(SpoolError::Full(super::full_message(on_disk, max))));
                        continue;
                    }
                    match self.stage(events.iter().map(|(d, e)| (d.as_str(), e.as_slice())), &mut st) {
                        Ok(()) => staged.push((i, events.len() as u64)),
                        Err(Fail::Full(msg)) => disk_full = Some(msg),
                        Err(Fail::Fatal(msg)) => fatal(&msg),
                    }
                }
                Op::Replay(ids) => {
                    if let Some(msg) = &disk_full {
                        results[i] = Some(Err(SpoolError::Full(msg.clone())));
                        continue;
                    }
                    let ids: Vec<u64> = ids.iter().copied().filter(|id| seen_dead.insert(*id)).collect();
                    let letters = match self.inner.dead.get(&ids) {
                        Ok(l) => l,
                        Err(DbFail::Full(m)) => {
                            results[i] = Some(Err(SpoolError::Full(m)));
                            continue;
                        }
                        Err(DbFail::Fatal(m)) => fatal(&m),
                    };
                    if letters.is_empty() {
                        results[i] = Some(Ok(0));
                        continue;
                    }
                    let mut events = Vec::with_capacity(letters.len());
                    for (_, l) in &letters {
                        match serde_json::to_vec(&l.event) {
                            Ok(bytes) => events.push((l.destination.as_str(), bytes)),
                            Err(e) => fatal(&format!("encoding a dead letter's event: {e}")),
                        }
                    }
                    match self.stage(events.iter().map(|(d, e)| (*d, e.as_slice())), &mut st) {
                        Ok(()) => {
                            staged.push((i, letters.len() as u64));
                            replayed.insert(i, letters.iter().map(|(id, _)| *id).collect());
                        }
                        Err(Fail::Full(msg)) => disk_full = Some(msg),
                        Err(Fail::Fatal(msg)) => fatal(&msg),
                    }
                }
                Op::Purge(ids) => seen_dead.extend(ids.iter().copied()),
                Op::Ack(..) | Op::Retry(..) | Op::Dead(..) => {}
            }
        }
        if disk_full.is_none() && !st.touched.is_empty() {
            match self.sync_staged(&st) {
                Ok(()) => {}
                Err(Fail::Full(msg)) => disk_full = Some(msg),
                Err(Fail::Fatal(msg)) => fatal(&msg),
            }
        }
        if let Some(msg) = &disk_full {
            tracing::warn!(error = %msg, "spool: disk full, refusing appends");
            self.full_need = st.bytes.max(1);
            self.totals.freed = 0;
            self.inner.disk_full.store(true, Ordering::Relaxed);
            self.rollback(std::mem::take(&mut st));
            for (i, _) in staged.drain(..) {
                results[i] = Some(Err(SpoolError::Full(msg.clone())));
            }
            for (i, op) in ops.iter().enumerate() {
                if matches!(op, Op::Append(_) | Op::Replay(_)) && results[i].is_none() {
                    results[i] = Some(Err(SpoolError::Full(msg.clone())));
                }
            }
            replayed.clear();
        } else if !staged.is_empty() {
            self.commit_staged(std::mem::take(&mut st));
            self.inner.disk_full.store(false, Ordering::Relaxed);
            self.publish();
            self.inner.notify.notify_waiters();
            for (i, n) in staged.drain(..) {
                if !replayed.contains_key(&i) {
                    if let Some(tx) = senders[i].take() {
                        let _ = tx.send(Ok(n));
                    }
                }
                results[i] = Some(Ok(n));
            }
        }

        // Dead letters: one durable transaction, before the events are acked.
        let mut dead_jobs: Vec<usize> = Vec::new();
        let mut dead_ops: Vec<DeadOp<'_>> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Dead(_, letters) if !letters.is_empty() => {
                    dead_ops.push(DeadOp::Insert(letters.iter().map(|(_, l)| l).collect()));
                    dead_jobs.push(i);
                }
                Op::Dead(..) => results[i] = Some(Ok(0)),
                Op::Replay(_) => {
                    if let Some(ids) = replayed.get(&i) {
                        dead_ops.push(DeadOp::Remove(ids));
                        dead_jobs.push(i);
                    }
                }
                Op::Purge(ids) => {
                    dead_ops.push(DeadOp::Remove(ids));
                    dead_jobs.push(i);
                }
                Op::Append(_) | Op::Ack(..) | Op::Retry(..) => {}
            }
        }
        let mut dead_ok: HashSet<usize> = HashSet::new();
        if !dead_ops.is_empty() {
            match self.inner.dead.apply(&dead_ops, self.inner.limits.max_dead_letters) {
                Ok(applied) => {
                    for (k, &i) in dead_jobs.iter().enumerate() {
                        match &ops[i] {
                            Op::Replay(_) => {}
                            _ => results[i] = Some(Ok(applied.counts[k])),
                        }
                        dead_ok.insert(i);
                    }
                    if applied.dropped > 0 {
                        self.inner.dead_dropped.fetch_add(applied.dropped, Ordering::Relaxed);
                        metrics::counter!(crate::telemetry::DEAD_LETTERS_DROPPED).increment(applied.dropped);
                    }
                }
                Err(DbFail::Full(m)) => {
                    tracing::warn!(error = %m, "spool: disk full writing dead letters");
                    for &i in &dead_jobs {
                        results[i] = Some(Err(SpoolError::Full(m.clone())));
                    }
                }
                Err(DbFail::Fatal(m)) => fatal(&m),
            }
        }
        drop(dead_ops);

        // Acks, retry states and dead-lettered events, in job order.
        let mut touched: Vec<&str> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let (dest, n) = match op {
                Op::Ack(dest, ids) => (dest, self.with_dest(dest, |wd, t| wd.ack(ids, t))),
                Op::Retry(dest, states) => (
                    dest,
                    self.with_dest(dest, |wd, _| wd.retry(states.iter().map(|(id, s)| (*id, s)))),
                ),
                Op::Dead(dest, letters) if dead_ok.contains(&i) => {
                    let ids: Vec<EventId> = letters.iter().map(|(id, _)| *id).collect();
                    self.with_dest(dest, |wd, t| wd.ack(&ids, t));
                    (dest, results[i].clone().and_then(Result::ok).unwrap_or(0))
                }
                _ => continue,
            };
            results[i] = Some(Ok(n));
            if !touched.contains(&dest.as_str()) {
                touched.push(dest);
            }
        }
        for dest in touched {
            if let Some(wd) = self.dests.get_mut(dest) {
                if let Err(Fail::Full(m) | Fail::Fatal(m)) = wd.finish(&mut self.totals) {
                    fatal(&m);
                }
            }
        }
        self.publish();
        for (tx, r) in senders.into_iter().zip(results) {
            if let Some(tx) = tx {
                let _ = tx.send(r.unwrap_or(Ok(0)));
            }
        }
    }

    fn with_dest(&mut self, dest: &str, f: impl FnOnce(&mut WDest, &mut Totals) -> u64) -> u64 {
        match self.dests.get_mut(dest) {
            Some(wd) => f(wd, &mut self.totals),
            None => 0,
        }
    }

    /// Writes one record per destination of `events`.
    fn stage<'a>(&mut self, events: impl Iterator<Item = (&'a str, &'a [u8])>, st: &mut Staging) -> Result<(), Fail> {
        let mut groups: Vec<(&str, Vec<&[u8]>)> = Vec::new();
        for (d, e) in events {
            match groups.iter_mut().find(|g| g.0 == d) {
                Some(g) => g.1.push(e),
                None => groups.push((d, vec![e])),
            }
        }
        for (d, evs) in groups {
            self.write_record(d, &evs, st)?;
        }
        Ok(())
    }

    /// The writer's state of `dest`, created (with its directory) if needed.
    fn ensure_dest(&mut self, dest: &str, st: &mut Staging) -> Result<(), Fail> {
        if self.dests.contains_key(dest) {
            return Ok(());
        }
        let dir = self.queue_dir.join(hex(dest));
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(fail(format_args!("creating {}", dir.display()), e));
            }
            _ => {}
        }
        st.dir(&self.queue_dir);
        let shared = Arc::new(DestShared {
            dir: dir.clone(),
            meta: Mutex::new(DestMeta::default()),
        });
        self.inner
            .dests
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dest.to_owned(), shared.clone());
        self.dests.insert(
            dest.to_owned(),
            WDest {
                shared,
                tail: None,
                next_segment: 1,
                journal: new_journal(&dir, 0),
                undeleted: false,
            },
        );
        Ok(())
    }

    /// Appends one record to `dest`'s tail segment (starting a new segment when
    /// the tail is full); returns where its first event is.
    fn write_record(&mut self, dest: &str, events: &[&[u8]], st: &mut Staging) -> Result<(u64, u32), Fail> {
        log::encode_record(events, &mut self.buf).map_err(Fail::Fatal)?;
        self.ensure_dest(dest, st)?;
        let segment_bytes = self.segment_bytes;
        let Some(wd) = self.dests.get_mut(dest) else {
            return Err(Fail::Fatal(format!("no queue for {dest}")));
        };
        let count = events.len() as u32;
        let rotate = match &wd.tail {
            None => true,
            Some(t) => t.len >= segment_bytes || t.ordinals.checked_add(count).is_none(),
        };
        if rotate {
            let (id, file) = loop {
                let id = wd.next_segment;
                wd.next_segment += 1;
                let path = wd.segment_path(id);
                match OpenOptions::new().append(true).create_new(true).open(&path) {
                    Ok(f) => break (id, f),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(fail(format_args!("creating {}", path.display()), e)),
                }
            };
            let clone = file
                .try_clone()
                .map_err(|e| Fail::Fatal(format!("duplicating a segment handle: {e}")))?;
            st.touched.push(Touched {
                dest: dest.to_owned(),
                seg: id,
                file: clone,
                before_len: 0,
                before_ordinals: 0,
                len: 0,
                ordinals: 0,
                created: true,
            });
            st.dir(&wd.shared.dir);
            wd.tail = Some(Tail {
                id,
                file,
                len: 0,
                ordinals: 0,
            });
        }
        let Some(tail) = wd.tail.as_mut() else {
            return Err(Fail::Fatal("no tail segment".into()));
        };
        let at = match st.touched.iter().position(|t| t.dest == dest && t.seg == tail.id) {
            Some(at) => at,
            None => {
                let clone = tail
                    .file
                    .try_clone()
                    .map_err(|e| Fail::Fatal(format!("duplicating a segment handle: {e}")))?;
                st.touched.push(Touched {
                    dest: dest.to_owned(),
                    seg: tail.id,
                    file: clone,
                    before_len: tail.len,
                    before_ordinals: tail.ordinals,
                    len: tail.len,
                    ordinals: tail.ordinals,
                    created: false,
                });
                st.touched.len() - 1
            }
        };
        let base = tail.ordinals;
        tail.file
            .write_all(&self.buf)
            .map_err(|e| fail(format_args!("writing segment {} of {dest}", tail.id), e))?;
        tail.len += self.buf.len() as u64;
        tail.ordinals += count;
        let t = &mut st.touched[at];
        t.len = tail.len;
        t.ordinals = tail.ordinals;
        st.bytes += self.buf.len() as u64;
        Ok((tail.id, base))
    }

    /// fsyncs the staged segments and the directories that got new entries.
    fn sync_staged(&mut self, st: &Staging) -> Result<(), Fail> {
        for t in &st.touched {
            t.file
                .sync_data()
                .map_err(|e| fail(format_args!("syncing segment {} of {}", t.seg, t.dest), e))?;
            self.totals.fsyncs += 1;
        }
        for d in st.dirs.iter().rev() {
            sync_dir(d).map_err(|e| fail(format_args!("syncing {}", d.display()), e))?;
            self.totals.fsyncs += 1;
        }
        Ok(())
    }

    /// Cuts the staged segments back to their length before the group.
    fn rollback(&mut self, st: Staging) {
        for t in st.touched.into_iter().rev() {
            let Some(wd) = self.dests.get_mut(&t.dest) else {
                continue;
            };
            let is_tail = wd.tail.as_ref().is_some_and(|tail| tail.id == t.seg);
            let path = wd.segment_path(t.seg);
            if t.created {
                if is_tail {
                    wd.tail = None;
                }
                drop(t.file);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        fatal(&format!("removing {} after a failed write: {e}", path.display()));
                    }
                    _ => {}
                }
            } else {
                if let Err(e) = t.file.set_len(t.before_len).and_then(|()| t.file.sync_data()) {
                    fatal(&format!("cutting back {} after a failed write: {e}", path.display()));
                }
                self.totals.fsyncs += 1;
                if let Some(tail) = wd.tail.as_mut().filter(|_| is_tail) {
                    tail.len = t.before_len;
                    tail.ordinals = t.before_ordinals;
                }
            }
        }
    }

    /// Makes the staged appends visible.
    fn commit_staged(&mut self, st: Staging) {
        for t in st.touched {
            let Some(wd) = self.dests.get(&t.dest) else {
                continue;
            };
            let mut m = wd.shared.lock();
            let s = m.segments.entry(t.seg).or_insert_with(SegMeta::default);
            let added = t.ordinals - s.ordinals;
            s.committed = t.len;
            s.ordinals = t.ordinals;
            s.live += added;
            m.depth += u64::from(added);
            self.totals.depth += u64::from(added);
            self.totals.bytes += t.len - t.before_len;
        }
    }
}

fn new_journal(dir: &Path, len: u64) -> Journal {
    Journal {
        dir: dir.to_owned(),
        file: None,
        len,
        snapshot_len: 0,
        pending: Vec::new(),
        unsynced_since: None,
        broken: false,
        last_try: None,
    }
}

fn cut(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_data()
}

/// Recovers one destination's directory.
fn recover_dest(dir: &Path, dest: &str, totals: &mut Totals) -> io::Result<WDest> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == JOURNAL_TMP {
            fs::remove_file(entry.path())?;
        } else if let Some(id) = log::parse_segment_name(&name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut meta = DestMeta::default();
    let mut max_seen = ids.last().copied().unwrap_or(0);
    for (i, &id) in ids.iter().enumerate() {
        let path = dir.join(segment_name(id));
        let s = log::scan_segment(&path)?;
        if let Some(why) = s.bad {
            let lost = s.file_len - s.valid_len;
            if i + 1 == ids.len() {
                tracing::warn!(destination = %dest, segment = id, reason = why, bytes = lost, "spool: cutting off an unfinished record at the end of the log");
            } else {
                tracing::error!(destination = %dest, segment = id, reason = why, bytes = lost, "spool: cutting off a corrupt record and what follows it in an old segment");
            }
            cut(&path, s.valid_len)?;
        }
        if s.ordinals == 0 {
            fs::remove_file(&path)?;
            continue;
        }
        meta.segments.insert(
            id,
            SegMeta {
                committed: s.valid_len,
                ordinals: s.ordinals,
                live: s.ordinals,
                acked: Bitset::default(),
            },
        );
    }

    let journal_path = dir.join(JOURNAL);
    let mut journal_len = 0;
    let mut floor = 1;
    if journal_path.exists() {
        let segments = &mut meta.segments;
        let states = &mut meta.states;
        let ack = |segments: &mut std::collections::BTreeMap<u64, SegMeta>, segment: u64, ordinal: u32| {
            if let Some(s) = segments.get_mut(&segment) {
                if ordinal < s.ordinals {
                    s.acked.set(ordinal);
                }
            }
        };
        let r = journal::replay(&journal_path, |record| match record {
            Record::Snapshot { next_segment } => floor = floor.max(next_segment),
            Record::Acks(list) => {
                for id in list {
                    max_seen = max_seen.max(id.segment);
                    ack(segments, id.segment, id.ordinal);
                    states.remove(&id);
                }
            }
            Record::States(list) => {
                for (id, st) in list {
                    max_seen = max_seen.max(id.segment);
                    if segments.get(&id.segment).is_some_and(|s| s.queued(id.ordinal)) {
                        states.insert(id, st);
                    }
                }
            }
            Record::AckedRanges { segment, ranges } => {
                max_seen = max_seen.max(segment);
                let n = segments.get(&segment).map_or(0, |s| s.ordinals);
                for (a, b) in ranges {
                    for o in a..b.min(n) {
                        ack(segments, segment, o);
                    }
                }
            }
            Record::AckedBitmap { segment, words } => {
                max_seen = max_seen.max(segment);
                for (w, mut word) in words.into_iter().enumerate() {
                    while word != 0 {
                        let b = word.trailing_zeros();
                        word &= word - 1;
                        if let Ok(o) = u32::try_from(w as u64 * 64 + u64::from(b)) {
                            ack(segments, segment, o);
                        }
                    }
                }
            }
        })?;
        if let Some(why) = r.bad {
            tracing::warn!(destination = %dest, reason = why, bytes = r.file_len - r.valid_len, "spool: cutting off the journal at its first bad record");
            cut(&journal_path, r.valid_len)?;
        }
        journal_len = r.valid_len;
    }

    let mut depth = 0u64;
    let mut delete = Vec::new();
    for (id, s) in meta.segments.iter_mut() {
        s.live = s.ordinals - s.acked.count_below(s.ordinals);
        if s.live == 0 {
            delete.push(*id);
        }
        depth += u64::from(s.live);
    }
    for id in delete {
        fs::remove_file(dir.join(segment_name(id)))?;
        meta.segments.remove(&id);
    }
    let DestMeta { segments, states, .. } = &mut meta;
    states.retain(|id, _| segments.get(&id.segment).is_some_and(|s| s.queued(id.ordinal)));
    meta.depth = depth;
    if meta.segments.is_empty() && journal_len > 0 {
        sync_dir(dir)?;
        cut(&journal_path, 0)?;
        journal_len = 0;
    }
    let tail = match meta.segments.iter().next_back() {
        Some((&id, s)) => Some(Tail {
            id,
            file: OpenOptions::new().append(true).open(dir.join(segment_name(id)))?,
            len: s.committed,
            ordinals: s.ordinals,
        }),
        None => None,
    };
    totals.bytes += meta.segments.values().map(|s| s.committed).sum::<u64>() + journal_len;
    totals.depth += depth;
    let mut journal = new_journal(dir, journal_len);
    // A journal left large by a previous run is rewritten on its next write.
    journal.snapshot_len = 0;
    Ok(WDest {
        shared: Arc::new(DestShared {
            dir: dir.to_owned(),
            meta: Mutex::new(meta),
        }),
        tail,
        next_segment: (max_seen + 1).max(floor),
        journal,
        undeleted: false,
    })
}
