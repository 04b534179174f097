//! Harness for the durability tests (`tests/durability.rs`):
//!
//! - [`Mixpanel`]: a mock Mixpanel on `127.0.0.1:0`, written on raw TCP (a small
//!   HTTP/1.1 server) so it can do what a real network does to a client: answer
//!   5xx/429, answer after the client's timeout, or close the connection without
//!   answering. It counts a record as *accepted* only when a success answer for it
//!   was written to a live connection (not a slow answer the client gave up on,
//!   not a dropped connection, not an answer to a process that was killed).
//! - [`ServerProcess`]: the real `mixpanel-actions` binary as a child process, on a
//!   configuration file in a temporary directory; started, SIGKILLed, SIGTERMed
//!   and restarted on the same `data_dir`.
//! - [`Http`]: a client that talks to it as a Segment SDK does, and to its admin API.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead as _, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The admin token every test configuration uses.
pub const ADMIN: &str = "durability-admin-token-0123";

/// Polling interval of every wait.
pub const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// The mock Mixpanel
// ---------------------------------------------------------------------------

/// Random faults, drawn per request with the mock's seeded generator.
#[derive(Clone, Copy, Debug)]
pub struct FaultMix {
    /// Share of `500` answers.
    pub p500: f64,
    /// Share of `429` answers with `Retry-After: 1`.
    pub p429: f64,
    /// Share of success answers sent only after `slow` (beyond the client timeout).
    pub p_slow: f64,
    /// Share of requests read, then the connection closed without an answer.
    pub p_drop: f64,
    pub slow: Duration,
}

/// A one-off answer, used (in arrival order) before the [`Behavior`]: see
/// [`Mixpanel::script`].
#[derive(Clone, Copy, Debug)]
pub struct Scripted {
    pub status: u16,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

/// How the mock answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Mixpanel's success answers (strict `/import` refuses the [`Mixpanel::reject`]ed
    /// insert ids with `failed_records`).
    Ok,
    /// This status and error text for every request.
    Status(u16, String),
    /// Random faults, else [`Behavior::Ok`].
    Faults(FaultMix),
}

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// This status was written to the client.
    Answered(u16),
    /// A 429 with `Retry-After` was written.
    TooMany,
    /// A success answer was sent after the client's timeout (not accepted).
    Slow,
    /// The connection was closed without an answer.
    Dropped,
    /// The connection belonged to a server process killed since (see [`Mixpanel::cut`]).
    Stale,
    /// Writing the answer failed.
    WriteFailed,
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Req {
    pub path: String,
    pub query: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    /// The `/import` array, or the form `data` (one object or an array).
    pub records: Vec<Value>,
    pub fate: Fate,
    /// Indexes of the records Mixpanel accepted (empty unless a success answer was
    /// written).
    pub accepted: Vec<usize>,
    /// Arrival order over every request of this mock (0, 1, ...): when the whole
    /// request was read, before any hold or latency.
    pub seq: u64,
    /// When the whole request was read.
    pub arrived: Instant,
    /// When its answer was about to be written (after hold and latency; for a
    /// dropped or stale request, when it was given up).
    pub answered: Instant,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The accepted records.
    pub fn accepted_records(&self) -> impl Iterator<Item = &Value> {
        self.accepted.iter().filter_map(|&i| self.records.get(i))
    }
}

