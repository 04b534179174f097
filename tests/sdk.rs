//! Real Segment client libraries against the real server, black-box: the
//! `mixpanel-actions` binary as a child process (spool mode, one destination
//! with the six preset subscriptions, sending to a mock Mixpanel on loopback
//! that enforces strict mode's `$insert_id` rule), and a client script per SDK
//! (`tests/sdk/`) as another child process:
//!
//! - `@segment/analytics-node` 3.1.0 (`tests/sdk/node/analytics_node.js`);
//! - `@segment/analytics-next` 1.84.3, the browser SDK, under jsdom in Node, its
//!   CDN settings given inline and the Segment.io integration's `apiHost` pointed
//!   at the server (`tests/sdk/node/analytics_next.js`);
//! - `segment-analytics-python` 2.4.0, gzip on and off
//!   (`tests/sdk/python/send_events.py`), and once with a server restart
//!   (SIGTERM, then a new process on the same port and data directory) in the
//!   middle of its burst.
//!
//! Each script sends identify (email, name), track, an "Order Completed" with two
//! products, page, screen, group (with traits), alias, then a burst of 300
//! tracks, flushes, and prints the messageId of every event as a JSON line. Then
//! the mock must have, for every messageId, its records exactly once (the
//! `/import` records by `$insert_id`, each one valid for Mixpanel; the
//! identify's `$identify` and `/engage` `$set` with the traits; the group's
//! `/groups` `$set`), and the server no dead letters.
//!
//! The scripts need their packages: `npm ci --prefix tests/sdk/node` and
//! `python3 -m pip install -r tests/sdk/python/requirements.txt` (`.ci/run` does
//! both). Without them a test prints `SKIPPED: ...` and passes, unless
//! `SDK_TESTS_REQUIRED` is set (CI sets it), then it fails. Nothing leaves the
//! machine: the scripts refuse any host but loopback.
//!
//! The tests run one at a time (they start processes and share two cores).

#[cfg(test)]
mod durability_support;

#[cfg(test)]
mod harness {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::io::BufRead as _;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::durability_support::{
        breaks_insert_id_rule, destination, toml_str, valid_insert_id, write_config, Http, Mixpanel, Req, ADMIN,
        DELIVERY,
    };

    /// The write key the clients send with.
    pub const WRITE_KEY: &str = "wk-sdk-clients";
    /// Tracks in each script's burst.
    pub const BURST: usize = 300;
    /// Longest a client script may run.
    pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Longest the records may take to reach the mock once the client is done.
    pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

    /// One test at a time: they start processes.
    pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A client library and how its script is run.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Sdk {
        Node,
        Next,
        Python { gzip: bool },
    }

