//! Loopback mode's agent: the agent's own session code
//! ([`rubber_stamp_agent::session`]) in this process, over the real mTLS channel with the
//! node's real kubelet client certificate, from the node's own loopback address,
//! reporting the facts the sandbox assigned to that node (one machine cannot show each
//! simulated node its own interfaces without namespaces). Everything else — one stream
//! per replica, reports on connect, every heartbeat and in answer to every challenge,
//! reconnects with capped exponential backoff and jitter — is the agent's.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use rubber_stamp_agent::cloud::CloudFacts;
use rubber_stamp_agent::config::Timings;
use rubber_stamp_agent::facts::Facts;
use rubber_stamp_agent::session::{ApproverCa, SessionContext, SessionError, SessionEvents};
use rubber_stamp_proto::v1::Ack;
use rubber_stamp_testkit::agent::{
    ScriptedFacts, Sessions, SimulatedAgentError, fixed_identity, fixed_token, node_facts,
};

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
    /// What the node's cloud metadata states (cloud nodes), as the agent reports it.
    pub cloud: Option<CloudFacts>,
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
    /// A ServiceAccount token to attest with instead of the certificate.
    pub token: Option<String>,
    /// The source address of every connection (the node's own address).
    pub source: IpAddr,
    /// Longest time between two reports.
    pub heartbeat: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// HTTP/2 keepalive interval (the timeout is half of it, as the sandbox's agents have).
    pub keepalive: Duration,
}

/// The replicas whose current stream acknowledged a report.
#[derive(Debug, Default)]
struct AckedBy(Mutex<BTreeSet<SocketAddr>>);

impl SessionEvents for AckedBy {
    fn acknowledged(&self, endpoint: SocketAddr, _: &Ack) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint);
    }

    fn ended(&self, endpoint: SocketAddr, error: Option<&SessionError>) {
        if let Some(error) = error {
            tracing::debug!(%endpoint, %error, "loopback attester: reconnecting");
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&endpoint);
    }
}

/// A running attester; stops when dropped.
#[derive(Debug)]
pub struct LoopbackAttester {
    acked: Arc<AckedBy>,
    sessions: Sessions,
}

impl LoopbackAttester {
    /// Starts one stream per endpoint.
    pub fn start(
        config: AttesterConfig,
        facts: ReportedFacts,
    ) -> Result<Self, SimulatedAgentError> {
        let mut node = node_facts(&facts.hostname, facts.interfaces)?;
        node.machine_id = Some(facts.machine_id).filter(|id| !id.is_empty());
        node.boot_id = Some(facts.boot_id).filter(|id| !id.is_empty());
        node.cloud = facts.cloud;
        let acked = Arc::new(AckedBy::default());
        let context = SessionContext {
            server_name: config.server_name,
            approver_ca: ApproverCa::Pem(config.approver_ca_pem.as_bytes().into()),
            timings: Timings {
                poll_interval: config.heartbeat,
                heartbeat_interval: config.heartbeat,
                resolve_interval: config.heartbeat,
                identity_poll_interval: config.heartbeat,
                connect_timeout: Duration::from_secs(5),
                backoff_min: Duration::from_millis(100),
                backoff_max: config.backoff_max,
                keepalive_interval: config.keepalive,
                keepalive_timeout: config.keepalive / 2,
            },
            identity: match &config.token {
                Some(token) => fixed_token(token)?,
                None => fixed_identity(&config.cert_pem, &config.key_pem)?,
            },
            facts: Facts::new(ScriptedFacts::new(node)),
            events: Arc::clone(&acked) as Arc<dyn SessionEvents>,
            local_address: Some(config.source),
            stagger_first_heartbeat: false,
        };
        Ok(Self {
            sessions: Sessions::start(&context, &config.endpoints),
            acked,
        })
    }

    /// The replicas that acknowledged a report on the current stream.
    pub fn acked_by(&self) -> BTreeSet<SocketAddr> {
        self.acked
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops every stream and waits for them.
    pub async fn stop(self) {
        self.sessions.stop().await;
    }
}
