//! The honest/rogue scenario of the README: honest nodes get verified serving
//! certificates; a node asking for another node's IP is denied; a node that
//! puts that IP on a dummy interface so its agent attests it stays pending
//! (AddressConflict); a node whose agent never runs stays pending
//! (AwaitingAttestation); a node renamed to a cluster Service's name, whose
//! agent attests that hostname, is denied (NameNotAllowed); a cloud node's
//! public address and DNS name, stated by its metadata service, are approved, and a
//! rogue whose metadata claims that address stays pending (AddressConflict). Then the
//! CIS 1.2.5 proof.
//!
//! On the routed topology the approver proves each IP SAN's ownership by probing it:
//! the squatter is held with AddressNotOwned (its probe reaches its victim), also after
//! the victim's agent is stopped (the probe is refused there), and a claimer of an
//! address nobody owns is held with OwnershipUnproven.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use rubber_stamp_hosts::Topology;

use super::csr::{self, Condition, CsrRow};
use super::node::AGENT_PROOF_PORT as PROOF_PORT;
use super::node::CloudInstance;
use super::proof::{self, Verified};
use super::tokens::{self, AgentIdentity};
use super::{Mode, Sandbox, SandboxError};

/// Namespace and ServiceAccount of the workload whose token the foreign-token rogue takes.
pub const FOREIGN_NAMESPACE: &str = "default";
/// See [`FOREIGN_NAMESPACE`].
pub const FOREIGN_ACCOUNT: &str = "workload";

/// The interface the squatter puts the stolen address on (and the claimer its claimed one).
pub const DUMMY_INTERFACE: &str = "dummy0";

/// The hostname the DNS thief gives its node: the API server's in-cluster name.
pub const SERVICE_HOSTNAME: &str = "kubernetes.default.svc";

/// The cloud node's public address (1:1 NAT, on no interface; TEST-NET-3).
pub const CLOUD_PUBLIC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 10));

/// The cloud's DNS name for it, as AWS names public addresses.
pub const CLOUD_DNS: &str = "ec2-203-0-113-10.compute-1.amazonaws.com";

/// What a node in the scenario does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs its agent and asks for its own names and addresses.
    Honest,
    /// Asks for a certificate naming `victim`'s IPv4 besides its own.
    Thief {
        /// Whose address it asks for.
        victim: String,
    },
    /// Adds `victim`'s IPv4 to a dummy interface so its agent attests it,
    /// and asks for it.
    Squatter {
        /// Whose address it claims.
        victim: String,
    },
    /// Routed topology only: adds an address of the node subnet that no node has to a
    /// dummy interface, so its agent attests it, and asks for it besides its own. Only
    /// the proof of ownership catches it: the probe reaches no one.
    Claimer,
    /// Its agent never runs.
    Silent,
    /// Renames the node to a cluster Service name (root's `hostname`), so its
    /// agent attests that hostname and its kubelet asks for it.
    DnsThief,
    /// A cloud instance: its cloud's metadata service states a public address (1:1 NAT,
    /// on no interface) and a DNS name, its Node lists them, and its kubelet asks for both,
    /// as a cloud kubelet does.
    Cloud,
    /// Its metadata (which root on the node controls) states `victim`'s public address,
    /// and its kubelet asks for it.
    CloudRogue {
        /// Whose public address it claims.
        victim: String,
    },
    /// Token mode: root on the node gives its agent the projected token of another
    /// workload's Pod on the node (another ServiceAccount, the approver's audience).
    ForeignToken,
}

impl Role {
    /// Whether the node is one of the rogue cases.
    pub fn is_rogue(&self) -> bool {
        !matches!(self, Self::Honest | Self::Cloud)
    }

    /// The approver's expected answer on `topology`, as (condition, reason). Loopback
    /// mode counts as [`Topology::Bridge`]: the proof of ownership is off in both.
    pub fn expected(&self, topology: Topology) -> (Condition, &'static str) {
        match self {
            Self::Honest => (Condition::Approved, "AutoApproved"),
            Self::Thief { .. } => (Condition::Denied, "AddressNotAttested"),
            Self::Squatter { .. } => match topology {
                Topology::Bridge => (Condition::Pending, "AddressConflict"),
                Topology::Routed => (Condition::Pending, "AddressNotOwned"),
            },
            Self::Claimer => (Condition::Pending, "OwnershipUnproven"),
            Self::Silent => (Condition::Pending, "AwaitingAttestation"),
            Self::DnsThief => (Condition::Denied, "NameNotAllowed"),
            Self::Cloud => (Condition::Approved, "AutoApproved"),
            Self::CloudRogue { .. } => (Condition::Pending, "AddressConflict"),
            Self::ForeignToken => (Condition::Pending, "AwaitingAttestation"),
        }
    }

    /// Whether its agent is expected to be attested once started.
    fn attests(&self) -> bool {
        !matches!(self, Self::Silent | Self::ForeignToken)
    }

    /// Whether the proof of ownership must be what holds it on `topology`: then any
    /// other unapproved outcome fails the run, not only an approval.
    fn held_by_ownership(&self, topology: Topology) -> bool {
        topology == Topology::Routed && matches!(self, Self::Squatter { .. } | Self::Claimer)
    }
}

