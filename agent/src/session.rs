//! One attestation stream to one approver replica: connect with the current identity,
//! report on connect, on change, every heartbeat and on every challenge; reconnect with
//! capped exponential backoff and jitter (`backon`) when the stream fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rubber_stamp_proto::limits;
use rubber_stamp_proto::v1::attestation_client::AttestationClient;
use rubber_stamp_proto::v1::{Ack, AgentMessage, ApproverMessage, agent_message, approver_message};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Timings;
use crate::facts::{Facts, FactsError, NodeFacts};
use crate::identity::ClientIdentity;
use crate::readiness::Readiness;

/// What every stream shares; cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionContext {
    /// TLS server name the approver's certificate must carry.
    pub server_name: String,
    /// CA bundle for the approver's certificate (read on every connection attempt, so a
    /// rotated bundle is picked up).
    pub approver_ca: PathBuf,
    /// Intervals and timeouts.
    pub timings: Timings,
    /// The current client identity (`None` until first loaded).
    pub identity: watch::Receiver<Option<Arc<ClientIdentity>>>,
    /// The node's facts.
    pub facts: Facts,
    /// Where Acks are recorded.
    pub readiness: Readiness,
}

/// Why one connection attempt or stream failed (each is retried after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No identity is loaded.
    #[error("no client identity is loaded")]
    NoIdentity,
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

/// How a stream ended when it was not a failure to back off from.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    /// The agent is stopping or the endpoint went away.
    Stopped,
    /// The certificate changed; reconnect at once so the approver sees the new one.
    IdentityChanged,
    /// The stream was acknowledged and stayed up for at least a heartbeat interval before
    /// it failed; start over with a fresh backoff.
    Healthy,
}

// === impl SessionContext ===

impl SessionContext {
    /// Keeps a stream to `endpoint` until `stop`: waits for an identity, then connects,
    /// streams and reconnects.
    pub async fn run(self, endpoint: SocketAddr, stop: CancellationToken) {
        let mut identity = self.identity.clone();
        tokio::select! {
            () = stop.cancelled() => return,
            loaded = identity.wait_for(Option::is_some) => if loaded.is_err() { return },
        }
        loop {
            let attempts = (|| self.attempt(endpoint, &stop))
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
                    tracing::info!(%endpoint, "client certificate changed; reconnecting");
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

    /// One connection and stream, until it ends.
    async fn attempt(
        &self,
        endpoint: SocketAddr,
        stop: &CancellationToken,
    ) -> Result<SessionEnd, SessionError> {
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
        let first = report(&*self.facts.refresh()?, &mut sequence, Vec::new());
        fact_changes.mark_unchanged();
        // The channel is empty: this cannot fail for lack of room.
        let _ = requests.try_send(first);
        let started = Instant::now();
        let response = tokio::select! {
            () = stop.cancelled() => return Ok(SessionEnd::Stopped),
            response = client.attest(ReceiverStream::new(outgoing)) => response.map_err(SessionError::Refused)?,
        };
        tracing::info!(%endpoint, "attestation stream open");
        let mut incoming = response.into_inner();
        let mut acked = false;
        let heartbeat = tokio::time::sleep(self.timings.heartbeat_interval);
        tokio::pin!(heartbeat);

        // Facts that changed while a report was being sent, reported next.
        let mut queued: Option<Arc<NodeFacts>> = None;
        let ended = loop {
            let due: Option<(Arc<NodeFacts>, Vec<u8>)> = if let Some(facts) = queued.take() {
                Some((facts, Vec::new()))
            } else {
                tokio::select! {
                    () = stop.cancelled() => break Ok(SessionEnd::Stopped),
                    _ = identity_changes.changed() => break Ok(SessionEnd::IdentityChanged),
                    _ = fact_changes.changed() => fact_changes.borrow_and_update().clone().map(|f| (f, Vec::new())),
                    () = &mut heartbeat => Some((self.facts.refresh()?, Vec::new())),
                    message = incoming.message() => match message {
                        Ok(Some(ApproverMessage { kind: Some(approver_message::Kind::Ack(ack)) })) => {
                            self.acknowledged(endpoint, &identity, &ack);
                            acked = true;
                            None
                        }
                        Ok(Some(ApproverMessage { kind: Some(approver_message::Kind::Challenge(challenge)) })) => {
                            if challenge.nonce.is_empty() || challenge.nonce.len() > limits::MAX_NONCE_BYTES {
                                tracing::warn!(%endpoint, len = challenge.nonce.len(), "ignoring a challenge with a malformed nonce");
                                None
                            } else {
                                tracing::debug!(%endpoint, "challenged; reporting fresh facts");
                                Some((self.facts.refresh()?, challenge.nonce))
                            }
                        }
                        Ok(Some(ApproverMessage { kind: None })) => None,
                        Ok(None) => break Err(SessionError::Closed),
                        Err(status) => break Err(SessionError::Stream(status)),
                    },
                }
            };
            if let Some((facts, nonce)) = due {
                let message = report(&facts, &mut sequence, nonce);
                tokio::select! {
                    () = stop.cancelled() => break Ok(SessionEnd::Stopped),
                    sent = requests.send(message) => if sent.is_err() { break Err(SessionError::Closed) },
                }
                heartbeat
                    .as_mut()
                    .reset(Instant::now() + self.timings.heartbeat_interval);
                // A refresh above may itself have published a change: it is sent.
                let latest = fact_changes.borrow_and_update().clone();
                queued = latest.filter(|latest| **latest != *facts);
            }
        };
        match ended {
            Err(error) if acked && started.elapsed() >= self.timings.heartbeat_interval => {
                tracing::warn!(%endpoint, %error, "attestation stream ended; reconnecting");
                Ok(SessionEnd::Healthy)
            }
            other => other,
        }
    }

    async fn connect(
        &self,
        endpoint: SocketAddr,
        identity: &ClientIdentity,
    ) -> Result<Channel, SessionError> {
        let ca = tokio::fs::read(&self.approver_ca)
            .await
            .map_err(|source| SessionError::Ca {
                path: self.approver_ca.clone(),
                source,
            })?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
            .domain_name(self.server_name.clone())
            .timeout(self.timings.connect_timeout);
        Endpoint::from_shared(format!("https://{endpoint}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(SessionError::Tls)?
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
        let max_age = Duration::from_secs(u64::from(ack.max_age_seconds.max(1)));
        self.readiness.acked(endpoint, max_age);
        let expected = identity.common_name.strip_prefix("system:node:");
        if expected != Some(ack.node_name.as_str()) {
            tracing::warn!(
                %endpoint,
                approver_sees = %ack.node_name,
                certificate = %identity.common_name,
                "the approver attributes our reports to an unexpected node"
            );
        }
        tracing::debug!(%endpoint, sequence = ack.sequence, replica = %ack.replica, ?max_age, "report acknowledged");
    }
}

fn report(facts: &NodeFacts, sequence: &mut u64, nonce: Vec<u8>) -> AgentMessage {
    *sequence += 1;
    AgentMessage {
        kind: Some(agent_message::Kind::Report(
            facts.to_report(*sequence, nonce),
        )),
    }
}
