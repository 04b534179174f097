//! The seam between accepting events and delivering them: run the events through a
//! destination's pipeline and hand the records to the deliverer. Ingest calls only
//! [`deliver`]; a durable spool can replace what happens behind it.

use serde_json::{json, Value};

use crate::config::DestinationConfig;
use crate::delivery::{Deliverer, Item, ItemResult};
use crate::destination::EventResult;
use crate::history::{self, Count};
use crate::mapping::schema::Mode;

/// An event refused before sending: its mapping or validation failed.
#[derive(Clone, Debug, PartialEq)]
pub struct MappingFailure {
    pub event: usize,
    pub subscription: usize,
    pub status: u16,
    pub message: String,
}

/// What became of a request's events at one destination.
#[derive(Clone, Debug, Default)]
pub struct DestinationReport {
    pub delivered: Vec<(Item, ItemResult)>,
    pub refused: Vec<MappingFailure>,
}

impl DestinationReport {
    /// Whether some record could not be delivered for now (retry later).
    pub fn any_failed(&self) -> bool {
        self.delivered.iter().any(|(_, r)| r.is_failed())
    }

    /// The longest `Retry-After` Mixpanel asked for, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.delivered
            .iter()
            .filter_map(|(_, r)| match r {
                ItemResult::Failed { retry_after, .. } => *retry_after,
                _ => None,
            })
            .max()
    }

    /// Permanent rejections, for the answer and the log.
    pub fn rejections(&self, dest: &DestinationConfig) -> Vec<Value> {
        let name = |i: usize| {
            dest.destination
                .subscriptions
                .get(i)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        };
        let mut out: Vec<Value> = self
            .refused
            .iter()
            .map(|f| {
                json!({"destination": dest.id, "event": f.event, "subscription": name(f.subscription),
                       "status": f.status, "message": f.message})
            })
            .collect();
        for (item, result) in &self.delivered {
            if let ItemResult::Rejected { status, message, .. } = result {
                out.push(
                    json!({"destination": dest.id, "event": item.event, "subscription": name(item.subscription),
                                "status": status, "message": message}),
                );
            }
        }
        out
    }
}

/// Runs `events` through `dest` and delivers the records.
pub async fn deliver(
    deliverer: &Deliverer,
    dest: &DestinationConfig,
    events: &[Value],
    now_ms: i64,
) -> DestinationReport {
    history::count(&dest.id, Count::Received, events.len() as u64);
    let outcome = dest.destination.process(events, Mode::Single, now_ms);
    crate::telemetry::events_unmatched(&dest.id, outcome.unmatched.iter().filter_map(|&i| events.get(i)));
    let mut items = Vec::new();
    let mut refused = Vec::new();
    for sub in outcome.subscriptions {
        for (event, result) in sub.events {
            match result {
                EventResult::Records(records) => {
                    items.extend(
                        records
                            .into_iter()
                            .map(|record| Item::new(event, sub.subscription, record, now_ms)),
                    );
                }
                EventResult::Failed { status, message } => {
                    history::count(&dest.id, Count::FailedValidation, 1);
                    refused.push(MappingFailure {
                        event,
                        subscription: sub.subscription,
                        status,
                        message,
                    });
                }
            }
        }
    }
    // Keep the records of one event together and in order, events in order.
    items.sort_by_key(|i| i.event);
    let delivered = if items.is_empty() {
        Vec::new()
    } else {
        deliverer.deliver(dest, items, false).await
    };
    DestinationReport { delivered, refused }
}