/// `properties.$insert_id` of a record, else its `$distinct_id` (`/engage`).
pub fn record_key(record: &Value) -> String {
    record["properties"]["$insert_id"]
        .as_str()
        .or_else(|| record["$distinct_id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Counts over everything the mock received.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: usize,
    pub fates: HashMap<Fate, usize>,
    /// `/import` records accepted, counting repeats.
    pub accepted_records: usize,
    /// Distinct `/import` insert ids accepted.
    pub accepted_unique: usize,
    /// `/import` records received (any fate), counting repeats.
    pub received_records: usize,
    pub received_unique: usize,
}

impl Stats {
    /// Records accepted more than once.
    pub fn accepted_duplicates(&self) -> usize {
        self.accepted_records - self.accepted_unique
    }

    pub fn received_duplicates(&self) -> usize {
        self.received_records - self.received_unique
    }

    pub fn fate(&self, fate: Fate) -> usize {
        self.fates.get(&fate).copied().unwrap_or(0)
    }
}

struct Inner {
    behavior: Behavior,
    latency: Duration,
    reject: HashSet<String>,
    rng: StdRng,
    log: Vec<Req>,
    /// `/import` insert id -> times accepted.
    accepted: HashMap<String, u32>,
    /// `/import` insert id -> times received.
    received: HashMap<String, u32>,
    in_flight: usize,
    /// Requests received and not answered yet: like `in_flight`, but a request
    /// leaves it just *before* its answer is written, so the client cannot have
    /// seen the answer while it is counted (no overcount when the client's next
    /// request arrives before the bookkeeping of the last answer).
    open: usize,
    /// The most `open` requests at once since the start (or the last reset).
    max_in_flight: usize,
    /// Arrival number of the next request.
    next_seq: u64,
    /// One-off answers taken by the next arrivals, before `behavior`.
    script: VecDeque<Scripted>,
    /// Strict `/import` refuses records whose `$insert_id` breaks Mixpanel's rule
    /// ([`Mixpanel::enforce_insert_ids`]).
    insert_id_rule: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped by [`Mixpanel::cut`]; connections of an older generation get no answer.
    generation: AtomicU64,
    /// While true, requests wait before being answered ([`Mixpanel::hold`]).
    hold: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// A mock Mixpanel on loopback.
pub struct Mixpanel {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Mixpanel {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Mixpanel {
    /// Starts answering [`Behavior::Ok`]; `seed` drives the fault draws.
    pub async fn start(seed: u64) -> Mixpanel {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock address");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                behavior: Behavior::Ok,
                latency: Duration::ZERO,
                reject: HashSet::new(),
                rng: StdRng::seed_from_u64(seed),
                log: Vec::new(),
                accepted: HashMap::new(),
                received: HashMap::new(),
                in_flight: 0,
                open: 0,
                max_in_flight: 0,
                next_seq: 0,
                script: VecDeque::new(),
                insert_id_rule: false,
            }),
            generation: AtomicU64::new(0),
            hold: tokio::sync::watch::Sender::new(false),
        });
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(accept_shared.clone(), stream));
            }
        });
        Mixpanel { addr, shared, accept }
    }

    /// The `api_base_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        self.shared.with(|s| s.behavior = behavior);
    }

    /// Delay before every answer (and before every drop).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.with(|s| s.latency = latency);
    }

    /// While `held`, requests are received but not answered (they stay in
    /// flight); releasing answers them.
    pub fn hold(&self, held: bool) {
        self.shared.hold.send_replace(held);
    }

    /// Strict `/import` refuses records with these insert ids (`failed_records`).
    pub fn reject(&self, ids: impl IntoIterator<Item = String>) {
        self.shared.with(|s| s.reject.extend(ids));
    }

    pub fn clear_rejects(&self) {
        self.shared.with(|s| s.reject.clear());
    }

    /// While on, strict `/import` (`?strict=1`) refuses, as Mixpanel does, every
    /// record whose `properties.$insert_id` is not 1-36 characters of
    /// `[A-Za-z0-9-]` ([`valid_insert_id`]; a record without one is accepted, the
    /// id being optional): a 400 naming them in `failed_records` (field
    /// `properties.$insert_id`), the other records imported. Off by default.
    pub fn enforce_insert_ids(&self, on: bool) {
        self.shared.with(|s| s.insert_id_rule = on);
    }

    /// The server process was killed: requests of connections opened so far are
    /// never answered (the process that sent them cannot read an answer).
    pub fn cut(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shared.with(|s| s.in_flight)
    }

    /// The most requests in flight at the same time (received, answer not begun
    /// to be written) since the start or the last [`Mixpanel::reset_max_in_flight`].
    pub fn max_in_flight(&self) -> usize {
        self.shared.with(|s| s.max_in_flight)
    }

    /// Restarts [`Mixpanel::max_in_flight`] from the requests in flight now.
    pub fn reset_max_in_flight(&self) {
        self.shared.with(|s| s.max_in_flight = s.open);
    }

    /// The next requests to arrive (any path) get these answers, one each in
    /// order, instead of the [`Behavior`]; a 2xx status is the normal success
    /// answer, a 429 counts as [`Fate::TooMany`].
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.shared.with(|s| s.script.extend(answers));
    }

    /// Scripted answers not used yet.
    pub fn script_left(&self) -> usize {
        self.shared.with(|s| s.script.len())
    }

    /// Distinct `/import` insert ids accepted so far (cheap: no copy, no scan).
    pub fn accepted_unique(&self) -> usize {
        self.shared.with(|s| s.accepted.len())
    }

    /// Every request handled so far (answered, dropped...), in completion order.
    pub fn log(&self) -> Vec<Req> {
        self.shared.with(|s| s.log.clone())
    }

    /// Runs `f` on every request handled so far (answered, dropped...), in
    /// completion order, without copying them.
    pub fn inspect<T>(&self, f: impl FnOnce(&[Req]) -> T) -> T {
        self.shared.with(|s| f(&s.log))
    }

    /// Times `/import` accepted a record with this insert id.
    pub fn accepted_count(&self, insert_id: &str) -> u32 {
        self.shared.with(|s| s.accepted.get(insert_id).copied().unwrap_or(0))
    }

    /// The ids of `wanted` not accepted by `/import` yet.
    pub fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        self.shared.with(|s| {
            wanted
                .into_iter()
                .filter(|id| !s.accepted.contains_key(id.as_str()))
                .cloned()
                .collect()
        })
    }

    pub fn stats(&self) -> Stats {
        self.shared.with(|s| {
            let mut fates = HashMap::new();
            for r in &s.log {
                *fates.entry(r.fate).or_insert(0) += 1;
            }
            Stats {
                requests: s.log.len(),
                fates,
                accepted_records: s.accepted.values().map(|&n| n as usize).sum(),
                accepted_unique: s.accepted.len(),
                received_records: s.received.values().map(|&n| n as usize).sum(),
                received_unique: s.received.len(),
            }
        })
    }

    /// Polls until every id of `wanted` was accepted by `/import`; the ids still
    /// missing at the deadline otherwise.
    pub async fn wait_accepted(&self, wanted: &HashSet<String>, within: Duration) -> Result<Duration, Vec<String>> {
        let started = Instant::now();
        loop {
            let missing = self.missing(wanted);
            if missing.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                return Err(missing);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One parsed HTTP/1.1 request.
struct RawRequest {
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> Option<RawRequest> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let body = if let Some(n) = headers.get("content-length") {
        let mut body = vec![0; n.parse().ok()?];
        r.read_exact(&mut body).await.ok()?;
        body
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            line.clear();
            r.read_line(&mut line).await.ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await.ok()?;
            line.clear();
            r.read_line(&mut line).await.ok()?;
        }
        body
    } else {
        Vec::new()
    };
    Some(RawRequest { target, headers, body })
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out) {
        Ok(_) => out,
        Err(_) => Vec::new(),
    }
}

