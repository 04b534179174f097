//! The writer's side of one destination: its tail segment, acks and retry
//! states applied in memory and queued for the journal, deletion of fully
//! delivered segments, and the periodic fsync and retry work.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::log::segment_name;
use super::super::{is_disk_full, journal, DestMeta, DestShared, EventId, RetryState};
use super::journal_file::Journal;
use super::{fail, Fail, Totals, IDLE_SYNC, MAX_UNSYNCED, RETRY_EVERY};

pub(super) struct Tail {
    pub(super) id: u64,
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) ordinals: u32,
}

/// The writer's side of one destination.
pub(super) struct WDest {
    pub(super) shared: Arc<DestShared>,
    pub(super) tail: Option<Tail>,
    pub(super) next_segment: u64,
    pub(super) journal: Journal,
    /// Deleting an acked segment failed; retried later.
    pub(super) undeleted: bool,
}

impl WDest {
    pub(super) fn segment_path(&self, id: u64) -> PathBuf {
        self.shared.dir.join(segment_name(id))
    }

    /// Marks events delivered; returns how many were queued.
    pub(super) fn ack(&mut self, ids: &[EventId], totals: &mut Totals) -> u64 {
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
    pub(super) fn retry<'a>(&mut self, states: impl IntoIterator<Item = (EventId, &'a RetryState)>) -> u64 {
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
    pub(super) fn finish(&mut self, totals: &mut Totals) -> Result<(), Fail> {
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

    /// Periodic work: fsync a dirty journal, retry failed rewrites and deletions.
    pub(super) fn tick(&mut self, idle: bool, now: Instant, totals: &mut Totals) -> Result<(), Fail> {
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

    pub(super) fn needs_tick(&self) -> Option<Duration> {
        if self.journal.unsynced_since.is_some() {
            Some(IDLE_SYNC)
        } else if self.journal.broken || self.undeleted {
            Some(RETRY_EVERY)
        } else {
            None
        }
    }
}
