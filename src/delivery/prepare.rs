//! From spooled bytes to records: parse, run the destination's pipeline, and
//! number each event's records (positions are what a retry state remembers as
//! done). CPU work: it runs on the blocking pool, in parallel chunks, under
//! the destination's transform guard (a crash while transforming cannot
//! repeat forever: see `spool::TransformGuard`).
//!
//! # Fault injection (tests only)
//! When the process environment has `MIXPANEL_ACTIONS_TEST_ABORT_ON_MESSAGE_ID`
//! set to a non-empty value, transforming an event whose `messageId` is that
//! value aborts the process (`std::process::abort`), as a bug would: the tests
//! of the guard need a real crash on a chosen event. It cannot be turned on by
//! accident: it is not a configuration key (the configuration's variables
//! start with `MIXPANEL_ACTIONS__`, two underscores, and this one is not read
//! by the configuration loader), no request can set it, it acts only on the
//! exact `messageId` given, and the worker logs a warning at start while it is
//! set.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::spool::{DeadLetter, Entry, EventId, Step, TransformGuard};
use super::Item;
use crate::config::DestinationConfig;
use crate::destination::EventResult;
use crate::mapping::schema::Mode;

/// One spooled event, ready to deliver.
#[derive(Debug)]
pub struct Prepared {
    pub entry: Entry,
    /// When ingest accepted it (`receivedAt`), epoch ms.
    pub received_ms: Option<i64>,
    /// Records still to deliver, with their position among the event's records
    /// (`Item::event` is left 0; the worker sets it).
    pub records: Vec<(u32, Item)>,
    /// Subscriptions whose mapping or validation refused the event.
    pub refused: Vec<DeadLetter>,
}

/// Below this many events per chunk, splitting costs more than it saves.
const MIN_CHUNK_EVENTS: usize = 64;

/// The fault-injection variable (see the module docs).
pub const ABORT_ON_ENV: &str = "MIXPANEL_ACTIONS_TEST_ABORT_ON_MESSAGE_ID";

/// The `messageId` whose transform aborts the process, when fault injection
/// is on.
pub fn abort_marker() -> Option<&'static str> {
    static MARKER: OnceLock<Option<String>> = OnceLock::new();
    MARKER
        .get_or_init(|| std::env::var(ABORT_ON_ENV).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

fn abort_if_marked(events: &[Value]) {
    let Some(marker) = abort_marker() else {
        return;
    };
    if events
        .iter()
        .any(|e| e.get("messageId").and_then(Value::as_str) == Some(marker))
    {
        tracing::error!(
            message_id = marker,
            "fault injection: aborting while transforming this event"
        );
        std::process::abort();
    }
}

/// The reason of a quarantined event's dead letter.
pub const POISON: &str = "poison";

/// Prepares one read of `entries` (in spool order) under `guard`: events run
/// together marked as one range; suspects (being transformed when the process
/// died) one at a time, each marked; poison (being transformed, alone, at a
/// second crash) becomes a dead letter without being transformed.
pub async fn prepare_guarded(
    dest: &Arc<DestinationConfig>,
    guard: &Arc<TransformGuard>,
    entries: Vec<Entry>,
    now_ms: i64,
) -> Vec<Result<Prepared, (Entry, DeadLetter)>> {
    let mut out = Vec::with_capacity(entries.len());
    for step in guard.plan(entries) {
        let (entries, alone) = match step {
            Step::Poison(entry) => {
                guard.quarantined(entry.id);
                let letter = poison_letter(dest, &entry);
                out.push(Err((entry, letter)));
                continue;
            }
            Step::Alone(entry) => (vec![entry], true),
            Step::Batch(entries) => (entries, false),
        };
        let (Some(first), Some(last)) = (entries.first().map(|e| e.id), entries.last().map(|e| e.id)) else {
            continue;
        };
        // The marks are written here, not on the blocking pool: each is one
        // small write(2) into the page cache, and with no await between the
        // mark and its `Unmark`, a worker stopped while it waits for the
        // transform (a clean shutdown) clears the mark instead of leaving
        // one that would make suspects, or poison, of events that crashed
        // nothing.
        guard.begin(first, last, alone);
        let unmark = Unmark(guard);
        out.extend(prepare_parallel(dest, entries, now_ms).await);
        drop(unmark);
    }
    out
}

/// Clears the guard's mark when dropped: after the transform, or when the
/// transform is abandoned.
struct Unmark<'a>(&'a TransformGuard);

impl Drop for Unmark<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

fn poison_letter(dest: &DestinationConfig, entry: &Entry) -> DeadLetter {
    let EventId { segment, ordinal } = entry.id;
    tracing::error!(destination = %dest.id, segment, ordinal, "event quarantined: the process died twice while transforming it");
    let event = crate::segment::json::from_slice(&entry.event)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&entry.event).into_owned()));
    dead(
        dest,
        None,
        POISON,
        None,
        "the process died twice while transforming this event (the second time with this event \
         alone), so it is not transformed again; replay it once the cause is fixed"
            .to_owned(),
        event,
    )
}

