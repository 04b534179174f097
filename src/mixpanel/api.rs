//! The wire format of Mixpanel's ingestion API: endpoints, URLs, auth headers and
//! bodies. Pure: building a [`Request`] does no I/O; the delivery layer sends it.
//!
//! - `/import`: a JSON array of events, Basic auth, `?strict=1|0`.
//! - `/track`, `/engage`, `/groups`: a form body `data=<json>` (the token is inside
//!   the JSON, no auth header). Mixpanel accepts one object or an array of objects.

use std::sync::Arc;

use base64::Engine as _;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::settings::{ImportAuth, Settings};

/// A Mixpanel ingestion endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Import,
    Track,
    Engage,
    Groups,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Import => "/import",
            Endpoint::Track => "/track",
            Endpoint::Engage => "/engage",
            Endpoint::Groups => "/groups",
        }
    }

    /// The label used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Import => "import",
            Endpoint::Track => "track",
            Endpoint::Engage => "engage",
            Endpoint::Groups => "groups",
        }
    }
}

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_FORM: &str = "application/x-www-form-urlencoded;charset=UTF-8";

/// A request body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// `/import`: a JSON array of events.
    Json(Vec<Value>),
    /// `/track`, `/engage`, `/groups`: `data=<compact JSON of this value>`.
    Form(Value),
    /// Records already serialized as compact JSON (delivery serializes each
    /// record once): a JSON array of them, or with `form`, `data=` and one
    /// object (a lone record) or an array.
    Packed { form: bool, records: Vec<Arc<str>> },
}

/// The JSON text of packed records: a lone form record as itself, else an array.
fn packed_json(form: bool, records: &[Arc<str>]) -> String {
    if let (true, [one]) = (form, records) {
        return one.to_string();
    }
    let mut out = String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r);
    }
    out.push(']');
    out
}

fn form_body(json: &str) -> Vec<u8> {
    let mut out = String::with_capacity(json.len() + 16);
    out.push_str("data=");
    out.extend(form_urlencoded::byte_serialize(json.as_bytes()));
    out.into_bytes()
}

