//! The assembled system: mode, cluster, approver replicas, nodes, and the
//! operations scenarios and tests drive it with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use rubber_stamp_core::{Attestation, Policy};

use rubber_stamp_testkit::command::{duration_flag, valid_lease_duration};
use rubber_stamp_testkit::http;

use super::approver::{ApproverReplica, ApproverSettings};
use super::binaries::Binaries;
use super::control::{self, ControlPlane};
use super::csr::{self, CsrRow};
use super::narrate::Narrator;
use super::node::{NodeContext, Placement, SimNode};
use super::pki::{SERVICE_FQDN, SERVICE_NAME, ServingPki};
use super::tokens::{self, AgentIdentity};
use super::watch::CsrNarration;
use super::{SandboxError, Site, Timings};
use rubber_stamp_hosts::{self as hosts, Network, Topology};

/// Polling interval of the `wait_*` helpers.
const POLL: Duration = Duration::from_millis(100);

/// Which mode to run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeChoice {
    /// Namespaces where possible (root with `ip` and `unshare`), else loopback.
    Auto,
    /// Namespaces or fail.
    Namespaces,
    /// Loopback even where namespaces would work.
    Loopback,
}

/// The mode a sandbox runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Simulated hosts in network namespaces.
    Namespaces,
    /// Everything on loopback.
    Loopback {
        /// Why (forced, or why namespaces are unavailable).
        why: String,
    },
}

/// How to build a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Which mode.
    pub mode: ModeChoice,
    /// Approver replicas (at least one).
    pub replicas: usize,
    /// Intervals.
    pub timings: Timings,
    /// The approvers' `--log-filter`.
    pub approver_log_filter: String,
    /// The credential the agents attest with.
    pub identity: AgentIdentity,
    /// How the simulated hosts are wired (namespace mode): a shared bridge, where the
    /// approver's proof of address ownership is off, or routed links, where it is
    /// required. [`Topology::Routed`] needs namespaces: it is never run on loopback.
    pub topology: Topology,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            mode: ModeChoice::Auto,
            replicas: 2,
            timings: Timings::default(),
            approver_log_filter: "info".to_owned(),
            identity: AgentIdentity::default(),
            topology: Topology::default(),
        }
    }
}

/// The running system. Dropping it stops every process and removes the
/// hosts, the cluster and the state directory (kept, with its path printed,
/// when a panic is unwinding).
#[derive(Debug)]
pub struct Sandbox {
    // Field order is drop order: processes first, the network and files last.
    nodes: Vec<SimNode>,
    approvers: Vec<ApproverReplica>,
    narration: Option<CsrNarration>,
    control: ControlPlane,
    site: Site,
    ctx: NodeContext,
    serving: ServingPki,
    policy_path: PathBuf,
    mode: Mode,
    identity: AgentIdentity,
    proof: ProofPolicy,
    narrator: Arc<Narrator>,
    state: Option<tempfile::TempDir>,
    state_path: PathBuf,
}

