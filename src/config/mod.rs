//! Configuration: raw settings from a file plus environment overrides, validated
//! into the types the server runs on ("parse, don't validate").
//!
//! Sources, later ones winning: the file (TOML, YAML or JSON by extension), then
//! environment variables `MIXPANEL_ACTIONS__<KEY>__<SUBKEY>` (e.g.
//! `MIXPANEL_ACTIONS__LISTEN`, `MIXPANEL_ACTIONS__ADMIN_TOKEN`). Per destination,
//! `project_token_env` / `api_secret_env` / `write_keys_env` name variables that
//! hold secrets, so secrets need not be in the file.
//!
//! [`load`] reports every problem at once, each with its location
//! (`destinations[1].api_region: ...`); secrets never appear in messages.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use secrecy::SecretString;
use serde::Deserialize;

use crate::destination::{self, Destination, SubscriptionConfig};
use crate::mixpanel::{ImportAuth, Region, Settings};

/// The configuration file used when none is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "MIXPANEL_ACTIONS";

/// The file's shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Check each destination's credentials with Mixpanel at start (the
    /// console shows the result; refused ones are logged at WARN).
    #[serde(default)]
    pub check_credentials_at_start: bool,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub delivery: RawDelivery,
    /// Where the spool lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: std::path::PathBuf,
    #[serde(default)]
    pub spool: RawSpool,
    /// How long shutdown may take to flush queued events.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(default)]
    pub destinations: Vec<RawDestination>,
}

fn default_data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("./data")
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How accepted events reach Mixpanel.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Durable: answer 200 once events are on disk, deliver in the background.
    #[default]
    Spool,
    /// Synchronous: answer once Mixpanel accepted or rejected every record.
    Direct,
}

/// The spool's knobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpool {
    /// Queued bytes above which ingest answers 503.
    pub max_bytes: ByteSize,
    /// How long a partial batch waits for more events.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Retry age limit, after which an event becomes a dead letter.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Dead letters kept; the oldest are dropped (and counted) beyond this.
    pub max_dead_letters: u64,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool {
            max_bytes: ByteSize::gib(1),
            linger: Duration::from_secs(1),
            max_age: Duration::from_secs(4 * 3600),
            max_dead_letters: 100_000,
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}

/// Ingest and connection limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest single event (Segment: 32 KB).
    pub max_event_bytes: ByteSize,
    /// Largest request body after decompression (Segment: 500 KB).
    pub max_request_bytes: ByteSize,
    /// Deepest JSON nesting accepted in a request.
    pub max_nesting_depth: usize,
    /// Most events in one batch request.
    pub max_batch_events: usize,
    /// Time a client has to send a request's headers (from the moment the
    /// connection waits for a request); slower clients are disconnected.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a client has to send a whole request body; then 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed at once.
    pub max_connections: usize,
    /// Requests handled at once; more are answered 503 (`overloaded`).
    pub max_requests: usize,
    /// Bytes of request bodies read or parsed at once; beyond, 503 (`overloaded`).
    pub max_body_bytes_in_flight: ByteSize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_event_bytes: ByteSize::kib(32),
            max_request_bytes: ByteSize::kb(500),
            max_nesting_depth: 64,
            max_batch_events: 2500,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_requests: 256,
            max_body_bytes_in_flight: ByteSize::mib(64),
        }
    }
}

/// Delivery to Mixpanel.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    /// `spool` (default) or `direct`.
    pub mode: DeliveryMode,
    /// Per-request timeout to Mixpanel.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Total time spent retrying one request before giving up.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// First backoff delay (doubles each attempt, with jitter).
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Largest backoff delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most requests in flight at once per destination (spool mode). Delivery
    /// adapts below it: more while answers are fast and 2xx, fewer after
    /// 429s, 5xx and timeouts.
    pub concurrency: usize,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            mode: DeliveryMode::Spool,
            request_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            concurrency: 16,
        }
    }
}

