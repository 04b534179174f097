//! Recovery at open: every destination's segments scanned and cut back to
//! their last whole record, its journal replayed, delivered segments deleted.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::super::journal::{self, Record};
use super::super::log::{self, segment_name, Bitset};
use super::super::{storage, DestMeta, DestShared, Inner, SegMeta, SpoolError};
use super::dest::{Tail, WDest};
use super::journal_file::new_journal;
use super::{sync_dir, unhex, Totals, Writer, JOURNAL, JOURNAL_TMP};

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
        w.totals.max_bytes = w.inner.limits.max_bytes;
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
