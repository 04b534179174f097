//! One delivery worker per destination: spool -> pipeline -> Mixpanel -> ack.
//!
//! The worker reads the destination's queued events in spool order, waits up to
//! `linger` for a partial batch to fill, runs the pipeline, delivers the records
//! (one attempt per round; the spool holds the retry schedule), then per event:
//! - every record delivered or rejected: the event leaves the spool (rejections and
//!   validation failures become dead letters with the reason);
//! - some record failed temporarily: the event stays, with its attempt count, the
//!   next attempt time (exponential backoff with jitter, honouring `Retry-After`)
//!   and the records already delivered (not sent again) persisted;
//! - failing for longer than `max_age`: dead letter, reason `expired`.
//!
//! Order: events are taken oldest first and a waiting retry at the head holds the
//! events behind it, so a destination's events reach Mixpanel in spool order except
//! across retries of partially delivered batches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::spool::{DeadLetter, Entry, Op, RetryState, Spool};
use super::{Deliverer, Item, ItemResult};
use crate::config::DestinationConfig;
use crate::destination::EventResult;
use crate::mapping::schema::Mode;
use crate::telemetry as t;

/// Worker settings.
#[derive(Clone, Copy, Debug)]
pub struct WorkerSettings {
    /// How long a partial batch waits for more events.
    pub linger: Duration,
    /// Retry age limit; older failing events become dead letters.
    pub max_age: Duration,
    pub backoff: Backoff,
}

/// Delivers one destination's spooled events until `stop` is cancelled and the
/// ready events are flushed (or `deadline` passes after `stop`).
pub async fn run(
    dest: Arc<DestinationConfig>,
    spool: Spool,
    deliverer: Deliverer,
    settings: WorkerSettings,
    stop: CancellationToken,
    drain_deadline: Duration,
) {
    let notify = spool.notifier();
    let mut partial_since: Option<Instant> = None;
    let mut stop_at: Option<Instant> = None;
    loop {
        if stop.is_cancelled() && stop_at.is_none() {
            stop_at = Some(Instant::now() + drain_deadline);
        }
        if stop_at.is_some_and(|at| Instant::now() >= at) {
            break;
        }
        let notified = notify.notified();
        let entries = match spool.read(&dest.id, dest.batch_size) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(destination = %dest.id, error = %e, "spool read failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        record_oldest_age(&dest.id, entries.first());
        let now = now_ms();
        let ready: Vec<Entry> = entries
            .into_iter()
            .take_while(|e| e.state.as_ref().is_none_or(|s| s.next_attempt_ms <= now))
            .collect();
        if ready.is_empty() {
            if stop.is_cancelled() {
                break;
            }
            // Nothing ready: wait for new events, the head's next attempt, or stop.
            let head_wait = match spool.read(&dest.id, 1).ok().and_then(|e| e.into_iter().next()) {
                Some(Entry { state: Some(s), .. }) => {
                    Duration::from_millis(u64::try_from(s.next_attempt_ms.saturating_sub(now)).unwrap_or(0))
                }
                _ => Duration::from_secs(5),
            };
            tokio::select! {
                () = notified => {},
                () = tokio::time::sleep(head_wait.min(Duration::from_secs(5))) => {},
                () = stop.cancelled() => {},
            }
            continue;
        }
        if ready.len() < dest.batch_size && !stop.is_cancelled() {
            let since = *partial_since.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            if waited < settings.linger {
                tokio::select! {
                    () = notified => {},
                    () = tokio::time::sleep(settings.linger - waited) => {},
                    () = stop.cancelled() => {},
                }
                continue;
            }
        }
        partial_since = None;
        deliver_round(&dest, &spool, &deliverer, &settings, ready).await;
    }
    tracing::info!(destination = %dest.id, left = spool.destination_depth(&dest.id).unwrap_or(0), "worker stopped");
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn record_oldest_age(dest: &str, head: Option<&Entry>) {
    let age = head
        .and_then(|e| serde_json::from_slice::<Value>(&e.event).ok())
        .and_then(|v| v.get("receivedAt").and_then(Value::as_str).map(str::to_owned))
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| (now_ms() - t.timestamp_millis()).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!(t::OLDEST_EVENT_AGE, "destination" => dest.to_owned()).set(age);
}

/// Per event of a round: what happened to its records.
#[derive(Default)]
struct EventTally {
    failed: bool,
    retry_after: Option<Duration>,
    last_error: String,
    delivered: Vec<u32>,
    dead: Vec<DeadLetter>,
}

/// Parsed events of one chunk, the entries they came from, the unreadable
/// ones, and what the pipeline made of them.
struct Chunk {
    entries: Vec<Entry>,
    events: Vec<Value>,
    corrupt: Vec<(u64, String)>,
    outcome: crate::destination::Outcome,
}

fn run_chunk(dest: &DestinationConfig, ready: Vec<Entry>, now: i64) -> Chunk {
    let mut events = Vec::with_capacity(ready.len());
    let mut entries = Vec::with_capacity(ready.len());
    let mut corrupt = Vec::new();
    for entry in ready {
        match serde_json::from_slice::<Value>(&entry.event) {
            Ok(v) => {
                events.push(v);
                entries.push(entry);
            }
            Err(e) => corrupt.push((entry.seq, format!("unreadable event: {e}"))),
        }
    }
    let outcome = dest.destination.process(&events, Mode::Single, now);
    Chunk {
        entries,
        events,
        corrupt,
        outcome,
    }
}

/// Parses and transforms `ready` on the blocking pool, in as many chunks as
/// there are cores, so a busy destination uses every core.
async fn transform_parallel(dest: &Arc<DestinationConfig>, ready: Vec<Entry>, now: i64) -> Vec<Chunk> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = cores.min(ready.len() / MIN_CHUNK_EVENTS).max(1);
    let per = ready.len().div_ceil(parts).max(1);
    let mut rest = ready;
    let mut handles = Vec::with_capacity(parts);
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        let dest = dest.clone();
        let kept: Vec<(u64, Vec<u8>)> = chunk.iter().map(|e| (e.seq, e.event.clone())).collect();
        handles.push((kept, tokio::task::spawn_blocking(move || run_chunk(&dest, chunk, now))));
    }
    let mut chunks = Vec::with_capacity(handles.len());
    for (kept, h) in handles {
        match h.await {
            Ok(c) => chunks.push(c),
            // A panic in the pipeline is a bug. Its events must not block the
            // queue forever: they become dead letters with the reason.
            Err(e) => {
                tracing::error!(destination = %dest.id, error = %e, events = kept.len(), "transform failed; events go to dead letters");
                let message = format!("internal error while transforming: {e}");
                chunks.push(Chunk {
                    entries: Vec::new(),
                    events: Vec::new(),
                    corrupt: kept.into_iter().map(|(seq, _)| (seq, message.clone())).collect(),
                    outcome: crate::destination::Outcome::default(),
                });
            }
        }
    }
    chunks
}