fn parse_records(path: &str, headers: &HashMap<String, String>, raw: &[u8]) -> Vec<Value> {
    let gzipped = headers
        .get("content-encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let body = if gzipped { gunzip(raw) } else { raw.to_vec() };
    let value = if path == "/import" {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == "data")
            .and_then(|(_, v)| serde_json::from_str(&v).ok())
            .unwrap_or(Value::Null)
    };
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The answer decided for one request.
struct Decision {
    fate: Fate,
    status: u16,
    retry_after: Option<u64>,
    body: Value,
    /// Records accepted if the answer is written.
    accepted: Vec<usize>,
    delay: Duration,
}

fn success(path: &str, query: &str, records: &[Value], reject: &HashSet<String>) -> Decision {
    let mut decision = Decision {
        fate: Fate::Answered(200),
        status: 200,
        retry_after: None,
        body: json!(1),
        accepted: (0..records.len()).collect(),
        delay: Duration::ZERO,
    };
    if path == "/import" {
        let strict = query.split('&').any(|p| p == "strict=1");
        let failed: Vec<usize> = (0..records.len())
            .filter(|&i| records.get(i).is_some_and(|r| reject.contains(&record_key(r))))
            .collect();
        if strict && !failed.is_empty() {
            decision.status = 400;
            decision.fate = Fate::Answered(400);
            decision.accepted.retain(|i| !failed.contains(i));
            let failed_records: Vec<Value> = failed
                .iter()
                .map(|&i| {
                    json!({
                        "index": i,
                        "$insert_id": records.get(i).map(record_key),
                        "field": "properties.time",
                        "message": format!("mock rejected record {i}"),
                    })
                })
                .collect();
            decision.body = json!({
                "code": 400,
                "error": "some data points in the request failed validation",
                "num_records_imported": records.len() - failed.len(),
                "status": "Bad Request",
                "failed_records": failed_records,
            });
        } else {
            decision.body = json!({"code": 200, "status": "OK", "num_records_imported": records.len()});
        }
    } else if query.split('&').any(|p| p == "verbose=1") {
        decision.body = json!({"status": 1, "error": null});
    }
    decision
}

fn failure(status: u16, text: &str) -> Decision {
    Decision {
        fate: Fate::Answered(status),
        status,
        retry_after: None,
        body: json!({"error": text, "status": 0}),
        accepted: Vec::new(),
        delay: Duration::ZERO,
    }
}

fn decide(s: &mut Inner, path: &str, query: &str, records: &[Value]) -> Decision {
    if let Some(scripted) = s.script.pop_front() {
        let mut d = if (200..300).contains(&scripted.status) {
            success(path, query, records, &s.reject)
        } else {
            failure(scripted.status, "mock scripted answer")
        };
        if scripted.status == 429 {
            d.fate = Fate::TooMany;
        }
        d.retry_after = scripted.retry_after;
        d.delay += s.latency;
        if s.insert_id_rule {
            insert_id_rule(&mut d, path, query, records);
        }
        return d;
    }
    let mut decision = match s.behavior.clone() {
        Behavior::Ok => success(path, query, records, &s.reject),
        Behavior::Status(status, text) => failure(status, &text),
        Behavior::Faults(mix) => {
            let x: f64 = s.rng.random();
            let t500 = mix.p500;
            let t429 = t500 + mix.p429;
            let t_slow = t429 + mix.p_slow;
            let t_drop = t_slow + mix.p_drop;
            if x < t500 {
                failure(500, "mock internal error")
            } else if x < t429 {
                let mut d = failure(429, "mock rate limit");
                d.fate = Fate::TooMany;
                d.retry_after = Some(1);
                d
            } else if x < t_slow {
                let mut d = success(path, query, records, &s.reject);
                d.fate = Fate::Slow;
                d.accepted.clear();
                d.delay = mix.slow;
                d
            } else if x < t_drop {
                let mut d = failure(0, "dropped");
                d.fate = Fate::Dropped;
                d
            } else {
                success(path, query, records, &s.reject)
            }
        }
    };
    decision.delay += s.latency;
    if s.insert_id_rule {
        insert_id_rule(&mut decision, path, query, records);
    }
    decision
}

/// Mixpanel's rule for `$insert_id`: 1 to 36 characters, each an ASCII letter,
/// digit or `-`.
pub fn valid_insert_id(id: &str) -> bool {
    (1..=36).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `record` breaks the `$insert_id` rule: present and not a
/// [`valid_insert_id`] string (absent is allowed: the id is optional).
pub fn breaks_insert_id_rule(record: &Value) -> bool {
    match record["properties"].get("$insert_id") {
        None | Some(Value::Null) => false,
        Some(Value::String(id)) => !valid_insert_id(id),
        Some(_) => true,
    }
}

/// Applies the `$insert_id` rule to a success answer of strict `/import` (an
/// answer that [`success`] decided, with or without [`Mixpanel::reject`]ed
/// records): Mixpanel's strict-mode 400, the records breaking the rule added to
/// `failed_records` and not accepted.
fn insert_id_rule(d: &mut Decision, path: &str, query: &str, records: &[Value]) {
    let strict = query.split('&').any(|p| p == "strict=1");
    let from_success =
        d.fate == Fate::Answered(200) || (d.fate == Fate::Answered(400) && d.body.get("failed_records").is_some());
    if path != "/import" || !strict || !from_success {
        return;
    }
    let invalid: Vec<usize> = (0..records.len())
        .filter(|&i| records.get(i).is_some_and(breaks_insert_id_rule))
        .collect();
    if invalid.is_empty() {
        return;
    }
    let mut failed: Vec<Value> = d
        .body
        .get("failed_records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for &i in &invalid {
        if failed.iter().any(|f| f["index"].as_u64() == Some(i as u64)) {
            continue;
        }
        failed.push(json!({
            "index": i,
            "$insert_id": records.get(i).map_or(Value::Null, |r| r["properties"]["$insert_id"].clone()),
            "field": "properties.$insert_id",
            "message": "'properties.$insert_id' is invalid: must be 1-36 characters of [A-Za-z0-9-]",
        }));
    }
    failed.sort_by_key(|f| f["index"].as_u64());
    d.accepted.retain(|i| !invalid.contains(i));
    d.status = 400;
    d.fate = Fate::Answered(400);
    d.body = json!({
        "code": 400,
        "num_records_imported": records.len() - failed.len(),
        "failed_records": failed,
        "status": "Bad Request",
        "error": "some data points in the request failed validation",
    });
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let generation = shared.generation.load(Ordering::SeqCst);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Some(request) = read_request(&mut read).await {
        let (path, query) = match request.target.split_once('?') {
            Some((p, q)) => (p.to_owned(), q.to_owned()),
            None => (request.target.clone(), String::new()),
        };
        let records = parse_records(&path, &request.headers, &request.body);
        let arrived = Instant::now();
        let (decision, seq) = shared.with(|s| {
            s.in_flight += 1;
            s.open += 1;
            s.max_in_flight = s.max_in_flight.max(s.open);
            let seq = s.next_seq;
            s.next_seq += 1;
            if path == "/import" {
                for r in &records {
                    *s.received.entry(record_key(r)).or_insert(0) += 1;
                }
            }
            (decide(s, &path, &query, &records), seq)
        });
        let _ = shared.hold.subscribe().wait_for(|held| !held).await;
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        // Taken before the answer is written: the client cannot have read it yet.
        let answered = Instant::now();
        shared.with(|s| s.open -= 1);
        let mut fate = decision.fate;
        let mut accepted = decision.accepted;
        let keep_open = fate != Fate::Dropped;
        if fate == Fate::Dropped {
            accepted.clear();
        } else if shared.generation.load(Ordering::SeqCst) != generation {
            fate = Fate::Stale;
            accepted.clear();
        } else {
            let body = decision.body.to_string();
            let mut head = format!(
                "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                decision.status,
                reason(decision.status),
                body.len()
            );
            if let Some(secs) = decision.retry_after {
                head.push_str(&format!("retry-after: {secs}\r\n"));
            }
            head.push_str("\r\n");
            head.push_str(&body);
            let written = write.write_all(head.as_bytes()).await.and(write.flush().await);
            if written.is_err() {
                fate = Fate::WriteFailed;
                accepted.clear();
            }
        }
        let stale = fate == Fate::Stale;
        shared.with(|s| {
            s.in_flight -= 1;
            if path == "/import" {
                for &i in &accepted {
                    if let Some(r) = records.get(i) {
                        *s.accepted.entry(record_key(r)).or_insert(0) += 1;
                    }
                }
            }
            s.log.push(Req {
                path,
                query,
                headers: request.headers.clone(),
                records,
                fate,
                accepted,
                seq,
                arrived,
                answered,
            });
        });
        let close = request
            .headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if !keep_open || stale || close || fate == Fate::WriteFailed {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The server binary
// ---------------------------------------------------------------------------

/// A TOML basic string (JSON escapes are valid TOML escapes).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// Writes `text` as `config.toml` in `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write configuration");
    path
}

/// The real server as a child process.
pub struct ServerProcess {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub http: Http,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ServerProcess {
    /// Starts `mixpanel-actions serve --config <config>` and waits until it
    /// listens and answers `/healthz`.
    pub async fn start(config: &Path) -> ServerProcess {
        ServerProcess::start_with_env(config, &[]).await
    }

    /// [`ServerProcess::start`] with more environment variables.
    pub async fn start_with_env(config: &Path, vars: &[(&str, &str)]) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixpanel-actions"));
        cmd.envs(vars.iter().copied());
        cmd.args(["--log-format", "json", "serve", "--config"])
            .arg(config)
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
        let pid = child.id();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let address: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        if let Some(stderr) = child.stderr.take() {
            let (logs, address) = (logs.clone(), address.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["message"] == "listening" {
                            if let Some(a) = v["address"].as_str().and_then(|a| a.parse().ok()) {
                                *address.lock().expect("address") = Some(a);
                            }
                        }
                    }
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Some(a) = *address.lock().expect("address") {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "the server exited with {status} before listening:\n{}",
                    logs.lock().expect("logs").join("\n")
                );
            }
            assert!(Instant::now() < deadline, "the server did not listen within 30s");
            tokio::time::sleep(POLL).await;
        };
        let http = Http::new(addr);
        loop {
            if http.get("/healthz").await.is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /healthz within 30s"
            );
            tokio::time::sleep(POLL).await;
        }
        ServerProcess {
            child: Some(child),
            pid,
            addr,
            http,
            logs,
        }
    }

    /// The exit status if the process has exited (reaped), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server")
    }

    /// SIGTERM, then waits up to `within` for the exit: the status and how long it took.
    pub async fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.pid);
        let child = self.child.as_mut().expect("server running");
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "the server did not exit within {within:?} of SIGTERM:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the process logged so far (JSON lines).
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// The log lines whose `message` is `message`, parsed.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// A client of the server
// ---------------------------------------------------------------------------

/// A server answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Talks to one server process.
#[derive(Clone, Debug)]
pub struct Http {
    pub base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .no_proxy()
                .build()
                .expect("http client"),
        }
    }

    async fn finish(builder: reqwest::RequestBuilder) -> Result<Answer, String> {
        let response = builder.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            text,
            json,
        })
    }

    /// `POST /v1/batch` as an SDK: write key as the Basic auth user name.
    pub async fn batch(&self, write_key: &str, events: &[Value]) -> Result<Answer, String> {
        let body = json!({ "batch": events });
        Http::finish(
            self.client
                .post(format!("{}/v1/batch", self.base))
                .basic_auth(write_key, Some(""))
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Result<Answer, String> {
        Http::finish(self.client.get(format!("{}{path}", self.base))).await
    }

    /// An admin request with the bearer token; panics on a transport failure.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut builder = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            builder = builder.json(&b);
        }
        Http::finish(builder).await.expect("admin request")
    }

    /// `GET /admin/dead-letters?<query>`.
    pub async fn dead_letters(&self, query: &str) -> Answer {
        let answer = self
            .admin(reqwest::Method::GET, &format!("/admin/dead-letters?{query}"), None)
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer
    }

    /// `/metrics` parsed: metric name -> sum over its label sets.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let answer = self.get("/metrics").await.expect("GET /metrics");
        assert_eq!(answer.status, 200, "{answer:?}");
        parse_prometheus(&answer.text)
    }
}

