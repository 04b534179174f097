use std::collections::{HashMap, VecDeque};

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
    let a = spool.read("a", 10).unwrap();
    assert_eq!(
        a.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![b"1".to_vec(), b"3".to_vec()]
    );
    rt.block_on(spool.submit(Op::Ack("a".into(), vec![a[0].seq]))).unwrap();
    let st = RetryState {
        attempts: 2,
        first_failure_ms: 5,
        next_attempt_ms: 9,
        done: vec![0],
        config: 7,
    };
    rt.block_on(spool.submit(Op::Retry("a".into(), vec![(a[1].seq, st.clone())])))
        .unwrap();
    assert_eq!((spool.depth(), spool.bytes()), (2, 2));
    spool.close();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let a = spool.read("a", 10).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].state, Some(st));
    assert_eq!(spool.read("b", 10).unwrap().len(), 1);
    assert_eq!((spool.depth(), spool.bytes()), (2, 2));
    spool.close();
}

#[test]
fn size_limit_refuses_appends() {
    let (_dir, rt, spool) = open_small(10, 10);
    rt.block_on(spool.append(vec![("a".into(), vec![b'x'; 8])])).unwrap();
    let e = rt
        .block_on(spool.append(vec![("a".into(), vec![b'x'; 8])]))
        .unwrap_err();
    assert!(matches!(e, SpoolError::Full(_)));
    assert!(!spool.is_full());
    spool.close();
}

#[test]
fn a_refused_append_fails_readiness_until_the_spool_drains() {
    let (_dir, rt, spool) = open_small(100, 10);
    rt.block_on(spool.append(vec![("a".into(), vec![b'x'; 95])])).unwrap();
    assert!(!spool.is_full(), "95 of 100 bytes, nothing refused yet");
    assert!(rt.block_on(spool.append(vec![("a".into(), vec![b'x'; 10])])).is_err());
    assert!(spool.is_full(), "an append was refused: not ready");
    let seq = spool.read("a", 1).unwrap()[0].seq;
    rt.block_on(spool.submit(Op::Ack("a".into(), vec![seq]))).unwrap();
    assert!(!spool.is_full(), "drained below 90%: ready again");
    spool.close();
}

#[test]
fn concurrent_appends_cannot_pass_the_limit() {
    let (_dir, rt, spool) = open_small(100, 10);
    let results = rt.block_on(async {
        let a = spool.append(vec![("a".into(), vec![b'x'; 60])]);
        let b = spool.append(vec![("a".into(), vec![b'y'; 60])]);
        tokio::join!(a, b)
    });
    assert_eq!(
        [results.0.is_ok(), results.1.is_ok()].iter().filter(|ok| **ok).count(),
        1
    );
    assert!(spool.bytes() <= 100);
    spool.close();
}

#[test]
fn dead_letters_are_bounded_replayable_and_purgeable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let events: Vec<(String, Vec<u8>)> = (0..7)
        .map(|i| ("a".to_owned(), format!("{{\"n\":{i}}}").into_bytes()))
        .collect();
    rt.block_on(spool.append(events)).unwrap();
    let entries = spool.read("a", 10).unwrap();
    let dead: Vec<(u64, DeadLetter)> = entries.iter().zip(0..).map(|(e, n)| (e.seq, letter("a", n))).collect();
    rt.block_on(spool.submit(Op::Dead("a".into(), dead))).unwrap();
    assert_eq!(spool.depth(), 0);
    assert_eq!(spool.dead_count().unwrap(), 5);
    assert_eq!(spool.dead_dropped(), 2);
    let listed = spool.dead_letters(100, |_| true).unwrap();
    assert_eq!(listed.first().map(|l| l.message.as_str()), Some("bad 6"));
    let oldest_kept = listed.last().map(|l| l.id).unwrap();
    assert_eq!(
        spool.dead_letter(oldest_kept).unwrap().map(|l| l.message),
        Some("bad 2".into())
    );
    let replayed = rt.block_on(spool.submit(Op::Replay(vec![oldest_kept, 999]))).unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(spool.read("a", 10).unwrap()[0].event, b"{\"n\":2}".to_vec());
    let purged = rt
        .block_on(spool.submit(Op::Purge(listed.iter().map(|l| l.id).collect())))
        .unwrap();
    assert_eq!(purged, 4);
    assert_eq!(spool.dead_count().unwrap(), 0);
    spool.close();
}

#[derive(Clone, Debug)]
enum Action {
    Append(Vec<(bool, u8)>),
    Ack(bool, usize),
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => prop::collection::vec((any::<bool>(), any::<u8>()), 0..6).prop_map(Action::Append),
        3 => (any::<bool>(), 0usize..5).prop_map(|(d, n)| Action::Ack(d, n)),
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The spool behaves like one FIFO queue per destination, across reopens.
    #[test]
    fn spool_matches_a_vecdeque_model(actions in prop::collection::vec(action(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let mut spool = Spool::open(dir.path(), LIMITS).unwrap();
        let mut model: HashMap<&str, VecDeque<Vec<u8>>> = HashMap::new();
        for a in actions {
            match a {
                Action::Append(items) => {
                    let batch: Vec<(String, Vec<u8>)> = items.iter().map(|(d, v)| (dest(*d).to_owned(), vec![*v; 1 + (*v as usize % 7)])).collect();
                    for (d, v) in &batch {
                        let key = if d == "a" { "a" } else { "b" };
                        model.entry(key).or_default().push_back(v.clone());
                    }
                    rt.block_on(spool.append(batch)).unwrap();
                }
                Action::Ack(d, n) => {
                    let entries = spool.read(dest(d), n).unwrap();
                    let q = model.entry(dest(d)).or_default();
                    for e in &entries {
                        prop_assert_eq!(Some(&e.event), q.front());
                        q.pop_front();
                    }
                    rt.block_on(spool.submit(Op::Ack(dest(d).into(), entries.iter().map(|e| e.seq).collect()))).unwrap();
                }
                Action::Reopen => {
                    spool.close();
                    spool = Spool::open(dir.path(), LIMITS).unwrap();
                }
            }
            for d in ["a", "b"] {
                let stored: Vec<Vec<u8>> = spool.read(d, usize::MAX).unwrap().into_iter().map(|e| e.event).collect();
                let expected: Vec<Vec<u8>> = model.get(d).map(|q| q.iter().cloned().collect()).unwrap_or_default();
                prop_assert_eq!(stored, expected);
            }
            let total: u64 = model.values().map(|q| q.len() as u64).sum();
            prop_assert_eq!(spool.depth(), total);
        }
        spool.close();
    }
}
