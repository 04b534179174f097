//! Staging a group's appends: records written to the tail segments (new
//! destinations and segments created as needed), then fsync'd and made
//! visible, or cut back when the disk refuses the group.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::super::log;
use super::super::{DestMeta, DestShared, SegMeta};
use super::dest::{Tail, WDest};
use super::journal_file::new_journal;
use super::{fail, fatal, hex, sync_dir, Fail, Writer};

/// A segment written to in the current group.
pub(super) struct Touched {
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
pub(super) struct Staging {
    pub(super) touched: Vec<Touched>,
    /// Directories that got a new entry.
    dirs: Vec<PathBuf>,
    pub(super) bytes: u64,
}

impl Staging {
    fn dir(&mut self, path: &Path) {
        if !self.dirs.iter().any(|d| d == path) {
            self.dirs.push(path.to_owned());
        }
    }
}

impl Writer {
    /// Writes one record per destination of `events`.
    pub(super) fn stage<'a>(
        &mut self,
        events: impl Iterator<Item = (&'a str, &'a [u8])>,
        st: &mut Staging,
    ) -> Result<(), Fail> {
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
    pub(super) fn write_record(&mut self, dest: &str, events: &[&[u8]], st: &mut Staging) -> Result<(u64, u32), Fail> {
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
    pub(super) fn sync_staged(&mut self, st: &Staging) -> Result<(), Fail> {
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
    pub(super) fn rollback(&mut self, st: Staging) {
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
    pub(super) fn commit_staged(&mut self, st: Staging) {
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
