//! Load benchmark: the real server binary against a local mock Mixpanel, fed
//! `/v1/batch` requests of 100 realistic track events by concurrent clients.
//!
//! For `delivery.mode = "spool"` and `"direct"`, in one run, it reports:
//! - accepted events/s (answered 200) and end-to-end events/s (records that
//!   reached the mock) at full load;
//! - p50/p99 accept latency at 25,000 events/s offered (half the 50k aim);
//! - peak RSS of the server process.
//!
//! Run: `cargo bench --bench load` (builds the release binary first).
//! Bounded: each phase runs for a few seconds, loopback only.

// A benchmark harness, not product code: a failed set-up step aborts the run.
#![allow(clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

const BATCH: usize = 100;
const PHASE: Duration = Duration::from_secs(6);
const CLIENTS: usize = 16;
/// The paced phase's offered rate: half of the 50,000 events/s aim.
const PACED_RATE: f64 = 25_000.0;

#[derive(Default)]
struct Mock {
    records: AtomicU64,
    ids: Mutex<HashSet<String>>,
}

fn gunzip(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(body).read_to_end(&mut out);
        out
    } else {
        body.to_vec()
    }
}

/// The `$insert_id` values in an `/import` body (compact JSON, as the server
/// sends it).
fn insert_ids(body: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\"$insert_id\":\"";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = body
        .get(i..)
        .and_then(|rest| rest.windows(KEY.len()).position(|w| w == KEY))
    {
        let start = i + at + KEY.len();
        let len = body
            .get(start..)
            .and_then(|r| r.iter().position(|&b| b == b'"'))
            .unwrap_or(0);
        out.push(String::from_utf8_lossy(body.get(start..start + len).unwrap_or_default()).into_owned());
        i = start + len;
    }
    out
}

