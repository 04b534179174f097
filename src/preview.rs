//! Preview: "what would be sent for this event?" without sending anything.
//!
//! Reads a case (the conformance format: settings in the reference's shape, one
//! event or a batch, optional subscriptions in Segment's export format) and returns
//! the result the reference would have produced: settings errors, subscription
//! errors, matched subscriptions, the exact Mixpanel requests, and per-event errors.
//! The same function backs the `preview` command, the server's preview endpoint and
//! the conformance test. Pure apart from random insert ids.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::destination::{self, Destination, EventResult, SubscriptionConfig, SubscriptionError};
use crate::mapping::schema::Mode;
use crate::mixpanel::api::Body;
use crate::mixpanel::Settings;

/// "Now" when a case does not give `now_ms`.
pub const DEFAULT_NOW_MS: i64 = 1_700_000_000_000;

/// One preview case.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    #[serde(default)]
    pub id: Value,
    #[serde(default)]
    pub settings: Value,
    #[serde(default)]
    pub event: Option<Value>,
    #[serde(default)]
    pub batch: bool,
    #[serde(default)]
    pub events: Option<Vec<Value>>,
    #[serde(default)]
    pub subscriptions: Option<Vec<SubscriptionConfig>>,
    #[serde(default)]
    pub features: Option<Map<String, Value>>,
    #[serde(default)]
    pub now_ms: Option<i64>,
    /// Canned Mixpanel answers of the conformance format; preview ignores them.
    #[serde(default)]
    pub responses: Option<Value>,
}

/// A preview input error (the line is not a case).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaseError(pub String);

/// Parses one input line: a bare case, or a conformance line `{"case": {...}}`.
pub fn parse_case(line: &str) -> Result<Case, CaseError> {
    let value: Value = serde_json::from_str(line).map_err(|e| CaseError(format!("invalid JSON: {e}")))?;
    let case_value = match value {
        Value::Object(mut map) if map.contains_key("case") => map.remove("case").unwrap_or(Value::Null),
        other => other,
    };
    serde_path_to_error::deserialize(case_value).map_err(|e| {
        let path = e.path().to_string();
        CaseError(format!("invalid case at {path}: {}", e.into_inner()))
    })
}

fn feature(case: &Case, name: &str) -> bool {
    case.features
        .as_ref()
        .and_then(|f| f.get(name))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Runs one case and returns its result object.
pub fn run_case(case: &Case) -> Value {
    let mut result = Map::new();
    result.insert("id".into(), case.id.clone());
    let settings = match Settings::from_reference(&case.settings, feature(case, "actions-mixpanel-project-token-auth"))
    {
        Ok(s) => s,
        Err(e) => {
            result.insert("settings_error".into(), json!({"status": 400, "message": e.message}));
            return Value::Object(result);
        }
    };
    let (subscriptions, sub_errors) = match &case.subscriptions {
        Some(configs) => destination::load_subscriptions_lenient(configs),
        None => (destination::presets(), Vec::new()),
    };
    let dest = Destination {
        settings,
        subscriptions,
    };
    let (events, mode) = match (&case.events, &case.event) {
        (Some(events), _) if case.batch || case.event.is_none() => (events.clone(), Mode::Batch),
        (_, Some(event)) => (vec![event.clone()], Mode::Single),
        (_, None) => (Vec::new(), Mode::Single),
    };
    let now_ms = case.now_ms.unwrap_or(DEFAULT_NOW_MS);
    if let Value::Object(rest) = run_destination(&dest, &sub_errors, &events, mode, now_ms) {
        result.extend(rest);
    }
    Value::Object(result)
}

/// What `dest` would send for `events`: subscription errors, matched
/// subscriptions, requests and per-event errors, in the preview result format.
pub fn run_destination(
    dest: &Destination,
    sub_errors: &[SubscriptionError],
    events: &[Value],
    mode: Mode,
    now_ms: i64,
) -> Value {
    let mut result = Map::new();
    let outcome = dest.process(events, mode, now_ms);
    let subscription_name = |i: usize| dest.subscriptions.get(i).map(|s| s.name.clone()).unwrap_or_default();
    result.insert(
        "subscription_errors".into(),
        Value::Array(
            sub_errors
                .iter()
                .map(|e| json!({"subscription": e.subscription, "message": e.message}))
                .collect(),
        ),
    );
    result.insert(
        "matched".into(),
        Value::Array(
            outcome
                .subscriptions
                .iter()
                .map(|s| Value::String(subscription_name(s.subscription)))
                .collect(),
        ),
    );
    let mut errors = Vec::new();
    for sub in &outcome.subscriptions {
        for (event, res) in &sub.events {
            if let EventResult::Failed { status, message } = res {
                errors.push(json!({
                    "subscription": subscription_name(sub.subscription),
                    "event": event,
                    "status": status,
                    "message": message,
                }));
            }
        }
    }
    let requests: Vec<Value> = outcome
        .into_requests(dest, mode, false)
        .into_iter()
        .map(|r| {
            let headers: Map<String, Value> = r
                .request
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                .collect();
            let method = r.request.method();
            let body = match r.request.body {
                Body::Json(events) => Value::Array(events),
                Body::Form(data) => json!({ "data": data }),
                ref packed @ Body::Packed { form: false, .. } => packed.to_value(),
                ref packed @ Body::Packed { form: true, .. } => json!({ "data": packed.to_value() }),
            };
            json!({
                "subscription": subscription_name(r.subscription),
                "method": method,
                "url": r.request.url,
                "headers": headers,
                "body": body,
            })
        })
        .collect();
    result.insert("requests".into(), Value::Array(requests));
    result.insert("errors".into(), Value::Array(errors));
    Value::Object(result)
}

/// Masks the credentials in a preview result: the `authorization` header of
/// each request and the project token inside bodies (as the server's preview
/// endpoint always does; the `preview` command unless asked not to).
pub fn redact_secrets(result: &mut Value) {
    if let Some(Value::Array(requests)) = result.get_mut("requests") {
        for r in requests {
            if let Some(auth) = r.get_mut("headers").and_then(|h| h.get_mut("authorization")) {
                *auth = Value::String("Basic [redacted]".into());
            }
            if let Some(body) = r.get_mut("body") {
                let redacted = match body.take() {
                    Value::Array(items) => {
                        Value::Array(items.into_iter().map(crate::mixpanel::api::redact_tokens).collect())
                    }
                    Value::Object(mut form) => {
                        if let Some(data) = form.remove("data") {
                            let data = match data {
                                Value::Array(items) => {
                                    Value::Array(items.into_iter().map(crate::mixpanel::api::redact_tokens).collect())
                                }
                                one => crate::mixpanel::api::redact_tokens(one),
                            };
                            form.insert("data".into(), data);
                        }
                        Value::Object(form)
                    }
                    other => other,
                };
                *body = redacted;
            }
        }
    }
}

/// Runs one input line; a line that is not a case gives `{"error": ...}`.
pub fn run_line(line: &str) -> Value {
    match parse_case(line) {
        Ok(case) => run_case(&case),
        Err(e) => json!({ "error": e.0 }),
    }
}