/// Prepares `entries` on the blocking pool, in as many chunks as there are
/// cores. Unreadable events come back as dead letters (`Err`).
pub async fn prepare_parallel(
    dest: &Arc<DestinationConfig>,
    entries: Vec<Entry>,
    now_ms: i64,
) -> Vec<Result<Prepared, (Entry, DeadLetter)>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = cores.min(entries.len() / MIN_CHUNK_EVENTS).max(1);
    let per = entries.len().div_ceil(parts).max(1);
    let mut rest = entries;
    let mut handles = Vec::with_capacity(parts);
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        let ids: Vec<Entry> = chunk
            .iter()
            .map(|e| Entry {
                id: e.id,
                event: Vec::new(),
                state: None,
            })
            .collect();
        let dest = dest.clone();
        handles.push((ids, tokio::task::spawn_blocking(move || prepare(&dest, chunk, now_ms))));
    }
    let mut out = Vec::new();
    for (ids, handle) in handles {
        match handle.await {
            Ok(prepared) => out.extend(prepared),
            // A panic in the pipeline is a bug. Its events must not block the
            // queue forever: they become dead letters with the reason.
            Err(e) => {
                tracing::error!(destination = %dest.id, error = %e, events = ids.len(), "transform failed; events go to dead letters");
                let message = format!("internal error while transforming: {e}");
                for entry in ids {
                    let letter = dead(dest, None, "rejected", None, message.clone(), Value::Null);
                    out.push(Err((entry, letter)));
                }
            }
        }
    }
    out
}

/// Prepares one chunk, in order.
pub fn prepare(
    dest: &DestinationConfig,
    entries: Vec<Entry>,
    now_ms: i64,
) -> Vec<Result<Prepared, (Entry, DeadLetter)>> {
    let fingerprint = config_fingerprint(dest);
    let mut out = Vec::with_capacity(entries.len());
    let mut events = Vec::with_capacity(entries.len());
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        match crate::segment::json::from_slice(&entry.event) {
            Ok(v) => {
                events.push(v);
                kept.push(entry);
            }
            Err(e) => {
                // Kept as text, so the letter shows (and a replay re-queues) it.
                let text = Value::String(String::from_utf8_lossy(&entry.event).into_owned());
                let letter = dead(dest, None, "rejected", None, format!("unreadable event: {e}"), text);
                out.push(Err((entry, letter)));
            }
        }
    }
    abort_if_marked(&events);
    // A panic in the pipeline is a bug. Its events must not block the queue
    // forever: they become dead letters with the reason, and the event.
    let run = std::panic::AssertUnwindSafe(|| dest.destination.process(&events, Mode::Single, now_ms));
    let outcome = match std::panic::catch_unwind(run) {
        Ok(outcome) => {
            crate::telemetry::events_unmatched(&dest.id, outcome.unmatched.iter().filter_map(|&i| events.get(i)));
            outcome
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(destination = %dest.id, events = kept.len(), error = %what, "transform failed; events go to dead letters");
            let message = format!("internal error while transforming: {what}");
            for (entry, event) in kept.into_iter().zip(events) {
                out.push(Err((entry, dead(dest, None, "rejected", None, message.clone(), event))));
            }
            return out;
        }
    };
    let mut prepared: Vec<Prepared> = kept
        .into_iter()
        .zip(&events)
        .map(|(entry, event)| Prepared {
            received_ms: received_ms(event),
            entry,
            records: Vec::new(),
            refused: Vec::new(),
        })
        .collect();
    let mut next_position: Vec<u32> = vec![0; prepared.len()];
    let done: Vec<HashSet<u32>> = prepared
        .iter()
        .map(|p| match &p.entry.state {
            Some(s) if s.config == fingerprint => s.done.iter().copied().collect(),
            _ => HashSet::new(),
        })
        .collect();
    for sub in outcome.subscriptions {
        let sub_name = dest
            .destination
            .subscriptions
            .get(sub.subscription)
            .map(|s| s.name.clone());
        for (index, result) in sub.events {
            let (Some(p), Some(position), Some(done)) =
                (prepared.get_mut(index), next_position.get_mut(index), done.get(index))
            else {
                continue;
            };
            match result {
                EventResult::Records(records) => {
                    for record in records {
                        let this = *position;
                        *position += 1;
                        if done.contains(&this) {
                            continue;
                        }
                        p.records.push((this, Item::new(0, sub.subscription, record, now_ms)));
                    }
                }
                EventResult::Failed { status, message } => {
                    crate::history::count(&dest.id, crate::history::Count::FailedValidation, 1);
                    let event = events.get(index).cloned().unwrap_or(Value::Null);
                    p.refused
                        .push(dead(dest, sub_name.clone(), "rejected", Some(status), message, event));
                }
            }
        }
    }
    out.extend(prepared.into_iter().map(Ok));
    out
}

