//! Structured logs to stderr, as text or JSON lines.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::{LogFormat, RuntimeError};

/// Installs the global subscriber, filtered by `target=level` directives. `Targets` rather
/// than `EnvFilter`: no span or field filters are needed, and `EnvFilter` takes a shared
/// lock on every span enter and exit to look for them — 6–8 % of the leader's CPU during
/// a bootstrap storm, where kube-runtime enters a span on every poll of every decision
/// (docs/performance.md). The agent filters the same way.
pub fn init(format: LogFormat, filter: &str) -> Result<(), RuntimeError> {
    let filter: Targets = filter
        .parse()
        .map_err(|e| RuntimeError::Logging(format!("--log-filter: {e}")))?;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
    installed.map_err(|e| RuntimeError::Logging(e.to_string()))
}