/// One destination as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub id: String,
    #[serde(default)]
    pub write_keys: Vec<String>,
    #[serde(default)]
    pub write_keys_env: Option<String>,
    #[serde(default)]
    pub project_token: Option<String>,
    #[serde(default)]
    pub project_token_env: Option<String>,
    #[serde(default)]
    pub api_secret: Option<String>,
    #[serde(default)]
    pub api_secret_env: Option<String>,
    /// `"secret"` (default: API secret when set, else token), `"project_token"`, or
    /// `"service_account"` (with the three `service_account_*` keys).
    #[serde(default)]
    pub import_auth: Option<String>,
    #[serde(default)]
    pub service_account_username: Option<String>,
    #[serde(default)]
    pub service_account_secret: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub api_region: Option<String>,
    #[serde(default)]
    pub source_name: Option<String>,
    #[serde(default = "yes")]
    pub strict_mode: bool,
    /// Replace `$insert_id`s Mixpanel would refuse (see `Settings`).
    #[serde(default = "yes")]
    pub repair_insert_ids: bool,
    /// identify/group traits from `context.traits` when `traits` is missing.
    #[serde(default = "yes")]
    pub traits_from_context: bool,
    #[serde(default)]
    pub api_base_url: Option<String>,
    #[serde(default)]
    pub subscriptions: Option<Vec<SubscriptionConfig>>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub max_batch_bytes: Option<ByteSize>,
    #[serde(default = "yes")]
    pub gzip: bool,
}

fn yes() -> bool {
    true
}

/// A validated destination.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    pub id: String,
    /// Write keys routed here; `"*"` accepts any non-empty key. `write_keys_env`,
    /// when that variable is set, replaces the file's list.
    pub write_keys: Vec<SecretString>,
    pub destination: Destination,
    /// No project token: log what would be sent instead of sending.
    pub dry_run: bool,
    pub batch_size: usize,
    pub max_batch_bytes: usize,
    pub gzip: bool,
}

/// Validated limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_request_bytes: usize,
    pub max_nesting_depth: usize,
    pub max_batch_events: usize,
    /// Time to send a request's headers (> 0).
    pub header_timeout: Duration,
    /// Time to send a request's body (> 0); then 408 `body_timeout`.
    pub body_timeout: Duration,
    /// Time a connection may stay without a request in flight (> 0).
    pub idle_timeout: Duration,
    /// Connections open at once (≥ 1).
    pub max_connections: usize,
    /// Requests handled at once (≥ 1); more get 503 `overloaded`.
    pub max_requests: usize,
    /// Bytes of request bodies read or parsed at once (≥ `max_request_bytes`).
    pub max_body_bytes_in_flight: usize,
}

/// The validated configuration the server runs on.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub listen: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub spool: RawSpool,
    pub shutdown_timeout: Duration,
    pub admin_token: Option<SecretString>,
    pub check_credentials_at_start: bool,
    pub limits: Limits,
    pub delivery: RawDelivery,
    pub destinations: Vec<DestinationConfig>,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

/// Largest `/import` request body Mixpanel accepts (uncompressed).
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;

/// Reads the file and the environment, then validates.
pub fn load(path: &Path) -> Result<AppConfig, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// [`load`] with an explicit environment (tests).
pub fn load_with_env(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<AppConfig, ConfigError> {
    load_source(config::File::from(path), &path.display().to_string(), env)
}

/// A TOML configuration given as text, with an explicit environment: what
/// [`load_with_env`] does for a `.toml` file; messages start with `config:`
/// instead of the file's path.
pub fn load_str(toml: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<AppConfig, ConfigError> {
    load_source(config::File::from_str(toml, config::FileFormat::Toml), "config", env)
}

fn load_source(
    source: impl config::Source + Send + Sync + 'static,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AppConfig, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    // Sorted, so that the order of the overrides (and of their problems) does
    // not depend on the environment's.
    let mut sorted: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .cloned()
        .collect();
    sorted.sort();
    let overrides: config::Map<String, String> = sorted.into_iter().collect();
    let built = config::Config::builder()
        .add_source(source)
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::one(format!("{origin}: {}", without_values(&e))))?;
    let raw: RawConfig = built
        .try_deserialize()
        .map_err(|e| ConfigError::one(format!("{origin}: {}", without_values(&e))))?;
    validate(raw, |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

/// A configuration error that names the key and the problem, never the value:
/// any key may hold a secret. Type errors keep the key and the kinds; syntax
/// errors keep their position and message, not the quoted line; values quoted
/// in other messages are left out.
fn without_values(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => {
            // Its text is the kind then the value (`string "..."`): the kind only.
            let shown = unexpected.to_string();
            let found = shown.split_whitespace().next().unwrap_or("a value").to_owned();
            match key {
                Some(k) => format!("{k}: expected {expected}, found {found}"),
                None => format!("expected {expected}, found {found}"),
            }
        }
        config::ConfigError::FileParse { cause, .. } => {
            // TOML's message quotes the offending line (`3 | token = "..."`)
            // under a position line: keep the position and the message.
            let text = cause.to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.contains('|') && !l.starts_with('^'))
                .collect();
            format!("syntax error: {}", lines.join("; "))
        }
        other => redact_quoted(&other.to_string()),
    }
}

/// serde's `invalid type: string "…", expected …` (and `invalid value:`) without
/// the value: numbers are shown in backticks there, strings in quotes.
fn drop_serde_values(text: &str) -> String {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re =
        RE.get_or_init(|| regex::Regex::new(r"invalid (type|value): ([a-z ]+?)(?: (?:`[^`]*`|\S+))?, expected").ok());
    match re {
        Some(re) => re.replace_all(text, "invalid $1: $2, expected").into_owned(),
        None => text.to_owned(),
    }
}

/// `text` with every double-quoted part replaced by `"…"`, and serde's values
/// left out.
fn redact_quoted(text: &str) -> String {
    let text = drop_serde_values(text);
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push('…');
    }
    out
}

