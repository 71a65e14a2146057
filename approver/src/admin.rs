//! The admin HTTP server: the attestation snapshot (`/attestations`, the JSON that
//! `check --attestations` reads), live streams (`/streams`) and Prometheus `/metrics`.
//!
//! It serves read-only views and should be reachable only from inside the cluster. Its
//! listener is bounded like every other (`rubber-stamp-listen`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use jiff::Timestamp;
use rubber_stamp_listen::{Admitted, Events, Incoming, PlaintextLimits};
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

/// The admin routes.
pub fn router(store: AttestationStore, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(ATTESTATIONS_PATH, get(attestations))
        .route(STREAMS_PATH, get(streams))
        .route(METRICS_PATH, get(prometheus))
        .with_state(AdminState { store, metrics })
}

/// Serves the admin routes on `listener` within `limits` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    limits: PlaintextLimits,
    store: AttestationStore,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let events: Arc<dyn Events> = Arc::new(metrics.listeners.clone());
    let incoming = rubber_stamp_listen::plaintext(
        listener,
        metrics::listener::ADMIN,
        limits,
        events,
        shutdown.clone(),
    );
    axum::serve(BoundedListener { incoming, local }, router(store, metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The bounded accept loop's connections as an `axum` listener.
struct BoundedListener {
    incoming: Incoming<Admitted<TcpStream>>,
    local: SocketAddr,
}

impl axum::serve::Listener for BoundedListener {
    type Io = Admitted<TcpStream>;
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
