//! Destination settings: one Mixpanel project and how to reach it.
//!
//! Two ways in: the reference's own settings object (`projectToken`, `apiRegion`
//! with emoji labels, `strictMode` as `"1"`/`"0"`), used by `preview` and the
//! conformance cases, and the server's validated configuration, which builds a
//! [`Settings`] directly. Secrets are [`SecretString`]s: never in `Debug` output.

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Mixpanel data residency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Region {
    #[default]
    Us,
    Eu,
    In,
}

impl Region {
    /// The API host of the region.
    pub fn host(self) -> &'static str {
        match self {
            Region::Us => "https://api.mixpanel.com",
            Region::Eu => "https://api-eu.mixpanel.com",
            Region::In => "https://api-in.mixpanel.com",
        }
    }

    /// The reference's setting labels.
    pub const LABELS: [&'static str; 3] = ["US 🇺🇸", "EU 🇪🇺", "IN 🇮🇳"];

    /// Parses `US`/`EU`/`IN` (any case) or the reference's labels (`"EU 🇪🇺"`).
    pub fn parse(s: &str) -> Option<Region> {
        let code = s.split_whitespace().next().unwrap_or("");
        let exact = Self::LABELS.contains(&s);
        if !exact && s.trim() != code {
            return None;
        }
        match code.to_ascii_uppercase().as_str() {
            "US" => Some(Region::Us),
            "EU" => Some(Region::Eu),
            "IN" => Some(Region::In),
            _ => None,
        }
    }
}

/// Which credential authenticates `/import`.
#[derive(Clone, Debug)]
pub enum ImportAuth {
    /// The reference's default: the API secret when one is set (even empty), else
    /// the project token, as the Basic auth user name.
    SecretOrToken,
    /// Always the project token (the reference's project-token-auth feature).
    ProjectToken,
    /// A Mixpanel service account: `user:secret` Basic auth and `?project_id=`.
    ServiceAccount {
        username: String,
        secret: SecretString,
        project_id: String,
    },
}

/// The settings of one destination (one Mixpanel project).
#[derive(Clone, Debug)]
pub struct Settings {
    pub project_token: SecretString,
    pub api_secret: Option<SecretString>,
    pub region: Region,
    pub source_name: Option<String>,
    /// `?strict=1` on `/import` (the default).
    pub strict_mode: bool,
    pub import_auth: ImportAuth,
    /// Overrides the region's host for every endpoint (tests, proxies).
    pub api_base_url: Option<String>,
    /// Replace a `$insert_id` Mixpanel would refuse (more than 36 characters,
    /// or others than `[A-Za-z0-9-]`) by a UUID v5 of it. Off in the
    /// reference's shape (`repairInsertIds` turns it on), on in the server's
    /// configuration (`repair_insert_ids`).
    pub repair_insert_ids: bool,
    /// identify and group events without top-level `traits` use
    /// `context.traits` (RudderStack's SDKs send traits only there). Off in
    /// the reference's shape (`traitsFromContext`), on in the server's
    /// configuration (`traits_from_context`).
    pub traits_from_context: bool,
}

/// Settings the reference would reject; nothing runs for such a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    pub message: String,
}

impl Settings {
    /// Settings with the defaults: US, strict mode, no secret.
    pub fn new(project_token: impl Into<String>) -> Settings {
        Settings {
            project_token: SecretString::from(project_token.into()),
            api_secret: None,
            region: Region::Us,
            source_name: None,
            strict_mode: true,
            import_auth: ImportAuth::SecretOrToken,
            api_base_url: None,
            repair_insert_ids: false,
            traits_from_context: false,
        }
    }

    pub fn token(&self) -> &str {
        self.project_token.expose_secret()
    }

    /// The base URL requests go to: the override, else the region's host.
    pub fn base_url(&self) -> &str {
        match &self.api_base_url {
            Some(url) => url.trim_end_matches('/'),
            None => self.region.host(),
        }
    }

