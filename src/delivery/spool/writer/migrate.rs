//! Migration: a queue left in `spool.redb` by an earlier version is moved
//! into the segment logs, with its retry states, at open.

use super::super::{EventId, SpoolError};
use super::staging::Staging;
use super::{fail, Fail, Writer};

impl Writer {
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
}
