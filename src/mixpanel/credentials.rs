//! The credential check, as the reference's "test authentication": `POST
//! <host>/api/app/validate-project-credentials/` with `{"project_token": ...}`.
//!
//! The host is the destination's residency host for Mixpanel's app API
//! (`https://mixpanel.com`, `https://eu.mixpanel.com`, `https://in.mixpanel.com`;
//! the reference always asks the US one), or `api_base_url` when set (tests,
//! proxies). A 2xx answer means valid, another answer invalid (with Mixpanel's
//! message), no answer unreachable. The token is sent and never shown: the
//! result names no credential, and Mixpanel's message is cut and has the token
//! masked should it quote it.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;

use super::client::{Client, Wire};
use super::{Region, Settings};

/// The path of the check on the host.
pub const PATH: &str = "/api/app/validate-project-credentials/";
/// The most of Mixpanel's message kept in a result.
const MAX_MESSAGE_CHARS: usize = 300;

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialStatus {
    /// `valid`, `invalid`, `unreachable`, or `dry_run` (no project token: nothing checked).
    pub status: &'static str,
    /// Mixpanel's HTTP status (absent when it did not answer).
    pub http_status: Option<u16>,
    /// What Mixpanel said, or why it could not be asked.
    pub message: String,
    /// Where the check went (a base URL, no credential).
    pub host: String,
    pub checked_at_ms: i64,
}

/// The app API host of a region.
pub fn app_host(region: Region) -> &'static str {
    match region {
        Region::Us => "https://mixpanel.com",
        Region::Eu => "https://eu.mixpanel.com",
        Region::In => "https://in.mixpanel.com",
    }
}

/// The base URL the check goes to: `api_base_url`, else the region's app host.
pub fn host(settings: &Settings) -> String {
    match &settings.api_base_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => app_host(settings.region).to_owned(),
    }
}

/// Checks the project token of `settings`; `dry_run` destinations (no token)
/// are not checked.
pub async fn check(settings: &Settings, dry_run: bool, timeout: Duration) -> CredentialStatus {
    let host = host(settings);
    let now = chrono::Utc::now().timestamp_millis();
    if dry_run {
        return CredentialStatus {
            status: "dry_run",
            http_status: None,
            message: "no project token is configured (dry-run mode): nothing to check".into(),
            host,
            checked_at_ms: now,
        };
    }
    let token = settings.project_token.expose_secret();
    let body = serde_json::json!({ "project_token": token }).to_string().into_bytes();
    let wire = Wire {
        url: format!("{host}{PATH}"),
        headers: vec![("content-type", "application/json".to_owned())],
        body,
    };
    let answer = match Client::new(timeout) {
        Ok(client) => client.send_wire(&wire).await,
        Err(e) => Err(format!("cannot build the HTTP client: {e}")),
    };
    let (status, http_status, message) = match answer {
        Ok(r) if (200..300).contains(&r.status) => ("valid", Some(r.status), message_of(&r.body, token)),
        Ok(r) => ("invalid", Some(r.status), message_of(&r.body, token)),
        Err(e) => ("unreachable", None, e),
    };
    CredentialStatus {
        status,
        http_status,
        message,
        host,
        checked_at_ms: now,
    }
}

/// Mixpanel's `error` (or the body as text), cut, the token masked.
fn message_of(body: &[u8], token: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = match parsed.as_ref().and_then(|v| v.get("error")).and_then(|e| e.as_str()) {
        Some(e) => e.to_owned(),
        None => match parsed.as_ref().and_then(|v| v.get("status")).and_then(|e| e.as_str()) {
            Some(s) => s.to_owned(),
            None => String::from_utf8_lossy(body).into_owned(),
        },
    };
    let masked = if token.is_empty() {
        text
    } else {
        text.replace(token, "[redacted]")
    };
    masked.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_the_region_and_the_override() {
        let mut s = Settings::new("tok");
        assert_eq!(host(&s), "https://mixpanel.com");
        s.region = Region::Eu;
        assert_eq!(host(&s), "https://eu.mixpanel.com");
        s.region = Region::In;
        assert_eq!(host(&s), "https://in.mixpanel.com");
        s.api_base_url = Some("http://127.0.0.1:9/".into());
        assert_eq!(host(&s), "http://127.0.0.1:9");
    }

    #[test]
    fn messages_never_quote_the_token() {
        let body = br#"{"error": "token secret-tok-123 is not a valid project token", "status": "error"}"#;
        let m = message_of(body, "secret-tok-123");
        assert_eq!(m, "token [redacted] is not a valid project token");
        let long = "x".repeat(5000);
        assert_eq!(message_of(long.as_bytes(), "t").chars().count(), MAX_MESSAGE_CHARS);
        assert_eq!(message_of(br#"{"status": "ok"}"#, "t"), "ok");
    }
}
