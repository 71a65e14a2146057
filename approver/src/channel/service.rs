//! The `rubberstamp.v1.Attestation/Attest` stream: identity from the connection, one live
//! stream per node, reports checked and stored, Acks and Challenges sent back.
//!
//! The route is written out by hand instead of using the generated server so that it can
//! use `rubber_stamp_proto::codec::AttestCodec`, whose per-stream buffers are sized for small reports (tonic's
//! default codec allocates 8 KiB for each direction of every stream up front).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use rubber_stamp_proto::codec::AttestCodec;
use rubber_stamp_proto::v1::{
    Ack, AgentMessage, ApproverMessage, Challenge, ProofReceipt, agent_message, approver_message,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Code, Request, Response, Status, Streaming};

use super::identity::IdentityError;
use super::report::{ReportError, ValidReport};
use super::tls::{GaugeGuard, PeerInfo};
use super::token::{TokenRefusal, TokenVerifier, bearer};
use crate::metrics::{GrpcMetrics, ResultLabel};
use crate::proof::ReceiptOutcome;
use crate::store::{AttestationStore, StreamCommand, StreamLease};

/// The gRPC service name, also the approver's readiness service in `grpc.health.v1`.
pub const SERVICE_NAME: &str = "rubberstamp.v1.Attestation";
const ATTEST_PATH: &str = "/rubberstamp.v1.Attestation/Attest";

/// At most one "refused attestation stream" log line per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Proof receipts one stream may send in a burst; after it, one per
/// [`RECEIPT_INTERVAL`]. Receipts past the budget are dropped and counted, never fatal to
/// the stream: a neighbour flooding an agent's proof port must not cost the node its
/// attestation.
const RECEIPT_BURST: u32 = 64;
/// See [`RECEIPT_BURST`]: 20 receipts a second.
const RECEIPT_INTERVAL: Duration = Duration::from_millis(50);

/// Responses queued per stream before the stream task waits for the agent to read.
const OUTBOUND_CAPACITY: usize = 2;

/// A queued response. Boxed because the channel allocates its slots in blocks of 32 up
/// front, once per live stream: 16-byte slots instead of 72-byte ones.
type Outbound = Result<Box<ApproverMessage>, Status>;

/// The response stream of one Attest call.
pub type AttestResponses =
    futures::stream::Map<ReceiverStream<Outbound>, fn(Outbound) -> Result<ApproverMessage, Status>>;

fn unbox(outbound: Outbound) -> Result<ApproverMessage, Status> {
    outbound.map(|message| *message)
}

/// Per-stream limits.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// Largest encoded message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Reports a stream may send in a burst.
    pub report_burst: u32,
    /// After the burst, one more report is allowed per this interval.
    pub report_interval: Duration,
}

/// Which credentials make an agent of a node.
#[derive(Clone, Debug)]
pub struct AgentCredentials {
    /// The kubelet's client certificate (`CN=system:node:<name>`), verified by TLS.
    pub kubelet_cert: bool,
    /// A projected ServiceAccount token, verified by the API server.
    pub token: Option<TokenVerifier>,
}

impl AgentCredentials {
    /// Kubelet client certificates only (no API server needed).
    pub fn kubelet_cert() -> Self {
        Self {
            kubelet_cert: true,
            token: None,
        }
    }
}

/// The attestation service: a tower service routing `Attest` calls, cheap to clone.
#[derive(Clone, Debug)]
pub struct AttestationService {
    state: Arc<ServiceState>,
}

#[derive(Debug)]
struct ServiceState {
    store: AttestationStore,
    metrics: GrpcMetrics,
    limits: StreamLimits,
    replica: String,
    max_age_seconds: u32,
    credentials: AgentCredentials,
    refusal_log: std::sync::Mutex<rubber_stamp_listen::Throttle>,
    shutdown: CancellationToken,
}

/// Who opened a stream, as TLS or the API server verified it.
struct Opener {
    node: rubber_stamp_core::NodeName,
    /// The certificate's serial, or the token's credential id.
    credential: String,
    /// When the credential stops being valid (tokens); the stream ends then.
    expires: Option<Instant>,
}

/// How an accepted stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// The agent half-closed its side.
    ClientClosed,
    /// The transport failed or the agent reset the stream.
    Transport(Status),
    /// A newer stream of the same node replaced this one.
    Replaced,
    /// The approver is shutting down.
    Shutdown,
    /// The agent stopped reading its responses (the response channel closed).
    PeerGone,
    /// A report broke the wire contract.
    InvalidReport(ReportError),
    /// A message did not decode.
    Malformed(Status),
    /// A message exceeded the size limit.
    TooLarge(Status),
    /// Reports came faster than the rate limit.
    RateLimited,
    /// The token the stream was opened with expired (the agent reconnects with the fresh
    /// one the kubelet rotated in).
    CredentialExpired,
}

