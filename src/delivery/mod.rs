//! Delivery: records in, Mixpanel's verdict per record out.
//!
//! `batcher` groups records into requests (per destination: `/import` up to
//! `batch_size` events and `max_batch_bytes`; form endpoints as Mixpanel arrays,
//! in phases so the records of one event keep their order). [`Deliverer`] sends
//! them with the one [`Client`], retrying temporary failures with backoff within a
//! time budget, splitting on 413, and reports one [`ItemResult`] per record. What an
//! answer means is decided by [`outcome::classify`].

pub mod backoff;
pub mod batcher;
pub mod lanes;
pub mod limiter;
pub mod outcome;
pub mod prepare;
pub mod spool;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

// Tokio's clock: the retry schedule can be tested on paused time.
use tokio::time::Instant;

use rand::Rng as _;
use serde_json::Value;

use crate::config::DestinationConfig;
use crate::history::{self, Count};
use crate::mixpanel::actions::Record;
use crate::mixpanel::api::Endpoint;
use crate::mixpanel::client::{Client, Wire};
use crate::mixpanel::limits::check_import_properties;

/// Batches at least this large are encoded on the blocking pool.
const ENCODE_OFF_THREAD_RECORDS: usize = 64;
use crate::telemetry as t;
use backoff::Backoff;
use outcome::{classify, Answer, Outcome};

/// One record to deliver, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Index of the event in the ingest request.
    pub event: usize,
    /// Index of the subscription in the destination.
    pub subscription: usize,
    pub record: Packed,
}

impl Item {
    /// Packs `record` (see [`Packed::new`]).
    pub fn new(event: usize, subscription: usize, record: Record, now_ms: i64) -> Item {
        Item {
            event,
            subscription,
            record: Packed::new(record, now_ms),
        }
    }
}

/// A record serialized once, as it goes on the wire, with what delivery needs
/// to know of its content: a queued record costs its JSON text in memory (not
/// a tree of values), and a retry sends the same bytes without serializing
/// again.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    pub endpoint: Endpoint,
    /// Compact JSON of the record.
    pub json: Arc<str>,
    /// Mixpanel's limits refuse it (checked when packed): the reason.
    pub refusal: Option<String>,
    /// The profile or group it updates, for the lanes ([`lanes::record_key`]).
    pub profile: Option<u64>,
}

impl Packed {
    /// Serializes `record`; an `/import` event is checked against Mixpanel's
    /// limits at `now_ms`.
    pub fn new(record: Record, now_ms: i64) -> Packed {
        let json = crate::mixpanel::actions::record::encode(&record.data);
        let refusal = match record.endpoint {
            Endpoint::Import => check_import_properties(record.data.properties(), json.len(), now_ms).err(),
            _ => None,
        };
        let profile = match record.endpoint {
            Endpoint::Import => None,
            endpoint => lanes::record_key(endpoint, &record.data.as_value()),
        };
        Packed {
            endpoint: record.endpoint,
            profile,
            refusal,
            json,
        }
    }

    /// The record as a value, for people to read (results, dead letters).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// What became of one record.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemResult {
    /// Accepted by Mixpanel (or logged, in dry-run mode).
    Delivered { status: u16, body: Value },
    /// Refused for good: by Mixpanel (`answer` is its response body), or by its
    /// limits before sending (`answer` is `None`).
    Rejected {
        status: u16,
        message: String,
        answer: Option<Value>,
    },
    /// Mixpanel could not be reached, or kept failing, within the retry budget.
    Failed {
        message: String,
        retry_after: Option<Duration>,
        /// Mixpanel asked to slow down (a 429 or a `Retry-After`).
        throttled: bool,
    },
}

impl ItemResult {
    pub fn is_failed(&self) -> bool {
        matches!(self, ItemResult::Failed { .. })
    }
}

/// Retry policy.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Total time one request may spend retrying.
    pub budget: Duration,
}

/// Sends records to Mixpanel.
#[derive(Clone, Debug)]
pub struct Deliverer {
    client: Client,
    retry: RetryPolicy,
}

type Results = Vec<(Item, ItemResult)>;
/// Results that still carry each item's position in the delivery.
type Positioned = Vec<(usize, Item, ItemResult)>;
type BatchFuture<'a> = Pin<Box<dyn Future<Output = Positioned> + Send + 'a>>;

