use std::collections::HashMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;

use super::*;

const LIMITS: SpoolLimits = SpoolLimits {
    max_bytes: 1 << 30,
    max_dead_letters: 5,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A spool in a fresh directory with small limits, and a runtime to drive it.
fn open_small(max_bytes: u64, max_dead_letters: u64) -> (tempfile::TempDir, tokio::runtime::Runtime, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(
        dir.path(),
        SpoolLimits {
            max_bytes,
            max_dead_letters,
        },
    )
    .unwrap();
    (dir, rt(), spool)
}

fn letter(dest: &str, n: u64) -> DeadLetter {
    DeadLetter {
        id: 0,
        destination: dest.into(),
        subscription: Some("s".into()),
        reason: "rejected".into(),
        status: Some(400),
        message: format!("bad {n}"),
        event: json!({"n": n}),
        request: None,
        response: None,
        at_ms: 0,
    }
}

/// Everything queued for `dest`, from a fresh cursor.
fn read_all(spool: &Spool, dest: &str) -> Vec<Entry> {
    spool
        .read(dest, &mut Cursor::default(), usize::MAX, usize::MAX)
        .unwrap()
}

fn events(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.event.clone()).collect()
}

fn ids(entries: &[Entry]) -> Vec<EventId> {
    entries.iter().map(|e| e.id).collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Sum of the sizes of the queue's files (segments and journals).
fn disk_bytes(dir: &Path) -> u64 {
    files(&dir.join("queue"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = files(&dir.join("queue"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    s.sort();
    s
}

fn state(n: u32) -> RetryState {
    RetryState {
        attempts: n,
        first_failure_ms: 5,
        next_attempt_ms: 9 + i64::from(n),
        done: vec![0, n],
        config: 7,
    }
}

#[test]
fn append_read_ack_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    rt.block_on(spool.append(vec![
        ("a".into(), b"1".to_vec()),
        ("b".into(), b"2".to_vec()),
        ("a".into(), b"3".to_vec()),
    ]))
    .unwrap();
    let a = read_all(&spool, "a");
    assert_eq!(events(&a), vec![b"1".to_vec(), b"3".to_vec()]);
    assert!(a[0].id < a[1].id);
    assert_eq!(
        rt.block_on(spool.submit(Op::Ack("a".into(), vec![a[0].id]))).unwrap(),
        1
    );
    assert_eq!(
        rt.block_on(spool.submit(Op::Ack("a".into(), vec![a[0].id]))).unwrap(),
        0,
        "acked twice"
    );
    let st = state(2);
    rt.block_on(spool.submit(Op::Retry("a".into(), vec![(a[1].id, st.clone())])))
        .unwrap();
    assert_eq!(spool.depth(), 2);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    assert_eq!(
        spool.queued_destinations().unwrap(),
        vec!["a".to_owned(), "b".to_owned()]
    );
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let a = read_all(&spool, "a");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].event, b"3".to_vec());
    assert_eq!(a[0].state, Some(st));
    assert_eq!(events(&read_all(&spool, "b")), vec![b"2".to_vec()]);
    assert_eq!(spool.depth(), 2);
    assert_eq!(spool.destination_depth("a").unwrap(), 1);
    assert_eq!(spool.destination_depth("zzz").unwrap(), 0);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    spool.close();
}

#[test]
fn size_limit_refuses_appends() {
    // One 8-byte event is a 24-byte record, and 64 bytes of journal room while
    // it is queued. Half of a small limit is kept for the journal: 120 of the
    // 240 bytes are for events, which holds one (88) but not two (176).
    let (_dir, rt, spool) = open_small(240, 10);
    assert_eq!(queue_limit(240), 120);
    rt.block_on(spool.append(vec![("a".into(), vec![b'x'; 8])])).unwrap();
    let e = rt
        .block_on(spool.append(vec![("a".into(), vec![b'x'; 8])]))
        .unwrap_err();
    assert!(
        matches!(e, SpoolError::Full(ref m) if m.contains(
            "24 bytes on disk, limit 240 bytes (120 kept free for the ack journal, and 64 per queued event: 1 queued)"
        )),
        "{e}"
    );
    assert!(!spool.is_full());
    spool.close();
}

#[test]
fn a_refused_append_fails_readiness_until_the_spool_drains() {
    // 160 of the 320 bytes are for events and their journal room: a 92-byte
    // record and its 64 fit (156); one more does not.
    let (dir, rt, spool) = open_small(320, 10);
    rt.block_on(spool.append(vec![("a".into(), vec![b'x'; 76])])).unwrap();
    assert_eq!(spool.bytes(), 92);
    assert!(!spool.is_full(), "92 of 96 bytes, nothing refused yet");
    assert!(rt.block_on(spool.append(vec![("a".into(), vec![b'x'; 10])])).is_err());
    assert!(spool.is_full(), "an append was refused: not ready");
    let id = read_all(&spool, "a")[0].id;
    rt.block_on(spool.submit(Op::Ack("a".into(), vec![id]))).unwrap();
    assert_eq!((spool.bytes(), disk_bytes(dir.path())), (0, 0));
    assert!(!spool.is_full(), "drained below 90%: ready again");
    spool.close();
}

#[test]
fn concurrent_appends_cannot_pass_the_limit() {
    // 200 of the 400 bytes are for events: one 76-byte record and its 64 of
    // room fit, two (280) do not.
    let (_dir, rt, spool) = open_small(400, 10);
    let results = rt.block_on(async {
        let a = spool.append(vec![("a".into(), vec![b'x'; 60])]);
        let b = spool.append(vec![("a".into(), vec![b'y'; 60])]);
        tokio::join!(a, b)
    });
    assert_eq!(
        [results.0.is_ok(), results.1.is_ok()].iter().filter(|ok| **ok).count(),
        1
    );
    assert!(spool.bytes() + STATE_ROOM <= queue_limit(400));
    spool.close();
}

#[test]
fn dead_letters_are_bounded_replayable_and_purgeable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let batch: Vec<(String, Vec<u8>)> = (0..7)
        .map(|i| ("a".to_owned(), format!("{{\"n\":{i}}}").into_bytes()))
        .collect();
    rt.block_on(spool.append(batch)).unwrap();
    let entries = read_all(&spool, "a");
    let dead: Vec<(EventId, DeadLetter)> = entries.iter().zip(0..).map(|(e, n)| (e.id, letter("a", n))).collect();
    assert_eq!(rt.block_on(spool.submit(Op::Dead("a".into(), dead))).unwrap(), 7);
    assert_eq!(spool.depth(), 0);
    assert_eq!(spool.bytes(), 0, "the dead-lettered events' segment is deleted");
    assert_eq!(spool.dead_count().unwrap(), 5);
    assert_eq!(spool.dead_dropped(), 2);
    let listed = spool.dead_letters(100, |_| true).unwrap();
    assert_eq!(listed.first().map(|l| l.message.as_str()), Some("bad 6"));
    let oldest_kept = listed.last().map(|l| l.id).unwrap();
    assert_eq!(
        spool.dead_letter(oldest_kept).unwrap().map(|l| l.message),
        Some("bad 2".into())
    );
    assert_eq!(spool.dead_letter_ids(2, |s| s.reason == "rejected").unwrap().len(), 2);
    let replayed = rt.block_on(spool.submit(Op::Replay(vec![oldest_kept, 999]))).unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(events(&read_all(&spool, "a")), vec![b"{\"n\":2}".to_vec()]);
    assert_eq!(spool.dead_letter(oldest_kept).unwrap(), None);
    let purged = rt
        .block_on(spool.submit(Op::Purge(listed.iter().map(|l| l.id).collect())))
        .unwrap();
    assert_eq!(purged, 4);
    assert_eq!(spool.dead_count().unwrap(), 0);
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    assert_eq!(spool.dead_count().unwrap(), 0);
    assert_eq!(spool.depth(), 1);
    spool.close();
}

#[test]
fn a_cursor_reads_each_event_once_and_only_committed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open_with_segment_bytes(dir.path(), LIMITS, 100).unwrap();
    let mut cursor = Cursor::default();
    assert!(spool.read("a", &mut cursor, 10, usize::MAX).unwrap().is_empty());
    for r in 0..6u8 {
        rt.block_on(spool.append((0..3).map(|i| ("a".to_owned(), vec![r * 3 + i; 20])).collect()))
            .unwrap();
    }
    assert!(segments(dir.path()).len() > 2, "small segments rotate");
    let mut seen = Vec::new();
    loop {
        // max_bytes 1: one event per read, at least one.
        let got = spool.read("a", &mut cursor, 2, 1).unwrap();
        if got.is_empty() {
            break;
        }
        assert_eq!(got.len(), 1);
        seen.extend(events(&got));
    }
    assert_eq!(seen, (0..18u8).map(|i| vec![i; 20]).collect::<Vec<_>>());
    // New events after the cursor; acked ones are skipped by fresh cursors.
    rt.block_on(spool.append(vec![("a".into(), b"new".to_vec())])).unwrap();
    assert_eq!(
        events(&spool.read("a", &mut cursor, 10, usize::MAX).unwrap()),
        vec![b"new".to_vec()]
    );
    let all = read_all(&spool, "a");
    let acked: Vec<EventId> = ids(&all).into_iter().step_by(2).collect();
    rt.block_on(spool.submit(Op::Ack("a".into(), acked.clone()))).unwrap();
    let left = read_all(&spool, "a");
    assert_eq!(left.len(), all.len() - acked.len());
    assert!(left.iter().all(|e| !acked.contains(&e.id)));
    // A cursor into a deleted segment moves on to the next one.
    let mut old = Cursor::default();
    let first = spool.read("a", &mut old, 1, usize::MAX).unwrap();
    let seg = first[0].id.segment;
    let whole: Vec<EventId> = ids(&read_all(&spool, "a"))
        .into_iter()
        .filter(|id| id.segment == seg)
        .collect();
    rt.block_on(spool.submit(Op::Ack("a".into(), whole))).unwrap();
    let next = spool.read("a", &mut old, 1, usize::MAX).unwrap();
    assert!(next[0].id.segment > seg);
    spool.close();
}

