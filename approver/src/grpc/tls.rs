//! The attestation port's TLS: a rustls server configuration that requires a client
//! certificate from the cluster CA, and the accept loop that enforces the connection limit
//! and handshake timeout and derives each connection's node identity once.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use super::identity::{IdentityError, NodeIdentity, node_identity};
use crate::metrics::GrpcMetrics;

/// The files the attestation port's TLS is built from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The approver's serving certificate chain (PEM).
    pub cert: PathBuf,
    /// The serving certificate's private key (PEM).
    pub key: PathBuf,
    /// CA bundle that client (kubelet) certificates must chain to (PEM).
    pub client_ca: PathBuf,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM of the expected kind.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The client CA bundle has a certificate rustls will not use as a trust anchor.
    #[error("{path}: unusable CA certificate: {source}")]
    ClientCa {
        /// The bundle.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built (e.g. an empty bundle).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the certificate, key or protocol settings.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the server configuration: TLS 1.3 only, ALPN `h2`, and a client certificate
/// chaining to `files.client_ca` required on every connection.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Pem {
        path: files.key.clone(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)?;
    server_config_with(
        &files.client_ca,
        Arc::new(rustls::sign::SingleCertAndKey::from(certified)),
    )
}

/// Like [`server_config`], with the serving certificate chosen per handshake by
/// `certificates` (e.g. a `pki::ServingCertificate` that renewal swaps).
pub fn server_config_with(
    client_ca: &Path,
    certificates: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certs(client_ca)? {
        roots.add(ca).map_err(|source| TlsError::ClientCa {
            path: client_ca.to_owned(),
            source,
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(rustls_pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// Limits the accept loop enforces.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once, handshakes in progress included. Past it a new
    /// connection is closed at once.
    pub max_connections: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress from one source address: one host cannot hold every
    /// slot with handshakes it never finishes.
    pub max_handshakes_per_source: usize,
    /// Most open connections of one node (its certificate's name; a certificate naming
    /// no node counts against its source address). An agent needs one per replica;
    /// a rotation or reconnect briefly two.
    pub max_connections_per_peer: usize,
}

/// Counts of something held per key, each count bounded; a [`Held`] gives its unit back
/// when dropped.
/// Clones share the counts.
#[derive(Clone)]
struct Tally<K: Eq + Hash + Clone>(Arc<Mutex<HashMap<K, usize>>>);

/// One unit of a [`Tally`], returned on drop.
struct Held<K: Eq + Hash + Clone> {
    tally: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Tally<K> {
    fn new() -> Self {
        Self(Arc::default())
    }

    /// One more unit for `key`, unless it already holds `limit`.
    fn take(&self, key: K, limit: usize) -> Option<Held<K>> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key.clone()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Held {
            tally: Arc::clone(&self.0),
            key,
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Whose connections count together: a node's, or (no node identity) a source's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    Node(String),
    Source(IpAddr),
}

/// What the attestation service knows about the connection a stream arrived on.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// TCP source address, IPv4-mapped IPv6 turned into IPv4.
    pub address: SocketAddr,
    /// The node the verified client certificate names, or why it names none.
    pub identity: Result<NodeIdentity, IdentityError>,
}

/// A connection that completed the mutually authenticated handshake. Holds its slot of
/// the connection limit until dropped.
pub struct AttestedConnection {
    tls: TlsStream<TcpStream>,
    info: Arc<PeerInfo>,
    _permit: OwnedSemaphorePermit,
    _peer: Held<PeerKey>,
    _open: GaugeGuard,
}

/// Accepts TCP connections from `listener`, runs each handshake concurrently (bounded by
/// the connection limit and the handshake timeout) and yields the connections that
/// completed it, until `shutdown` or until the returned stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: ConnectionLimits,
    metrics: GrpcMetrics,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<AttestedConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        limits,
        metrics,
        tx,
        shutdown,
    ));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    metrics: GrpcMetrics,
    tx: mpsc::Sender<Result<AttestedConnection, io::Error>>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Tally::new();
    let peers = Tally::new();
    loop {
        let (tcp, address) = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection errors (ECONNABORTED, …) are the peer's; running out
                    // of descriptors is ours and clears only when connections close.
                    tracing::warn!(%error, "accepting a connection failed");
                    if error.raw_os_error().is_some_and(|e| e == 24 || e == 23) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.refuse_connection("connection_limit");
            tracing::warn!(%address, limit = limits.max_connections, "connection limit reached; closing new connection");
            continue;
        };
        let source = address.ip().to_canonical();
        let Some(handshake) = handshakes.take(source, limits.max_handshakes_per_source) else {
            metrics.refuse_connection("source_handshake_limit");
            tracing::warn!(%address, limit = limits.max_handshakes_per_source, "too many handshakes in progress from this address; closing new connection");
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%address, %error, "could not set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        let tx = tx.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            let handshaken =
                tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
            drop(handshake);
            let tls = match handshaken {
                Err(_) => {
                    metrics.refuse_connection("handshake_timeout");
                    tracing::info!(%address, "TLS handshake timed out");
                    return;
                }
                Ok(Err(error)) => {
                    let reason = handshake_failure(&error);
                    metrics.refuse_connection(reason);
                    tracing::info!(%address, reason, %error, "TLS handshake refused");
                    return;
                }
                Ok(Ok(tls)) => tls,
            };
            let info = PeerInfo::of(&tls, address);
            let key = match &info.identity {
                Ok(identity) => PeerKey::Node(identity.node.as_str().to_owned()),
                Err(_) => PeerKey::Source(source),
            };
            let Some(peer) = peers.take(key, limits.max_connections_per_peer) else {
                metrics.refuse_connection("peer_connection_limit");
                tracing::warn!(%address, identity = ?info.identity.as_ref().map(|i| i.node.as_str()), limit = limits.max_connections_per_peer, "too many connections of this node; closing the new one");
                return;
            };
            let connection = AttestedConnection {
                tls,
                info: Arc::new(info),
                _permit: permit,
                _peer: peer,
                _open: GaugeGuard::inc(&metrics.connections),
            };
            // The server stopped accepting; the connection just closes.
            let _ = tx.send(Ok(connection)).await;
        });
    }
}

/// The `reason` label for a failed handshake.
fn handshake_failure(error: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "expired_certificate",
        Some(Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => "not_yet_valid_certificate",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "untrusted_certificate",
        Some(Error::InvalidCertificate(_)) => "invalid_certificate",
        Some(Error::NoApplicationProtocol) => "no_application_protocol",
        Some(Error::PeerIncompatible(_)) => "incompatible_peer",
        Some(_) => "tls_error",
        None => "handshake_io_error",
    }
}

// === impl PeerInfo ===

impl PeerInfo {
    fn of(tls: &TlsStream<TcpStream>, address: SocketAddr) -> Self {
        let address = SocketAddr::new(address.ip().to_canonical(), address.port());
        let identity = match tls.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => node_identity(leaf),
            _ => Err(IdentityError::NoCertificate),
        };
        Self { address, identity }
    }
}

// === impl AttestedConnection ===

impl Connected for AttestedConnection {
    type ConnectInfo = Arc<PeerInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        Arc::clone(&self.info)
    }
}

impl AsyncRead for AttestedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for AttestedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

impl std::fmt::Debug for AttestedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedConnection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Increments a gauge now and decrements it when dropped.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn inc(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