/// When ingest accepted the event (its `receivedAt`), in epoch ms.
pub fn received_ms(event: &Value) -> Option<i64> {
    let text = event.get("receivedAt")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Identifies the destination's subscriptions, so record positions remembered in
/// a retry state are only trusted while the subscriptions are unchanged.
pub fn config_fingerprint(dest: &DestinationConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    // Settings that change which records an event yields.
    dest.destination.settings.traits_from_context.hash(&mut h);
    for s in &dest.destination.subscriptions {
        s.name.hash(&mut h);
        s.action.name().hash(&mut h);
        s.trigger.source().hash(&mut h);
        s.enabled.hash(&mut h);
        s.mapping.source().to_string().hash(&mut h);
    }
    h.finish()
}

/// A dead letter of `dest` without the request and answer (added when known).
pub fn dead(
    dest: &DestinationConfig,
    subscription: Option<String>,
    reason: &str,
    status: Option<u16>,
    message: String,
    event: Value,
) -> DeadLetter {
    DeadLetter {
        id: 0,
        destination: dest.id.clone(),
        subscription,
        reason: reason.to_owned(),
        status,
        message,
        event,
        request: None,
        response: None,
        at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// One dead letter per event: several rejections of one event are listed in it.
pub fn merge_letters(mut letters: Vec<DeadLetter>) -> Option<DeadLetter> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::{Cursor, Spool, SpoolLimits};
    use crate::destination::Destination;
    use crate::mixpanel::Settings;
    use serde_json::json;

    fn shape(guard: &TransformGuard, entries: Vec<Entry>) -> String {
        guard
            .plan(entries)
            .iter()
            .map(|step| match step {
                Step::Batch(es) => "b".repeat(es.len()),
                Step::Alone(_) => "s".into(),
                Step::Poison(_) => "p".into(),
            })
            .collect()
    }

    #[test]
    fn guarded_preparation_quarantines_poison_and_clears_its_marks() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1 << 30,
            max_dead_letters: 10,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let read = |spool: &Spool| spool.read("d", &mut Cursor::default(), 100, 1 << 20).unwrap();
        let spool = Spool::open(dir.path(), limits).unwrap();
        let events = (0..4)
            .map(|i| {
                let e = json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("m{i}")});
                ("d".to_owned(), serde_json::to_vec(&e).unwrap())
            })
            .collect();
        rt.block_on(spool.append(events)).unwrap();
        let ids: Vec<EventId> = read(&spool).iter().map(|e| e.id).collect();
        // A crash with the four in a batch, then one with event 1 alone.
        spool.transform_guard("d").begin(ids[0], ids[3], false);
        spool.close();
        let spool = Spool::open(dir.path(), limits).unwrap();
        spool.transform_guard("d").begin(ids[1], ids[1], true);
        spool.close();

        let spool = Spool::open(dir.path(), limits).unwrap();
        let guard = spool.transform_guard("d");
        assert_eq!(shape(&guard, read(&spool)), "bpss");
        let dest = Arc::new(DestinationConfig {
            id: "d".into(),
            write_keys: vec![],
            destination: Destination::with_presets(Settings::new("tok")),
            dry_run: false,
            batch_size: 10,
            max_batch_bytes: 1 << 20,
            gzip: false,
        });
        let out = rt.block_on(prepare_guarded(&dest, &guard, read(&spool), 0));
        assert_eq!(out.len(), 4);
        for (i, r) in out.iter().enumerate() {
            match r {
                Err((entry, letter)) => {
                    assert_eq!((i, entry.id), (1, ids[1]));
                    assert_eq!(letter.reason, POISON);
                    assert_eq!(letter.event["messageId"], "m1");
                    assert!(letter.message.contains("died twice"), "{}", letter.message);
                }
                Ok(p) => {
                    assert_eq!(p.entry.id, ids[i]);
                    assert_eq!(p.records.len(), 1, "{i}");
                }
            }
        }
        // Every mark cleared, the suspects settled: nothing left to isolate,
        // after a restart too; the poison stays listed while it is queued.
        assert_eq!(shape(&guard, read(&spool)), "bpbb");
        drop(guard);
        spool.close();
        let spool = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(shape(&spool.transform_guard("d"), read(&spool)), "bpbb");

        // A mark is cleared when its transform is abandoned too.
        let guard = spool.transform_guard("d");
        guard.begin(ids[2], ids[2], true);
        drop(Unmark(&guard));
        drop(guard);
        spool.close();
        let spool = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(shape(&spool.transform_guard("d"), read(&spool)), "bpbb");
    }

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
