//! The console and the admin API behind it, black-box:
//!
//! - the admin layer: admin off → 404 JSON, no or a wrong token → 401 JSON
//!   before any path or query is read, then JSON refusals of bad paths and queries;
//! - `/admin/overview` counts what happened per destination, and refuses a bad
//!   window;
//! - the credential check (on demand, at start, and `check --online`) against a
//!   mock Mixpanel, never showing the token;
//! - the console's files and their headers; the first-run one-time token at a
//!   terminal (under `script`, which gives the server a pseudo-terminal);
//! - a real headless browser (Debian's chromium through playwright-core,
//!   `tests/console/console.js`) through every page: log in, test an identify
//!   event, send it for real, watch the overview move after a burst, inspect,
//!   replay and purge dead letters, check the configuration shows no secret, and
//!   see a wrong token refused. Screenshots go to `target/console-screenshots/`.
//!
//! The browser test needs `npm ci --prefix tests/console` and chromium (`.ci/run`
//! installs both); without them it prints `SKIPPED: ...` and passes, unless
//! `CONSOLE_TESTS_REQUIRED` is set (CI sets it), then it fails.

#![cfg(test)]

mod common;
mod durability_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{destination, track, Mock, Reply, Send, Server};
use durability_support::{toml_str, write_config, ServerProcess};
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "console-admin-token-0123456789";
const KEY: &str = "wk-console";
const CHECK_PATH: &str = "/api/app/validate-project-credentials/";

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

async fn admin(server: &Server, method: Method, path: &str, token: Option<&str>) -> common::Answer {
    server
        .client
        .send(Send {
            method: Some(method),
            path: path.to_owned(),
            authorization: token.and_then(bearer),
            ..Send::default()
        })
        .await
}

fn assert_json_error(a: &common::Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{a:?}"
    );
    assert_eq!(a.json["success"], false, "{a:?}");
    assert_eq!(a.json["code"], code, "{a:?}");
}

#[tokio::test]
async fn admin_authentication_runs_before_any_extractor() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "admin_token": ADMIN,
        "delivery": {"mode": "spool"},
        "destinations": [destination("auth", KEY, &mock)],
    }))
    .await;
    for path in [
        "/admin/dead-letters/abc",
        "/admin/dead-letters?bogus=1",
        "/admin/dead-letters?limit=-5",
        "/admin/overview?window=forever",
        "/admin/no-such-route",
        "/admin",
        "/admin/",
        "/admin/config/",
        "/admin/config",
    ] {
        assert_json_error(&admin(&server, Method::GET, path, None).await, 401, "unauthorized");
        assert_json_error(
            &admin(&server, Method::GET, path, Some("a-wrong-token-of-some-length")).await,
            401,
            "unauthorized",
        );
    }
    // Basic auth with the admin token as user name is not a bearer token.
    let basic = server
        .client
        .send(Send {
            method: Some(Method::GET),
            path: "/admin/config".into(),
            authorization: Some(common::basic(&format!("{ADMIN}:"))),
            ..Send::default()
        })
        .await;
    assert_json_error(&basic, 401, "unauthorized");
    // With the token, the extractors' refusals are JSON and name the problem.
    let a = admin(&server, Method::GET, "/admin/dead-letters/abc", Some(ADMIN)).await;
    assert_json_error(&a, 400, "invalid_path");
    assert!(a.json["message"].as_str().unwrap().contains("abc"), "{a:?}");
    let a = admin(&server, Method::GET, "/admin/dead-letters?bogus=1", Some(ADMIN)).await;
    assert_json_error(&a, 400, "invalid_query");
    assert!(a.json["message"].as_str().unwrap().contains("bogus"), "{a:?}");
    assert_json_error(
        &admin(&server, Method::GET, "/admin/dead-letters?limit=-5", Some(ADMIN)).await,
        400,
        "invalid_query",
    );
    assert_json_error(
        &admin(&server, Method::GET, "/admin/overview?window=forever", Some(ADMIN)).await,
        400,
        "invalid_window",
    );
    assert_json_error(
        &admin(&server, Method::GET, "/admin/no-such-route", Some(ADMIN)).await,
        404,
        "not_found",
    );
    assert_json_error(
        &admin(&server, Method::PUT, "/admin/config", Some(ADMIN)).await,
        405,
        "method_not_allowed",
    );
    let bad_filter = server
        .client
        .send(Send {
            method: Some(Method::POST),
            path: "/admin/dead-letters/replay".into(),
            authorization: bearer(ADMIN),
            body: b"{\"reason\": 5}".to_vec(),
            ..Send::default()
        })
        .await;
    assert_json_error(&bad_filter, 400, "invalid_filter");
    let ok = admin(&server, Method::GET, "/admin/dead-letters/12345", Some(ADMIN)).await;
    assert_json_error(&ok, 404, "not_found");
    assert_eq!(
        admin(&server, Method::GET, "/admin/config", Some(ADMIN)).await.status,
        200
    );
}

