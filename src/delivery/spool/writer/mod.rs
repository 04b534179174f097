//! The writer thread: recovery at open, group commits of appends, acks and
//! retry states in memory and the journal, segment deletion, dead letters.
//!
//! This file holds the thread's loop and the handling of one group of jobs;
//! the separate concerns live in the submodules:
//! - `recover`: rebuilding every destination's state from its files at open;
//! - `migrate`: moving a queue left by an earlier version into the logs;
//! - `staging`: writing a group's appends, then committing or rolling them back;
//! - `dest`: one destination's acks, retry states, deletion of delivered
//!   segments and periodic work;
//! - `journal_file`: appending to, rewriting and emptying a journal;
//! - `dead_ops`: a group's dead-letter transaction.

mod dead_ops;
mod dest;
mod journal_file;
mod migrate;
mod recover;
mod staging;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use self::dest::WDest;
use self::staging::Staging;
use super::dead::DbFail;
use super::{encoded_size, is_disk_full, EventId, Inner, Job, Op, SpoolError, EXIT_STORAGE_FAILURE};

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

pub(super) fn hex(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(name: &str) -> Option<String> {
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
    /// The spool's `max_bytes` (journals are rewritten within its reserve).
    max_bytes: u64,
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
                    let depth = self.totals.depth + staged.iter().map(|(_, n)| n).sum::<u64>();
                    if !super::fits(on_disk, depth, events.len() as u64, size, max) {
                        self.inner.refusing.store(true, Ordering::Relaxed);
                        results[i] = Some(Err(SpoolError::Full(super::full_message(on_disk, depth, max))));
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
        let dead_ok = self.apply_dead(&ops, &replayed, &mut results);

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
}
