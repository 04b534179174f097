//! The transform guard: no event can make the worker crash in a loop.
//!
//! A bug in the transform (or an input the code does not bound) may abort
//! the process, and abort is not a panic: nothing can catch it. Without a
//! guard the event stays queued, the next start transforms it again and the
//! process crash-loops. So, per destination, the worker marks what it is
//! about to transform in a small file, and clears the mark when the
//! transform returns:
//!
//! - a read of events is transformed as one *batch*: one write before (the
//!   first and last event id), one after; nothing per event;
//! - at open, a mark still set means the process died while transforming
//!   those events. They become *suspects* (kept as id ranges), and the
//!   worker transforms each suspect *alone*, with its own mark;
//! - a suspect whose alone mark is still set at open was being transformed
//!   at two crashes, the second time on its own: it is *poison*. The worker
//!   moves it to the dead letters (reason `poison`, with a message)
//!   without transforming it again, and the rest of the queue flows.
//!
//! So after a crash in the transform the server restarts at most twice for
//! one poison event, and an event is quarantined only if the process died
//! twice while it was being transformed, once on its own. (A crash of
//! another cause in that short window counts too: such an event is a dead
//! letter that a replay puts back.) The guard covers the transform, not
//! sending: an abort while sending leaves no mark.
//!
//! The marks are written with write(2) and not fsync'd: they survive the
//! process dying (page cache), which is what they are for; after a power
//! loss they may be lost or torn (the checksum catches that, and a lost
//! mark only means no suspects).
//!
//! # On-disk format
//! `<data_dir>/transform/<hex of the destination id's bytes>`, overwritten in
//! place from offset 0 (bytes past the frame are ignored): one frame as in the
//! journal, `[u32 len][u32 crc32 of the rest][payload]`, the payload `[u8
//! version = 1][u8 mark: 0 none, 1 batch, 2 alone][id first][id last][u32
//! n][n x (id first, id last)][u32 m][m x id]` (suspect ranges, then poison
//! ids), an id being `[u64 segment][u32 ordinal]`, little endian.
//!
//! At open, poison ids and suspect ranges that no longer hold a queued event
//! are dropped (before anything is appended, so a later event with a reused
//! id is never taken for one of them).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::log::{begin_frame, end_frame, read_frame, Frame};
use super::writer::unhex;
use super::{Entry, EventId, Inner};

/// Directory of the guard files, under the spool's directory.
pub(super) const GUARD_DIR: &str = "transform";

const VERSION: u8 = 1;
const NO_MARK: u8 = 0;
const BATCH: u8 = 1;
const ALONE: u8 = 2;

/// Suspect ranges kept at most; beyond, the two oldest are merged (their
/// events in between become suspects too: transformed alone, no more).
const MAX_SPANS: usize = 64;
/// Poison ids kept at most (each one took two crashes).
const MAX_POISON: usize = 1024;
/// Largest guard file read.
const MAX_FILE: u64 = 1 << 20;

/// Events from `first` to `last` (inclusive) in id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub first: EventId,
    pub last: EventId,
}

impl Span {
    fn contains(&self, id: EventId) -> bool {
        self.first <= id && id <= self.last
    }
}

/// What was being transformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mark {
    pub span: Span,
    /// One suspect on its own.
    pub alone: bool,
}

/// A destination's guard state, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct GuardState {
    pub mark: Option<Mark>,
    pub suspects: Vec<Span>,
    pub poison: Vec<EventId>,
}

/// The id right after `id` in id order.
fn successor(id: EventId) -> EventId {
    match id.ordinal.checked_add(1) {
        Some(ordinal) => EventId {
            segment: id.segment,
            ordinal,
        },
        None => EventId {
            segment: id.segment.saturating_add(1),
            ordinal: 0,
        },
    }
}

