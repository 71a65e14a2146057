//! Simulated agents that run the agent's own session
//! ([`rubber_stamp_agent::session`]) with facts a test, the sandbox or a benchmark sets:
//! the same connection, reports, challenge answers, reconnects and backoff as on a node,
//! only the facts (and identity, and source address) come from elsewhere.
//!
//! - [`ScriptedFacts`]: a [`FactSource`] whose facts the owner sets, optionally unknown
//!   until released (an agent that is connected but has not reported yet).
//! - [`fixed_identity`]: a client certificate that never rotates; [`fixed_token`]: a
//!   ServiceAccount token that never rotates.
//! - [`Sessions`]: one session per approver endpoint, stopped when dropped; optionally with
//!   the agent's own proof listener ([`Sessions::start_with_proof`]).
//! - [`ScriptedAgent`]: the controller tests' agent, reporting when the test says so;
//!   [`ScriptedAgent::builder`] gives it a token, a source address or a proof listener.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use rubber_stamp_agent::config::Timings;
use rubber_stamp_agent::facts::{FactSource, Facts, FactsError, FactsRead, NodeFacts, normalise};
use rubber_stamp_agent::identity::{ClientIdentity, IdentityError};
use rubber_stamp_agent::proof::{FrameOutcome, ProofEvents, ProofLimits, ProofListener};
use rubber_stamp_agent::session::{
    ApproverCa, ReceiptDrop, SessionContext, SessionError, SessionEvents,
};
use rubber_stamp_proto::v1::Ack;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::channel::{ChannelPki, SERVER_NAME};
use crate::pki::PkiError;

