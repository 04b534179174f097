//! Poison pills, black-box: the real `mixpanel-actions` binary as a child
//! process, events in over HTTP, a mock Mixpanel on loopback.
//!
//! - An event whose transform aborts the process (a real `abort()`, through
//!   the test-only fault injection `MIXPANEL_ACTIONS_TEST_ABORT_ON_MESSAGE_ID`)
//!   crashes it twice at most: first within its batch, then on its own; the
//!   third start moves it to the dead letters (reason `poison`) without
//!   transforming it, delivers the rest and keeps running.
//! - Liquid templates that would need gigabytes (doubling with `append`,
//!   multiplying with `replace`, a `capture` that repeats itself) give an
//!   event-level error, in a preview and for ingested events (dead letters
//!   with the reason), and the server keeps serving; the `preview` command
//!   reports them per event.

#[cfg(test)]
mod durability_support;
#[cfg(test)]
#[path = "common/preview_command.rs"]
mod preview_command;

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use durability_support::{config, destination, ids, temp_dir, track, Mixpanel, ServerProcess, DELIVERY};
use serde_json::{json, Value};

const ABORT_ON: &str = "MIXPANEL_ACTIONS_TEST_ABORT_ON_MESSAGE_ID";
const POISON_ID: &str = "poison-event-1";
const KEY: &str = "wk-poison";
const WAIT: Duration = Duration::from_secs(20);
const SIGABRT: i32 = 6;

/// Starts the server and waits until it exits by itself (it must, within
/// [`WAIT`]): its status and what it logged.
#[cfg(test)]
fn run_until_it_dies(config: &Path) -> (ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixpanel-actions"));
    cmd.args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .env(ABORT_ON, POISON_ID)
        .env("RUST_LOG", "info,tower_http=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("MIXPANEL_ACTIONS__") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawn the server binary");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server kept running for {WAIT:?}; it was expected to crash");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stderr reader"))
}

fn log_lines(logs: &str) -> Vec<Value> {
    logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_two_crashes_and_the_server_then_runs() {
    let mock = Mixpanel::start(61).await;
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "",
        DELIVERY,
        "linger = \"20ms\"",
        &[destination("main", &[KEY], &mock, "")],
    );
    let env = [(ABORT_ON, POISON_ID)];

    // 1. The poison event comes in the middle of a batch: accepted (it is
    //    durable), then the worker transforms the batch and the process aborts.
    let mut server = ServerProcess::start_with_env(&cfg, &env).await;
    let mut events: Vec<Value> = (0..3).map(|i| track(&format!("before-{i}"), KEY)).collect();
    events.push(track(POISON_ID, KEY));
    events.extend((0..3).map(|i| track(&format!("after-{i}"), KEY)));
    // The worker reads events once they are durable and may abort before the
    // answer is written: then the answer is lost, but the crash shows the
    // request's events were committed (one request is one spool record).
    match server.http.batch(KEY, &events).await {
        Ok(answer) => assert_eq!(answer.status, 200, "{answer:?}"),
        Err(e) => println!("[poison] the process died before answering: {e}"),
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = server.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not crash:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.signal(), Some(SIGABRT), "{status}: {}", server.logs());
    assert!(
        mock.accepted_count(POISON_ID) == 0,
        "the poison event was delivered before the crash"
    );

    // 2. The next start finds the batch's mark: its events are suspects,
    //    transformed one at a time, and the poison event aborts it again.
    let (status, logs) = run_until_it_dies(&cfg);
    assert_eq!(status.signal(), Some(SIGABRT), "{status}:\n{logs}");
    let lines = log_lines(&logs);
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("they are transformed one at a time"))),
        "no suspects after the first crash:\n{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "fault injection: aborting while transforming this event"),
        "{logs}"
    );

    // 3. The third start quarantines it without transforming it: the server
    //    keeps running, the other events are delivered, and new ones too.
    let mut server = ServerProcess::start_with_env(&cfg, &env).await;
    let mut wanted: HashSet<String> = ids(&events).filter(|id| id != POISON_ID).collect();
    let more: Vec<Value> = (0..5).map(|i| track(&format!("later-{i}"), KEY)).collect();
    let answer = server.http.batch(KEY, &more).await.expect("post more");
    assert_eq!(answer.status, 200, "{answer:?}");
    wanted.extend(ids(&more));
    if let Err(missing) = mock.wait_accepted(&wanted, WAIT).await {
        panic!("not delivered: {missing:?}\n{}", server.logs());
    }
    let list = server.http.dead_letters("reason=poison").await;
    let letters = list.json["dead_letters"].as_array().cloned().unwrap_or_default();
    assert_eq!(letters.len(), 1, "{}", list.text);
    let letter = &letters[0];
    assert_eq!(letter["event"]["messageId"], POISON_ID, "{letter}");
    assert_eq!(letter["destination"], "main");
    assert!(
        letter["message"]
            .as_str()
            .is_some_and(|m| m.contains("died twice while transforming")),
        "{letter}"
    );
    assert_eq!(mock.accepted_count(POISON_ID), 0, "the poison event was delivered");
    let all = server.http.dead_letters("").await;
    assert_eq!(all.json["total"], 1, "{}", all.text);
    assert!(
        server
            .log_events("event quarantined: the process died twice while transforming it")
            .len()
            == 1,
        "{}",
        server.logs()
    );
    // Still serving, and it stays up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.exited().is_none(), "the server died again:\n{}", server.logs());
    assert_eq!(server.http.get("/healthz").await.map(|a| a.status), Ok(200));

    // A restart after a clean stop transforms nothing as a suspect.
    let (status, _) = server.terminate(WAIT).await;
    assert!(status.success(), "{status}");
    let mut server = ServerProcess::start_with_env(&cfg, &env).await;
    let last = [track("final-0", KEY)];
    assert_eq!(server.http.batch(KEY, &last).await.expect("post").status, 200);
    let final_ids: HashSet<String> = ids(&last).collect();
    assert!(mock.wait_accepted(&final_ids, WAIT).await.is_ok());
    assert!(
        !server.logs().contains("they are transformed one at a time"),
        "{}",
        server.logs()
    );
    assert_eq!(server.http.dead_letters("").await.json["total"], 1);
    let (status, _) = server.terminate(WAIT).await;
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// Liquid bombs
// ---------------------------------------------------------------------------