#[test]
fn a_torn_tail_is_cut_off_and_earlier_records_survive() {
    for damage in ["truncate", "corrupt"] {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let spool = Spool::open(dir.path(), LIMITS).unwrap();
        for r in 0..3u8 {
            rt.block_on(spool.append(vec![("a".into(), vec![r; 50]), ("a".into(), vec![r + 10; 50])]))
                .unwrap();
        }
        spool.close();
        let seg = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        if damage == "truncate" {
            bytes.truncate(bytes.len() - 3);
        } else {
            let n = bytes.len();
            bytes[n - 10] ^= 0xff;
        }
        std::fs::write(&seg, &bytes).unwrap();
        let spool = Spool::open(dir.path(), LIMITS).unwrap();
        assert_eq!(
            events(&read_all(&spool, "a")),
            vec![vec![0; 50], vec![10; 50], vec![1; 50], vec![11; 50]],
            "{damage}"
        );
        assert_eq!(spool.depth(), 4);
        assert_eq!(spool.bytes(), disk_bytes(dir.path()));
        rt.block_on(spool.append(vec![("a".into(), b"after".to_vec())]))
            .unwrap();
        spool.close();
        let spool = Spool::open(dir.path(), LIMITS).unwrap();
        assert_eq!(
            read_all(&spool, "a").last().map(|e| e.event.clone()),
            Some(b"after".to_vec())
        );
        assert_eq!(spool.depth(), 5);
        spool.close();
    }
}