impl Deliverer {
    pub fn new(client: Client, retry: RetryPolicy) -> Deliverer {
        Deliverer { client, retry }
    }

    /// Delivers `items` to `dest`; one result per item, in the order given.
    ///
    /// `ordered` (a lane round: later events may update the profile of an
    /// earlier one): once a record fails for now, no later phase is sent, so no
    /// update overtakes the one that is retried.
    pub async fn deliver(&self, dest: &DestinationConfig, items: Vec<Item>, ordered: bool) -> Results {
        let count = items.len();
        let mut results: Vec<Option<(Item, ItemResult)>> = vec![None; count];
        let (checked, refused) = batcher::check_limits(items);
        for (pos, item, message) in refused {
            if let Some(slot) = results.get_mut(pos) {
                *slot = Some((
                    item,
                    ItemResult::Rejected {
                        status: 400,
                        message,
                        answer: None,
                    },
                ));
            }
        }
        // Events with a record that was not delivered: their later records are
        // not sent (the reference stops an event at its first failed request).
        let mut stopped: HashMap<usize, ItemResult> = HashMap::new();
        // Ordered: the first failure for now stops every later phase.
        let mut round_stopped: Option<ItemResult> = None;
        for phase in batcher::plan(dest, checked) {
            let mut sends = Vec::new();
            for mut batch in phase {
                batch.items.retain(|(pos, item)| {
                    let result = match (stopped.get(&item.event), &round_stopped) {
                        (Some(earlier), _) => skipped(earlier),
                        (None, Some(earlier)) => skipped_in_order(earlier),
                        (None, None) => return true,
                    };
                    if let Some(slot) = results.get_mut(*pos) {
                        *slot = Some((item.clone(), result));
                    }
                    false
                });
                sends.push(self.send_batch(dest, batch.endpoint, batch.items));
            }
            for batch_results in futures_util::future::join_all(sends).await {
                for (pos, item, result) in batch_results {
                    if !matches!(result, ItemResult::Delivered { .. }) {
                        stopped.entry(item.event).or_insert_with(|| result.clone());
                    }
                    if ordered && result.is_failed() && round_stopped.is_none() {
                        round_stopped = Some(result.clone());
                    }
                    if let Some(slot) = results.get_mut(pos) {
                        *slot = Some((item, result));
                    }
                }
            }
        }
        let results: Results = results.into_iter().flatten().collect();
        for (item, result) in &results {
            let action = dest
                .destination
                .subscriptions
                .get(item.subscription)
                .map_or("unknown", |s| s.action.name());
            let (name, seen) = match result {
                ItemResult::Delivered { .. } => (t::RECORDS_DELIVERED, Count::Delivered),
                ItemResult::Rejected { answer: Some(_), .. } => (t::RECORDS_REJECTED, Count::Rejected),
                // Refused by Mixpanel's limits before sending.
                ItemResult::Rejected { answer: None, .. } => (t::RECORDS_REJECTED, Count::FailedValidation),
                ItemResult::Failed { .. } => continue,
            };
            history::count(&dest.id, seen, 1);
            metrics::counter!(name, "destination" => dest.id.clone(), "action" => action).increment(1);
        }
        results
    }

