//! One attestation stream to one approver replica: connect with the current identity,
//! report on connect, on change, every heartbeat and on every challenge; pass on the proof
//! listener's receipts while the replica accepts them ([`ReceiptGate`]); reconnect with
//! capped exponential backoff and jitter (`backon`) when the stream fails.
//!
//! The agent's runtime runs one per endpoint with the node's
//! [`SystemFacts`](crate::facts::SystemFacts) and its [`Readiness`](crate::readiness::Readiness) as
//! [`SessionEvents`];
//! simulated nodes run the same code with facts, identity and source address of their own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rubber_stamp_proto::limits;
use rubber_stamp_proto::v1::attestation_client::AttestationClient;
use rubber_stamp_proto::v1::{
    Ack, AgentMessage, ApproverMessage, ProofReceipt, agent_message, approver_message,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Timings;
use crate::facts::{Facts, FactsError, NodeFacts};
use crate::identity::ClientIdentity;
use crate::proof::ProofFeed;

/// What every stream shares; cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionContext {
    /// TLS server name the approver's certificate must carry.
    pub server_name: String,
    /// CA bundle for the approver's certificate.
    pub approver_ca: ApproverCa,
    /// Intervals and timeouts.
    pub timings: Timings,
    /// The current client identity (`None` until first loaded). A closed channel keeps
    /// the last identity for good.
    pub identity: watch::Receiver<Option<Arc<ClientIdentity>>>,
    /// The node's facts.
    pub facts: Facts,
    /// Told of Acks, challenges and ended streams: the agent's
    /// [`Readiness`](crate::readiness::Readiness).
    pub events: Arc<dyn SessionEvents>,
    /// Source address of every connection; `None` lets the kernel choose, as the agent
    /// does. Simulated nodes on one machine each use their own loopback address.
    pub local_address: Option<IpAddr>,
    /// Starts every stream's first heartbeat after a random part of the interval instead
    /// of a whole one. Off in the agent (a node's streams open when it starts); on for a
    /// simulated fleet whose streams all open within seconds, which would otherwise
    /// heartbeat in lockstep.
    pub stagger_first_heartbeat: bool,
}

/// Where the approver's CA bundle comes from.
#[derive(Clone, Debug)]
pub enum ApproverCa {
    /// A PEM file, read on every connection attempt so a rotated bundle is picked up.
    File(PathBuf),
    /// PEM held in memory.
    Pem(Arc<[u8]>),
}

/// What a stream tells its follower: the agent's [`Readiness`](crate::readiness::Readiness)
/// records Acks; simulations
/// count what they measure. Called on the stream's task: keep it short.
pub trait SessionEvents: fmt::Debug + Send + Sync + 'static {
    /// The replica at `endpoint` acknowledged a report.
    fn acknowledged(&self, endpoint: SocketAddr, ack: &Ack);

    /// A report with `facts`, numbered `sequence` on the current stream to `endpoint`,
    /// was handed to the stream (sequences start at 1 on every stream).
    fn reported(&self, endpoint: SocketAddr, sequence: u64, facts: &NodeFacts) {
        let _ = (endpoint, sequence, facts);
    }

    /// The replica at `endpoint` challenged with a well-formed nonce; a report with
    /// freshly read facts answers it.
    fn challenged(&self, endpoint: SocketAddr) {
        let _ = endpoint;
    }

    /// A proof receipt was handed to the current stream to `endpoint`.
    fn receipt_sent(&self, endpoint: SocketAddr) {
        let _ = endpoint;
    }

    /// `count` proof receipts were not sent to `endpoint`, for `reason`.
    fn receipts_dropped(&self, endpoint: SocketAddr, reason: ReceiptDrop, count: u64) {
        let _ = (endpoint, reason, count);
    }

    /// One connection attempt or stream to `endpoint` ended, with `error`, or without
    /// one when the session is stopping or reconnects with a new certificate.
    fn ended(&self, endpoint: SocketAddr, error: Option<&SessionError>) {
        let _ = (endpoint, error);
    }
}

