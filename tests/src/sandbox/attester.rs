//! Loopback mode's stand-in for the agent: an in-process attesting client
//! that speaks the real protocol over the real mTLS channel with the node's
//! real kubelet client certificate, from the node's own loopback address,
//! and reports the facts the sandbox assigned to that node (one machine
//! cannot show each simulated node its own interfaces without namespaces).
//!
//! Like the agent it keeps one stream per approver replica, reports on
//! connect, every heartbeat and in answer to every challenge (nonce echoed),
//! and reconnects with capped exponential backoff and jitter.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use ipnet::IpNet;
use rubber_stamp_proto::limits;
use rubber_stamp_proto::sources;
use rubber_stamp_proto::v1::attestation_client::AttestationClient;
use rubber_stamp_proto::v1::{
    AgentMessage, ApproverMessage, FactSource, IpPrefix, NetworkInterface, NodeReport,
    agent_message, approver_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// What an attester says about its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedFacts {
    /// Hostname.
    pub hostname: String,
    /// Interfaces (name, addresses).
    pub interfaces: Vec<(String, Vec<IpNet>)>,
    /// Machine id (32 hex digits).
    pub machine_id: String,
    /// Boot id (UUID).
    pub boot_id: String,
}

/// How to reach the approver replicas.
#[derive(Clone, Debug)]
pub struct AttesterConfig {
    /// Every replica's attestation address.
    pub endpoints: Vec<SocketAddr>,
    /// The name their certificate must carry.
    pub server_name: String,
    /// The approver serving CA, PEM.
    pub approver_ca_pem: String,
    /// The node's client certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// The source address of every connection (the node's own address).
    pub source: IpAddr,
    /// Longest time between two reports.
    pub heartbeat: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// A running attester; stops when dropped.
#[derive(Debug)]
pub struct LoopbackAttester {
    stop: CancellationToken,
    acked: Arc<Mutex<BTreeSet<SocketAddr>>>,
    tasks: JoinSet<()>,
}

impl LoopbackAttester {
    /// Starts one stream per endpoint.
    pub fn start(config: AttesterConfig, facts: ReportedFacts) -> Self {
        let stop = CancellationToken::new();
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let mut tasks = JoinSet::new();
        let config = Arc::new(config);
        let facts = Arc::new(facts);
        for endpoint in config.endpoints.clone() {
            tasks.spawn(stream_forever(
                Arc::clone(&config),
                Arc::clone(&facts),
                endpoint,
                Arc::clone(&acked),
                stop.clone(),
            ));
        }
        Self { stop, acked, tasks }
    }

    /// The replicas that acknowledged a report on the current stream.
    pub fn acked_by(&self) -> BTreeSet<SocketAddr> {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops every stream and waits for them.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for LoopbackAttester {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("the approver closed the stream")]
    Closed,
}

async fn stream_forever(
    config: Arc<AttesterConfig>,
    facts: Arc<ReportedFacts>,
    endpoint: SocketAddr,
    acked: Arc<Mutex<BTreeSet<SocketAddr>>>,
    stop: CancellationToken,
) {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(config.backoff_max)
        .with_jitter()
        .without_max_times();
    let attempts = (|| stream_once(&config, &facts, endpoint, &acked, &stop))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|error: &StreamError, _| {
            acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&endpoint);
            tracing::debug!(%endpoint, %error, "loopback attester: reconnecting");
        });
    tokio::select! {
        () = stop.cancelled() => {}
        _ = attempts => {}
    }
}

/// One stream until it fails; `Ok` only when stopped.
async fn stream_once(
    config: &AttesterConfig,
    facts: &ReportedFacts,
    endpoint: SocketAddr,
    acked: &Mutex<BTreeSet<SocketAddr>>,
    stop: &CancellationToken,
) -> Result<(), StreamError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.approver_ca_pem))
        .identity(Identity::from_pem(&config.cert_pem, &config.key_pem))
        .domain_name(config.server_name.clone());
    let channel = Endpoint::from_shared(format!("https://{endpoint}"))?
        .tls_config(tls)?
        .local_address(Some(config.source))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = AttestationClient::new(channel)
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(4);
    let mut sequence = 1;
    // The channel is empty, so there is room.
    let _ = tx.try_send(message(facts, sequence, Vec::new()));
    let mut incoming = client.attest(ReceiverStream::new(rx)).await?.into_inner();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.tick().await;
    loop {
        let nonce = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = heartbeat.tick() => Vec::new(),
            received = incoming.message() => match received? {
                Some(ApproverMessage { kind: Some(approver_message::Kind::Ack(_)) }) => {
                    acked.lock().unwrap_or_else(PoisonError::into_inner).insert(endpoint);
                    continue;
                }
                Some(ApproverMessage { kind: Some(approver_message::Kind::Challenge(c)) }) => c.nonce,
                Some(ApproverMessage { kind: None }) => continue,
                None => return Err(StreamError::Closed),
            },
        };
        sequence += 1;
        if tx.send(message(facts, sequence, nonce)).await.is_err() {
            return Err(StreamError::Closed);
        }
    }
}

fn message(facts: &ReportedFacts, sequence: u64, nonce: Vec<u8>) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Report(NodeReport {
            hostname: facts.hostname.clone(),
            interfaces: facts
                .interfaces
                .iter()
                .map(|(name, addresses)| NetworkInterface {
                    name: name.clone(),
                    addresses: addresses
                        .iter()
                        .map(|net| IpPrefix::new(net.addr(), net.prefix_len()))
                        .collect(),
                })
                .collect(),
            machine_id: facts.machine_id.clone(),
            boot_id: facts.boot_id.clone(),
            agent_version: "sandbox-loopback-attester".to_owned(),
            nonce,
            sequence,
            sources: vec![FactSource::new(sources::INTERFACES, None)],
        })),
    }
}
