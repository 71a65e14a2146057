//! The attestation port's TLS: a rustls server configuration that requires a client
//! certificate from the cluster CA, and the handshake step of the port's bounded accept
//! loop: ClientHello and handshake timeouts, the per-node and total limits of
//! authenticated connections, and each connection's node identity, derived once.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rubber_stamp_listen::{Events, Incoming, Pending, PoolLimits, Throttle};

use super::client_ca::WatchedClientCa;
use rustls::server::{Acceptor, ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use super::identity::{IdentityError, NodeIdentity, node_identity};
use crate::metrics::{GrpcMetrics, listener};

/// The files the attestation port's TLS is built from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The approver's serving certificate chain (PEM).
    pub cert: PathBuf,
    /// The serving certificate's private key (PEM).
    pub key: PathBuf,
    /// CA bundle that client (kubelet) certificates must chain to (PEM); `None` when agents
    /// attest with ServiceAccount tokens only.
    pub client_ca: Option<PathBuf>,
}

/// Which client certificates the attestation port asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every connection must present a certificate chaining to the client CA.
    Required,
    /// A certificate is verified when presented; a connection without one must carry a
    /// ServiceAccount token on its stream.
    Optional,
    /// No certificate is asked for (ServiceAccount tokens only).
    None,
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
    /// Client certificates are accepted but no client CA bundle is configured.
    #[error(
        "kubelet client certificates are accepted (--agent-identity kubelet-cert) but no --client-ca is set"
    )]
    NoClientCa,
    /// The client certificate verifier could not be built (e.g. an empty bundle).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the certificate, key or protocol settings.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the server configuration: TLS 1.3 only, ALPN `h2`, and a client certificate