/// Why a stream did not send a proof receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptDrop {
    /// The replica's last Ack on the stream did not set `accepts_receipts` (an approver
    /// before 0.4, which would close the stream on a message kind it does not know), or no
    /// Ack came yet.
    NotAccepted,
    /// The stream fell more than [`RECEIPT_CHANNEL`](crate::proof::RECEIPT_CHANNEL)
    /// receipts behind; the oldest were lost.
    Lagged,
}

impl ReceiptDrop {
    /// The `reason` label of `rubber_stamp_agent_proof_receipts_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotAccepted => "not_accepted",
            Self::Lagged => "lagged",
        }
    }
}

/// Whether a stream may carry proof receipts: only while the last Ack received on it set
/// `accepts_receipts`. A new stream starts closed: its replica has not said yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiptGate {
    accepts: bool,
}

impl ReceiptGate {
    /// Follows the Ack just received on the stream.
    pub fn acknowledged(&mut self, ack: &Ack) {
        self.accepts = ack.accepts_receipts;
    }

    /// Whether a receipt may be sent now.
    pub fn admits(self) -> bool {
        self.accepts
    }
}

/// What a stream sends next.
#[derive(Debug)]
enum Outgoing {
    /// A report of these facts, answering a challenge with this nonce (or none).
    Report(Arc<NodeFacts>, Vec<u8>),
    /// A proof receipt.
    Receipt(ProofReceipt),
}

/// Why one connection attempt or stream failed (each is retried after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No identity is loaded.
    #[error("no client identity is loaded")]
    NoIdentity,
    /// The token is not a valid header value (cannot happen for a token that loaded).
    #[error("the ServiceAccount token cannot be sent as a header")]
    BadToken,
    /// The CA bundle could not be read.
    #[error("reading the approver CA bundle {path}: {source}")]
    Ca {
        /// The bundle.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The endpoint or TLS settings were refused.
    #[error("TLS settings: {0}")]
    Tls(tonic::transport::Error),
    /// TCP or TLS connection failed.
    #[error("connecting: {0}")]
    Connect(tonic::transport::Error),
    /// The approver refused the stream (e.g. `permission_denied` for a certificate that
    /// does not name a node).
    #[error("the approver refused the stream: {}: {}", .0.code(), .0.message())]
    Refused(Status),
    /// The stream ended with an error status.
    #[error("the stream failed: {}: {}", .0.code(), .0.message())]
    Stream(Status),
    /// The approver ended the stream without a status.
    #[error("the approver closed the stream")]
    Closed,
    /// The facts could not be read (or the read came back empty): nothing is reported,
    /// the stream ends and is retried after the backoff, and readiness is off meanwhile.
    #[error(transparent)]
    Facts(#[from] FactsError),
}

impl SessionError {
    /// A short snake_case label for metrics (`rubber_stamp_agent_stream_errors_total`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoIdentity => "no_identity",
            Self::BadToken => "bad_token",
            Self::Ca { .. } => "approver_ca",
            Self::Tls(_) => "tls_settings",
            Self::Connect(_) => "connect",
            Self::Refused(_) => "refused",
            Self::Stream(_) => "stream",
            Self::Closed => "closed",
            Self::Facts(_) => "facts",
        }
    }
}

/// When a stream opened and whether a report on it was acknowledged: a stream that was
/// acknowledged and stayed up a heartbeat interval starts over with a fresh backoff.
#[derive(Debug, Default)]
struct Healthy {
    opened: Option<Instant>,
    acked: bool,
}

/// How a stream ended when it was not a failure to back off from.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    /// The agent is stopping or the endpoint went away.
    Stopped,
    /// The certificate or token changed; reconnect at once so the approver sees the new
    /// one (a stream opened with a token ends when the token expires).
    IdentityChanged,
    /// The stream was acknowledged and stayed up for at least a heartbeat interval before
    /// it failed; start over with a fresh backoff.
    Healthy,
}

// === impl SessionContext ===

impl SessionContext {
    /// Keeps a stream to `endpoint` until `stop`: waits for an identity, then connects,
    /// streams and reconnects. No proof listener: reports say `proof_port` 0 and no
    /// receipt is sent (an agent from before 0.4 looks like this).
    pub async fn run(self, endpoint: SocketAddr, stop: CancellationToken) {
        self.run_with_proof(endpoint, None, stop).await;
    }

