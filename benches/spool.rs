#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The spool's speed and footprint, on the machine's disk: append throughput
//! (requests of 100 events of ~800 B from 16 concurrent appenders: events/s
//! and fsyncs/s), the disk bytes of a 500k-event backlog against its payload,
//! the open (recovery) time of that backlog, read+ack throughput, and the disk
//! after repeated append-all/ack-all cycles (must not grow). Bounded to about
//! 20 s. Run: `cargo bench --bench spool`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixpanel_actions::delivery::spool::{Cursor, EventId, Op, Spool, SpoolLimits};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APPENDERS: usize = 16;
const PER_REQUEST: usize = 100;
const BACKLOG: u64 = 500_000;
const APPEND_BUDGET: Duration = Duration::from_secs(8);
const CYCLES: usize = 30;

const LIMITS: SpoolLimits = SpoolLimits {
    max_bytes: 2 << 30,
    max_dead_letters: 1000,
};

/// An event of about 800 bytes, unique by `n`.
fn event(n: u64) -> Vec<u8> {
    let mut e = format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"bench-{n:016}","userId":"user-{u}","anonymousId":"4f1c2a9e-8d7b-4e3f-a1b2-{n:012}","timestamp":"2024-05-01T12:00:00.000Z","context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"4.1.0"}},"page":{{"path":"/checkout","url":"https://shop.example.com/checkout","title":"Checkout"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"}},"properties":{{"order_id":"o-{n}","revenue":42.5,"currency":"EUR","products":[{{"sku":"sku-1","price":20.0,"quantity":1}},{{"sku":"sku-2","price":22.5,"quantity":1}}]}}"#,
        u = n % 9973
    );
    while e.len() < 798 {
        e.push(' ');
    }
    e.push_str("}}");
    e.into_bytes()
}

fn request(first: u64) -> Vec<(String, Vec<u8>)> {
    (0..PER_REQUEST as u64)
        .map(|i| ("mixpanel".to_owned(), event(first + i)))
        .collect()
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn files_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += files_bytes(&p);
            } else if let Ok(m) = p.metadata() {
                total += m.len();
            }
        }
    }
    total
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    let payload_per_event = event(0).len() as u64;
    println!("spool bench: {APPENDERS} appenders, requests of {PER_REQUEST} events of {payload_per_event} B");

    // Append throughput, building the backlog.
    let next = Arc::new(AtomicU64::new(0));
    let fsyncs0 = spool.fsyncs();
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|_| {
                let spool = spool.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let first = next.fetch_add(PER_REQUEST as u64, Ordering::Relaxed);
                        if first >= BACKLOG || start.elapsed() > APPEND_BUDGET {
                            return;
                        }
                        spool.append(request(first)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let queued = spool.depth();
    let fsyncs = spool.fsyncs() - fsyncs0;
    println!(
        "append: {queued} events in {secs:.2} s = {:.0} events/s, {:.1} MB/s payload, {fsyncs} fsyncs = {:.0} fsyncs/s ({:.1} requests per fsync)",
        queued as f64 / secs,
        (queued * payload_per_event) as f64 / secs / 1e6,
        fsyncs as f64 / secs,
        (queued / PER_REQUEST as u64) as f64 / fsyncs.max(1) as f64,
    );

    // Footprint of the backlog.
    let payload = queued * payload_per_event;
    let on_disk = spool.bytes();
    println!(
        "backlog: {queued} events, payload {:.1} MB, on disk {:.1} MB (files: {:.1} MB) = {:.1} B/event, ratio {:.3}; RSS {:.0} MiB",
        payload as f64 / 1e6,
        on_disk as f64 / 1e6,
        files_bytes(&dir.path().join("queue")) as f64 / 1e6,
        on_disk as f64 / queued as f64,
        on_disk as f64 / payload as f64,
        rss_mib(),
    );

    // Recovery time (the files are in the page cache).
    spool.close();
    let start = Instant::now();
    let spool = Spool::open(dir.path(), LIMITS).unwrap();
    println!(
        "open (recovery) of the backlog: {:.0} ms, depth {}",
        start.elapsed().as_secs_f64() * 1000.0,
        spool.depth()
    );

    // Read + ack throughput, one reader.
    let start = Instant::now();
    let mut cursor = Cursor::default();
    let mut read = 0u64;
    runtime.block_on(async {
        loop {
            let entries = spool.read("mixpanel", &mut cursor, 1000, 1 << 20).unwrap();
            if entries.is_empty() {
                break;
            }
            read += entries.len() as u64;
            let ids: Vec<EventId> = entries.iter().map(|e| e.id).collect();
            spool.submit(Op::Ack("mixpanel".into(), ids)).await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read+ack: {read} events in {secs:.2} s = {:.0} events/s; left: depth {}, {} bytes on disk",
        read as f64 / secs,
        spool.depth(),
        spool.bytes()
    );

    // Append-all / ack-all cycles.
    let per_cycle = 20 * PER_REQUEST as u64;
    let mut sizes = Vec::new();
    let mut peak = 0u64;
    let start = Instant::now();
    runtime.block_on(async {
        for c in 0..CYCLES as u64 {
            let appends: Vec<_> = (0..20u64)
                .map(|r| {
                    let spool = spool.clone();
                    tokio::spawn(async move { spool.append(request(c * per_cycle + r * PER_REQUEST as u64)).await })
                })
                .collect();
            for a in appends {
                a.await.unwrap().unwrap();
            }
            peak = peak.max(spool.bytes());
            let mut cursor = Cursor::default();
            loop {
                let entries = spool.read("mixpanel", &mut cursor, 1000, 1 << 20).unwrap();
                if entries.is_empty() {
                    break;
                }
                let ids: Vec<EventId> = entries.iter().map(|e| e.id).collect();
                spool.submit(Op::Ack("mixpanel".into(), ids)).await.unwrap();
            }
            sizes.push(spool.bytes());
        }
    });
    println!(
        "cycles: {CYCLES} x (append {per_cycle} events, ack all) in {:.2} s; peak {:.2} MB while queued; on disk after cycles 1/10/20/{CYCLES}: {} / {} / {} / {} bytes (files: {})",
        start.elapsed().as_secs_f64(),
        peak as f64 / 1e6,
        sizes[0],
        sizes[9],
        sizes[19],
        sizes[CYCLES - 1],
        files_bytes(&dir.path().join("queue")),
    );
    spool.close();
}