// === impl AttestationService ===

impl AttestationService {
    /// A service storing reports in `store`; streams end when `shutdown` is cancelled.
    pub fn new(
        store: AttestationStore,
        metrics: GrpcMetrics,
        limits: StreamLimits,
        replica: String,
        credentials: AgentCredentials,
        shutdown: CancellationToken,
    ) -> Self {
        let max_age_seconds = u32::try_from(store.config().max_age.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            state: Arc::new(ServiceState {
                store,
                metrics,
                limits,
                replica,
                max_age_seconds,
                credentials,
                refusal_log: std::sync::Mutex::new(rubber_stamp_listen::Throttle::new(
                    REFUSAL_LOG_INTERVAL,
                )),
                shutdown,
            }),
        }
    }
}

impl<B> Service<http::Request<B>> for AttestationService
where
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != ATTEST_PATH {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let max = state.limits.max_message_bytes;
            let mut grpc =
                Grpc::new(AttestCodec).apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.streaming(AttestMethod(state), request).await)
        })
    }
}

impl NamedService for AttestationService {
    const NAME: &'static str = SERVICE_NAME;
}

struct AttestMethod(Arc<ServiceState>);

impl StreamingService<AgentMessage> for AttestMethod {
    type Response = ApproverMessage;
    type ResponseStream = AttestResponses;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<AgentMessage>>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move { state.open(request).await })
    }
}

// === impl ServiceState ===

impl ServiceState {
    /// Admits a new stream: only a certificate naming a node, or a ServiceAccount token the
    /// API server binds to a node, gets one.
    async fn open(
        self: Arc<Self>,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<AttestResponses>, Status> {
        let Some(peer) = request.extensions().get::<Arc<PeerInfo>>().cloned() else {
            // Only reachable if the server is wired without the attested acceptor.
            self.metrics.refuse_stream("no_peer_info");
            return Err(Status::internal("connection carries no peer information"));
        };
        let opener = match self.identify(&peer, &request).await {
            Ok(opener) => opener,
            Err((label, status)) => {
                self.metrics.refuse_stream(label);
                // Anyone who reaches the port can be refused: one line per interval, with
                // how many were held back; the metric counts every one.
                let admitted = self
                    .refusal_log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .admit(Instant::now());
                if let Some(held_back) = admitted {
                    tracing::warn!(peer = %peer.address, reason = label, error = status.message(), held_back, "refused attestation stream");
                }
                return Err(status);
            }
        };
        if self.shutdown.is_cancelled() {
            self.metrics.refuse_stream("shutting_down");
            return Err(Status::unavailable("approver is shutting down"));
        }
        let lease = self
            .store
            .open_stream(opener.node, peer.address.ip(), opener.credential);
        tracing::debug!(node = %lease.node(), peer = %peer.address, "attestation stream opened");
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        tokio::spawn(self.run_stream(lease, opener.expires, request.into_inner(), tx));
        let unbox: fn(Outbound) -> Result<ApproverMessage, Status> = unbox;
        Ok(Response::new(ReceiverStream::new(rx).map(unbox)))
    }

    /// Who the stream's credential says the agent is: the connection's verified client
    /// certificate, else (when tokens are accepted) the request's bearer token as the API
    /// server reviews it. Never anything the agent's messages say.
    async fn identify(
        &self,
        peer: &PeerInfo,
        request: &Request<Streaming<AgentMessage>>,
    ) -> Result<Opener, (&'static str, Status)> {
        match (&peer.identity, &self.credentials.token) {
            (Ok(identity), _) if self.credentials.kubelet_cert => Ok(Opener {
                node: identity.node.clone(),
                credential: identity.serial.clone(),
                expires: None,
            }),
            (Ok(_), _) => Err((
                "kubelet_cert_not_accepted",
                Status::permission_denied(
                    "this approver does not accept kubelet client certificates (--agent-identity); present a ServiceAccount token",
                ),
            )),
            (Err(IdentityError::NoCertificate), Some(verifier)) => {
                let refused = |refusal: TokenRefusal| (refusal.metric_label(), refusal.status());
                let header = match request.metadata().get("authorization") {
                    None => None,
                    Some(value) => Some(value.to_str().map_err(|_| {
                        refused(TokenRefusal::Malformed(
                            "the authorization header is not ASCII".to_owned(),
                        ))
                    })?),
                };
                let token = bearer(header).map_err(refused)?;
                let identity = verifier
                    .verify(token, peer.address.ip())
                    .await
                    .map_err(refused)?;
                let left = identity
                    .expires_at
                    .duration_since(verifier.now())
                    .map_err(|_| {
                        refused(TokenRefusal::Expired(
                            identity
                                .expires_at
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs()),
                        ))
                    })?;
                peer.mark_verified();
                tracing::debug!(node = %identity.node, pod = %identity.pod, credential = %identity.credential, "token verified");
                Ok(Opener {
                    node: identity.node,
                    credential: identity.credential,
                    expires: Some(Instant::now() + left),
                })
            }
            (Err(error), _) => Err((
                error.metric_label(),
                Status::permission_denied(error.to_string()),
            )),
        }
    }

