//! Dead letters, in redb (`spool.redb`), and the migration of queues kept there
//! by earlier versions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{is_disk_full, storage, DeadLetter, RetryState, SpoolError, SPOOL_CACHE_BYTES};

const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The queue of earlier versions: `(destination, seq) -> event JSON`.
const OLD_QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// Retry states of earlier versions: `(destination, seq) -> JSON`.
const OLD_STATE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("state");

/// A failed dead-letter write.
pub(super) enum DbFail {
    /// No space left: the job is refused, the database reopened before its next use.
    Full(String),
    Fatal(String),
}

/// redb results as spool results.
trait Db<T> {
    fn db(self) -> Result<T, SpoolError>;
}

impl<T, E: Into<redb::Error>> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, SpoolError> {
        self.map_err(|e| storage(e.into()))
    }
}

fn classify(e: impl Into<redb::Error>) -> DbFail {
    match e.into() {
        redb::Error::Io(io) if is_disk_full(&io) => DbFail::Full(io.to_string()),
        // An earlier write failed (for lack of space): reopen and refuse this one.
        redb::Error::PreviousIo => DbFail::Full("an earlier write to the dead letters failed".into()),
        other => DbFail::Fatal(other.to_string()),
    }
}

/// One change to the dead letters, in a group's single transaction.
pub(super) enum DeadOp<'a> {
    /// New dead letters (their ids are assigned here).
    Insert(Vec<&'a DeadLetter>),
    /// Remove dead letters (replayed or purged).
    Remove(&'a [u64]),
}

/// Result of one transaction: per op, the letters inserted or removed.
pub(super) struct Applied {
    pub counts: Vec<u64>,
    pub dropped: u64,
}

/// The dead-letter database; reopened after a write failed for lack of space
/// (redb refuses every write after an I/O error).
pub(super) struct DeadStore {
    path: PathBuf,
    db: RwLock<Option<Database>>,
    stale: AtomicBool,
}

impl DeadStore {
    pub fn open(path: &Path) -> Result<DeadStore, SpoolError> {
        let db = create(path)?;
        Ok(DeadStore {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
            stale: AtomicBool::new(false),
        })
    }

    /// Runs a read transaction.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, SpoolError>) -> Result<T, SpoolError> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = guard
            .as_ref()
            .ok_or_else(|| SpoolError::Storage("dead letters are being reopened".into()))?;
        let rtx = db.begin_read().db()?;
        f(&rtx)
    }

    /// Reopens the database when a write failed since it was opened.
    pub fn reopen_if_stale(&self) -> Result<(), String> {
        if !self.stale.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        *guard = None;
        let db = create(&self.path).map_err(|e| e.to_string())?;
        *guard = Some(db);
        self.stale.store(false, Ordering::Relaxed);
        tracing::info!("spool: dead letters reopened after a failed write");
        Ok(())
    }

    fn fail(&self, e: DbFail) -> DbFail {
        if matches!(e, DbFail::Full(_)) {
            self.stale.store(true, Ordering::Relaxed);
        }
        e
    }

    /// The dead letters with these ids (missing ones are skipped).
    pub fn get(&self, ids: &[u64]) -> Result<Vec<(u64, DeadLetter)>, DbFail> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = guard
            .as_ref()
            .ok_or_else(|| DbFail::Fatal("dead letters are closed".into()))?;
        let run = || -> Result<Vec<(u64, DeadLetter)>, DbFail> {
            let rtx = db.begin_read().map_err(classify)?;
            let dead = rtx.open_table(DEAD).map_err(classify)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(v) = dead.get(*id).map_err(classify)? {
                    if let Ok(letter) = serde_json::from_slice::<DeadLetter>(v.value()) {
                        out.push((*id, letter));
                    }
                }
            }
            Ok(out)
        };
        run().map_err(|e| self.fail(e))
    }

    /// Applies `ops` in one durable transaction; keeps at most `max_dead` letters
    /// (the oldest are dropped).
    pub fn apply(&self, ops: &[DeadOp<'_>], max_dead: u64) -> Result<Applied, DbFail> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = guard
            .as_ref()
            .ok_or_else(|| DbFail::Fatal("dead letters are closed".into()))?;
        let run = || -> Result<Applied, DbFail> {
            let mut tx = db.begin_write().map_err(classify)?;
            tx.set_durability(Durability::Immediate);
            let mut counts = Vec::with_capacity(ops.len());
            let mut dropped = 0u64;
            {
                let mut dead = tx.open_table(DEAD).map_err(classify)?;
                let mut meta = tx.open_table(META).map_err(classify)?;
                let mut next = meta.get("next_dead").map_err(classify)?.map_or(1, |v| v.value());
                for op in ops {
                    let mut n = 0u64;
                    match op {
                        DeadOp::Insert(letters) => {
                            for letter in letters {
                                let mut letter = (*letter).clone();
                                letter.id = next;
                                let json = serde_json::to_vec(&letter).map_err(|e| DbFail::Fatal(e.to_string()))?;
                                dead.insert(next, json.as_slice()).map_err(classify)?;
                                next += 1;
                                n += 1;
                            }
                            let mut over = dead.len().map_err(classify)?.saturating_sub(max_dead);
                            while over > 0 {
                                if dead.pop_first().map_err(classify)?.is_none() {
                                    break;
                                }
                                over -= 1;
                                dropped += 1;
                            }
                        }
                        DeadOp::Remove(ids) => {
                            for id in *ids {
                                if dead.remove(*id).map_err(classify)?.is_some() {
                                    n += 1;
                                }
                            }
                        }
                    }
                    counts.push(n);
                }
                meta.insert("next_dead", next).map_err(classify)?;
            }
            tx.commit().map_err(classify)?;
            Ok(Applied { counts, dropped })
        };
        run().map_err(|e| self.fail(e))
    }

    /// Hands the events queued by an earlier version to `write`, one chunk of
    /// one destination's events (in their order) at a time, with their retry
    /// states; returns how many there were (`None`: no such queue).
    pub fn old_queue(
        &self,
        mut write: impl FnMut(&str, Vec<(Vec<u8>, Option<RetryState>)>) -> Result<(), SpoolError>,
    ) -> Result<Option<u64>, SpoolError> {
        const CHUNK_BYTES: usize = 4 << 20;
        self.read(|rtx| {
            let queue = match rtx.open_table(OLD_QUEUE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(storage(e)),
            };
            let state = match rtx.open_table(OLD_STATE) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(storage(e)),
            };
            let mut total = 0u64;
            let mut chunk: Vec<(Vec<u8>, Option<RetryState>)> = Vec::new();
            let mut chunk_dest = String::new();
            let mut chunk_bytes = 0usize;
            for row in queue.iter().db()? {
                let (k, v) = row.db()?;
                let (dest, seq) = k.value();
                if (dest != chunk_dest || chunk_bytes >= CHUNK_BYTES) && !chunk.is_empty() {
                    write(&chunk_dest, std::mem::take(&mut chunk))?;
                    chunk_bytes = 0;
                }
                if dest != chunk_dest {
                    chunk_dest = dest.to_owned();
                }
                let st = match &state {
                    Some(t) => t
                        .get((dest, seq))
                        .db()?
                        .and_then(|s| serde_json::from_slice::<RetryState>(s.value()).ok()),
                    None => None,
                };
                chunk_bytes += v.value().len();
                chunk.push((v.value().to_vec(), st));
                total += 1;
            }
            if !chunk.is_empty() {
                write(&chunk_dest, chunk)?;
            }
            Ok(Some(total))
        })
    }

    /// Drops the tables of the earlier queue, and compacts the file.
    pub fn clear_old(&self) -> Result<(), SpoolError> {
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let db = guard.as_mut().ok_or(SpoolError::Closed)?;
        let mut tx = db.begin_write().map_err(storage)?;
        tx.set_durability(Durability::Immediate);
        tx.delete_table(OLD_QUEUE).map_err(storage)?;
        tx.delete_table(OLD_STATE).map_err(storage)?;
        tx.commit().map_err(storage)?;
        if let Err(e) = db.compact() {
            tracing::warn!(error = %e, "spool: could not compact spool.redb after the migration");
        }
        Ok(())
    }

    /// Number of dead letters.
    pub fn count(&self) -> Result<u64, SpoolError> {
        self.read(|rtx| rtx.open_table(DEAD).db()?.len().db())
    }

    /// Dead letters read as `T` (the whole letter or a summary), newest first.
    pub fn scan<T: serde::de::DeserializeOwned>(
        &self,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, SpoolError> {
        self.read(|rtx| {
            let dead = rtx.open_table(DEAD).db()?;
            let mut out = Vec::new();
            for row in dead.iter().db()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row.db()?;
                match serde_json::from_slice::<T>(v.value()) {
                    Ok(item) if keep(&item) => out.push(item),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "spool: a dead letter cannot be read; skipped"),
                }
            }
            Ok(out)
        })
    }

    /// One dead letter.
    pub fn letter(&self, id: u64) -> Result<Option<DeadLetter>, SpoolError> {
        self.read(|rtx| {
            let dead = rtx.open_table(DEAD).db()?;
            let found = dead.get(id).db()?;
            Ok(found.and_then(|v| serde_json::from_slice(v.value()).ok()))
        })
    }
}