impl GuardState {
    /// The state after a start: a mark left set turns its events into
    /// suspects (a batch) or poison (a suspect alone). Returns the marks found.
    pub fn after_crash(&mut self) -> Option<Mark> {
        let mark = self.mark.take()?;
        if mark.alone {
            if !self.poison.contains(&mark.span.first) {
                self.poison.push(mark.span.first);
            }
            if self.poison.len() > MAX_POISON {
                self.poison.remove(0);
            }
            // Handled: it is no longer a suspect.
            self.settled(mark.span.first);
        } else {
            self.suspects.push(mark.span);
            self.suspects.sort_by_key(|s| s.first);
            while self.suspects.len() > MAX_SPANS {
                let b = self.suspects.remove(1);
                if let Some(a) = self.suspects.first_mut() {
                    a.last = a.last.max(b.last);
                }
            }
        }
        Some(mark)
    }

    /// Drops poison ids and suspect ranges without a queued event.
    pub fn prune(&mut self, queued: impl Fn(EventId) -> bool, queued_in: impl Fn(Span) -> bool) {
        self.poison.retain(|&id| queued(id));
        self.suspects.retain(|&s| queued_in(s));
    }

    fn is_suspect(&self, id: EventId) -> bool {
        self.suspects.iter().any(|s| s.contains(id))
    }

    /// `id` was transformed alone (or quarantined): no longer a suspect.
    /// Suspects are handled in id order, so ranges shrink from the front.
    fn settled(&mut self, id: EventId) {
        for s in &mut self.suspects {
            if s.contains(id) {
                s.first = successor(id);
            }
        }
        self.suspects.retain(|s| s.first <= s.last);
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        fn id(out: &mut Vec<u8>, id: EventId) {
            out.extend_from_slice(&id.segment.to_le_bytes());
            out.extend_from_slice(&id.ordinal.to_le_bytes());
        }
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        out.push(VERSION);
        let zero = EventId { segment: 0, ordinal: 0 };
        match self.mark {
            None => {
                out.push(NO_MARK);
                id(&mut out, zero);
                id(&mut out, zero);
            }
            Some(m) => {
                out.push(if m.alone { ALONE } else { BATCH });
                id(&mut out, m.span.first);
                id(&mut out, m.span.last);
            }
        }
        out.extend_from_slice(&(self.suspects.len() as u32).to_le_bytes());
        for s in &self.suspects {
            id(&mut out, s.first);
            id(&mut out, s.last);
        }
        out.extend_from_slice(&(self.poison.len() as u32).to_le_bytes());
        for p in &self.poison {
            id(&mut out, *p);
        }
        end_frame(&mut out, start)?;
        Ok(out)
    }

    pub fn decode(payload: &[u8]) -> Option<GuardState> {
        struct B<'a>(&'a [u8]);
        impl B<'_> {
            fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
                let head = self.0.get(..N)?;
                let mut w = [0u8; N];
                w.copy_from_slice(head);
                self.0 = self.0.get(N..)?;
                Some(w)
            }
            fn u8(&mut self) -> Option<u8> {
                self.take::<1>().map(|b| b[0])
            }
            fn u32(&mut self) -> Option<u32> {
                self.take::<4>().map(u32::from_le_bytes)
            }
            fn id(&mut self) -> Option<EventId> {
                let segment = u64::from_le_bytes(self.take::<8>()?);
                let ordinal = self.u32()?;
                Some(EventId { segment, ordinal })
            }
            fn count(&mut self, size: usize) -> Option<usize> {
                let n = self.u32()? as usize;
                (n.checked_mul(size)? <= self.0.len()).then_some(n)
            }
        }
        let mut b = B(payload);
        if b.u8()? != VERSION {
            return None;
        }
        let kind = b.u8()?;
        let span = Span {
            first: b.id()?,
            last: b.id()?,
        };
        let mark = match kind {
            NO_MARK => None,
            BATCH => Some(Mark { span, alone: false }),
            ALONE => Some(Mark { span, alone: true }),
            _ => return None,
        };
        let n = b.count(24)?;
        let mut suspects = Vec::with_capacity(n);
        for _ in 0..n {
            suspects.push(Span {
                first: b.id()?,
                last: b.id()?,
            });
        }
        let m = b.count(12)?;
        let mut poison = Vec::with_capacity(m);
        for _ in 0..m {
            poison.push(b.id()?);
        }
        b.0.is_empty().then_some(GuardState { mark, suspects, poison })
    }
}