/// Prometheus text: metric name -> sum of its samples over label sets.
pub fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// A track event with this messageId, tagged with the write key it is sent with.
pub fn track(message_id: &str, write_key: &str) -> Value {
    json!({
        "type": "track",
        "userId": format!("user-{message_id}"),
        "event": "Durable Event",
        "messageId": message_id,
        "properties": {"wk": write_key, "n": 1},
    })
}

/// An identify event (Mixpanel: a `$identify` on `/track` and a `$set` on `/engage`).
pub fn identify(user: &str, write_key: &str) -> Value {
    json!({
        "type": "identify",
        "userId": user,
        "anonymousId": format!("anon-{user}"),
        "messageId": format!("msg-{user}"),
        "traits": {"wk": write_key, "plan": "pro"},
    })
}

/// The seed of the random choices: `DURABILITY_SEED` when set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `Basic base64(credential)`.
pub fn basic(credential: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credential))
}

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

/// Short retries, a generous request timeout.
pub const DELIVERY: &str = r#"request_timeout = "5s"
backoff_initial = "20ms"
backoff_max = "200ms""#;

/// A configuration: loopback, `data_dir` and the config file in `dir`, the admin
/// token, then `top` (more top-level keys), the `[delivery]` and `[spool]` tables
/// and the destinations.
pub fn config(dir: &Path, top: &str, delivery: &str, spool: &str, destinations: &[String]) -> PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {data}\nadmin_token = {admin}\n{top}\n\n[delivery]\n{delivery}\n\n\
         [spool]\n{spool}\n\n{dests}",
        data = toml_str(&dir.join("data").to_string_lossy()),
        admin = toml_str(ADMIN),
        dests = destinations.join("\n"),
    );
    write_config(dir, &text)
}