impl Sandbox {
    /// Finds the binaries, chooses the mode, starts the cluster (loading
    /// `deploy/`'s namespace and RBAC) and the approver replicas, and starts
    /// narrating CSR changes.
    pub async fn start(
        options: SandboxOptions,
        narrator: Arc<Narrator>,
    ) -> Result<Self, SandboxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if options.replicas == 0 {
            return Err(SandboxError::Setup("at least one approver replica".into()));
        }
        if !valid_lease_duration(options.timings.lease_duration) {
            return Err(SandboxError::Setup(format!(
                "the Lease duration must be whole seconds, at least 3 s (not {:?})",
                options.timings.lease_duration
            )));
        }
        let built = std::sync::atomic::AtomicBool::new(false);
        let binaries = Binaries::find(|line| {
            built.store(true, std::sync::atomic::Ordering::Relaxed);
            narrator.say("build", line);
        })?;
        if built.into_inner() {
            narrator.say(
                "build",
                format!(
                    "done in {:.1} s; the clock starts again",
                    narrator.elapsed().as_secs_f64()
                ),
            );
            narrator.restart_clock();
        }
        let mode = choose_mode(options.mode, options.topology)?;
        let state = tempfile::Builder::new()
            .prefix("rubber-stamp-sandbox-")
            .tempdir()
            .map_err(|source| SandboxError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let state_path = state.path().to_owned();
        let t = options.timings;

        let (site, api_listen, replica_ips, allowed) = match &mode {
            Mode::Namespaces => {
                narrator.say(
                    "sandbox",
                    "namespace mode: every node is a simulated host (its own network namespace, addresses and hostname) running the real agent and kubelet-sim",
                );
                let network = Network::with_topology(options.topology)?;
                let mut ips = vec![network.gateway_v4()];
                for _ in 1..options.replicas {
                    ips.push(network.add_root_address()?.addr());
                }
                let allowed = vec![
                    IpNet::V4(network.ipv4_subnet()),
                    IpNet::V6(network.ipv6_subnet()),
                ];
                narrator.say("network", describe_network(&network));
                let listen = SocketAddr::from((network.gateway_v4(), 0));
                (
                    Site::Namespaces(network),
                    listen,
                    ips.into_iter().map(IpAddr::V4).collect::<Vec<_>>(),
                    allowed,
                )
            }
            Mode::Loopback { why } => {
                narrator.say("sandbox", format!("LOOPBACK MODE: {why}."));
                narrator.say(
                    "sandbox",
                    "In loopback mode all nodes share this machine: agents could not see per-node interfaces, so the sandbox SUPPLIES each node's facts itself. An in-process attester per node reports the addresses the sandbox assigned to it (a 192.0.2.x/2001:db8:: node IP, and the 127.0.1.x address it connects from on `lo`) over the real mTLS channel with the node's real kubelet client certificate. Approver, cluster, kubelet-sim and all decisions are the real ones.",
                );
                let log_dir = state_path.join("logs");
                std::fs::create_dir_all(&log_dir).map_err(|source| SandboxError::Io {
                    path: log_dir.clone(),
                    source,
                })?;
                let allowed: Vec<IpNet> = ["192.0.2.0/24", "2001:db8::/64", "127.0.0.0/8"]
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                (
                    Site::Loopback { log_dir },
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                    vec![IpAddr::V4(Ipv4Addr::LOCALHOST); options.replicas],
                    allowed,
                )
            }
        };

        let control = ControlPlane::start(api_listen, &state_path).await?;
        narrator.say(
            "cluster",
            format!(
                "testbed API server at {} with its kubelet-serving signer (cluster CA)",
                control.cluster.url()
            ),
        );
        narrator.say(
            "cluster",
            format!(
                "loaded {}: {}",
                control::DEPLOY_MANIFESTS
                    .map(|(path, _)| path)
                    .join(" and "),
                control.loaded.join(", ")
            ),
        );

        let serving = ServingPki::create(&state_path, &replica_ips)?;
        let client_ca = control.cluster.ca().write_cert(&state_path, "cluster-ca")?;
        let policy_path = state_path.join("policy.yaml");
        // The cloud node's public address is in the cloud's public range, which an operator
        // of a cloud cluster pins too (docs/policy.md#metadatasources).
        let mut allowed = allowed;
        allowed.push(IpNet::new_assert(
            super::scenario::CLOUD_PUBLIC,
            CLOUD_PUBLIC_PREFIX,
        ));
        let proof = ProofPolicy::for_site(&site);
        let policy = policy_yaml(t.max_age, &allowed, proof);
        Policy::from_yaml(&policy)
            .map_err(|e| SandboxError::Setup(format!("the sandbox's policy is invalid: {e}")))?;
        write(&policy_path, &policy)?;
        narrator.say(
            "approver",
            format!(
                "policy: allowedCidrs [{}], attestationMaxAge {}, peerBinding on, deny always ({})",
                allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                duration_flag(t.max_age),
                policy_path.display()
            ),
        );
        narrator.say("approver", proof.explain());

        let observer = control.admin_observer()?;
        // For `--keep`: curl and `kubectl rubber-stamp` read the admin ports with it.
        control::write_private(&state_path.join(OBSERVER_TOKEN), &observer)?;
        narrator.say(
            "cluster",
            format!(
                "the sandbox reads the approvers' admin ports as {} (ClusterRoles rubber-stamp:metrics-reader and rubber-stamp:attestation-reader)",
                control::OBSERVER
            ),
        );
        let settings = ApproverSettings {
            admin_client: http::HttpsClient {
                ca_pem: serving.ca.cert_pem().to_owned(),
                server_name: SERVICE_NAME.to_owned(),
                token: Some(observer),
            },
            binary: binaries.approver.clone(),
            tls_cert: serving.cert_path.clone(),
            tls_key: serving.key_path.clone(),
            client_ca,
            kubeconfig: control.approver_kubeconfig.clone(),
            policy: policy_path.clone(),
            namespace: control::NAMESPACE.to_owned(),
            lease_duration: t.lease_duration,
            log_filter: options.approver_log_filter.clone(),
            agent_identity: options.identity,
        };
        match options.identity {
            AgentIdentity::Token => {
                tokens::ensure_service_account(&control.admin, control::NAMESPACE, tokens::AGENT)
                    .await?;
                narrator.say(
                    "sandbox",
                    format!(
                        "agents attest with projected ServiceAccount tokens (--identity token): each node's agent gets a token of {}/{} bound to a Pod of DaemonSet {} on that node, audience {:?}, and no kubelet key; the approvers accept tokens only (--agent-identity token) and have the API server review each",
                        control::NAMESPACE,
                        tokens::AGENT,
                        tokens::AGENT,
                        tokens::AUDIENCE
                    ),
                );
            }
            AgentIdentity::KubeletCert => narrator.say(
                "sandbox",
                "agents attest with the kubelet's client certificate (--identity kubelet-cert); the approvers accept certificates only",
            ),
        }
        let mut approvers: Vec<ApproverReplica> = Vec::new();
        for (i, ip) in replica_ips.iter().enumerate() {
            // Every replica listens on the port the first one got, as pods
            // behind one Service do; in loopback mode they share an address
            // and each gets its own port.
            let port = match (&site, approvers.first()) {
                (Site::Namespaces(_), Some(first)) => first.grpc().port(),
                _ => 0,
            };
            let replica = ApproverReplica::start(
                &site,
                &settings,
                &format!("approver-{i}"),
                SocketAddr::new(*ip, port),
            )
            .await?;
            narrator.say(
                "approver",
                format!(
                    "{} started (rubber-stamp-approver run, pid {}) as system:serviceaccount:{}:{}; attestation mTLS on {}, admin on https://{} (TokenReview + SubjectAccessReview per caller)",
                    replica.name(),
                    replica.pid(),
                    control::NAMESPACE,
                    control::SERVICE_ACCOUNT,
                    replica.grpc(),
                    replica.admin()
                ),
            );
            approvers.push(replica);
        }
        if let Some(first) = approvers.first() {
            refuse_anonymous(first, &settings.admin_client).await?;
            narrator.say(
                "approver",
                "the admin port refuses anonymous callers (401 on /metrics, /attestations and /streams without a token)",
            );
        }
        let port = approvers.first().map_or(0, |a| a.grpc().port());
        let ctx = NodeContext {
            binaries,
            approver_ca: serving.ca_path.clone(),
            approver_ca_pem: serving.ca.cert_pem().to_owned(),
            approver_service: format!("{SERVICE_NAME}:{port}"),
            approver_server_name: SERVICE_NAME.to_owned(),
            replicas: approvers.iter().map(ApproverReplica::grpc).collect(),
            timings: t,
        };
        let narration = CsrNarration::start(control.admin.clone(), Arc::clone(&narrator));
        Ok(Self {
            nodes: Vec::new(),
            approvers,
            narration: Some(narration),
            control,
            site,
            ctx,
            serving,
            policy_path,
            mode,
            identity: options.identity,
            proof,
            narrator,
            state: Some(state),
            state_path,
        })
    }