/// Reads a guard file; a missing, torn or unreadable one is an empty state.
pub(super) fn load(path: &Path) -> io::Result<GuardState> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(GuardState::default()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len().min(MAX_FILE);
    let mut r = (&mut file).take(len);
    let mut buf = Vec::new();
    match read_frame(&mut r, len, &mut buf)? {
        Frame::Valid(_) => Ok(GuardState::decode(&buf).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "spool: unreadable transform guard; ignored");
            GuardState::default()
        })),
        Frame::End => Ok(GuardState::default()),
        Frame::Bad(why) => {
            tracing::warn!(path = %path.display(), why, "spool: torn transform guard; ignored");
            Ok(GuardState::default())
        }
    }
}

/// What to do with one of a read's events, in order.
#[derive(Debug)]
pub enum Step {
    /// Transform these together, marked as one range.
    Batch(Vec<Entry>),
    /// A suspect: transform it on its own.
    Alone(Entry),
    /// Was being transformed at two crashes: a dead letter, not transformed.
    Poison(Entry),
}

/// One destination's guard (see the module docs). `begin` and `end` write the
/// file: one small write(2) each, into the page cache.
pub struct TransformGuard {
    destination: String,
    path: PathBuf,
    inner: Mutex<GuardInner>,
}

struct GuardInner {
    file: Option<File>,
    state: GuardState,
    /// The last write failed (logged once per streak of failures).
    failing: bool,
}