/// A destination `id` fed by `keys`, token `tok-<id>`, secret `sec-<id>`, sending
/// to `mock`; `extra` lines are appended.
pub fn destination(id: &str, keys: &[&str], mock: &Mixpanel, extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| toml_str(k)).collect();
    format!(
        "[[destinations]]\nid = {}\nwrite_keys = [{}]\nproject_token = \"tok-{id}\"\napi_secret = \"sec-{id}\"\n\
         api_base_url = {}\n{extra}\n",
        toml_str(id),
        keys.join(", "),
        toml_str(&mock.url()),
    )
}

pub fn ids(events: &[Value]) -> impl Iterator<Item = String> + '_ {
    events.iter().filter_map(|e| e["messageId"].as_str().map(str::to_owned))
}

/// Polls `check` until it is true; panics with `what` after `within`.
pub async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
    started.elapsed()
}

// ---------------------------------------------------------------------------
// A load of SDK clients that survives the server going away
// ---------------------------------------------------------------------------

/// One `/v1/batch` request to make.
pub struct Batch {
    pub write_key: String,
    pub events: Vec<Value>,
}

/// Batches to post until each was answered 200, shared by concurrent clients.
/// A batch that fails (connection refused or reset, any non-200) goes back to
/// the queue and is sent again with the same messageIds, as an SDK does.
pub struct Load {
    pub pending: Mutex<VecDeque<Batch>>,
    /// Batches not answered 200 yet.
    pub outstanding: AtomicUsize,
    /// messageIds answered 200, per write key.
    pub accepted: Mutex<HashMap<String, HashSet<String>>>,
    pub ok_batches: AtomicUsize,
    pub failed_posts: AtomicUsize,
    /// Posts under way.
    pub posting: AtomicUsize,
    /// The server to post to; `None` while it is down.
    pub target: Mutex<Option<Http>>,
}