/// How to run the scenario.
#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    /// Honest nodes (`worker-1`…); with at least one, a cloud node (`cloud-1`) joins them.
    pub honest: usize,
    /// Include the four rogue cases.
    pub rogues: bool,
    /// How long the CSRs may take to reach their expected state.
    pub timeout: Duration,
    /// The agents' credential (token mode adds the foreign-token rogue).
    pub identity: AgentIdentity,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        Self {
            honest: 3,
            rogues: true,
            timeout: Duration::from_secs(40),
            identity: AgentIdentity::default(),
        }
    }
}

/// The node names and roles of a scenario on `topology` (the claimer joins only a
/// routed one).
pub fn cast(options: &ScenarioOptions, topology: Topology) -> Vec<(String, Role)> {
    let mut cast: Vec<(String, Role)> = (1..=options.honest)
        .map(|i| (format!("worker-{i}"), Role::Honest))
        .collect();
    if options.honest > 0 {
        cast.push(("cloud-1".to_owned(), Role::Cloud));
    }
    if options.rogues && options.honest > 0 {
        let victim = "worker-1".to_owned();
        cast.push((
            "thief".to_owned(),
            Role::Thief {
                victim: victim.clone(),
            },
        ));
        cast.push(("squatter".to_owned(), Role::Squatter { victim }));
        if topology == Topology::Routed {
            cast.push(("claimer".to_owned(), Role::Claimer));
        }
        cast.push(("no-agent".to_owned(), Role::Silent));
        cast.push(("dns-thief".to_owned(), Role::DnsThief));
        cast.push((
            "cloud-rogue".to_owned(),
            Role::CloudRogue {
                victim: "cloud-1".to_owned(),
            },
        ));
        if options.identity == AgentIdentity::Token {
            cast.push(("foreign-token".to_owned(), Role::ForeignToken));
        }
    }
    cast
}

/// One line of the proof.
#[derive(Clone, Debug)]
pub struct ProofLine {
    /// The node connected to.
    pub node: String,
    /// Where.
    pub addr: Option<SocketAddr>,
    /// The name (IP) the certificate had to carry.
    pub expected: Option<IpAddr>,
    /// What was shown, or why it failed.
    pub result: Result<Verified, String>,
    /// Whether this line expects a verified certificate.
    pub should_verify: bool,
}

impl ProofLine {
    /// Whether the line came out as it should.
    pub fn as_expected(&self) -> bool {
        self.result.is_ok() == self.should_verify
    }
}

/// What the scenario ended with.
#[derive(Debug)]
pub struct Outcome {
    /// The nodes and their roles.
    pub cast: Vec<(String, Role)>,
    /// Every CSR at the end.
    pub rows: Vec<CsrRow>,
    /// The proof.
    pub proofs: Vec<ProofLine>,
    /// Rogue nodes whose CSR ended other than expected (but not approved).
    pub surprises: Vec<String>,
    /// Why the run failed; empty on success (exit code 0).
    pub problems: Vec<String>,
    /// How the hosts were wired (`None` in loopback mode).
    pub topology: Option<Topology>,
    /// Routed topology: the squatter's victim whose agent was stopped after the rogues
    /// settled, and what the approver's probes did then.
    pub stopped_agent: Option<StoppedAgent>,
}

/// Routed topology: the agent of the squatter's victim stopped after the rogues
/// settled, so that the next probe of the squatted address is refused by the victim.
#[derive(Clone, Debug)]
pub struct StoppedAgent {
    /// The victim (`worker-1`).
    pub node: String,
    /// The squatted address (the victim's IPv4).
    pub address: IpAddr,
    /// The approvers' `rubber_stamp_proof_probes_total{result="refused"}`, summed over
    /// the replicas (only the leader probes), before the stop.
    pub refused_before: f64,
    /// The same once it rose; `None` when it did not within the timeout.
    pub refused_after: Option<f64>,
    /// The replica whose counter rose.
    pub prober: Option<String>,
}

impl Outcome {
    /// Every honest CSR approved and issued, every honest kubelet verified,
    /// and no rogue CSR approved.
    pub fn success(&self) -> bool {
        self.problems.is_empty()
    }

    /// The rows of one node.
    pub fn rows_of(&self, node: &str) -> Vec<&CsrRow> {
        self.rows.iter().filter(|r| r.node == node).collect()
    }
}

