//! Test harness shared by the black-box HTTP tests:
//!
//! - [`Mock`]: a real HTTP server on `127.0.0.1:0` that speaks Mixpanel's ingestion
//!   API (`/import` with a JSON array body, possibly gzip'd; `/track`, `/engage`,
//!   `/groups` with a form body `data=<json>`), records every request, and answers
//!   with scripted replies when told to.
//! - [`Server`]: the real `mixpanel-actions` server, started in-process on
//!   `127.0.0.1:0` from a TOML configuration file written to a temporary directory,
//!   with short delivery timeouts and backoff; stopped through a oneshot channel.
//! - [`Client`]: a plain HTTP client that talks to the server as a Segment SDK does
//!   (Basic auth with the write key as user name and an empty password).

#![allow(dead_code)]

pub mod preview_command;

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// The mock Mixpanel
// ---------------------------------------------------------------------------

/// An answer the mock gives instead of its default one.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Mixpanel's success answer for the endpoint.
    Ok,
    /// This status with this body.
    Status(u16, String),
    /// This status with a `Retry-After` header (seconds) and an error body.
    RetryAfter(u16, String),
    /// Strict `/import`: 400 with `failed_records` for these record indexes (the
    /// rest imported). Form endpoints: `{"status": 0, "error": ...}`.
    FailRecords(Vec<usize>),
    /// Wait this long, then answer [`Reply::Ok`] (to outlast the client timeout).
    Slow(Duration),
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string (`strict=1&project_id=...`).
    pub query: String,
    /// Header names lower-case.
    pub headers: HashMap<String, String>,
    /// The bytes on the wire.
    pub raw_body: Vec<u8>,
    /// The body after `Content-Encoding: gzip` was undone.
    pub body: Vec<u8>,
    /// `/import`: the decompressed body parsed as JSON (`Null` if it is not JSON).
    pub json: Value,
    /// Form endpoints: the `data` field parsed as JSON.
    pub data: Option<Value>,
    /// When the request arrived.
    pub at: Instant,
    /// The status the mock answered (or was about to answer, for slow replies).
    pub status: u16,
}

impl Recorded {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The Mixpanel records in the body: the `/import` array, or the form `data`
    /// (one object or an array of them).
    pub fn records(&self) -> Vec<Value> {
        let value = match &self.data {
            Some(d) => d.clone(),
            None => self.json.clone(),
        };
        match value {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => vec![other],
        }
    }

    /// `properties.$insert_id` of every record.
    pub fn insert_ids(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["properties"]["$insert_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[derive(Default)]
struct MockState {
    requests: Vec<Recorded>,
    /// Scripted replies per path, used first.
    scripted: HashMap<String, VecDeque<Reply>>,
    /// The reply per path once the script is used up.
    always: HashMap<String, Reply>,
    /// `/import` answers 413 to bodies with more records than this.
    max_records: Option<usize>,
}

/// A mock Mixpanel API on loopback.
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Mock {
    pub async fn start() -> Mock {
        let state = Arc::new(Mutex::new(MockState::default()));
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Mock {
            addr,
            state,
            stop: Some(stop),
        }
    }

    /// The base URL to configure as `api_base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut MockState) -> T) -> T {
        let mut guard = self.state.lock().expect("mock state");
        f(&mut guard)
    }

    /// Queues replies for `path` (`"/import"`, `"/track"`, ...), used in order
    /// before the default.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.with(|s| s.scripted.entry(path.to_owned()).or_default().extend(replies));
    }

    /// Every request to `path` gets `reply` once the script is used up.
    pub fn always(&self, path: &str, reply: Reply) {
        self.with(|s| {
            s.always.insert(path.to_owned(), reply);
        });
    }

    /// `/import` answers 413 to bodies with more than `n` records.
    pub fn max_records(&self, n: usize) {
        self.with(|s| s.max_records = Some(n));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// The requests to `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.with(|s| s.requests.iter().filter(|r| r.path == path).cloned().collect())
    }

    /// Forgets the recorded requests (scripts stay).
    pub fn clear(&self) {
        self.with(|s| s.requests.clear());
    }

    /// The records of every request to `path` that the mock accepted (2xx).
    pub fn accepted_records(&self, path: &str) -> Vec<Value> {
        self.requests_to(path)
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(Recorded::records)
            .collect()
    }

    /// Polls until `n` requests were received; panics after [`WAIT`].
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "mock received {} of {n} expected requests within {WAIT:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out) {
        Ok(_) => out,
        Err(_) => Vec::new(),
    }
}

