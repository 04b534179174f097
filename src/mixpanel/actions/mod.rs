//! The six Mixpanel actions: a validated payload in, Mixpanel records out.
//!
//! Each action is a pure function of the payload, the destination settings, the
//! clock value given in [`Context`] and fresh random insert ids. Records are not yet
//! requests: the caller groups them (one `/import` per batch, one form request per
//! update, or Mixpanel arrays) so the same records serve preview, synchronous
//! delivery and the spool. Never panics on user input.

pub mod fields;
mod properties;
pub mod record;
pub mod useragent;

use serde_json::{Map, Value};

use crate::mapping::number::{f64_to_json, js_number_from_str};
use crate::mapping::schema::{Field, Payload};
use crate::mixpanel::api::Endpoint;
use crate::mixpanel::Settings;
use crate::segment::member;

pub use properties::random_insert_id;
pub use record::RecordData;

/// The reference's action names (`partnerAction` in a subscription).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    TrackEvent,
    TrackPurchase,
    IdentifyUser,
    GroupIdentifyUser,
    Alias,
    IncrementProperties,
}

impl ActionKind {
    pub const ALL: [ActionKind; 6] = [
        ActionKind::TrackEvent,
        ActionKind::TrackPurchase,
        ActionKind::IdentifyUser,
        ActionKind::GroupIdentifyUser,
        ActionKind::Alias,
        ActionKind::IncrementProperties,
    ];

    pub fn from_name(name: &str) -> Option<ActionKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ActionKind::TrackEvent => "trackEvent",
            ActionKind::TrackPurchase => "trackPurchase",
            ActionKind::IdentifyUser => "identifyUser",
            ActionKind::GroupIdentifyUser => "groupIdentifyUser",
            ActionKind::Alias => "alias",
            ActionKind::IncrementProperties => "incrementProperties",
        }
    }

    /// The action's field schema.
    pub fn fields(self) -> &'static [Field] {
        match self {
            ActionKind::TrackEvent => fields::TRACK_EVENT,
            ActionKind::TrackPurchase => fields::TRACK_PURCHASE,
            ActionKind::IdentifyUser => fields::IDENTIFY_USER,
            ActionKind::GroupIdentifyUser => fields::GROUP_IDENTIFY_USER,
            ActionKind::Alias => fields::ALIAS,
            ActionKind::IncrementProperties => fields::INCREMENT_PROPERTIES,
        }
    }

    /// The mapping of the action's defaults (what the presets use).
    pub fn default_mapping(self) -> &'static Value {
        match self {
            ActionKind::TrackEvent => &fields::TRACK_EVENT_DEFAULTS,
            ActionKind::TrackPurchase => &fields::TRACK_PURCHASE_DEFAULTS,
            ActionKind::IdentifyUser => &fields::IDENTIFY_USER_DEFAULTS,
            ActionKind::GroupIdentifyUser => &fields::GROUP_IDENTIFY_USER_DEFAULTS,
            ActionKind::Alias => &fields::ALIAS_DEFAULTS_MAPPING,
            ActionKind::IncrementProperties => &fields::INCREMENT_PROPERTIES_DEFAULTS,
        }
    }

    /// Whether the reference batches this action's payloads into shared `/import`
    /// requests (the others run once per event).
    pub fn batches(self) -> bool {
        matches!(self, ActionKind::TrackEvent | ActionKind::TrackPurchase)
    }
}

/// One Mixpanel record: an event for `/import` or `/track`, an update for
/// `/engage` or `/groups`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'a> {
    pub endpoint: Endpoint,
    pub data: RecordData<'a>,
}

impl Record<'_> {
    /// The record with nothing borrowed.
    pub fn into_owned(self) -> Record<'static> {
        Record {
            endpoint: self.endpoint,
            data: self.data.into_owned(),
        }
    }
}

/// What an action may depend on besides its payload.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub settings: &'a Settings,
    /// "Now" in epoch milliseconds, for events without a usable `time`.
    pub now_ms: i64,
}

/// An action that refused its payload (nothing is sent for that event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub status: u16,
    pub message: String,
}

impl ActionError {
    fn bad_request(message: impl Into<String>) -> ActionError {
        ActionError {
            status: 400,
            message: message.into(),
        }
    }
}

