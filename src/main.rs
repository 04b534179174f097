//! The `mixpanel-actions` command: parse the command line, load the configuration,
//! start telemetry, run.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
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
    },
    /// Read cases (JSON lines) on stdin and print what would be sent, one result line per case.
    Preview,
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

fn preview() -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = mixpanel_actions::preview::run_line(&line);
        serde_json::to_writer(&mut stdout, &result)?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

fn check(path: &std::path::Path) -> anyhow::Result<bool> {
    match config::load(path) {
        Ok(c) => {
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
            }
            Ok(true)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(false)
        }
    }
}

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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
    tracing::info!(address = %listener.local_addr()?, destinations = config.destinations.len(), "listening");
    let state = server::state(config)?;
    server::serve(listener, state, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preview => preview().map(|()| true),
        Command::Check { config } => check(&config),
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