#[test]
fn a_torn_journal_keeps_the_acks_before_the_tear() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    rt.block_on(spool.append((0..4u8).map(|i| ("a".to_owned(), vec![i])).collect()))
        .unwrap();
    let all = read_all(&spool, "a");
    rt.block_on(spool.submit(Op::Ack("a".into(), vec![all[0].id]))).unwrap();
    rt.block_on(spool.submit(Op::Ack("a".into(), vec![all[1].id]))).unwrap();
    spool.close();
    let journal = files(&dir.path().join("queue"))
        .into_iter()
        .find(|p| p.ends_with("journal"))
        .unwrap();
    let len = std::fs::metadata(&journal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    assert_eq!(
        events(&read_all(&spool, "a")),
        vec![vec![1], vec![2], vec![3]],
        "the second ack is lost: a duplicate, not a loss"
    );
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    spool.close();
}

#[test]
fn acked_segments_are_deleted_and_the_disk_empties() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open_with_segment_bytes(dir.path(), LIMITS, 1000).unwrap();
    for r in 0..10u8 {
        rt.block_on(spool.append((0..10).map(|_| ("a".to_owned(), vec![r; 100])).collect()))
            .unwrap();
    }
    let n = segments(dir.path()).len();
    assert_eq!(n, 10, "one 1 KiB record per segment");
    let all = read_all(&spool, "a");
    let oldest: Vec<EventId> = all[..50].iter().map(|e| e.id).collect();
    // Out of order.
    let mut shuffled = oldest.clone();
    shuffled.reverse();
    rt.block_on(spool.submit(Op::Ack("a".into(), shuffled))).unwrap();
    assert_eq!(segments(dir.path()).len(), 5);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    let rest: Vec<EventId> = all[50..].iter().map(|e| e.id).collect();
    rt.block_on(spool.submit(Op::Ack("a".into(), rest))).unwrap();
    assert!(segments(dir.path()).is_empty());
    assert_eq!((spool.bytes(), disk_bytes(dir.path()), spool.depth()), (0, 0, 0));
    assert!(spool.queued_destinations().unwrap().is_empty());
    // Appends after that start a new segment, with larger ids.
    rt.block_on(spool.append(vec![("a".into(), b"x".to_vec())])).unwrap();
    let e = read_all(&spool, "a");
    assert!(e[0].id > all[99].id);
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    assert_eq!(ids(&read_all(&spool, "a")), ids(&e));
    spool.close();
}

