//! The admin server: the attestation snapshot (`/attestations`, the JSON that
//! `check --attestations` reads), live streams (`/streams`) and Prometheus `/metrics`.
//!
//! By default it is HTTPS (the attestation port's serving certificate) and every request
//! needs a bearer token the API server authenticates and authorizes for the path
//! ([`auth`]): every node's addresses and machine-id are not for anyone who can reach a
//! Pod IP. `--admin-secure=false` serves plain HTTP without authentication. Its listener is
//! bounded like every other (`rubber-stamp-listen`); a TLS handshake must finish within the
//! request timeout.

pub mod auth;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use jiff::Timestamp;
use rubber_stamp_listen::{Admitted, Events, Incoming, Pending, PlaintextLimits, PoolLimits};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Metrics};
use crate::store::{AttestationStore, LiveStreamInfo};

/// Path of the attestation snapshot.
pub const ATTESTATIONS_PATH: &str = "/attestations";
/// Path of the live stream list.
pub const STREAMS_PATH: &str = "/streams";
/// Path of the metrics.
pub const METRICS_PATH: &str = "/metrics";

#[derive(Clone, Debug)]
struct AdminState {
    store: AttestationStore,
    metrics: Arc<Metrics>,
}

/// One live stream in `/streams`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamEntry {
    node_name: String,
    peer_address: IpAddr,
    certificate_serial: String,
    opened_at: Timestamp,
}

#[derive(Debug, Serialize)]
struct StreamList {
    streams: Vec<StreamEntry>,
}

/// How the admin port serves: plain HTTP to anyone, or HTTPS to authorized callers.
#[derive(Clone, Debug)]
pub enum AdminServing {
    /// Plain HTTP, no authentication (`--admin-secure=false`).
    Open,
    /// TLS with `tls`, every request checked by `auth`.
    Secure {
        /// The server configuration (the serving certificate, HTTP/2 and HTTP/1.1).
        tls: Arc<rustls::ServerConfig>,
        /// Delegated authentication and authorization.
        auth: auth::AdminAuth,
    },
}

/// The admin routes, without authentication.
pub fn router(store: AttestationStore, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(ATTESTATIONS_PATH, get(attestations))
        .route(STREAMS_PATH, get(streams))
        .route(METRICS_PATH, get(prometheus))
        .with_state(AdminState { store, metrics })
}

/// The TLS server configuration of the admin port: TLS 1.2 and 1.3 (scrapers and kubectl
/// speak both), ALPN h2 and http/1.1, no client certificate, `certificates` per handshake.
pub fn tls_config(
    certificates: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the admin routes on `listener` within `limits` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    limits: PlaintextLimits,
    serving: AdminServing,
    store: AttestationStore,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let events: Arc<dyn Events> = Arc::new(metrics.listeners.clone());
    let routes = router(store, Arc::clone(&metrics));
    match serving {
        AdminServing::Open => {
            let incoming = rubber_stamp_listen::plaintext(
                listener,
                metrics::listener::ADMIN,
                limits,
                events,
                shutdown.clone(),
            );
            axum::serve(BoundedListener { incoming, local }, routes)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        AdminServing::Secure { tls, auth } => {
            // On the routes only: a path that matches none is 404 before any review, so
            // made-up paths cost the API server nothing.
            let routes =
                routes.route_layer(axum::middleware::from_fn_with_state(auth, auth::guard));
            let incoming = tls_incoming(listener, limits, tls, events, shutdown.clone());
            axum::serve(BoundedListener { incoming, local }, routes)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
}

/// The bounded accept loop with a TLS handshake per connection (concurrently, each within
/// the request timeout); a connection holds its slot from accept to close.
fn tls_incoming(
    listener: TcpListener,
    limits: PlaintextLimits,
    tls: Arc<rustls::ServerConfig>,
    events: Arc<dyn Events>,
    shutdown: CancellationToken,
) -> Incoming<Admitted<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(tls);
    let timeout = limits.request_timeout;
    let pool = PoolLimits {
        total: limits.max_connections,
        per_source: limits.max_connections_per_source,
    };
    let shed = Arc::clone(&events);
    rubber_stamp_listen::accept(
        listener,
        metrics::listener::ADMIN,
        pool,
        events,
        shutdown,
        move |pending: Pending| {
            let acceptor = acceptor.clone();
            let shed = Arc::clone(&shed);
            async move {
                let Pending { stream, peer, slot } = pending;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        slot.spoke();
                        Some(Admitted::new(tls, peer, slot))
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "admin TLS handshake failed");
                        shed.shed(metrics::listener::ADMIN, "handshake_failed");
                        None
                    }
                    Err(_) => {
                        shed.shed(metrics::listener::ADMIN, "handshake_timeout");
                        None
                    }
                }
            }
        },
    )
}

/// The bounded accept loop's connections as an `axum` listener.
struct BoundedListener<Io> {
    incoming: Incoming<Admitted<Io>>,
    local: SocketAddr,
}

impl<Io> axum::serve::Listener for BoundedListener<Io>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = Admitted<Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.next_admitted().await {
            Some(connection) => {
                let peer = connection.peer();
                (connection, peer)
            }
            // The loop stopped (shutdown): nothing more to accept.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn attestations(State(state): State<AdminState>) -> Response {
    Json(state.store.snapshot()).into_response()
}

async fn streams(State(state): State<AdminState>) -> Response {
    let streams = state
        .store
        .live_streams()
        .into_iter()
        .map(|s: LiveStreamInfo| StreamEntry {
            node_name: s.node.to_string(),
            peer_address: s.peer_address,
            certificate_serial: s.certificate_serial,
            opened_at: s.opened_at,
        })
        .collect();
    Json(StreamList { streams }).into_response()
}

async fn prometheus(State(state): State<AdminState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
