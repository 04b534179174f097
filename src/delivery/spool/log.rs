//! Segment files: framing, the record format, recovery scans and reads of
//! committed ranges. Everything here is plain file I/O; the writer thread and
//! the readers decide what is committed.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// `[u32 total len][u32 crc]` in front of every record (segments and journal).
pub(super) const FRAME: usize = 8;

/// Frame plus the event count of a segment record.
pub(super) const RECORD_HEADER: usize = FRAME + 4;

/// The largest record accepted (the length field is a u32).
const MAX_RECORD: u64 = u32::MAX as u64;

pub(super) fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encoded size of a segment record holding events of these lengths.
pub(super) fn record_len(count: usize, event_bytes: usize) -> u64 {
    (RECORD_HEADER + 4 * count + event_bytes) as u64
}

/// Starts a frame at the end of `out`; returns its start for [`end_frame`].
pub(super) fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME]);
    start
}

/// Fills in the length and checksum of the frame started at `start`.
pub(super) fn end_frame(out: &mut [u8], start: usize) -> Result<(), String> {
    let len = out.len() - start;
    let len32 = u32::try_from(len).map_err(|_| format!("record of {len} bytes is too large"))?;
    let crc = crc32fast::hash(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Encodes one segment record (one request's events for one destination) into
/// `out` (cleared first).
pub(super) fn encode_record(events: &[&[u8]], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let total = record_len(events.len(), events.iter().map(|e| e.len()).sum());
    if total > MAX_RECORD {
        return Err(format!("a request of {total} bytes is too large for one record"));
    }
    let start = begin_frame(out);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
    }
    for e in events {
        out.extend_from_slice(e);
    }
    end_frame(out, start)
}

/// Outcome of reading one frame.
pub(super) enum Frame {
    /// A whole, valid frame; its payload (after len and crc) is in the buffer.
    Valid(u64),
    /// Clean end of the data.
    End,
    /// A torn or corrupt frame.
    Bad(&'static str),
}

/// Reads the next frame from `r`, with at most `remaining` bytes left in the
/// file, into `buf` (the payload only).
pub(super) fn read_frame(r: &mut impl Read, remaining: u64, buf: &mut Vec<u8>) -> io::Result<Frame> {
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < FRAME as u64 {
        return Ok(Frame::Bad("torn frame header"));
    }
    let mut head = [0u8; FRAME];
    r.read_exact(&mut head)?;
    let len = u64::from(u32_at(&head, 0));
    let crc = u32_at(&head, 4);
    if len < FRAME as u64 {
        return Ok(Frame::Bad("invalid frame length"));
    }
    if len > remaining {
        return Ok(Frame::Bad("torn frame"));
    }
    buf.clear();
    buf.resize((len as usize) - FRAME, 0);
    r.read_exact(buf)?;
    if crc32fast::hash(buf) != crc {
        return Ok(Frame::Bad("checksum mismatch"));
    }
    Ok(Frame::Valid(len))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The number of events in a segment record's payload, when it is well formed.
fn record_events(payload: &[u8]) -> Option<u32> {
    if payload.len() < 4 {
        return None;
    }
    let count = u32_at(payload, 0);
    let lengths_end = 4usize.checked_add((count as usize).checked_mul(4)?)?;
    if lengths_end > payload.len() {
        return None;
    }
    let mut sum = 0u64;
    for i in 0..count as usize {
        sum += u64::from(u32_at(payload, 4 + 4 * i));
    }
    (sum == (payload.len() - lengths_end) as u64).then_some(count)
}

/// A segment as found on disk.
pub(super) struct Scanned {
    /// Length of the valid prefix (whole, checked records).
    pub valid_len: u64,
    pub file_len: u64,
    pub ordinals: u32,
    /// Why the data after `valid_len` is not valid, when there is any.
    pub bad: Option<&'static str>,
}

/// Reads a whole segment, checking every record.
pub(super) fn scan_segment(path: &Path) -> io::Result<Scanned> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut pos = 0u64;
    let mut ordinals = 0u32;
    loop {
        match read_frame(&mut r, file_len - pos, &mut buf)? {
            Frame::End => {
                return Ok(Scanned {
                    valid_len: pos,
                    file_len,
                    ordinals,
                    bad: None,
                });
            }
            Frame::Bad(why) => {
                return Ok(Scanned {
                    valid_len: pos,
                    file_len,
                    ordinals,
                    bad: Some(why),
                });
            }
            Frame::Valid(len) => {
                let Some(count) = record_events(&buf) else {
                    return Ok(Scanned {
                        valid_len: pos,
                        file_len,
                        ordinals,
                        bad: Some("malformed record"),
                    });
                };
                let Some(next) = ordinals.checked_add(count) else {
                    return Ok(Scanned {
                        valid_len: pos,
                        file_len,
                        ordinals,
                        bad: Some("too many events"),
                    });
                };
                ordinals = next;
                pos += len;
            }
        }
    }
}

/// A set of ordinals.
#[derive(Clone, Debug, Default)]
pub(super) struct Bitset(Vec<u64>);

impl Bitset {
    pub fn get(&self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// Sets bit `i`; false when it was already set.
    pub fn set(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        !was
    }

    /// Number of set bits below `n`.
    pub fn count_below(&self, n: u32) -> u32 {
        let mut total = 0u32;
        for (w, word) in self.0.iter().enumerate() {
            let lo = (w as u64) * 64;
            if lo >= u64::from(n) {
                break;
            }
            let keep = u64::from(n) - lo;
            let masked = if keep >= 64 { *word } else { word & ((1u64 << keep) - 1) };
            total += masked.count_ones();
        }
        total
    }

    /// Runs of set bits below `n`, as `[start, end)`.
    pub fn ranges(&self, n: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut start: Option<u32> = None;
        for i in 0..n {
            match (self.get(i), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, n));
        }
        out
    }

    pub fn words(&self) -> &[u64] {
        &self.0
    }

    /// A copy of the bits from ordinal `from` on, for a reader.
    pub fn view_from(&self, from: u32) -> AckedView {
        let first = (from / 64) as usize;
        AckedView {
            first,
            words: self.0.get(first..).map(<[u64]>::to_vec).unwrap_or_default(),
        }
    }
}

/// A reader's copy of part of a segment's acked bits.
pub(super) struct AckedView {
    first: usize,
    words: Vec<u64>,
}

impl AckedView {
    fn get(&self, i: u32) -> bool {
        let w = (i / 64) as usize;
        w >= self.first
            && self
                .words
                .get(w - self.first)
                .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }
}

/// A reader's position inside one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pos {
    /// Byte offset of the record being read.
    pub offset: u64,
    /// Ordinal of that record's first event.
    pub base: u32,
    /// Next ordinal to return (at least `base`).
    pub next: u32,
}

/// How much a read may still return.
pub(super) struct Budget {
    pub events: usize,
    pub bytes: usize,
    /// Events taken so far by this read (the first is taken whatever its size).
    pub taken: usize,
}

impl Budget {
    fn exhausted(&self, found: usize, found_bytes: usize) -> bool {
        found >= self.events || (found_bytes >= self.bytes && self.taken + found > 0)
    }
}

/// Why a segment read stopped.
pub(super) enum ReadEnd {
    /// Reached the committed length.
    Exhausted,
    /// The budget is used up.
    Budget,
    /// The file is gone (deleted after everything in it was acked).
    Gone,
}

/// Reads events of the segment at `path` from `pos` up to `committed`, skipping
/// the ordinals set in `acked`; appends `(ordinal, bytes)` to `out`.
pub(super) fn read_events(
    path: &Path,
    pos: &mut Pos,
    committed: u64,
    acked: &AckedView,
    budget: &Budget,
    out: &mut Vec<(u32, Vec<u8>)>,
) -> io::Result<ReadEnd> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadEnd::Gone),
        Err(e) => return Err(e),
    };
    let mut r = BufReader::with_capacity(64 * 1024, file);
    r.seek(SeekFrom::Start(pos.offset))?;
    let mut found_bytes = 0usize;
    let mut lengths: Vec<u32> = Vec::new();
    while pos.offset < committed {
        if budget.exhausted(out.len(), found_bytes) {
            return Ok(ReadEnd::Budget);
        }
        let mut head = [0u8; RECORD_HEADER];
        r.read_exact(&mut head)?;
        let len = u64::from(u32_at(&head, 0));
        let count = u32_at(&head, 8);
        let lengths_bytes = 4 * u64::from(count);
        if len < RECORD_HEADER as u64 + lengths_bytes || pos.offset + len > committed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed segment record"));
        }
        let mut raw = vec![0u8; lengths_bytes as usize];
        r.read_exact(&mut raw)?;
        lengths.clear();
        lengths.extend((0..count as usize).map(|i| u32_at(&raw, 4 * i)));
        let sum: u64 = lengths.iter().map(|l| u64::from(*l)).sum();
        if RECORD_HEADER as u64 + lengths_bytes + sum != len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed segment record"));
        }
        for (i, l) in lengths.iter().enumerate() {
            let ordinal = pos.base + i as u32;
            if ordinal < pos.next || acked.get(ordinal) {
                r.seek_relative(i64::from(*l))?;
                continue;
            }
            if budget.exhausted(out.len(), found_bytes) {
                pos.next = ordinal;
                return Ok(ReadEnd::Budget);
            }
            let mut event = vec![0u8; *l as usize];
            r.read_exact(&mut event)?;
            found_bytes += event.len();
            out.push((ordinal, event));
        }
        pos.offset += len;
        pos.base += count;
        pos.next = pos.base;
    }
    Ok(ReadEnd::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
    }

    #[test]
    fn bitset_counts_and_ranges() {
        let mut b = Bitset::default();
        for i in [0, 1, 2, 5, 64, 65, 130] {
            assert!(b.set(i));
        }
        assert!(!b.set(5));
        assert_eq!(b.count_below(131), 7);
        assert_eq!(b.count_below(65), 5);
        assert_eq!(b.ranges(131), vec![(0, 3), (5, 6), (64, 66), (130, 131)]);
        let v = b.view_from(64);
        assert!(v.get(65) && !v.get(66) && !v.get(5));
    }

    #[test]
    fn records_frame_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        let mut all = Vec::new();
        let mut buf = Vec::new();
        encode_record(&[b"ab", b"", b"cde"], &mut buf).unwrap();
        assert_eq!(buf.len() as u64, record_len(3, 5));
        all.extend_from_slice(&buf);
        encode_record(&[b"f"], &mut buf).unwrap();
        all.extend_from_slice(&buf);
        std::fs::write(&path, &all).unwrap();
        let s = scan_segment(&path).unwrap();
        assert_eq!((s.valid_len, s.ordinals, s.bad), (all.len() as u64, 4, None));
        let mut torn = all.clone();
        torn.pop();
        std::fs::write(&path, &torn).unwrap();
        let s = scan_segment(&path).unwrap();
        assert_eq!((s.valid_len, s.ordinals), (record_len(3, 5), 3));
        assert!(s.bad.is_some());
    }
}