/// Why a simulated agent could not start or report.
#[derive(Debug, thiserror::Error)]
pub enum SimulatedAgentError {
    /// Its certificate could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Its certificate is not a usable identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Its facts are not facts the agent would report.
    #[error(transparent)]
    Facts(#[from] FactsError),
    /// A replica did not acknowledge a report in time.
    #[error("a replica did not acknowledge the report within {0:?}")]
    Unacknowledged(Duration),
    /// Its proof listener could not bind its address.
    #[error("binding the proof listener to {addr}: {source}")]
    ProofListener {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A client identity that never changes (a certificate and its key, PEM), for
/// [`SessionContext::identity`].
pub fn fixed_identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<watch::Receiver<Option<Arc<ClientIdentity>>>, IdentityError> {
    let identity = ClientIdentity::from_pem(cert_pem.into(), key_pem.into())?;
    // The sender goes: a closed channel keeps its last identity for good.
    Ok(watch::channel(Some(Arc::new(identity))).1)
}

/// A ServiceAccount token that never changes, for [`SessionContext::identity`].
pub fn fixed_token(
    token: &str,
) -> Result<watch::Receiver<Option<Arc<ClientIdentity>>>, IdentityError> {
    let identity = ClientIdentity::from_token(token)?;
    Ok(watch::channel(Some(Arc::new(identity))).1)
}

/// A node's facts from a hostname and its interfaces, normalised as the agent normalises
/// what it reads.
pub fn node_facts(
    hostname: &str,
    interfaces: impl IntoIterator<Item = (String, Vec<IpNet>)>,
) -> Result<NodeFacts, FactsError> {
    normalise(
        hostname,
        interfaces.into_iter().map(|(name, nets)| {
            let addresses = nets.iter().map(|n| (n.addr(), n.prefix_len())).collect();
            (name, addresses)
        }),
    )
}

// === impl ScriptedFacts ===

/// Facts set by their owner. Cheap to clone; clones share the facts.
#[derive(Clone, Debug)]
pub struct ScriptedFacts {
    facts: Arc<Mutex<NodeFacts>>,
    known: watch::Sender<bool>,
}

impl ScriptedFacts {
    /// Facts a read returns at once.
    pub fn new(facts: NodeFacts) -> Self {
        Self {
            facts: Arc::new(Mutex::new(facts)),
            known: watch::channel(true).0,
        }
    }

    /// Facts a read waits for until [`release`](Self::release): a session connects and
    /// waits, as an agent would while its first read of the node takes its time.
    pub fn unknown_until_released(facts: NodeFacts) -> Self {
        let this = Self::new(facts);
        this.known.send_replace(false);
        this
    }

    /// Lets every read return the facts.
    pub fn release(&self) {
        self.known.send_replace(true);
    }

    /// Whether reads return at once.
    pub fn is_released(&self) -> bool {
        *self.known.borrow()
    }

    /// The facts of later reads.
    pub fn set(&self, facts: NodeFacts) {
        *self.facts.lock().unwrap_or_else(PoisonError::into_inner) = facts;
    }

    /// The facts reads return now.
    pub fn get(&self) -> NodeFacts {
        self.facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl FactSource for ScriptedFacts {
    fn read(&mut self) -> FactsRead<'_> {
        let mut known = self.known.subscribe();
        Box::pin(async move {
            // The sender lives in `self`: waiting cannot fail.
            let _ = known.wait_for(|known| *known).await;
            Ok(self.get())
        })
    }
}

// === impl Sessions ===

/// One session per approver endpoint, as the agent keeps; stopped when dropped.
#[derive(Debug)]
pub struct Sessions {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Sessions {
    /// Starts a session to every endpoint in `endpoints` with `context`, without a proof
    /// listener (reports say `proof_port` 0, as an agent before 0.4).
    pub fn start(context: &SessionContext, endpoints: &[SocketAddr]) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for endpoint in endpoints {
            tasks.spawn(context.clone().run(*endpoint, stop.child_token()));
        }
        Self { stop, tasks }
    }

    /// Like [`start`](Self::start), serving the agent's proof listener `proof` (telling
    /// `events` of every connection to it) as the agent does: reports carry its port and
    /// every session passes its receipts on to a replica whose last Ack accepts them.
    pub fn start_with_proof(
        context: &SessionContext,
        endpoints: &[SocketAddr],
        proof: ProofListener,
        events: Arc<dyn ProofEvents>,
    ) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let feed = proof.feed();
        tasks.spawn(proof.serve(events, stop.child_token()));
        for endpoint in endpoints {
            tasks.spawn(context.clone().run_with_proof(
                *endpoint,
                Some(feed.clone()),
                stop.child_token(),
            ));
        }
        Self { stop, tasks }
    }

    /// Stops every session (their streams close) and waits for them.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// === impl ScriptedAgent ===

/// The scripted agent's timings: no heartbeat within a test (reports come when the test
/// says), fast reconnects.
fn scripted_timings() -> Timings {
    let never = Duration::from_secs(3600);
    Timings {
        poll_interval: never,
        heartbeat_interval: never,
        resolve_interval: never,
        identity_poll_interval: never,
        connect_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
    }
}

/// How long [`ScriptedAgent::report`] waits for every replica's Ack.
const ACK_WITHIN: Duration = Duration::from_secs(10);

/// Reports kept per stream to match Acks against (a test reports a handful at a time).
const SENT_KEPT: usize = 16;

/// What a scripted agent's sessions did: challenges answered, and per replica the
/// reports handed to its current stream and the highest sequence it acknowledged; what
/// became of the connections to its proof listener and of the receipts.
#[derive(Debug, Default)]
struct Progress {
    challenges: AtomicU64,
    streams: watch::Sender<Streams>,
    proof: watch::Sender<ProofProgress>,
}

/// What became of a scripted agent's proof probes and receipts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProofProgress {
    /// Connections to the proof listener, by outcome.
    pub frames: BTreeMap<FrameOutcome, u64>,
    /// Receipts handed to a stream, by replica.
    pub sent: BTreeMap<SocketAddr, u64>,
    /// Receipts not sent because the replica's last Ack did not accept them.
    pub not_accepted: u64,
    /// Receipts a stream lost by falling behind.
    pub lagged: u64,
}

impl ProofProgress {
    /// Connections that ended with `outcome`.
    pub fn frames(&self, outcome: FrameOutcome) -> u64 {
        self.frames.get(&outcome).copied().unwrap_or(0)
    }

    /// Receipts handed to any replica's stream.
    pub fn sent(&self) -> u64 {
        self.sent.values().sum()
    }
}

impl ProofEvents for Progress {
    fn frame(&self, outcome: FrameOutcome) {
        self.proof
            .send_modify(|proof| *proof.frames.entry(outcome).or_default() += 1);
    }
}

#[derive(Debug, Default)]
struct Streams {
    /// Counts every report handed to any stream, so a wait can ask for reports sent
    /// after it began.
    tick: u64,
    by_endpoint: HashMap<SocketAddr, StreamProgress>,
}

#[derive(Debug, Default)]
struct StreamProgress {
    sent: VecDeque<Sent>,
    acked: u64,
}

#[derive(Debug)]
struct Sent {
    tick: u64,
    sequence: u64,
    facts: NodeFacts,
}

impl SessionEvents for Progress {
    fn reported(&self, endpoint: SocketAddr, sequence: u64, facts: &NodeFacts) {
        self.streams.send_modify(|streams| {
            streams.tick += 1;
            let tick = streams.tick;
            let stream = streams.by_endpoint.entry(endpoint).or_default();
            if stream.sent.len() == SENT_KEPT {
                stream.sent.pop_front();
            }
            stream.sent.push_back(Sent {
                tick,
                sequence,
                facts: facts.clone(),
            });
        });
    }

    fn acknowledged(&self, endpoint: SocketAddr, ack: &Ack) {
        self.streams.send_modify(|streams| {
            let stream = streams.by_endpoint.entry(endpoint).or_default();
            stream.acked = stream.acked.max(ack.sequence);
        });
    }

    fn challenged(&self, _: SocketAddr) {
        self.challenges.fetch_add(1, Ordering::SeqCst);
    }

    fn receipt_sent(&self, endpoint: SocketAddr) {
        self.proof
            .send_modify(|proof| *proof.sent.entry(endpoint).or_default() += 1);
    }

    fn receipts_dropped(&self, _: SocketAddr, reason: ReceiptDrop, count: u64) {
        self.proof.send_modify(|proof| match reason {
            ReceiptDrop::NotAccepted => proof.not_accepted += count,
            ReceiptDrop::Lagged => proof.lagged += count,
        });
    }

    fn ended(&self, endpoint: SocketAddr, _: Option<&SessionError>) {
        // The next stream numbers its reports from 1 again.
        self.streams.send_modify(|streams| {
            streams.by_endpoint.remove(&endpoint);
        });
    }
}

impl Streams {
    /// Whether `endpoint`'s current stream acknowledged a report of `facts` handed to
    /// it after tick `since`.
    fn acknowledged(&self, endpoint: &SocketAddr, since: u64, facts: &NodeFacts) -> bool {
        self.by_endpoint.get(endpoint).is_some_and(|stream| {
            stream.sent.iter().any(|sent| {
                sent.tick > since && sent.sequence <= stream.acked && sent.facts == *facts
            })
        })
    }
}

/// A node's agent as the controller tests drive it: the agent's session to every replica,
/// with a node certificate from the cluster CA and the facts the test sets, `eth0` with
/// the test's addresses and `lo` with `127.0.0.1/8` (real agents on one machine would all
/// report the same interfaces). It connects at once and reports first when the test calls
/// [`report`](Self::report); it answers every challenge with the facts set at that moment.
///
/// By default it runs no proof listener and reports `proof_port` 0, as an agent before 0.4;
/// [`ScriptedAgentBuilder::proof_listener`] runs the agent's own.
#[derive(Debug)]
pub struct ScriptedAgent {
    node: String,
    script: ScriptedFacts,
    facts: Facts,
    progress: Arc<Progress>,
    approvers: Vec<SocketAddr>,
    reported: AtomicBool,
    proof_address: Option<SocketAddr>,
    sessions: Sessions,
}

/// How a [`ScriptedAgent`] connects ([`ScriptedAgent::builder`]): the node's certificate
/// or a token, the kernel's source address or one of the test's, a proof listener or none.
#[derive(Debug)]
pub struct ScriptedAgentBuilder<'a> {
    pki: &'a ChannelPki,
    node: String,
    approvers: Vec<SocketAddr>,
    addresses: Vec<(IpAddr, u32)>,
    token: Option<String>,
    source: Option<IpAddr>,
    proof: Option<(SocketAddr, ProofLimits)>,
}

impl ScriptedAgentBuilder<'_> {
    /// Attests with a ServiceAccount `token` instead of the node's certificate: which node
    /// the approver attributes the reports to is what the token's review says, whatever
    /// hostname the facts carry.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Connects to the replicas from `source` (e.g. the node's own loopback address
    /// `127.0.0.3`, so that several simulated nodes share one machine).
    pub fn source_address(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Runs the agent's proof listener on `bind` (e.g. `127.0.0.3:10273` or `[::1]:10273`;
    /// port 0: any), with the agent's limits: reports carry its port, and every probe frame
    /// it receives becomes a receipt on each stream whose replica accepts receipts.
    pub fn proof_listener(self, bind: SocketAddr) -> Self {
        self.proof_listener_with(bind, ProofLimits::DEFAULT)
    }

    /// [`proof_listener`](Self::proof_listener) with other limits (a shorter read timeout,
    /// a smaller receipt burst).
    pub fn proof_listener_with(mut self, bind: SocketAddr, limits: ProofLimits) -> Self {
        self.proof = Some((bind, limits));
        self
    }

    /// Binds the proof listener, if any, and starts the sessions. Nothing is reported yet.
    pub async fn connect(self) -> Result<ScriptedAgent, SimulatedAgentError> {
        let identity = match &self.token {
            Some(token) => fixed_token(token)?,
            None => {
                let leaf = self.pki.node(&self.node)?;
                fixed_identity(&leaf.cert_pem, &leaf.key_pem)?
            }
        };
        let proof = match self.proof {
            Some((addr, limits)) => Some(
                ProofListener::bind(addr, limits)
                    .map_err(|source| SimulatedAgentError::ProofListener { addr, source })?,
            ),
            None => None,
        };
        ScriptedAgent::start(self, identity, proof)
    }
}

impl ScriptedAgent {
    /// An agent for every replica at `approvers` as `node` (hostname = node name), with
    /// `addresses` (and prefix lengths) on `eth0`, attesting with the node's certificate
    /// from `pki`, no proof listener; [`ScriptedAgentBuilder::connect`] starts it.
    pub fn builder<'a>(
        pki: &'a ChannelPki,
        node: &str,
        approvers: &[SocketAddr],
        addresses: &[(IpAddr, u32)],
    ) -> ScriptedAgentBuilder<'a> {
        ScriptedAgentBuilder {
            pki,
            node: node.to_owned(),
            approvers: approvers.to_vec(),
            addresses: addresses.to_vec(),
            token: None,
            source: None,
            proof: None,
        }
    }