/// chaining to `files.client_ca` as `auth` says.
pub fn server_config(files: &TlsFiles, auth: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Pem {
        path: files.key.clone(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)?;
    server_config_with(
        files.client_ca.as_deref(),
        auth,
        Arc::new(rustls::sign::SingleCertAndKey::from(certified)),
    )
}

/// Like [`server_config`], with the serving certificate chosen per handshake by
/// `certificates` (e.g. a `pki::ServingCertificate` that renewal swaps).
pub fn server_config_with(
    client_ca: Option<&Path>,
    auth: ClientAuth,
    certificates: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = if auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let client_ca = client_ca.ok_or(TlsError::NoClientCa)?;
        let mut roots = RootCertStore::empty();
        let cas = read_certs(client_ca)?;
        for ca in &cas {
            roots.add(ca.clone()).map_err(|source| TlsError::ClientCa {
                path: client_ca.to_owned(),
                source,
            })?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
        let verifier = if auth == ClientAuth::Optional {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        builder.with_client_cert_verifier(Arc::new(WatchedClientCa::new(
            verifier.build()?,
            client_ca.to_owned(),
            &cas,
        )))
    };
    let mut config = builder.with_cert_resolver(certificates);
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
    /// Most authenticated connections open at once (handshakes in progress count
    /// separately, [`max_handshakes`](Self::max_handshakes)). Past it a connection is closed
    /// once its handshake completes.
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once. A new connection past it closes the oldest
    /// handshake of the source address with the most in progress.
    pub max_handshakes: usize,
    /// Longest a new connection may take to send its TLS ClientHello.
    pub client_hello_timeout: Duration,
    /// Longest a TLS handshake may take, from the connection's acceptance.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress from one source address: a new connection past it
    /// closes that source's oldest handshake, so one host cannot hold every slot with
    /// handshakes it never finishes.
    pub max_handshakes_per_source: usize,
    /// Most open connections of one node (its certificate's name; a certificate naming
    /// no node counts against its source address). An agent needs one per replica;
    /// a rotation or reconnect briefly two.
    pub max_connections_per_peer: usize,
    /// Longest a connection without a client certificate may stay open before a stream on
    /// it presents a token the API server vouches for (token mode): past it the connection
    /// is closed, so strangers cannot hold connection slots with idle TLS sessions.
    pub unverified_timeout: Duration,
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
    /// Whether a stream on this connection presented a credential that made an agent of a
    /// node (a certificate-less connection is closed unless one does in time).
    verified: Arc<std::sync::atomic::AtomicBool>,
}

/// A connection that completed the mutually authenticated handshake. Holds its slot of
/// the connection limit until dropped.
pub struct AttestedConnection {
    tls: TlsStream<TcpStream>,
    info: Arc<PeerInfo>,
    /// Certificate-less connections: when the connection is closed unless verified.
    unverified_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: GrpcMetrics,
    _permit: OwnedSemaphorePermit,
    _peer: Held<PeerKey>,
    _open: GaugeGuard,
}

/// What every handshake of the attestation port shares.
struct Handshakes {
    tls: Arc<ServerConfig>,
    limits: ConnectionLimits,
    metrics: GrpcMetrics,
    /// Authenticated connections (`max_connections`).
    established: Arc<Semaphore>,
    /// Authenticated connections per node (`max_connections_per_peer`).
    peers: Tally<PeerKey>,
    /// Handshake failures are the peer's doing and can come by the thousand.
    failure_log: Mutex<Throttle>,
}

/// Accepts TCP connections from `listener` with the bounded accept loop of
/// `rubber-stamp-listen` (handshakes in progress bounded in total and per source, the
/// oldest evicted to make room), runs each handshake concurrently within the ClientHello
/// and handshake timeouts, and yields the connections that completed it and fit the
/// per-node and total connection limits, until `shutdown` or until the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: ConnectionLimits,
    metrics: GrpcMetrics,
    events: Arc<dyn Events>,
    shutdown: CancellationToken,
) -> Incoming<AttestedConnection> {
    let handshakes = Arc::new(Handshakes {
        tls,
        limits,
        metrics,
        established: Arc::new(Semaphore::new(limits.max_connections)),
        peers: Tally::new(),
        failure_log: Mutex::new(Throttle::new(Duration::from_secs(5))),
    });
    rubber_stamp_listen::accept(
        listener,
        listener::ATTESTATION,
        PoolLimits {
            total: limits.max_handshakes,
            per_source: limits.max_handshakes_per_source,
        },
        events,
        shutdown,
        move |pending| Arc::clone(&handshakes).run(pending),
    )
}

// === impl Handshakes ===

impl Handshakes {
    /// One connection's handshake; the connection if it completed and fits the limits.
    async fn run(self: Arc<Self>, pending: Pending) -> Option<AttestedConnection> {
        let Pending {
            stream,
            peer: address,
            slot,
        } = pending;
        let deadline = Instant::now() + self.limits.handshake_timeout;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%address, %error, "could not set TCP_NODELAY");
        }
        let hello = tokio::time::timeout_at(
            deadline.min(Instant::now() + self.limits.client_hello_timeout),
            LazyConfigAcceptor::new(Acceptor::default(), stream),
        );
        let start = match hello.await {
            Err(_) => return self.failed(address, "client_hello_timeout", None),
            Ok(Err(error)) => return self.failed(address, handshake_failure(&error), Some(error)),
            Ok(Ok(start)) => start,
        };
        // A connection that sent its ClientHello goes after the silent ones of its source.
        slot.spoke();
        let tls = match tokio::time::timeout_at(deadline, start.into_stream(Arc::clone(&self.tls)))
            .await
        {
            Err(_) => return self.failed(address, "handshake_timeout", None),
            Ok(Err(error)) => return self.failed(address, handshake_failure(&error), Some(error)),
            Ok(Ok(tls)) => tls,
        };
        // No longer a handshake in progress: the connection limits below take over.
        drop(slot);
        let info = PeerInfo::of(&tls, address);
        let key = match &info.identity {
            Ok(identity) => PeerKey::Node(identity.node.as_str().to_owned()),
            Err(_) => PeerKey::Source(info.address.ip()),
        };
        let Some(peer) = self.peers.take(key, self.limits.max_connections_per_peer) else {
            self.metrics.refuse_connection("peer_connection_limit");
            tracing::warn!(%address, identity = ?info.identity.as_ref().map(|i| i.node.as_str()), limit = self.limits.max_connections_per_peer, "too many connections of this node; closing the new one");
            return None;
        };
        let Ok(permit) = Arc::clone(&self.established).try_acquire_owned() else {
            self.metrics.refuse_connection("connection_limit");
            tracing::warn!(%address, limit = self.limits.max_connections, "connection limit reached; closing new connection");
            return None;
        };
        let unverified_deadline = matches!(info.identity, Err(IdentityError::NoCertificate))
            .then(|| Box::pin(tokio::time::sleep(self.limits.unverified_timeout)));
        Some(AttestedConnection {
            tls,
            info: Arc::new(info),
            unverified_deadline,
            metrics: self.metrics.clone(),
            _permit: permit,
            _peer: peer,
            _open: GaugeGuard::inc(&self.metrics.connections),
        })
    }

    /// Counts and logs (at a bounded rate) a handshake that did not complete.
    fn failed(
        &self,
        address: SocketAddr,
        reason: &'static str,
        error: Option<io::Error>,
    ) -> Option<AttestedConnection> {
        self.metrics.refuse_connection(reason);
        let due = self
            .failure_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now());
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        match due {
            Some(held_back) => {
                tracing::info!(%address, reason, error, held_back, "TLS handshake refused");
            }
            None => tracing::debug!(%address, reason, error, "TLS handshake refused"),
        }
        None
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
        Self {
            address,
            identity,
            verified: Arc::default(),
        }
    }

    /// Records that a stream on this connection was admitted with a verified credential.
    pub fn mark_verified(&self) {
        self.verified
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a stream on this connection was admitted with a verified credential.
    pub fn is_verified(&self) -> bool {
        self.verified.load(std::sync::atomic::Ordering::Acquire)
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
        let verified = self.info.is_verified();
        if let Some(deadline) = self.unverified_deadline.as_mut() {
            if verified {
                self.unverified_deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                self.unverified_deadline = None;
                self.metrics.refuse_connection("unverified_timeout");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no stream on this connection presented a verified credential in time",
                )));
            }
        }
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