    fn sdk_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("sdk")
    }

    fn node_bin() -> String {
        std::env::var("SDK_NODE").unwrap_or_else(|_| "node".into())
    }

    fn python_bin() -> String {
        std::env::var("SDK_PYTHON").unwrap_or_else(|_| "python3".into())
    }

    fn runs(program: &str, args: &[&str], cwd: &Path) -> bool {
        Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    impl Sdk {
        pub fn label(self) -> &'static str {
            match self {
                Sdk::Node => "analytics-node",
                Sdk::Next => "analytics-next",
                Sdk::Python { gzip: true } => "analytics-python (gzip)",
                Sdk::Python { gzip: false } => "analytics-python",
            }
        }

        /// Why the script cannot run here, if it cannot.
        pub fn missing(self) -> Option<String> {
            match self {
                Sdk::Node | Sdk::Next => {
                    let dir = sdk_dir().join("node");
                    if !runs(&node_bin(), &["--version"], &dir) {
                        return Some(format!("`{}` (Node.js) is not installed", node_bin()));
                    }
                    let mut needed = vec!["@segment/analytics-node"];
                    if self == Sdk::Next {
                        needed.extend(["@segment/analytics-next", "jsdom"]);
                    }
                    needed
                        .iter()
                        .find(|p| !dir.join("node_modules").join(p).join("package.json").is_file())
                        .map(|p| format!("run npm ci in tests/sdk/node ({p} is not installed)"))
                }
                Sdk::Python { .. } => {
                    let check = "import sys, segment.analytics as a; sys.exit(0 if a.VERSION == '2.4.0' else 3)";
                    (!runs(&python_bin(), &["-c", check], &sdk_dir())).then(|| {
                        "run python3 -m pip install -r tests/sdk/python/requirements.txt \
                         (segment-analytics-python 2.4.0 is not importable)"
                            .to_owned()
                    })
                }
            }
        }

        fn command(self, url: &str) -> Command {
            let (program, dir, script) = match self {
                Sdk::Node => (node_bin(), "node", "analytics_node.js"),
                Sdk::Next => (node_bin(), "node", "analytics_next.js"),
                Sdk::Python { .. } => (python_bin(), "python", "send_events.py"),
            };
            let mut cmd = Command::new(program);
            cmd.current_dir(sdk_dir().join(dir)).arg(script).arg(url).arg(WRITE_KEY);
            if let Sdk::Python { gzip } = self {
                cmd.arg(if gzip { "--gzip" } else { "--no-gzip" })
                    .env("PYTHONDONTWRITEBYTECODE", "1");
            }
            cmd
        }
    }

    /// `true` when the test must stop here: prints why (or fails, when
    /// `SDK_TESTS_REQUIRED` is set).
    pub fn skip(sdk: Sdk) -> bool {
        let Some(reason) = sdk.missing() else {
            return false;
        };
        assert!(
            std::env::var_os("SDK_TESTS_REQUIRED").is_none(),
            "{}: {reason} (SDK_TESTS_REQUIRED is set, so this is a failure)",
            sdk.label()
        );
        println!("SKIPPED: {reason}");
        true
    }

    // -----------------------------------------------------------------------
    // The server
    // -----------------------------------------------------------------------

    /// A free loopback port (bound, then released for the server).
    pub fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        l.local_addr().expect("local address").port()
    }

    /// Spool mode, one destination `sdk` (the six presets, strict mode) fed by
    /// [`WRITE_KEY`], sending to `mock`; listening on `listen`. The destination
    /// gets the lines of `SDK_DESTINATION_EXTRA` too, when set (for instance
    /// `repair_insert_ids = false`, to see what Mixpanel's strict mode does to
    /// the SDKs' own messageIds).
    pub fn sdk_config(dir: &Path, listen: &str, mock: &Mixpanel) -> PathBuf {
        let extra = std::env::var("SDK_DESTINATION_EXTRA").unwrap_or_default();
        let text = format!(
            "listen = {listen}\ndata_dir = {data}\nadmin_token = {admin}\nshutdown_timeout = \"5s\"\n\n\
             [delivery]\nmode = \"spool\"\n{DELIVERY}\n\n[spool]\nlinger = \"20ms\"\n\n{dest}",
            listen = toml_str(listen),
            data = toml_str(&dir.join("data").to_string_lossy()),
            admin = toml_str(ADMIN),
            dest = destination("sdk", &[WRITE_KEY], mock, &extra),
        );
        write_config(dir, &text)
    }

    // -----------------------------------------------------------------------
    // A client script as a child process
    // -----------------------------------------------------------------------

    /// A client script running.
    pub struct Running {
        pub sdk: Sdk,
        child: Option<Child>,
        stdout: Arc<Mutex<Vec<String>>>,
        stderr: Arc<Mutex<Vec<String>>>,
        readers: Vec<std::thread::JoinHandle<()>>,
        started: Instant,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn read_lines(
        pipe: impl std::io::Read + Send + 'static,
        into: Arc<Mutex<Vec<String>>>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                into.lock().expect("lines").push(line);
            }
        })
    }

    /// What a finished client script did.
    #[derive(Debug)]
    pub struct ClientRun {
        pub sdk: Sdk,
        /// `None`: killed at [`CLIENT_TIMEOUT`].
        pub status: Option<ExitStatus>,
        pub elapsed: Duration,
        /// One line per event sent (`call`, `messageId`, ...).
        pub sent: Vec<Value>,
        /// Calls the SDK does not have.
        pub skipped: Vec<Value>,
        pub summary: Option<Value>,
        pub stderr: String,
    }

    impl Running {
        /// Starts the script for `sdk` against `url`; `run` makes its ids unique.
        pub fn start(sdk: Sdk, url: &str, run: &str, burst_delay_ms: u64) -> Running {
            let mut cmd = sdk.command(url);
            cmd.env("SDK_RUN", run)
                .env("SDK_BURST", BURST.to_string())
                .env("SDK_BURST_DELAY_MS", burst_delay_ms.to_string())
                .env("SDK_TIMEOUT_MS", "45000")
                .env("NO_PROXY", "127.0.0.1,localhost,::1")
                .env("no_proxy", "127.0.0.1,localhost,::1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for var in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            ] {
                cmd.env_remove(var);
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the {} script: {e}", sdk.label()));
            let stdout = Arc::new(Mutex::new(Vec::new()));
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let mut readers = Vec::new();
            if let Some(out) = child.stdout.take() {
                readers.push(read_lines(out, stdout.clone()));
            }
            if let Some(err) = child.stderr.take() {
                readers.push(read_lines(err, stderr.clone()));
            }
            Running {
                sdk,
                child: Some(child),
                stdout,
                stderr,
                readers,
                started: Instant::now(),
            }
        }

        /// Whether the script is still running.
        pub fn running(&mut self) -> bool {
            self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        }

        /// Waits for the script to exit, killing it after `within` (counted from
        /// its start).
        pub async fn finish(mut self, within: Duration) -> ClientRun {
            let mut child = self.child.take().expect("client running");
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait for the client") {
                    break Some(status);
                }
                if self.started.elapsed() > within {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let elapsed = self.started.elapsed();
            for reader in self.readers.drain(..) {
                let _ = tokio::task::spawn_blocking(move || reader.join()).await;
            }
            let (mut sent, mut skipped, mut summary) = (Vec::new(), Vec::new(), None);
            for line in self.stdout.lock().expect("stdout").iter() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if v["summary"] == true {
                    summary = Some(v);
                } else if v.get("skipped").is_some() {
                    skipped.push(v);
                } else if v.get("call").is_some() {
                    sent.push(v);
                }
            }
            ClientRun {
                sdk: self.sdk,
                status,
                elapsed,
                sent,
                skipped,
                summary,
                stderr: self.stderr.lock().expect("stderr").join("\n"),
            }
        }
    }

    // -----------------------------------------------------------------------
    // What the mock must have
    // -----------------------------------------------------------------------

    /// The calls each script makes besides the burst: identify, track, order,
    /// page, screen, group, alias.
    pub const CALLS: [&str; 7] = ["identify", "track", "order", "page", "screen", "group", "alias"];

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_default()
    }

    /// The `/import` records of one sent event: its own (`properties.sdk_seq`),
    /// and for an order its "Product Purchased" records (`order_id`).
    fn belongs(line: &Value, record: &Value) -> bool {
        let p = &record["properties"];
        let same_seq = line["seq"].as_u64().is_some_and(|k| p["sdk_seq"].as_u64() == Some(k));
        if line["call"] == "order" && record["event"] == "Product Purchased" {
            return same_seq || (p["order_id"].is_string() && p["order_id"] == line["orderId"]);
        }
        same_seq && record["event"] != "Product Purchased"
    }

    /// How many `/import` records an event must produce.
    fn expected_records(line: &Value) -> usize {
        match s(line, "call") {
            "order" => 1 + line["products"].as_u64().unwrap_or(0) as usize,
            _ if line["seq"].is_u64() => 1,
            _ => 0,
        }
    }

    /// One `/import` record as the mock saw it.
    struct Seen<'a> {
        record: &'a Value,
        accepted: bool,
    }

    fn import_records(log: &[Req]) -> Vec<Seen<'_>> {
        let mut out = Vec::new();
        for r in log.iter().filter(|r| r.path == "/import") {
            let accepted: HashSet<usize> = r.accepted.iter().copied().collect();
            for (i, record) in r.records.iter().enumerate() {
                out.push(Seen {
                    record,
                    accepted: accepted.contains(&i),
                });
            }
        }
        out
    }

    /// Accepted records of `path` that `pick` selects.
    fn accepted_on<'a>(log: &'a [Req], path: &str, pick: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
        log.iter()
            .filter(|r| r.path == path)
            .flat_map(Req::accepted_records)
            .filter(|v| pick(v))
            .collect()
    }

    fn insert_id(record: &Value) -> String {
        match &record["properties"]["$insert_id"] {
            Value::String(s) => s.clone(),
            Value::Null => "<none>".into(),
            other => other.to_string(),
        }
    }

    /// One check of a run.
    #[derive(Debug)]
    pub struct Check {
        pub name: &'static str,
        pub ok: bool,
        pub detail: String,
    }

    fn check(name: &'static str, ok: bool, detail: String) -> Check {
        Check { name, ok, detail }
    }

    /// The delivery part of the checks (also the wait's stop condition):
    /// per-event `/import` records, the identify and the group.
    pub struct Delivery {
        /// Records each event lacks (expected, accepted distinct insert ids).
        pub missing: Vec<String>,
        /// Accepted more than once (by `$insert_id`), counting each repeat.
        pub duplicates: usize,
        pub duplicate_examples: Vec<String>,
        /// Events whose records came with more distinct insert ids than records
        /// (Mixpanel could not deduplicate their retries).
        pub unstable: Vec<String>,
        /// A valid messageId that did not become its record's `$insert_id`.
        pub not_message_id: Vec<String>,
        pub identify: Vec<String>,
        pub group: Vec<String>,
    }

    impl Delivery {
        pub fn complete(&self) -> bool {
            self.missing.is_empty() && self.identify.is_empty() && self.group.is_empty()
        }
    }

    pub fn delivery(sent: &[Value], log: &[Req]) -> Delivery {
        let imports = import_records(log);
        let mut d = Delivery {
            missing: Vec::new(),
            duplicates: 0,
            duplicate_examples: Vec::new(),
            unstable: Vec::new(),
            not_message_id: Vec::new(),
            identify: Vec::new(),
            group: Vec::new(),
        };
        for line in sent {
            let want = expected_records(line);
            if want == 0 {
                continue;
            }
            let message_id = s(line, "messageId");
            let mine: Vec<&Seen<'_>> = imports.iter().filter(|x| belongs(line, x.record)).collect();
            let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
            let mut received: HashSet<String> = HashSet::new();
            for x in &mine {
                received.insert(insert_id(x.record));
                if x.accepted {
                    *accepted.entry(insert_id(x.record)).or_insert(0) += 1;
                }
            }
            if accepted.len() < want {
                d.missing.push(format!(
                    "{} {message_id}: {} of {want} record(s) accepted ({} sent to /import)",
                    s(line, "call"),
                    accepted.len(),
                    mine.len()
                ));
            }
            for (id, n) in &accepted {
                if *n > 1 {
                    d.duplicates += n - 1;
                    if d.duplicate_examples.len() < 5 {
                        d.duplicate_examples.push(format!("{id} x{n}"));
                    }
                }
            }
            if received.len() > want {
                d.unstable.push(format!(
                    "{} {message_id}: {want} record(s) sent under {} insert ids {:?}",
                    s(line, "call"),
                    received.len(),
                    received
                ));
            }
            if valid_insert_id(message_id) {
                let own = mine.iter().find(|x| x.record["event"] != "Product Purchased");
                if let Some(x) = own {
                    if insert_id(x.record) != message_id {
                        d.not_message_id
                            .push(format!("{message_id} -> {}", insert_id(x.record)));
                    }
                }
            }
        }
        for line in sent.iter().filter(|l| l["call"] == "identify") {
            let user = s(line, "userId");
            let sets = accepted_on(log, "/engage", |r| r["$distinct_id"] == user && r.get("$set").is_some());
            match sets.as_slice() {
                [] => d.identify.push(format!("no /engage $set for {user} accepted")),
                [one] => {
                    let set = &one["$set"];
                    let (email, name) = (&line["traits"]["email"], &line["traits"]["name"]);
                    if set["$email"] != *email || set["$name"] != *name {
                        d.identify.push(format!(
                            "/engage $set for {user} is {set}: traits email {email} and name {name} expected as \
                             $email and $name"
                        ));
                    }
                }
                more => d
                    .identify
                    .push(format!("{} /engage $set for {user} accepted (1 expected)", more.len())),
            }
            let anon = s(line, "anonymousId");
            let identifies = accepted_on(log, "/track", |r| {
                r["event"] == "$identify"
                    && r["properties"]["$anon_id"] == anon
                    && r["properties"]["$identified_id"] == user
            });
            if identifies.len() != 1 {
                d.identify.push(format!(
                    "{} /track $identify for {anon} -> {user} accepted (1 expected)",
                    identifies.len()
                ));
            }
        }
        for line in sent.iter().filter(|l| l["call"] == "group") {
            let group = s(line, "groupId");
            let sets = accepted_on(log, "/groups", |r| r["$group_id"] == group);
            match sets.as_slice() {
                [one] if one["$set"]["$name"] == line["traits"]["name"] => {}
                [one] => d.group.push(format!(
                    "/groups $set for {group} is {}: the name trait {} expected as $name",
                    one["$set"], line["traits"]["name"]
                )),
                other => d.group.push(format!(
                    "{} /groups records for {group} accepted (1 expected)",
                    other.len()
                )),
            }
        }
        d
    }

    /// Every `/import` record the mock received that breaks Mixpanel's
    /// `$insert_id` rule: (count, examples).
    pub fn invalid_insert_ids(log: &[Req]) -> (usize, Vec<String>) {
        let bad: Vec<String> = import_records(log)
            .iter()
            .filter(|x| breaks_insert_id_rule(x.record) || x.record["properties"].get("$insert_id").is_none())
            .map(|x| {
                let id = insert_id(x.record);
                format!("{id:?} ({} chars)", id.len())
            })
            .collect();
        let examples = bad.iter().take(3).cloned().collect();
        (bad.len(), examples)
    }

    // -----------------------------------------------------------------------
    // A whole run
    // -----------------------------------------------------------------------

    /// Polls until the mock has everything `sent` must produce, or the server
    /// has nothing left to do (spool empty, no request in flight, for 300 ms),
    /// or `within`.
    pub async fn settle(http: &Http, mock: &Mixpanel, sent: &[Value], within: Duration) -> (bool, Duration) {
        let started = Instant::now();
        let mut idle_since: Option<Instant> = None;
        loop {
            if mock.inspect(|log| delivery(sent, log).complete()) {
                return (true, started.elapsed());
            }
            let depth = match http.get("/metrics").await {
                Ok(a) if a.status == 200 => super::durability_support::parse_prometheus(&a.text)
                    .get("mixpanel_actions_spool_depth")
                    .copied(),
                _ => None,
            };
            if depth == Some(0.0) && mock.in_flight() == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    return (false, started.elapsed());
                }
            } else {
                idle_since = None;
            }
            if started.elapsed() > within {
                return (false, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Options of [`verify`].
    pub struct Expectations {
        /// The server was restarted: duplicates are allowed (reported), the
        /// accepted-events metric is of the last process only.
        pub restarted: bool,
    }

    /// Every check of a finished run.
    pub async fn verify(run: &ClientRun, http: &Http, mock: &Mixpanel, expect: &Expectations) -> Vec<Check> {
        let mut checks = Vec::new();
        let label = run.sdk.label();
        // The client.
        let summary_ok = run.summary.as_ref().is_some_and(|v| v["ok"] == true);
        checks.push(check(
            "client exits 0, no error callback",
            run.status.is_some_and(|s| s.success()) && summary_ok,
            format!(
                "{label}: exit {:?} after {:?}; summary {}{}",
                run.status.map(|s| s.to_string()),
                run.elapsed,
                run.summary.as_ref().map_or("none".into(), Value::to_string),
                if run.stderr.is_empty() {
                    String::new()
                } else {
                    format!("; stderr (last lines): {}", tail(&run.stderr, 6))
                }
            ),
        ));
        // The messageIds it printed.
        let skipped: HashSet<&str> = run.skipped.iter().filter_map(|v| v["skipped"].as_str()).collect();
        let calls: HashSet<&str> = run.sent.iter().filter_map(|v| v["call"].as_str()).collect();
        let missing_calls: Vec<&str> = CALLS
            .iter()
            .copied()
            .filter(|c| !calls.contains(c) && !skipped.contains(c))
            .collect();
        let bursts = run.sent.iter().filter(|v| v["call"] == "burst").count();
        let ids: HashSet<&str> = run.sent.iter().filter_map(|v| v["messageId"].as_str()).collect();
        checks.push(check(
            "every call made, messageIds printed",
            missing_calls.is_empty() && bursts == BURST && ids.len() == run.sent.len(),
            format!(
                "{} events ({} distinct messageIds), burst {bursts}/{BURST}, calls missing {missing_calls:?}, not in \
                 this SDK {skipped:?}",
                run.sent.len(),
                ids.len()
            ),
        ));
        let (d, (invalid, invalid_examples), requests) = mock.inspect(|log| {
            let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
            for r in log {
                *by_path.entry(format!("{} {:?}", r.path, r.fate)).or_insert(0) += 1;
            }
            (delivery(&run.sent, log), invalid_insert_ids(log), by_path)
        });
        let import_events = run.sent.iter().filter(|l| expected_records(l) > 0).count();
        checks.push(check(
            "every /import $insert_id valid for Mixpanel (1-36 of [A-Za-z0-9-])",
            invalid == 0,
            format!("{invalid} record(s) sent with an invalid or no $insert_id, e.g. {invalid_examples:?}"),
        ));
        checks.push(check(
            "each event's /import records accepted (none lost)",
            d.missing.is_empty(),
            format!(
                "{} of {import_events} events lack records, e.g. {:?}",
                d.missing.len(),
                &d.missing[..d.missing.len().min(3)]
            ),
        ));
        let dup_detail = format!(
            "{} duplicate record(s) by $insert_id, e.g. {:?}; {} event(s) sent under unstable insert ids {:?}",
            d.duplicates,
            d.duplicate_examples,
            d.unstable.len(),
            &d.unstable[..d.unstable.len().min(2)]
        );
        if expect.restarted {
            checks.push(check(
                "retries keep the $insert_id (duplicates deduplicable; counted, allowed after a restart)",
                d.unstable.is_empty(),
                dup_detail,
            ));
        } else {
            checks.push(check(
                "each /import record accepted exactly once (by $insert_id)",
                d.duplicates == 0 && d.unstable.is_empty(),
                dup_detail,
            ));
        }
        checks.push(check(
            "a valid messageId is the record's $insert_id",
            d.not_message_id.is_empty(),
            format!("{:?}", &d.not_message_id[..d.not_message_id.len().min(3)]),
        ));
        checks.push(check(
            "identify: $identify on /track, traits (email, name) in the /engage $set, once",
            d.identify.is_empty(),
            format!("{:?}", d.identify),
        ));
        checks.push(check(
            "group: traits in the /groups $set, once",
            d.group.is_empty(),
            format!("{:?}", d.group),
        ));
        // The server.
        let metrics = http.metrics().await;
        let metric = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        let accepted = metric("mixpanel_actions_events_accepted_total");
        if !expect.restarted {
            checks.push(check(
                "the server accepted each event once",
                accepted as usize == run.sent.len(),
                format!(
                    "mixpanel_actions_events_accepted_total {accepted}, {} events sent",
                    run.sent.len()
                ),
            ));
        }
        let dead = http.dead_letters("limit=3").await;
        let dead_total = dead.json["total"].as_u64().unwrap_or(u64::MAX);
        let dead_metric = metric("mixpanel_actions_events_dead_lettered_total");
        let examples: Vec<String> = dead.json["dead_letters"]
            .as_array()
            .map(|a| a.iter().map(|l| compact(l, 300)).collect())
            .unwrap_or_default();
        checks.push(check(
            "no dead letters",
            dead_total == 0 && dead_metric == 0.0,
            format!(
                "GET /admin/dead-letters total {dead_total}, mixpanel_actions_events_dead_lettered_total \
                 {dead_metric}; newest: {examples:?}; mock requests {requests:?}"
            ),
        ));
        checks
    }

    /// Prints the checks; panics naming the failed ones.
    pub fn report(what: &str, checks: &[Check]) {
        for c in checks {
            println!(
                "[{what}] {} {}: {}",
                if c.ok { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        let failed_details: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("- {}: {}", c.name, c.detail))
            .collect();
        assert!(
            failed.is_empty(),
            "[{what}] {} of {} checks failed: {failed:?}\n{}",
            failed.len(),
            checks.len(),
            failed_details.join("\n")
        );
    }

    pub fn tail(text: &str, n: usize) -> String {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }

    fn compact(v: &Value, max: usize) -> String {
        let text = v.to_string();
        if text.len() <= max {
            return text;
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    }

    /// A run tag unique to this test process and SDK.
    pub fn run_tag(name: &str) -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("{name}-{ms}")
    }

    /// Counts by key, for the log.
    pub fn by<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
        let mut out = HashMap::new();
        for i in items {
            *out.entry(i).or_insert(0) += 1;
        }
        out
    }
}

use std::time::{Duration, Instant};

use durability_support::{Mixpanel, ServerProcess};
use harness::{
    free_port, report, run_tag, sdk_config, settle, skip, verify, Expectations, Running, Sdk, BURST, CALLS,
    CLIENT_TIMEOUT, DELIVERY_TIMEOUT, SERIAL,
};

/// One script against a fresh server and mock; every check.
async fn sdk_run(sdk: Sdk, seed: u64) {
    let started = Instant::now();
    let mock = Mixpanel::start(seed).await;
    mock.enforce_insert_ids(true);
    let dir = durability_support::temp_dir();
    let cfg = sdk_config(dir.path(), "127.0.0.1:0", &mock);
    let mut server = ServerProcess::start(&cfg).await;
    let http = server.http.clone();
    let client = Running::start(sdk, &http.base, &run_tag("t"), 0);
    let run = client.finish(CLIENT_TIMEOUT).await;
    let (complete, waited) = settle(&http, &mock, &run.sent, DELIVERY_TIMEOUT).await;
    let checks = verify(&run, &http, &mock, &Expectations { restarted: false }).await;
    println!(
        "[{}] client {:?}, then {} in {waited:?}; {} events ({:?}); {} requests to the mock; total {:?}",
        sdk.label(),
        run.elapsed,
        if complete {
            "everything at the mock"
        } else {
            "the server settled without everything at the mock"
        },
        run.sent.len(),
        harness::by(run.sent.iter().filter_map(|v| v["call"].as_str())),
        mock.stats().requests,
        started.elapsed()
    );
    let (status, _) = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "server exit {status}");
    report(sdk.label(), &checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_node_events_reach_mixpanel_once() {
    let _serial = SERIAL.lock().await;
    if skip(Sdk::Node) {
        return;
    }
    sdk_run(Sdk::Node, 301).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_next_in_jsdom_events_reach_mixpanel_once() {
    let _serial = SERIAL.lock().await;
    if skip(Sdk::Next) {
        return;
    }
    sdk_run(Sdk::Next, 302).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_python_gzip_events_reach_mixpanel_once() {
    let _serial = SERIAL.lock().await;
    if skip(Sdk::Python { gzip: true }) {
        return;
    }
    sdk_run(Sdk::Python { gzip: true }, 303).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_python_plain_events_reach_mixpanel_once() {
    let _serial = SERIAL.lock().await;
    if skip(Sdk::Python { gzip: false }) {
        return;
    }
    sdk_run(Sdk::Python { gzip: false }, 304).await;
}

/// analytics-python (gzip), its burst paced at one track per 10 ms: once the
/// server has accepted about a third of the burst, SIGTERM (graceful: exit 0),
/// and a new process on the same port and data directory at once. The client
/// retries what was refused meanwhile; nothing it sent is lost (duplicates
/// allowed, with the same `$insert_id`), no dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_python_survives_a_server_restart_mid_burst() {
    let _serial = SERIAL.lock().await;
    let sdk = Sdk::Python { gzip: true };
    if skip(sdk) {
        return;
    }
    let started = Instant::now();
    let mock = Mixpanel::start(305).await;
    mock.enforce_insert_ids(true);
    let dir = durability_support::temp_dir();
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = sdk_config(dir.path(), &listen, &mock);
    let mut server = ServerProcess::start(&cfg).await;
    let base = server.http.base.clone();
    let mut client = Running::start(sdk, &base, &run_tag("restart"), 10);

    // The middle of the burst: a third of it accepted by the server.
    let target = (CALLS.len() + BURST / 3) as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut accepted_before = 0.0;
    while Instant::now() < deadline && client.running() {
        let m = server.http.metrics().await;
        accepted_before = m.get("mixpanel_actions_events_accepted_total").copied().unwrap_or(0.0);
        if accepted_before >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mid_burst = client.running() && accepted_before >= target;
    let down_at = Instant::now();
    let (status, stop_took) = server.terminate(Duration::from_secs(15)).await;
    let mut server = ServerProcess::start(&cfg).await;
    let downtime = down_at.elapsed();
    assert_eq!(server.http.base, base, "the new process listens where the client sends");

    let run = client.finish(CLIENT_TIMEOUT).await;
    let (complete, waited) = settle(&server.http, &mock, &run.sent, DELIVERY_TIMEOUT).await;
    let accepted_after = server
        .http
        .metrics()
        .await
        .get("mixpanel_actions_events_accepted_total")
        .copied()
        .unwrap_or(0.0);
    let mut checks = verify(&run, &server.http, &mock, &Expectations { restarted: true }).await;
    checks.insert(
        0,
        harness::Check {
            name: "SIGTERM in the middle of the burst, graceful exit",
            ok: mid_burst && status.success() && accepted_after > 0.0,
            detail: format!(
                "SIGTERM after {accepted_before} of {} events accepted, client still sending: {mid_burst}; exit \
                 {status} in {stop_took:?}; down {downtime:?}; {accepted_after} accepted by the new process",
                CALLS.len() + BURST
            ),
        },
    );
    println!(
        "[restart] client {:?}; then {} in {waited:?}; {} duplicates at the mock (stats); total {:?}",
        run.elapsed,
        if complete {
            "everything at the mock"
        } else {
            "the server settled without everything at the mock"
        },
        mock.stats().accepted_duplicates(),
        started.elapsed()
    );
    let (status, _) = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "server exit {status}");
    report("analytics-python restart", &checks);
}