    /// Sends one batch with retries; results carry each item's original position.
    fn send_batch<'a>(
        &'a self,
        dest: &'a DestinationConfig,
        endpoint: Endpoint,
        items: Vec<(usize, Item)>,
    ) -> BatchFuture<'a> {
        Box::pin(async move {
            if items.is_empty() {
                return Vec::new();
            }
            let request = batcher::build_request(&dest.destination.settings, endpoint, &items);
            if dest.dry_run {
                // Masked as everywhere people read records: no project token in logs.
                let shown = match request.body.to_value() {
                    Value::Array(records) => {
                        Value::Array(records.into_iter().map(crate::mixpanel::api::redact_tokens).collect())
                    }
                    one => crate::mixpanel::api::redact_tokens(one),
                };
                tracing::info!(destination = %dest.id, url = %request.url, body = %shown, "dry run: would send");
                return all(items, |_| ItemResult::Delivered {
                    status: 200,
                    body: Value::String("dry run".into()),
                });
            }
            // Serializing and gzipping a large batch is CPU work: keep it off the
            // async threads that answer ingest requests. Retries reuse the bytes.
            let gzip = dest.gzip;
            let wire = if items.len() >= ENCODE_OFF_THREAD_RECORDS {
                tokio::task::spawn_blocking(move || Wire::encode(&request, gzip))
                    .await
                    .unwrap_or_else(|e| Err(format!("encoding failed: {e}")))
            } else {
                Wire::encode(&request, gzip)
            };
            let started = Instant::now();
            let mut attempt = 0u32;
            metrics::histogram!(t::BATCH_SIZE, "endpoint" => endpoint.name()).record(items.len() as f64);
            loop {
                let sent_at = Instant::now();
                let answer = match &wire {
                    Ok(w) => self.client.send_wire(w).await,
                    Err(e) => Err(e.clone()),
                };
                let class = t::status_class(answer.as_ref().map(|r| r.status).unwrap_or(0));
                metrics::histogram!(t::MIXPANEL_LATENCY, "endpoint" => endpoint.name())
                    .record(sent_at.elapsed().as_secs_f64());
                history::response(&dest.id, answer.as_ref().map_or(0, |r| r.status), sent_at.elapsed());
                metrics::counter!(t::MIXPANEL_RESPONSES, "endpoint" => endpoint.name(), "status_class" => class)
                    .increment(1);
                let (outcome, body) = match &answer {
                    Ok(r) => (
                        classify(
                            endpoint,
                            &Answer::Http {
                                status: r.status,
                                retry_after: r.retry_after.as_deref(),
                                body: &r.body,
                            },
                        ),
                        answer_body(&r.body, r.truncated.then_some(r.length)),
                    ),
                    Err(e) => (classify(endpoint, &Answer::Network { error: e.clone() }), Value::Null),
                };
                let status = answer.as_ref().map(|r| r.status).unwrap_or(0);
                tracing::debug!(destination = %dest.id, endpoint = endpoint.name(), status, records = items.len(), ?outcome, "mixpanel answered");
                match outcome {
                    Outcome::Delivered => {
                        return all(items, |_| ItemResult::Delivered {
                            status,
                            body: body.clone(),
                        })
                    }
                    Outcome::Partial { failed } => {
                        return items
                            .into_iter()
                            .enumerate()
                            .map(|(i, (pos, item))| {
                                let result = match failed.iter().find(|f| f.index == i) {
                                    Some(f) => ItemResult::Rejected {
                                        status: 400,
                                        message: f.message.clone(),
                                        answer: Some(body.clone()),
                                    },
                                    None => ItemResult::Delivered {
                                        status,
                                        body: body.clone(),
                                    },
                                };
                                (pos, item, result)
                            })
                            .collect();
                    }
                    Outcome::Rejected { status, reason } => {
                        tracing::warn!(destination = %dest.id, endpoint = endpoint.name(), status, %reason, records = items.len(), "mixpanel rejected a request");
                        return all(items, |_| ItemResult::Rejected {
                            status,
                            message: reason.clone(),
                            answer: Some(body.clone()),
                        });
                    }
                    Outcome::Split if items.len() > 1 => {
                        let mut first = items;
                        let second = first.split_off(first.len() / 2);
                        let mut out = self.send_batch(dest, endpoint, first).await;
                        // The second half never overtakes a first half that is
                        // retried (records of one profile keep their order).
                        let failed = out.iter().find(|(_, _, r)| r.is_failed()).map(|(_, _, r)| r.clone());
                        match failed {
                            Some(earlier) => out.extend(all(second, |_| skipped_in_order(&earlier))),
                            None => out.extend(self.send_batch(dest, endpoint, second).await),
                        }
                        return out;
                    }
                    Outcome::Split => {
                        return all(items, |_| ItemResult::Rejected {
                            status: 413,
                            message: "the record alone is larger than Mixpanel accepts".into(),
                            answer: Some(body.clone()),
                        })
                    }
                    Outcome::Retry { after, reason } => {
                        let jitter: f64 = rand::rng().random();
                        let delay = self.retry.backoff.delay(attempt, jitter, after);
                        if started.elapsed() + delay > self.retry.budget {
                            tracing::warn!(destination = %dest.id, endpoint = endpoint.name(), attempts = attempt + 1, %reason, "retry budget exhausted");
                            let throttled = after.is_some() || status == 429;
                            return all(items, |_| ItemResult::Failed {
                                message: reason.clone(),
                                retry_after: after,
                                throttled,
                            });
                        }
                        tokio::time::sleep(delay).await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        })
    }
}

/// The most of an answer kept with each record's result (dead letters, logs,
/// per-event results).
pub const KEPT_ANSWER_BYTES: usize = 64 * 1024;

/// Mixpanel's answer as JSON; a body that is not JSON, or longer than
/// [`KEPT_ANSWER_BYTES`] (or cut at [`MAX_ANSWER_BYTES`]: `truncated` holds its
/// length when known), is kept as the start of its text with the full length
/// noted, so a huge answer never multiplies into every record's result.
fn answer_body(raw: &[u8], truncated: Option<Option<u64>>) -> Value {
    if raw.len() <= KEPT_ANSWER_BYTES && truncated.is_none() {
        match serde_json::from_slice(raw) {
            Ok(v) => return v,
            Err(_) if raw.is_empty() => return Value::Null,
            Err(_) if raw.len() <= 2000 => return Value::String(String::from_utf8_lossy(raw).into_owned()),
            Err(_) => {}
        }
    }
    let keep = if raw.len() > KEPT_ANSWER_BYTES {
        KEPT_ANSWER_BYTES
    } else {
        raw.len().min(2000)
    };
    let start = String::from_utf8_lossy(raw.get(..keep).unwrap_or(raw));
    let length = match truncated {
        None => raw.len().to_string(),
        Some(Some(n)) => n.to_string(),
        Some(None) => format!("more than {}", crate::mixpanel::client::MAX_ANSWER_BYTES),
    };
    Value::String(format!("{start}… [{length} bytes in all]"))
}

/// The result of a record not sent because an earlier record of its event failed.
fn skipped(earlier: &ItemResult) -> ItemResult {
    match earlier {
        ItemResult::Rejected {
            status,
            message,
            answer,
        } => ItemResult::Rejected {
            status: *status,
            message: format!("not sent: an earlier request of this event was rejected ({message})"),
            answer: answer.clone(),
        },
        other => not_sent(other, "an earlier request of this event failed"),
    }
}

/// The result of a record not sent because an earlier record of its lane round
/// failed for now (it may update the same profile, so it waits its turn).
fn skipped_in_order(earlier: &ItemResult) -> ItemResult {
    match earlier {
        ItemResult::Failed { .. } => not_sent(earlier, "an earlier update of its lane failed"),
        other => skipped(other),
    }
}

/// A failure for now carried over to a record not sent (`why`); other results
/// unchanged.
fn not_sent(earlier: &ItemResult, why: &str) -> ItemResult {
    match earlier {
        ItemResult::Failed {
            message,
            retry_after,
            throttled,
        } => ItemResult::Failed {
            message: format!("not sent: {why} ({message})"),
            retry_after: *retry_after,
            throttled: *throttled,
        },
        other => other.clone(),
    }
}

fn all(items: Vec<(usize, Item)>, result: impl Fn(&Item) -> ItemResult) -> Positioned {
    items
        .into_iter()
        .map(|(pos, item)| {
            let r = result(&item);
            (pos, item, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::routing::post;
    use axum::Router;
    use serde_json::json;

    use super::*;
    use crate::destination::Destination;
    use crate::mixpanel::Settings;

    /// Serves `app` on loopback; its base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// A destination with the presets sending to `url`.
    fn destination_at(url: String) -> DestinationConfig {
        let mut settings = Settings::new("tok");
        settings.api_base_url = Some(url);
        DestinationConfig {
            id: "d".into(),
            write_keys: vec![],
            destination: Destination::with_presets(settings),
            dry_run: false,
            batch_size: 10,
            max_batch_bytes: 1 << 20,
            gzip: false,
        }
    }

    /// A Mixpanel that always answers 503 and records when each attempt arrived
    /// (on tokio's clock, paused in the test).
    async fn failing_mixpanel() -> (String, Arc<Mutex<Vec<Instant>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let app = Router::new().route(
            "/import",
            post(move || {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(Instant::now());
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
                }
            }),
        );
        (serve(app).await, seen)
    }

    #[test]
    fn a_huge_answer_is_kept_as_its_start_with_its_length() {
        let small = br#"{"error": "bad"}"#;
        assert_eq!(answer_body(small, None), json!({"error": "bad"}));
        assert_eq!(answer_body(b"oops", None), json!("oops"));
        let huge = format!("{{\"error\": \"{}\"}}", "x".repeat(3 << 20));
        let kept = answer_body(huge.as_bytes(), None);
        let text = kept.as_str().unwrap();
        assert!(text.len() < KEPT_ANSWER_BYTES + 100, "{}", text.len());
        assert!(
            text.ends_with(&format!("[{} bytes in all]", huge.len())),
            "{}",
            &text[text.len() - 40..]
        );
        let cut = answer_body(&huge.as_bytes()[..1000], Some(None));
        assert!(cut.as_str().unwrap().ends_with("[more than 1048576 bytes in all]"));
        let cut = answer_body(&huge.as_bytes()[..1000], Some(Some(9_999_999)));
        assert!(cut.as_str().unwrap().ends_with("[9999999 bytes in all]"));
    }

    /// A lane round: event 0's `$identify` fails for now, so event 1's `$set`
    /// (the same profile, a later phase) is not sent either; without order,
    /// it is.
    #[tokio::test]
    async fn an_ordered_round_stops_at_its_first_failure() {
        let engaged = Arc::new(Mutex::new(Vec::<String>::new()));
        let e = engaged.clone();
        let app = Router::new()
            .route(
                "/track",
                post(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy") }),
            )
            .route(
                "/engage",
                post(move |body: String| {
                    let e = e.clone();
                    async move {
                        e.lock().unwrap().push(body);
                        axum::Json(json!({"status": 1, "error": null}))
                    }
                }),
            );
        let dest = destination_at(serve(app).await);
        let deliverer = Deliverer::new(
            Client::new(Duration::from_secs(5)).unwrap(),
            RetryPolicy {
                backoff: Backoff {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(1),
                },
                budget: Duration::ZERO,
            },
        );
        let record = |endpoint, data: serde_json::Value| Record {
            endpoint,
            data: data.into(),
        };
        let items = || {
            vec![
                Item::new(
                    0,
                    0,
                    record(
                        Endpoint::Track,
                        json!({"event": "$identify", "properties": {"$identified_id": "u1"}}),
                    ),
                    0,
                ),
                Item::new(
                    0,
                    0,
                    record(Endpoint::Engage, json!({"$distinct_id": "u1", "$set": {"n": 1}})),
                    0,
                ),
                Item::new(
                    1,
                    0,
                    record(Endpoint::Engage, json!({"$distinct_id": "u1", "$set": {"n": 2}})),
                    0,
                ),
            ]
        };
        let ordered = deliverer.deliver(&dest, items(), true).await;
        assert!(ordered.iter().all(|(_, r)| r.is_failed()), "{ordered:?}");
        assert!(
            matches!(&ordered[2].1, ItemResult::Failed { message, .. } if message.contains("earlier update of its lane")),
            "{ordered:?}"
        );
        assert!(engaged.lock().unwrap().is_empty(), "nothing reached /engage");
        let free = deliverer.deliver(&dest, items(), false).await;
        assert!(free[1].1.is_failed(), "event 0's own $set waits for its $identify");
        assert!(matches!(free[2].1, ItemResult::Delivered { .. }), "{free:?}");
        assert_eq!(engaged.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_follow_the_backoff_schedule_within_the_budget() {
        let (url, seen) = failing_mixpanel().await;
        let dest = destination_at(url);
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let deliverer = Deliverer::new(
            Client::new(Duration::from_secs(5)).unwrap(),
            RetryPolicy {
                backoff,
                budget: Duration::from_secs(40),
            },
        );
        let record = Record {
            endpoint: Endpoint::Import,
            data: json!({"event": "E", "properties": {"distinct_id": "u", "time": 1_700_000_000_000_i64}}).into(),
        };
        let items = vec![Item::new(0, 0, record, 1_700_000_000_000)];
        let results = deliverer.deliver(&dest, items, false).await;
        assert!(matches!(results[0].1, ItemResult::Failed { .. }));
        let times = seen.lock().unwrap().clone();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        // Attempt n waits between half and all of min(1s * 2^n, 8s).
        for (n, gap) in gaps.iter().enumerate() {
            let base = backoff.base(n as u32);
            assert!(
                *gap >= base / 2 && *gap <= base + Duration::from_millis(50),
                "gap {n}: {gap:?} vs base {base:?}"
            );
        }
        // 1+2+4+8+8+8... halves to full: the 40 s budget allows 5 to 9 retries.
        assert!((6..=10).contains(&times.len()), "{} attempts", times.len());
        let total = *times.last().unwrap() - times[0];
        assert!(total <= Duration::from_secs(40), "{total:?}");
    }
}
