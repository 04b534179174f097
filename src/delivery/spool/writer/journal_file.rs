//! A destination's journal file: appending a group's records, rewriting the
//! journal as a snapshot when it grows, emptying it when the queue drains.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::super::{is_disk_full, journal};
use super::dest::WDest;
use super::{fail, sync_dir, Fail, Totals, JOURNAL, JOURNAL_REWRITE_MIN, JOURNAL_TMP, RETRY_EVERY};

pub(super) struct Journal {
    dir: PathBuf,
    pub(super) file: Option<File>,
    len: u64,
    pub(super) snapshot_len: u64,
    /// Encoded records of the current group.
    pub(super) pending: Vec<u8>,
    pub(super) unsynced_since: Option<Instant>,
    /// A write failed: the file is behind memory and must be rewritten.
    pub(super) broken: bool,
    pub(super) last_try: Option<Instant>,
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

    pub(super) fn due(&self, now: Instant) -> bool {
        self.last_try.is_none_or(|t| now.duration_since(t) >= RETRY_EVERY)
    }
}

impl WDest {
    pub(super) fn write_journal(&mut self, totals: &mut Totals) -> Result<(), Fail> {
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
            .min(super::super::journal_rewrite_at(
                totals.max_bytes,
                totals.depth,
                self.journal.snapshot_len,
            ));
        if self.journal.len > limit {
            self.rewrite_journal(totals)?;
        }
        Ok(())
    }

    /// Replaces the journal with a snapshot of the metadata.
    pub(super) fn rewrite_journal(&mut self, totals: &mut Totals) -> Result<(), Fail> {
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
    pub(super) fn reset_journal(&mut self, totals: &mut Totals) -> Result<(), Fail> {
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
        let emptied = self.journal.open().and_then(|file| {
            file.set_len(0).map_err(|e| fail("emptying the journal", e))?;
            // Durable before segment ids can be used again, so an old journal's
            // acks cannot come back and apply to a new segment of the same id.
            file.sync_data().map_err(|e| fail("emptying the journal", e))
        });
        match emptied {
            Ok(()) => totals.fsyncs += 1,
            // No room even for that: tried again on a later turn.
            Err(Fail::Full(_)) => {
                self.journal.broken = true;
                self.journal.last_try = Some(Instant::now());
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        totals.bytes -= self.journal.len;
        self.journal.len = 0;
        self.journal.snapshot_len = 0;
        self.journal.broken = false;
        self.journal.unsynced_since = None;
        Ok(())
    }
}

pub(super) fn new_journal(dir: &Path, len: u64) -> Journal {
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
