//! Concurrent delivery, black-box: the real `mixpanel-actions` binary as a child
//! process in spool mode with `delivery.concurrency` > 1, and what a mock
//! Mixpanel on loopback received, when, and how many requests at once (see
//! `durability_support`).
//!
//! - overlap: several requests in flight at once, while one profile's (and one
//!   group's) updates still reach Mixpanel in acceptance order and an event's
//!   `$identify` is answered before its `$set` is sent;
//! - a 429 with `Retry-After` pauses the whole destination, every lane;
//! - SIGKILL with many requests in flight loses no event answered 200;
//! - a full disk is survived: 503 + `Retry-After`, `/readyz` fails, the process
//!   keeps running and delivering, and accepts again once space is back;
//! - Mixpanel's latency does not cap throughput.
//!
//! The tests run one at a time (they share two CPU cores and measure time).

#[cfg(test)]
mod durability_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use durability_support::{
    config, destination, ids, join_clients, temp_dir, until, Batch, Behavior, Fate, Load, Mixpanel, Req, Scripted,
    ServerProcess, POLL,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

/// One test at a time: they time things and start processes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Short retries, a generous request timeout, and this many requests in flight
/// at most.
fn delivery(concurrency: usize) -> String {
    format!(
        "request_timeout = \"5s\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"\nconcurrency = {concurrency}"
    )
}

/// The configuration of one destination `main` fed by `key` and sending to
/// `mock`, with `top` and `delivery` lines, `extra` destination lines, and a
/// 20 ms linger.
fn main_config(dir: &Path, top: &str, delivery: &str, key: &str, mock: &Mixpanel, extra: &str) -> PathBuf {
    config(
        dir,
        top,
        delivery,
        "linger = \"20ms\"",
        &[destination("main", &[key], mock, extra)],
    )
}

/// A track event (one `/import` record, insert id = messageId).
fn track_event(message_id: &str, user: &str) -> Value {
    json!({
        "type": "track",
        "userId": user,
        "event": "Delivery Event",
        "messageId": message_id,
        "properties": {"n": 1},
    })
}

/// Identify number `k` of `user`: a `/track` `$identify` whose `$anon_id` is
/// [`anon_id`]`(user, k)`, then an `/engage` `$set` of `{"n": k}` for `user`.
fn identify_k(user: &str, k: u64) -> Value {
    json!({
        "type": "identify",
        "userId": user,
        "anonymousId": anon_id(user, k),
        "messageId": format!("idn-{user}-{k:02}"),
        "traits": {"n": k},
    })
}

fn anon_id(user: &str, k: u64) -> String {
    format!("anon-{user}-{k:02}")
}

/// Group call number `k` for `group`: one `/groups` `$set` of `{"n": k}`
/// (`$group_key` `$group_id`, `$group_id` = `group`).
fn group_k(group: &str, k: u64) -> Value {
    json!({
        "type": "group",
        "userId": "group-member",
        "groupId": group,
        "messageId": format!("grp-{group}-{k:02}"),
        "traits": {"n": k},
    })
}

/// What the mock received for profiles and groups, requests in arrival order.
#[derive(Debug, Default)]
struct Profiles {
    /// `$distinct_id` -> the `$set.n` values of `/engage` records, in arrival
    /// order (a request's records in body order), with their request's `seq`.
    engage: BTreeMap<String, Vec<(u64, u64)>>,
    /// `$group_id` -> the `$set.n` values of `/groups` records, in arrival order.
    groups: BTreeMap<String, Vec<(u64, u64)>>,
    /// `(distinct_id, n)` -> when the first `/engage` request with it arrived.
    engage_arrived: HashMap<(String, u64), Instant>,
    /// `$anon_id` -> when the first answer that accepted its `$identify` was written.
    identify_answered: HashMap<String, Instant>,
    /// Accepted `/engage` `(distinct_id, n)`.
    engage_accepted: HashSet<(String, u64)>,
    /// Accepted `/groups` `(group_id, n)`.
    groups_accepted: HashSet<(String, u64)>,
    /// Accepted `$identify` `$anon_id`s.
    identify_accepted: HashSet<String>,
}

fn n_of(record: &Value) -> Option<u64> {
    record["$set"]["n"].as_u64()
}

fn profiles(log: &[Req]) -> Profiles {
    let mut order: Vec<&Req> = log.iter().collect();
    order.sort_by_key(|r| r.seq);
    let mut p = Profiles::default();
    for r in order {
        let accepted: HashSet<usize> = r.accepted.iter().copied().collect();
        for (i, record) in r.records.iter().enumerate() {
            let ok = accepted.contains(&i);
            match r.path.as_str() {
                "/engage" => {
                    let (Some(user), Some(n)) = (record["$distinct_id"].as_str(), n_of(record)) else {
                        continue;
                    };
                    p.engage.entry(user.to_owned()).or_default().push((n, r.seq));
                    p.engage_arrived.entry((user.to_owned(), n)).or_insert(r.arrived);
                    if ok {
                        p.engage_accepted.insert((user.to_owned(), n));
                    }
                }
                "/groups" => {
                    let (Some(group), Some(n)) = (record["$group_id"].as_str(), n_of(record)) else {
                        continue;
                    };
                    p.groups.entry(group.to_owned()).or_default().push((n, r.seq));
                    if ok {
                        p.groups_accepted.insert((group.to_owned(), n));
                    }
                }
                "/track" => {
                    let Some(anon) = record["properties"]["$anon_id"].as_str() else {
                        continue;
                    };
                    if ok {
                        p.identify_answered.entry(anon.to_owned()).or_insert(r.answered);
                        p.identify_accepted.insert(anon.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    p
}

/// The places where a sequence of `n` values goes down: `(seq, n before, n)`.
fn decreases(values: &[(u64, u64)]) -> Vec<(u64, u64, u64)> {
    values
        .windows(2)
        .filter(|w| w[1].0 < w[0].0)
        .map(|w| (w[1].1, w[0].0, w[1].0))
        .collect()
}

/// The most requests the log shows in flight at once (from arrival and answer
/// instants: a check of [`Mixpanel::max_in_flight`]), and the paths of the
/// requests in flight at that moment.
fn overlap_from_log(log: &[Req]) -> (usize, Vec<String>) {
    let mut edges: Vec<(Instant, i32, usize)> = Vec::with_capacity(log.len() * 2);
    for (i, r) in log.iter().enumerate() {
        edges.push((r.arrived, 1, i));
        edges.push((r.answered, -1, i));
    }
    // Ends before starts at the same instant.
    edges.sort();
    let mut open: HashSet<usize> = HashSet::new();
    let mut peak: Vec<usize> = Vec::new();
    for (_, d, i) in edges {
        if d > 0 {
            open.insert(i);
            if open.len() > peak.len() {
                peak = open.iter().copied().collect();
            }
        } else {
            open.remove(&i);
        }
    }
    peak.sort_unstable();
    let paths = peak
        .iter()
        .filter_map(|&i| log.get(i))
        .map(|r| r.path.clone())
        .collect();
    (peak.len(), paths)
}

// ---------------------------------------------------------------------------
// 1. Overlap and the ordering rule
// ---------------------------------------------------------------------------

const ORDER_USERS: usize = 20;
const ORDER_ROUNDS: u64 = 11;
const ORDER_GROUPS: [&str; 2] = ["g-alpha", "g-beta"];
const ORDER_TRACKS_PER_ROUND: usize = 200;

/// Every answer takes 200 ms, `concurrency = 8`, `batch_size = 50`: while
/// `/import` batches and profile lanes have several requests in flight at once
/// (at least 4 at some moment), each user's eleven `$set`s (`n` = 0..10, accepted
/// in that order) and each group's reach Mixpanel in acceptance order, and an
/// identify's `/engage` is sent only after its `/track` `$identify` was
/// answered. Every event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_overlap_while_per_user_profile_order_holds() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mock = Mixpanel::start(101).await;
    let latency = Duration::from_millis(200);
    mock.set_latency(latency);
    let dir = temp_dir();
    let cfg = main_config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        &delivery(8),
        "wk-order",
        &mock,
        "batch_size = 50",
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();

    // Round k: every user's identify k and every group's call k, among track
    // events; rounds posted one after the other, so acceptance order is k order.
    let users: Vec<String> = (0..ORDER_USERS).map(|u| format!("ord-user-{u:02}")).collect();
    let mut tracks = HashSet::new();
    for k in 0..ORDER_ROUNDS {
        let mut events = Vec::new();
        for (i, user) in users.iter().enumerate() {
            events.push(identify_k(user, k));
            for t in 0..ORDER_TRACKS_PER_ROUND / ORDER_USERS {
                let id = format!("trk-{k:02}-{i:02}-{t:02}");
                tracks.insert(id.clone());
                events.push(track_event(&id, user));
            }
        }
        for group in ORDER_GROUPS {
            events.insert(events.len() / 2, group_k(group, k));
        }
        let answer = http.batch("wk-order", &events).await.expect("post");
        assert_eq!(answer.status, 200, "round {k}: {answer:?}");
    }
    let accepted_in = started.elapsed();

    let complete = |p: &Profiles| {
        users.iter().all(|u| {
            (0..ORDER_ROUNDS)
                .all(|k| p.engage_accepted.contains(&(u.clone(), k)) && p.identify_accepted.contains(&anon_id(u, k)))
        }) && ORDER_GROUPS
            .iter()
            .all(|g| (0..ORDER_ROUNDS).all(|k| p.groups_accepted.contains(&((*g).to_owned(), k))))
    };
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut delivered = false;
    while Instant::now() < deadline {
        if mock.missing(&tracks).is_empty() && mock.inspect(|log| complete(&profiles(log))) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_in = started.elapsed();
    let (p, (log_overlap, peak_paths), requests, by_path) = mock.inspect(|log| {
        let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
        for r in log {
            *by_path.entry(r.path.clone()).or_insert(0) += 1;
        }
        let (overlap, peak) = overlap_from_log(log);
        (profiles(log), (overlap, peak), log.len(), by_path)
    });
    let max_in_flight = mock.max_in_flight();
    let missing_tracks = mock.missing(&tracks).len();

    let mut out_of_order = Vec::new();
    for (user, values) in &p.engage {
        for (seq, before, after) in decreases(values) {
            out_of_order.push(format!(
                "/engage {user}: $set n={after} (request #{seq}) after n={before}"
            ));
        }
    }
    for (group, values) in &p.groups {
        for (seq, before, after) in decreases(values) {
            out_of_order.push(format!(
                "/groups {group}: $set n={after} (request #{seq}) after n={before}"
            ));
        }
    }
    // The /engage of identify (user, k) arrived only after its $identify was answered.
    let mut engage_first = Vec::new();
    for ((user, k), arrived) in &p.engage_arrived {
        match p.identify_answered.get(&anon_id(user, *k)) {
            Some(answered) if answered <= arrived => {}
            Some(answered) => engage_first.push(format!(
                "{user} n={k}: /engage arrived {:?} before its $identify was answered",
                answered.duration_since(*arrived)
            )),
            None => engage_first.push(format!("{user} n={k}: /engage sent, its $identify never accepted")),
        }
    }
    engage_first.sort();
    println!(
        "[overlap] accepted {} events in {accepted_in:?}; delivered: {delivered} at {delivered_in:?}; {requests} \
         requests {by_path:?}; max in flight {max_in_flight} (from the log: {log_overlap}: {peak_paths:?}); latency {latency:?}; \
         {} out-of-order profile/group updates, {} /engage sent before their $identify was answered",
        ORDER_ROUNDS as usize * (ORDER_USERS + ORDER_GROUPS.len() + ORDER_TRACKS_PER_ROUND),
        out_of_order.len(),
        engage_first.len(),
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(
        max_in_flight >= 4,
        "at most {max_in_flight} request(s) in flight at once with concurrency = 8, a 200 ms latency and \
         {requests} requests to make: delivery does not overlap requests"
    );
    assert!(
        out_of_order.is_empty(),
        "updates reached Mixpanel out of acceptance order: {:#?}",
        &out_of_order[..out_of_order.len().min(10)]
    );
    assert!(
        engage_first.is_empty(),
        "an event's /engage overtook its $identify: {:#?}",
        &engage_first[..engage_first.len().min(10)]
    );
    assert!(
        delivered,
        "not everything delivered within 25 s: {missing_tracks} of {} track events missing; /engage accepted {} \
         of {}; $identify accepted {} of {}; /groups accepted {} of {}",
        tracks.len(),
        p.engage_accepted.len(),
        ORDER_USERS as u64 * ORDER_ROUNDS,
        p.identify_accepted.len(),
        ORDER_USERS as u64 * ORDER_ROUNDS,
        p.groups_accepted.len(),
        ORDER_GROUPS.len() as u64 * ORDER_ROUNDS,
    );
    assert!(status.success(), "{status}");
    assert!(
        max_in_flight <= 8,
        "{max_in_flight} HTTP requests in flight at once with delivery.concurrency = 8 (a maximum); at the peak: \
         {peak_paths:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Retry-After pauses the whole destination
// ---------------------------------------------------------------------------

/// How long after the 429 was answered requests already on their way may still
/// arrive (sent before the server read the 429).
const PAUSE_TOLERANCE: Duration = Duration::from_millis(250);
/// No request may arrive from [`PAUSE_TOLERANCE`] after the 429 until this long
/// after it (`Retry-After: 2`, minus a margin).
const PAUSE_AT_LEAST: Duration = Duration::from_millis(1800);

/// `concurrency = 8`, work queued for several lanes and `/import`, several
/// requests in flight; the first request is answered 429 with `Retry-After: 2`,
/// every other OK: from the moment the 429 was answered, no request at all
/// reaches Mixpanel for about 2 s (one Retry-After paused every lane, not only
/// the one that got it), then everything is delivered, without dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pauses_every_lane() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(102).await;
    let dir = temp_dir();
    let cfg = main_config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        &delivery(8),
        "wk-pause",
        &mock,
        "batch_size = 50",
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();

    // Requests are held (received, not answered) until several are in flight;
    // the first to arrive gets the 429.
    mock.hold(true);
    mock.script([Scripted {
        status: 429,
        retry_after: Some(2),
    }]);
    let users: Vec<String> = (0..16).map(|u| format!("pause-user-{u:02}")).collect();
    let mut events = Vec::new();
    let mut tracks = HashSet::new();
    for (i, user) in users.iter().enumerate() {
        events.push(identify_k(user, 0));
        for t in 0..25 {
            let id = format!("pause-trk-{i:02}-{t:02}");
            tracks.insert(id.clone());
            events.push(track_event(&id, user));
        }
    }
    let answer = http.batch("wk-pause", &events).await.expect("post");
    assert_eq!(answer.status, 200, "{answer:?}");
    let t0 = Instant::now();
    while mock.in_flight() < 3 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(POLL).await;
    }
    let held = mock.in_flight();
    mock.hold(false);

    until(Duration::from_secs(10), "the 429 to be answered", || {
        mock.inspect(|log| log.iter().any(|r| r.fate == Fate::TooMany))
    })
    .await;
    let complete = || {
        mock.missing(&tracks).is_empty()
            && mock.inspect(|log| {
                let p = profiles(log);
                users.iter().all(|u| {
                    p.engage_accepted.contains(&(u.clone(), 0)) && p.identify_accepted.contains(&anon_id(u, 0))
                })
            })
    };
    let t1 = Instant::now();
    let mut delivered = false;
    while t1.elapsed() < Duration::from_secs(20) {
        if complete() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (throttled, mut after) = mock.inspect(|log| {
        let throttled = log.iter().find(|r| r.fate == Fate::TooMany).cloned();
        let at = throttled.as_ref().map_or(t0, |r| r.answered);
        let after: Vec<(Duration, String, Fate)> = log
            .iter()
            .filter(|r| r.arrived > at)
            .map(|r| (r.arrived - at, r.path.clone(), r.fate))
            .collect();
        (throttled, after)
    });
    after.sort_by_key(|a| a.0);
    let throttled = throttled.expect("a 429 was answered");
    let in_pause: Vec<&(Duration, String, Fate)> = after
        .iter()
        .filter(|(d, _, _)| *d > PAUSE_TOLERANCE && *d < PAUSE_AT_LEAST)
        .collect();
    let within_tolerance = after.iter().filter(|(d, _, _)| *d <= PAUSE_TOLERANCE).count();
    let first_after_pause = after.iter().find(|(d, _, _)| *d > PAUSE_TOLERANCE).map(|a| a.0);
    let dead = http.dead_letters("").await;
    let stats = mock.stats();
    println!(
        "[retry-after] {held} requests in flight when the mock answered (the 429 went to {}); after the 429: {} \
         requests within {PAUSE_TOLERANCE:?}, {} between {PAUSE_TOLERANCE:?} and {PAUSE_AT_LEAST:?}, the next one \
         {first_after_pause:?} after it; {} requests in all, delivered: {delivered}; dead letters {}",
        throttled.path,
        within_tolerance,
        in_pause.len(),
        stats.requests,
        dead.json["total"],
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(
        held >= 2,
        "only {held} request(s) in flight with concurrency = 8 and work for 16 users and /import: the pause \
         could not be tested across lanes"
    );
    assert!(
        in_pause.is_empty(),
        "Retry-After: 2 on one request, yet {} request(s) reached Mixpanel during the pause: {:?}",
        in_pause.len(),
        &in_pause[..in_pause.len().min(10)]
    );
    assert!(
        delivered,
        "not delivered within 20 s after the 429: {} track events missing",
        mock.missing(&tracks).len()
    );
    assert_eq!(dead.json["total"], 0, "a 429 is not a rejection: {}", dead.text);
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// 3. SIGKILL with many requests in flight
// ---------------------------------------------------------------------------

const KILL_TRACKS: usize = 15_000;
const KILL_USERS: usize = 300;
const KILL_BATCH: usize = 100;
const KILL_KEY: &str = "wk-kill";

/// `concurrency = 16`, 80 ms per answer, `batch_size = 100`, four SDK clients
/// posting track and identify events: SIGKILL while they post and several
/// requests are in flight, restart on the same data directory, the clients
/// resend what was not answered 200: every event answered 200 reaches Mixpanel
/// (`/import` records; `$identify` and `$set` for identifies), duplicates
/// allowed, losses not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_concurrent_delivery_loses_no_acknowledged_event() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = durability_support::seed(0xC0C0_0003);
    let mut rng = StdRng::seed_from_u64(seed);
    let mock = Mixpanel::start(seed).await;
    mock.set_latency(Duration::from_millis(80));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        &delivery(16),
        "linger = \"20ms\"",
        &[destination("main", &[KILL_KEY], &mock, "batch_size = 100")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    // Track events with an identify every 50 events.
    let mut events = Vec::with_capacity(KILL_TRACKS + KILL_USERS);
    let mut user = 0;
    for i in 0..KILL_TRACKS {
        if i % (KILL_TRACKS / KILL_USERS) == 0 && user < KILL_USERS {
            events.push(identify_k(&format!("kill-user-{user:03}"), 0));
            user += 1;
        }
        events.push(track_event(
            &format!("kill-trk-{i:05}"),
            &format!("kill-user-{:03}", i % KILL_USERS),
        ));
    }
    let batches: Vec<Batch> = events
        .chunks(KILL_BATCH)
        .map(|c| Batch {
            write_key: KILL_KEY.into(),
            events: c.to_vec(),
        })
        .collect();
    let total = batches.len();
    let load = Load::new(batches, server.http.clone());
    let clients = load.spawn_clients(4);

    // Kill once some share of the batches is in and several requests are in
    // flight (or after 10 s of waiting for that).
    let target = rng.random_range(total / 5..=total / 2);
    until(Duration::from_secs(30), "ingest to reach the kill point", || {
        load.ok_batches.load(Ordering::SeqCst) >= target
    })
    .await;
    let t0 = Instant::now();
    while mock.in_flight() < 4 && t0.elapsed() < Duration::from_secs(10) && !load.done() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    load.set_target(None);
    let in_flight = mock.in_flight();
    let posting = load.posting.load(Ordering::SeqCst);
    mock.cut();
    server.kill();
    let ok_at_kill = load.ok_batches.load(Ordering::SeqCst);
    let delivered_at_kill = mock.accepted_unique();
    let max_before_kill = mock.max_in_flight();

    let mut server = ServerProcess::start(&cfg).await;
    mock.set_latency(Duration::from_millis(10));
    load.set_target(Some(server.http.clone()));
    join_clients(clients, Duration::from_secs(40)).await;
    let accepted = load.accepted_ids();
    assert_eq!(accepted.len(), events.len(), "every event is answered 200 in the end");
    let tracks: HashSet<String> = accepted
        .iter()
        .filter(|id| id.starts_with("kill-trk-"))
        .cloned()
        .collect();
    let users: Vec<String> = accepted
        .iter()
        .filter_map(|id| id.strip_prefix("idn-").and_then(|u| u.strip_suffix("-00")))
        .map(str::to_owned)
        .collect();
    let missing_profiles = |p: &Profiles| -> Vec<String> {
        users
            .iter()
            .filter(|u| {
                !p.engage_accepted.contains(&((*u).clone(), 0)) || !p.identify_accepted.contains(&anon_id(u, 0))
            })
            .cloned()
            .collect()
    };
    let waited = mock.wait_accepted(&tracks, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let lost_profiles = loop {
        let lost = mock.inspect(|log| missing_profiles(&profiles(log)));
        if lost.is_empty() || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = mock.stats();
    println!(
        "[sigkill/concurrent] seed {seed}: SIGKILL after {ok_at_kill} of {total} batches answered 200 (target \
         {target}), {posting} post(s) under way, {delivered_at_kill} records delivered, {in_flight} request(s) in \
         flight (most at once before: {max_before_kill}); after the restart: tracks delivered {:?}, {} of {} users' \
         $identify/$set missing; {} records accepted twice or more; {} posts retried; total {:?}",
        waited.as_ref().ok(),
        lost_profiles.len(),
        users.len(),
        stats.accepted_duplicates(),
        load.failed_posts.load(Ordering::SeqCst),
        started.elapsed(),
    );
    if let Err(missing) = &waited {
        panic!(
            "{} track events answered 200 never reached Mixpanel (e.g. {:?}); logs after restart:\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            server.logs()
        );
    }
    assert!(
        lost_profiles.is_empty(),
        "{} identifies answered 200 never reached /track and /engage (e.g. {:?})",
        lost_profiles.len(),
        &lost_profiles[..lost_profiles.len().min(5)]
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(
        in_flight >= 4,
        "the kill came with {in_flight} request(s) in flight (most ever {max_before_kill}) with concurrency = 16: \
         the crash did not happen during concurrent delivery"
    );
}

// ---------------------------------------------------------------------------
// 4. A full disk
// ---------------------------------------------------------------------------

/// A tmpfs mounted for one test; unmounted on drop (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8) syntax: `4m`) on `path`, or why not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs { path: path.to_owned() })
        } else {
            Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.path).status();
        if !plain.is_ok_and(|s| s.success()) {
            // Still busy (a process being reaped): detach it now, freed when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Padding that makes each event about 1 KiB, so the disk fills quickly.
fn padded_track(message_id: &str) -> Value {
    let mut e = track_event(message_id, "disk-user");
    e["properties"]["padding"] = json!("x".repeat(1000));
    e
}

/// `data_dir` on a 4 MiB tmpfs (as root; else `spool.max_bytes = 256KiB` on the
/// normal disk, with a note), Mixpanel answering 503 so nothing leaves the spool:
/// ingest ends up answering 503 with `Retry-After`; the process keeps running,
/// `/healthz` 200, `/readyz` 503; once Mixpanel is back the spool drains,
/// `/readyz` is 200 and posts are answered 200 again, and every event answered
/// 200 was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_survivable() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(104).await;
    mock.set_behavior(Behavior::Status(503, "mixpanel is busy".into()));
    let dir = temp_dir();
    let (tmpfs, spool, mode) = match Tmpfs::mount(&dir.path().join("data"), "4m") {
        Ok(t) => (Some(t), "linger = \"20ms\"\nmax_bytes = \"16MiB\"", "tmpfs of 4 MiB"),
        Err(why) => {
            println!("[disk full] SKIP the real disk-full case ({why}); falling back to spool.max_bytes = 256KiB");
            (
                None,
                "linger = \"20ms\"\nmax_bytes = \"256KiB\"",
                "spool.max_bytes = 256KiB",
            )
        }
    };
    let cfg = config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        &delivery(16),
        spool,
        &[destination("main", &["wk-disk"], &mock, "batch_size = 100")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();

    // Fill it: batches of 50 events of about 1 KiB until refused.
    let mut accepted = HashSet::new();
    let mut refused = None;
    for b in 0..1000 {
        let events: Vec<Value> = (0..50).map(|i| padded_track(&format!("disk-{b:04}-{i:02}"))).collect();
        match http.batch("wk-disk", &events).await {
            Ok(a) if a.status == 200 => accepted.extend(ids(&events)),
            Ok(a) if a.status == 503 => {
                refused = Some((events, a));
                break;
            }
            Ok(a) => panic!("unexpected answer {} while filling: {}", a.status, a.text),
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the post failed ({e}) after {} events accepted; server exit status {:?}; logs:\n{}",
                    accepted.len(),
                    server.exited(),
                    tail(&server.logs(), 20)
                );
            }
        }
    }
    let (refused_events, answer) = refused.expect("ingest refused a batch before 1000 batches");
    let retry_after = answer.header("retry-after").and_then(|s| s.parse::<u64>().ok());
    // The refusal must not be the process's last word.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exited = server.exited();
    let healthz = http.get("/healthz").await.map(|a| a.status);
    let readyz_answer = http.get("/readyz").await;
    let readyz = readyz_answer.as_ref().map(|a| a.status).map_err(Clone::clone);
    println!(
        "[disk full] {mode}: refused after {} events accepted: {} (Retry-After {retry_after:?}); then: exited \
         {exited:?}, /healthz {healthz:?}, /readyz {readyz:?}",
        accepted.len(),
        answer.text
    );
    assert!(
        exited.is_none(),
        "the server exited ({exited:?}) when the disk filled up; logs:\n{}",
        tail(&server.logs(), 20)
    );
    assert!(retry_after.is_some_and(|s| s >= 1), "no Retry-After: {answer:?}");
    assert_eq!(answer.json["success"], false, "{answer:?}");
    assert!(!accepted.is_empty(), "nothing was accepted before the disk was full");
    assert_eq!(healthz, Ok(200), "the process is alive");
    assert_eq!(readyz, Ok(503), "/readyz fails while ingest refuses for lack of space");
    let reason = readyz_answer
        .as_ref()
        .map(|a| a.json["code"].clone())
        .unwrap_or_default();
    assert_eq!(reason, "disk_full", "/readyz names the reason: {readyz_answer:?}");

    // Mixpanel is back: the spool drains, readiness and ingest come back.
    mock.set_behavior(Behavior::Ok);
    let drained = mock.wait_accepted(&accepted, Duration::from_secs(30)).await;
    assert!(
        drained.is_ok(),
        "{} events answered 200 not delivered after Mixpanel came back; exited {:?}",
        drained.as_ref().err().map_or(0, Vec::len),
        server.exited()
    );
    let t_ready = Instant::now();
    loop {
        let ready = http.get("/readyz").await.map(|a| a.status);
        if ready == Ok(200) {
            break;
        }
        assert!(
            t_ready.elapsed() < Duration::from_secs(10),
            "/readyz still {ready:?} 10 s after the spool drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = t_ready.elapsed();
    let t0 = Instant::now();
    loop {
        let a = http.batch("wk-disk", &refused_events).await.expect("post");
        if a.status == 200 {
            accepted.extend(ids(&refused_events));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "ingest still refuses after the spool drained: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted_again = t0.elapsed();
    let all = mock.wait_accepted(&accepted, Duration::from_secs(15)).await;
    println!(
        "[disk full] drained in {:?}, /readyz 200 {ready_after:?} later, accepted again after {accepted_again:?}; \
         {} events delivered, {} duplicates",
        drained.ok(),
        accepted.len(),
        mock.stats().accepted_duplicates()
    );
    assert!(all.is_ok(), "lost: {all:?}");
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    drop(server);
    drop(tmpfs);
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// 5. Throughput
// ---------------------------------------------------------------------------

const TP_EVENTS: usize = 12_000;
const TP_BATCH: usize = 50;
const TP_CLIENTS: usize = 8;
/// How long the test waits for delivery after the mock starts answering.
const TP_BOUND: Duration = Duration::from_secs(20);

/// 200 ms per answer, `concurrency = 16`, `batch_size = 50`: 12,000 events
/// posted by 8 clients in batches of 50 as fast as they are accepted (the mock
/// holds its answers meanwhile, so what follows measures delivery alone); once
/// it answers, all are delivered in under a quarter of the 240 x 200 ms = 48 s
/// that one request in flight needs. Many small requests make latency, not the
/// debug build's transform CPU, what bounds one request at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixpanel_latency_does_not_cap_throughput() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(105).await;
    let latency = Duration::from_millis(200);
    mock.set_latency(latency);
    mock.hold(true);
    let dir = temp_dir();
    let cfg = main_config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        "request_timeout = \"30s\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"\nconcurrency = 16",
        "wk-tp",
        &mock,
        "batch_size = 50",
    );
    let mut server = ServerProcess::start(&cfg).await;
    let batches: Vec<Batch> = (0..TP_EVENTS / TP_BATCH)
        .map(|b| Batch {
            write_key: "wk-tp".into(),
            events: (0..TP_BATCH)
                .map(|i| track_event(&format!("tp-{b:03}-{i:02}"), &format!("tp-user-{}", i % 50)))
                .collect(),
        })
        .collect();
    let load = Load::new(batches, server.http.clone());
    let t0 = Instant::now();
    join_clients(load.spawn_clients(TP_CLIENTS), Duration::from_secs(40)).await;
    let ingest = t0.elapsed();
    let accepted = load.accepted_ids();
    assert_eq!(accepted.len(), TP_EVENTS);
    let held = mock.in_flight();

    let released = Instant::now();
    mock.hold(false);
    let deadline = released + TP_BOUND;
    while mock.accepted_unique() < TP_EVENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = released.elapsed();
    let missing = mock.missing(&accepted).len();
    let (imports, max_in_flight) = (
        mock.inspect(|log| log.iter().filter(|r| r.path == "/import").count()),
        mock.max_in_flight(),
    );
    // One request in flight needs this long for these requests.
    let serial = latency * imports as u32;
    println!(
        "[throughput] ingest: {TP_EVENTS} events in {ingest:?} ({:.0} events/s, {TP_CLIENTS} clients x \
         {TP_BATCH}); {held} requests held meanwhile; delivery after release: {} events in {drain:?} ({:.0} \
         events/s), {missing} missing, {imports} /import requests ({serial:?} of latency one at a time), max in \
         flight {max_in_flight}",
        TP_EVENTS as f64 / ingest.as_secs_f64(),
        TP_EVENTS - missing,
        (TP_EVENTS - missing) as f64 / drain.as_secs_f64(),
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert_eq!(missing, 0, "not all delivered within {TP_BOUND:?}");
    assert!(
        max_in_flight <= 16,
        "{max_in_flight} requests in flight at once with delivery.concurrency = 16 (a maximum)"
    );
    assert!(
        max_in_flight >= 4,
        "at most {max_in_flight} requests in flight at once: delivery is not concurrent"
    );
    // One request in flight cannot beat `serial`.
    assert!(
        drain < serial / 4,
        "delivering {TP_EVENTS} events took {drain:?} after the last accept (one request at a time needs \
         {serial:?} of latency alone; max in flight {max_in_flight}): latency caps throughput"
    );
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// 6. What real senders send
// ---------------------------------------------------------------------------

/// With the server's defaults, a messageId as analytics-node makes them (60
/// characters) reaches a strict Mixpanel as a valid `$insert_id` (a UUID v5 of
/// it) instead of a dead letter; events no subscription matches (an `alias`
/// with the presets) are counted per type and said once at INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_insert_ids_are_repaired_and_unmatched_events_are_not_silent() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(107).await;
    mock.enforce_insert_ids(true);
    let dir = temp_dir();
    let cfg = main_config(dir.path(), "", &delivery(4), "wk-sdk", &mock, "");
    let mut server = ServerProcess::start(&cfg).await;
    let node_id = "node-next-1714564800000-3f0c2a5e-8d4b-4c71-9a2e-6b1d0e7f9c3a";
    let alias = |n: u32| json!({"type": "alias", "userId": "u1", "previousId": format!("anon-{n}"), "messageId": format!("alias-{n}")});
    let events = vec![track_event(node_id, "u1"), alias(1), alias(2)];
    let answer = server.http.batch("wk-sdk", &events).await.expect("post");
    assert_eq!(answer.status, 200, "{answer:?}");
    let repaired = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, node_id.as_bytes())
        .hyphenated()
        .to_string();
    let wanted: HashSet<String> = [repaired.clone()].into_iter().collect();
    let got = mock.wait_accepted(&wanted, Duration::from_secs(10)).await;
    assert!(
        got.is_ok(),
        "the repaired id never reached Mixpanel: {got:?}\n{}",
        server.logs()
    );
    let metrics = server.http.metrics().await;
    assert_eq!(
        metrics.get("mixpanel_actions_events_unmatched_total").copied(),
        Some(2.0),
        "{metrics:?}"
    );
    assert_eq!(
        metrics
            .get("mixpanel_actions_events_dead_lettered_total")
            .copied()
            .unwrap_or(0.0),
        0.0,
        "{metrics:?}"
    );
    let said = server.logs().matches("no subscription matches alias events").count();
    assert_eq!(
        said,
        1,
        "one INFO line for the type, not one per event:\n{}",
        server.logs()
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}