impl Load {
    pub fn new(batches: Vec<Batch>, target: Http) -> Arc<Load> {
        Arc::new(Load {
            outstanding: AtomicUsize::new(batches.len()),
            pending: Mutex::new(batches.into()),
            accepted: Mutex::new(HashMap::new()),
            ok_batches: AtomicUsize::new(0),
            failed_posts: AtomicUsize::new(0),
            posting: AtomicUsize::new(0),
            target: Mutex::new(Some(target)),
        })
    }

    pub fn set_target(&self, target: Option<Http>) {
        *self.target.lock().expect("target") = target;
    }

    /// Every messageId answered 200 (any write key).
    pub fn accepted_ids(&self) -> HashSet<String> {
        self.accepted
            .lock()
            .expect("accepted")
            .values()
            .flat_map(|s| s.iter().cloned())
            .collect()
    }

    pub fn accepted_for(&self, key: &str) -> HashSet<String> {
        self.accepted
            .lock()
            .expect("accepted")
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub fn done(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) == 0
    }

    /// Starts `n` clients.
    pub fn spawn_clients(self: &Arc<Self>, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n).map(|_| tokio::spawn(sdk_client(self.clone()))).collect()
    }
}

pub async fn sdk_client(load: Arc<Load>) {
    while !load.done() {
        let next = load.pending.lock().expect("pending").pop_front();
        let Some(batch) = next else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let target = load.target.lock().expect("target").clone();
        let ok = match target {
            Some(http) => {
                load.posting.fetch_add(1, Ordering::SeqCst);
                let answer = http.batch(&batch.write_key, &batch.events).await;
                load.posting.fetch_sub(1, Ordering::SeqCst);
                matches!(answer, Ok(a) if a.status == 200)
            }
            None => false,
        };
        if ok {
            load.accepted
                .lock()
                .expect("accepted")
                .entry(batch.write_key.clone())
                .or_default()
                .extend(ids(&batch.events));
            load.ok_batches.fetch_add(1, Ordering::SeqCst);
            load.outstanding.fetch_sub(1, Ordering::SeqCst);
        } else {
            load.failed_posts.fetch_add(1, Ordering::SeqCst);
            load.pending.lock().expect("pending").push_front(batch);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn join_clients(clients: Vec<tokio::task::JoinHandle<()>>, within: Duration) {
    tokio::time::timeout(within, futures_util::future::join_all(clients))
        .await
        .expect("the clients got every batch answered 200 in time");
}

/// A temporary directory for one server's configuration and data.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}