#[test]
fn steady_append_and_ack_cycles_do_not_grow_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let seg = 16 * 1024;
    let spool = Spool::open_with_segment_bytes(dir.path(), LIMITS, seg).unwrap();
    // Append-all, ack-all: nothing left after each round.
    for r in 0..200u32 {
        rt.block_on(spool.append((0..10).map(|_| ("a".to_owned(), vec![r as u8; 200])).collect()))
            .unwrap();
        let all = read_all(&spool, "a");
        rt.block_on(spool.submit(Op::Ack("a".into(), ids(&all)))).unwrap();
        assert_eq!((spool.bytes(), disk_bytes(dir.path())), (0, 0));
    }
    // With a constant backlog of 50 events, acked one round behind.
    let mut max_seen = 0;
    for r in 0..400u32 {
        rt.block_on(spool.append((0..10).map(|_| ("a".to_owned(), vec![r as u8; 200])).collect()))
            .unwrap();
        let all = read_all(&spool, "a");
        if all.len() > 50 {
            rt.block_on(spool.submit(Op::Ack("a".into(), ids(&all[..all.len() - 50]))))
                .unwrap();
        }
        assert_eq!(spool.bytes(), disk_bytes(dir.path()));
        if r >= 100 {
            max_seen = max_seen.max(spool.bytes());
        }
    }
    // At most two segments plus the journal (rewritten from 1 MiB on).
    assert!(max_seen <= 2 * seg + 2 * 1024 + (1 << 20) + 100, "{max_seen}");
    spool.close();
}

#[test]
fn a_large_queue_costs_little_more_than_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let limits = SpoolLimits {
        max_bytes: 64 << 20,
        max_dead_letters: 10,
    };
    let spool = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(segment_bytes(limits.max_bytes), 2 << 20);
    let event = vec![b'e'; 800];
    for _ in 0..100 {
        rt.block_on(spool.append((0..500).map(|_| ("a".to_owned(), event.clone())).collect()))
            .unwrap();
    }
    let payload = |n: u64| n * event.len() as u64;
    assert_eq!(spool.depth(), 50_000);
    assert!(
        spool.bytes() as f64 <= 1.01 * payload(50_000) as f64,
        "{}",
        spool.bytes()
    );
    // Deliver the oldest 60% in order, and a tenth of the rest out of order.
    let all = read_all(&spool, "a");
    for chunk in all[..30_000].chunks(1000) {
        rt.block_on(spool.submit(Op::Ack("a".into(), ids(chunk)))).unwrap();
    }
    let scattered: Vec<EventId> = all[30_000..].iter().step_by(10).map(|e| e.id).collect();
    rt.block_on(spool.submit(Op::Ack("a".into(), scattered.clone())))
        .unwrap();
    let queued = 20_000 - scattered.len() as u64;
    assert_eq!(spool.depth(), queued);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    let ratio = spool.bytes() as f64 / payload(queued) as f64;
    assert!(ratio <= 1.5, "{ratio}");
    spool.close();
}

