//! The admin HTTP server: the attestation snapshot (`/attestations`, the JSON that
//! `check --attestations` reads), live streams (`/streams`) and Prometheus `/metrics`.
//!
//! It serves read-only views and should be reachable only from inside the cluster.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Serialize;
use tokio::net::TcpListener;

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

/// Serves the admin routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: AttestationStore,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, metrics))
        .with_graceful_shutdown(shutdown)
        .await
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