fn ok_body(path: &str, query: &str, records: usize) -> (u16, Value) {
    if path == "/import" {
        (
            200,
            json!({"code": 200, "status": "OK", "num_records_imported": records}),
        )
    } else if query.contains("verbose=1") {
        (200, json!({"status": 1, "error": null}))
    } else {
        (200, json!(1))
    }
}

fn response(status: u16, headers: &[(&str, String)], body: Value) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Body::from(body.to_string())).expect("mock response")
}

async fn handle(
    State(state): State<Arc<Mutex<MockState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let header_map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let gzipped = header_map
        .get("content-encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let body = if gzipped { gunzip(&raw) } else { raw.to_vec() };
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let is_form = matches!(path.as_str(), "/track" | "/engage" | "/groups");
    let (json, data) = if is_form {
        let data = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "data")
            .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok());
        (Value::Null, data)
    } else {
        (serde_json::from_slice(&body).unwrap_or(Value::Null), None)
    };
    let records = match (&data, &json) {
        (Some(Value::Array(items)), _) | (None, Value::Array(items)) => items.len(),
        (Some(_), _) => 1,
        _ => 0,
    };
    let mut recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: header_map,
        raw_body: raw.to_vec(),
        body,
        json: json.clone(),
        data,
        at: Instant::now(),
        status: 0,
    };

    // Decide the answer and record the request, without holding the lock across
    // an await.
    let (reply, too_many) = {
        let mut s = state.lock().expect("mock state");
        let reply = s
            .scripted
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.always.get(&path).cloned())
            .unwrap_or(Reply::Ok);
        let too_many = path == "/import" && s.max_records.is_some_and(|max| records > max);
        (reply, too_many)
    };
    let (status, extra_headers, body, delay) = if too_many {
        (
            413,
            Vec::new(),
            json!({"code": 413, "error": "request body too large", "status": "Payload Too Large"}),
            None,
        )
    } else {
        match reply {
            Reply::Ok => {
                let (s, b) = ok_body(&path, &query, records);
                (s, Vec::new(), b, None)
            }
            Reply::Slow(d) => {
                let (s, b) = ok_body(&path, &query, records);
                (s, Vec::new(), b, Some(d))
            }
            Reply::Status(s, text) => (s, Vec::new(), json!({"error": text, "status": 0}), None),
            Reply::RetryAfter(s, secs) => (
                s,
                vec![("retry-after", secs)],
                json!({"error": "slow down", "status": 0}),
                None,
            ),
            Reply::FailRecords(indexes) if path == "/import" => {
                let array = json.as_array().cloned().unwrap_or_default();
                let failed: Vec<Value> = indexes
                    .iter()
                    .filter_map(|&i| {
                        array.get(i).map(|r| {
                            json!({
                                "index": i,
                                "$insert_id": r["properties"]["$insert_id"],
                                "field": "properties.time",
                                "message": format!("mock rejected record {i}"),
                            })
                        })
                    })
                    .collect();
                let strict = query.split('&').any(|p| p == "strict=1");
                if strict {
                    (
                        400,
                        Vec::new(),
                        json!({
                            "code": 400,
                            "error": "some data points in the request failed validation",
                            "num_records_imported": array.len() - failed.len(),
                            "status": "Bad Request",
                            "failed_records": failed,
                        }),
                        None,
                    )
                } else {
                    // Without strict mode Mixpanel drops bad records silently.
                    (
                        200,
                        Vec::new(),
                        json!({"code": 200, "status": "OK", "num_records_imported": array.len() - failed.len()}),
                        None,
                    )
                }
            }
            Reply::FailRecords(_) => (
                200,
                Vec::new(),
                json!({"status": 0, "error": "mock refused the update"}),
                None,
            ),
        }
    };
    recorded.status = status;
    state.lock().expect("mock state").requests.push(recorded);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response(status, &extra_headers, body)
}