#[test]
fn the_journal_is_rewritten_as_a_snapshot_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    for _ in 0..60 {
        rt.block_on(spool.append((0..1000).map(|i| ("a".to_owned(), vec![(i % 251) as u8; 4])).collect()))
            .unwrap();
    }
    let all = read_all(&spool, "a");
    // One ack per job keeps the journal records small and many (~25 bytes
    // each): 45k of them pass the 1 MiB rewrite threshold.
    let acked: Vec<EventId> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 0)
        .map(|(_, e)| e.id)
        .collect();
    rt.block_on(async {
        for chunk in acked.chunks(500) {
            let jobs = chunk.iter().map(|id| spool.submit(Op::Ack("a".into(), vec![*id])));
            for r in futures_util::future::join_all(jobs).await {
                r.unwrap();
            }
        }
    });
    let kept: Vec<EventId> = all.iter().step_by(4).map(|e| e.id).collect();
    rt.block_on(spool.submit(Op::Retry("a".into(), vec![(kept[3], state(3))])))
        .unwrap();
    let journal_len = || {
        let p = files(&dir.path().join("queue"))
            .into_iter()
            .find(|p| p.ends_with("journal"))
            .unwrap();
        std::fs::metadata(p).unwrap().len()
    };
    assert!(journal_len() < 1 << 20, "rewritten: {}", journal_len());
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let left = read_all(&spool, "a");
    assert_eq!(ids(&left), kept);
    assert_eq!(left[3].state, Some(state(3)));
    assert_eq!(left.iter().filter(|e| e.state.is_some()).count(), 1);
    spool.close();
}

#[test]
fn an_old_redb_queue_is_migrated_once() {
    let dir = tempfile::tempdir().unwrap();
    let redb_path = dir.path().join("spool.redb");
    let st = state(4);
    super::dead::old::write(
        &redb_path,
        &[
            ("a", 1, b"one"),
            ("b", 2, b"two"),
            ("a", 3, b"three"),
            ("a", 10, b"ten"),
        ],
        &[("a", 3, &st)],
    );
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let a = read_all(&spool, "a");
    assert_eq!(events(&a), vec![b"one".to_vec(), b"three".to_vec(), b"ten".to_vec()]);
    assert_eq!(
        a.iter().map(|e| e.state.clone()).collect::<Vec<_>>(),
        vec![None, Some(st), None]
    );
    assert_eq!(events(&read_all(&spool, "b")), vec![b"two".to_vec()]);
    assert_eq!(spool.depth(), 4);
    rt.block_on(spool.submit(Op::Ack("a".into(), vec![a[0].id]))).unwrap();
    spool.close();
    assert!(!super::dead::old::has_queue(&redb_path));
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    assert_eq!(spool.depth(), 3, "not migrated twice");
    spool.close();
}

/// Unmounts a test filesystem (lazily, whatever still holds it).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_appends_and_recovers_when_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        println!("skipped: mounting a small filesystem needs root");
        return;
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status();
    if !mounted.as_ref().is_ok_and(|s| s.success()) {
        println!("skipped: could not mount a tmpfs ({mounted:?})");
        return;
    }
    let _unmount = Unmount(dir.path().to_owned());
    let rt = rt();
    let spool = Spool::open_with_segment_bytes(dir.path(), LIMITS, 128 * 1024).unwrap();
    let request = || -> Vec<(String, Vec<u8>)> { (0..20).map(|i| ("a".to_owned(), vec![i as u8; 1000])).collect() };
    let fill = |spool: &Spool| {
        for _ in 0..200 {
            match rt.block_on(spool.append(request())) {
                Ok(()) => {}
                Err(SpoolError::Full(m)) => return m,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("a 2 MiB filesystem took 4 MB");
    };
    let msg = fill(&spool);
    assert!(spool.is_full(), "disk full: not ready ({msg})");
    let queued = spool.depth();
    assert!(queued > 0);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()), "the failed group was cut back");
    // What was queued is intact.
    let all = read_all(&spool, "a");
    assert_eq!(all.len() as u64, queued);
    // Dead letters may or may not fit; either way the spool keeps working.
    let dead = rt.block_on(spool.submit(Op::Dead("a".into(), vec![(all[0].id, letter("a", 0))])));
    assert!(matches!(dead, Ok(1) | Err(SpoolError::Full(_))), "{dead:?}");
    // Acks free whole segments; appends succeed again.
    let half: Vec<EventId> = all[..all.len() / 2].iter().map(|e| e.id).collect();
    rt.block_on(spool.submit(Op::Ack("a".into(), half))).unwrap();
    rt.block_on(spool.append(request())).unwrap();
    assert!(!spool.is_full());
    let dead = rt.block_on(spool.submit(Op::Dead("a".into(), vec![(all[all.len() - 1].id, letter("a", 1))])));
    assert_eq!(dead, Ok(1), "dead letters work again after space was freed");
    // Fill again, then drain everything: the spool is usable throughout.
    let _ = fill(&spool);
    let all = read_all(&spool, "a");
    rt.block_on(spool.submit(Op::Ack("a".into(), ids(&all)))).unwrap();
    assert_eq!((spool.depth(), spool.bytes(), disk_bytes(dir.path())), (0, 0, 0));
    rt.block_on(spool.append(request())).unwrap();
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    assert_eq!(spool.depth(), 20);
    spool.close();
}

