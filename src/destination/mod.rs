//! A destination: one Mixpanel project's settings plus its subscriptions, and the
//! pure pipeline that runs events through them.
//!
//! `event(s) -> [subscription trigger] -> [mapping-kit resolve] -> [schema
//! validate] -> [action] -> records`, per subscription, in subscription order.
//! The result ([`Outcome`]) keeps records grouped per subscription and per event so
//! that preview, synchronous delivery and the spool can each build the requests
//! they need ([`Outcome::into_requests`] builds the reference's). No I/O, no panics.

mod presets;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::mapping::kit::CompiledMapping;
use crate::mapping::schema::{self, Mode};
use crate::mixpanel::actions::{self, ActionKind, Context, Record};
use crate::mixpanel::api::{self, Body, Endpoint, Request};
use crate::mixpanel::Settings;
use crate::subscription::Trigger;

pub use presets::presets;

/// At most this many subscriptions per destination (as Segment).
pub const MAX_SUBSCRIPTIONS: usize = 50;
/// The largest `/import` batch Mixpanel accepts.
pub const MAX_IMPORT_BATCH: usize = 2000;
/// The `batch_size` used when a mapping does not set one.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// A subscription in Segment's export format.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionConfig {
    pub name: String,
    pub subscribe: String,
    pub partner_action: String,
    #[serde(default = "empty_object")]
    pub mapping: Value,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Segment exports carry ids; accepted and ignored.
    #[serde(default, skip_serializing)]
    pub id: Option<Value>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A subscription ready to run.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub name: String,
    pub trigger: Trigger,
    pub action: ActionKind,
    /// The mapping, validated and compiled once (`mapping.source()` is the JSON).
    pub mapping: CompiledMapping,
    pub enabled: bool,
    /// Where each of the mapping's root keys is among the action's fields.
    positions: Arc<Positions>,
}

/// [`schema::field_positions`] of a mapping's root keys in an action's
/// fields, with the mapping and action they are for: they are only used while
/// the subscription still has both (the mapping held here cannot be freed and
/// its address reused).
#[derive(Debug)]
struct Positions {
    mapping: CompiledMapping,
    action: ActionKind,
    fields: Box<[Option<usize>]>,
}

/// A subscription that cannot run: its trigger or mapping is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("subscription \"{subscription}\": {message}")]
pub struct SubscriptionError {
    pub subscription: String,
    pub message: String,
}

impl Subscription {
    /// Parses and checks one subscription: trigger, action name and mapping shape.
    pub fn from_config(config: &SubscriptionConfig) -> Result<Subscription, SubscriptionError> {
        let error = |message: String| SubscriptionError {
            subscription: config.name.clone(),
            message,
        };
        let trigger = Trigger::parse(&config.subscribe).map_err(|e| error(format!("invalid trigger: {e}")))?;
        let action = ActionKind::from_name(&config.partner_action).ok_or_else(|| {
            let known: Vec<&str> = ActionKind::ALL.iter().map(|k| k.name()).collect();
            // The value is not repeated: configuration problems never echo one.
            error(format!(
                "unknown partnerAction (expected one of: {}; names are case-sensitive)",
                known.join(", ")
            ))
        })?;
        if !config.mapping.is_object() {
            return Err(error("mapping must be an object".into()));
        }
        let mapping = CompiledMapping::compile(&config.mapping).map_err(|e| error(format!("invalid mapping: {e}")))?;
        Ok(Subscription::new(
            config.name.clone(),
            trigger,
            action,
            mapping,
            config.enabled.unwrap_or(true),
        ))
    }

    /// A subscription of parts already checked.
    pub fn new(name: String, trigger: Trigger, action: ActionKind, mapping: CompiledMapping, enabled: bool) -> Self {
        let positions = Arc::new(Positions {
            mapping: mapping.clone(),
            action,
            fields: schema::field_positions(action.fields(), mapping.root_keys()),
        });
        Subscription {
            name,
            trigger,
            action,
            mapping,
            enabled,
            positions,
        }
    }
}

/// A Mixpanel project and the subscriptions that feed it.
#[derive(Clone, Debug)]
pub struct Destination {
    pub settings: Settings,
    pub subscriptions: Vec<Subscription>,
}

/// The result of one subscription on one event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventResult<'a> {
    /// The records to send, in order (possibly none: e.g. an empty increment).
    Records(Vec<Record<'a>>),
    /// The event failed before anything was sent.
    Failed { status: u16, message: String },
}

/// What one subscription did with the events it matched.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionOutcome<'a> {
    /// Index into [`Destination::subscriptions`].
    pub subscription: usize,
    /// `(event index, result)` for every matched event, in event order.
    pub events: Vec<(usize, EventResult<'a>)>,
}

