//! Simulated nodes: each has its own client certificate, its own loopback source address
//! (`127.1.x.y`, the agent's peer address, reported on `lo`) and its own node address
//! (`10.x.y.z` on `eth0`, the IP SAN of its serving CSR). Its agent is the agent's own
//! session code (one stream to every approver replica, its reports, challenge answers,
//! reconnects and backoff) with those facts and that source address; its kubelet
//! creates its serving CSR through the API server as the node (`system:node:<name>`,
//! `system:nodes`).
//!
//! A process may hold 20,000 open files on the development machines (no
//! `CAP_SYS_RESOURCE` to raise the hard limit), so the agents run in worker processes
//! ([`Fleet`], each this binary's hidden `fleet` subcommand) of at most
//! [`STREAMS_PER_WORKER`] streams, and the kubelets authenticate with per-node bearer
//! tokens over a few multiplexed HTTP/2 connections instead of one TLS connection each:
//! the API server sees the same identity either way.
//!
//! With `--proof required` every simulated agent also serves the agent's own proof
//! listener ([`ProofListener`], default limits) on its node address and the proof port,
//! and its sessions pass the listener's receipts on, as `rubber-stamp-agent` does: one more
//! descriptor per node, and one per probe while it is open. A worker holds at most
//! [`STREAMS_PER_WORKER`] streams plus a listener per node (12,000 descriptors with two
//! replicas), within the 20,000 it may open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::IpNet;
use rubber_stamp_agent::config::Timings;
use rubber_stamp_agent::facts::{Facts, NodeFacts};
use rubber_stamp_agent::proof::{FrameOutcome, ProofEvents, ProofLimits, ProofListener};
use rubber_stamp_agent::session::{
    ApproverCa, ReceiptDrop, SessionContext, SessionError, SessionEvents,
};
use rubber_stamp_e2e::channel::SERVER_NAME;
use rubber_stamp_kubelet_sim::{NodeIdentity, ServingRequest};
use rubber_stamp_proto::v1::Ack;
use rubber_stamp_testkit::agent::{ScriptedFacts, fixed_identity, fixed_token, node_facts};
use rubber_stamp_testkit::pki::{Ca, Leaf};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The agent's ServiceAccount and DaemonSet (deploy/base/agent.yaml).
const AGENT: &str = "rubber-stamp-agent";