/// Runs the scenario in `sandbox` and narrates it, ending with the table and
/// the proof.
pub async fn run(
    sandbox: &mut Sandbox,
    options: &ScenarioOptions,
) -> Result<Outcome, SandboxError> {
    // Loopback mode has no network; its proof is off, as on the bridge.
    let topology = sandbox.topology().unwrap_or_default();
    let cast = cast(options, topology);
    if cast.is_empty() {
        return Err(SandboxError::Setup("no nodes to run".into()));
    }
    let leader = sandbox
        .wait_leader(None, sandbox.context().timings.lease_duration * 3)
        .await?;
    sandbox.say(
        "approver",
        format!(
            "{leader} holds the Lease {}/{}: it alone acts on CSRs; every replica holds every attestation",
            super::control::NAMESPACE,
            super::control::LEASE_NAME
        ),
    );

    for (name, role) in &cast {
        sandbox.add_node(name).await?;
        if *role == Role::Cloud {
            sandbox.node_mut(name)?.set_cloud(CloudInstance {
                public: CLOUD_PUBLIC,
                external_dns: Some(CLOUD_DNS.to_owned()),
                in_node_status: true,
            });
            sandbox
                .node(name)?
                .update_node_addresses(sandbox.admin())
                .await?;
            sandbox.say(
                name,
                format!(
                    "a cloud instance: its metadata service (169.254.169.254, AWS's protocol) states the public address {CLOUD_PUBLIC} (1:1 NAT, on no interface) and {CLOUD_DNS}; its Node lists them and its kubelet will ask for them → expect Approved,Issued"
                ),
            );
        }
    }
    let (honest_cast, rogue_cast): (Vec<_>, Vec<_>) =
        cast.iter().cloned().partition(|(_, r)| !r.is_rogue());

    // Phase 1: the honest nodes join and get their certificates.
    sandbox.say(
        "sandbox",
        "phase 1: the honest nodes start their agents, then their kubelets ask for serving certificates",
    );
    start_agents(sandbox, &honest_cast).await?;
    start_kubelets(sandbox, &honest_cast)?;
    let honest_settled = settle(sandbox, &honest_cast, topology, options.timeout).await;
    let honest: Vec<&str> = honest_cast.iter().map(|(n, _)| n.as_str()).collect();
    for name in &honest {
        if let Err(e) = sandbox
            .node_mut(name)?
            .wait_kubelet_serving(Duration::from_secs(5))
            .await
        {
            sandbox.say(name, format!("kubelet-sim is not serving: {e}"));
        }
    }

    // Phase 2: the rogue cases, said before they happen. They come after the
    // honest nodes have their certificates: while a node claims another's
    // address, a CSR naming it waits on both sides (a conflict cannot tell
    // the owner from the claimant), so a claim made first would hold up the
    // victim's certificate too.
    if !rogue_cast.is_empty() && honest_settled {
        sandbox.say(
            "sandbox",
            "phase 2: rogue nodes join a cluster whose honest nodes have their certificates",
        );
        announce_rogues(sandbox, &rogue_cast, topology).await?;
        start_agents(sandbox, &rogue_cast).await?;
        start_kubelets(sandbox, &rogue_cast)?;
        settle(sandbox, &rogue_cast, topology, options.timeout).await;
    }
    let stopped_agent = if honest_settled && topology == Topology::Routed {
        stop_victim_agent(sandbox, &rogue_cast, options.timeout).await?
    } else {
        None
    };
    sandbox.stop_narration();
    let mut rows = sandbox.rows().await?;
    let order = |node: &str| {
        cast.iter()
            .position(|(n, _)| n == node)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by(|a, b| {
        (order(&a.node), a.created, &a.name).cmp(&(order(&b.node), b.created, &b.name))
    });

    let narrator = sandbox.narrator().clone();
    narrator.raw("");
    narrator
        .raw("$ kubectl get csr   (the sandbox's view: node, requested SANs, condition, reason)");
    narrator.raw(csr::render_table(&rows));
    if let Some(stopped) = &stopped_agent {
        narrator.raw(footnote(stopped, &cast, &rows));
    }

    let proofs = prove(sandbox, &cast, &rows).await;
    let (surprises, mut problems) = judge(&cast, &rows, &proofs, topology);
    if let Some(stopped) = &stopped_agent
        && stopped.refused_after.is_none()
    {
        problems.push(format!(
            "after {}'s agent stopped, the approvers never counted a refused probe (rubber_stamp_proof_probes_total{{result=\"refused\"}} stayed at {} for {:?}): the squatter's claim of {} was not probed again",
            stopped.node, stopped.refused_before, options.timeout, stopped.address
        ));
    }
    for s in &surprises {
        narrator.say("note", s);
    }
    narrator.raw("");
    if problems.is_empty() {
        narrator.raw(format!(
            "RESULT: PASS — every honest node ({}) got an approved, issued serving certificate that verifies for its IP; no rogue node got one.{}",
            honest.join(", "),
            held_by_ownership(&cast, topology, stopped_agent.as_ref())
        ));
    } else {
        narrator.raw("RESULT: FAIL");
        for p in &problems {
            narrator.raw(format!("  - {p}"));
        }
    }
    Ok(Outcome {
        cast,
        rows,
        proofs,
        surprises,
        problems,
        topology: sandbox.topology(),
        stopped_agent,
    })
}

/// Routed topology, for the PASS line: the rogues the proof of ownership held.
fn held_by_ownership(
    cast: &[(String, Role)],
    topology: Topology,
    stopped: Option<&StoppedAgent>,
) -> String {
    let held: Vec<String> = cast
        .iter()
        .filter(|(_, role)| role.held_by_ownership(topology))
        .map(|(name, role)| {
            let reason = role.expected(topology).1;
            match (role, stopped) {
                (Role::Squatter { .. }, Some(s)) => format!(
                    "{name} ({reason}, even while {}'s agent is stopped)",
                    s.node
                ),
                _ => format!("{name} ({reason})"),
            }
        })
        .collect();
    if held.is_empty() {
        String::new()
    } else {
        format!(
            " The proof of address ownership (ip-sans-owned) held {}.",
            held.join(" and ")
        )
    }
}

/// The line under the table about the stopped agent and the squatter's rows.
fn footnote(stopped: &StoppedAgent, cast: &[(String, Role)], rows: &[CsrRow]) -> String {
    let Some((squatter, role)) = cast
        .iter()
        .find(|(_, r)| matches!(r, Role::Squatter { .. }))
    else {
        return String::new();
    };
    let (condition, reason) = role.expected(Topology::Routed);
    let mine: Vec<&CsrRow> = rows.iter().filter(|r| &r.node == squatter).collect();
    let held = !mine.is_empty()
        && mine
            .iter()
            .all(|r| r.condition == condition && r.reason == reason);
    let states = mine
        .iter()
        .map(|r| format!("{} {} ({})", r.name, r.condition_text(), r.reason))
        .collect::<Vec<_>>()
        .join(", ");
    let refused = match (stopped.refused_after, &stopped.prober) {
        (Some(after), Some(prober)) => format!(
            "{prober} counted the refused probe of {}:{PROOF_PORT}, {} → {after}",
            stopped.address, stopped.refused_before
        ),
        _ => format!(
            "no refused probe of {}:{PROOF_PORT} was counted",
            stopped.address
        ),
    };
    if held {
        format!(
            "  ({squatter}: {reason} even while {}'s agent is stopped — {refused}; {states})",
            stopped.node
        )
    } else {
        format!(
            "  ({squatter}: {states} after {}'s agent stopped, expected {condition:?} ({reason}); {refused})",
            stopped.node
        )
    }
}

/// The name of the counter of the approver's probes by result.
const PROBES_METRIC: &str = "rubber_stamp_proof_probes_total";

/// Each replica's `rubber_stamp_proof_probes_total{result="<result>"}` (0 when it has
/// none yet, or its admin port does not answer).
async fn probe_counts(sandbox: &Sandbox, result: &str) -> Vec<(String, f64)> {
    let label = format!("result=\"{result}\"");
    let mut counts = Vec::new();
    for replica in sandbox.approvers() {
        let text = replica.metrics().await.unwrap_or_default();
        let count = counter_value(&text, PROBES_METRIC, &label).unwrap_or(0.0);
        counts.push((replica.name().to_owned(), count));
    }
    counts
}

/// The value of `metric{…label…}` in Prometheus text: the first sample of that name
/// whose labels include `label` (`result="refused"`).
fn counter_value(text: &str, metric: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            if !labels.split(',').any(|kv| kv.trim() == label) {
                return None;
            }
            value.split_whitespace().next()?.parse().ok()
        })
}