#[derive(Clone, Debug)]
enum Action {
    Append(Vec<(bool, u8)>),
    Ack(bool, Vec<usize>),
    Retry(bool, usize, u8),
    Dead(bool, usize),
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => prop::collection::vec((any::<bool>(), any::<u8>()), 0..6).prop_map(Action::Append),
        3 => (any::<bool>(), prop::collection::vec(0usize..64, 0..5)).prop_map(|(d, p)| Action::Ack(d, p)),
        2 => (any::<bool>(), 0usize..64, any::<u8>()).prop_map(|(d, p, n)| Action::Retry(d, p, n)),
        1 => (any::<bool>(), 0usize..64).prop_map(|(d, p)| Action::Dead(d, p)),
        1 => Just(Action::Reopen),
    ]
}

fn dest(b: bool) -> &'static str {
    if b {
        "a"
    } else {
        "b"
    }
}

/// A queued event in the model: its bytes and retry state.
type Queued = (Vec<u8>, Option<RetryState>);

/// Reads `dest` from a fresh cursor, `chunk` events at a time.
fn read_chunked(spool: &Spool, dest: &str, chunk: usize) -> Vec<Entry> {
    let mut cursor = Cursor::default();
    let mut out = Vec::new();
    loop {
        let got = spool.read(dest, &mut cursor, chunk, usize::MAX).unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Each destination's queue behaves like a list in acceptance order from
    /// which any events can be removed, with retry states, across reopens.
    #[test]
    fn spool_matches_a_model(actions in prop::collection::vec(action(), 1..30), seg in 40u64..400) {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let open = || Spool::open_with_segment_bytes(dir.path(), LIMITS, seg).unwrap();
        let mut spool = open();
        let mut model: HashMap<&str, Vec<Queued>> = HashMap::new();
        let mut dead = 0u64;
        for (step, a) in actions.into_iter().enumerate() {
            match a {
                Action::Append(items) => {
                    let batch: Vec<(String, Vec<u8>)> = items.iter().map(|(d, v)| (dest(*d).to_owned(), vec![*v; 1 + (*v as usize % 7)])).collect();
                    for (d, v) in &batch {
                        model.entry(dest(d == "a")).or_default().push((v.clone(), None));
                    }
                    rt.block_on(spool.append(batch)).unwrap();
                }
                Action::Ack(d, picks) => {
                    let entries = read_all(&spool, dest(d));
                    let q = model.entry(dest(d)).or_default();
                    if entries.is_empty() {
                        continue;
                    }
                    let mut chosen: Vec<usize> = picks.iter().map(|p| p % entries.len()).collect();
                    let ack: Vec<EventId> = chosen.iter().map(|i| entries[*i].id).collect();
                    chosen.sort_unstable();
                    chosen.dedup();
                    for i in chosen.iter().rev() {
                        q.remove(*i);
                    }
                    let n = rt.block_on(spool.submit(Op::Ack(dest(d).into(), ack))).unwrap();
                    prop_assert_eq!(n, chosen.len() as u64);
                }
                Action::Retry(d, pick, n) => {
                    let entries = read_all(&spool, dest(d));
                    if entries.is_empty() {
                        continue;
                    }
                    let i = pick % entries.len();
                    model.entry(dest(d)).or_default()[i].1 = Some(state(u32::from(n)));
                    rt.block_on(spool.submit(Op::Retry(dest(d).into(), vec![(entries[i].id, state(u32::from(n)))]))).unwrap();
                }
                Action::Dead(d, pick) => {
                    let entries = read_all(&spool, dest(d));
                    if entries.is_empty() {
                        continue;
                    }
                    let i = pick % entries.len();
                    model.entry(dest(d)).or_default().remove(i);
                    rt.block_on(spool.submit(Op::Dead(dest(d).into(), vec![(entries[i].id, letter(dest(d), 0))]))).unwrap();
                    dead += 1;
                }
                Action::Reopen => {
                    spool.close();
                    spool = open();
                }
            }
            for d in ["a", "b"] {
                let stored: Vec<Queued> = read_chunked(&spool, d, 1 + step % 3).into_iter().map(|e| (e.event, e.state)).collect();
                let expected = model.get(d).cloned().unwrap_or_default();
                prop_assert_eq!(&stored, &expected);
                prop_assert_eq!(spool.destination_depth(d).unwrap(), expected.len() as u64);
            }
            let total: u64 = model.values().map(|q| q.len() as u64).sum();
            prop_assert_eq!(spool.depth(), total);
            prop_assert_eq!(spool.bytes(), disk_bytes(dir.path()));
            prop_assert_eq!(spool.dead_count().unwrap(), dead.min(LIMITS.max_dead_letters));
        }
        spool.close();
        let spool = open();
        for d in ["a", "b"] {
            let stored: Vec<Queued> = read_all(&spool, d).into_iter().map(|e| (e.event, e.state)).collect();
            prop_assert_eq!(stored, model.get(d).cloned().unwrap_or_default());
        }
        spool.close();
    }
}

/// What a plan does with each event: `b` batch, `s` suspect alone, `p` poison.
fn plan_shape(guard: &TransformGuard, entries: Vec<Entry>) -> String {
    guard
        .plan(entries)
        .iter()
        .map(|step| match step {
            Step::Batch(es) => "b".repeat(es.len()),
            Step::Alone(_) => "s".into(),
            Step::Poison(_) => "p".into(),
        })
        .collect()
}

#[test]
fn the_transform_guard_survives_a_crash_and_forgets_events_no_longer_queued() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let batch: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| ("d".to_owned(), format!("{{\"n\":{i}}}").into_bytes()))
        .collect();
    rt.block_on(spool.append(batch)).unwrap();
    let entries = read_all(&spool, "d");
    let ids: Vec<EventId> = entries.iter().map(|e| e.id).collect();
    let guard = spool.transform_guard("d");
    assert_eq!(plan_shape(&guard, entries.clone()), "bbbbbb");
    // The process dies while transforming events 1 to 4 (the mark stays set).
    guard.begin(ids[1], ids[4], false);
    drop(guard);
    spool.close();

    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let guard = spool.transform_guard("d");
    assert_eq!(plan_shape(&guard, read_all(&spool, "d")), "bssssb");
    // Suspect 1 passes alone; then it dies with suspect 2 alone, and with
    // suspect 3 alone after event 3 was acked (delivered) by then.
    guard.begin(ids[1], ids[1], true);
    guard.end();
    guard.begin(ids[2], ids[2], true);
    drop(guard);
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let guard = spool.transform_guard("d");
    assert_eq!(plan_shape(&guard, read_all(&spool, "d")), "bbpssb");
    rt.block_on(spool.submit(Op::Ack("d".into(), vec![ids[3]]))).unwrap();
    guard.begin(ids[3], ids[3], true);
    drop(guard);
    spool.close();

    // Event 3 is gone from the queue: not poison, though its mark was set.
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let guard = spool.transform_guard("d");
    assert_eq!(plan_shape(&guard, read_all(&spool, "d")), "bbpsb");
    // Once the poison event is dead-lettered (acked), a start forgets it.
    rt.block_on(spool.submit(Op::Dead("d".into(), vec![(ids[2], letter("d", 2))])))
        .unwrap();
    guard.quarantined(ids[2]);
    guard.begin(ids[4], ids[4], true);
    guard.end();
    drop(guard);
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let guard = spool.transform_guard("d");
    assert_eq!(plan_shape(&guard, read_all(&spool, "d")), "bbbb");
    // Nothing left to remember: the file is gone until the next mark.
    assert!(!dir.path().join("transform").join("64").exists());
    guard.begin(ids[0], ids[1], false);
    assert!(dir.path().join("transform").join("64").exists());
}
