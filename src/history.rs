//! Per-minute delivery history, in memory, for the console's overview: per
//! destination, what happened to its events minute by minute over the last 24
//! hours, and Mixpanel's latency and status classes. Lost on restart (the
//! Prometheus counters of `telemetry` are the durable, scrapeable view).
//!
//! Recorded next to the `telemetry` counters, per batch, never per byte: one
//! short lock per call, never held across an await. Bounded: at most
//! [`MINUTES`] buckets per destination (only minutes with activity take room)
//! and [`MAX_DESTINATIONS`] destinations. A leaf module: it imports nothing of
//! the pipeline.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};

/// Minutes kept: 24 hours.
pub const MINUTES: usize = 24 * 60;
/// Destinations tracked; more (never in one configuration) are not recorded.
pub const MAX_DESTINATIONS: usize = 1024;

/// What is counted, per destination and minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Events accepted by ingest (spool or direct).
    Received,
    /// Events no enabled subscription matched (nothing sent).
    Unmatched,
    /// Events a subscription's mapping or validation refused, and records
    /// refused by Mixpanel's limits before sending.
    FailedValidation,
    /// Records Mixpanel accepted.
    Delivered,
    /// Records Mixpanel refused for good.
    Rejected,
    /// Events scheduled for another attempt.
    Retried,
    /// Events moved to dead letters.
    DeadLettered,
}

impl Count {
    const ALL: [Count; 7] = [
        Count::Received,
        Count::Unmatched,
        Count::FailedValidation,
        Count::Delivered,
        Count::Rejected,
        Count::Retried,
        Count::DeadLettered,
    ];