async fn start_mock() -> (SocketAddr, Arc<Mock>) {
    let mock = Arc::new(Mock::default());
    let m = mock.clone();
    let app = Router::new().route(
        "/import",
        post(move |headers: HeaderMap, body: Bytes| {
            let m = m.clone();
            async move {
                let raw = gunzip(&headers, &body);
                // Count records by their `$insert_id`s, without building JSON
                // values: the mock should cost little next to the server.
                let ids = insert_ids(&raw);
                let n = ids.len();
                if let Ok(mut seen) = m.ids.lock() {
                    seen.extend(ids);
                }
                m.records.fetch_add(n as u64, Ordering::Relaxed);
                axum::Json(json!({"code": 200, "status": "OK", "num_records_imported": n}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("mock addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, mock)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_099)
}

fn start_server(mode: &str, mock: SocketAddr, dir: &std::path::Path) -> (Child, SocketAddr) {
    let port = free_port();
    let config = dir.join(format!("{mode}.toml"));
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
data_dir = "{data}"
[delivery]
mode = "{mode}"
[spool]
linger = "200ms"
max_bytes = "4GiB"
[[destinations]]
id = "load"
write_keys = ["wk"]
project_token = "tok"
api_base_url = "http://{mock}"
"#,
        data = dir.join(format!("data-{mode}")).display()
    );
    std::fs::File::create(&config)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write config");
    let bin = env!("CARGO_BIN_EXE_mixpanel-actions");
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn event(i: u64) -> Value {
    json!({
        "type": "track", "event": "Product Viewed", "userId": format!("user-{}", i % 5000),
        "anonymousId": "a3f4c2d1-9b8e-4f7a-8c6d-5e4f3a2b1c0d", "messageId": format!("load-{i:0width$}", width = ID_DIGITS),
        "timestamp": "2024-05-01T12:00:00.000Z", "sentAt": "2024-05-01T12:00:01.000Z",
        "context": {"ip": "8.8.8.8", "library": {"name": "analytics.js", "version": "2.11.1"},
                    "page": {"url": "https://shop.example.com/p/42", "referrer": "https://google.com/"},
                    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                    "locale": "en-US", "campaign": {"source": "newsletter", "medium": "email"}},
        "properties": {"product_id": "p-42", "price": 19.99, "currency": "USD", "category": "Shoes", "plan": "pro"}
    })
}

/// A batch body serialized once; each request only rewrites the fixed-width
/// digits of its 100 `messageId`s (the load generator must cost little next to
/// the server it measures).
struct Template {
    body: Vec<u8>,
    /// Offsets of each event's 12 id digits.
    slots: Vec<usize>,
}

const ID_DIGITS: usize = 12;

impl Template {
    fn new() -> Template {
        let batch: Vec<Value> = (0..BATCH as u64).map(|_| event(0)).collect();
        let body = serde_json::to_vec(&json!({ "batch": batch })).unwrap_or_default();
        let marker = format!("load-{}", "0".repeat(ID_DIGITS));
        let mut slots = Vec::new();
        let mut i = 0;
        while let Some(at) = body
            .get(i..)
            .and_then(|r| r.windows(marker.len()).position(|w| w == marker.as_bytes()))
        {
            slots.push(i + at + "load-".len());
            i += at + marker.len();
        }
        Template { body, slots }
    }

    fn fill(&self, base: u64) -> Vec<u8> {
        let mut body = self.body.clone();
        for (k, &slot) in self.slots.iter().enumerate() {
            let digits = format!("{:0width$}", base + k as u64, width = ID_DIGITS);
            if let Some(dst) = body.get_mut(slot..slot + ID_DIGITS) {
                dst.copy_from_slice(digits.as_bytes());
            }
        }
        body
    }
}

struct Phase {
    accepted: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Clients post batches as fast as they can, or at `rate` events/s in total.
async fn drive(addr: SocketAddr, rate: Option<f64>, counter: Arc<AtomicU64>) -> Phase {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/batch");
    let started = Instant::now();
    let lat = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let template = Arc::new(Template::new());
    for _ in 0..CLIENTS {
        let template = template.clone();
        let (client, url, lat, accepted, counter) = (
            client.clone(),
            url.clone(),
            lat.clone(),
            accepted.clone(),
            counter.clone(),
        );
        let interval = rate.map(|r| Duration::from_secs_f64(BATCH as f64 * CLIENTS as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            while started.elapsed() < PHASE {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let base = counter.fetch_add(BATCH as u64, Ordering::Relaxed);
                let body = template.fill(base);
                let t0 = Instant::now();
                let ok = client
                    .post(&url)
                    .basic_auth("wk", Some(""))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let dt = t0.elapsed();
                if ok {
                    accepted.fetch_add(BATCH as u64, Ordering::Relaxed);
                    if let Ok(mut l) = lat.lock() {
                        l.push(dt);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let latencies = lat.lock().map(|l| l.clone()).unwrap_or_default();
    Phase {
        accepted: accepted.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies,
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn wait_ready(addr: SocketAddr) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

async fn run_mode(mode: &str, dir: &std::path::Path, half_rate: Option<f64>) -> f64 {
    let (mock_addr, mock) = start_mock().await;
    let (mut child, addr) = start_server(mode, mock_addr, dir);
    wait_ready(addr).await;
    let counter = Arc::new(AtomicU64::new(0));
    let phase_start = Instant::now();
    let mut full = drive(addr, None, counter.clone()).await;
    let full_rate = full.accepted as f64 / full.elapsed.as_secs_f64();
    // End to end: until every accepted event reached the mock (bounded wait).
    let at_stop = mock.records.load(Ordering::Relaxed);
    let drain_start = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.records.load(Ordering::Relaxed) < full.accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = mock.records.load(Ordering::Relaxed);
    let e2e = delivered as f64 / phase_start.elapsed().as_secs_f64();
    // Delivery alone, once ingest stopped competing for the CPU.
    let drain = delivered.saturating_sub(at_stop);
    if drain > 0 {
        println!(
            "{mode:>6} delivery alone (draining {drain} queued events): {:.0} events/s",
            drain as f64 / drain_start.elapsed().as_secs_f64()
        );
    }
    let p50 = percentile(&mut full.latencies, 0.5);
    let p99 = percentile(&mut full.latencies, 0.99);
    println!(
        "{mode:>6} full load: accepted {full_rate:.0} events/s; end to end {e2e:.0} events/s ({delivered} of {} delivered); accept p50 {:.1} ms p99 {:.1} ms",
        full.accepted,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let half = half_rate.unwrap_or(full_rate / 2.0);
    let mut paced = drive(addr, Some(half), counter).await;
    let paced_rate = paced.accepted as f64 / paced.elapsed.as_secs_f64();
    println!(
        "{mode:>6} at {half:.0} events/s offered: accepted {paced_rate:.0} events/s, accept p50 {:.1} ms p99 {:.1} ms",
        percentile(&mut paced.latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&mut paced.latencies, 0.99).as_secs_f64() * 1e3
    );
    let ids = mock.ids.lock().map(|i| i.len()).unwrap_or(0);
    println!(
        "{mode:>6} peak RSS {:.1} MB; distinct $insert_id at the mock: {ids}",
        peak_rss_mb(child.id())
    );
    let _ = child.kill();
    let _ = child.wait();
    full_rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        // Latency is measured at half the throughput aim (50,000 events/s).
        run_mode("spool", dir.path(), Some(PACED_RATE)).await;
        run_mode("direct", dir.path(), Some(PACED_RATE)).await;
    });
}