    /// The mode it runs in.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The credential its agents attest with.
    pub fn identity(&self) -> AgentIdentity {
        self.identity
    }

    /// How its hosts are wired, in namespace mode (`None` on loopback, where the
    /// nodes share this machine's addresses).
    pub fn topology(&self) -> Option<Topology> {
        self.site.network().map(Network::topology)
    }

    /// The policy's proof of address ownership.
    pub fn ownership_proof(&self) -> ProofPolicy {
        self.proof
    }

    /// The narrator.
    pub fn narrator(&self) -> &Arc<Narrator> {
        &self.narrator
    }

    /// Says something.
    pub fn say(&self, who: &str, what: impl std::fmt::Display) {
        self.narrator.say(who, what);
    }

    /// The state directory (kubeconfigs, certificates, policy, node files).
    pub fn state_dir(&self) -> &Path {
        &self.state_path
    }

    /// Where process output goes.
    pub fn log_dir(&self) -> PathBuf {
        self.site.log_dir()
    }

    /// The cluster and its kubeconfigs.
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// A client as the cluster admin.
    pub fn admin(&self) -> kube::Client {
        self.control.admin.clone()
    }

    /// The policy file.
    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// The approver serving PKI.
    pub fn serving(&self) -> &ServingPki {
        &self.serving
    }