/// Validates a raw configuration; `env` reads the variables named by `*_env` keys.
pub fn validate(raw: RawConfig, env: impl Fn(&str) -> Option<String>) -> Result<AppConfig, ConfigError> {
    let mut problems = Vec::new();
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            problems.push(format!("listen: is not an address such as 0.0.0.0:8080 ({e})"));
            None
        }
    };
    let l = &raw.limits;
    let limits = Limits {
        max_event_bytes: usize::try_from(l.max_event_bytes.as_u64()).unwrap_or(usize::MAX),
        max_request_bytes: usize::try_from(l.max_request_bytes.as_u64()).unwrap_or(usize::MAX),
        max_nesting_depth: l.max_nesting_depth,
        max_batch_events: l.max_batch_events,
        header_timeout: l.header_timeout,
        body_timeout: l.body_timeout,
        idle_timeout: l.idle_timeout,
        max_connections: l.max_connections,
        max_requests: l.max_requests,
        max_body_bytes_in_flight: usize::try_from(l.max_body_bytes_in_flight.as_u64()).unwrap_or(usize::MAX),
    };
    if limits.max_body_bytes_in_flight < limits.max_request_bytes || limits.max_body_bytes_in_flight > u32::MAX as usize
    {
        problems.push("limits.max_body_bytes_in_flight: must be at least max_request_bytes and at most 4GiB".into());
    }
    if limits.max_event_bytes == 0 || limits.max_request_bytes < limits.max_event_bytes {
        problems.push("limits: max_event_bytes must be > 0 and at most max_request_bytes".into());
    }
    if limits.max_nesting_depth == 0 || limits.max_nesting_depth > 512 {
        problems.push("limits.max_nesting_depth: must be between 1 and 512".into());
    }
    if limits.max_batch_events == 0 {
        problems.push("limits.max_batch_events: must be at least 1".into());
    }
    for (key, value) in [
        ("header_timeout", limits.header_timeout),
        ("body_timeout", limits.body_timeout),
        ("idle_timeout", limits.idle_timeout),
    ] {
        if value.is_zero() {
            problems.push(format!("limits.{key}: must be > 0 (a duration such as \"10s\")"));
        }
    }
    if limits.max_connections == 0 {
        problems.push("limits.max_connections: must be at least 1".into());
    }
    if limits.max_requests == 0 {
        problems.push("limits.max_requests: must be at least 1".into());
    }
    let d = &raw.delivery;
    if d.backoff_initial.is_zero() || d.backoff_max < d.backoff_initial {
        problems.push("delivery: backoff_initial must be > 0 and at most backoff_max".into());
    }
    if raw.spool.linger > Duration::from_secs(60) {
        problems.push("spool.linger: at most 60s".into());
    }
    if raw.spool.max_bytes.as_u64() < 1024 {
        problems.push("spool.max_bytes: at least 1KiB".into());
    }
    if d.concurrency == 0 || d.concurrency > 256 {
        problems.push("delivery.concurrency: must be between 1 and 256".into());
    }
    if d.request_timeout.is_zero() {
        problems.push("delivery.request_timeout: must be > 0".into());
    }
    let admin_token = match raw.admin_token {
        Some(t) if t.len() < 16 => {
            problems.push("admin_token: must be at least 16 characters".into());
            None
        }
        Some(t) => Some(SecretString::from(t)),
        None => None,
    };
    let mut destinations = Vec::with_capacity(raw.destinations.len());
    for (i, rd) in raw.destinations.into_iter().enumerate() {
        let at = format!("destinations[{i}] (id \"{}\")", rd.id);
        if destinations.iter().any(|d: &DestinationConfig| d.id == rd.id) || rd.id.is_empty() {
            problems.push(format!("{at}.id: must be unique and non-empty"));
        }
        match destination_config(rd, &env) {
            Ok(dc) => destinations.push(dc),
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{at}.{e}"))),
        }
    }
    match (listen, problems.is_empty()) {
        (Some(listen), true) => Ok(AppConfig {
            listen,
            data_dir: raw.data_dir,
            spool: raw.spool,
            shutdown_timeout: raw.shutdown_timeout,
            admin_token,
            check_credentials_at_start: raw.check_credentials_at_start,
            limits,
            delivery: raw.delivery,
            destinations,
        }),
        _ => Err(ConfigError { problems }),
    }
}