    /// The key in the overview JSON.
    pub fn name(self) -> &'static str {
        match self {
            Count::Received => "received",
            Count::Unmatched => "unmatched",
            Count::FailedValidation => "failed_validation",
            Count::Delivered => "delivered",
            Count::Rejected => "rejected",
            Count::Retried => "retried",
            Count::DeadLettered => "dead_lettered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (ms) of the latency buckets; one more bucket holds the rest.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];
/// Status classes of Mixpanel's answers.
pub const CLASSES: [&str; 4] = ["2xx", "4xx", "5xx", "network"];

#[derive(Clone, Debug, Default)]
struct Bucket {
    minute: i64,
    counts: [u64; 7],
    latency: [u64; LATENCY_BOUNDS_MS.len() + 1],
    classes: [u64; CLASSES.len()],
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
        for (a, b) in self.classes.iter_mut().zip(other.classes) {
            *a += b;
        }
    }
}

#[derive(Debug, Default)]
struct Dest {
    /// Ascending minutes, only those with activity, at most [`MINUTES`].
    buckets: VecDeque<Bucket>,
    oldest_age_seconds: Option<f64>,
}

impl Dest {
    fn bucket(&mut self, minute: i64) -> Option<&mut Bucket> {
        let newest = self.buckets.back().map(|b| b.minute);
        match newest {
            Some(m) if m == minute => {}
            Some(m) if m > minute => {
                // A late record (clock step or a slow caller): its own minute if kept.
                return self.buckets.iter_mut().rev().find(|b| b.minute == minute);
            }
            _ => {
                self.buckets.push_back(Bucket {
                    minute,
                    ..Bucket::default()
                });
            }
        }
        while self.buckets.len() > MINUTES
            || self
                .buckets
                .front()
                .is_some_and(|b| b.minute <= minute - MINUTES as i64)
        {
            self.buckets.pop_front();
        }
        self.buckets.back_mut()
    }
}

/// The history of every destination.
#[derive(Debug)]
pub struct History {
    dests: Mutex<HashMap<String, Dest>>,
    started_ms: i64,
}

/// The process's history.
pub fn global() -> &'static History {
    static HISTORY: OnceLock<History> = OnceLock::new();
    HISTORY.get_or_init(|| History::new(now_ms()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Counts `n` of `what` for `destination` now, in the process's history.
pub fn count(destination: &str, what: Count, n: u64) {
    if n > 0 {
        global().count(destination, what, n, now_ms());
    }
}

/// Records one Mixpanel answer (`status` 0: none) and its latency.
pub fn response(destination: &str, status: u16, latency: Duration) {
    global().response(destination, status, latency, now_ms());
}

/// The age of the destination's oldest queued event, as the worker sees it.
pub fn oldest_age(destination: &str, seconds: f64) {
    global().set_oldest_age(destination, seconds);
}

impl History {
    pub fn new(started_ms: i64) -> History {
        History {
            dests: Mutex::new(HashMap::new()),
            started_ms,
        }
    }

    /// When this history began (the process start): nothing before is known.
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    fn with(&self, destination: &str, f: impl FnOnce(&mut Dest)) {
        let Ok(mut dests) = self.dests.lock() else {
            return;
        };
        if let Some(d) = dests.get_mut(destination) {
            return f(d);
        }
        if dests.len() >= MAX_DESTINATIONS {
            return;
        }
        f(dests.entry(destination.to_owned()).or_default());
    }

    pub fn count(&self, destination: &str, what: Count, n: u64, now_ms: i64) {
        self.with(destination, |d| {
            if let Some(c) = d
                .bucket(now_ms.div_euclid(60_000))
                .and_then(|b| b.counts.get_mut(what.index()))
            {
                *c += n;
            }
        });
    }

    pub fn response(&self, destination: &str, status: u16, latency: Duration, now_ms: i64) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let slot = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        let class = match status {
            0 => 3,
            200..=299 => 0,
            500.. => 2,
            _ => 1,
        };
        self.with(destination, |d| {
            if let Some(b) = d.bucket(now_ms.div_euclid(60_000)) {
                if let Some(l) = b.latency.get_mut(slot) {
                    *l += 1;
                }
                if let Some(c) = b.classes.get_mut(class) {
                    *c += 1;
                }
            }
        });
    }

    pub fn set_oldest_age(&self, destination: &str, seconds: f64) {
        self.with(destination, |d| d.oldest_age_seconds = Some(seconds));
    }

    pub fn oldest_age(&self, destination: &str) -> Option<f64> {
        self.dests
            .lock()
            .ok()
            .and_then(|d| d.get(destination).and_then(|d| d.oldest_age_seconds))
    }

    /// The last `minutes` minutes (this one included) of `destination`, in
    /// points of `step` minutes, oldest first; every point is there, empty or not.
    pub fn window(&self, destination: &str, now_ms: i64, minutes: usize, step: usize) -> Window {
        let step = step.max(1);
        let minutes = minutes.clamp(1, MINUTES);
        let now_minute = now_ms.div_euclid(60_000);
        let first = now_minute - minutes as i64 + 1;
        let points = minutes.div_ceil(step);
        let mut out: Vec<Bucket> = (0..points)
            .map(|i| Bucket {
                minute: first + (i * step) as i64,
                ..Bucket::default()
            })
            .collect();
        if let Ok(dests) = self.dests.lock() {
            if let Some(d) = dests.get(destination) {
                for b in d.buckets.iter().filter(|b| b.minute >= first && b.minute <= now_minute) {
                    let i = usize::try_from(b.minute - first).unwrap_or(0) / step;
                    if let Some(p) = out.get_mut(i) {
                        p.add(b);
                    }
                }
            }
        }
        Window { step, points: out }
    }
}

/// A window of history, ready to show.
#[derive(Debug)]
pub struct Window {
    step: usize,
    points: Vec<Bucket>,
}

/// The `q` quantile (0..1) of a latency histogram, in ms, interpolated within
/// its bucket; `None` without samples. Samples over the last bound count as it.
pub fn quantile(latency: &[u64], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in latency.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 {
                0
            } else {
                LATENCY_BOUNDS_MS.get(i - 1).copied().unwrap_or(0)
            };
            let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else {
                return Some(lower as f64);
            };
            let within = (rank - below as f64) / n as f64;
            return Some(lower as f64 + (upper - lower) as f64 * within);
        }
        below += n;
    }
    LATENCY_BOUNDS_MS.last().map(|&b| b as f64)
}

fn counts_json(b: &Bucket) -> Map<String, Value> {
    Count::ALL
        .iter()
        .map(|c| {
            (
                c.name().to_owned(),
                json!(b.counts.get(c.index()).copied().unwrap_or(0)),
            )
        })
        .collect()
}

fn classes_json(b: &Bucket) -> Value {
    Value::Object(
        CLASSES
            .iter()
            .zip(b.classes)
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect(),
    )
}