    /// What nodes are started with.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// The network, in namespace mode.
    pub fn network(&self) -> Option<&Network> {
        self.site.network()
    }

    /// The approver replicas.
    pub fn approvers(&self) -> &[ApproverReplica] {
        &self.approvers
    }

    /// One replica by name.
    pub fn approver_mut(&mut self, name: &str) -> Result<&mut ApproverReplica, SandboxError> {
        self.approvers
            .iter_mut()
            .find(|a| a.name() == name)
            .ok_or_else(|| SandboxError::Setup(format!("no approver replica {name}")))
    }

    /// Adds a node: its host (namespace mode: a simulated host whose
    /// `/etc/hosts` resolves the approver Service name to every replica) or
    /// its loopback addresses, its kubelet client certificate from the
    /// cluster CA, and its Node object (registered with its own credentials).
    pub async fn add_node(&mut self, name: &str) -> Result<(), SandboxError> {
        if self.nodes.iter().any(|n| n.name() == name) {
            return Err(SandboxError::Setup(format!("node {name} exists already")));
        }
        let dir = self.state_path.join("nodes").join(name);
        std::fs::create_dir_all(&dir).map_err(|source| SandboxError::Io {
            path: dir.clone(),
            source,
        })?;
        let credentials = self.control.node_credentials(name, &dir)?;
        let placement = match &self.site {
            Site::Namespaces(network) => {
                let host = network.add_host(name)?;
                let names = format!("{SERVICE_NAME} {SERVICE_FQDN}");
                let entries: Vec<(IpAddr, &str)> = self
                    .approvers
                    .iter()
                    .map(|a| (a.grpc().ip(), names.as_str()))
                    .collect();
                host.set_hosts_file(&entries)?;
                Placement::Host(host)
            }
            Site::Loopback { .. } => {
                let n = u8::try_from(self.nodes.len() + 10)
                    .map_err(|_| SandboxError::Setup("too many loopback nodes".into()))?;
                Placement::Loopback {
                    source: Ipv4Addr::new(127, 0, 1, n),
                    node_v4: Ipv4Addr::new(192, 0, 2, n),
                    node_v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)),
                }
            }
        };
        let mut node = SimNode::new(name, dir, credentials, placement)?;
        if self.identity == AgentIdentity::Token {
            let admin = &self.control.admin;
            let pod = tokens::create_pod(
                admin,
                control::NAMESPACE,
                &format!("{}-{name}", tokens::AGENT),
                tokens::AGENT,
                name,
                Some(tokens::AGENT),
            )
            .await?;
            let token = tokens::request_token(
                admin,
                control::NAMESPACE,
                tokens::AGENT,
                Some(&pod),
                tokens::AUDIENCE,
            )
            .await?;
            node.set_token(&token)?;
        }
        let client = self
            .control
            .cluster
            .client(&node.credentials().kube)
            .await?;
        node.register(client).await?;
        self.narrator.say(
            name,
            format!(
                "node up: {}; Node object registered by its kubelet identity system:node:{name}",
                node.describe()
            ),
        );
        self.nodes.push(node);
        Ok(())
    }

    /// Every node, in the order added.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, name: &str) -> Result<&SimNode, SandboxError> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| SandboxError::Setup(format!("no node {name}")))
    }

    /// One node, to change it.
    pub fn node_mut(&mut self, name: &str) -> Result<&mut SimNode, SandboxError> {
        self.nodes
            .iter_mut()
            .find(|n| n.name() == name)
            .ok_or_else(|| SandboxError::Setup(format!("no node {name}")))
    }

    /// Starts a node's agent.
    pub fn start_agent(&mut self, name: &str) -> Result<(), SandboxError> {
        let ctx = self.ctx.clone();
        self.node_mut(name)?.start_agent(&ctx)
    }

    /// Stops a node's agent gracefully (SIGTERM, as a DaemonSet rollout does; see
    /// [`SimNode::stop_agent`]). Its proof listener goes with it.
    pub async fn stop_agent(&mut self, name: &str) -> Result<(), SandboxError> {
        self.node_mut(name)?.stop_agent().await
    }

    /// Starts a node's `kubelet-sim` (see [`SimNode::start_kubelet`]).
    pub fn start_kubelet(
        &mut self,
        name: &str,
        ips: Option<&[IpAddr]>,
    ) -> Result<(), SandboxError> {
        let ctx = self.ctx.clone();
        self.node_mut(name)?.start_kubelet(&ctx, ips)
    }

    /// A client with a node's kubelet credentials.
    pub async fn node_client(&self, name: &str) -> Result<kube::Client, SandboxError> {
        let node = self.node(name)?;
        Ok(self
            .control
            .cluster
            .client(&node.credentials().kube)
            .await?)
    }

    /// Each running replica's attestation of `node`, by replica name.
    pub async fn attestations_of(
        &mut self,
        node: &str,
    ) -> Result<Vec<(String, Option<Attestation>)>, SandboxError> {
        let mut out = Vec::new();
        for replica in &mut self.approvers {
            if !replica.is_running() {
                continue;
            }
            let snapshot = replica.attestations().await?;
            out.push((
                replica.name().to_owned(),
                snapshot
                    .attestations
                    .into_iter()
                    .find(|a| a.node_name == node),
            ));
        }
        Ok(out)
    }

    /// Waits until every running replica holds an attestation of each of
    /// `nodes` received after this call started; says what each attested.
    pub async fn wait_attested(
        &mut self,
        nodes: &[&str],
        within: Duration,
    ) -> Result<(), SandboxError> {
        let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        let deadline = Instant::now() + within;
        let mut pending: Vec<&str> = nodes.to_vec();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for node in pending {
                let seen = self.attestations_of(node).await?;
                let fresh: Vec<&Attestation> = seen
                    .iter()
                    .filter_map(|(_, a)| a.as_ref())
                    .filter(|a| a.received_at >= since)
                    .collect();
                if !seen.is_empty() && fresh.len() == seen.len() {
                    let replicas: Vec<&str> = seen.iter().map(|(r, _)| r.as_str()).collect();
                    if let Some(a) = fresh.first() {
                        self.narrator.say(
                            node,
                            format!(
                                "attested to {}: {}",
                                replicas.join(" and "),
                                describe_attestation(a)
                            ),
                        );
                    }
                } else {
                    still.push(node);
                }
            }
            pending = still;
            if !pending.is_empty() {
                if Instant::now() >= deadline {
                    return Err(SandboxError::Timeout(format!(
                        "attestations of {} at every replica within {within:?}",
                        pending.join(", ")
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// The holder of the approver's leader Lease, if any.
    pub async fn leader(&self) -> Result<Option<String>, SandboxError> {
        let leases: Api<Lease> = Api::namespaced(self.admin(), control::NAMESPACE);
        Ok(leases
            .get_opt(control::LEASE_NAME)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    /// Waits until some replica holds the Lease (other than `not`, if given).
    pub async fn wait_leader(
        &self,
        not: Option<&str>,
        within: Duration,
    ) -> Result<String, SandboxError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(holder) = self.leader().await?
                && Some(holder.as_str()) != not
            {
                return Ok(holder);
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout(format!(
                    "an approver replica to hold the Lease {}/{} within {within:?}",
                    control::NAMESPACE,
                    control::LEASE_NAME
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every CSR, decoded, with its reason.
    pub async fn rows(&self) -> Result<Vec<CsrRow>, SandboxError> {
        csr::list_rows(&self.control.admin).await
    }

    /// Polls the CSRs until `done` holds for them, for at most `within`.
    pub async fn wait_rows(
        &self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&[CsrRow]) -> bool,
    ) -> Result<Vec<CsrRow>, SandboxError> {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.rows().await?;
            if done(&rows) {
                return Ok(rows);
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout(format!(
                    "{what} within {within:?}; CSRs now:\n{}",
                    csr::render_table(&rows)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops narrating CSR changes (before printing the final table).
    pub fn stop_narration(&mut self) {
        self.narration = None;
    }

    /// Keeps the state directory after the sandbox is dropped.
    pub fn keep_state(&mut self) {
        if let Some(dir) = self.state.take() {
            let _ = dir.keep();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_state();
            eprintln!(
                "sandbox: state kept in {} (process logs in {})",
                self.state_path.display(),
                self.site.log_dir().display()
            );
        }
    }
}

/// The mode to run in. The routed topology exists only with namespaces: it is never
/// replaced by loopback.
fn choose_mode(choice: ModeChoice, topology: Topology) -> Result<Mode, SandboxError> {
    if topology == Topology::Routed {
        return match choice {
            ModeChoice::Loopback => Err(SandboxError::Setup(
                "the routed topology needs network namespaces; it cannot run in loopback mode"
                    .into(),
            )),
            ModeChoice::Auto | ModeChoice::Namespaces => {
                hosts::check_available().map_err(|u| {
                    SandboxError::Setup(format!(
                        "the routed topology needs network namespaces: {}",
                        u.reason
                    ))
                })?;
                Ok(Mode::Namespaces)
            }
        };
    }
    match choice {
        ModeChoice::Loopback => Ok(Mode::Loopback {
            why: "forced (--loopback)".to_owned(),
        }),
        ModeChoice::Namespaces => {
            hosts::check_available()
                .map_err(|u| SandboxError::Hosts(hosts::HostsError::Unavailable(u)))?;
            Ok(Mode::Namespaces)
        }
        ModeChoice::Auto => Ok(match hosts::check_available() {
            Ok(()) => Mode::Namespaces,
            Err(u) => Mode::Loopback {
                why: format!(
                    "network namespaces are unavailable ({}); run as root with `ip` and `unshare` for simulated hosts",
                    u.reason
                ),
            },
        }),
    }
}

/// The prefix of the cloud's public range the sandbox allows (TEST-NET-3, 203.0.113.0/24).
const CLOUD_PUBLIC_PREFIX: u8 = 24;

/// The cloud's public range (203.0.113.0/24), where the routed policy proves nothing.
pub fn cloud_public_range() -> IpNet {
    IpNet::new_assert(super::scenario::CLOUD_PUBLIC, CLOUD_PUBLIC_PREFIX).trunc()
}

/// The agents' proof port, which the approver probes (`rubber_stamp_proto::proof`).
pub const PROOF_PORT: u16 = super::node::AGENT_PROOF_PORT;

/// The policy's `ownershipProof`, chosen by the topology: a probe proves who receives
/// an address only where the network delivers each address to its owner alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofPolicy {
    /// `default: off` on the shared bridge: Linux answers ARP for any local address on
    /// any interface, so a probe reaches whichever host answered last.
    OffOnTheBridge,
    /// `default: off` in loopback mode: every node is this machine.
    OffOnLoopback,
    /// `default: required`, `off` for the cloud's public range: the routed topology
    /// delivers each address only to the host that owns it.
    Required,
}

impl ProofPolicy {
    /// The one the sandbox's policy gets on `site`.
    fn for_site(site: &Site) -> Self {
        match site.network().map(Network::topology) {
            Some(Topology::Routed) => Self::Required,
            Some(Topology::Bridge) => Self::OffOnTheBridge,
            None => Self::OffOnLoopback,
        }
    }

    /// Whether the approver probes at all.
    pub fn probes(self) -> bool {
        self == Self::Required
    }

    /// The policy's `ownershipProof` section.
    fn yaml(self) -> String {
        match self {
            Self::OffOnTheBridge | Self::OffOnLoopback => {
                "ownershipProof:\n  default: \"off\"\n".to_owned()
            }
            Self::Required => format!(
                "ownershipProof:\n  default: required\n  cidrs:\n    \"{}\": \"off\"\n",
                cloud_public_range()
            ),
        }
    }

    /// Why the policy says what it says, for the narration.
    pub fn explain(self) -> String {
        match self {
            Self::OffOnTheBridge => format!(
                "ownership proof off (ownershipProof.default: off): the hosts share one L2 segment, and Linux answers ARP for any local address on any interface (arp_ignore=0), so a probe to a squatted address reaches whichever host answered ARP last — the proof cannot tell owner from squatter here (--topology routed shows it: each address delivered to its owner only, probes to port {PROOF_PORT} required)"
            ),
            Self::OffOnLoopback => "ownership proof off (ownershipProof.default: off): in loopback mode every node is this machine, so no probe could tell one node from another".to_owned(),
            Self::Required => format!(
                "ownership proof required (ownershipProof.default: required): the leader opens TCP to each IP SAN on port {PROOF_PORT}, the agents' proof port, and writes a nonce; the SAN counts only once the requesting node's agent reports that nonce on its own stream, and waits until then — another node's agent receiving it, or the address refusing while the requester's agent listens on all its addresses, is AddressNotOwned; no answer at all is OwnershipUnproven. Off for {}: cloud-1's NAT'd public address is on no interface and unreachable from the approver, which is what `off` is for",
                cloud_public_range()
            ),
        }
    }
}

/// The network in one line for the narration.
fn describe_network(network: &Network) -> String {
    match network.topology() {
        Topology::Bridge => format!(
            "bridge {} with {} and {} (hosts reach the root namespace at {})",
            network.bridge(),
            network.ipv4_subnet(),
            network.ipv6_subnet(),
            network.gateway_v4()
        ),
        Topology::Routed => format!(
            "routed (--topology routed): every host on its own point-to-point veth to the root namespace, the router, which routes each host's own addresses (/32, /128) to that host's link only — as a cloud VPC delivers an address only to the instance that owns it — and the rest of {} and {} nowhere (unreachable: it fails at once and never leaves the machine); hosts reach the root namespace at {} (on {} and every host's link)",
            network.ipv4_subnet(),
            network.ipv6_subnet(),
            network.gateway_v4(),
            network.gateway_link()
        ),
    }
}

/// The approver policy the sandbox runs with.
fn policy_yaml(max_age: Duration, allowed: &[IpNet], proof: ProofPolicy) -> String {
    let mut out = String::from(
        "# Written by the sandbox: serving certificates only for addresses in the\n\
         # sandbox's node networks and its cloud's public range, and denials on (the default).\n",
    );
    out.push_str(&format!("attestationMaxAge: {}\n", duration_flag(max_age)));
    out.push_str("allowedCidrs:\n");
    for net in allowed {
        out.push_str(&format!("  - \"{net}\"\n"));
    }
    out.push_str("peerBinding: true\ndeny: always\n");
    out.push_str(&proof.yaml());
    out
}

/// An attestation in one line: hostname, interfaces, peer.
pub fn describe_attestation(a: &Attestation) -> String {
    let interfaces = a
        .interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .map(|i| {
            format!(
                "{} {}",
                i.name,
                i.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let peer = a
        .peer_address
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    format!(
        "hostname {}, {interfaces}; connected from {peer}",
        a.hostname
    )
}

fn write(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text).map_err(|source| SandboxError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The observer's token in the state directory (for `--keep`).
pub const OBSERVER_TOKEN: &str = "observer.token";

/// Checks that `replica`'s admin port answers no one without a token: the deployed
/// default, and what keeps every node's addresses from whoever reaches a Pod IP.
async fn refuse_anonymous(
    replica: &ApproverReplica,
    observer: &http::HttpsClient,
) -> Result<(), SandboxError> {
    let anonymous = http::HttpsClient {
        token: None,
        ..observer.clone()
    };
    for path in ["/metrics", "/attestations", "/streams"] {
        let (status, body) = replica.get_as(path, &anonymous).await?;
        if status != 401 {
            return Err(SandboxError::Setup(format!(
                "{}: an anonymous GET {path} got HTTP {status}, not 401: {body}",
                replica.name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubber_stamp_core::ProofMode;

    #[test]
    fn the_policy_parses_with_the_approvers_parser() {
        let nets: Vec<IpNet> = ["198.18.7.0/24", "fd12::/64", "127.0.0.0/8"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        for proof in [
            ProofPolicy::OffOnTheBridge,
            ProofPolicy::OffOnLoopback,
            ProofPolicy::Required,
        ] {
            let yaml = policy_yaml(Duration::from_secs(60), &nets, proof);
            let policy = Policy::from_yaml(&yaml)
                .unwrap_or_else(|e| panic!("{proof:?}: invalid policy: {e}\n{yaml}"));
            assert!(policy.is_allowed_address("198.18.7.3".parse().expect("ip")));
            assert!(!policy.is_allowed_address("10.0.0.1".parse().expect("ip")));
            assert!(policy.peer_binding);
            let mode = |ip: &str| policy.ownership_proof.mode_for(ip.parse().expect("ip")).0;
            if proof.probes() {
                assert_eq!(mode("198.18.7.3"), ProofMode::Required, "{yaml}");
                assert_eq!(mode("fd12::3"), ProofMode::Required, "{yaml}");
                assert_eq!(mode("203.0.113.10"), ProofMode::Off, "{yaml}");
            } else {
                assert!(policy.ownership_proof.is_off(), "{yaml}");
            }
        }
    }

    #[test]
    fn the_ownership_proof_section_says_off_or_required_with_the_cloud_range_off() {
        let off = ProofPolicy::OffOnTheBridge.yaml();
        assert_eq!(off, "ownershipProof:\n  default: \"off\"\n");
        assert_eq!(ProofPolicy::OffOnLoopback.yaml(), off);
        assert_eq!(
            ProofPolicy::Required.yaml(),
            "ownershipProof:\n  default: required\n  cidrs:\n    \"203.0.113.0/24\": \"off\"\n"
        );
        assert!(ProofPolicy::Required.probes());
        assert!(!ProofPolicy::OffOnTheBridge.probes());
    }
}