/// Templates of at most 1,000 characters that pass `check` and, unbounded,
/// would build terabytes.
fn bombs() -> Vec<(&'static str, String)> {
    vec![
        (
            "Append",
            format!("{{%assign a=\"xx\"%}}{}{{{{a}}}}", "{%assign a=a|append:a%}".repeat(40)),
        ),
        (
            "Replace",
            format!(
                "{{%assign a=\"xxxxxxxxxx\"%}}{}{{{{a}}}}",
                "{%assign a=a|replace:\"x\",\"xxxxxxxxxx\"%}".repeat(20)
            ),
        ),
        (
            "Capture",
            format!(
                "{{%assign a=\"xx\"%}}{}{{{{a}}}}",
                "{%capture a%}{{a}}{{a}}{%endcapture%}".repeat(25)
            ),
        ),
    ]
}

fn bomb_config(dir: &Path, mock: &Mixpanel) -> std::path::PathBuf {
    let mut subs = vec![
        "{ name = \"Normal\", subscribe = 'event = \"Normal\"', partnerAction = \"trackEvent\", mapping = { event = { \
         \"@path\" = \"$.event\" }, distinct_id = { \"@path\" = \"$.userId\" }, insert_id = { \"@path\" = \
         \"$.messageId\" } } }"
            .to_owned(),
    ];
    for (name, template) in bombs() {
        assert!(template.len() <= 1000, "{name}: {}", template.len());
        subs.push(format!(
            "{{ name = \"{name} bomb\", subscribe = 'event = \"{name}\"', partnerAction = \"trackEvent\", mapping = \
             {{ event = {{ \"@liquid\" = '{template}' }}, distinct_id = {{ \"@path\" = \"$.userId\" }}, insert_id = \
             {{ \"@path\" = \"$.messageId\" }} }} }}"
        ));
    }
    let extra = format!("subscriptions = [\n  {}\n]", subs.join(",\n  "));
    config(
        dir,
        "",
        DELIVERY,
        "linger = \"20ms\"",
        &[destination("main", &[KEY], mock, &extra)],
    )
}

fn event(name: &str, id: &str) -> Value {
    json!({"type": "track", "event": name, "userId": "u1", "messageId": id})
}

