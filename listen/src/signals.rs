//! How both binaries stop: on SIGTERM (the kubelet's, at pod deletion) or SIGINT.

use tokio::signal::unix::{SignalKind, signal};

/// Completes on SIGTERM or SIGINT (SIGINT only when SIGTERM cannot be watched, with a
/// warning).
pub async fn termination() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