    /// Connects to every replica at `approvers` as `node` (hostname = node name), with
    /// `addresses` (and prefix lengths) on `eth0`. Nothing is reported yet.
    pub async fn connect(
        pki: &ChannelPki,
        node: &str,
        approvers: &[SocketAddr],
        addresses: &[(IpAddr, u32)],
    ) -> Result<Self, SimulatedAgentError> {
        Self::builder(pki, node, approvers, addresses)
            .connect()
            .await
    }

    /// Like [`connect`](Self::connect), attesting with a ServiceAccount `token` instead of
    /// the node's certificate: which node the approver attributes the reports to is what the
    /// token's review says, whatever `hostname` the facts carry.
    pub async fn connect_with_token(
        pki: &ChannelPki,
        hostname: &str,
        approvers: &[SocketAddr],
        addresses: &[(IpAddr, u32)],
        token: &str,
    ) -> Result<Self, SimulatedAgentError> {
        Self::builder(pki, hostname, approvers, addresses)
            .token(token)
            .connect()
            .await
    }

    fn start(
        built: ScriptedAgentBuilder<'_>,
        identity: watch::Receiver<Option<Arc<ClientIdentity>>>,
        proof: Option<ProofListener>,
    ) -> Result<Self, SimulatedAgentError> {
        let ScriptedAgentBuilder {
            pki,
            node,
            approvers,
            addresses,
            source,
            ..
        } = built;
        let script = ScriptedFacts::unknown_until_released(Self::facts_of(&node, &addresses)?);
        let facts = Facts::new(script.clone());
        let progress = Arc::new(Progress::default());
        let context = SessionContext {
            server_name: SERVER_NAME.to_owned(),
            approver_ca: ApproverCa::Pem(pki.serving.cert_pem().as_bytes().into()),
            timings: scripted_timings(),
            identity,
            facts: facts.clone(),
            events: Arc::clone(&progress) as Arc<dyn SessionEvents>,
            local_address: source,
            stagger_first_heartbeat: false,
        };
        let proof_address = proof.as_ref().map(ProofListener::local_addr);
        let sessions = match proof {
            Some(proof) => Sessions::start_with_proof(
                &context,
                &approvers,
                proof,
                Arc::clone(&progress) as Arc<dyn ProofEvents>,
            ),
            None => Sessions::start(&context, &approvers),
        };
        Ok(Self {
            node,
            sessions,
            script,
            facts,
            progress,
            approvers,
            reported: AtomicBool::new(false),
            proof_address,
        })
    }