/// The result of running events through a destination. Records borrow from
/// the events and the destination what they send unchanged.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Outcome<'a> {
    /// Subscriptions that matched at least one event, in subscription order.
    pub subscriptions: Vec<SubscriptionOutcome<'a>>,
    /// Indices of the events that no enabled subscription matched.
    pub unmatched: Vec<usize>,
}

/// Loads subscriptions strictly: every problem is an error (configuration files).
pub fn load_subscriptions(configs: &[SubscriptionConfig]) -> Result<Vec<Subscription>, Vec<SubscriptionError>> {
    let mut errors = Vec::new();
    if configs.len() > MAX_SUBSCRIPTIONS {
        errors.push(SubscriptionError {
            subscription: String::new(),
            message: format!(
                "{} subscriptions given; a destination has at most {MAX_SUBSCRIPTIONS}",
                configs.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(configs.len());
    for config in configs {
        match Subscription::from_config(config) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(e),
        }
        // Templates that fail for every event are configuration errors here.
        for (path, problem) in crate::mapping::kit::liquid_problems(&config.mapping) {
            errors.push(SubscriptionError {
                subscription: config.name.clone(),
                message: format!("{path}: {problem}"),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Loads subscriptions leniently, as the reference's event tester does: a bad
/// subscription is reported and left out (it never matches).
pub fn load_subscriptions_lenient(configs: &[SubscriptionConfig]) -> (Vec<Subscription>, Vec<SubscriptionError>) {
    let mut ok = Vec::with_capacity(configs.len());
    let mut errors = Vec::new();
    for config in configs {
        match Subscription::from_config(config) {
            Ok(s) => ok.push(s),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

impl Destination {
    /// A destination with the six preset subscriptions.
    pub fn with_presets(settings: Settings) -> Destination {
        Destination {
            settings,
            subscriptions: presets(),
        }
    }

    /// Runs `events` through every enabled subscription. In [`Mode::Batch`] the
    /// events are one batch (the reference's batch validation rules apply to the
    /// batching actions); in [`Mode::Single`] each event stands alone.
    pub fn process<'a>(&'a self, events: &'a [Value], mode: Mode, now_ms: i64) -> Outcome<'a> {
        let ctx = Context {
            settings: &self.settings,
            now_ms,
        };
        if self.settings.traits_from_context && events.iter().any(needs_context_traits) {
            // Only the events that need it are copied.
            let patched: Vec<std::borrow::Cow<'_, Value>> = events.iter().map(with_context_traits).collect();
            return self.process_events(&patched, mode, &ctx).into_owned();
        }
        self.process_events(events, mode, &ctx)
    }

    fn process_events<'a, E: std::borrow::Borrow<Value>>(
        &'a self,
        events: &'a [E],
        mode: Mode,
        ctx: &Context<'_>,
    ) -> Outcome<'a> {
        let mut outcome = Outcome::default();
        let mut matched_any = vec![false; events.len()];
        for (index, sub) in self.subscriptions.iter().enumerate() {
            if !sub.enabled {
                continue;
            }
            let matched: Vec<usize> = (0..events.len())
                .filter(|&i| events.get(i).is_some_and(|e| sub.trigger.matches(e.borrow())))
                .collect();
            if matched.is_empty() {
                continue;
            }
            for &i in &matched {
                if let Some(m) = matched_any.get_mut(i) {
                    *m = true;
                }
            }
            // Only the batching actions see batch-mode validation; the reference
            // runs the others once per event.
            let event_mode = if mode == Mode::Batch && sub.action.batches() {
                Mode::Batch
            } else {
                Mode::Single
            };
            let results = matched
                .into_iter()
                .filter_map(|i| {
                    events
                        .get(i)
                        .map(|event| (i, run_one(sub, event.borrow(), event_mode, ctx)))
                })
                .collect();
            outcome.subscriptions.push(SubscriptionOutcome {
                subscription: index,
                events: results,
            });
        }
        outcome.unmatched = (0..events.len()).filter(|&i| !matched_any[i]).collect();
        outcome
    }

    /// The `batch_size` a subscription's mapping asks for (1..=2000, default 1000).
    pub fn batch_size(&self, subscription: usize) -> usize {
        let configured = self
            .subscriptions
            .get(subscription)
            .and_then(|s| s.mapping.source().get("batch_size"))
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n >= 1.0);
        match configured {
            Some(n) => (n as usize).clamp(1, MAX_IMPORT_BATCH),
            None => DEFAULT_BATCH_SIZE,
        }
    }
}

/// An identify or group event without top-level `traits` (missing, null or
/// `{}`) whose `context.traits` is an object (RudderStack's SDKs send traits
/// there).
fn needs_context_traits(event: &Value) -> bool {
    let kind = event.get("type").and_then(Value::as_str);
    matches!(kind, Some("identify" | "group"))
        && event
            .get("traits")
            .is_none_or(|t| t.is_null() || t.as_object().is_some_and(|m| m.is_empty()))
        && event
            .get("context")
            .and_then(|c| c.get("traits"))
            .is_some_and(Value::is_object)
}

/// The event with `traits` taken from `context.traits` where it needs them.
fn with_context_traits(event: &Value) -> std::borrow::Cow<'_, Value> {
    if !needs_context_traits(event) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut owned = event.clone();
    let traits = owned.get("context").and_then(|c| c.get("traits")).cloned();
    if let (Value::Object(map), Some(traits)) = (&mut owned, traits) {
        map.insert("traits".into(), traits);
    }
    std::borrow::Cow::Owned(owned)
}

fn run_one<'a>(sub: &'a Subscription, event: &'a Value, mode: Mode, ctx: &Context<'_>) -> EventResult<'a> {
    // Mappings are validated and compiled when subscriptions are loaded. The
    // payload borrows from the event what needs no coercion.
    let mut validator = schema::Validator::new(sub.action.fields(), mode);
    let positions = Some(&sub.positions)
        .filter(|p| p.action == sub.action && p.mapping.same(&sub.mapping))
        .map(|p| &p.fields);
    match sub.mapping.resolve_each(event, |i, key, value| match (positions, i) {
        (Some(fields), Some(i)) => match fields.get(i) {
            Some(Some(field)) => validator.push_at(*field, &key, value),
            // Not one of the action's fields: dropped.
            Some(None) => {}
            None => validator.push(&key, value),
        },
        _ => validator.push(&key, value),
    }) {
        Ok(Ok(())) => {}
        Ok(Err(other)) => return failed(schema::not_an_object(&other).message),
        Err(e) => return failed(e.message),
    }
    let payload = match validator.finish() {
        Ok(p) => p,
        Err(e) => return failed(e.message),
    };
    match actions::perform(sub.action, payload, ctx) {
        Ok(records) => EventResult::Records(records),
        Err(e) => EventResult::Failed {
            status: e.status,
            message: e.message,
        },
    }
}

impl EventResult<'_> {
    /// The result with nothing borrowed.
    pub fn into_owned(self) -> EventResult<'static> {
        match self {
            EventResult::Records(records) => {
                EventResult::Records(records.into_iter().map(Record::into_owned).collect())
            }
            EventResult::Failed { status, message } => EventResult::Failed { status, message },
        }
    }
}

fn failed(message: String) -> EventResult<'static> {
    EventResult::Failed { status: 400, message }
}

/// A request built for one subscription, with the events it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionRequest {
    pub subscription: usize,
    /// Indexes of the events whose records are in the request.
    pub events: Vec<usize>,
    pub request: Request,
}

impl Outcome<'_> {
    /// The outcome with nothing borrowed.
    pub fn into_owned(self) -> Outcome<'static> {
        Outcome {
            subscriptions: self
                .subscriptions
                .into_iter()
                .map(|sub| SubscriptionOutcome {
                    subscription: sub.subscription,
                    events: sub
                        .events
                        .into_iter()
                        .map(|(i, result)| (i, result.into_owned()))
                        .collect(),
                })
                .collect(),
            unmatched: self.unmatched,
        }
    }

    /// The requests the reference sends: per subscription, the `/import` records of
    /// all its events in chunks of `batch_size` (one request per event in single
    /// mode), and every other record as its own form request.
    pub fn into_requests(self, destination: &Destination, mode: Mode, verbose: bool) -> Vec<SubscriptionRequest> {
        let settings = &destination.settings;
        let mut out = Vec::new();
        for sub in self.subscriptions {
            let batch_size = destination.batch_size(sub.subscription);
            // `/import` records serialized once, as delivery sends them.
            let mut import: Vec<Arc<str>> = Vec::new();
            let mut import_events: Vec<usize> = Vec::new();
            let flush = |import: &mut Vec<Arc<str>>, events: &mut Vec<usize>, out: &mut Vec<SubscriptionRequest>| {
                if !import.is_empty() {
                    out.push(SubscriptionRequest {
                        subscription: sub.subscription,
                        events: std::mem::take(events),
                        request: api::import_request_with(
                            settings,
                            Body::Packed {
                                form: false,
                                records: std::mem::take(import),
                            },
                        ),
                    });
                }
            };
            for (event, result) in sub.events {
                let EventResult::Records(records) = result else {
                    continue;
                };
                for record in records {
                    if record.endpoint == Endpoint::Import {
                        import.push(actions::record::encode(&record.data));
                        if import_events.last() != Some(&event) {
                            import_events.push(event);
                        }
                        if mode == Mode::Batch && import.len() >= batch_size {
                            flush(&mut import, &mut import_events, &mut out);
                        }
                    } else {
                        out.push(SubscriptionRequest {
                            subscription: sub.subscription,
                            events: vec![event],
                            request: api::form_request(settings, record.endpoint, record.data.into_value(), verbose),
                        });
                    }
                }
                if mode == Mode::Single {
                    flush(&mut import, &mut import_events, &mut out);
                }
            }
            flush(&mut import, &mut import_events, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests;