    /// Like [`run`](Self::run), with the proof listener `proof`: reports carry its port,
    /// and its receipts go to the replica while the replica accepts them.
    pub async fn run_with_proof(
        self,
        endpoint: SocketAddr,
        proof: Option<ProofFeed>,
        stop: CancellationToken,
    ) {
        let proof = proof.as_ref();
        let mut identity = self.identity.clone();
        tokio::select! {
            () = stop.cancelled() => return,
            loaded = identity.wait_for(Option::is_some) => if loaded.is_err() { return },
        }
        loop {
            let attempts = (|| self.attempt(endpoint, proof, &stop))
                .retry(self.backoff())
                .sleep(tokio::time::sleep)
                .notify(|error: &SessionError, delay: Duration| {
                    tracing::warn!(%endpoint, %error, ?delay, "attestation stream failed; reconnecting");
                });
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = attempts => outcome,
            };
            match outcome {
                Ok(SessionEnd::Stopped) => return,
                Ok(SessionEnd::IdentityChanged) => {
                    tracing::info!(%endpoint, "credential rotated; reconnecting with the new one");
                }
                Ok(SessionEnd::Healthy) => {}
                // Unreachable: the backoff never gives up.
                Err(error) => tracing::error!(%endpoint, %error, "giving up on a backoff"),
            }
        }
    }

    /// Capped exponential backoff with jitter; each endpoint gets its own jitter seed so
    /// agents do not reconnect in lockstep after an approver restart.
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.timings.backoff_min)
            .with_max_delay(self.timings.backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .with_jitter_seed(rand::random())
            .without_max_times()
    }

    /// One connection and stream, until it ends; tells [`SessionEvents::ended`].
    async fn attempt(
        &self,
        endpoint: SocketAddr,
        proof: Option<&ProofFeed>,
        stop: &CancellationToken,
    ) -> Result<SessionEnd, SessionError> {
        let mut healthy = Healthy::default();
        let outcome = self.stream(endpoint, proof, stop, &mut healthy).await;
        self.events.ended(endpoint, outcome.as_ref().err());
        match outcome {
            // A failed read of the facts is not the stream's failure: it keeps backing off.
            Err(error @ (SessionError::Closed | SessionError::Stream(_)))
                if healthy.acked
                    && healthy
                        .opened
                        .is_some_and(|at| at.elapsed() >= self.timings.heartbeat_interval) =>
            {
                tracing::warn!(%endpoint, %error, "attestation stream ended; reconnecting");
                Ok(SessionEnd::Healthy)
            }
            other => other,
        }
    }

    /// Connects and streams until the stream ends; records in `healthy` when it opened
    /// and whether a report was acknowledged.
    async fn stream(
        &self,
        endpoint: SocketAddr,
        proof: Option<&ProofFeed>,
        stop: &CancellationToken,
        healthy: &mut Healthy,
    ) -> Result<SessionEnd, SessionError> {
        let proof_port = proof.map_or(0, ProofFeed::reported_port);
        let mut identity_changes = self.identity.clone();
        identity_changes.mark_unchanged();
        let identity = identity_changes
            .borrow()
            .clone()
            .ok_or(SessionError::NoIdentity)?;
        let channel = tokio::select! {
            () = stop.cancelled() => return Ok(SessionEnd::Stopped),
            channel = self.connect(endpoint, &identity) => channel?,
        };
        let mut client = AttestationClient::new(channel)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);

        let mut fact_changes = self.facts.subscribe();
        fact_changes.mark_unchanged();
        let (requests, outgoing) = mpsc::channel(2);
        let mut sequence = 0;
        // Every report carries facts read right before it is sent, so a report
        // the approver receives after a CSR was created describes the node as it
        // was after the CSR (the approver may deny a SAN missing from it).
        let first_facts = self.facts.refresh().await?;
        let first = report(&first_facts, &mut sequence, Vec::new(), proof_port);
        fact_changes.mark_unchanged();
        // The channel is empty: this cannot fail for lack of room.
        let _ = requests.try_send(first);
        self.events.reported(endpoint, sequence, &first_facts);
        healthy.opened = Some(Instant::now());
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        if let ClientIdentity::Token(token) = &*identity {
            let value = format!("Bearer {}", token.token)
                .parse()
                .map_err(|_| SessionError::BadToken)?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = tokio::select! {
            () = stop.cancelled() => return Ok(SessionEnd::Stopped),
            response = client.attest(request) => response.map_err(SessionError::Refused)?,
        };
        tracing::info!(%endpoint, "attestation stream open");
        let mut incoming = response.into_inner();
        // Receipts from now on, sent while the replica's last Ack accepts them.
        let mut receipts = proof.map(ProofFeed::subscribe);
        let mut gate = ReceiptGate::default();
        let first_heartbeat = if self.stagger_first_heartbeat {
            self.timings
                .heartbeat_interval
                .mul_f64(rand::random::<f64>())
        } else {
            self.timings.heartbeat_interval
        };
        let heartbeat = tokio::time::sleep(first_heartbeat);
        tokio::pin!(heartbeat);
        // A closed identity channel (a fixed identity) can no longer change.
        let mut identity_open = true;

        // Facts that changed while a report was being sent, reported next.
        let mut queued: Option<Arc<NodeFacts>> = None;
        loop {
            let due: Option<Outgoing> = if let Some(facts) = queued.take() {
                Some(Outgoing::Report(facts, Vec::new()))
            } else {
                tokio::select! {
                    () = stop.cancelled() => return Ok(SessionEnd::Stopped),
                    changed = identity_changes.changed(), if identity_open => match changed {
                        Ok(()) => return Ok(SessionEnd::IdentityChanged),
                        Err(_) => {
                            identity_open = false;
                            None
                        }
                    },
                    _ = fact_changes.changed() => fact_changes.borrow_and_update().clone().map(|f| Outgoing::Report(f, Vec::new())),
                    () = &mut heartbeat => Some(Outgoing::Report(self.facts.refresh().await?, Vec::new())),
                    received = next_receipt(&mut receipts) => match received {
                        Ok(receipt) if gate.admits() => Some(Outgoing::Receipt(receipt)),
                        Ok(_) => {
                            tracing::debug!(%endpoint, "not sending a proof receipt: the replica's last Ack did not accept receipts");
                            self.events.receipts_dropped(endpoint, ReceiptDrop::NotAccepted, 1);
                            None
                        }
                        Err(RecvError::Lagged(lost)) => {
                            tracing::debug!(%endpoint, lost, "the stream fell behind the proof listener; receipts lost");
                            self.events.receipts_dropped(endpoint, ReceiptDrop::Lagged, lost);
                            None
                        }
                        // The listener stopped: no more receipts.
                        Err(RecvError::Closed) => {
                            receipts = None;
                            None
                        }
                    },
                    message = incoming.message() => match message {
                        Ok(Some(ApproverMessage { kind: Some(approver_message::Kind::Ack(ack)) })) => {
                            self.acknowledged(endpoint, &identity, &ack);
                            gate.acknowledged(&ack);
                            healthy.acked = true;
                            None
                        }
                        Ok(Some(ApproverMessage { kind: Some(approver_message::Kind::Challenge(challenge)) })) => {
                            if challenge.nonce.is_empty() || challenge.nonce.len() > limits::MAX_NONCE_BYTES {
                                tracing::warn!(%endpoint, len = challenge.nonce.len(), "ignoring a challenge with a malformed nonce");
                                None
                            } else {
                                tracing::debug!(%endpoint, "challenged; reporting fresh facts");
                                self.events.challenged(endpoint);
                                Some(Outgoing::Report(self.facts.refresh().await?, challenge.nonce))
                            }
                        }
                        Ok(Some(ApproverMessage { kind: None })) => None,
                        Ok(None) => return Err(SessionError::Closed),
                        Err(status) => return Err(SessionError::Stream(status)),
                    },
                }
            };
            match due {
                None => {}
                Some(Outgoing::Receipt(receipt)) => {
                    let message = AgentMessage {
                        kind: Some(agent_message::Kind::Receipt(receipt)),
                    };
                    tokio::select! {
                        () = stop.cancelled() => return Ok(SessionEnd::Stopped),
                        sent = requests.send(message) => if sent.is_err() { return Err(SessionError::Closed) },
                    }
                    tracing::debug!(%endpoint, "proof receipt sent");
                    self.events.receipt_sent(endpoint);
                }
                Some(Outgoing::Report(facts, nonce)) => {
                    let message = report(&facts, &mut sequence, nonce, proof_port);
                    tokio::select! {
                        () = stop.cancelled() => return Ok(SessionEnd::Stopped),
                        sent = requests.send(message) => if sent.is_err() { return Err(SessionError::Closed) },
                    }
                    self.events.reported(endpoint, sequence, &facts);
                    heartbeat
                        .as_mut()
                        .reset(Instant::now() + self.timings.heartbeat_interval);
                    // A refresh above may itself have published a change: it is sent.
                    let latest = fact_changes.borrow_and_update().clone();
                    queued = latest.filter(|latest| **latest != *facts);
                }
            }
        }
    }

    async fn connect(
        &self,
        endpoint: SocketAddr,
        identity: &ClientIdentity,
    ) -> Result<Channel, SessionError> {
        let ca = match &self.approver_ca {
            ApproverCa::File(path) => {
                tokio::fs::read(path)
                    .await
                    .map_err(|source| SessionError::Ca {
                        path: path.clone(),
                        source,
                    })?
            }
            ApproverCa::Pem(pem) => pem.to_vec(),
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(self.server_name.clone())
            .timeout(self.timings.connect_timeout);
        // A token travels on the stream instead; the approver's certificate is verified
        // either way.
        let tls = match identity {
            ClientIdentity::Certificate(certificate) => tls.identity(Identity::from_pem(
                &certificate.cert_pem,
                &certificate.key_pem,
            )),
            ClientIdentity::Token(_) => tls,
        };
        Endpoint::from_shared(format!("https://{endpoint}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(SessionError::Tls)?
            .local_address(self.local_address)
            .connect_timeout(self.timings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.timings.keepalive_interval)
            .keep_alive_timeout(self.timings.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(SessionError::Connect)
    }

    fn acknowledged(&self, endpoint: SocketAddr, identity: &ClientIdentity, ack: &Ack) {
        self.events.acknowledged(endpoint, ack);
        let expected = identity.claimed_node();
        if expected != Some(ack.node_name.as_str()) {
            tracing::warn!(
                %endpoint,
                approver_sees = %ack.node_name,
                credential_names = expected.unwrap_or("(no node)"),
                "the approver attributes our reports to an unexpected node"
            );
        }
        tracing::debug!(%endpoint, sequence = ack.sequence, replica = %ack.replica, max_age_seconds = ack.max_age_seconds, "report acknowledged");
    }
}

fn report(facts: &NodeFacts, sequence: &mut u64, nonce: Vec<u8>, proof_port: u16) -> AgentMessage {
    *sequence += 1;
    AgentMessage {
        kind: Some(agent_message::Kind::Report(
            facts.to_report(*sequence, nonce, proof_port),
        )),
    }
}

/// The next receipt for a stream, or never without a proof listener.
async fn next_receipt(
    receipts: &mut Option<broadcast::Receiver<ProofReceipt>>,
) -> Result<ProofReceipt, RecvError> {
    match receipts {
        Some(receipts) => receipts.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(accepts_receipts: bool) -> Ack {
        Ack {
            sequence: 1,
            accepts_receipts,
            ..Ack::default()
        }
    }

    #[test]
    fn receipts_go_only_where_the_last_ack_accepted_them() {
        let mut gate = ReceiptGate::default();
        assert!(!gate.admits(), "no Ack yet: the replica has not said");
        gate.acknowledged(&ack(false));
        assert!(!gate.admits(), "an approver before 0.4 never sets it");
        gate.acknowledged(&ack(true));
        assert!(gate.admits());
        gate.acknowledged(&ack(true));
        assert!(gate.admits());
        // A replica that stops accepting them (a downgrade behind the same address).
        gate.acknowledged(&ack(false));
        assert!(!gate.admits());
    }
}