impl Body {
    /// The bytes sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Body::Json(events) => serde_json::to_vec(events).unwrap_or_default(),
            Body::Form(data) => form_body(&serde_json::to_string(data).unwrap_or_default()),
            Body::Packed { form: false, records } => packed_json(false, records).into_bytes(),
            Body::Packed { form: true, records } => form_body(&packed_json(true, records)),
        }
    }

    /// The body's JSON as a value, for people to read (`data`'s value for a form).
    pub fn to_value(&self) -> Value {
        match self {
            Body::Json(events) => Value::Array(events.clone()),
            Body::Form(data) => data.clone(),
            Body::Packed { form, records } => serde_json::from_str(&packed_json(*form, records)).unwrap_or(Value::Null),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Body::Json(_) | Body::Packed { form: false, .. } => CONTENT_TYPE_JSON,
            Body::Form(_) | Body::Packed { form: true, .. } => CONTENT_TYPE_FORM,
        }
    }

    /// Number of Mixpanel records in the body.
    pub fn len(&self) -> usize {
        match self {
            Body::Json(events) => events.len(),
            Body::Form(Value::Array(items)) => items.len(),
            Body::Form(_) => 1,
            Body::Packed { records, .. } => records.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One HTTP request to Mixpanel.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub endpoint: Endpoint,
    pub url: String,
    /// `authorization` (for `/import`) and `content-type`, lower-case names.
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Request {
    pub fn method(&self) -> &'static str {
        "POST"
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// The `Authorization` header value for `/import`.
pub fn import_authorization(settings: &Settings) -> String {
    let (user, password) = match &settings.import_auth {
        ImportAuth::SecretOrToken => match &settings.api_secret {
            Some(secret) => (secret.expose_secret(), ""),
            None => (settings.token(), ""),
        },
        ImportAuth::ProjectToken => (settings.token(), ""),
        ImportAuth::ServiceAccount { username, secret, .. } => (username.as_str(), secret.expose_secret()),
    };
    let mut credential = Vec::with_capacity(user.len() + 1 + password.len());
    credential.extend_from_slice(user.as_bytes());
    credential.push(b':');
    credential.extend_from_slice(password.as_bytes());
    let mut header = String::with_capacity(6 + credential.len().div_ceil(3) * 4);
    header.push_str("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(&credential, &mut header);
    header
}

/// Builds the `/import` request for `events`.
pub fn import_request(settings: &Settings, events: Vec<Value>) -> Request {
    import_request_with(settings, Body::Json(events))
}

/// Builds the `/import` request with `body` (a JSON array).
pub fn import_request_with(settings: &Settings, body: Body) -> Request {
    let strict = if settings.strict_mode { "1" } else { "0" };
    let mut url = format!("{}/import?strict={strict}", settings.base_url());
    if let ImportAuth::ServiceAccount { project_id, .. } = &settings.import_auth {
        url.push_str("&project_id=");
        url.extend(form_urlencoded::byte_serialize(project_id.as_bytes()));
    }
    Request {
        endpoint: Endpoint::Import,
        url,
        headers: vec![
            ("authorization", import_authorization(settings)),
            ("content-type", CONTENT_TYPE_JSON.to_owned()),
        ],
        body,
    }
}

/// Builds a `/track`, `/engage` or `/groups` request with a form body.
/// `verbose` adds `?verbose=1` so Mixpanel explains failures.
pub fn form_request(settings: &Settings, endpoint: Endpoint, data: Value, verbose: bool) -> Request {
    form_request_with(settings, endpoint, Body::Form(data), verbose)
}

/// Builds a `/track`, `/engage` or `/groups` request with `body` (a form).
pub fn form_request_with(settings: &Settings, endpoint: Endpoint, body: Body, verbose: bool) -> Request {
    let mut url = format!("{}{}", settings.base_url(), endpoint.path());
    if verbose {
        url.push_str("?verbose=1");
    }
    Request {
        endpoint,
        url,
        headers: vec![("content-type", CONTENT_TYPE_FORM.to_owned())],
        body,
    }
}

/// A record with the project token (`$token`, `properties.token`) masked, for
/// everything shown to people: preview, per-event results, dead letters.
pub fn redact_tokens(mut record: Value) -> Value {
    if let Value::Object(map) = &mut record {
        if map.contains_key("$token") {
            map.insert("$token".into(), Value::String("[redacted]".into()));
        }
        if let Some(Value::Object(props)) = map.get_mut("properties") {
            if props.contains_key("token") {
                props.insert("token".into(), Value::String("[redacted]".into()));
            }
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixpanel::Region;
    use secrecy::SecretString;
    use serde_json::json;

    #[test]
    fn import_auth_prefers_secret_even_empty() {
        let mut s = Settings::new("tok");
        assert_eq!(import_authorization(&s), "Basic dG9rOg==");
        s.api_secret = Some(SecretString::from(String::new()));
        assert_eq!(import_authorization(&s), "Basic Og==");
        s.import_auth = ImportAuth::ProjectToken;
        assert_eq!(import_authorization(&s), "Basic dG9rOg==");
    }

    #[test]
    fn service_account_adds_project_id() {
        let mut s = Settings::new("tok");
        s.import_auth = ImportAuth::ServiceAccount {
            username: "sa.user".into(),
            secret: SecretString::from("pw".to_owned()),
            project_id: "123".into(),
        };
        let r = import_request(&s, vec![]);
        assert_eq!(r.url, "https://api.mixpanel.com/import?strict=1&project_id=123");
        assert_eq!(r.header("authorization"), Some("Basic c2EudXNlcjpwdw=="));
    }

    #[test]
    fn urls_follow_region_and_override() {
        let mut s = Settings::new("tok");
        s.region = Region::Eu;
        s.strict_mode = false;
        assert_eq!(
            import_request(&s, vec![]).url,
            "https://api-eu.mixpanel.com/import?strict=0"
        );
        s.api_base_url = Some("http://127.0.0.1:9/".into());
        assert_eq!(
            form_request(&s, Endpoint::Engage, json!({}), true).url,
            "http://127.0.0.1:9/engage?verbose=1"
        );
    }

    #[test]
    fn tokens_are_masked_for_display() {
        let r = redact_tokens(json!({"$token": "tok", "$set": {"a": 1}}));
        assert_eq!(r, json!({"$token": "[redacted]", "$set": {"a": 1}}));
        let r = redact_tokens(json!({"event": "$identify", "properties": {"token": "tok", "x": 1}}));
        assert_eq!(r["properties"], json!({"token": "[redacted]", "x": 1}));
        let r = redact_tokens(json!({"event": "E", "properties": {"x": 1}}));
        assert_eq!(r["properties"], json!({"x": 1}));
    }

    #[test]
    fn form_body_is_urlencoded_compact_json() {
        let body = Body::Form(json!({"a": "x y&z"}));
        assert_eq!(
            String::from_utf8(body.encode()).unwrap(),
            "data=%7B%22a%22%3A%22x+y%26z%22%7D"
        );
    }
}