    async fn run_stream(
        self: Arc<Self>,
        mut lease: StreamLease,
        expires: Option<Instant>,
        mut inbound: Streaming<AgentMessage>,
        outbound: mpsc::Sender<Outbound>,
    ) {
        let _live = GaugeGuard::inc(&self.metrics.live_streams);
        let mut limiter = RateLimiter::new(self.limits.report_burst, self.limits.report_interval);
        let mut receipts = RateLimiter::new(RECEIPT_BURST, RECEIPT_INTERVAL);
        let mut previous = 0;
        // A stream without an expiring credential never reaches this far-off deadline.
        let expiry = tokio::time::sleep_until(
            expires.unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400)),
        );
        tokio::pin!(expiry);
        let end = loop {
            let reply = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break StreamEnd::Shutdown,
                () = &mut expiry, if expires.is_some() => break StreamEnd::CredentialExpired,
                command = lease.next_command() => match command {
                    Some(StreamCommand::Challenge(nonce)) => ApproverMessage {
                        kind: Some(approver_message::Kind::Challenge(Challenge {
                            nonce: nonce.as_bytes().to_vec(),
                        })),
                    },
                    None => break StreamEnd::Replaced,
                },
                message = inbound.message() => match message {
                    Ok(Some(AgentMessage { kind: Some(agent_message::Kind::Receipt(receipt)) })) => {
                        self.receipt(&lease, &receipt, &mut receipts);
                        continue;
                    }
                    Ok(Some(message)) => match self.accept(&lease, message, &mut previous, &mut limiter) {
                        Ok(ack) => ack,
                        Err(end) => break end,
                    },
                    Ok(None) => break StreamEnd::ClientClosed,
                    Err(status) => break StreamEnd::from_inbound(status),
                },
                () = outbound.closed() => break StreamEnd::PeerGone,
            };
            if !self.send(&outbound, Ok(Box::new(reply))).await {
                break StreamEnd::PeerGone;
            }
        };
        self.metrics.close_stream(end.metric_label());
        tracing::debug!(node = %lease.node(), reason = end.metric_label(), "attestation stream ended");
        if let StreamEnd::Transport(status) = &end {
            tracing::debug!(node = %lease.node(), code = ?status.code(), message = status.message(), "attestation stream transport error");
        }
        if let Some(status) = end.status() {
            if matches!(
                end,
                StreamEnd::InvalidReport(_)
                    | StreamEnd::Malformed(_)
                    | StreamEnd::TooLarge(_)
                    | StreamEnd::RateLimited
            ) {
                tracing::warn!(node = %lease.node(), status = %status.message(), "closed attestation stream");
            }
            // Best effort: an agent that stopped reading does not get it.
            let _ = outbound.try_send(Err(status));
        }
    }

    /// Hands a proof receipt to the book, as received on `lease`'s stream: the node is the
    /// stream's, never the message's. Nothing is answered; nothing in a receipt can end
    /// the stream.
    fn receipt(&self, lease: &StreamLease, receipt: &ProofReceipt, limiter: &mut RateLimiter) {
        let node = lease.node();
        let label = if limiter.allow(Instant::now()) {
            match canonical_address(&receipt.local_address) {
                Some(local) => {
                    let outcome = self.store.proofs().receipt(
                        node.as_str(),
                        &receipt.nonce,
                        local,
                        Instant::now(),
                        self.store.now(),
                    );
                    let sender = canonical_address(&receipt.sender_address);
                    match &outcome {
                        ReceiptOutcome::Accepted { csr, proven: false } => tracing::info!(
                            %node, csr, %local, sender = ?sender,
                            "another node's probe arrived at this node: its address is not the requester's"
                        ),
                        ReceiptOutcome::Accepted { csr, proven: true } => {
                            tracing::debug!(%node, csr, %local, sender = ?sender, "probe received by the requesting node");
                        }
                        _ => {
                            tracing::debug!(%node, %local, sender = ?sender, outcome = outcome.metric_label(), "receipt changes nothing")
                        }
                    }
                    outcome.metric_label()
                }
                None => "invalid",
            }
        } else {
            "rate_limited"
        };
        self.metrics
            .proof_receipts
            .get_or_create(&ResultLabel { result: label })
            .inc();
    }

    /// Checks and stores one message; the Ack to send, or why the stream must end.
    fn accept(
        &self,
        lease: &StreamLease,
        message: AgentMessage,
        previous: &mut u64,
        limiter: &mut RateLimiter,
    ) -> Result<ApproverMessage, StreamEnd> {
        if !limiter.allow(Instant::now()) {
            return Err(StreamEnd::RateLimited);
        }
        let report = ValidReport::try_from(message).map_err(StreamEnd::InvalidReport)?;
        if report.sequence <= *previous {
            return Err(StreamEnd::InvalidReport(
                ReportError::SequenceNotIncreasing {
                    got: report.sequence,
                    previous: *previous,
                },
            ));
        }
        *previous = report.sequence;
        let recorded = self
            .store
            .record(lease, report.facts, report.nonce.as_ref())
            .map_err(|_| StreamEnd::Replaced)?;
        self.metrics.reports_accepted.inc();
        if recorded.answered_challenge {
            self.metrics
                .challenges
                .get_or_create(&ResultLabel { result: "answered" })
                .inc();
        }
        Ok(ApproverMessage {
            kind: Some(approver_message::Kind::Ack(Ack {
                sequence: report.sequence,
                node_name: lease.node().to_string(),
                max_age_seconds: self.max_age_seconds,
                replica: self.replica.clone(),
                accepts_receipts: true,
            })),
        })
    }

    /// Queues a response; false if the agent is gone. Never outlives shutdown.
    async fn send(&self, outbound: &mpsc::Sender<Outbound>, message: Outbound) -> bool {
        tokio::select! {
            sent = outbound.send(message) => sent.is_ok(),
            () = self.shutdown.cancelled() => false,
        }
    }
}