fn create(path: &Path) -> Result<Database, SpoolError> {
    let db = Database::builder()
        .set_cache_size(SPOOL_CACHE_BYTES)
        .create(path)
        .db()?;
    let tx = db.begin_write().db()?;
    {
        tx.open_table(DEAD).db()?;
        tx.open_table(META).db()?;
    }
    tx.commit().db()?;
    Ok(db)
}

#[cfg(test)]
pub(super) mod old {
    //! Writes a spool file the way earlier versions did, for the migration test.
    use super::*;
    use redb::TableHandle;

    pub fn write(path: &Path, rows: &[(&str, u64, &[u8])], states: &[(&str, u64, &RetryState)]) {
        let db = Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut q = tx.open_table(OLD_QUEUE).unwrap();
            for (d, s, v) in rows {
                q.insert((*d, *s), *v).unwrap();
            }
            let mut st = tx.open_table(OLD_STATE).unwrap();
            for (d, s, v) in states {
                st.insert((*d, *s), serde_json::to_vec(v).unwrap().as_slice()).unwrap();
            }
            tx.open_table(DEAD).unwrap();
            let mut m = tx.open_table(META).unwrap();
            m.insert("next_seq", 100).unwrap();
        }
        tx.commit().unwrap();
    }

    pub fn has_queue(path: &Path) -> bool {
        let db = Database::create(path).unwrap();
        let rtx = db.begin_read().unwrap();
        let exists = rtx
            .list_tables()
            .unwrap()
            .any(|t| t.name() == "queue" || t.name() == "state");
        exists
    }
}