const LIMIT: &str = "over the limit of 100000 bytes per value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liquid_bombs_give_event_errors_and_the_server_keeps_serving() {
    let mock = Mixpanel::start(62).await;
    let dir = temp_dir();
    let cfg = bomb_config(dir.path(), &mock);
    let mut server = ServerProcess::start(&cfg).await;
    let names: Vec<&str> = bombs().iter().map(|(n, _)| *n).collect();

    // A preview: one error per bomb event, the normal event's request.
    let mut batch = vec![event("Normal", "n-preview")];
    batch.extend(names.iter().map(|n| event(n, &format!("p-{n}"))));
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("http client");
    let preview = client
        .post(format!("{}/v1/destinations/main/preview", server.http.base))
        .basic_auth(KEY, Some(""))
        .json(&batch)
        .send()
        .await
        .expect("preview request");
    assert_eq!(preview.status().as_u16(), 200);
    let preview: Value = preview.json().await.expect("preview JSON");
    println!(
        "[liquid bombs] preview of {} bombs answered in {:?}",
        names.len(),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let errors = preview["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), names.len(), "{preview}");
    for (i, name) in names.iter().enumerate() {
        let e = errors
            .iter()
            .find(|e| e["event"] == i + 1)
            .unwrap_or_else(|| panic!("no error for the {name} bomb: {preview}"));
        assert_eq!(e["subscription"], format!("{name} bomb"));
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(LIMIT), "{message}");
    }
    assert!(errors[2]["message"]
        .as_str()
        .is_some_and(|m| m.contains("capture \"a\"")));
    assert_eq!(preview["requests"][0]["body"][0]["event"], "Normal", "{preview}");
    assert!(
        server.exited().is_none(),
        "the preview killed the server:\n{}",
        server.logs()
    );

    // Ingested: the bombs become dead letters with the reason, the rest is
    // delivered.
    let mut ingested = vec![event("Normal", "n-1")];
    ingested.extend(names.iter().map(|n| event(n, &format!("i-{n}"))));
    ingested.push(event("Normal", "n-2"));
    assert_eq!(server.http.batch(KEY, &ingested).await.expect("post").status, 200);
    let wanted: HashSet<String> = ["n-1", "n-2"].iter().map(|s| (*s).to_owned()).collect();
    assert!(mock.wait_accepted(&wanted, WAIT).await.is_ok(), "{}", server.logs());
    let mut letters = Vec::new();
    let deadline = Instant::now() + WAIT;
    while letters.len() < names.len() {
        assert!(Instant::now() < deadline, "dead letters: {letters:?}");
        let list = server.http.dead_letters("reason=rejected").await;
        letters = list.json["dead_letters"].as_array().cloned().unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for name in &names {
        let letter = letters
            .iter()
            .find(|l| l["event"]["messageId"] == format!("i-{name}"))
            .unwrap_or_else(|| panic!("no dead letter for {name}: {letters:?}"));
        assert_eq!(letter["subscription"], format!("{name} bomb"));
        assert!(
            letter["message"].as_str().is_some_and(|m| m.contains(LIMIT)),
            "{letter}"
        );
    }
    // Still serving.
    let after = [event("Normal", "n-3")];
    assert_eq!(server.http.batch(KEY, &after).await.expect("post").status, 200);
    let wanted: HashSet<String> = ["n-3".to_owned()].into_iter().collect();
    assert!(mock.wait_accepted(&wanted, WAIT).await.is_ok());
    assert!(server.exited().is_none(), "{}", server.logs());
    let (status, _) = server.terminate(WAIT).await;
    assert!(status.success(), "{status}");
}

/// The `preview` command (the event tester) on the same bombs: per-event
/// errors naming the limit, one result per case, exit 0.
#[test]
fn the_preview_command_reports_liquid_bombs_per_event() {
    let cases: Vec<String> = bombs()
        .into_iter()
        .map(|(name, template)| {
            json!({
                "id": name,
                "settings": {"projectToken": "tok"},
                "event": {"type": "track", "event": "E", "userId": "u1", "messageId": "m1"},
                "subscriptions": [{
                    "name": format!("{name} bomb"),
                    "subscribe": "type = \"track\"",
                    "partnerAction": "trackEvent",
                    "mapping": {"event": {"@liquid": template}, "distinct_id": {"@path": "$.userId"}},
                }],
            })
            .to_string()
        })
        .collect();
    let started = Instant::now();
    let output = preview_command::run_preview(&[], &cases);
    println!(
        "[liquid bombs] preview command: {} cases in {:?}",
        cases.len(),
        started.elapsed()
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let results: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON result per case"))
        .collect();
    assert_eq!(results.len(), cases.len());
    for (result, (name, _)) in results.iter().zip(bombs()) {
        let message = result["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(LIMIT), "{name}: {result}");
        assert_eq!(result["requests"], json!([]), "{name}: {result}");
    }
}
