//! A destination's journal: acks and retry states of the events in its
//! segments, as framed records appended to one file, and rewritten as a
//! snapshot when it grows.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use super::log::{begin_frame, end_frame, read_frame, Bitset, Frame};
use super::{EventId, RetryState};

const SNAPSHOT: u8 = 1;
const ACKS: u8 = 2;
const STATES: u8 = 3;
const ACKED_RANGES: u8 = 4;
const ACKED_BITMAP: u8 = 5;

/// Ids per frame, so frames stay small.
const PER_FRAME: usize = 16 * 1024;

/// One decoded journal record.
#[derive(Debug, PartialEq)]
pub(super) enum Record {
    /// Start of a snapshot: segment ids below this were used.
    Snapshot {
        next_segment: u64,
    },
    Acks(Vec<EventId>),
    States(Vec<(EventId, RetryState)>),
    /// Acked ordinals of one segment, as `[start, end)` runs.
    AckedRanges {
        segment: u64,
        ranges: Vec<(u32, u32)>,
    },
    /// Acked ordinals of one segment, as bitmap words.
    AckedBitmap {
        segment: u64,
        words: Vec<u64>,
    },
}

/// Appends framed ack records for `ids` to `out`.
pub(super) fn encode_acks(ids: &[EventId], out: &mut Vec<u8>) -> Result<(), String> {
    for chunk in ids.chunks(PER_FRAME) {
        let start = begin_frame(out);
        out.push(ACKS);
        let mut i = 0;
        while i < chunk.len() {
            let seg = chunk[i].segment;
            let run = chunk[i..].iter().take_while(|id| id.segment == seg).count();
            out.extend_from_slice(&seg.to_le_bytes());
            out.extend_from_slice(&(run as u32).to_le_bytes());
            for id in &chunk[i..i + run] {
                out.extend_from_slice(&id.ordinal.to_le_bytes());
            }
            i += run;
        }
        end_frame(out, start)?;
    }
    Ok(())
}

/// Appends framed retry-state records to `out`.
pub(super) fn encode_states<'a>(
    states: impl IntoIterator<Item = (EventId, &'a RetryState)>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut start: Option<usize> = None;
    let mut in_frame = 0usize;
    for (id, st) in states {
        if start.is_none() {
            let s = begin_frame(out);
            out.push(STATES);
            start = Some(s);
        }
        out.extend_from_slice(&id.segment.to_le_bytes());
        out.extend_from_slice(&id.ordinal.to_le_bytes());
        out.extend_from_slice(&st.attempts.to_le_bytes());
        out.extend_from_slice(&st.first_failure_ms.to_le_bytes());
        out.extend_from_slice(&st.next_attempt_ms.to_le_bytes());
        out.extend_from_slice(&st.config.to_le_bytes());
        out.extend_from_slice(&(st.done.len() as u32).to_le_bytes());
        for d in &st.done {
            out.extend_from_slice(&d.to_le_bytes());
        }
        in_frame += 1;
        if in_frame >= PER_FRAME {
            if let Some(s) = start.take() {
                end_frame(out, s)?;
            }
            in_frame = 0;
        }
    }
    if let Some(s) = start {
        end_frame(out, s)?;
    }
    Ok(())
}

