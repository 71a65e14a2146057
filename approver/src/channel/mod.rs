//! The attestation gRPC server: TLS, node identity from the verified client certificate or
//! from a ServiceAccount token the API server reviews, reports checked at the edge and
//! written to the store.
//!
//! - [`tls`]: server TLS configuration, the handshake step of the port's bounded accept
//!   loop (handshake and connection limits, timeouts), the per-connection [`PeerInfo`].
//! - [`identity`]: `CN=system:node:<name>`, `O=system:nodes` → [`NodeIdentity`].
//! - [`token`]: a projected ServiceAccount token → TokenReview → bound Pod → [`TokenIdentity`].
//! - [`report`]: `NodeReport` → [`ValidReport`] with precise `invalid_argument` reasons.
//! - [`service`]: the `Attest` stream itself.
//!
//! This module knows protobuf and TLS; it talks to the rest of the approver only through
//! [`AttestationStore`] in domain terms.

pub mod client_ca;
pub mod identity;
pub mod report;
pub mod service;
pub mod tls;
pub mod token;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::GrpcMetrics;
use crate::store::AttestationStore;

pub use identity::{IdentityError, NodeIdentity};
pub use report::{ReportError, ValidReport};
pub use service::{AgentCredentials, AttestationService, SERVICE_NAME, StreamLimits};
pub use tls::{ClientAuth, ConnectionLimits, PeerInfo, TlsError, TlsFiles};
pub use token::{TokenConfig, TokenIdentity, TokenRefusal, TokenVerifier};

/// Every limit of the attestation server.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Handshake and connection limits, ClientHello and handshake timeouts.
    pub connections: ConnectionLimits,
    /// Message size and report rate per stream.
    pub streams: StreamLimits,
    /// Most concurrent HTTP/2 streams on one connection (an agent needs one).
    pub max_streams_per_connection: u32,
    /// Interval of HTTP/2 keepalive pings to each agent.
    pub keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's answer before closing the connection.
    pub keepalive_timeout: Duration,
    /// HTTP/2 initial flow-control window per stream, in bytes.
    pub stream_window_bytes: u32,
    /// HTTP/2 initial flow-control window per connection, in bytes.
    pub connection_window_bytes: u32,
    /// Name of this replica, sent in every Ack.
    pub replica: String,
    /// Whether agents may attest with the kubelet's client certificate.
    pub kubelet_cert: bool,
    /// How agents' ServiceAccount tokens are verified, when they may attest with one.
    pub token: Option<TokenConfig>,
}

impl GrpcConfig {
    /// Which client certificates the port asks for, from the credentials agents may use.
    pub fn client_auth(&self) -> ClientAuth {
        match (self.kubelet_cert, self.token.is_some()) {
            (true, true) => ClientAuth::Optional,
            (true, false) => ClientAuth::Required,
            (false, _) => ClientAuth::None,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            connections: ConnectionLimits {
                max_connections: 20_000,
                max_handshakes: 1024,
                client_hello_timeout: Duration::from_secs(5),
                handshake_timeout: Duration::from_secs(10),
                max_handshakes_per_source: 64,
                max_connections_per_peer: 4,
                unverified_timeout: Duration::from_secs(20),
            },
            streams: StreamLimits {
                max_message_bytes: rubber_stamp_proto::limits::MAX_MESSAGE_BYTES,
                report_burst: 10,
                report_interval: Duration::from_secs(1),
            },
            max_streams_per_connection: 4,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            stream_window_bytes: 64 * 1024,
            connection_window_bytes: 128 * 1024,
            replica: "rubber-stamp-approver".to_owned(),
            kubelet_cert: true,
            token: None,
        }
    }
}

/// Why the attestation server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("attestation server: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// How agents authenticate on the attestation port: the TLS configuration (which client
/// certificates it asks for) and the credentials that make an agent of a node.
#[derive(Clone, Debug)]
pub struct AgentAuth {
    /// The port's TLS server configuration.
    pub tls: std::sync::Arc<rustls::ServerConfig>,
    /// Certificates, tokens, or both.
    pub credentials: AgentCredentials,
}

/// Serves the attestation API on `listener` until `shutdown` is cancelled, then ends every
/// stream (agents reconnect to another replica) and waits for connections to close.
/// `events` hears of accept errors and of connections shed by the accept loop.
pub async fn serve(
    listener: TcpListener,
    auth: AgentAuth,
    store: AttestationStore,
    metrics: GrpcMetrics,
    events: std::sync::Arc<dyn rubber_stamp_listen::Events>,
    config: GrpcConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let AgentAuth { tls, credentials } = auth;
    let incoming = tls::incoming(
        listener,
        tls,
        config.connections,
        metrics.clone(),
        events,
        shutdown.clone(),
    );
    let service = AttestationService::new(
        store,
        metrics,
        config.streams.clone(),
        config.replica.clone(),
        credentials,
        shutdown.clone(),
    );
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .initial_stream_window_size(config.stream_window_bytes)
        .initial_connection_window_size(config.connection_window_bytes)
        .max_concurrent_streams(config.max_streams_per_connection)
        .http2_max_header_list_size(16 * 1024)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}