/// Below this many events per chunk, splitting costs more than it saves.
const MIN_CHUNK_EVENTS: usize = 64;

async fn deliver_round(
    dest: &Arc<DestinationConfig>,
    spool: &Spool,
    deliverer: &Deliverer,
    settings: &WorkerSettings,
    ready: Vec<Entry>,
) {
    let now = now_ms();
    let chunks = transform_parallel(dest, ready, now).await;
    let mut entries = Vec::new();
    let mut events = Vec::new();
    let mut corrupt = Vec::new();
    let mut outcomes = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        outcomes.push((events.len(), chunk.outcome));
        entries.extend(chunk.entries);
        events.extend(chunk.events);
        for (seq, message) in chunk.corrupt {
            corrupt.push((
                seq,
                dead(dest, None, "rejected", None, message, Value::Null, None, None),
            ));
        }
    }
    if !corrupt.is_empty() {
        let _ = spool.submit(Op::Dead(dest.id.clone(), corrupt)).await;
    }
    let mut tallies: Vec<EventTally> = (0..events.len()).map(|_| EventTally::default()).collect();
    let fingerprint = config_fingerprint(dest);
    let done: Vec<HashSet<u32>> = entries
        .iter()
        .map(|e| match &e.state {
            Some(s) if s.config == fingerprint => s.done.iter().copied().collect(),
            _ => HashSet::new(),
        })
        .collect();
    let mut positions: HashMap<usize, u32> = HashMap::new();
    let mut items = Vec::new();
    let mut item_positions = Vec::new();
    for (offset, outcome) in outcomes {
        for sub in outcome.subscriptions {
            let sub_name = dest
                .destination
                .subscriptions
                .get(sub.subscription)
                .map(|s| s.name.clone());
            for (local, result) in sub.events {
                let event = offset + local;
                match result {
                    EventResult::Records(records) => {
                        for record in records {
                            let pos = positions.entry(event).or_insert(0);
                            let this = *pos;
                            *pos += 1;
                            if done.get(event).is_some_and(|d| d.contains(&this)) {
                                continue;
                            }
                            items.push(Item {
                                event,
                                subscription: sub.subscription,
                                record,
                            });
                            item_positions.push(this);
                        }
                    }
                    EventResult::Failed { status, message } => {
                        if let (Some(tally), Some(ev)) = (tallies.get_mut(event), events.get(event)) {
                            tally.dead.push(dead(
                                dest,
                                sub_name.clone(),
                                "rejected",
                                Some(status),
                                message,
                                ev.clone(),
                                None,
                                None,
                            ));
                        }
                    }
                }
            }
        }
    }
    // Records of one event together and in order, events in spool order.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items.get(i).map_or(0, |it| it.event));
    let items: Vec<(Item, u32)> = order
        .into_iter()
        .filter_map(|i| Some((items.get(i)?.clone(), *item_positions.get(i)?)))
        .collect();
    let (plain, record_pos): (Vec<Item>, Vec<u32>) = items.into_iter().unzip();
    let results = if plain.is_empty() {
        Vec::new()
    } else {
        deliverer.deliver(dest, plain, now).await
    };
    for ((item, result), pos) in results.into_iter().zip(record_pos) {
        let Some(tally) = tallies.get_mut(item.event) else {
            continue;
        };
        match result {
            ItemResult::Delivered { .. } => tally.delivered.push(pos),
            ItemResult::Rejected {
                status,
                message,
                answer,
            } => {
                let sub_name = dest
                    .destination
                    .subscriptions
                    .get(item.subscription)
                    .map(|s| s.name.clone());
                let event = events.get(item.event).cloned().unwrap_or(Value::Null);
                let response = serde_json::json!({"status": status, "body": answer});
                tally.dead.push(dead(
                    dest,
                    sub_name,
                    "rejected",
                    Some(status),
                    message,
                    event,
                    Some(crate::mixpanel::api::redact_tokens(item.record.data)),
                    Some(response),
                ));
            }
            ItemResult::Failed { message, retry_after } => {
                tally.failed = true;
                tally.retry_after = tally.retry_after.max(retry_after);
                tally.last_error = message;
            }
        }
    }
    let mut acks = Vec::new();
    let mut deads = Vec::new();
    let mut retries = Vec::new();
    // One jitter per round: events that failed together are retried together.
    let jitter: f64 = rand::rng().random();
    let fingerprint = config_fingerprint(dest);
    for ((entry, tally), event) in entries.iter().zip(tallies).zip(&events) {
        if tally.failed {
            let mut st = match entry.state.clone() {
                Some(st) => st,
                // The retry age counts from when the event was accepted, so events
                // queued behind a failing batch do not wait a full age each.
                None => RetryState {
                    first_failure_ms: received_ms(event).unwrap_or(now).min(now),
                    config: fingerprint,
                    ..RetryState::default()
                },
            };
            if st.config != fingerprint {
                // The subscriptions changed: record positions mean something else now.
                st.done.clear();
                st.config = fingerprint;
            }
            st.attempts = st.attempts.saturating_add(1);
            st.done.extend(tally.delivered);
            let age = Duration::from_millis(u64::try_from(now.saturating_sub(st.first_failure_ms)).unwrap_or(0));
            if age >= settings.max_age {
                let msg = format!(
                    "gave up after {} attempts over {}s: {}",
                    st.attempts,
                    age.as_secs(),
                    tally.last_error
                );
                deads.push((
                    entry.seq,
                    dead(dest, None, "expired", None, msg, event.clone(), None, None),
                ));
                continue;
            }
            let delay = settings
                .backoff
                .delay(st.attempts.saturating_sub(1), jitter, tally.retry_after);
            st.next_attempt_ms = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            retries.push((entry.seq, st));
        } else if tally.dead.is_empty() {
            acks.push(entry.seq);
        } else if let Some(letter) = merge_letters(tally.dead) {
            deads.push((entry.seq, letter));
        }
    }
    let labels = [("destination", dest.id.clone())];
    if !retries.is_empty() {
        metrics::counter!(t::EVENTS_RETRIED, &labels).increment(retries.len() as u64);
        tracing::info!(destination = %dest.id, events = retries.len(), "delivery failed for now; will retry");
        submit(spool, Op::Retry(dest.id.clone(), retries)).await;
    }
    if !deads.is_empty() {
        metrics::counter!(t::EVENTS_DEAD_LETTERED, &labels).increment(deads.len() as u64);
        tracing::warn!(destination = %dest.id, letters = deads.len(), "events moved to dead letters");
        submit(spool, Op::Dead(dest.id.clone(), deads)).await;
    }
    if !acks.is_empty() {
        submit(spool, Op::Ack(dest.id.clone(), acks)).await;
    }
    metrics::gauge!(t::SPOOL_DEPTH).set(spool.depth() as f64);
    metrics::gauge!(t::SPOOL_BYTES).set(spool.bytes() as f64);
}

