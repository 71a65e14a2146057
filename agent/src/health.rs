//! `grpc.health.v1` on a plaintext port, for the DaemonSet's native `grpc:` probes.
//!
//! - liveness: service `""`, `SERVING` while the process runs;
//! - readiness: service [`READINESS_SERVICE`] (`attested`), `SERVING` only while at least
//!   one approver replica acknowledged a report within its max age, and the node's facts
//!   were read.
//!
//! With host networking every pod on the node can reach this port, so its listener is
//! bounded (`rubber-stamp-listen`): a flood of idle connections evicts its own oldest and
//! never takes the descriptors the agent needs to read the node's facts.

use std::sync::Arc;

use rubber_stamp_listen::PlaintextLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::readiness::Readiness;

/// The liveness service name (the whole agent).
pub const LIVENESS_SERVICE: &str = "";
/// The readiness service name: this node is attested.
pub const READINESS_SERVICE: &str = "attested";

/// The listener's name in logs.
const LISTENER: &str = "health";

/// Serves health on `listener` within `limits` until `stop`, mirroring `readiness` into
/// the readiness service.
pub async fn serve(
    listener: TcpListener,
    limits: PlaintextLimits,
    readiness: Readiness,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
        .await;
    let mirror = tokio::spawn(mirror(reporter.clone(), readiness, stop.clone()));
    let served = tonic::transport::Server::builder()
        .add_service(HealthServer::new(HealthService::from_health_reporter(
            reporter,
        )))
        .serve_with_incoming_shutdown(
            rubber_stamp_listen::plaintext(listener, LISTENER, limits, Arc::new(()), stop.clone()),
            stop.cancelled_owned(),
        )
        .await;
    mirror.abort();
    served
}

async fn mirror(reporter: HealthReporter, readiness: Readiness, stop: CancellationToken) {
    let mut changes = readiness.subscribe();
    loop {
        let ready = *changes.borrow_and_update();
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(READINESS_SERVICE, status).await;
        tracing::info!(ready, "readiness");
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