    fn facts_of(node: &str, addresses: &[(IpAddr, u32)]) -> Result<NodeFacts, FactsError> {
        let eth0 = addresses
            .iter()
            .filter_map(|(ip, prefix)| IpNet::new(*ip, u8::try_from(*prefix).ok()?).ok())
            .collect();
        let lo = IpNet::new(IpAddr::from([127, 0, 0, 1]), 8)
            .into_iter()
            .collect();
        node_facts(node, [("eth0".to_owned(), eth0), ("lo".to_owned(), lo)])
    }

    /// Lets the sessions read their facts and open their streams, without waiting for an
    /// acknowledgement (for an agent whose streams the approver is expected to refuse).
    pub fn release(&self) {
        self.script.release();
    }

    /// Reports the current facts to every replica — the first call lets the sessions
    /// send their first report, later ones make every stream report again — and returns
    /// once every replica acknowledged (stored) a report of these facts sent after the
    /// call began, so that what a test does next happens after.
    pub async fn report(&self) -> Result<(), SimulatedAgentError> {
        let expected = self.script.get();
        let since = self.progress.streams.borrow().tick;
        if self.reported.swap(true, Ordering::SeqCst) {
            self.facts.report_now().await?;
        } else {
            self.script.release();
        }
        let mut streams = self.progress.streams.subscribe();
        let all_acked = streams.wait_for(|streams| {
            self.approvers
                .iter()
                .all(|endpoint| streams.acknowledged(endpoint, since, &expected))
        });
        match tokio::time::timeout(ACK_WITHIN, all_acked).await {
            // The sender lives in `self.progress`: waiting cannot fail.
            Ok(_) => Ok(()),
            Err(_) => Err(SimulatedAgentError::Unacknowledged(ACK_WITHIN)),
        }
    }

