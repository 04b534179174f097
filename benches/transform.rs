//! The transform's speed: event bytes -> parsed event -> subscriptions, mapping,
//! validation, actions -> encoded Mixpanel request bodies, on the events of the
//! conformance fixture with their own settings and subscriptions.
//!
//! In the same run it measures the ceiling: `serde_json` parse + serialize of the
//! same event bytes, and prints transform/ceiling: for the whole fixture (each
//! case with its own subscriptions) and for the cases that run the six presets.
//! Run: `cargo bench --bench transform`.
//!
//! Instruction counts, repeatable on a busy machine: with `BENCH_ROUNDS=n` the
//! binary runs `n` rounds of the transform and of the ceiling and exits, e.g.
//! `BENCH_ROUNDS=20 valgrind --tool=callgrind --toggle-collect='transform::transform'
//! target/release/deps/transform-<hash>` (and again with `transform::ceiling`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};

/// mimalloc: the pipeline allocates many small, short-lived values (JSON maps
/// and strings); glibc's allocator spent about a third of the CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mixpanel_actions::destination::{self, Destination};
use mixpanel_actions::mapping::schema::Mode;
use mixpanel_actions::mixpanel::Settings;
use mixpanel_actions::preview;
use mixpanel_actions::segment;
use serde_json::Value;

const FIXTURE: &str = include_str!("../tests/fixtures/conformance.jsonl");

struct Work {
    destination: Destination,
    /// The case runs the six preset subscriptions (no subscriptions of its own).
    presets: bool,
    /// The event as the bytes a sender would post.
    event: String,
}

fn workload() -> Vec<Work> {
    let mut out = Vec::new();
    for line in FIXTURE.lines() {
        let Ok(case) = preview::parse_case(line) else { continue };
        let Ok(settings) = Settings::from_reference(&case.settings, false) else {
            continue;
        };
        let presets = case.subscriptions.is_none();
        let subscriptions = match &case.subscriptions {
            Some(c) => destination::load_subscriptions_lenient(c).0,
            None => destination::presets(),
        };
        let destination = Destination {
            settings,
            subscriptions,
        };
        let events = case
            .events
            .clone()
            .or_else(|| case.event.clone().map(|e| vec![e]))
            .unwrap_or_default();
        for event in events {
            if let Ok(text) = serde_json::to_string(&event) {
                out.push(Work {
                    destination: destination.clone(),
                    presets,
                    event: text,
                });
            }
        }
    }
    out
}

#[inline(never)]
fn transform(work: &[Work]) -> usize {
    let mut bytes = 0;
    for w in work {
        // The pipeline's parse (the same `Value` as `serde_json`'s).
        let Ok(event) = segment::json::from_str(&w.event) else {
            continue;
        };
        let events = [event];
        let outcome = w.destination.process(&events, Mode::Single, 1_700_000_000_000);
        for r in outcome.into_requests(&w.destination, Mode::Single, true) {
            bytes += r.request.body.encode().len();
        }
    }
    bytes
}

#[inline(never)]
fn ceiling(work: &[Work]) -> usize {
    let mut bytes = 0;
    for w in work {
        let Ok(event) = serde_json::from_str::<Value>(&w.event) else {
            continue;
        };
        bytes += serde_json::to_vec(&event).map(|v| v.len()).unwrap_or(0);
    }
    bytes
}

/// Events per second of `f` over `work`, measured for about `budget`.
fn rate(work: &[Work], budget: Duration, f: fn(&[Work]) -> usize) -> f64 {
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        black_box(f(black_box(work)));
        rounds += 1;
    }
    (rounds as f64 * work.len() as f64) / start.elapsed().as_secs_f64()
}

fn main() {
    let work = workload();
    if let Some(rounds) = std::env::var("BENCH_ROUNDS").ok().and_then(|n| n.parse::<u32>().ok()) {
        for _ in 0..rounds {
            black_box(transform(black_box(&work)));
            black_box(ceiling(black_box(&work)));
        }
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(work.len() as u64));
    group.bench_function("transform", |b| b.iter(|| transform(black_box(&work))));
    group.bench_function("ceiling_parse_serialize", |b| b.iter(|| ceiling(black_box(&work))));
    group.finish();
    c.final_summary();

    // Side by side, interleaved, so machine noise hits both alike.
    let presets: Vec<Work> = work
        .iter()
        .filter(|w| w.presets)
        .map(|w| Work {
            destination: w.destination.clone(),
            presets: true,
            event: w.event.clone(),
        })
        .collect();
    for (label, work) in [("realistic mix", &work), ("presets only", &presets)] {
        let (mut t, mut s) = (0.0, 0.0);
        for _ in 0..3 {
            t += rate(work, Duration::from_millis(700), transform);
            s += rate(work, Duration::from_millis(700), ceiling);
        }
        let (t, s) = (t / 3.0, s / 3.0);
        println!(
            "{label}: transform {:.0} events/s per core; ceiling (serde_json parse + serialize) {:.0} events/s; ratio {:.1}%  ({} events)",
            t,
            s,
            100.0 * t / s,
            work.len()
        );
    }
}
