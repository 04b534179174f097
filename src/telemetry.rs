//! Metric names and the Prometheus exporter. Labels are low-cardinality:
//! `destination`, `action`, `endpoint`, `status_class`, `outcome`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events accepted by ingest (durable in the spool, or taken for direct delivery).
pub const EVENTS_ACCEPTED: &str = "mixpanel_actions_events_accepted_total";
/// Mixpanel records accepted by Mixpanel.
pub const RECORDS_DELIVERED: &str = "mixpanel_actions_records_delivered_total";
/// Mixpanel records refused for good (by Mixpanel, its limits, or validation).
pub const RECORDS_REJECTED: &str = "mixpanel_actions_records_rejected_total";
/// Events scheduled for another attempt.
pub const EVENTS_RETRIED: &str = "mixpanel_actions_events_retried_total";
/// Events moved to dead letters.
pub const EVENTS_DEAD_LETTERED: &str = "mixpanel_actions_events_dead_lettered_total";
/// Dead letters dropped because the dead-letter store is full.
pub const DEAD_LETTERS_DROPPED: &str = "mixpanel_actions_dead_letters_dropped_total";
/// Events refused by ingest because the spool is full (503).
pub const EVENTS_REFUSED_FULL: &str = "mixpanel_actions_events_refused_spool_full_total";
/// Events waiting in the spool.
pub const SPOOL_DEPTH: &str = "mixpanel_actions_spool_depth";
/// Bytes of events waiting in the spool.
pub const SPOOL_BYTES: &str = "mixpanel_actions_spool_bytes";
/// Age in seconds of the oldest event waiting, per destination.
pub const OLDEST_EVENT_AGE: &str = "mixpanel_actions_oldest_event_age_seconds";
/// Records per request sent to Mixpanel.
pub const BATCH_SIZE: &str = "mixpanel_actions_batch_records";
/// Seconds per Mixpanel request.
pub const MIXPANEL_LATENCY: &str = "mixpanel_actions_mixpanel_request_seconds";
/// Mixpanel answers by status class (`2xx`, `4xx`, `5xx`, `network`).
pub const MIXPANEL_RESPONSES: &str = "mixpanel_actions_mixpanel_responses_total";

/// Events that no enabled subscription matched, per destination and event type.
pub const EVENTS_UNMATCHED: &str = "mixpanel_actions_events_unmatched_total";

/// Counts the events of `destination` that no subscription matched, by type;
/// the first time for a destination and type, says so at INFO with how to
/// change it.
pub fn events_unmatched<'a>(destination: &str, events: impl Iterator<Item = &'a serde_json::Value>) {
    const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];
    let mut counts = [0u64; TYPES.len() + 1];
    for event in events {
        let kind = event.get("type").and_then(serde_json::Value::as_str);
        let slot = TYPES.iter().position(|t| Some(*t) == kind).unwrap_or(TYPES.len());
        if let Some(c) = counts.get_mut(slot) {
            *c += 1;
        }
    }
    static SEEN: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());
    for (slot, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let kind = TYPES.get(slot).copied().unwrap_or("other");
        metrics::counter!(EVENTS_UNMATCHED, "destination" => destination.to_owned(), "type" => kind).increment(n);
        crate::history::count(destination, crate::history::Count::Unmatched, n);
        let first = SEEN.lock().is_ok_and(|mut seen| {
            let new = !seen.iter().any(|(d, k)| d == destination && *k == slot);
            if new {
                seen.push((destination.to_owned(), slot));
            }
            new
        });
        if !first {
            continue;
        }
        let trigger = match TYPES.get(slot) {
            Some(t) => format!("type = \"{t}\""),
            None => "type = \"<the type>\"".to_owned(),
        };
        tracing::info!(
            destination,
            r#type = kind,
            "no subscription matches {kind} events: they are accepted and not sent to Mixpanel; add a subscription \
             whose trigger matches them (e.g. subscribe = '{trigger}') to send them (counted in {EVENTS_UNMATCHED})"
        );
    }
}

/// The status class label of an HTTP status (0 = no answer).
pub fn status_class(status: u16) -> &'static str {
    match status {
        0 => "network",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Installs the process-wide Prometheus recorder; `None` when one is installed
/// already (tests that start several servers in one process).
pub fn install_prometheus() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(MIXPANEL_LATENCY.into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        )
        .ok()?
        .set_buckets_for_metric(
            Matcher::Full(BATCH_SIZE.into()),
            &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0],
        )
        .ok()?
        .install_recorder()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(0), "network");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