/// Routed topology, once the rogues settled: stops the agent of the squatter's victim
/// and waits until the approvers count a refused probe — the squatted address, still
/// delivered to the victim alone, now refuses the connection there. Says what happens;
/// `None` when there is no squatter.
async fn stop_victim_agent(
    sandbox: &mut Sandbox,
    rogues: &[(String, Role)],
    within: Duration,
) -> Result<Option<StoppedAgent>, SandboxError> {
    let Some((squatter, victim)) = rogues.iter().find_map(|(name, role)| match role {
        Role::Squatter { victim } => Some((name.clone(), victim.clone())),
        _ => None,
    }) else {
        return Ok(None);
    };
    let address = victim_ip(sandbox, &victim)?;
    let before = probe_counts(sandbox, "refused").await;
    let refused_before: f64 = before.iter().map(|(_, c)| c).sum();
    sandbox.stop_agent(&victim).await?;
    sandbox.say(
        &victim,
        format!(
            "its agent is stopped (SIGTERM, as a DaemonSet rollout would), and its proof listener on port {PROOF_PORT} with it; the router still delivers {address} to {victim} alone, so the approver's next probe of {squatter}'s claim {address} is refused by {victim}'s kernel — a refusal while {squatter}'s agent listens on all its addresses is still AddressNotOwned → expect {squatter}'s CSR to stay Pending (AddressNotOwned) even while {victim}'s agent is stopped"
        ),
    );
    let metric = format!("{PROBES_METRIC}{{result=\"refused\"}}");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = probe_counts(sandbox, "refused").await;
        let refused: f64 = now.iter().map(|(_, c)| c).sum();
        if refused > refused_before {
            let prober = now
                .iter()
                .find(|(name, count)| {
                    before
                        .iter()
                        .find(|(b, _)| b == name)
                        .is_none_or(|(_, was)| count > was)
                })
                .map(|(name, _)| name.clone());
            let rows = sandbox.rows().await?;
            let states = rows
                .iter()
                .filter(|r| r.node == squatter)
                .map(|r| format!("{} {} ({})", r.name, r.condition_text(), r.reason))
                .collect::<Vec<_>>()
                .join(", ");
            sandbox.say(
                "approver",
                format!(
                    "{} probed {address}:{PROOF_PORT} again and was refused ({metric} {refused_before} → {refused}): {squatter}'s agent never saw the probe; {squatter}: {states} — even while {victim}'s agent is stopped",
                    prober.as_deref().unwrap_or("the leader")
                ),
            );
            return Ok(Some(StoppedAgent {
                node: victim,
                address,
                refused_before,
                refused_after: Some(refused),
                prober,
            }));
        }
        if tokio::time::Instant::now() >= deadline {
            sandbox.say(
                "approver",
                format!(
                    "no refused probe within {within:?} of {victim}'s agent stopping ({metric} still {refused_before})"
                ),
            );
            return Ok(Some(StoppedAgent {
                node: victim,
                address,
                refused_before,
                refused_after: None,
                prober: None,
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Says what each rogue is about to do and sets the squatter's and the claimer's
/// claims up.
async fn announce_rogues(
    sandbox: &mut Sandbox,
    rogues: &[(String, Role)],
    topology: Topology,
) -> Result<(), SandboxError> {
    for (name, role) in rogues {
        match role {
            Role::Thief { victim } => {
                let ip = victim_ip(sandbox, victim)?;
                sandbox.say(
                    name,
                    format!(
                        "rogue: its kubelet will ask for a certificate naming {victim}'s address {ip} too; its agent attests only its own addresses → expect Denied (AddressNotAttested)"
                    ),
                );
            }
            Role::Squatter { victim } => {
                let ip = victim_ip(sandbox, victim)?;
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                let net = IpNet::new(ip, prefix)
                    .map_err(|e| SandboxError::Setup(format!("address {ip}: {e}")))?;
                let on = sandbox
                    .node_mut(name)?
                    .claim_address(DUMMY_INTERFACE, net)
                    .await?;
                let expect = match topology {
                    Topology::Bridge => format!(
                        "expect Pending (AddressConflict: {victim} attests it too, and {victim}'s Node lists it)"
                    ),
                    Topology::Routed => format!(
                        "expect Pending (AddressNotOwned: the approver's probe to {ip}:{PROOF_PORT} reaches {victim}'s agent, not this node's — the router delivers {ip} to {victim} alone)"
                    ),
                };
                sandbox.say(
                    name,
                    format!(
                        "rogue: adds {victim}'s address {ip} to {on}, so its agent attests it as its own, and its kubelet asks for it → {expect}"
                    ),
                );
            }
            Role::Claimer => {
                let network = sandbox.network().ok_or_else(|| {
                    SandboxError::Setup(format!("{name}: the claimer needs simulated hosts"))
                })?;
                let subnet = network.ipv4_subnet();
                let claimed = IpNet::V4(network.allocate_ipv4()?);
                let ip = claimed.addr();
                let on = sandbox
                    .node_mut(name)?
                    .claim_address(DUMMY_INTERFACE, claimed)
                    .await?;
                sandbox.say(
                    name,
                    format!(
                        "rogue: adds {ip}, an address of the node subnet {subnet} that no node has, to {on}, so its agent attests it, and its kubelet asks for it besides its own → expect Pending (OwnershipUnproven: nothing else catches it — the address is allowed, attested by this node alone, and no other node's; but the approver's probe to {ip}:{PROOF_PORT} reaches no one, as the router delivers {ip} nowhere, and `required` holds the SAN until proven)"
                    ),
                );
            }
            Role::CloudRogue { victim } => {
                sandbox.node_mut(name)?.set_cloud(CloudInstance {
                    public: CLOUD_PUBLIC,
                    external_dns: None,
                    in_node_status: false,
                });
                sandbox.say(
                    name,
                    format!(
                        "rogue: its metadata service (root on the node controls what its agent reads) states {victim}'s public address {CLOUD_PUBLIC}, and its kubelet asks for it → expect Pending (AddressConflict: {victim}'s metadata states it and {victim}'s Node lists it)"
                    ),
                );
            }
            Role::Honest | Role::Cloud => {}
            Role::ForeignToken => {
                let admin = sandbox.admin();
                tokens::ensure_service_account(&admin, FOREIGN_NAMESPACE, FOREIGN_ACCOUNT).await?;
                let pod = tokens::create_pod(
                    &admin,
                    FOREIGN_NAMESPACE,
                    &format!("{FOREIGN_ACCOUNT}-{name}"),
                    FOREIGN_ACCOUNT,
                    name,
                    None,
                )
                .await?;
                let token = tokens::request_token(
                    &admin,
                    FOREIGN_NAMESPACE,
                    FOREIGN_ACCOUNT,
                    Some(&pod),
                    tokens::AUDIENCE,
                )
                .await?;
                sandbox.node_mut(name)?.set_token(&token)?;
                sandbox.say(
                    name,
                    format!(
                        "rogue: root on the node hands its agent the projected token of another Pod on the node (system:serviceaccount:{FOREIGN_NAMESPACE}:{FOREIGN_ACCOUNT}, audience {:?}, genuinely signed) → expect every stream refused (not the agent ServiceAccount) and its CSR Pending (AwaitingAttestation)",
                        tokens::AUDIENCE
                    ),
                );
            }
            Role::Silent => sandbox.say(
                name,
                "its agent never runs: nothing attests this node → expect Pending (AwaitingAttestation)",
            ),
            Role::DnsThief => {
                sandbox.node_mut(name)?.set_hostname(SERVICE_HOSTNAME);
                sandbox.say(
                    name,
                    format!(
                        "rogue: root renames the node {SERVICE_HOSTNAME}, so its agent attests that hostname and its kubelet asks for a certificate with that name → expect Denied (NameNotAllowed: a cluster Service name; nor would a hostname that is not the node name count)"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Starts the agents of `nodes` (except silent ones) and waits until every
/// replica has their attestations.
async fn start_agents(sandbox: &mut Sandbox, nodes: &[(String, Role)]) -> Result<(), SandboxError> {
    let started: Vec<&str> = nodes
        .iter()
        .filter(|(_, r)| *r != Role::Silent)
        .map(|(n, _)| n.as_str())
        .collect();
    if started.is_empty() {
        return Ok(());
    }
    for name in &started {
        sandbox.start_agent(name)?;
    }
    let agents: Vec<&str> = nodes
        .iter()
        .filter(|(_, r)| r.attests())
        .map(|(n, _)| n.as_str())
        .collect();
    let refused: Vec<&str> = nodes
        .iter()
        .filter(|(_, r)| *r == Role::ForeignToken)
        .map(|(n, _)| n.as_str())
        .collect();
    if !refused.is_empty() {
        wait_refused(sandbox, &refused, "token_service_account").await?;
    }
    if agents.is_empty() {
        return Ok(());
    }
    let how = match sandbox.mode() {
        Mode::Namespaces => format!(
            "rubber-stamp-agent started in {}, dialing {} (each host's /etc/hosts resolves it to every replica)",
            agents.join(", "),
            sandbox.context().approver_service
        ),
        Mode::Loopback { .. } => format!(
            "in-process attesters started for {} (loopback mode: facts supplied by the sandbox)",
            agents.join(", ")
        ),
    };
    sandbox.say("agents", how);
    sandbox
        .wait_attested(&agents, Duration::from_secs(20))
        .await
}

/// Waits until every replica has refused a stream for `reason` as often as there are
/// `nodes` (its `refused_streams` counter), and says so.
async fn wait_refused(sandbox: &Sandbox, nodes: &[&str], reason: &str) -> Result<(), SandboxError> {
    let metric = format!("rubber_stamp_attestation_refused_streams_total{{reason=\"{reason}\"}}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut counts = Vec::new();
        for replica in sandbox.approvers() {
            let text = replica.metrics().await.unwrap_or_default();
            let count = text
                .lines()
                .find_map(|l| l.strip_prefix(metric.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            counts.push((replica.name().to_owned(), count));
        }
        let needed = nodes.len() as f64;
        if counts.iter().all(|(_, c)| *c >= needed) {
            sandbox.say(
                "approver",
                format!(
                    "refused the streams of {} ({reason}): {}",
                    nodes.join(", "),
                    counts
                        .iter()
                        .map(|(r, c)| format!("{r} {metric} {c}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SandboxError::Setup(format!(
                "the approvers did not refuse the streams of {} ({reason}) within 20 s: {counts:?}",
                nodes.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the kubelets of `nodes`; the thief asks for its victim's address too, the
/// claimer for the address it claimed.
fn start_kubelets(sandbox: &mut Sandbox, nodes: &[(String, Role)]) -> Result<(), SandboxError> {
    for (name, role) in nodes {
        let ips: Option<Vec<IpAddr>> = match role {
            Role::Thief { victim } => {
                let mut ips = sandbox.node(name)?.addresses();
                ips.push(victim_ip(sandbox, victim)?);
                Some(ips)
            }
            Role::Claimer => {
                let node = sandbox.node(name)?;
                let mut ips = node.addresses();
                ips.extend(node.claimed_addresses());
                Some(ips)
            }
            _ => None,
        };
        sandbox.start_kubelet(name, ips.as_deref())?;
    }
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    sandbox.say(
        "kubelets",
        format!(
            "kubelet-sim started on {}: each creates a kubernetes.io/kubelet-serving CSR with its node's client certificate, as a kubelet with serverTLSBootstrap: true does",
            names.join(", ")
        ),
    );
    Ok(())
}

/// Waits until every CSR of `nodes` is where its role says; says so if not.
async fn settle(
    sandbox: &Sandbox,
    nodes: &[(String, Role)],
    topology: Topology,
    within: Duration,
) -> bool {
    let settled = sandbox
        .wait_rows("the CSRs to reach their expected state", within, |rows| {
            nodes.iter().all(|(name, role)| {
                let mine: Vec<&CsrRow> = rows.iter().filter(|r| &r.node == name).collect();
                let (condition, reason) = role.expected(topology);
                !mine.is_empty()
                    && mine.iter().all(|r| match condition {
                        Condition::Approved => r.approved_and_issued(),
                        _ => r.condition == condition && r.reason == reason,
                    })
            })
        })
        .await;
    match settled {
        Ok(_) => true,
        Err(e) => {
            sandbox.say("sandbox", format!("not everything settled: {e}"));
            false
        }
    }
}

/// The IPv4 address of `victim` (the one a rogue targets).
fn victim_ip(sandbox: &Sandbox, victim: &str) -> Result<IpAddr, SandboxError> {
    sandbox
        .node(victim)?
        .ipv4()
        .map(IpAddr::V4)
        .ok_or_else(|| SandboxError::Setup(format!("{victim} has no IPv4 address")))
}

/// Connects to every honest kubelet as kube-apiserver would, and shows that
/// no rogue has a certificate and no node can pose as another.
async fn prove(sandbox: &Sandbox, cast: &[(String, Role)], rows: &[CsrRow]) -> Vec<ProofLine> {
    let narrator = sandbox.narrator().clone();
    let ca = sandbox.control().cluster.ca_pem().to_owned();
    narrator.raw("");
    narrator.raw(
        "CIS 1.2.5 proof: connect to each kubelet as kube-apiserver does with --kubelet-certificate-authority (trusting only the cluster CA, expecting the node's IP):",
    );
    let mut lines = Vec::new();
    for (name, role) in cast {
        let Ok(node) = sandbox.node(name) else {
            continue;
        };
        if role.is_rogue() {
            let mine: Vec<&CsrRow> = rows.iter().filter(|r| &r.node == name).collect();
            let state = mine
                .iter()
                .map(|r| format!("{} {} ({})", r.name, r.condition_text(), r.reason))
                .collect::<Vec<_>>()
                .join(", ");
            let issued = mine.iter().any(|r| r.issued);
            let serving = node.kubelet_serving();
            let line = ProofLine {
                node: name.clone(),
                addr: serving,
                expected: None,
                result: if issued || serving.is_some() {
                    Err(format!("HAS A CERTIFICATE: {state}"))
                } else {
                    Err(format!(
                        "no certificate: {state}; its kubelet-sim has nothing to serve with"
                    ))
                },
                should_verify: false,
            };
            narrator.raw(format!(
                "  {name:<10} {}",
                line.result.as_ref().err().map_or("", String::as_str)
            ));
            lines.push(line);
            continue;
        }
        let Some(serving) = node.kubelet_serving() else {
            let line = ProofLine {
                node: name.clone(),
                addr: None,
                expected: None,
                result: Err("its kubelet-sim is not serving".to_owned()),
                should_verify: true,
            };
            narrator.raw(format!(
                "  {name:<10} FAILED: its kubelet-sim is not serving"
            ));
            lines.push(line);
            continue;
        };
        for expected in node.addresses() {
            let addr = match node.placement() {
                super::node::Placement::Host(_) => SocketAddr::new(expected, serving.port()),
                super::node::Placement::Loopback { .. } => serving,
            };
            let result = proof::verify_kubelet(&ca, addr, expected)
                .await
                .map_err(|e| e.to_string());
            match &result {
                Ok(v) => narrator.raw(format!(
                    "  {name:<10} {addr} verified for {expected}: {} issued by {}, SANs {}, valid until {}; GET /healthz → {}",
                    v.subject,
                    v.issuer,
                    v.sans.join(", "),
                    v.not_after,
                    v.healthz
                )),
                Err(e) => narrator.raw(format!("  {name:<10} {addr} FAILED for {expected}: {e}")),
            }
            lines.push(ProofLine {
                node: name.clone(),
                addr: Some(addr),
                expected: Some(expected),
                result,
                should_verify: true,
            });
        }
        // A cloud node is reached at its public address through 1:1 NAT: its certificate
        // must verify for that address too.
        if let Some(public) = node.cloud().map(|c| c.public) {
            let addr = match (node.placement(), node.ipv4()) {
                (super::node::Placement::Host(_), Some(private)) => {
                    SocketAddr::new(IpAddr::V4(private), serving.port())
                }
                _ => serving,
            };
            let result = proof::verify_kubelet(&ca, addr, public)
                .await
                .map_err(|e| e.to_string());
            match &result {
                Ok(v) => narrator.raw(format!(
                    "  {name:<10} {addr} verified for its public address {public} (1:1 NAT): SANs {}",
                    v.sans.join(", ")
                )),
                Err(e) => narrator.raw(format!(
                    "  {name:<10} {addr} FAILED for its public address {public}: {e}"
                )),
            }
            lines.push(ProofLine {
                node: name.clone(),
                addr: Some(addr),
                expected: Some(public),
                result,
                should_verify: true,
            });
        }
    }
    // A node with a valid certificate cannot pose as another one.
    let honest: Vec<&str> = cast
        .iter()
        .filter(|(_, r)| !r.is_rogue())
        .map(|(n, _)| n.as_str())
        .collect();
    if let [first, second, ..] = honest.as_slice()
        && let (Ok(a), Ok(b)) = (sandbox.node(first), sandbox.node(second))
        && let (Some(victim), Some(impostor)) = (a.ipv4(), b.kubelet_serving())
    {
        let result = proof::verify_kubelet(&ca, impostor, IpAddr::V4(victim))
            .await
            .map_err(|e| e.to_string());
        match &result {
            Ok(_) => narrator.raw(format!(
                "  {second:<10} its certificate was ACCEPTED for {first}'s address {victim}"
            )),
            Err(e) => narrator.raw(format!(
                "  {second:<10} its valid certificate offered for {first}'s address {victim} is refused ({e}): a node cannot pose as another"
            )),
        }
        lines.push(ProofLine {
            node: (*second).to_owned(),
            addr: Some(impostor),
            expected: Some(IpAddr::V4(victim)),
            result,
            should_verify: false,
        });
    }
    lines
}

/// Surprises (rogue CSRs ending other than expected, but unapproved) and
/// problems (what fails the run). On the routed topology the squatter and the claimer
/// must end exactly as expected: held by the proof of ownership, their reasons shown.
fn judge(
    cast: &[(String, Role)],
    rows: &[CsrRow],
    proofs: &[ProofLine],
    topology: Topology,
) -> (Vec<String>, Vec<String>) {
    let mut surprises = Vec::new();
    let mut problems = Vec::new();
    for (name, role) in cast {
        let mine: Vec<&CsrRow> = rows.iter().filter(|r| &r.node == name).collect();
        if !role.is_rogue() {
            if mine.is_empty() {
                problems.push(format!("{name} (honest) created no CSR"));
            }
            for r in &mine {
                if !r.approved_and_issued() {
                    problems.push(format!(
                        "{name} (honest): {} is {} ({}) instead of Approved,Issued",
                        r.name,
                        r.condition_text(),
                        r.reason
                    ));
                }
            }
            continue;
        }
        let (condition, reason) = role.expected(topology);
        let strict = role.held_by_ownership(topology);
        for r in &mine {
            if r.condition == Condition::Approved || r.issued {
                problems.push(format!("{name} (rogue): {} was APPROVED", r.name));
            } else if r.condition != condition || r.reason != reason {
                let what = format!(
                    "{name}: {} ended {} ({}), expected {:?} ({reason})",
                    r.name,
                    r.condition_text(),
                    r.reason,
                    condition
                );
                if strict {
                    problems.push(format!("{what}, from the proof of address ownership"));
                } else {
                    surprises.push(what);
                }
            }
        }
        if mine.is_empty() {
            if strict {
                problems.push(format!("{name} (rogue): created no CSR"));
            } else {
                surprises.push(format!("{name}: created no CSR"));
            }
        }
    }
    for p in proofs {
        if !p.as_expected() {
            problems.push(match &p.result {
                Ok(_) => format!(
                    "{}: a certificate verified where none should ({:?} for {:?})",
                    p.node, p.addr, p.expected
                ),
                Err(e) => format!("{}: proof failed: {e}", p.node),
            });
        }
    }
    (surprises, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, condition: Condition, reason: &str) -> CsrRow {
        CsrRow {
            name: format!("csr-{node}"),
            node: node.to_owned(),
            dns: vec![node.to_owned()],
            ips: Vec::new(),
            condition,
            issued: condition == Condition::Approved,
            approvals: usize::from(condition == Condition::Approved),
            reason: reason.to_owned(),
            message: String::new(),
            created: None,
        }
    }

    #[test]
    fn the_claimer_joins_only_a_routed_cast() {
        let options = ScenarioOptions::default();
        let names = |t| {
            cast(&options, t)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert!(!names(Topology::Bridge).contains(&"claimer".to_owned()));
        let routed = names(Topology::Routed);
        let squatter = routed.iter().position(|n| n == "squatter");
        let claimer = routed.iter().position(|n| n == "claimer");
        assert_eq!(claimer, squatter.map(|s| s + 1), "{routed:?}");
        let no_rogues = ScenarioOptions {
            rogues: false,
            ..ScenarioOptions::default()
        };
        assert!(
            cast(&no_rogues, Topology::Routed)
                .iter()
                .all(|(_, r)| !r.is_rogue())
        );
    }

    #[test]
    fn the_squatter_is_a_conflict_on_the_bridge_and_not_owned_when_routed() {
        let squatter = Role::Squatter {
            victim: "worker-1".into(),
        };
        assert_eq!(
            squatter.expected(Topology::Bridge),
            (Condition::Pending, "AddressConflict")
        );
        assert_eq!(
            squatter.expected(Topology::Routed),
            (Condition::Pending, "AddressNotOwned")
        );
        assert_eq!(
            Role::Claimer.expected(Topology::Routed),
            (Condition::Pending, "OwnershipUnproven")
        );
        assert!(Role::Claimer.is_rogue());
        assert!(squatter.held_by_ownership(Topology::Routed));
        assert!(!squatter.held_by_ownership(Topology::Bridge));
        assert!(
            !Role::Thief {
                victim: "worker-1".into()
            }
            .held_by_ownership(Topology::Routed)
        );
    }

    #[test]
    fn on_the_routed_topology_a_squatter_held_for_another_reason_fails_the_run() {
        let cast = vec![
            (
                "squatter".to_owned(),
                Role::Squatter {
                    victim: "worker-1".into(),
                },
            ),
            ("no-agent".to_owned(), Role::Silent),
        ];
        let rows = [
            row("squatter", Condition::Pending, "AddressConflict"),
            row("no-agent", Condition::Pending, "AwaitingAttestation"),
        ];
        let (surprises, problems) = judge(&cast, &rows, &[], Topology::Bridge);
        assert!(surprises.is_empty() && problems.is_empty());
        let (surprises, problems) = judge(&cast, &rows, &[], Topology::Routed);
        assert!(surprises.is_empty(), "{surprises:?}");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("AddressNotOwned"), "{problems:?}");
        // Another rogue ending unexpectedly but unapproved stays a surprise.
        let rows = [
            row("squatter", Condition::Pending, "AddressNotOwned"),
            row("no-agent", Condition::Pending, "SomethingElse"),
        ];
        let (surprises, problems) = judge(&cast, &rows, &[], Topology::Routed);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(surprises.len(), 1, "{surprises:?}");
        // And an approval always fails.
        let rows = [row("no-agent", Condition::Approved, "AutoApproved")];
        let (_, problems) = judge(&cast[1..], &rows, &[], Topology::Bridge);
        assert!(problems[0].contains("APPROVED"), "{problems:?}");
    }

    #[test]
    fn probe_counters_are_read_by_their_result_label() {
        let text = "# HELP rubber_stamp_proof_probes_total Probes.\n\
                    # TYPE rubber_stamp_proof_probes_total counter\n\
                    rubber_stamp_proof_probes_total{result=\"proven\"} 7\n\
                    rubber_stamp_proof_probes_total{result=\"refused\"} 2\n\
                    rubber_stamp_proof_probes_total_created{result=\"refused\"} 1.7e9\n";
        let label = "result=\"refused\"";
        assert_eq!(counter_value(text, PROBES_METRIC, label), Some(2.0));
        assert_eq!(
            counter_value(text, PROBES_METRIC, "result=\"proven\""),
            Some(7.0)
        );
        assert_eq!(
            counter_value(text, PROBES_METRIC, "result=\"unanswered\""),
            None
        );
        let two_labels =
            "rubber_stamp_proof_probes_total{replica=\"a\",result=\"refused\"} 3 1700000000\n";
        assert_eq!(counter_value(two_labels, PROBES_METRIC, label), Some(3.0));
    }
}