    /// Parses the reference's settings object, with its validation messages.
    /// `project_token_auth` is the reference's feature flag of that name.
    pub fn from_reference(settings: &Value, project_token_auth: bool) -> Result<Settings, SettingsError> {
        let err = |message: String| Err(SettingsError { message });
        let Value::Object(map) = settings else {
            return err("The root value must be an object.".into());
        };
        let token = match map.get("projectToken") {
            // Missing is refused; an empty string is a string like any other
            // (auth then comes from `apiSecret ?? projectToken`, so `""` gives
            // `Basic base64(":")`).
            None | Some(Value::Null) => {
                return err("The root value is missing the required field 'projectToken'.".into())
            }
            Some(v) => match scalar_text(v) {
                Some(s) => s,
                None => return err("Project Token must be a string.".into()),
            },
        };
        let mut out = Settings::new(token);
        match map.get("apiSecret") {
            None | Some(Value::Null) => {}
            Some(v) => match scalar_text(v) {
                Some(s) => out.api_secret = Some(SecretString::from(s)),
                None => return err("Secret Key must be a string.".into()),
            },
        }
        match map.get("apiRegion") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if Region::LABELS.contains(&s.as_str()) => {
                out.region = Region::parse(s).unwrap_or_default();
            }
            Some(_) => {
                let labels: Vec<String> = Region::LABELS.iter().map(|l| format!("\"{l}\"")).collect();
                return err(format!(
                    "Data Residency must be one of: {}, {}, or {}.",
                    labels[0], labels[1], labels[2]
                ));
            }
        }
        match map.get("sourceName") {
            None | Some(Value::Null) => {}
            Some(v) => out.source_name = scalar_text(v),
        }
        match map.get("strictMode") {
            None | Some(Value::Null) => {}
            Some(v) => match scalar_text(v).as_deref() {
                Some("1") => out.strict_mode = true,
                Some("0") => out.strict_mode = false,
                _ => return err("Strict Mode must be one of: \"1\" or \"0\".".into()),
            },
        }
        // The project's own settings (not the reference's): booleans.
        for (key, slot) in [
            ("repairInsertIds", &mut out.repair_insert_ids),
            ("traitsFromContext", &mut out.traits_from_context),
        ] {
            match map.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => *slot = *b,
                Some(_) => return err(format!("{key} must be a boolean.")),
            }
        }
        if project_token_auth {
            out.import_auth = ImportAuth::ProjectToken;
        }
        Ok(out)
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn regions_parse_codes_and_labels() {
        assert_eq!(Region::parse("EU 🇪🇺"), Some(Region::Eu));
        assert_eq!(Region::parse("in"), Some(Region::In));
        assert_eq!(Region::parse("US"), Some(Region::Us));
        assert_eq!(Region::parse("EU east"), None);
        assert_eq!(Region::parse("mars"), None);
    }

    #[test]
    fn reference_settings() {
        let s = Settings::from_reference(
            &json!({"projectToken": "t", "apiRegion": "IN 🇮🇳", "strictMode": "0"}),
            false,
        )
        .unwrap();
        assert_eq!(s.region, Region::In);
        assert!(!s.strict_mode);
        assert_eq!(s.base_url(), "https://api-in.mixpanel.com");
        let e = Settings::from_reference(&json!({"projectToken": "t", "apiRegion": "eu"}), false).unwrap_err();
        assert_eq!(
            e.message,
            "Data Residency must be one of: \"US 🇺🇸\", \"EU 🇪🇺\", or \"IN 🇮🇳\"."
        );
        let e = Settings::from_reference(&json!({"apiRegion": "US 🇺🇸"}), false).unwrap_err();
        assert_eq!(
            e.message,
            "The root value is missing the required field 'projectToken'."
        );
        assert!(Settings::from_reference(&json!({"projectToken": "t", "strictMode": "2"}), false).is_err());
        let empty = Settings::from_reference(&json!({"projectToken": ""}), false).unwrap();
        assert_eq!(crate::mixpanel::api::import_authorization(&empty), "Basic Og==");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut s = Settings::new("tok-secret-value");
        s.api_secret = Some(SecretString::from("api-secret-value".to_owned()));
        let shown = format!("{s:?}");
        assert!(!shown.contains("tok-secret-value"));
        assert!(!shown.contains("api-secret-value"));
    }
}