    /// Changes the facts of later reports and challenge answers.
    pub fn set_addresses(&self, addresses: &[(IpAddr, u32)]) {
        match Self::facts_of(&self.node, addresses) {
            Ok(facts) => self.script.set(facts),
            // The node name made facts at connect; it cannot fail now.
            Err(error) => tracing::warn!(node = %self.node, %error, "keeping the facts"),
        }
    }

    /// How many challenges the agent answered.
    pub fn challenges_answered(&self) -> u64 {
        self.progress.challenges.load(Ordering::SeqCst)
    }

    /// Where its proof listener is bound (`None`: it runs none and reports `proof_port` 0).
    pub fn proof_address(&self) -> Option<SocketAddr> {
        self.proof_address
    }

    /// What became of the probes to its proof listener and of their receipts so far.
    pub fn proof_progress(&self) -> ProofProgress {
        self.progress.proof.borrow().clone()
    }

    /// Waits until `done` holds of its proof progress, for at most `within`; the progress
    /// then, or `None` on timeout.
    pub async fn wait_for_proof(
        &self,
        within: Duration,
        mut done: impl FnMut(&ProofProgress) -> bool,
    ) -> Option<ProofProgress> {
        let mut proof = self.progress.proof.subscribe();
        match tokio::time::timeout(within, proof.wait_for(|p| done(p))).await {
            // The sender lives in `self.progress`: waiting cannot fail.
            Ok(Ok(progress)) => Some(progress.clone()),
            _ => None,
        }
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops its sessions and waits for them.
    pub async fn stop(self) {
        self.sessions.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rubber_stamp_proto::proof::NONCE_BYTES;

    use super::*;
    use crate::raw;

    #[tokio::test]
    async fn a_scripted_agent_runs_the_agents_proof_listener_when_asked() {
        let pki = ChannelPki::new().expect("pki");
        let addresses = [(IpAddr::from([127, 0, 0, 3]), 8)];
        // No replica: the listener runs, no stream takes its receipts.
        let plain = ScriptedAgent::builder(&pki, "node-a", &[], &addresses)
            .connect()
            .await
            .expect("agent");
        assert_eq!(plain.proof_address(), None);
        let agent = ScriptedAgent::builder(&pki, "node-b", &[], &addresses)
            .proof_listener(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 3), 0)))
            .connect()
            .await
            .expect("agent");
        let bound = agent.proof_address().expect("a proof listener");
        assert_eq!(bound.ip(), IpAddr::from([127, 0, 0, 3]));
        assert_ne!(bound.port(), 0);
        let written = raw::probe(bound, Some(IpAddr::from([127, 0, 0, 9])), &[1; NONCE_BYTES])
            .await
            .expect("probe");
        assert!(written.is_empty(), "the agent writes nothing back");
        let progress = agent
            .wait_for_proof(ACK_WITHIN, |p| p.frames(FrameOutcome::Received) == 1)
            .await
            .expect("the probe counted");
        assert_eq!(progress.sent(), 0, "no stream to send it on");
        // Only that address: another loopback address on the port finds nothing.
        assert!(std::net::TcpStream::connect((Ipv4Addr::new(127, 0, 0, 4), bound.port())).is_err());
        agent.stop().await;
        plain.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_facts_are_read_once_released_and_as_last_set() {
        let n1 = node_facts(
            "n1",
            [("lo".to_owned(), vec!["127.0.0.1/8".parse().expect("net")])],
        )
        .expect("facts");
        let mut n2 = n1.clone();
        n2.hostname = "n2".to_owned();
        let script = ScriptedFacts::unknown_until_released(n1.clone());
        let facts = Facts::new(script.clone());
        let read = tokio::spawn({
            let facts = facts.clone();
            async move { facts.refresh().await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(
            !read.is_finished(),
            "a read waits until the facts are released"
        );
        script.release();
        assert_eq!(*read.await.expect("joined").expect("read"), n1);
        script.set(n2.clone());
        assert_eq!(*facts.refresh().await.expect("read"), n2);
    }
}