fn round1(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 10.0).round() / 10.0))
}

impl Window {
    /// The sums over the window.
    pub fn totals(&self) -> Map<String, Value> {
        let mut all = Bucket::default();
        for p in &self.points {
            all.add(p);
        }
        counts_json(&all)
    }

    /// `{"totals", "latency_ms": {p50, p95}, "responses", "points": [...]}`.
    pub fn to_json(&self) -> Value {
        let mut all = Bucket::default();
        for p in &self.points {
            all.add(p);
        }
        let points: Vec<Value> = self
            .points
            .iter()
            .map(|p| {
                let mut m = counts_json(p);
                m.insert("at_ms".into(), json!(p.minute * 60_000));
                m.insert("latency_p50_ms".into(), round1(quantile(&p.latency, 0.5)));
                m.insert("latency_p95_ms".into(), round1(quantile(&p.latency, 0.95)));
                m.insert("responses".into(), classes_json(p));
                Value::Object(m)
            })
            .collect();
        json!({
            "totals": counts_json(&all),
            "latency_ms": {"p50": round1(quantile(&all.latency, 0.5)), "p95": round1(quantile(&all.latency, 0.95))},
            "responses": classes_json(&all),
            "step_seconds": self.step * 60,
            "points": points,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn counts_land_in_their_minute_and_windows_sum_them() {
        let h = History::new(T0);
        h.count("d", Count::Received, 3, T0);
        h.count("d", Count::Received, 2, T0 + 59_999);
        h.count("d", Count::Delivered, 4, T0 + 60_000);
        h.count("other", Count::Received, 100, T0);
        let w = h.window("d", T0 + 60_000, 10, 1);
        assert_eq!(w.points.len(), 10);
        let totals = w.totals();
        assert_eq!(totals["received"], 5);
        assert_eq!(totals["delivered"], 4);
        assert_eq!(totals["dead_lettered"], 0);
        let json = w.to_json();
        let points = json["points"].as_array().unwrap();
        assert_eq!(points[8]["received"], 5);
        assert_eq!(points[9]["delivered"], 4);
        assert_eq!(points[9]["at_ms"], T0 + 60_000);
        // A window that ends before: nothing.
        assert_eq!(h.window("d", T0 - 60_000, 10, 1).totals()["received"], 0);
    }

    #[test]
    fn a_day_is_kept_and_older_minutes_are_dropped() {
        let h = History::new(T0);
        for m in 0..(MINUTES as i64 + 30) {
            h.count("d", Count::Received, 1, T0 + m * 60_000);
        }
        let now = T0 + (MINUTES as i64 + 29) * 60_000;
        let len = h.dests.lock().unwrap()["d"].buckets.len();
        assert_eq!(len, MINUTES);
        let day = h.window("d", now, MINUTES, 15);
        assert_eq!(day.points.len(), MINUTES / 15);
        assert_eq!(day.totals()["received"], MINUTES as u64);
        assert_eq!(day.to_json()["points"][0]["received"], 15);
    }

    #[test]
    fn destinations_are_bounded() {
        let h = History::new(T0);
        for i in 0..(MAX_DESTINATIONS + 10) {
            h.count(&format!("d{i}"), Count::Received, 1, T0);
        }
        assert_eq!(h.dests.lock().unwrap().len(), MAX_DESTINATIONS);
    }

    #[test]
    fn latency_quantiles_and_status_classes() {
        let h = History::new(T0);
        for _ in 0..90 {
            h.response("d", 200, Duration::from_millis(20), T0);
        }
        for _ in 0..10 {
            h.response("d", 503, Duration::from_millis(900), T0);
        }
        h.response("d", 0, Duration::from_secs(60), T0);
        let j = h.window("d", T0, 10, 1).to_json();
        let p50 = j["latency_ms"]["p50"].as_f64().unwrap();
        let p95 = j["latency_ms"]["p95"].as_f64().unwrap();
        assert!((10.0..=25.0).contains(&p50), "{p50}");
        assert!((500.0..=1000.0).contains(&p95), "{p95}");
        assert_eq!(j["responses"]["2xx"], 90);
        assert_eq!(j["responses"]["5xx"], 10);
        assert_eq!(j["responses"]["network"], 1);
        assert_eq!(quantile(&[0; 13], 0.5), None);
    }
}
