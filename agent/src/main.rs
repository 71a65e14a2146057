//! The `rubber-stamp-agent` binary: installs the rustls crypto provider, parses flags,
//! sets up logging and runs the agent on a single-threaded runtime until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use rubber_stamp_agent::config::{AgentArgs, LogFormat};
use rubber_stamp_agent::proof::{ProofLimits, ProofListener};
use rubber_stamp_agent::resolve::SystemResolver;
use rubber_stamp_agent::runtime::{self, Listeners};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    // Fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = AgentArgs::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rubber-stamp-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: AgentArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, &args.log_filter)?;
    let health_listen = args.health_listen;
    let metrics_listen = args.metrics_listen;
    let proof_listen = args.proof_listen;
    let mut config = args.into_config()?;
    let mut proof_limits = proof_listen.address().map(|_| ProofLimits::DEFAULT);
    runtime::fit_descriptors(&mut config, proof_limits.as_mut());
    // One thread is plenty for a handful of streams and keeps the idle agent small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let health = rubber_stamp_listen::bind(health_listen)
            .with_context(|| format!("binding the health server to {health_listen}"))?;
        let health_addr = health
            .local_addr()
            .context("reading the health server's address")?;
        let metrics = match metrics_listen {
            Some(addr) => Some(
                rubber_stamp_listen::bind(addr)
                    .with_context(|| format!("binding the metrics server to {addr}"))?,
            ),
            None => None,
        };
        let metrics_addr = metrics
            .as_ref()
            .map(|m| m.local_addr().map(|a| a.to_string()))
            .transpose()
            .context("reading the metrics server's address")?;
        let proof = match proof_listen.address().zip(proof_limits) {
            Some((addr, limits)) => Some(
                ProofListener::bind(addr, limits)
                    .with_context(|| format!("binding the proof listener to {addr}"))?,
            ),
            None => None,
        };
        let proof_addr = proof
            .as_ref()
            .map_or_else(|| "off".to_owned(), |p| p.local_addr().to_string());
        tracing::info!(approver = %config.approver, health = %health_addr, metrics = metrics_addr.as_deref().unwrap_or("off"), proof = %proof_addr, "starting");
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        let listeners = Listeners {
            health,
            metrics,
            proof,
        };
        runtime::run_with_listeners(config, listeners, Arc::new(SystemResolver), stop).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Logging to stderr, filtered by `target=level` directives. `Targets` rather than
/// `EnvFilter`: the agent needs no span or field filters, and `EnvFilter`'s regular
/// expressions would add a quarter of a megabyte to a binary whose text is resident on
/// every node.
fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter: Targets = filter.parse().context("--log-filter")?;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

async fn stop_on_signal(stop: CancellationToken) {
    rubber_stamp_listen::termination().await;
    stop.cancel();
}
