//! Structured logs to stderr, as text or JSON lines.

use tracing_subscriber::EnvFilter;

use super::{LogFormat, RuntimeError};

/// Installs the global subscriber.
pub(super) fn init(format: LogFormat, filter: &str) -> Result<(), RuntimeError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| RuntimeError::Logging(format!("--log-filter: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| RuntimeError::Logging(e.to_string()))
}