async fn submit(spool: &Spool, op: Op) {
    if let Err(e) = spool.submit(op).await {
        // The event stays queued: it is delivered again later (at least once).
        // Pause so a failing disk is not hammered by immediate re-sends.
        tracing::error!(error = %e, "spool write failed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// When ingest accepted the event (its `receivedAt`), in epoch ms.
fn received_ms(event: &Value) -> Option<i64> {
    let text = event.get("receivedAt")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// One dead letter per event: several rejections of one event are listed in it.
fn merge_letters(mut letters: Vec<DeadLetter>) -> Option<DeadLetter> {
    if letters.len() <= 1 {
        return letters.pop();
    }
    let mut first = letters.remove(0);
    let mut requests = vec![first.request.take().unwrap_or(Value::Null)];
    let mut responses = vec![first.response.take().unwrap_or(Value::Null)];
    for other in letters {
        first.message = format!(
            "{}; {}: {}",
            first.message,
            other.subscription.as_deref().unwrap_or("?"),
            other.message
        );
        requests.push(other.request.unwrap_or(Value::Null));
        responses.push(other.response.unwrap_or(Value::Null));
    }
    first.request = Some(Value::Array(requests));
    first.response = Some(Value::Array(responses));
    Some(first)
}

/// Identifies the destination's subscriptions, so record positions remembered in
/// a retry state are only trusted while the subscriptions are unchanged.
fn config_fingerprint(dest: &DestinationConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for s in &dest.destination.subscriptions {
        s.name.hash(&mut h);
        s.action.name().hash(&mut h);
        s.trigger.source().hash(&mut h);
        s.enabled.hash(&mut h);
        s.mapping.source().to_string().hash(&mut h);
    }
    h.finish()
}

#[allow(clippy::too_many_arguments)]
fn dead(
    dest: &DestinationConfig,
    subscription: Option<String>,
    reason: &str,
    status: Option<u16>,
    message: String,
    event: Value,
    request: Option<Value>,
    response: Option<Value>,
) -> DeadLetter {
    DeadLetter {
        id: 0,
        destination: dest.id.clone(),
        subscription,
        reason: reason.to_owned(),
        status,
        message,
        event,
        request,
        response,
        at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn letter(sub: &str, msg: &str) -> DeadLetter {
        DeadLetter {
            id: 0,
            destination: "d".into(),
            subscription: Some(sub.into()),
            reason: "rejected".into(),
            status: Some(400),
            message: msg.into(),
            event: json!({"n": 1}),
            request: Some(json!({"r": sub})),
            response: None,
            at_ms: 0,
        }
    }

    #[test]
    fn one_dead_letter_per_event() {
        assert!(merge_letters(Vec::new()).is_none());
        let one = merge_letters(vec![letter("a", "x")]).unwrap();
        assert_eq!(one.request, Some(json!({"r": "a"})));
        let merged = merge_letters(vec![letter("a", "x"), letter("b", "y")]).unwrap();
        assert_eq!(merged.message, "x; b: y");
        assert_eq!(merged.request, Some(json!([{"r": "a"}, {"r": "b"}])));
    }
}