#[tokio::test]
async fn without_an_admin_token_admin_is_off() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "delivery": {"mode": "spool"},
        "destinations": [destination("off", KEY, &mock)],
    }))
    .await;
    for path in [
        "/admin/config",
        "/admin/dead-letters/abc",
        "/admin/dead-letters?bogus=1",
        "/admin/overview",
        "/admin/anything",
        "/admin/",
    ] {
        for token in [None, Some(ADMIN)] {
            let a = admin(&server, Method::GET, path, token).await;
            assert_json_error(&a, 404, "admin_off");
            assert!(a.json["message"].as_str().unwrap().contains("admin_token"), "{a:?}");
        }
    }
    // The console's files are served; they say a token is needed.
    let page = server.client.get("/console/").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("needs a configured admin token"));
}

#[tokio::test]
async fn console_files_have_a_strict_policy_and_no_inline_code() {
    let mock = Mock::start().await;
    let server = Server::start(json!({"admin_token": ADMIN, "destinations": [destination("files", KEY, &mock)]})).await;
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let a = server.client.get(path).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(a.header("content-type").unwrap().starts_with(kind), "{path}: {a:?}");
        let csp = a.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
    }
    let html = server.client.get("/console/").await.text;
    // No inline script or style, no other origin.
    assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    let js = server.client.get("/console/app.js").await.text;
    assert!(!js.contains("innerHTML") && !js.contains("eval("));
    assert!(js.contains("sessionStorage") && js.contains("'Bearer '"));
    assert!(!js.contains("localStorage") && !js.contains("document.cookie"));
    // The bare path redirects to the page.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/console", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 308);
    assert_eq!(bare.headers()["location"], "/console/");
}

