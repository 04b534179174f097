//! Grouping records into Mixpanel requests. Pure.
//!
//! Records of one event are split into *phases* at each change of endpoint, so an
//! event's `$identify` (`/track`) is sent, and answered, before its profile
//! `$set` (`/engage`). Within a phase, records are grouped per endpoint:
//! `/import` up to the destination's `batch_size` events and `max_batch_bytes`;
//! `/track` up to 2000, `/engage` up to 2000 and `/groups` up to 200 per request,
//! as Mixpanel documents. A lone form record is sent as an object (exactly what the
//! reference sends), several as an array.

use std::collections::HashMap;

use super::Item;
use crate::config::DestinationConfig;
use crate::mixpanel::api::{self, Body, Endpoint, Request};
use crate::mixpanel::Settings;

/// Most records per `/track` request.
pub const MAX_TRACK_BATCH: usize = 2000;
/// Most updates per `/engage` request.
pub const MAX_ENGAGE_BATCH: usize = 2000;
/// Most updates per `/groups` request.
pub const MAX_GROUPS_BATCH: usize = 200;

/// Records that break Mixpanel's limits (found when they were packed) are
/// taken out with the reason; the rest keep their positions.
#[allow(clippy::type_complexity)]
pub fn check_limits(items: Vec<Item>) -> (Vec<(usize, Item)>, Vec<(usize, Item, String)>) {
    let mut ok = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (pos, item) in items.into_iter().enumerate() {
        match item.record.refusal.clone() {
            Some(reason) => refused.push((pos, item, reason)),
            None => ok.push((pos, item)),
        }
    }
    (ok, refused)
}

/// Records for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub endpoint: Endpoint,
    /// `(position in the delivery, item)`.
    pub items: Vec<(usize, Item)>,
}

/// The phase of each record: a record goes after the previous record of its
/// event when the endpoint changes, and never before an earlier record of the
/// request to the same endpoint (so updates of one profile keep their order
/// across events).
fn phase_of(items: &[(usize, Item)]) -> Vec<usize> {
    let mut phases = Vec::with_capacity(items.len());
    let mut last_of_event: HashMap<usize, (Endpoint, usize)> = HashMap::new();
    let mut last_of_endpoint: HashMap<Endpoint, usize> = HashMap::new();
    for (_, item) in items {
        let endpoint = item.record.endpoint;
        let after_event = match last_of_event.get(&item.event) {
            None => 0,
            Some((e, phase)) if *e == endpoint => *phase,
            Some((_, phase)) => phase + 1,
        };
        let phase = after_event.max(last_of_endpoint.get(&endpoint).copied().unwrap_or(0));
        last_of_event.insert(item.event, (endpoint, phase));
        last_of_endpoint.insert(endpoint, phase);
        phases.push(phase);
    }
    phases
}

/// The batches to send, phase by phase (each phase after the previous answered).
pub fn plan(dest: &DestinationConfig, items: Vec<(usize, Item)>) -> Vec<Vec<Batch>> {
    let phases = phase_of(&items);
    let count = phases.iter().max().map_or(0, |m| m + 1);
    let mut by_phase: Vec<Vec<(usize, Item)>> = (0..count).map(|_| Vec::new()).collect();
    for (phase, item) in phases.into_iter().zip(items) {
        if let Some(p) = by_phase.get_mut(phase) {
            p.push(item);
        }
    }
    by_phase.into_iter().map(|items| batches(dest, items)).collect()
}

fn limit(dest: &DestinationConfig, endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Import => dest.batch_size.max(1),
        Endpoint::Track => MAX_TRACK_BATCH,
        Endpoint::Engage => MAX_ENGAGE_BATCH,
        Endpoint::Groups => MAX_GROUPS_BATCH,
    }
}

fn batches(dest: &DestinationConfig, items: Vec<(usize, Item)>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    let mut by_endpoint: [Vec<(usize, Item)>; 4] = Default::default();
    for (pos, item) in items {
        let slot = match item.record.endpoint {
            Endpoint::Import => 0,
            Endpoint::Track => 1,
            Endpoint::Engage => 2,
            Endpoint::Groups => 3,
        };
        if let Some(list) = by_endpoint.get_mut(slot) {
            list.push((pos, item));
        }
    }
    let endpoints = [Endpoint::Import, Endpoint::Track, Endpoint::Engage, Endpoint::Groups];
    for (endpoint, list) in endpoints.into_iter().zip(by_endpoint) {
        let max = limit(dest, endpoint);
        let mut current: Vec<(usize, Item)> = Vec::new();
        let mut bytes = 2usize;
        for (pos, item) in list {
            let size = if endpoint == Endpoint::Import {
                item.record.json.len() + 1
            } else {
                0
            };
            if !current.is_empty() && (current.len() >= max || bytes + size > dest.max_batch_bytes) {
                out.push(Batch {
                    endpoint,
                    items: std::mem::take(&mut current),
                });
                bytes = 2;
            }
            bytes += size;
            current.push((pos, item));
        }
        if !current.is_empty() {
            out.push(Batch {
                endpoint,
                items: current,
            });
        }
    }
    out
}

