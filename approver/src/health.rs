//! `grpc.health.v1` on a plaintext port, for Kubernetes' native `grpc:` probes.
//!
//! - liveness: service `""`, `SERVING` for as long as the process runs;
//! - readiness: service [`READINESS_SERVICE`] (`rubberstamp.v1.Attestation`), `SERVING`
//!   only while the attestation server accepts streams (off before it starts and as soon
//!   as shutdown begins).
//!
//! Its listener is bounded like every other (`rubber-stamp-listen`): a flood of idle
//! connections evicts its own oldest, so the kubelet's probe is still answered, and the
//! process keeps descriptors in reserve for it while the attestation port is saturated.

use std::sync::Arc;

use rubber_stamp_listen::{Events, PlaintextLimits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The liveness service name (the whole server).
pub const LIVENESS_SERVICE: &str = "";
/// The readiness service name: the attestation gRPC service's full name.
pub const READINESS_SERVICE: &str = crate::channel::SERVICE_NAME;

/// The statuses the health server reports; cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
}

/// Why the health server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("health server: {0}")]
pub struct HealthServeError(#[from] tonic::transport::Error);

impl Health {
    /// Liveness `SERVING`, readiness `NOT_SERVING`.
    pub async fn new() -> Self {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
            .await;
        Self { reporter }
    }

    /// Sets the readiness service's status.
    pub async fn set_ready(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(READINESS_SERVICE, status)
            .await;
    }

    /// Serves `grpc.health.v1` on `listener` (plaintext HTTP/2) within `limits` until
    /// `shutdown` is cancelled; `events` hears of accept errors and shed connections.
    pub async fn serve(
        &self,
        listener: TcpListener,
        limits: PlaintextLimits,
        events: Arc<dyn Events>,
        shutdown: CancellationToken,
    ) -> Result<(), HealthServeError> {
        let service = HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()));
        let incoming = rubber_stamp_listen::plaintext(
            listener,
            crate::metrics::listener::HEALTH,
            limits,
            events,
            shutdown.clone(),
        );
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await?;
        Ok(())
    }
}