/// Appends a snapshot (header, acked ordinals of each segment, retry states).
pub(super) fn encode_snapshot<'a>(
    next_segment: u64,
    segments: impl IntoIterator<Item = (u64, &'a Bitset, u32)>,
    states: impl IntoIterator<Item = (EventId, &'a RetryState)>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = begin_frame(out);
    out.push(SNAPSHOT);
    out.extend_from_slice(&next_segment.to_le_bytes());
    end_frame(out, start)?;
    for (segment, acked, ordinals) in segments {
        if acked.count_below(ordinals) == 0 {
            continue;
        }
        let ranges = acked.ranges(ordinals);
        let words = acked.words();
        let start = begin_frame(out);
        if ranges.len() <= words.len() {
            out.push(ACKED_RANGES);
            out.extend_from_slice(&segment.to_le_bytes());
            out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
            for (a, b) in ranges {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
        } else {
            out.push(ACKED_BITMAP);
            out.extend_from_slice(&segment.to_le_bytes());
            out.extend_from_slice(&(words.len() as u32).to_le_bytes());
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        end_frame(out, start)?;
    }
    encode_states(states, out)
}

/// Little-endian reads from a payload; `None` past its end.
struct Bytes<'a> {
    b: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(w))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(w))
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    /// A count of items of `size` bytes each, bounded by what is left.
    fn count(&mut self, size: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(size)? <= self.b.len()).then_some(n)
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut b = Bytes { b: payload };
    let record = match b.u8()? {
        SNAPSHOT => Record::Snapshot { next_segment: b.u64()? },
        ACKS => {
            let mut ids = Vec::new();
            while !b.is_empty() {
                let segment = b.u64()?;
                let n = b.count(4)?;
                for _ in 0..n {
                    ids.push(EventId {
                        segment,
                        ordinal: b.u32()?,
                    });
                }
            }
            Record::Acks(ids)
        }
        STATES => {
            let mut states = Vec::new();
            while !b.is_empty() {
                let id = EventId {
                    segment: b.u64()?,
                    ordinal: b.u32()?,
                };
                let attempts = b.u32()?;
                let first_failure_ms = b.i64()?;
                let next_attempt_ms = b.i64()?;
                let config = b.u64()?;
                let n = b.count(4)?;
                let mut done = Vec::with_capacity(n);
                for _ in 0..n {
                    done.push(b.u32()?);
                }
                states.push((
                    id,
                    RetryState {
                        attempts,
                        first_failure_ms,
                        next_attempt_ms,
                        done,
                        config,
                    },
                ));
            }
            Record::States(states)
        }
        ACKED_RANGES => {
            let segment = b.u64()?;
            let n = b.count(8)?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                ranges.push((b.u32()?, b.u32()?));
            }
            Record::AckedRanges { segment, ranges }
        }
        ACKED_BITMAP => {
            let segment = b.u64()?;
            let n = b.count(8)?;
            let mut words = Vec::with_capacity(n);
            for _ in 0..n {
                words.push(b.u64()?);
            }
            Record::AckedBitmap { segment, words }
        }
        _ => return None,
    };
    b.is_empty().then_some(record)
}

/// What a replay found.
pub(super) struct Replayed {
    /// Length of the valid prefix.
    pub valid_len: u64,
    pub file_len: u64,
    pub bad: Option<&'static str>,
}

/// Reads the journal at `path`, handing every valid record to `apply`, and
/// stops at the first bad one.
pub(super) fn replay(path: &Path, mut apply: impl FnMut(Record)) -> io::Result<Replayed> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut pos = 0u64;
    loop {
        match read_frame(&mut r, file_len - pos, &mut buf)? {
            Frame::End => {
                return Ok(Replayed {
                    valid_len: pos,
                    file_len,
                    bad: None,
                })
            }
            Frame::Bad(why) => {
                return Ok(Replayed {
                    valid_len: pos,
                    file_len,
                    bad: Some(why),
                })
            }
            Frame::Valid(len) => match decode(&buf) {
                Some(record) => {
                    apply(record);
                    pos += len;
                }
                None => {
                    return Ok(Replayed {
                        valid_len: pos,
                        file_len,
                        bad: Some("unknown or malformed record"),
                    });
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(segment: u64, ordinal: u32) -> EventId {
        EventId { segment, ordinal }
    }

    #[test]
    fn records_round_trip() {
        let st = RetryState {
            attempts: 3,
            first_failure_ms: -1,
            next_attempt_ms: 9,
            done: vec![0, 2],
            config: 77,
        };
        let mut acked = Bitset::default();
        acked.set(1);
        acked.set(2);
        let mut sparse = Bitset::default();
        for i in (0..640).step_by(2) {
            sparse.set(i);
        }
        let mut out = Vec::new();
        encode_acks(&[id(1, 0), id(1, 5), id(2, 1)], &mut out).unwrap();
        encode_states([(id(2, 3), &st)], &mut out).unwrap();
        encode_snapshot(
            9,
            [(1, &acked, 4), (3, &Bitset::default(), 2), (4, &sparse, 640)],
            [(id(1, 3), &st)],
            &mut out,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, &out).unwrap();
        let mut records = Vec::new();
        let r = replay(&path, |rec| records.push(rec)).unwrap();
        assert_eq!((r.valid_len, r.bad), (out.len() as u64, None));
        assert_eq!(records[0], Record::Acks(vec![id(1, 0), id(1, 5), id(2, 1)]));
        assert_eq!(records[1], Record::States(vec![(id(2, 3), st.clone())]));
        assert_eq!(records[2], Record::Snapshot { next_segment: 9 });
        assert_eq!(
            records[3],
            Record::AckedRanges {
                segment: 1,
                ranges: vec![(1, 3)]
            }
        );
        assert!(matches!(records[4], Record::AckedBitmap { segment: 4, .. }));
        assert_eq!(records[5], Record::States(vec![(id(1, 3), st)]));
        assert_eq!(records.len(), 6);

        // A torn tail stops the replay at the last whole record.
        std::fs::write(&path, &out[..out.len() - 3]).unwrap();
        let mut n = 0;
        let r = replay(&path, |_| n += 1).unwrap();
        assert_eq!(n, 5);
        assert!(r.bad.is_some() && r.valid_len < out.len() as u64);
    }
}