/// Runs an action on a validated payload.
pub fn perform<'a>(kind: ActionKind, payload: Payload<'a>, ctx: &Context<'_>) -> Result<Vec<Record<'a>>, ActionError> {
    let payload_ref = &payload;
    match kind {
        ActionKind::TrackEvent => Ok(vec![Record {
            endpoint: Endpoint::Import,
            data: properties::track_event(payload, ctx),
        }]),
        ActionKind::TrackPurchase => Ok(properties::track_purchase(payload, ctx)
            .into_iter()
            .map(|data| Record {
                endpoint: Endpoint::Import,
                data,
            })
            .collect()),
        ActionKind::IdentifyUser => Ok(identify_user(payload_ref, ctx)),
        ActionKind::GroupIdentifyUser => group_identify_user(payload_ref, ctx).map(|r| vec![r]),
        ActionKind::Alias => Ok(vec![alias(payload_ref, ctx)]),
        ActionKind::IncrementProperties => increment_properties(payload_ref, ctx),
    }
}

/// JavaScript truthiness of an optional JSON value.
pub(crate) fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// JavaScript `a ?? b`.
fn nullish_or<'a>(a: Option<&'a Value>, b: Option<&'a Value>) -> Option<&'a Value> {
    match a {
        None | Some(Value::Null) => b,
        some => some,
    }
}

/// Inserts `key` only when the value is defined (JSON.stringify drops undefined).
fn put(map: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.clone());
    }
}

/// A reserved profile key, assigned after the rest of the traits as the
/// reference's `{...rest, $email: traits.email}` does: a trait the sender named
/// like it keeps its place and takes this value, and is gone when the value is
/// undefined (JavaScript does not send undefined).
fn assign(map: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    match value {
        Some(v) => {
            map.insert(key.to_owned(), v.clone());
        }
        None => {
            map.shift_remove(key);
        }
    }
}

fn source_name(ctx: &Context<'_>) -> Option<Value> {
    ctx.settings.source_name.clone().map(Value::String)
}

/// The user's `distinct_id` for profile updates: `user_id ?? anonymous_id`.
fn profile_distinct_id<'p>(payload: &'p Payload<'_>) -> Option<&'p Value> {
    nullish_or(payload.get("user_id"), payload.get("anonymous_id"))
}

const IDENTIFY_SPECIAL_TRAITS: [&str; 9] = [
    "created",
    "createdAt",
    "created_at",
    "email",
    "firstName",
    "lastName",
    "name",
    "username",
    "phone",
];

