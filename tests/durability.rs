//! Durability tests of spool mode, black-box: the real `mixpanel-actions` binary
//! as a child process, Segment batches in over HTTP, and what a mock Mixpanel on
//! loopback accepted (see `durability_support`).
//!
//! - crash: SIGKILL during delivery and during ingest, restart on the same data
//!   directory: every event answered 200 reaches Mixpanel;
//! - faults: 5xx, 429 + Retry-After, answers after the client timeout and dropped
//!   connections, two projects: nothing lost, nothing sent to the wrong project;
//! - a full spool: 503 `spool_full` + Retry-After and `/readyz` 503, then recovery;
//! - dead letters: strict-mode `failed_records`, 4xx, expiry; list filters, show,
//!   replay, purge;
//! - SIGTERM: exit 0 within `shutdown_timeout`, the rest delivered after restart;
//! - `/metrics`.
//!
//! The random choices are seeded (`DURABILITY_SEED` overrides the seeds). The
//! tests run one at a time (they share two CPU cores and measure time).

#[cfg(test)]
mod durability_support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durability_support::{
    basic, config, destination, identify, ids, join_clients, record_key, seed, temp_dir, track, until, Batch, Behavior,
    Fate, FaultMix, Load, Mixpanel, ServerProcess, DELIVERY, POLL,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::Method;
use serde_json::{json, Value};

/// One test at a time: they time things and start processes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// 1. Crash: SIGKILL and restart
// ---------------------------------------------------------------------------

const CRASH_EVENTS: usize = 20_000;
const CRASH_BATCH: usize = 100;
const CRASH_CLIENTS: usize = 4;
const CRASH_KEY: &str = "wk-crash";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KillWhile {
    /// Ingest finished, deliveries in flight (the mock answers slowly).
    Delivering,
    /// Clients still posting.
    Ingesting,
}

async fn crash_and_restart(when: KillWhile, default_seed: u64) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = seed(default_seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mock = Mixpanel::start(seed).await;
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        DELIVERY,
        "linger = \"20ms\"",
        &[destination("main", &[CRASH_KEY], &mock, "")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let tag = format!("{when:?}").to_lowercase();
    let batches: Vec<Batch> = (0..CRASH_EVENTS / CRASH_BATCH)
        .map(|b| Batch {
            write_key: CRASH_KEY.into(),
            events: (0..CRASH_BATCH)
                .map(|i| track(&format!("crash-{tag}-{:05}", b * CRASH_BATCH + i), CRASH_KEY))
                .collect(),
        })
        .collect();
    let load = Load::new(batches, server.http.clone());
    if when == KillWhile::Delivering {
        // Nothing is answered until ingest is over, then slowly: a 1000-record
        // /import request is in flight most of the time.
        mock.hold(true);
        mock.set_latency(Duration::from_millis(250));
    }
    let mut clients = Some(load.spawn_clients(CRASH_CLIENTS));

    let kill_note = match when {
        KillWhile::Delivering => {
            if let Some(c) = clients.take() {
                join_clients(c, Duration::from_secs(30)).await;
            }
            let ingested_in = started.elapsed();
            mock.hold(false);
            let target = rng.random_range(1..=CRASH_EVENTS - 1500);
            until(Duration::from_secs(30), "deliveries to reach the kill point", || {
                mock.stats().accepted_unique >= target && mock.in_flight() > 0
            })
            .await;
            let in_flight = mock.in_flight();
            // The process dies: what it sent is never answered.
            mock.cut();
            server.kill();
            let note = format!(
                "ingested {CRASH_EVENTS} events in {ingested_in:?}; SIGKILL at {} records delivered \
                 (target {target}) with {in_flight} /import request(s) in flight",
                mock.stats().accepted_unique
            );
            assert!(in_flight > 0, "{note}");
            note
        }
        KillWhile::Ingesting => {
            let total = CRASH_EVENTS / CRASH_BATCH;
            let target = rng.random_range(total / 10..=total * 8 / 10);
            until(Duration::from_secs(30), "ingest to reach the kill point", || {
                load.ok_batches.load(Ordering::SeqCst) >= target
            })
            .await;
            load.set_target(None);
            let posting = load.posting.load(Ordering::SeqCst);
            mock.cut();
            server.kill();
            let ok = load.ok_batches.load(Ordering::SeqCst);
            format!(
                "SIGKILL after {ok} of {total} batches answered 200 (target {target}), {posting} post(s) under \
                 way, {} records delivered",
                mock.stats().accepted_unique
            )
        }
    };

    let mut server = ServerProcess::start(&cfg).await;
    mock.set_latency(Duration::ZERO);
    load.set_target(Some(server.http.clone()));
    // The clients (still running for `Ingesting`) send what was not answered 200.
    if let Some(c) = clients.take() {
        join_clients(c, Duration::from_secs(30)).await;
    }
    let wanted = load.accepted_ids();
    assert_eq!(wanted.len(), CRASH_EVENTS, "every event is answered 200 in the end");
    let waited = mock.wait_accepted(&wanted, Duration::from_secs(30)).await;
    let stats = mock.stats();
    println!(
        "[crash/{tag}] seed {seed}: {kill_note}; after the restart all {} delivered (waited {:?}); \
         duplicates: {} records accepted twice or more, {} received twice or more; {} posts failed and were \
         retried; total {:?}",
        stats.accepted_unique,
        waited.as_ref().ok(),
        stats.accepted_duplicates(),
        stats.received_duplicates(),
        load.failed_posts.load(Ordering::SeqCst),
        started.elapsed(),
    );
    if let Err(missing) = &waited {
        panic!(
            "{} events answered 200 never reached Mixpanel (e.g. {:?}); logs after restart:\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            server.logs()
        );
    }
    assert_eq!(stats.accepted_unique, CRASH_EVENTS, "no record that was never sent");
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// SIGKILL while `/import` requests are in flight, ingest finished: after a
/// restart on the same data directory, every event answered 200 reaches Mixpanel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_no_acknowledged_event() {
    crash_and_restart(KillWhile::Delivering, 0xC8A5_0001).await;
}

/// SIGKILL while clients are posting; they resend what was not answered 200 to
/// the restarted server: every event answered 200 (before or after) reaches Mixpanel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_no_acknowledged_event() {
    crash_and_restart(KillWhile::Ingesting, 0xC8A5_0002).await;
}

// ---------------------------------------------------------------------------
// 2. Faults, two projects
// ---------------------------------------------------------------------------

/// 30% 500, 10% 429 with `Retry-After: 1`, 5% answers after the client timeout,
/// 10% dropped connections for a while, then a healthy Mixpanel; two
/// destinations with their own keys, tokens and secrets (and one key feeding
/// both): every event answered 200 is accepted by its project(s), and no record
/// ever reaches Mixpanel with another project's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_and_never_cross_projects() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = seed(0xFA17);
    let mock = Mixpanel::start(seed).await;
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        "request_timeout = \"300ms\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"",
        "linger = \"20ms\"",
        &[
            destination("alpha", &["wk-alpha", "wk-both"], &mock, "batch_size = 50"),
            destination("beta", &["wk-beta", "wk-both"], &mock, "batch_size = 50"),
        ],
    );
    let mut server = ServerProcess::start(&cfg).await;
    mock.set_behavior(Behavior::Faults(FaultMix {
        p500: 0.30,
        p429: 0.10,
        p_slow: 0.05,
        p_drop: 0.10,
        slow: Duration::from_millis(700),
    }));

    // Per key: track events, plus identify events for the two single-project
    // keys; the keys' batches interleaved.
    let mut per_key = Vec::new();
    let mut users: HashMap<&str, Vec<String>> = HashMap::new();
    for (key, tracks, identifies) in [("wk-alpha", 600, 30), ("wk-beta", 600, 30), ("wk-both", 300, 0)] {
        let mut events: Vec<Value> = (0..tracks).map(|i| track(&format!("{key}-t{i:04}"), key)).collect();
        for i in 0..identifies {
            let user = format!("{key}-user{i:03}");
            events.insert(i * 20, identify(&user, key));
            users.entry(key).or_default().push(user);
        }
        let chunks: VecDeque<Batch> = events
            .chunks(50)
            .map(|chunk| Batch {
                write_key: key.into(),
                events: chunk.to_vec(),
            })
            .collect();
        per_key.push(chunks);
    }
    let mut batches = Vec::new();
    while per_key.iter().any(|q| !q.is_empty()) {
        batches.extend(per_key.iter_mut().filter_map(VecDeque::pop_front));
    }
    let load = Load::new(batches, server.http.clone());
    let clients = load.spawn_clients(3);

    // Faults until the load is in, every kind of fault happened and 5 s passed
    // (at most 15 s), then Mixpanel recovers.
    let kinds = [Fate::Answered(500), Fate::TooMany, Fate::Slow, Fate::Dropped];
    until(Duration::from_secs(30), "the fault phase to end", || {
        let stats = mock.stats();
        let every_kind = kinds.iter().all(|&k| stats.fate(k) > 0);
        (load.done() && every_kind && started.elapsed() > Duration::from_secs(5))
            || started.elapsed() > Duration::from_secs(15)
    })
    .await;
    mock.set_behavior(Behavior::Ok);
    let faults = mock.stats();
    join_clients(clients, Duration::from_secs(20)).await;

    let secret = |dest: &str| basic(&format!("sec-{dest}:"));
    let project_of_key = |key: &str| match key {
        "wk-alpha" => vec!["alpha"],
        "wk-beta" => vec!["beta"],
        "wk-both" => vec!["alpha", "beta"],
        _ => vec![],
    };
    // What each project must end up with: insert ids (/import) and users (/track
    // $identify, /engage).
    let mut want: HashMap<&str, (HashSet<String>, HashSet<String>)> = HashMap::new();
    for key in ["wk-alpha", "wk-beta", "wk-both"] {
        for project in project_of_key(key) {
            let entry = want.entry(project).or_default();
            entry.0.extend(load.accepted_for(key));
            for user in users.get(key).into_iter().flatten() {
                entry.0.remove(&format!("msg-{user}"));
                entry.1.insert(user.clone());
            }
        }
    }
    // What each project got: (/import insert ids, /track $identify users, /engage users).
    let got = || {
        mock.inspect(|log| {
            let mut got: HashMap<String, [HashSet<String>; 3]> = HashMap::new();
            for r in log {
                let project = match r.path.as_str() {
                    "/import" => ["alpha", "beta"]
                        .into_iter()
                        .find(|p| r.header("authorization") == Some(secret(p).as_str())),
                    "/track" => r.records.first().and_then(|x| x["properties"]["token"].as_str()),
                    _ => r.records.first().and_then(|x| x["$token"].as_str()),
                }
                .map(|p| p.trim_start_matches("tok-").to_owned())
                .unwrap_or_default();
                let slot = got.entry(project).or_default();
                for record in r.accepted_records() {
                    match r.path.as_str() {
                        "/import" => slot[0].insert(record_key(record)),
                        "/track" => {
                            slot[1].insert(record["properties"]["$identified_id"].as_str().unwrap_or("").into())
                        }
                        _ => slot[2].insert(record_key(record)),
                    };
                }
            }
            got
        })
    };
    let complete = |got: &HashMap<String, [HashSet<String>; 3]>| {
        want.iter().all(|(project, (inserts, users))| {
            got.get(*project)
                .is_some_and(|[i, t, e]| inserts.is_subset(i) && users.is_subset(t) && users.is_subset(e))
        })
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !complete(&got()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let got = got();
    if waited.is_err() {
        for (project, (inserts, users)) in &want {
            let [i, t, e] = got.get(*project).cloned().unwrap_or_default();
            eprintln!(
                "{project}: {} of {} events missing (e.g. {:?}), {} of {} $identify missing, {} /engage missing",
                inserts.difference(&i).count(),
                inserts.len(),
                inserts.difference(&i).take(3).collect::<Vec<_>>(),
                users.difference(&t).count(),
                users.len(),
                users.difference(&e).count(),
            );
        }
        panic!("events answered 200 were lost; logs:\n{}", server.logs());
    }

    // Every record of every request (whatever its fate) carried its own project's
    // credentials.
    let misrouted: Vec<String> = mock.inspect(|log| {
        let mut bad = Vec::new();
        for r in log {
            for record in &r.records {
                let (key, credential_ok) = match r.path.as_str() {
                    "/import" => {
                        let key = record["properties"]["wk"].as_str().unwrap_or("?");
                        let ok = project_of_key(key)
                            .iter()
                            .any(|p| r.header("authorization") == Some(secret(p).as_str()));
                        (key.to_owned(), ok)
                    }
                    "/track" => {
                        let user = record["properties"]["$identified_id"].as_str().unwrap_or("?");
                        let key = user.split("-user").next().unwrap_or("?");
                        let token = record["properties"]["token"].as_str().unwrap_or("");
                        (
                            key.to_owned(),
                            project_of_key(key).iter().any(|p| token == format!("tok-{p}")),
                        )
                    }
                    _ => {
                        let key = record["$set"]["wk"].as_str().unwrap_or("?");
                        let token = record["$token"].as_str().unwrap_or("");
                        (
                            key.to_owned(),
                            project_of_key(key).iter().any(|p| token == format!("tok-{p}")),
                        )
                    }
                };
                if !credential_ok {
                    bad.push(format!(
                        "{} record of {key} sent with the wrong credentials: {record}",
                        r.path
                    ));
                }
            }
        }
        bad
    });
    assert!(
        misrouted.is_empty(),
        "{} misrouted, e.g. {:?}",
        misrouted.len(),
        &misrouted[..misrouted.len().min(3)]
    );
    let total = mock.stats();
    // Accepted more than once by the same project.
    let (accepted, duplicates, received_twice) = mock.inspect(|log| {
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        let mut received: HashMap<(String, String), usize> = HashMap::new();
        for r in log.iter().filter(|r| r.path == "/import") {
            let auth = r.header("authorization").unwrap_or("").to_owned();
            for record in r.accepted_records() {
                *seen.entry((auth.clone(), record_key(record))).or_insert(0) += 1;
            }
            for record in &r.records {
                *received.entry((auth.clone(), record_key(record))).or_insert(0) += 1;
            }
        }
        let records: usize = seen.values().sum();
        let received_records: usize = received.values().sum();
        (records, records - seen.len(), received_records - received.len())
    });
    println!(
        "[faults] seed {seed}: fault phase {} requests: {} x 500, {} x 429, {} slow, {} dropped; \
         in the end {} requests, {} /import records accepted, {} of them duplicates (same project); \
         {} records received more than once (any answer); {} posts retried; {:?}",
        faults.requests,
        faults.fate(Fate::Answered(500)),
        faults.fate(Fate::TooMany),
        faults.fate(Fate::Slow),
        faults.fate(Fate::Dropped),
        total.requests,
        accepted,
        duplicates,
        received_twice,
        load.failed_posts.load(Ordering::SeqCst),
        started.elapsed(),
    );
    for kind in kinds {
        assert!(faults.fate(kind) > 0, "no {kind:?} during the fault phase: {faults:?}");
    }
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// 3. A full spool
// ---------------------------------------------------------------------------

/// `spool.max_bytes = 64KiB` and Mixpanel down: ingest answers 503 `spool_full`
/// with `Retry-After` and `/readyz` 503; once Mixpanel is back and the spool
/// drained, ingest answers 200 again and every event answered 200 was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_refuses_then_recovers_without_loss() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(3).await;
    mock.set_behavior(Behavior::Status(500, "mixpanel is down".into()));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"\nmax_bytes = \"64KiB\"",
        &[destination("main", &["wk-full"], &mock, "")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let mut problems = Vec::new();

    // Fill it, one SDK posting batches of 20 events until refused.
    let mut accepted = HashSet::new();
    let mut refused = None;
    for b in 0..200 {
        let events: Vec<Value> = (0..20)
            .map(|i| track(&format!("full-{b:03}-{i:02}"), "wk-full"))
            .collect();
        let answer = http.batch("wk-full", &events).await.expect("post");
        match answer.status {
            200 => accepted.extend(ids(&events)),
            503 => {
                refused = Some((events, answer));
                break;
            }
            other => panic!("unexpected answer {other}: {}", answer.text),
        }
    }
    let (refused_events, answer) = refused.expect("the spool filled up within 200 batches");
    println!(
        "[full] refused after {} events accepted: {}",
        accepted.len(),
        answer.text
    );
    assert_eq!(answer.json["code"], "spool_full", "{answer:?}");
    assert_eq!(answer.json["success"], false, "{answer:?}");
    let retry_after = answer.header("retry-after").and_then(|s| s.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s >= 1), "no Retry-After: {answer:?}");
    let ready_batch_refused = http.get("/readyz").await.expect("readyz");
    // Top it up with single events until even one event is refused.
    let mut single_refused = None;
    for i in 0..100 {
        let event = track(&format!("full-single-{i:02}"), "wk-full");
        let answer = http.batch("wk-full", std::slice::from_ref(&event)).await.expect("post");
        if answer.status == 200 {
            accepted.extend(ids(std::slice::from_ref(&event)));
        } else {
            assert_eq!(answer.json["code"], "spool_full", "{answer:?}");
            single_refused = Some(answer);
            break;
        }
    }
    let single_refused = single_refused.expect("a single event refused within 100");
    let metrics = http.metrics().await;
    let spool_bytes = metrics.get("mixpanel_actions_spool_bytes").copied().unwrap_or(-1.0);
    let ready = http.get("/readyz").await.expect("readyz");
    println!(
        "[full] {} events accepted; /readyz {} once a batch was refused, {} once a single event was refused \
         ({}); spool bytes {spool_bytes} of {}",
        accepted.len(),
        ready_batch_refused.status,
        ready.status,
        single_refused.json["message"],
        64 * 1024
    );
    if ready.status == 503 {
        assert_eq!(ready.json["code"], "spool_full", "/readyz names the reason: {ready:?}");
    } else {
        problems.push(format!(
            "/readyz answered {} ({}) while ingest refuses even a single event with 503 spool_full ({}); \
             spool bytes {spool_bytes} of {}: an append is refused when bytes + size > max_bytes, but readiness \
             fails only when bytes >= max_bytes",
            ready.status,
            ready.text,
            single_refused.json["message"],
            64 * 1024
        ));
    }
    if spool_bytes > 64.0 * 1024.0 {
        problems.push(format!("spool holds {spool_bytes} bytes, over max_bytes"));
    }
    // Still refused while nothing drains.
    let again = http.batch("wk-full", &refused_events).await.expect("post");
    assert_eq!(again.status, 503, "{again:?}");
    assert!(
        metrics
            .get("mixpanel_actions_events_refused_spool_full_total")
            .is_some_and(|&n| n >= 20.0),
        "{metrics:?}"
    );

    // Mixpanel is back: the spool drains, ingest accepts again.
    mock.set_behavior(Behavior::Ok);
    let drained = mock.wait_accepted(&accepted, Duration::from_secs(30)).await;
    assert!(drained.is_ok(), "lost after the spool was full: {drained:?}");
    let mut took = None;
    let t0 = Instant::now();
    while took.is_none() {
        let answer = http.batch("wk-full", &refused_events).await.expect("post");
        if answer.status == 200 {
            took = Some(t0.elapsed());
        } else {
            assert!(t0.elapsed() < Duration::from_secs(10), "still refused: {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    accepted.extend(ids(&refused_events));
    let ready = http.get("/readyz").await.expect("readyz");
    assert_eq!(ready.status, 200, "{ready:?}");
    let all = mock.wait_accepted(&accepted, Duration::from_secs(15)).await;
    assert!(all.is_ok(), "lost: {all:?}");
    println!(
        "[full] drained in {:?}; accepted again after {took:?}; {} events delivered, {} duplicates",
        drained.ok(),
        accepted.len(),
        mock.stats().accepted_duplicates()
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---------------------------------------------------------------------------
// 4. Dead letters
// ---------------------------------------------------------------------------

/// Strict-mode `failed_records` and a 401 become dead letters with reason
/// `rejected`, the message, the record sent and Mixpanel's answer; the list
/// filters by destination and reason; show one; purge one destination's; replay
/// the other's once Mixpanel accepts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_become_dead_letters_that_can_be_listed_replayed_and_purged() {
    let _serial = SERIAL.lock().await;
    let strict = Mixpanel::start(41).await;
    let denied = Mixpanel::start(42).await;
    strict.reject(["dl-s-1".to_owned(), "dl-s-3".to_owned()]);
    denied.set_behavior(Behavior::Status(401, "Invalid API secret".into()));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"",
        &[
            destination("strict", &["wk-s"], &strict, ""),
            destination("denied", &["wk-u"], &denied, ""),
        ],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let s_events: Vec<Value> = (0..5).map(|i| track(&format!("dl-s-{i}"), "wk-s")).collect();
    let u_events: Vec<Value> = (0..4).map(|i| track(&format!("dl-u-{i}"), "wk-u")).collect();
    assert_eq!(http.batch("wk-s", &s_events).await.expect("post").status, 200);
    assert_eq!(http.batch("wk-u", &u_events).await.expect("post").status, 200);

    let t0 = Instant::now();
    let listed = loop {
        let list = http.dead_letters("").await;
        if list.json["total"] == 6 {
            break list;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "dead letters: {}", list.text);
        tokio::time::sleep(POLL).await;
    };
    let delivered: HashSet<String> = ["dl-s-0", "dl-s-2", "dl-s-4"].map(String::from).into();
    assert!(strict.wait_accepted(&delivered, Duration::from_secs(5)).await.is_ok());
    assert_eq!(
        listed.json["dead_letters"].as_array().map(Vec::len),
        Some(6),
        "{}",
        listed.text
    );

    // Strict mode: the two refused records, with the request and the answer.
    let list = http.dead_letters("destination=strict").await;
    let letters = list.json["dead_letters"].as_array().cloned().unwrap_or_default();
    let mut refused: Vec<&str> = letters
        .iter()
        .filter_map(|d| d["event"]["messageId"].as_str())
        .collect();
    refused.sort_unstable();
    assert_eq!(refused, ["dl-s-1", "dl-s-3"], "{}", list.text);
    for d in &letters {
        let id = d["event"]["messageId"].as_str().unwrap_or("");
        assert_eq!(d["destination"], "strict");
        assert_eq!(d["reason"], "rejected", "{d}");
        assert_eq!(d["status"], 400, "{d}");
        assert!(
            d["message"]
                .as_str()
                .is_some_and(|m| m.contains("mock rejected record")),
            "the message is Mixpanel's: {d}"
        );
        assert_eq!(d["request"]["properties"]["$insert_id"], id, "the record sent: {d}");
        assert_eq!(d["request"]["event"], "Durable Event", "{d}");
        assert_eq!(d["response"]["status"], 400, "Mixpanel's answer: {d}");
        assert!(
            d["response"].to_string().contains("mock rejected record"),
            "Mixpanel's answer: {d}"
        );
        assert_eq!(d["subscription"], "Track Calls", "{d}");
    }
    println!("[dead letters] strict-mode rejection: {}", letters[0]);
    // The 401: every event of the request.
    let list = http.dead_letters("destination=denied&reason=rejected").await;
    let letters = list.json["dead_letters"].as_array().cloned().unwrap_or_default();
    assert_eq!(letters.len(), 4, "{}", list.text);
    for d in &letters {
        assert_eq!(d["destination"], "denied");
        assert_eq!(d["status"], 401, "{d}");
        assert_eq!(d["message"], "Invalid API secret", "{d}");
        assert_eq!(d["response"]["status"], 401, "{d}");
        assert!(d["request"]["properties"]["$insert_id"].is_string(), "{d}");
    }
    // Filters and the limit.
    assert_eq!(
        http.dead_letters("reason=expired").await.json["dead_letters"],
        json!([])
    );
    let rejected = http.dead_letters("reason=rejected").await;
    assert_eq!(rejected.json["dead_letters"].as_array().map(Vec::len), Some(6));
    let page = http.dead_letters("limit=2").await;
    assert_eq!(page.json["dead_letters"].as_array().map(Vec::len), Some(2));
    assert_eq!(page.json["total"], 6);
    assert_eq!(
        http.dead_letters("destination=nope").await.json["dead_letters"],
        json!([])
    );

    // One letter by id; an unknown id; no token.
    let first = &letters[0];
    let id = first["id"].as_u64().expect("id");
    let shown = http
        .admin(Method::GET, &format!("/admin/dead-letters/{id}"), None)
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(&shown.json, first);
    let unknown = http.admin(Method::GET, "/admin/dead-letters/987654", None).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let anonymous = http.get("/admin/dead-letters").await.expect("get");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");

    // Purge the 401s; replay the strict ones once Mixpanel takes them.
    let purged = http
        .admin(
            Method::DELETE,
            "/admin/dead-letters",
            Some(json!({"destination": "denied"})),
        )
        .await;
    assert_eq!(purged.json["purged"], 4, "{purged:?}");
    let left = http.dead_letters("").await;
    assert_eq!(left.json["total"], 2, "{}", left.text);
    strict.clear_rejects();
    let replayed = http
        .admin(
            Method::POST,
            "/admin/dead-letters/replay",
            Some(json!({"destination": "strict"})),
        )
        .await;
    assert_eq!(replayed.json["replayed"], 2, "{replayed:?}");
    let back: HashSet<String> = ["dl-s-1", "dl-s-3"].map(String::from).into();
    let waited = strict.wait_accepted(&back, Duration::from_secs(10)).await;
    assert!(waited.is_ok(), "replayed events not delivered: {waited:?}");
    assert_eq!(http.dead_letters("").await.json["total"], 0);
    assert_eq!(denied.stats().accepted_unique, 0);
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// `spool.max_age = 1s` and Mixpanel always 500: the events become dead letters
/// with reason `expired`; replay with `{}` once Mixpanel is back delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_events_become_dead_letters_and_replay_delivers_them() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(43).await;
    mock.set_behavior(Behavior::Status(500, "mixpanel is down".into()));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"\nmax_age = \"1s\"",
        &[destination("main", &["wk-exp"], &mock, "batch_size = 3")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let events: Vec<Value> = (0..7).map(|i| track(&format!("exp-{i}"), "wk-exp")).collect();
    assert_eq!(http.batch("wk-exp", &events).await.expect("post").status, 200);
    let t0 = Instant::now();
    let list = loop {
        let list = http.dead_letters("reason=expired").await;
        if list.json["dead_letters"].as_array().map(Vec::len) == Some(7) {
            break list;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", list.text);
        tokio::time::sleep(POLL).await;
    };
    let expired_after = t0.elapsed();
    for d in list.json["dead_letters"].as_array().into_iter().flatten() {
        assert_eq!(d["destination"], "main");
        assert_eq!(d["reason"], "expired");
        assert!(
            d["message"].as_str().is_some_and(|m| m.contains("HTTP 500")),
            "the last error is kept: {d}"
        );
        assert!(
            d["event"]["messageId"].as_str().is_some_and(|m| m.starts_with("exp-")),
            "{d}"
        );
    }
    assert!(
        expired_after >= Duration::from_millis(900),
        "expired after {expired_after:?}, before max_age"
    );
    assert_eq!(
        http.dead_letters("reason=rejected").await.json["dead_letters"],
        json!([])
    );
    let metrics = http.metrics().await;
    assert_eq!(metrics.get("mixpanel_actions_spool_depth"), Some(&0.0), "{metrics:?}");
    let attempts = mock.stats().requests;

    mock.set_behavior(Behavior::Ok);
    let replayed = http
        .admin(Method::POST, "/admin/dead-letters/replay", Some(json!({})))
        .await;
    assert_eq!(replayed.status, 200, "{replayed:?}");
    assert_eq!(replayed.json["replayed"], 7, "{replayed:?}");
    let wanted: HashSet<String> = ids(&events).collect();
    let waited = mock.wait_accepted(&wanted, Duration::from_secs(10)).await;
    assert!(waited.is_ok(), "replayed events not delivered: {waited:?}");
    assert_eq!(http.dead_letters("").await.json["total"], 0);
    // Purging nothing is fine.
    let purged = http.admin(Method::DELETE, "/admin/dead-letters", Some(json!({}))).await;
    assert_eq!(purged.json["purged"], 0, "{purged:?}");
    println!("[expiry] expired after {expired_after:?} and {attempts} attempts; replayed and delivered");
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// The attempts counted in an `expired` dead letter's message.
fn attempts(letter: &Value) -> u64 {
    letter["message"]
        .as_str()
        .and_then(|m| m.strip_prefix("gave up after "))
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds from an event's `receivedAt` to its dead letter.
fn age_at_death_ms(letter: &Value) -> i64 {
    let received = letter["event"]["receivedAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_millis());
    letter["at_ms"].as_i64().unwrap_or(0) - received
}

/// `max_age` bounds how long an accepted event can wait while Mixpanel fails,
/// for every event, not only for the batch at the head of the queue: with
/// `max_age = 1s` and four batches queued, every event is a dead letter within
/// about a second of `max_age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_expires_events_queued_behind_a_failing_batch() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(44).await;
    mock.set_behavior(Behavior::Status(500, "mixpanel is down".into()));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"\nmax_age = \"1s\"",
        &[destination("main", &["wk-hol"], &mock, "batch_size = 2")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let events: Vec<Value> = (0..8).map(|i| track(&format!("hol-{i}"), "wk-hol")).collect();
    assert_eq!(http.batch("wk-hol", &events).await.expect("post").status, 200);
    let t0 = Instant::now();
    let list = loop {
        let list = http.dead_letters("reason=expired").await;
        if list.json["dead_letters"].as_array().map(Vec::len) == Some(8) {
            break list;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", list.text);
        tokio::time::sleep(POLL).await;
    };
    let mut ages: Vec<(String, i64, u64)> = list.json["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let id = d["event"]["messageId"].as_str().unwrap_or("").to_owned();
            (id, age_at_death_ms(d), attempts(d))
        })
        .collect();
    ages.sort();
    println!("[max_age] (messageId, ms from receivedAt to dead letter, attempts): {ages:?}");
    let (server_status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(server_status.success());
    let late: Vec<_> = ages.iter().filter(|(_, ms, _)| *ms > 2_000).collect();
    assert!(
        late.is_empty(),
        "max_age = 1s, yet these events waited over 2 s before expiring: {late:?} (each batch starts \
         aging only at its own first attempt, which waits for the batches before it to expire)"
    );
}

/// The retry state (attempts, first failure) is on disk: after a SIGKILL and a
/// restart, an event keeps aging from its first failure instead of starting
/// over, and its attempt count continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_schedule_survives_sigkill() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(45).await;
    mock.set_behavior(Behavior::Status(500, "mixpanel is down".into()));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"\nmax_age = \"3s\"",
        &[destination("main", &["wk-rs"], &mock, "")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let events: Vec<Value> = (0..5).map(|i| track(&format!("rs-{i}"), "wk-rs")).collect();
    assert_eq!(server.http.batch("wk-rs", &events).await.expect("post").status, 200);
    until(Duration::from_secs(5), "a first attempt", || mock.stats().requests >= 1).await;
    let first_failure = Instant::now();
    until(Duration::from_secs(10), "fifteen attempts", || {
        mock.stats().requests >= 15
    })
    .await;
    mock.cut();
    server.kill();
    let before_kill = mock.stats().requests as u64;
    let killed_after = first_failure.elapsed();

    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let list = loop {
        let list = http.dead_letters("reason=expired").await;
        if list.json["dead_letters"].as_array().map(Vec::len) == Some(5) {
            break list;
        }
        assert!(first_failure.elapsed() < Duration::from_secs(20), "{}", list.text);
        tokio::time::sleep(POLL).await;
    };
    let expired_after = first_failure.elapsed();
    let counted: Vec<u64> = list.json["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(attempts)
        .collect();
    println!(
        "[retry state] killed {killed_after:?} after the first failure, after {before_kill} attempts; \
         expired {expired_after:?} after the first failure with attempt counts {counted:?} ({} attempts in all)",
        mock.stats().requests
    );
    // Counting from zero after the restart, no event could have more attempts
    // than the requests made since.
    let after_restart = mock.stats().requests as u64 - before_kill;
    assert!(
        counted.iter().all(|&n| n > after_restart),
        "attempt counts {counted:?} restarted after the crash ({before_kill} requests before it, \
         {after_restart} after)"
    );
    assert!(
        expired_after < Duration::from_millis(3_000 + 1_200),
        "expired {expired_after:?} after the first failure with max_age = 3s: the age restarted after the crash"
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// Events that failed together are retried together: one request per retry
/// round for a batch accepted in one piece, not one per event's jittered
/// schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_retried_as_one_batch() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(46).await;
    mock.set_behavior(Behavior::Status(500, "mixpanel is down".into()));
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"",
        &[destination("main", &["wk-rt"], &mock, "")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let events: Vec<Value> = (0..100).map(|i| track(&format!("rt-{i:03}"), "wk-rt")).collect();
    assert_eq!(server.http.batch("wk-rt", &events).await.expect("post").status, 200);
    until(Duration::from_secs(10), "twenty failed requests", || {
        mock.stats().requests >= 20
    })
    .await;
    mock.set_behavior(Behavior::Ok);
    let wanted: HashSet<String> = ids(&events).collect();
    assert!(mock.wait_accepted(&wanted, Duration::from_secs(10)).await.is_ok());
    let sizes: Vec<usize> = mock.inspect(|log| log.iter().map(|r| r.records.len()).collect());
    println!("[retry batching] records per /import request: {sizes:?}");
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success());
    let fragments = sizes.iter().filter(|&&n| n < events.len()).count();
    assert_eq!(
        fragments,
        0,
        "a batch of {} events that failed together was retried in {} requests of fewer events: {sizes:?} \
         (each event gets its own jittered next attempt, and a round takes only the ready prefix)",
        events.len(),
        fragments
    );
}

// ---------------------------------------------------------------------------
// 5. SIGTERM
// ---------------------------------------------------------------------------

/// SIGTERM with events queued and Mixpanel reachable (slow): the server exits 0
/// within `shutdown_timeout` (plus the request in flight), and what it had not
/// delivered (including events accepted while it was stopping) is delivered
/// after the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_in_time_and_the_rest_is_delivered_after_restart() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(5).await;
    mock.set_latency(Duration::from_millis(250));
    let dir = temp_dir();
    let shutdown_timeout = Duration::from_secs(2);
    let cfg = config(
        dir.path(),
        "shutdown_timeout = \"2s\"",
        DELIVERY,
        "linger = \"20ms\"",
        // Small batches, so that even with several requests in flight there is
        // more to deliver than `shutdown_timeout` allows.
        &[destination("main", &["wk-term"], &mock, "batch_size = 10")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let batches: Vec<Batch> = (0..30)
        .map(|b| Batch {
            write_key: "wk-term".into(),
            events: (0..100)
                .map(|i| track(&format!("term-{b:02}-{i:02}"), "wk-term"))
                .collect(),
        })
        .collect();
    let load = Load::new(batches, server.http.clone());
    join_clients(load.spawn_clients(2), Duration::from_secs(30)).await;
    until(Duration::from_secs(10), "deliveries to start", || {
        mock.stats().accepted_unique >= 200
    })
    .await;

    // A client keeps posting while the server stops.
    let late_http = server.http.clone();
    let late_accepted = Arc::new(Mutex::new(HashSet::new()));
    let late_sent = Arc::new(AtomicUsize::new(0));
    let late = {
        let (accepted, sent) = (late_accepted.clone(), late_sent.clone());
        tokio::spawn(async move {
            for b in 0.. {
                let events: Vec<Value> = (0..10).map(|i| track(&format!("late-{b:04}-{i}"), "wk-term")).collect();
                match late_http.batch("wk-term", &events).await {
                    Ok(a) if a.status == 200 => accepted.lock().expect("late").extend(ids(&events)),
                    _ => break,
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    until(Duration::from_secs(10), "the late client to post", || {
        late_sent.load(Ordering::SeqCst) >= 3
    })
    .await;
    let (status, took) = server.terminate(Duration::from_secs(20)).await;
    tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .expect("the late client stopped")
        .expect("late client task");
    let mut wanted = load.accepted_ids();
    wanted.extend(late_accepted.lock().expect("late").iter().cloned());
    let undelivered = mock.missing(&wanted).len();
    let stopped = server.log_events("stopped; queued events are delivered after the next start");
    println!(
        "[sigterm] exited with {status} {took:?} after SIGTERM; {undelivered} of {} events left for the next start \
         (server said {:?})",
        wanted.len(),
        stopped.first().map(|v| v["queued"].clone())
    );
    assert!(status.success(), "exit status {status}; logs:\n{}", server.logs());
    assert!(
        took <= shutdown_timeout + Duration::from_secs(1),
        "took {took:?} to stop, shutdown_timeout is {shutdown_timeout:?}"
    );
    assert!(undelivered > 0, "the test needs events left at exit");

    mock.set_latency(Duration::ZERO);
    let mut server = ServerProcess::start(&cfg).await;
    let waited = mock.wait_accepted(&wanted, Duration::from_secs(20)).await;
    assert!(waited.is_ok(), "lost over a graceful restart: {waited:?}");
    println!(
        "[sigterm] all {} delivered {:?} after the restart; {} duplicates",
        wanted.len(),
        waited.ok(),
        mock.stats().accepted_duplicates()
    );
    let (status, took) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success() && took < shutdown_timeout, "{status} {took:?}");
}

// ---------------------------------------------------------------------------
// 6. Metrics
// ---------------------------------------------------------------------------

/// `/metrics` counts accepted events, delivered records, the spool depth (while
/// queued and after), and dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_accepted_delivered_queued_and_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let mock = Mixpanel::start(6).await;
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"",
        &[destination("main", &["wk-m"], &mock, "")],
    );
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let metric = |m: &HashMap<String, f64>, name: &str| m.get(name).copied().unwrap_or(0.0);

    let good: Vec<Value> = (0..10).map(|i| track(&format!("m-{i}"), "wk-m")).collect();
    assert_eq!(http.batch("wk-m", &good).await.expect("post").status, 200);
    assert!(mock
        .wait_accepted(&ids(&good).collect(), Duration::from_secs(10))
        .await
        .is_ok());
    // The mock counts a batch before its answer reaches the server: the ack
    // (and the counters) follow it.
    let t0 = Instant::now();
    let m1 = loop {
        let m = http.metrics().await;
        if m.get("mixpanel_actions_spool_depth") == Some(&0.0) || t0.elapsed() > Duration::from_secs(10) {
            break m;
        }
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(metric(&m1, "mixpanel_actions_events_accepted_total"), 10.0, "{m1:?}");
    assert_eq!(metric(&m1, "mixpanel_actions_records_delivered_total"), 10.0, "{m1:?}");
    assert_eq!(m1.get("mixpanel_actions_spool_depth"), Some(&0.0), "{m1:?}");
    assert_eq!(
        metric(&m1, "mixpanel_actions_events_dead_lettered_total"),
        0.0,
        "{m1:?}"
    );

    // Queued while Mixpanel fails.
    mock.set_behavior(Behavior::Status(503, "busy".into()));
    let queued: Vec<Value> = (0..5).map(|i| track(&format!("m-q{i}"), "wk-m")).collect();
    assert_eq!(http.batch("wk-m", &queued).await.expect("post").status, 200);
    let m2 = http.metrics().await;
    assert_eq!(m2.get("mixpanel_actions_spool_depth"), Some(&5.0), "{m2:?}");
    until(Duration::from_secs(10), "a retry to be scheduled", || {
        mock.stats().requests >= 2
    })
    .await;

    // Back: delivered; one more event is refused by Mixpanel: a dead letter.
    mock.set_behavior(Behavior::Ok);
    mock.reject(["m-bad".to_owned()]);
    assert_eq!(
        http.batch("wk-m", &[track("m-bad", "wk-m")])
            .await
            .expect("post")
            .status,
        200
    );
    assert!(mock
        .wait_accepted(&ids(&queued).collect(), Duration::from_secs(10))
        .await
        .is_ok());
    let t0 = Instant::now();
    while http.dead_letters("").await.json["total"] != 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no dead letter");
        tokio::time::sleep(POLL).await;
    }
    // The ack of a round is committed after its dead letters.
    let t0 = Instant::now();
    let m3 = loop {
        let m = http.metrics().await;
        if m.get("mixpanel_actions_spool_depth") == Some(&0.0) || t0.elapsed() > Duration::from_secs(10) {
            break m;
        }
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(metric(&m3, "mixpanel_actions_events_accepted_total"), 16.0, "{m3:?}");
    assert_eq!(metric(&m3, "mixpanel_actions_records_delivered_total"), 15.0, "{m3:?}");
    assert_eq!(metric(&m3, "mixpanel_actions_records_rejected_total"), 1.0, "{m3:?}");
    assert_eq!(m3.get("mixpanel_actions_spool_depth"), Some(&0.0), "{m3:?}");
    assert_eq!(
        metric(&m3, "mixpanel_actions_events_dead_lettered_total"),
        metric(&m1, "mixpanel_actions_events_dead_lettered_total") + 1.0,
        "{m3:?}"
    );
    assert!(metric(&m3, "mixpanel_actions_events_retried_total") >= 5.0, "{m3:?}");
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}