/// Token mode: a Pod of the agent DaemonSet on every node named in `nodes` (straight into
/// the store), and one TokenRequest per node through the API, bound to that Pod, as the
/// kubelet requests them. The tokens, in the order of `nodes`.
pub(crate) async fn issue_tokens(
    bed: &rubber_stamp_e2e::controller::ControllerBed,
    nodes: &[&str],
) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt as _;
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use rubber_stamp_e2e::controller::APPROVER_NAMESPACE;

    // The agent's ServiceAccount comes with the shipped manifests the bed loads.
    let objects = bed.cluster.objects();
    let mut pods = Vec::with_capacity(nodes.len());
    for node in nodes {
        pods.push(objects.create(&Pod {
            metadata: ObjectMeta {
                name: Some(format!("{AGENT}-{node}")),
                namespace: Some(APPROVER_NAMESPACE.to_owned()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "DaemonSet".to_owned(),
                    name: AGENT.to_owned(),
                    uid: "00000000-0000-4000-8000-00000000be9c".to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some((*node).to_owned()),
                service_account_name: Some(AGENT.to_owned()),
                containers: vec![Container {
                    name: "agent".to_owned(),
                    image: Some("rubber-stamp-agent".to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        })?);
    }
    let admin = bed.cluster.client(&bed.cluster.admin()?).await?;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(admin, APPROVER_NAMESPACE);
    let requests = pods.iter().map(|pod| {
        let accounts = accounts.clone();
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["rubber-stamp".to_owned()],
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        async move {
            let issued = accounts
                .create_token_request(AGENT, &kube::api::PostParams::default(), &request)
                .await?;
            anyhow::Ok(
                issued
                    .status
                    .context("a TokenRequest without status")?
                    .token,
            )
        }
    });
    futures::stream::iter(requests)
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The API path kubelets create CSRs on.
const CSR_PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// Most attestation streams one worker process keeps (each is a file descriptor).
pub(crate) const STREAMS_PER_WORKER: usize = 8_000;

/// One simulated node.
#[derive(Clone, Debug)]
pub(crate) struct SimNode {
    /// Its index in the fleet.
    pub(crate) index: u32,
    /// Node name (`bench-node-00042`).
    pub(crate) name: String,
    /// Loopback address its connections come from (its agent's peer address).
    pub(crate) source: Ipv4Addr,
    /// Its address on `eth0`: the Node's InternalIP and its CSR's IP SAN.
    pub(crate) address: Ipv4Addr,
}

impl SimNode {
    /// Node `index`.
    pub(crate) fn new(index: u32) -> anyhow::Result<Self> {
        if index >= 0x00ff_0000 {
            bail!("at most {} simulated nodes", 0x00ff_0000);
        }
        Ok(Self {
            index,
            name: format!("bench-node-{index:05}"),
            source: Ipv4Addr::from(0x7f01_0100 + index),
            address: Ipv4Addr::from(0x0a00_0100 + index),
        })
    }

    /// The bearer token its kubelet authenticates with.
    pub(crate) fn token(&self) -> String {
        format!("bench-kubelet-{}", self.index)
    }

    /// Its agent's facts: `eth0` with the node address, `lo` with the source address.
    fn facts(&self) -> anyhow::Result<NodeFacts> {
        let on = |ip: Ipv4Addr| IpNet::new(IpAddr::V4(ip), 8).into_iter().collect();
        Ok(node_facts(
            &self.name,
            [
                ("eth0".to_owned(), on(self.address)),
                ("lo".to_owned(), on(self.source)),
            ],
        )?)
    }

    /// The serving CSR this node's kubelet creates, as the JSON body of the POST, and the
    /// request's PEM.
    pub(crate) fn csr(&self) -> anyhow::Result<(Bytes, Vec<u8>)> {
        let identity = NodeIdentity::new(&self.name, &self.name, &[IpAddr::V4(self.address)])?;
        let request = ServingRequest::generate(&identity)?;
        Ok((
            Bytes::from(serde_json::to_vec(&request.object(None))?),
            request.csr_pem().as_bytes().to_vec(),
        ))
    }
}

/// An agent's node, its kubelet client certificate, and in token mode its token.
#[derive(Debug)]
pub(crate) struct AgentNode {
    node: SimNode,
    leaf: Leaf,
    token: Option<String>,
}

// === agents ===

/// How simulated agents behave: the real agent's defaults unless a scenario says otherwise.
#[derive(Clone, Debug)]
pub(crate) struct AgentTimings {
    /// Report every this long (staggered: the first after a random part of it).
    pub(crate) heartbeat: Duration,
    /// HTTP/2 keepalive pings.
    pub(crate) keepalive_interval: Duration,
    /// How long a ping may go unanswered.
    pub(crate) keepalive_timeout: Duration,
    /// First reconnect delay (doubles, with jitter).
    pub(crate) backoff_min: Duration,
    /// Longest reconnect delay.
    pub(crate) backoff_max: Duration,
    /// TCP + TLS connect timeout.
    pub(crate) connect_timeout: Duration,
}

impl Default for AgentTimings {
    /// `rubber-stamp-agent`'s defaults.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl AgentTimings {
    /// The session's timings (it neither polls nor resolves: those are unused).
    fn session(&self) -> Timings {
        Timings {
            poll_interval: self.heartbeat,
            heartbeat_interval: self.heartbeat,
            resolve_interval: self.heartbeat,
            identity_poll_interval: self.heartbeat,
            connect_timeout: self.connect_timeout,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
        }
    }
}

/// Counters of one approver endpoint, shared by every simulated agent streaming to it.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters {
    /// Streams whose first report was acknowledged and that are still open.
    pub(crate) live: AtomicUsize,
    /// Reports acknowledged.
    pub(crate) acks: AtomicUsize,
    /// Challenges answered.
    pub(crate) challenges: AtomicUsize,
    /// Connection or stream failures.
    pub(crate) failures: AtomicUsize,
    /// Proof receipts handed to streams to this endpoint.
    pub(crate) receipts: AtomicUsize,
    /// Proof receipts not sent to this endpoint (not accepted, or the stream lagged).
    pub(crate) receipts_dropped: AtomicUsize,
}

/// What became of the connections to the fleet's proof listeners, by [`FrameOutcome`].
#[derive(Debug, Default)]
pub(crate) struct FrameCounters {
    /// Whole frames whose receipt went to the streams.
    received: AtomicUsize,
    /// Wrong magic or closed early.
    malformed: AtomicUsize,
    /// No whole frame within the read timeout.
    timeout: AtomicUsize,
    /// Past the agent's receipt rate.
    rate_limited: AtomicUsize,
}

impl ProofEvents for FrameCounters {
    fn frame(&self, outcome: FrameOutcome) {
        let counter = match outcome {
            FrameOutcome::Received => &self.received,
            FrameOutcome::Malformed => &self.malformed,
            FrameOutcome::Timeout => &self.timeout,
            FrameOutcome::RateLimited => &self.rate_limited,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One node's session to one endpoint: counts into the endpoint's counters, and holds the
/// permit of its first connection until that is acknowledged or fails.
#[derive(Debug)]
struct StreamCounters {
    counters: Arc<EndpointCounters>,
    live: AtomicBool,
    first_connect: Mutex<Option<OwnedSemaphorePermit>>,
}

impl StreamCounters {
    fn release_permit(&self) {
        self.first_connect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl SessionEvents for StreamCounters {
    fn acknowledged(&self, _: SocketAddr, _: &Ack) {
        self.counters.acks.fetch_add(1, Ordering::Relaxed);
        if !self.live.swap(true, Ordering::SeqCst) {
            self.release_permit();
            self.counters.live.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn challenged(&self, _: SocketAddr) {
        self.counters.challenges.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, _: SocketAddr, error: Option<&SessionError>) {
        self.release_permit();
        if self.live.swap(false, Ordering::SeqCst) {
            self.counters.live.fetch_sub(1, Ordering::SeqCst);
        }
        if error.is_some() {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn receipt_sent(&self, _: SocketAddr) {
        self.counters.receipts.fetch_add(1, Ordering::Relaxed);
    }

    fn receipts_dropped(&self, _: SocketAddr, _: ReceiptDrop, count: u64) {
        self.counters.receipts_dropped.fetch_add(
            usize::try_from(count).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Simulated agents: the agent's session per node and approver endpoint, one task each.
#[derive(Debug)]
pub(crate) struct SimAgents {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    counters: Vec<Arc<EndpointCounters>>,
    frames: Arc<FrameCounters>,
}

impl SimAgents {
    /// Starts an agent for every node in `nodes`, streaming to every endpoint.
    /// `initial_concurrency` bounds the handshakes of the first connections (the harness
    /// attaching the fleet); later reconnects are unbounded, as real agents are. With
    /// `proof_port`, each agent serves its proof listener on its node address and that
    /// port and passes its receipts to every stream (its reports still say `proof_port`
    /// 0: the agent reports the port of a wildcard listener only, the one kind whose
    /// refusals count as evidence); without, it runs none.
    pub(crate) fn start(
        serving_ca_pem: &str,
        nodes: &[AgentNode],
        endpoints: &[SocketAddr],
        timings: &AgentTimings,
        initial_concurrency: usize,
        proof_port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let approver_ca = ApproverCa::Pem(serving_ca_pem.as_bytes().into());
        let first_connect = Arc::new(Semaphore::new(initial_concurrency.max(1)));
        let counters: Vec<Arc<EndpointCounters>> = endpoints
            .iter()
            .map(|_| Arc::new(EndpointCounters::default()))
            .collect();
        let session_timings = timings.session();
        let frames = Arc::new(FrameCounters::default());
        for node in nodes {
            // Shared by the node's streams, as in the agent.
            let identity = match &node.token {
                Some(token) => fixed_token(token)?,
                None => fixed_identity(&node.leaf.cert_pem, &node.leaf.key_pem)?,
            };
            let facts = Facts::new(ScriptedFacts::new(node.node.facts()?));
            let feed = match proof_port {
                Some(port) => {
                    let bind = SocketAddr::new(IpAddr::V4(node.node.address), port);
                    let listener = ProofListener::bind(bind, ProofLimits::DEFAULT)
                        .with_context(|| format!("binding the proof listener on {bind}"))?;
                    let feed = listener.feed();
                    tasks.spawn(listener.serve(
                        Arc::clone(&frames) as Arc<dyn ProofEvents>,
                        stop.child_token(),
                    ));
                    Some(feed)
                }
                None => None,
            };
            for (endpoint, counters) in endpoints.iter().zip(&counters) {
                let events = Arc::new(StreamCounters {
                    counters: Arc::clone(counters),
                    live: AtomicBool::new(false),
                    first_connect: Mutex::new(None),
                });
                let context = SessionContext {
                    server_name: SERVER_NAME.to_owned(),
                    approver_ca: approver_ca.clone(),
                    timings: session_timings,
                    identity: identity.clone(),
                    facts: facts.clone(),
                    events: Arc::clone(&events) as Arc<dyn SessionEvents>,
                    local_address: Some(IpAddr::V4(node.node.source)),
                    // Real agents start at random moments; the fleet attaches within
                    // seconds.
                    stagger_first_heartbeat: true,
                };
                let (endpoint, first_connect, stop, feed) = (
                    *endpoint,
                    Arc::clone(&first_connect),
                    stop.child_token(),
                    feed.clone(),
                );
                tasks.spawn(async move {
                    let permit = tokio::select! {
                        () = stop.cancelled() => return,
                        permit = first_connect.acquire_owned() => permit.ok(),
                    };
                    *events
                        .first_connect
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = permit;
                    context.run_with_proof(endpoint, feed, stop).await;
                });
            }
        }
        Ok(Self {
            stop,
            tasks,
            counters,
            frames,
        })
    }

    /// The counters of endpoint `i` (in the order given to [`start`](Self::start)).
    pub(crate) fn counters(&self, i: usize) -> &EndpointCounters {
        &self.counters[i]
    }

    /// Stops every agent (their streams close) and waits for them.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

// === workers ===

/// What a worker reports on stdout, once a second, per endpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerStatus {
    /// Live (acknowledged, open) streams per endpoint.
    pub(crate) live: Vec<usize>,
    /// Reports acknowledged per endpoint.
    pub(crate) acks: Vec<usize>,
    /// Challenges answered per endpoint.
    pub(crate) challenges: Vec<usize>,
    /// Stream failures per endpoint.
    pub(crate) failures: Vec<usize>,
    /// Proof receipts handed to streams, per endpoint.
    #[serde(default)]
    pub(crate) receipts: Vec<usize>,
    /// Proof receipts dropped, per endpoint.
    #[serde(default)]
    pub(crate) receipts_dropped: Vec<usize>,
    /// Connections to the proof listeners by outcome: received, malformed, timeout,
    /// rate-limited.
    #[serde(default)]
    pub(crate) frames: [usize; 4],
}

/// The `fleet` subcommand: the agents of nodes `first..first + count`, streaming to every
/// endpoint, until stdin closes.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Cluster CA certificate (PEM) that issues the node certificates.
    #[arg(long)]
    pub(crate) ca_cert: PathBuf,
    /// Its key (PEM).
    #[arg(long)]
    pub(crate) ca_key: PathBuf,
    /// The approvers' serving CA (PEM).
    #[arg(long)]
    pub(crate) serving_ca: PathBuf,
    /// Approver attestation endpoints.
    #[arg(long, value_delimiter = ',')]
    pub(crate) endpoints: Vec<SocketAddr>,
    /// First node index.
    #[arg(long)]
    pub(crate) first: u32,
    /// Number of nodes.
    #[arg(long)]
    pub(crate) count: u32,
    /// Handshakes in flight while attaching.
    #[arg(long)]
    pub(crate) connect_concurrency: usize,
    /// Token mode: the fleet's tokens, one line per node in index order.
    #[arg(long)]
    pub(crate) tokens: Option<PathBuf>,
    /// Serve a proof listener per node on its node address and this port.
    #[arg(long)]
    pub(crate) proof_port: Option<u16>,
}

/// Runs a worker (in its own process).
pub(crate) async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let ca = Ca::from_pem(&read(&args.ca_cert)?, &read(&args.ca_key)?)?;
    let serving_ca = read(&args.serving_ca)?;
    let tokens: Option<Vec<String>> = match &args.tokens {
        Some(path) => Some(read(path)?.lines().map(str::to_owned).collect()),
        None => None,
    };
    let nodes: Vec<AgentNode> = (args.first..args.first + args.count)
        .map(|i| {
            let node = SimNode::new(i)?;
            let leaf = ca.node_client(&node.name)?;
            let token = match &tokens {
                Some(tokens) => Some(
                    tokens
                        .get(usize::try_from(i)?)
                        .with_context(|| format!("no token for node {i}"))?
                        .clone(),
                ),
                None => None,
            };
            Ok(AgentNode { node, leaf, token })
        })
        .collect::<anyhow::Result<_>>()?;
    let agents = SimAgents::start(
        &serving_ca,
        &nodes,
        &args.endpoints,
        &AgentTimings::default(),
        args.connect_concurrency,
        args.proof_port,
    )?;
    let report = |agents: &SimAgents| {
        let per = |f: fn(&EndpointCounters) -> &AtomicUsize| {
            (0..args.endpoints.len())
                .map(|i| f(agents.counters(i)).load(Ordering::SeqCst))
                .collect()
        };
        let frames = &agents.frames;
        WorkerStatus {
            live: per(|c| &c.live),
            acks: per(|c| &c.acks),
            challenges: per(|c| &c.challenges),
            failures: per(|c| &c.failures),
            receipts: per(|c| &c.receipts),
            receipts_dropped: per(|c| &c.receipts_dropped),
            frames: [
                &frames.received,
                &frames.malformed,
                &frames.timeout,
                &frames.rate_limited,
            ]
            .map(|c| c.load(Ordering::SeqCst)),
        }
    };
    // The parent closes our stdin to stop us (or dies, which closes it too).
    let closed = CancellationToken::new();
    std::thread::spawn({
        let closed = closed.clone();
        move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            closed.cancel();
        }
    });
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = closed.cancelled() => break,
            _ = ticks.tick() => {
                println!("{}", serde_json::to_string(&report(&agents))?);
            }
        }
    }
    agents.stop().await;
    Ok(())
}

/// The simulated agents of the whole fleet, in worker processes.
#[derive(Debug)]
pub(crate) struct Fleet {
    workers: Vec<Child>,
    status: Arc<Mutex<Vec<WorkerStatus>>>,
    endpoints: usize,
}

/// How the fleet's agents run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FleetOptions<'a> {
    /// Handshakes in flight while the fleet attaches.
    pub(crate) connect_concurrency: usize,
    /// Token mode: the fleet's tokens, one line per node in index order.
    pub(crate) tokens: Option<&'a Path>,
    /// A proof listener per node on its node address and this port.
    pub(crate) proof_port: Option<u16>,
}

impl Fleet {
    /// Spawns workers for `nodes` nodes streaming to `endpoints`.
    pub(crate) async fn start(
        ca: &Ca,
        serving_ca: &Path,
        dir: &Path,
        nodes: u32,
        endpoints: &[SocketAddr],
        options: FleetOptions<'_>,
    ) -> anyhow::Result<Self> {
        let FleetOptions {
            connect_concurrency,
            tokens,
            proof_port,
        } = options;
        let ca_cert = dir.join("fleet-ca.crt");
        let ca_key = dir.join("fleet-ca.key");
        std::fs::write(&ca_cert, ca.cert_pem())?;
        std::fs::write(&ca_key, ca.key_pem())?;
        let per_worker = u32::try_from((STREAMS_PER_WORKER / endpoints.len().max(1)).max(1))?;
        let workers_needed = nodes.div_ceil(per_worker).max(1);
        let exe = std::env::current_exe()?;
        let status = Arc::new(Mutex::new(vec![
            WorkerStatus::default();
            usize::try_from(workers_needed)?
        ]));
        let mut workers = Vec::new();
        let endpoint_list = endpoints
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for w in 0..workers_needed {
            let first = w * per_worker;
            let count = per_worker.min(nodes - first);
            let token_args = tokens
                .map(|path| [std::ffi::OsStr::new("--tokens"), path.as_os_str()])
                .into_iter()
                .flatten();
            let proof_args = proof_port
                .map(|port| ["--proof-port".to_owned(), port.to_string()])
                .into_iter()
                .flatten();
            let mut child = Command::new(&exe)
                .arg("fleet")
                .args(token_args)
                .args(proof_args)
                .arg("--ca-cert")
                .arg(&ca_cert)
                .arg("--ca-key")
                .arg(&ca_key)
                .arg("--serving-ca")
                .arg(serving_ca)
                .args(["--endpoints", &endpoint_list])
                .args(["--first", &first.to_string(), "--count", &count.to_string()])
                .args([
                    "--connect-concurrency",
                    &(connect_concurrency / usize::try_from(workers_needed)?)
                        .max(1)
                        .to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a fleet worker")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let status = Arc::clone(&status);
            let slot = usize::try_from(w)?;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(s) = serde_json::from_str::<WorkerStatus>(&line) {
                        status.lock().unwrap_or_else(PoisonError::into_inner)[slot] = s;
                    }
                }
            });
            workers.push(child);
        }
        Ok(Self {
            workers,
            status,
            endpoints: endpoints.len(),
        })
    }

    /// The fleet's counters, summed over workers.
    pub(crate) fn status(&self) -> WorkerStatus {
        let all = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let sum = |f: fn(&WorkerStatus) -> &Vec<usize>| {
            (0..self.endpoints)
                .map(|i| all.iter().map(|s| f(s).get(i).copied().unwrap_or(0)).sum())
                .collect()
        };
        let mut frames = [0; 4];
        for s in all.iter() {
            for (total, n) in frames.iter_mut().zip(s.frames) {
                *total += n;
            }
        }
        WorkerStatus {
            live: sum(|s| &s.live),
            acks: sum(|s| &s.acks),
            challenges: sum(|s| &s.challenges),
            failures: sum(|s| &s.failures),
            receipts: sum(|s| &s.receipts),
            receipts_dropped: sum(|s| &s.receipts_dropped),
            frames,
        }
    }

    /// Stops every worker (closing their stdin) and waits for them.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for worker in &mut self.workers {
            drop(worker.stdin.take());
        }
        for worker in &mut self.workers {
            match tokio::time::timeout(Duration::from_secs(20), worker.wait()).await {
                Ok(status) => {
                    let status = status?;
                    if !status.success() {
                        bail!("a fleet worker exited with {status}");
                    }
                }
                Err(_) => {
                    worker.kill().await?;
                    bail!("a fleet worker did not stop within 20 s");
                }
            }
        }
        Ok(())
    }
}

// === kubelets ===

/// The fleet's kubelets: every node's requests, authenticated with its own bearer token,
/// multiplexed over a few HTTP/2 connections to the API server.
#[derive(Debug, Clone)]
pub(crate) struct Kubelets {
    connections: Vec<SendRequest<Full<Bytes>>>,
}

impl Kubelets {
    /// Opens `connections` HTTP/2 connections to `server`, trusting `ca_pem`.
    pub(crate) async fn connect(
        server: SocketAddr,
        ca_pem: &str,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut all = Vec::new();
        for _ in 0..connections.max(1) {
            let tcp = tokio::net::TcpStream::connect(server).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(ServerName::try_from("localhost")?, tcp)
                .await
                .context("TLS to the API server")?;
            let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(TokioIo::new(tls))
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            all.push(send);
        }
        Ok(Self { connections: all })
    }

    /// Sends one request with `token` on connection `slot`; returns the status and body.
    pub(crate) async fn request(
        &self,
        slot: usize,
        token: &str,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let mut send = self.connections[slot % self.connections.len()].clone();
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "kubelet/v1.33.0 (bench)")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(body))?;
        send.ready().await?;
        let response = send.send_request(request).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// Opens a watch with `token`; returns the streaming body.
    pub(crate) async fn watch(
        &self,
        token: &str,
        path: &str,
    ) -> anyhow::Result<hyper::body::Incoming> {
        let mut send = self.connections[0].clone();
        let request = http::Request::get(format!("https://localhost{path}"))
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        send.ready().await?;
        let response = send.send_request(request).await?;
        if response.status() != http::StatusCode::OK {
            bail!("watch {path}: {}", response.status());
        }
        Ok(response.into_body())
    }

    /// POSTs `node`'s CSR as `node`; returns the created object's JSON.
    pub(crate) async fn create_csr_object(
        &self,
        node: &SimNode,
        body: Bytes,
    ) -> anyhow::Result<Bytes> {
        let (status, body) = self
            .request(
                usize::try_from(node.index)?,
                &node.token(),
                http::Method::POST,
                CSR_PATH,
                body,
            )
            .await?;
        if status != http::StatusCode::CREATED {
            bail!(
                "{}: creating a CSR: {status}: {}",
                node.name,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }

    /// POSTs `node`'s CSR as `node`; returns the name the API server gave it.
    pub(crate) async fn create_csr(&self, node: &SimNode, body: Bytes) -> anyhow::Result<String> {
        let created = self.create_csr_object(node, body).await?;
        Ok(name_of(&created)?)
    }
}

/// `metadata.name` of an object's JSON.
pub(crate) fn name_of(json: &[u8]) -> serde_json::Result<String> {
    #[derive(Deserialize)]
    struct Object {
        metadata: Meta,
    }
    #[derive(Deserialize)]
    struct Meta {
        name: String,
    }
    serde_json::from_slice::<Object>(json).map(|o| o.metadata.name)
}

/// The path of a CSR's subresource.
pub(crate) fn csr_path(name: &str, subresource: &str) -> String {
    format!("{CSR_PATH}/{name}/{subresource}")
}

/// The path of a CSR watch from `resource_version`.
pub(crate) fn csr_watch_path(resource_version: u64) -> String {
    format!("{CSR_PATH}?watch=true&resourceVersion={resource_version}")
}

/// Generates every node's CSR (ECDSA keys and signatures) on `threads` threads.
pub(crate) fn csrs(nodes: &[SimNode], threads: usize) -> anyhow::Result<Vec<(Bytes, Vec<u8>)>> {
    let chunk = nodes.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(SimNode::csr)
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(nodes.len());
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| anyhow!("a CSR generator thread panicked"))??,
            );
        }
        Ok(all)
    })
}