impl std::fmt::Debug for TransformGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformGuard")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl TransformGuard {
    pub(super) fn new(destination: String, path: PathBuf, state: GuardState) -> TransformGuard {
        TransformGuard {
            destination,
            path,
            inner: Mutex::new(GuardInner {
                file: None,
                state,
                failing: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GuardInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, as it would be written.
    #[cfg(test)]
    pub(super) fn state(&self) -> GuardState {
        self.lock().state.clone()
    }

    /// Splits a read's events (in id order) into what to do with them.
    pub fn plan(&self, entries: Vec<Entry>) -> Vec<Step> {
        let g = self.lock();
        let mut steps = Vec::new();
        let mut batch = Vec::new();
        for entry in entries {
            let step = if g.state.poison.contains(&entry.id) {
                Step::Poison(entry)
            } else if g.state.is_suspect(entry.id) {
                Step::Alone(entry)
            } else {
                batch.push(entry);
                continue;
            };
            if !batch.is_empty() {
                steps.push(Step::Batch(std::mem::take(&mut batch)));
            }
            steps.push(step);
        }
        if !batch.is_empty() {
            steps.push(Step::Batch(batch));
        }
        steps
    }

    /// Marks `first..=last` as being transformed (alone: one suspect).
    pub fn begin(&self, first: EventId, last: EventId, alone: bool) {
        let mut g = self.lock();
        g.state.mark = Some(Mark {
            span: Span { first, last },
            alone,
        });
        self.write(&mut g);
    }

    /// The marked transform returned: clears the mark (a suspect transformed
    /// alone is no longer one).
    pub fn end(&self) {
        let mut g = self.lock();
        if let Some(m) = g.state.mark.take() {
            if m.alone {
                g.state.settled(m.span.first);
            }
        }
        self.write(&mut g);
    }

    /// A poison event was handed over as a dead letter. It stays listed (so
    /// it is never transformed, should the dead letter not be committed
    /// before a crash) until a start finds it no longer queued.
    pub fn quarantined(&self, id: EventId) {
        self.lock().state.settled(id);
    }

    /// Overwrites the file with the state. A failure is logged (the guard is
    /// off until a write succeeds), never fatal: it only protects against
    /// crash loops.
    fn write(&self, g: &mut GuardInner) {
        let result = g.state.encode().map_err(io::Error::other).and_then(|buf| {
            if g.file.is_none() {
                if let Some(dir) = self.path.parent() {
                    fs::create_dir_all(dir)?;
                }
                g.file = Some(
                    OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&self.path)?,
                );
            }
            let file = g.file.as_mut().ok_or_else(|| io::Error::other("guard file not open"))?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&buf)
        });
        match result {
            Ok(()) => {
                if g.failing {
                    tracing::info!(destination = %self.destination, "spool: transform guard written again");
                }
                g.failing = false;
            }
            Err(e) => {
                g.file = None;
                if !g.failing {
                    tracing::error!(destination = %self.destination, error = %e, path = %self.path.display(), "spool: cannot write the transform guard; a crash while transforming could repeat on restart");
                }
                g.failing = true;
            }
        }
    }

    /// Writes the state as it is now (after a start's recovery).
    pub(super) fn persist(&self) {
        let mut g = self.lock();
        self.write(&mut g);
    }
}

/// At open, before anything is appended: every guard file of `dir` is read,
/// a mark left set becomes suspects or poison (logged), what is no longer
/// queued is dropped, and the result is written back.
pub(super) fn recover_all(inner: &Inner, dir: &Path) -> HashMap<String, Arc<TransformGuard>> {
    let mut guards = HashMap::new();
    let names = match fs::read_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return guards,
        Err(e) => {
            tracing::error!(error = %e, path = %dir.display(), "spool: cannot list the transform guards; crash-loop protection is off for them");
            return guards;
        }
    };
    for name in names.flatten() {
        let name = name.file_name().to_string_lossy().into_owned();
        let Some(destination) = unhex(&name) else {
            continue;
        };
        let path = dir.join(&name);
        let mut state = match load(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(destination = %destination, error = %e, "spool: cannot read the transform guard; ignored");
                GuardState::default()
            }
        };
        match state.after_crash() {
            Some(Mark { span, alone: true }) => tracing::error!(
                destination = %destination,
                segment = span.first.segment,
                ordinal = span.first.ordinal,
                "spool: the process died twice while transforming this event, the second time with it alone; \
                 it becomes a dead letter (reason poison) without being transformed again"
            ),
            Some(Mark { span, alone: false }) => tracing::warn!(
                destination = %destination,
                first = ?span.first,
                last = ?span.last,
                "spool: the process died while transforming these events; they are transformed one at a time"
            ),
            None => {}
        }
        match inner.dest(&destination) {
            Some(shared) => {
                let m = shared.lock();
                state.prune(|id| m.queued(id), |span| m.queued_in(span.first, span.last));
            }
            None => state = GuardState::default(),
        }
        let empty = state == GuardState::default();
        let guard = TransformGuard::new(destination.clone(), path.clone(), state);
        if !empty {
            guard.persist();
        } else if let Err(e) = fs::remove_file(&path) {
            // Nothing to remember (a clean stop, or a destination whose events
            // are gone): the file is created again by the next mark.
            tracing::warn!(destination = %destination, error = %e, "spool: cannot remove an empty transform guard");
        }
        guards.insert(destination, Arc::new(guard));
    }
    guards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(segment: u64, ordinal: u32) -> EventId {
        EventId { segment, ordinal }
    }

    fn entry(segment: u64, ordinal: u32) -> Entry {
        Entry {
            id: id(segment, ordinal),
            event: Vec::new(),
            state: None,
        }
    }

    fn shape(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Batch(es) => format!("batch {}", es.len()),
                Step::Alone(e) => format!("alone {}", e.id.ordinal),
                Step::Poison(e) => format!("poison {}", e.id.ordinal),
            })
            .collect()
    }

    #[test]
    fn state_round_trips_and_torn_files_are_ignored() {
        let state = GuardState {
            mark: Some(Mark {
                span: Span {
                    first: id(1, 2),
                    last: id(3, 4),
                },
                alone: false,
            }),
            suspects: vec![Span {
                first: id(0, 1),
                last: id(0, 9),
            }],
            poison: vec![id(7, 7)],
        };
        let bytes = state.encode().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        // Overwritten in place: a longer old content after the frame is ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAB; 100]);
        fs::write(&path, &longer).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(load(&path).unwrap(), GuardState::default());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(load(&path).unwrap(), GuardState::default());
        assert_eq!(load(&dir.path().join("missing")).unwrap(), GuardState::default());
    }

    #[test]
    fn a_batch_crash_makes_suspects_and_a_second_crash_alone_makes_poison() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GUARD_DIR).join("64");
        let guard = TransformGuard::new("d".into(), path.clone(), GuardState::default());
        let plan = guard.plan((0..5).map(|o| entry(1, o)).collect());
        assert_eq!(shape(&plan), ["batch 5"]);
        guard.begin(id(1, 0), id(1, 4), false);
        // The process dies here. The next start:
        let mut state = load(&path).unwrap();
        let mark = state.after_crash().unwrap();
        assert!(!mark.alone);
        assert_eq!(
            state.suspects,
            [Span {
                first: id(1, 0),
                last: id(1, 4)
            }]
        );
        let guard = TransformGuard::new("d".into(), path.clone(), state);
        guard.persist();
        // Suspects one at a time, the others together.
        let plan = guard.plan((0..7).map(|o| entry(1, o)).collect());
        assert_eq!(
            shape(&plan),
            ["alone 0", "alone 1", "alone 2", "alone 3", "alone 4", "batch 2"]
        );
        guard.begin(id(1, 0), id(1, 0), true);
        guard.end();
        guard.begin(id(1, 1), id(1, 1), true);
        guard.end();
        assert_eq!(
            guard.state().suspects,
            [Span {
                first: id(1, 2),
                last: id(1, 4)
            }]
        );
        guard.begin(id(1, 2), id(1, 2), true);
        // It dies again, with event 2 on its own: poison.
        let mut state = load(&path).unwrap();
        assert!(state.after_crash().unwrap().alone);
        assert_eq!(state.poison, [id(1, 2)]);
        assert_eq!(
            state.suspects,
            [Span {
                first: id(1, 3),
                last: id(1, 4)
            }]
        );
        let guard = TransformGuard::new("d".into(), path.clone(), state);
        let plan = guard.plan((2..7).map(|o| entry(1, o)).collect());
        assert_eq!(shape(&plan), ["poison 2", "alone 3", "alone 4", "batch 2"]);
        guard.quarantined(id(1, 2));
        for o in 3..5 {
            guard.begin(id(1, o), id(1, o), true);
            guard.end();
        }
        assert!(guard.state().suspects.is_empty() && guard.state().mark.is_none());
        let plan = guard.plan((5..9).map(|o| entry(1, o)).collect());
        assert_eq!(shape(&plan), ["batch 4"]);
        // A clean stop leaves no mark: nothing changes at the next start.
        let mut state = load(&path).unwrap();
        assert!(state.after_crash().is_none());
        // Poison stays listed until a start finds it gone from the queue.
        assert_eq!(state.poison, [id(1, 2)]);
        state.prune(|i| i != id(1, 2), |_| true);
        assert!(state.poison.is_empty());
    }

    #[test]
    fn pruning_drops_what_is_no_longer_queued_and_spans_stay_bounded() {
        let mut state = GuardState::default();
        for i in 0..(MAX_SPANS as u32 + 5) {
            state.mark = Some(Mark {
                span: Span {
                    first: id(u64::from(i), 0),
                    last: id(u64::from(i), 9),
                },
                alone: false,
            });
            state.after_crash();
        }
        assert_eq!(state.suspects.len(), MAX_SPANS);
        // Merged ranges still cover every suspect.
        for i in 0..(MAX_SPANS as u64 + 5) {
            assert!(state.is_suspect(id(i, 5)), "{i}");
        }
        state.prune(|_| true, |s| s.first.segment >= 10);
        assert!(state.suspects.iter().all(|s| s.first.segment >= 10));
        assert!(!state.is_suspect(id(3, 5)));
        // The successor of the last ordinal is the next segment's first.
        assert_eq!(successor(id(2, u32::MAX)), id(3, 0));
    }
}