/// The request for one batch: the packed records, not serialized again.
pub fn build_request(settings: &Settings, endpoint: Endpoint, items: &[(usize, Item)]) -> Request {
    let records = items.iter().map(|(_, i)| i.record.json.clone()).collect();
    match endpoint {
        Endpoint::Import => api::import_request_with(settings, Body::Packed { form: false, records }),
        _ => api::form_request_with(settings, endpoint, Body::Packed { form: true, records }, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Destination;
    use crate::mixpanel::actions::Record;
    use serde_json::json;

    fn dest(batch_size: usize, max_batch_bytes: usize) -> DestinationConfig {
        DestinationConfig {
            id: "d".into(),
            write_keys: vec![],
            destination: Destination::with_presets(Settings::new("tok")),
            dry_run: false,
            batch_size,
            max_batch_bytes,
            gzip: true,
        }
    }

    fn item(event: usize, endpoint: Endpoint) -> Item {
        Item::new(
            event,
            0,
            Record {
                endpoint,
                data: json!({"e": event}).into(),
            },
            0,
        )
    }

    fn positioned(items: Vec<Item>) -> Vec<(usize, Item)> {
        items.into_iter().enumerate().collect()
    }

    #[test]
    fn identify_then_engage_in_two_phases() {
        let items = positioned(vec![
            item(0, Endpoint::Track),
            item(0, Endpoint::Engage),
            item(1, Endpoint::Track),
            item(1, Endpoint::Engage),
            item(2, Endpoint::Import),
        ]);
        let phases = plan(&dest(1000, 1 << 20), items);
        assert_eq!(phases.len(), 2);
        let shape = |p: &Vec<Batch>| p.iter().map(|b| (b.endpoint, b.items.len())).collect::<Vec<_>>();
        assert_eq!(shape(&phases[0]), vec![(Endpoint::Import, 1), (Endpoint::Track, 2)]);
        assert_eq!(shape(&phases[1]), vec![(Endpoint::Engage, 2)]);
    }

    #[test]
    fn profile_updates_keep_request_order_across_events() {
        // Event 0: $identify then $set; event 1: only a $set. Event 1's $set must
        // not overtake event 0's.
        let items = positioned(vec![
            item(0, Endpoint::Track),
            item(0, Endpoint::Engage),
            item(1, Endpoint::Engage),
        ]);
        let phases = plan(&dest(1000, 1 << 20), items);
        assert_eq!(phases.len(), 2);
        let engage: Vec<usize> = phases[1][0].items.iter().map(|(_, i)| i.event).collect();
        assert_eq!(engage, vec![0, 1]);
    }

    #[test]
    fn import_chunks_by_count_and_bytes() {
        let items = positioned((0..5).map(|e| item(e, Endpoint::Import)).collect());
        let sizes: Vec<usize> = plan(&dest(2, 1 << 20), items.clone())[0]
            .iter()
            .map(|b| b.items.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        // Each record is 8 bytes + 1 separator; 20 bytes hold two.
        let sizes: Vec<usize> = plan(&dest(1000, 20), items)[0].iter().map(|b| b.items.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn groups_batches_at_200() {
        let items = positioned((0..450).map(|e| item(e, Endpoint::Groups)).collect());
        let sizes: Vec<usize> = plan(&dest(1000, 1 << 20), items)[0]
            .iter()
            .map(|b| b.items.len())
            .collect();
        assert_eq!(sizes, vec![200, 200, 50]);
    }

    #[test]
    fn lone_form_record_is_an_object_several_an_array() {
        let s = Settings::new("tok");
        let one = build_request(&s, Endpoint::Engage, &positioned(vec![item(0, Endpoint::Engage)]));
        assert_eq!(one.body.to_value(), json!({"e": 0}));
        assert_eq!(one.body.encode(), api::Body::Form(json!({"e": 0})).encode());
        assert_eq!(one.url, "https://api.mixpanel.com/engage?verbose=1");
        let two = build_request(
            &s,
            Endpoint::Engage,
            &positioned(vec![item(0, Endpoint::Engage), item(1, Endpoint::Engage)]),
        );
        assert_eq!(two.body.to_value(), json!([{"e": 0}, {"e": 1}]));
        assert_eq!(two.body.encode(), api::Body::Form(json!([{"e": 0}, {"e": 1}])).encode());
        let import = build_request(
            &s,
            Endpoint::Import,
            &positioned(vec![item(0, Endpoint::Import), item(1, Endpoint::Import)]),
        );
        assert_eq!(import.body.encode(), br#"[{"e":0},{"e":1}]"#.to_vec());
        assert_eq!(import.body.content_type(), api::CONTENT_TYPE_JSON);
    }

    #[test]
    fn limits_take_out_bad_records() {
        let bad = Item::new(
            0,
            0,
            Record {
                endpoint: Endpoint::Import,
                data: json!({"event": "E", "properties": {"distinct_id": "null"}}).into(),
            },
            0,
        );
        let good = Item::new(
            1,
            0,
            Record {
                endpoint: Endpoint::Import,
                data: json!({"event": "E", "properties": {"distinct_id": "u"}}).into(),
            },
            0,
        );
        let (ok, refused) = check_limits(vec![bad, good]);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 1);
        assert_eq!(refused[0].0, 0);
    }
}
