//! The `mixpanel-actions` command: parse the command line, load the configuration,
//! start telemetry, run.

use std::io::{BufRead, IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: the pipeline allocates many small, short-lived values (JSON maps
/// and strings); glibc's allocator spent about a third of the CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mixpanel_actions::config::{self, DEFAULT_CONFIG_PATH};
use mixpanel_actions::server;

#[derive(Parser)]
#[command(
    name = "mixpanel-actions",
    version,
    about = "Segment events to Mixpanel, as Segment's Mixpanel (Actions) destination"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file (TOML, YAML or JSON by extension).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration and print every problem.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Also ask Mixpanel whether each destination's project token is valid
        /// (the reference's "test authentication").
        #[arg(long)]
        online: bool,
    },
    /// Read cases (JSON lines) on stdin and print what would be sent, one result line per case.
    /// The Authorization header and project tokens are masked.
    Preview {
        /// Print credentials as they would be sent instead of masking them.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Dead letters of a running server (through its admin API).
    DeadLetters {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin token (or MIXPANEL_ACTIONS_ADMIN_TOKEN).
        #[arg(long, env = "MIXPANEL_ACTIONS_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[command(subcommand)]
        action: DeadAction,
    },
}

#[derive(Subcommand)]
enum DeadAction {
    /// List dead letters, newest first.
    List(DeadFilterArgs),
    /// Show one dead letter.
    Show { id: u64 },
    /// Re-queue the matching dead letters (all when no filter is given).
    Replay(DeadFilterArgs),
    /// Delete the matching dead letters (all when no filter is given).
    Purge(DeadFilterArgs),
}

#[derive(clap::Args)]
struct DeadFilterArgs {
    #[arg(long)]
    destination: Option<String>,
    /// `rejected` or `expired`.
    #[arg(long)]
    reason: Option<String>,
    /// Only those at or after this epoch-ms time.
    #[arg(long)]
    since_ms: Option<i64>,
    /// Only those at or before this epoch-ms time.
    #[arg(long)]
    until_ms: Option<i64>,
    #[arg(long)]
    limit: Option<usize>,
    /// Explicit ids.
    #[arg(long, value_delimiter = ',')]
    ids: Vec<u64>,
}

impl DeadFilterArgs {
    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(d) = &self.destination {
            m.insert("destination".into(), d.clone().into());
        }
        if let Some(r) = &self.reason {
            m.insert("reason".into(), r.clone().into());
        }
        if let Some(v) = self.since_ms {
            m.insert("since_ms".into(), v.into());
        }
        if let Some(v) = self.until_ms {
            m.insert("until_ms".into(), v.into());
        }
        if let Some(v) = self.limit {
            m.insert("limit".into(), v.into());
        }
        if !self.ids.is_empty() {
            m.insert("ids".into(), self.ids.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

async fn dead_letters(url: &str, token: &str, action: DeadAction) -> anyhow::Result<bool> {
    let client = reqwest::Client::new();
    let base = format!("{}/admin/dead-letters", url.trim_end_matches('/'));
    let request = match &action {
        DeadAction::List(f) => {
            let query: Vec<(String, String)> = f
                .json()
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.to_string().trim_matches('"').to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            client.get(&base).query(&query)
        }
        DeadAction::Show { id } => client.get(format!("{base}/{id}")),
        DeadAction::Replay(f) => client.post(format!("{base}/replay")).json(&f.json()),
        DeadAction::Purge(f) => client.delete(&base).json(&f.json()),
    };
    let response = request.bearer_auth(token).send().await?;
    let ok = response.status().is_success();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(ok)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn preview(show_secrets: bool) -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut result = mixpanel_actions::preview::run_line(&line);
        if !show_secrets {
            mixpanel_actions::preview::redact_secrets(&mut result);
        }
        serde_json::to_writer(&mut stdout, &result)?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

fn check(path: &std::path::Path, online: bool) -> anyhow::Result<bool> {
    match config::load(path) {
        Ok(c) => {
            let mut ok = true;
            println!("{}: ok ({} destinations)", path.display(), c.destinations.len());
            for d in &c.destinations {
                let mode = if d.dry_run { " [dry run: no project token]" } else { "" };
                println!(
                    "  {}: {} subscriptions, {} write keys{mode}",
                    d.id,
                    d.destination.subscriptions.len(),
                    d.write_keys.len()
                );
                for s in &d.destination.subscriptions {
                    for w in s.trigger.warnings() {
                        println!("    warning: subscription \"{}\": {w}", s.name);
                    }
                }
                if online {
                    ok &= check_credentials(d, c.delivery.request_timeout)?;
                }
            }
            Ok(ok)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(false)
        }
    }
}

/// `check --online`: one destination's credential check, printed; false when
/// Mixpanel refused the token or could not be asked.
fn check_credentials(d: &config::DestinationConfig, timeout: std::time::Duration) -> anyhow::Result<bool> {
    use mixpanel_actions::mixpanel::credentials;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let timeout = timeout.min(std::time::Duration::from_secs(10));
    let r = rt.block_on(credentials::check(&d.destination.settings, d.dry_run, timeout));
    let status = r.http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    println!("    credentials: {}{status} at {}: {}", r.status, r.host, r.message);
    Ok(matches!(r.status, "valid" | "dry_run"))
}

/// A one-time admin token for a first run at a terminal: 32 random
/// alphanumeric characters.
fn one_time_token() -> String {
    use rand::distr::{Alphanumeric, SampleString as _};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let mut config = config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // First run at a terminal: a one-time admin token, so the console opens in
    // one step. Elsewhere (containers, services) admin stays off until a token
    // is configured, and the console says so.
    let one_time = (config.admin_token.is_none() && std::io::stderr().is_terminal()).then(one_time_token);
    if let Some(t) = &one_time {
        config.admin_token = Some(secrecy::SecretString::from(t.clone()));
    }
    for d in &config.destinations {
        if d.dry_run {
            tracing::warn!(
                destination = %d.id,
                "DRY-RUN MODE: no project token is configured; events are logged, not sent to Mixpanel"
            );
        }
        if d.write_keys
            .iter()
            .any(|k| secrecy::ExposeSecret::expose_secret(k) == "*")
        {
            tracing::warn!(destination = %d.id, "write_keys contains \"*\": any write key is accepted");
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(address = %address, destinations = config.destinations.len(), "listening");
    let host = if address.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], address.port()))
    } else {
        address
    };
    if config.admin_token.is_some() {
        tracing::info!(url = %format!("http://{host}/console/"), "console (sign in with the admin token)");
    }
    if let Some(token) = &one_time {
        // Printed to the terminal only, never logged. The token is in the
        // fragment, which browsers do not send; the page moves it to the tab's
        // session storage and drops it from the address bar.
        eprintln!(
            "\n  Console: http://{host}/console/#token={token}\n  (a one-time admin token, valid until this process stops; set admin_token to keep one)\n"
        );
    }
    let state = server::state(config)?;
    server::serve(listener, state, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preview { show_secrets } => preview(show_secrets).map(|()| true),
        Command::Check { config, online } => check(&config, online),
        Command::DeadLetters { url, token, action } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(dead_letters(&url, &token, action))),
        Command::Serve { config } => {
            init_tracing(cli.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(serve(&config)))
                .map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