fn from_env_or(value: Option<String>, var: &Option<String>, env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let from_env = var.as_deref().and_then(env).filter(|v| !v.is_empty());
    from_env.or(value).filter(|v| !v.is_empty())
}

fn destination_config(
    rd: RawDestination,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<DestinationConfig, Vec<String>> {
    let mut problems = Vec::new();
    let token = from_env_or(rd.project_token.clone(), &rd.project_token_env, env);
    if token.is_none() && rd.project_token.as_deref() == Some("") {
        problems.push("project_token: is empty; set the project's token, or leave the key out for a dry run".into());
    }
    let secret = from_env_or(rd.api_secret.clone(), &rd.api_secret_env, env);
    // The variable, when set, replaces the file's list.
    let keys: Vec<String> = match rd
        .write_keys_env
        .as_deref()
        .and_then(env)
        .filter(|v| !v.trim().is_empty())
    {
        Some(list) => list
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect(),
        None => rd.write_keys.clone(),
    };
    if keys.is_empty() {
        problems.push("write_keys: at least one write key is required (or \"*\" for any)".into());
    }
    let region = match rd.api_region.as_deref() {
        None => Region::Us,
        Some(r) => Region::parse(r).unwrap_or_else(|| {
            problems.push("api_region: is not one of US, EU, IN".to_owned());
            Region::Us
        }),
    };
    let import_auth = match rd.import_auth.as_deref() {
        None | Some("secret") => ImportAuth::SecretOrToken,
        Some("project_token") => ImportAuth::ProjectToken,
        Some("service_account") => match (&rd.service_account_username, &rd.service_account_secret, &rd.project_id) {
            (Some(u), Some(s), Some(p)) => ImportAuth::ServiceAccount {
                username: u.clone(),
                secret: SecretString::from(s.clone()),
                project_id: p.clone(),
            },
            _ => {
                problems.push(
                    "import_auth: \"service_account\" needs service_account_username, service_account_secret and project_id"
                        .into(),
                );
                ImportAuth::SecretOrToken
            }
        },
        Some(_) => {
            problems.push("import_auth: is not one of secret, project_token, service_account".to_owned());
            ImportAuth::SecretOrToken
        }
    };
    if let Some(url) = &rd.api_base_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push("api_base_url: must start with http:// or https://".to_owned());
        }
    }
    let batch_size = rd.batch_size.unwrap_or(destination::DEFAULT_BATCH_SIZE);
    if batch_size == 0 || batch_size > destination::MAX_IMPORT_BATCH {
        problems.push(format!(
            "batch_size: {batch_size} is not between 1 and {}",
            destination::MAX_IMPORT_BATCH
        ));
    }
    let max_batch_bytes = rd
        .max_batch_bytes
        .map(|b| usize::try_from(b.as_u64()).unwrap_or(usize::MAX))
        .unwrap_or(MAX_IMPORT_BYTES);
    if max_batch_bytes == 0 || max_batch_bytes > MAX_IMPORT_BYTES {
        problems.push(format!(
            "max_batch_bytes: must be between 1 byte and {MAX_IMPORT_BYTES} bytes"
        ));
    }
    let subscriptions = match &rd.subscriptions {
        None => destination::presets(),
        Some(configs) => match destination::load_subscriptions(configs) {
            Ok(s) => s,
            Err(errs) => {
                for e in errs {
                    problems.push(format!("subscriptions[\"{}\"]: {}", e.subscription, e.message));
                }
                Vec::new()
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let dry_run = token.is_none();
    let mut settings = Settings::new(token.unwrap_or_default());
    settings.api_secret = secret.map(SecretString::from);
    settings.region = region;
    settings.source_name = rd.source_name.clone();
    settings.strict_mode = rd.strict_mode;
    settings.repair_insert_ids = rd.repair_insert_ids;
    settings.traits_from_context = rd.traits_from_context;
    settings.import_auth = import_auth;
    settings.api_base_url = rd.api_base_url.clone();
    Ok(DestinationConfig {
        id: rd.id,
        write_keys: keys.into_iter().map(SecretString::from).collect(),
        destination: Destination {
            settings,
            subscriptions,
        },
        dry_run,
        batch_size,
        max_batch_bytes,
        gzip: rd.gzip,
    })
}

#[cfg(test)]
mod tests;