// === impl StreamEnd ===

impl StreamEnd {
    fn from_inbound(status: Status) -> Self {
        match status.code() {
            // AttestCodec reports undecodable messages as invalid_argument.
            Code::InvalidArgument => Self::Malformed(status),
            // tonic's size check on the length prefix.
            Code::OutOfRange => Self::TooLarge(status),
            _ => Self::Transport(status),
        }
    }

    fn metric_label(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Transport(_) => "transport_error",
            Self::Replaced => "replaced",
            Self::Shutdown => "shutdown",
            Self::PeerGone => "peer_gone",
            Self::InvalidReport(_) => "invalid_report",
            Self::Malformed(_) => "malformed_message",
            Self::TooLarge(_) => "message_too_large",
            Self::RateLimited => "rate_limited",
            Self::CredentialExpired => "credential_expired",
        }
    }

    /// The status that ends the response stream, if the agent can still receive one.
    fn status(&self) -> Option<Status> {
        match self {
            Self::ClientClosed | Self::Transport(_) | Self::PeerGone => None,
            Self::Replaced => Some(Status::aborted(
                "a newer stream from the same node replaced this one",
            )),
            Self::Shutdown => Some(Status::unavailable("approver is shutting down")),
            Self::InvalidReport(error) => Some(Status::invalid_argument(error.to_string())),
            Self::Malformed(status) => Some(Status::invalid_argument(status.message().to_owned())),
            Self::TooLarge(status) => Some(Status::invalid_argument(format!(
                "message too large: {}",
                status.message()
            ))),
            Self::RateLimited => Some(Status::resource_exhausted(
                "reports arrive faster than the approver's per-stream rate limit",
            )),
            Self::CredentialExpired => Some(Status::unauthenticated(
                "the token this stream was opened with expired; reconnect with the rotated one",
            )),
        }
    }
}

/// A token bucket: `burst` reports at once, then one per `interval`.
#[derive(Debug)]
struct RateLimiter {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(burst: u32, interval: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            burst,
            per_second: 1.0 / interval.as_secs_f64().max(f64::EPSILON),
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An address of 4 or 16 bytes, an IPv4-mapped IPv6 one as IPv4.
fn canonical_address(bytes: &[u8]) -> Option<std::net::IpAddr> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limiter_allows_a_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(3, Duration::from_secs(1));
        limiter.last = start;
        assert!((0..3).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        assert!(!limiter.allow(start + Duration::from_millis(900)));
        assert!(limiter.allow(start + Duration::from_millis(1000)));
        assert!(!limiter.allow(start + Duration::from_millis(1000)));
        // Long idle refills only up to the burst.
        let later = start + Duration::from_secs(3600);
        assert!((0..3).all(|_| limiter.allow(later)));
        assert!(!limiter.allow(later));
    }
}