/// One destination's part of `/admin/overview?window=...`.
async fn totals(server: &Server, dest: &str, window: &str) -> Value {
    let a = admin(
        server,
        Method::GET,
        &format!("/admin/overview?window={window}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.json["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == dest)
        .cloned()
        .unwrap()
}

/// A track whose event name is in `properties.name` (the mapping of the
/// overview test reads it there, so a track without it fails validation).
fn named(id: &str, name: Option<&str>) -> Value {
    let mut e = track("u", "E", id);
    if let Some(n) = name {
        e["properties"]["name"] = json!(n);
    }
    e
}

#[tokio::test]
async fn the_overview_counts_what_happened_per_destination() {
    let mock = Mock::start().await;
    let mut dest = destination("ov", KEY, &mock);
    // Tracks only (so identify is unmatched); the event name from properties.
    dest["subscriptions"] = json!([
        {"name": "Tracks", "subscribe": "type = \"track\"", "partnerAction": "trackEvent",
         "mapping": {"event": {"@path": "$.properties.name"}, "distinct_id": {"@path": "$.userId"},
                     "insert_id": {"@path": "$.messageId"}, "time": {"@path": "$.timestamp"}}}
    ]);
    let server = Server::start(json!({
        "admin_token": ADMIN,
        "delivery": {"mode": "spool"},
        "spool": {"linger": "20ms"},
        "destinations": [dest],
    }))
    .await;
    let empty = totals(&server, "ov", "10m").await;
    assert_eq!(empty["totals"]["received"], 0, "{empty}");
    assert_eq!(empty["points"].as_array().unwrap().len(), 10);
    assert_eq!(empty["spool"]["depth"], 0);
    mock.script("/import", [Reply::Status(400, "mock refused the batch".into())]);
    let events: Vec<Value> = (0..5).map(|i| named(&format!("ov-{i}"), Some("E"))).collect();
    let a = server.client.post("/v1/batch", KEY, &json!({ "batch": events })).await;
    assert_eq!(a.status, 200, "{a:?}");
    let deadline = Instant::now() + common::WAIT;
    let t = loop {
        let t = totals(&server, "ov", "10m").await;
        if t["totals"]["dead_lettered"] == 5 {
            break t;
        }
        assert!(Instant::now() < deadline, "no dead letters counted: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t["totals"]["received"], 5, "{t}");
    assert_eq!(t["totals"]["rejected"], 5, "{t}");
    assert_eq!(t["totals"]["delivered"], 0, "{t}");
    assert!(t["responses"]["4xx"].as_u64().unwrap() >= 1, "{t}");
    // Delivered, unmatched, and a record without a required field.
    let more = json!({"batch": [
        named("ov-ok-1", Some("E")), named("ov-ok-2", Some("E")),
        {"type": "identify", "userId": "u", "messageId": "ov-id"},
        named("ov-no-name", None),
    ]});
    assert_eq!(server.client.post("/v1/batch", KEY, &more).await.status, 200);
    let deadline = Instant::now() + common::WAIT;
    let t = loop {
        let t = totals(&server, "ov", "1h").await;
        if t["totals"]["delivered"] == 2 && t["totals"]["failed_validation"] == 1 {
            break t;
        }
        assert!(Instant::now() < deadline, "not counted: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t["totals"]["received"], 9, "{t}");
    assert_eq!(t["totals"]["unmatched"], 1, "{t}");
    assert!(t["responses"]["2xx"].as_u64().unwrap() >= 1, "{t}");
    assert!(t["latency_ms"]["p95"].as_f64().unwrap() > 0.0, "{t}");
    let points = t["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    let sum: u64 = points.iter().map(|p| p["received"].as_u64().unwrap()).sum();
    assert_eq!(sum, 9);
    let day = totals(&server, "ov", "24h").await;
    assert_eq!(day["points"].as_array().unwrap().len(), 96);
    assert_eq!(day["step_seconds"], 900);
    assert_eq!(day["totals"]["received"], 9);
}

#[tokio::test]
async fn credentials_are_checked_on_demand_and_never_shown() {
    let good = Mock::start().await;
    let bad = Mock::start().await;
    bad.always(
        CHECK_PATH,
        Reply::Status(401, "Invalid project token: tok-cred-bad".into()),
    );
    let mut quirky = destination("cred-good", "k1", &good);
    // Segment reads `a and b or c` as all `or`: check warns, and so does the console.
    quirky["subscriptions"] = json!([{"name": "Quirky", "partnerAction": "trackEvent",
        "subscribe": "type = \"track\" and event = \"A\" or event = \"B\"",
        "mapping": {"event": {"@path": "$.event"}}}]);
    let server = Server::start(json!({
        "admin_token": ADMIN,
        "destinations": [quirky, destination("cred-bad", "k2", &bad),
                         {"id": "cred-dry", "write_keys": ["k3"]}],
    }))
    .await;
    let before = admin(&server, Method::GET, "/admin/credentials", Some(ADMIN)).await;
    assert_eq!(before.status, 200);
    assert!(before.json["credentials"][0]["check"].is_null(), "{before:?}");
    assert!(
        good.requests_to(CHECK_PATH).is_empty(),
        "not checked at start by default"
    );
    let a = admin(&server, Method::POST, "/admin/credentials", Some(ADMIN)).await;
    assert_eq!(a.status, 200, "{a:?}");
    let by: std::collections::HashMap<String, Value> = a.json["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["destination"].as_str().unwrap().to_owned(), c["check"].clone()))
        .collect();
    assert_eq!(by["cred-good"]["status"], "valid", "{a:?}");
    assert_eq!(by["cred-good"]["http_status"], 200);
    assert_eq!(by["cred-good"]["host"], good.url());
    assert_eq!(by["cred-bad"]["status"], "invalid", "{a:?}");
    assert_eq!(by["cred-bad"]["http_status"], 401);
    assert_eq!(by["cred-bad"]["message"], "Invalid project token: [redacted]");
    assert_eq!(by["cred-dry"]["status"], "dry_run");
    assert!(!a.text.contains("tok-cred"), "{}", a.text);
    let sent = good.requests_to(CHECK_PATH);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(sent[0].json, json!({"project_token": "tok-cred-good"}));
    // One destination on demand; the list keeps the last result.
    let one = admin(
        &server,
        Method::POST,
        "/admin/credentials?destination=cred-bad",
        Some(ADMIN),
    )
    .await;
    assert_eq!(one.json["credentials"].as_array().unwrap().len(), 1);
    assert_eq!(bad.requests_to(CHECK_PATH).len(), 2);
    let unknown = admin(
        &server,
        Method::POST,
        "/admin/credentials?destination=nope",
        Some(ADMIN),
    )
    .await;
    assert_json_error(&unknown, 404, "not_found");
    let list = admin(&server, Method::GET, "/admin/credentials", Some(ADMIN)).await;
    assert!(list.text.contains("\"valid\"") && list.text.contains("\"invalid\""));
    // The configuration names no secret.
    let config = admin(&server, Method::GET, "/admin/config", Some(ADMIN)).await;
    assert!(!config.text.contains("tok-cred") && !config.text.contains(ADMIN) && !config.text.contains("\"k1\""));
    let sub = &config.json["destinations"][0]["subscriptions"][0];
    assert_eq!(sub["name"], "Quirky");
    assert!(!sub["warnings"].as_array().unwrap().is_empty(), "{sub}");
    assert_eq!(sub["mapping"], json!({"event": {"@path": "$.event"}}));
    assert_eq!(
        config.json["destinations"][1]["import_auth"],
        "project_token (no api_secret)"
    );
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mixpanel-actions")
}

#[tokio::test]
async fn check_online_asks_mixpanel_about_each_token() {
    let good = Mock::start().await;
    let bad = Mock::start().await;
    bad.always(
        CHECK_PATH,
        Reply::Status(401, "Invalid project token tok-online-bad".into()),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = |id: &str, mock: &Mock| {
        format!(
            "[[destinations]]\nid = \"{id}\"\nwrite_keys = [\"k-{id}\"]\nproject_token = \"tok-{id}\"\napi_base_url = {}\n",
            toml_str(&mock.url())
        )
    };
    let run = |text: String| {
        let path = write_config(dir.path(), &text);
        let bin = bin().to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(bin)
                    .args(["check", "--online", "--config"])
                    .arg(path)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(dest("online-good", &good)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("credentials: valid (HTTP 200)"), "{stdout}");
    assert_eq!(good.requests_to(CHECK_PATH).len(), 1);
    let out = run(dest("online-good", &good) + &dest("online-bad", &bad)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("credentials: invalid (HTTP 401)"), "{stdout}");
    assert!(stdout.contains("Invalid project token [redacted]"), "{stdout}");
    assert!(!stdout.contains("tok-online"), "{stdout}");
    // Without --online nothing is asked.
    let before = bad.requests_to(CHECK_PATH).len();
    let path = write_config(dir.path(), &dest("online-bad", &bad));
    let plain = Command::new(bin())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert_eq!(bad.requests_to(CHECK_PATH).len(), before);
}

/// A configuration for the server binary: loopback, `data_dir` in `dir`,
/// `top` lines, one destination sending to `mock`.
fn binary_config(dir: &Path, top: &str, id: &str, mock: &Mock) -> PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {data}\n{top}\n\n[delivery]\nrequest_timeout = \"5s\"\nbackoff_initial = \"20ms\"\n\
         backoff_max = \"200ms\"\n\n[spool]\nlinger = \"20ms\"\n\n[[destinations]]\nid = \"{id}\"\nwrite_keys = [\"{KEY}\"]\n\
         project_token = \"tok-secret-{id}\"\napi_secret = \"api-secret-{id}\"\napi_base_url = {url}\n",
        data = toml_str(&dir.join("data").to_string_lossy()),
        url = toml_str(&mock.url()),
    );
    write_config(dir, &text)
}

#[tokio::test]
async fn at_a_terminal_without_a_token_the_server_prints_a_one_time_console_link() {
    if Command::new("script").arg("--version").output().is_err() {
        println!("SKIPPED: no `script` command to give the server a terminal");
        return;
    }
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(dir.path(), "", "tty", &mock);
    let command = format!("exec {} serve --config {}", bin(), config.display());
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + common::WAIT;
    let mut seen = Vec::new();
    let link = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(at) = line.find("http://") {
                    if line.contains("/console/#token=") {
                        break line[at..].trim().to_owned();
                    }
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no console link printed: {seen:?}");
            }
        }
    };
    let (base, token) = link.split_once("/console/#token=").unwrap();
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{link}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = http
        .get(format!("{base}/admin/config"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let refused = http.get(format!("{base}/admin/config")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // The token is on the terminal once, in the link, not in the log lines.
    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    assert!(seen.iter().all(|l| !l.contains(token)), "{seen:?}");
}

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

/// `GET path` on a server process with the admin token.
async fn admin_get(addr: std::net::SocketAddr, path: &str) -> common::Answer {
    common::Client::new(addr)
        .send(Send {
            method: Some(Method::GET),
            path: path.to_owned(),
            authorization: bearer(ADMIN),
            ..Send::default()
        })
        .await
}

fn required() -> bool {
    std::env::var_os("CONSOLE_TESTS_REQUIRED").is_some()
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing(node_dir: &Path, chromium: &str) -> Option<String> {
    if !Path::new(chromium).exists() {
        return Some(format!(
            "no browser at {chromium} (apt-get install chromium chromium-driver)"
        ));
    }
    if !node_dir.join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci --prefix tests/console)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node".into());
    }
    None
}

/// Longest the browser script may run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for `child` (its output collected), killing it after `limit`.
async fn run_bounded(child: std::process::Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => out.expect("join").expect("wait for the browser script"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("the browser script did not finish within {limit:?}");
        }
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

#[tokio::test]
async fn a_browser_goes_through_every_page() {
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("console");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(why) = browser_missing(&node_dir, &chromium) {
        assert!(!required(), "CONSOLE_TESTS_REQUIRED is set but {why}");
        println!("SKIPPED: {why}");
        return;
    }
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let top = format!("admin_token = {}\ncheck_credentials_at_start = true", toml_str(ADMIN));
    let config = binary_config(dir.path(), &top, "web", &mock);
    let server = ServerProcess::start(&config).await;
    let off_dir = tempfile::tempdir().unwrap();
    let off = ServerProcess::start(&binary_config(off_dir.path(), "", "off", &mock)).await;

    // Two dead letters: Mixpanel refuses the first two /import requests.
    mock.script(
        "/import",
        [
            Reply::Status(400, "mock refused: bad event".into()),
            Reply::Status(400, "mock refused: bad event".into()),
        ],
    );
    for id in ["dead-1", "dead-2"] {
        let a = server
            .http
            .batch(KEY, &[track("u-dead", "Will Fail", id)])
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        let deadline = Instant::now() + common::WAIT;
        while !mock
            .requests_to("/import")
            .iter()
            .any(|r| r.insert_ids().contains(&id.to_owned()))
        {
            assert!(Instant::now() < deadline, "{id} never sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + common::WAIT;
    loop {
        let list = admin_get(server.addr, "/admin/dead-letters").await;
        if list.json["total"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "dead letters: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap();
    let secrets = json!([ADMIN, "tok-secret-web", "api-secret-web", KEY]);
    let node = std::env::var("CONSOLE_NODE").unwrap_or_else(|_| "node".into());
    let mut cmd = Command::new(node);
    cmd.arg(node_dir.join("console.js"))
        .current_dir(&node_dir)
        .env("CONSOLE_BASE", format!("http://{}", server.addr))
        .env("OFF_BASE", format!("http://{}", off.addr))
        .env("ADMIN_TOKEN", ADMIN)
        .env("DESTINATION", "web")
        .env("WRITE_KEY", KEY)
        .env("SECRETS", secrets.to_string())
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("run node");
    let out = run_bounded(child, BROWSER_TIMEOUT).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "browser script failed:\n{stdout}\n{stderr}\nserver logs:\n{}",
        server.logs()
    );
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON report");
    let seen = &report["seen"];
    println!("{}", serde_json::to_string_pretty(seen).unwrap());

    // What the page showed.
    assert_eq!(seen["tested_requests"], 2, "{seen}");
    let urls = seen["tested_urls"].to_string();
    assert!(urls.contains("/track") && urls.contains("/engage"), "{urls}");
    assert!(
        seen["sent_status"]
            .as_str()
            .unwrap()
            .starts_with("Delivered (status 200)"),
        "{seen}"
    );
    assert_eq!(seen["sent_answers"], 2, "{seen}");
    assert_eq!(seen["validation_requests"], 0, "{seen}");
    let refused = seen["validation_error"].as_str().unwrap();
    assert!(
        refused.starts_with("Track Calls: 400") && refused.contains("event"),
        "{refused}"
    );
    let labels = seen["sent_labels"].to_string();
    assert!(
        labels.contains("$identify") && labels.contains("$set (profile)"),
        "{labels}"
    );
    assert!(seen["wrong_token"].as_str().unwrap().contains("refused"));
    assert!(
        seen["credentials"].as_str().unwrap().starts_with("valid (HTTP 200)"),
        "{seen}"
    );
    assert!(
        seen["credentials_at_start"].as_str().unwrap().starts_with("valid"),
        "{seen}"
    );
    assert!(
        seen["dead_detail"]
            .as_str()
            .unwrap()
            .contains("mock refused: bad event"),
        "{seen}"
    );
    assert!(seen["admin_off"].as_str().unwrap().contains("admin_token"));
    assert!(seen.get("blocked").is_none(), "the page asked another origin: {seen}");

    // What really happened behind it.
    let engage = mock.requests_to("/engage");
    assert_eq!(engage.len(), 1, "the identify was sent once, for real");
    assert!(mock.requests_to("/track").len() == 1);
    let ids: Vec<u64> = seen["dead_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let deadline = Instant::now() + common::WAIT;
    let replayed = loop {
        let accepted: Vec<String> = mock
            .accepted_records("/import")
            .iter()
            .filter_map(|r| r["properties"]["$insert_id"].as_str().map(str::to_owned))
            .filter(|id| id.starts_with("dead-"))
            .collect();
        if !accepted.is_empty() {
            break accepted;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed dead letter was never delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(replayed.len(), 1, "one replayed, one purged: {replayed:?}");
    let left = admin_get(server.addr, "/admin/dead-letters").await;
    assert_eq!(left.json["total"], 0, "{left:?}");
    assert!(!mock.requests_to(CHECK_PATH).is_empty(), "credentials were checked");
    for name in [
        "01-login",
        "03-tester-identify",
        "04-tester-sent",
        "05-overview",
        "06-dead-letter",
        "08-configuration",
        "09-admin-off",
    ] {
        let png = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&png).map(|m| m.len() > 1000).unwrap_or(false),
            "{png:?}"
        );
    }
    // The admin token never reached the logs.
    assert!(!server.logs().contains(ADMIN));
}