// ---------------------------------------------------------------------------
// Configuration: JSON values written as a TOML file
// ---------------------------------------------------------------------------

fn toml_string(s: &str) -> String {
    // JSON string escapes (\" \\ \n \t \uXXXX) are valid TOML basic-string escapes,
    // and serde_json never writes `\/`.
    serde_json::to_string(s).expect("string")
}

/// A JSON value as a TOML inline value (TOML has no null: nulls are refused).
pub fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => panic!("TOML has no null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => toml_string(s),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{} = {}", toml_string(k), toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A whole configuration object as a TOML document (one `key = value` line per
/// top-level key).
pub fn toml_document(config: &Value) -> String {
    let map = config.as_object().expect("configuration is an object");
    map.iter()
        .map(|(k, v)| format!("{} = {}\n", toml_string(k), toml_value(v)))
        .collect()
}

/// A destination routed from `write_key`, with a project token, sending to `mock`.
pub fn destination(id: &str, write_key: &str, mock: &Mock) -> Value {
    json!({
        "id": id,
        "write_keys": [write_key],
        "project_token": format!("tok-{id}"),
        "api_base_url": mock.url(),
    })
}

/// Fills in what every test configuration shares: loopback, short delivery
/// timeouts and backoff. Keys the test gave win.
fn with_defaults(mut config: Value) -> Value {
    let map = config.as_object_mut().expect("configuration is an object");
    map.entry("listen").or_insert(json!("127.0.0.1:0"));
    let delivery = map.entry("delivery").or_insert(json!({}));
    let delivery = delivery.as_object_mut().expect("delivery is a table");
    for (k, v) in [
        ("request_timeout", "1s"),
        ("retry_budget", "2s"),
        ("backoff_initial", "10ms"),
        ("backoff_max", "50ms"),
    ] {
        delivery.entry(k).or_insert(json!(v));
    }
    config
}

/// The same configuration for builds that know `delivery.mode` and `data_dir`:
/// synchronous (`direct`) delivery, which these tests assert, and any files in
/// the test's own temporary directory.
fn with_direct_mode(mut config: Value, data_dir: &Path) -> Value {
    let map = config.as_object_mut().expect("configuration is an object");
    map.entry("data_dir").or_insert(json!(data_dir.to_string_lossy()));
    if let Some(delivery) = map.get_mut("delivery").and_then(Value::as_object_mut) {
        delivery.entry("mode").or_insert(json!("direct"));
    }
    config
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// The real server, in-process.
pub struct Server {
    pub addr: SocketAddr,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server on `config` (a JSON object written as TOML, with the
    /// shared defaults filled in).
    pub async fn start(config: Value) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = with_defaults(config);
        let candidates = [
            toml_document(&with_direct_mode(config.clone(), dir.path())),
            toml_document(&config),
        ];
        Server::start_in(dir, &candidates).await
    }

    /// Starts the server on a TOML document as written (its `[delivery]` table
    /// should say `mode = "direct"`); `data_dir` is set to a temporary directory.
    pub async fn start_toml(text: &str) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = toml_string(&dir.path().to_string_lossy());
        let legacy: String = text
            .lines()
            .filter(|l| l.trim() != r#"mode = "direct""#)
            .map(|l| format!("{l}\n"))
            .collect();
        let candidates = [format!("data_dir = {data_dir}\n{text}"), legacy];
        Server::start_in(dir, &candidates).await
    }

    /// Loads the first candidate configuration this build accepts. A later
    /// candidate is tried only when an earlier one has keys this build does not
    /// know (`delivery.mode` and `data_dir` arrived with the spool).
    async fn start_in(dir: tempfile::TempDir, candidates: &[String]) -> Server {
        let path = dir.path().join("config.toml");
        let mut config = None;
        let mut first_error = None;
        for text in candidates {
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write configuration");
            match mixpanel_actions::config::load(&path) {
                Ok(c) => {
                    config = Some(c);
                    break;
                }
                Err(e) => {
                    let unknown_key = e.to_string().contains("unknown field");
                    first_error.get_or_insert_with(|| format!("{e}\n---\n{text}"));
                    if !unknown_key {
                        break;
                    }
                }
            }
        }
        let Some(config) = config else {
            panic!("configuration refused: {}", first_error.unwrap_or_default());
        };
        let state = mixpanel_actions::server::state(config).expect("server state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind server");
        let addr = listener.local_addr().expect("server address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mixpanel_actions::server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let server = Server {
            addr,
            client: Client::new(addr),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        let health = server.client.get("/healthz").await;
        assert_eq!(health.status, 200, "server did not come up: {health:?}");
        server
    }

    /// Asks the server to stop and waits for `serve` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("server task");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("server stopped in time")
            .expect("server task did not panic")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// A client that talks like a Segment SDK
// ---------------------------------------------------------------------------

/// A server answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct Send {
    pub method: Option<Method>,
    pub path: String,
    /// Basic auth user name (empty password), if any.
    pub write_key: Option<String>,
    /// A raw `Authorization` header instead of the write key.
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
}

impl Send {
    /// `POST path` with a JSON body and the write key as Basic auth.
    pub fn post(path: &str, write_key: &str, body: &Value) -> Send {
        Send {
            path: path.to_owned(),
            write_key: Some(write_key.to_owned()),
            body: serde_json::to_vec(body).expect("json"),
            ..Send::default()
        }
    }

    pub fn raw(path: &str, write_key: Option<&str>, body: impl Into<Vec<u8>>) -> Send {
        Send {
            path: path.to_owned(),
            write_key: write_key.map(str::to_owned),
            body: body.into(),
            ..Send::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .no_proxy()
                .build()
                .expect("http client"),
        }
    }

    pub async fn send(&self, req: Send) -> Answer {
        let method = req.method.clone().unwrap_or(Method::POST);
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method");
        let mut builder = self.http.request(method, format!("{}{}", self.base, req.path)).header(
            "content-type",
            req.content_type.as_deref().unwrap_or("application/json"),
        );
        if let Some(key) = &req.write_key {
            builder = builder.basic_auth(key, Some(""));
        }
        if let Some(auth) = &req.authorization {
            builder = builder.header("authorization", auth);
        }
        if let Some(enc) = &req.content_encoding {
            builder = builder.header("content-encoding", enc);
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        let response = builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {} failed: {e}", req.method.unwrap_or(Method::POST), req.path));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let text = response.text().await.expect("answer body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    /// `POST path` with a JSON body, write key as Basic auth.
    pub async fn post(&self, path: &str, write_key: &str, body: &Value) -> Answer {
        self.send(Send::post(path, write_key, body)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Send {
            method: Some(Method::GET),
            path: path.to_owned(),
            ..Send::default()
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Gzips bytes (as an SDK would compress a body).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// A JSON value as request body bytes.
pub fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

/// `Basic base64(credential)`.
pub fn basic(credential: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credential))
}

/// A track event with a fixed messageId.
pub fn track(user: &str, event: &str, message_id: &str) -> Value {
    json!({
        "type": "track",
        "userId": user,
        "event": event,
        "messageId": message_id,
        "properties": {"n": 1},
    })
}

/// The object members of `v` (an empty map for non-objects).
pub fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
