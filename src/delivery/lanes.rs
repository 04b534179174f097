//! Which records need an order, and the lane that keeps it.
//!
//! `/import` events carry their own `time` and `$insert_id`: Mixpanel needs no
//! order between them, so they are batched freely. Profile and group updates
//! (`/engage`, `/groups`) and the `/track` records that come with them
//! (`$identify`, `$create_alias`) are applied in arrival order by Mixpanel, so an
//! event with any of those goes to a *lane* chosen by the profile it touches; a
//! lane has at most one round of requests in flight and sends its events in
//! acceptance order. Same profile, same lane: updates of one `distinct_id` (or
//! one group) reach Mixpanel in the order they were accepted.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::Item;
use crate::mixpanel::api::Endpoint;

/// The profile an event's ordered records touch, as a hash; `None` when all its
/// records are `/import` events (no order needed).
///
/// The first `/engage` (`$distinct_id`) or `/groups` (`$group_key`, `$group_id`)
/// record decides; an event with only `/track` records is keyed by their
/// `distinct_id` (`$identified_id` for `$identify`).
pub fn profile_key<'a>(records: impl Iterator<Item = &'a Item> + Clone) -> Option<u64> {
    let mut track_key: Option<Option<u64>> = None;
    for item in records {
        match item.record.endpoint {
            Endpoint::Import => {}
            Endpoint::Engage | Endpoint::Groups => return item.record.profile,
            Endpoint::Track => {
                track_key.get_or_insert(item.record.profile);
            }
        }
    }
    track_key.flatten()
}

/// The profile or group one record updates, as a hash (see [`profile_key`]);
/// `None` for `/import` events.
pub fn record_key(endpoint: Endpoint, data: &Value) -> Option<u64> {
    match endpoint {
        Endpoint::Import => None,
        Endpoint::Engage => Some(hash(&["engage", text(data.get("$distinct_id"))])),
        Endpoint::Groups => Some(hash(&[
            "groups",
            text(data.get("$group_key")),
            text(data.get("$group_id")),
        ])),
        Endpoint::Track => {
            let props = data.get("properties");
            let id = props
                .and_then(|p| p.get("distinct_id"))
                .or_else(|| props.and_then(|p| p.get("$identified_id")));
            Some(hash(&["engage", text(id)]))
        }
    }
}

fn text(v: Option<&Value>) -> &str {
    match v {
        Some(Value::String(s)) => s,
        _ => "",
    }
}

fn hash(parts: &[&str]) -> u64 {
    // SipHash with fixed keys: the same profile maps to the same lane in every
    // process, so a restart keeps the assignment.
    let mut h = std::hash::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// One lane: the window keys of its events, in acceptance order.
#[derive(Debug, Default)]
pub struct Lane {
    pub queue: VecDeque<usize>,
    /// A round of this lane is in flight.
    pub busy: bool,
}

/// Most records of one endpoint in one lane round: one request per endpoint and
/// phase, so the updates of a profile never race each other.
pub fn round_limit(endpoint: Endpoint, batch_size: usize) -> usize {
    match endpoint {
        Endpoint::Import => batch_size.max(1),
        Endpoint::Track => super::batcher::MAX_TRACK_BATCH,
        Endpoint::Engage => super::batcher::MAX_ENGAGE_BATCH,
        Endpoint::Groups => super::batcher::MAX_GROUPS_BATCH,
    }
}

/// Index of `endpoint` in per-endpoint counters.
pub fn slot(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Import => 0,
        Endpoint::Track => 1,
        Endpoint::Engage => 2,
        Endpoint::Groups => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixpanel::actions::Record;
    use serde_json::json;

    fn item(endpoint: Endpoint, data: Value) -> Item {
        Item::new(
            0,
            0,
            Record {
                endpoint,
                data: data.into(),
            },
            0,
        )
    }

    #[test]
    fn import_only_events_need_no_lane() {
        let items = [item(Endpoint::Import, json!({"event": "E"}))];
        assert_eq!(profile_key(items.iter()), None);
    }

    #[test]
    fn identify_and_a_later_set_of_the_same_user_share_a_lane() {
        let identify = [
            item(
                Endpoint::Track,
                json!({"event": "$identify", "properties": {"$identified_id": "u1", "$anon_id": "a"}}),
            ),
            item(Endpoint::Engage, json!({"$distinct_id": "u1", "$set": {}})),
        ];
        let set = [item(Endpoint::Engage, json!({"$distinct_id": "u1", "$set": {"n": 2}}))];
        let alias = [item(
            Endpoint::Track,
            json!({"event": "$create_alias", "properties": {"distinct_id": "u1", "alias": "x"}}),
        )];
        let other = [item(Endpoint::Engage, json!({"$distinct_id": "u2", "$set": {}}))];
        let k = profile_key(identify.iter());
        assert!(k.is_some());
        assert_eq!(profile_key(set.iter()), k);
        assert_eq!(profile_key(alias.iter()), k);
        assert_ne!(profile_key(other.iter()), k);
    }

    #[test]
    fn groups_are_keyed_by_key_and_id() {
        let a = [item(
            Endpoint::Groups,
            json!({"$group_key": "company", "$group_id": "c1"}),
        )];
        let b = [item(
            Endpoint::Groups,
            json!({"$group_key": "company", "$group_id": "c2"}),
        )];
        assert!(profile_key(a.iter()).is_some());
        assert_ne!(profile_key(a.iter()), profile_key(b.iter()));
    }
}