fn identify_user(payload: &Payload, ctx: &Context<'_>) -> Vec<Record<'static>> {
    let mut records = Vec::with_capacity(2);
    let anonymous_id = payload.get("anonymous_id");
    if truthy(anonymous_id) {
        let mut props = Map::new();
        put(&mut props, "$identified_id", payload.get("user_id"));
        put(&mut props, "$anon_id", anonymous_id);
        props.insert("token".into(), Value::String(ctx.settings.token().to_owned()));
        put(&mut props, "segment_source_name", source_name(ctx).as_ref());
        let mut event = Map::new();
        event.insert("event".into(), Value::String("$identify".into()));
        event.insert("properties".into(), Value::Object(props));
        records.push(Record {
            endpoint: Endpoint::Track,
            data: Value::Object(event).into(),
        });
    }
    let traits = match payload.get("traits") {
        Some(Value::Object(t)) if !t.is_empty() => t,
        _ => return records,
    };
    let mut set: Map<String, Value> = traits
        .iter()
        .filter(|(k, _)| !IDENTIFY_SPECIAL_TRAITS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let created = nullish_or(
        nullish_or(member(traits, "created"), member(traits, "createdAt")),
        member(traits, "created_at"),
    );
    assign(&mut set, "$created", created);
    assign(&mut set, "$email", member(traits, "email"));
    assign(&mut set, "$first_name", member(traits, "firstName"));
    assign(&mut set, "$last_name", member(traits, "lastName"));
    let full_name = match (member(traits, "firstName"), member(traits, "lastName")) {
        (first, last) if truthy(first) && truthy(last) => Some(Value::String(format!(
            "{} {}",
            js_string(first.unwrap_or(&Value::Null)),
            js_string(last.unwrap_or(&Value::Null))
        ))),
        _ => None,
    };
    assign(
        &mut set,
        "$name",
        nullish_or(member(traits, "name"), full_name.as_ref()),
    );
    assign(&mut set, "$username", member(traits, "username"));
    assign(&mut set, "$phone", member(traits, "phone"));

    let mut data = Map::new();
    data.insert("$token".into(), Value::String(ctx.settings.token().to_owned()));
    put(&mut data, "$distinct_id", profile_distinct_id(payload));
    put(&mut data, "$ip", payload.get("ip"));
    data.insert("$set".into(), Value::Object(set));
    records.push(Record {
        endpoint: Endpoint::Engage,
        data: Value::Object(data).into(),
    });
    records
}

const GROUP_SPECIAL_TRAITS: [&str; 4] = ["created", "createdAt", "created_at", "name"];

fn group_identify_user(payload: &Payload, ctx: &Context<'_>) -> Result<Record<'static>, ActionError> {
    let traits = match payload.get("traits") {
        Some(Value::Object(t)) => t,
        _ => return Err(ActionError::bad_request("\"traits\" is a required field")),
    };
    let group_key = match payload.get("group_key") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => "$group_id".to_owned(),
    };
    let group_id = match member(traits, &group_key) {
        Some(v) if truthy(Some(v)) => Some(v),
        _ => payload.get("group_id"),
    };
    let mut set: Map<String, Value> = traits
        .iter()
        .filter(|(k, _)| !GROUP_SPECIAL_TRAITS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assign(&mut set, "$name", member(traits, "name"));
    let created = nullish_or(
        nullish_or(member(traits, "created"), member(traits, "createdAt")),
        member(traits, "created_at"),
    );
    assign(&mut set, "$created", created);

    let mut data = Map::new();
    data.insert("$token".into(), Value::String(ctx.settings.token().to_owned()));
    data.insert("$group_key".into(), Value::String(group_key));
    put(&mut data, "$group_id", group_id);
    data.insert("$set".into(), Value::Object(set));
    Ok(Record {
        endpoint: Endpoint::Groups,
        data: Value::Object(data).into(),
    })
}

fn alias(payload: &Payload, ctx: &Context<'_>) -> Record<'static> {
    let mut props = Map::new();
    put(&mut props, "distinct_id", payload.get("distinct_id"));
    put(&mut props, "alias", payload.get("alias"));
    props.insert("token".into(), Value::String(ctx.settings.token().to_owned()));
    put(&mut props, "segment_source_name", source_name(ctx).as_ref());
    let mut event = Map::new();
    event.insert("event".into(), Value::String("$create_alias".into()));
    event.insert("properties".into(), Value::Object(props));
    Record {
        endpoint: Endpoint::Track,
        data: Value::Object(event).into(),
    }
}

/// Mixpanel's limit on keys in one `$add`.
pub const MAX_INCREMENT_KEYS: usize = 20;

fn increment_properties(payload: &Payload, ctx: &Context<'_>) -> Result<Vec<Record<'static>>, ActionError> {
    let increment = match payload.get("increment") {
        Some(Value::Object(map)) if !map.is_empty() => map,
        _ => return Ok(Vec::new()),
    };
    if increment.len() > MAX_INCREMENT_KEYS {
        return Err(ActionError::bad_request(format!(
            "Exceeded maximum of {MAX_INCREMENT_KEYS} properties for increment call"
        )));
    }
    let mut add = Map::with_capacity(increment.len());
    for (key, value) in increment {
        let number = match value {
            Value::Number(_) => value.clone(),
            Value::String(s) => {
                let n = js_number_from_str(s);
                if n.is_nan() {
                    return Err(ActionError::bad_request(format!("The key \"{key}\" was not numeric")));
                }
                f64_to_json(n)
            }
            _ => continue,
        };
        add.insert(key.clone(), number);
    }
    let mut data = Map::new();
    data.insert("$token".into(), Value::String(ctx.settings.token().to_owned()));
    put(&mut data, "$distinct_id", profile_distinct_id(payload));
    put(&mut data, "$ip", payload.get("ip"));
    data.insert("$add".into(), Value::Object(add));
    Ok(vec![Record {
        endpoint: Endpoint::Engage,
        data: Value::Object(data).into(),
    }])
}

/// JavaScript `String(value)` for the values traits can hold.
pub(crate) fn js_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => crate::mapping::number::js_number_to_string(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| if v.is_null() { String::new() } else { js_string(v) })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

#[cfg(test)]
mod tests;
