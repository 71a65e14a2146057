//! Check 15, proof of address ownership, against the testbed cluster: the acting replica
//! sends a nonce to each IP SAN on the agents' proof port, and only the requesting node's
//! agent reporting it on its own stream proves the address.
//!
//! A CSR may not name a loopback address (check 6), so the SANs probed here are this
//! machine's own addresses (an IPv4 one, and an IPv6 one where there is one), which the
//! kernel delivers locally; each test has its own proof port, so tests running at once
//! never share a listener. What is not a SAN — a node's listener that must not receive a
//! probe — listens on a loopback address of its own (`127.18.<test>.<host>`). The agents
//! are the kit's scripted agents running the real agent's proof listener, or raw streams
//! for receipts no agent would send; the test itself then listens on the SAN to learn the
//! nonces the approver sends, or takes the probe's connection and never reports it (an
//! address nobody answers for, whatever the machine's routing does with others).

use std::collections::VecDeque;
use std::error::Error;
use std::hash::{BuildHasher as _, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt as _;
use rubber_stamp_agent::facts::SystemFacts;
use rubber_stamp_agent::proof::FrameOutcome;
use rubber_stamp_approver::controller::ControllerConfig;
use rubber_stamp_approver::k8s::csr_input;
use rubber_stamp_approver::metrics::ResultLabel;
use rubber_stamp_approver::proof::{ProofConfig, ProofNonce};
use rubber_stamp_core::names::ip_problem;
use rubber_stamp_core::{
    AttestationLookup as _, CheckName, Observed, Ownership, OwnershipLookup as _, OwnershipProof,
    Policy, ProofMode, ProofState, ServiceSet, decide,
};
use rubber_stamp_e2e::controller::{
    ControllerBed, Replica, ScriptedAgent, conditions, eventually, is_approved, wait_for_csr,
};
use rubber_stamp_proto::proof::{FRAME_BYTES, NONCE_BYTES, decode};
use rubber_stamp_testkit::raw::{self, RawStream};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

type TestResult = Result<(), Box<dyn Error>>;

/// The bytes every nonce of one replica begins with (`approver/src/proof`, its tag).
const TAG_BYTES: usize = 8;

/// Generous bound for things that take milliseconds when they work, on a busy machine.
const WITHIN: Duration = Duration::from_secs(20);

/// Every result of `rubber_stamp_proof_receipts_total`.
const RECEIPT_RESULTS: [&str; 7] = [
    "proven",
    "other_node",
    "spent",
    "other_replica",
    "unknown",
    "invalid",
    "rate_limited",
];

/// Every result of `rubber_stamp_proof_probes_total`.
const PROBE_RESULTS: [&str; 4] = ["proven", "other_node", "refused", "unanswered"];

/// Loopback address `host` of test `test`, `127.18.<test>.<host>`: where a listener that
/// must not receive the probes listens.
fn loopback(test: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 18, test, host))
}

/// A documentation address (`198.51.100.<host>`, TEST-NET-2) a node attests and no test
/// probes.
fn elsewhere(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, host))
}

/// One of this machine's own addresses of the family that a CSR may name (not loopback,
/// link-local, …) and a listener can bind: probes to it are delivered locally.
fn host_address(v6: bool) -> Option<IpAddr> {
    let facts = SystemFacts::new(
        "/etc/machine-id".into(),
        "/proc/sys/kernel/random/boot_id".into(),
    )
    .ok()?
    .gather()
    .ok()?;
    let mut candidates: Vec<IpAddr> = facts
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter().map(|n| n.addr()))
        .filter(|ip| ip.is_ipv6() == v6 && ip_problem(*ip).is_none())
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .find(|ip| std::net::TcpListener::bind((*ip, 0)).is_ok())
}

/// This machine's IPv4 address the tests probe.
fn host_v4() -> Result<IpAddr, Box<dyn Error>> {
    host_address(false).ok_or_else(|| {
        "this machine has no IPv4 address but loopback, and a CSR may not name a loopback address: the ownership tests probe one of the machine's own addresses".into()
    })
}

/// A port free on `ip` now, for the test's proof port (the agent's listener binds it).
fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Listens on `ip:port` (port 0: any).
async fn listen(ip: IpAddr, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((ip, port)).await
}

/// Probes to `port`, with timings short enough for a test: 1 s per probe, again after
/// 500 ms doubling to 2 s.
fn proof_config(port: u16) -> ProofConfig {
    ProofConfig {
        port,
        timeout: Duration::from_secs(1),
        retry_min: Duration::from_millis(500),
        retry_max: Duration::from_secs(2),
        ..ProofConfig::default()
    }
}

/// The policy of `config` with `ownershipProof: {default: mode}`.
fn with_mode(config: &mut ControllerConfig, mode: ProofMode) {
    let mut policy = Policy::clone(&config.policy);
    policy.ownership_proof = OwnershipProof {
        default: mode,
        ..OwnershipProof::default()
    };
    config.policy = Arc::new(policy);
}

/// A bed and its acting replica, probing as `proof` says, under `ownershipProof` `mode`
/// (`None`: the default policy).
async fn bed_with(
    mode: Option<ProofMode>,
    proof: ProofConfig,
) -> Result<(ControllerBed, Replica), Box<dyn Error>> {
    let bed = ControllerBed::start().await?;
    let mut config = bed.controller_config("approver-0");
    // The bed turns the proof off for the other suites; `None` is the shipped default.
    with_mode(&mut config, mode.unwrap_or_default());
    let replica = bed.replica_with_proof(config, proof).await?;
    replica.wait_acting(WITHIN).await?;
    Ok((bed, replica))
}

fn prefixed(addresses: &[IpAddr]) -> Vec<(IpAddr, u32)> {
    addresses
        .iter()
        .map(|ip| (*ip, if ip.is_ipv4() { 24 } else { 64 }))
        .collect()
}

/// `node`'s scripted agent with `addresses` on `eth0`, running the agent's proof listener
/// on `listen`, reported. It connects from 127.0.0.1, on its `lo`, as the replica
/// listens there.
async fn listening_agent(
    bed: &ControllerBed,
    replica: &Replica,
    node: &str,
    addresses: &[IpAddr],
    listen: SocketAddr,
) -> Result<ScriptedAgent, Box<dyn Error>> {
    let agent = ScriptedAgent::builder(
        &bed.pki,
        node,
        &[replica.addrs().grpc],
        &prefixed(addresses),
    )
    .proof_listener(listen)
    .connect()
    .await?;
    agent.report().await?;
    Ok(agent)
}

/// A raw Attest stream as `node`, that reported `addresses` on `eth0` and `port` as its
/// proof port, and whose Ack accepts receipts.
async fn raw_node(
    bed: &ControllerBed,
    replica: &Replica,
    node: &str,
    addresses: &[IpAddr],
    port: u16,
) -> Result<RawStream, Box<dyn Error>> {
    let leaf = bed.pki.node(node)?;
    let mut stream = raw::attest(&bed.pki, replica.addrs().grpc, Some(&leaf)).await?;
    let report = raw::with_proof_port(raw::report(1, node, &prefixed(addresses)), u32::from(port));
    let ack = stream.report(report).await?;
    assert!(ack.accepts_receipts, "the approver takes receipts: {ack:?}");
    Ok(stream)
}

fn probes(replica: &Replica, result: &'static str) -> u64 {
    let proof = &replica.controller_metrics().proof;
    proof
        .probes
        .get(&ResultLabel { result })
        .map_or(0, |c| c.get())
}

fn probes_total(replica: &Replica) -> u64 {
    PROBE_RESULTS.iter().map(|r| probes(replica, r)).sum()
}

fn probes_limited(replica: &Replica, result: &'static str) -> u64 {
    let proof = &replica.controller_metrics().proof;
    proof
        .probes_limited
        .get(&ResultLabel { result })
        .map_or(0, |c| c.get())
}

fn receipts(replica: &Replica, result: &'static str) -> u64 {
    let proof = &replica.controller_metrics().proof;
    proof
        .receipts
        .get(&ResultLabel { result })
        .map_or(0, |c| c.get())
}

fn receipts_total(replica: &Replica) -> u64 {
    RECEIPT_RESULTS.iter().map(|r| receipts(replica, r)).sum()
}

/// The receipts counted so far, by result, for a failure's message.
fn receipt_counts(replica: &Replica) -> Vec<(&'static str, u64)> {
    RECEIPT_RESULTS
        .iter()
        .map(|r| (*r, receipts(replica, r)))
        .collect()
}

fn unproven_approvals(replica: &Replica) -> u64 {
    replica.controller_metrics().proof.unproven_approvals.get()
}

/// The latest probe of `san` for `csr` requested by `node`, as the replica's book has it.
fn proof_of(replica: &Replica, csr: &str, node: &str, san: IpAddr) -> Option<ProofState> {
    replica.store().proofs().proof(csr, node, san)
}

fn is_proven(state: Option<ProofState>) -> bool {
    matches!(state, Some(ProofState::Proven { .. }))
}

/// A nonce nobody sent: 32 random bytes (which no replica's tag begins, as far as the
/// approver can tell: another replica's).
fn made_up_nonce() -> ProofNonce {
    let state = RandomState::new();
    let mut nonce = [0; NONCE_BYTES];
    for (i, chunk) in nonce.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&state.hash_one(i).to_le_bytes());
    }
    nonce
}

/// A nonce the replica never sent that begins as `real` does, with the replica's own tag
/// (the bytes every nonce it sends shares), as a forger who saw one of its probes could
/// make: random after the tag.
fn made_up_like(real: &ProofNonce) -> ProofNonce {
    let mut nonce = made_up_nonce();
    nonce[..TAG_BYTES].copy_from_slice(&real[..TAG_BYTES]);
    nonce
}

/// Whether the CSR `name` has neither been approved nor denied.
fn undecided(bed: &ControllerBed, name: &str) -> Result<bool, Box<dyn Error>> {
    Ok(conditions(&bed.csr(name)?.ok_or("the CSR is gone")?).is_empty())
}

/// Events regarding `name` with `reason`.
fn events_with(bed: &ControllerBed, name: &str, reason: &str) -> Vec<Event> {
    bed.events_about(name)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Warning Events regarding `name`, as `reason: note`.
fn warnings(bed: &ControllerBed, name: &str) -> Result<Vec<String>, Box<dyn Error>> {
    Ok(bed
        .events_about(name)?
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect())
}

/// Waits for an Event of `reason` regarding `name` whose note contains every one of
/// `needles`; returns it.
async fn event_with(
    bed: &ControllerBed,
    name: &str,
    reason: &str,
    needles: &[&str],
) -> Result<Event, Box<dyn Error>> {
    let mut found = None;
    let waited = eventually(
        &format!("a {reason} Event naming {needles:?}"),
        WITHIN,
        || {
            found = events_with(bed, name, reason).into_iter().find(|e| {
                let note = e.note.as_deref().unwrap_or_default();
                needles.iter().all(|n| note.contains(n))
            });
            found.is_some()
        },
    )
    .await;
    match (waited, found) {
        (Ok(()), Some(event)) => Ok(event),
        (waited, _) => Err(format!(
            "{waited:?}; Events about {name}: {:#?}",
            bed.events_about(name)?
                .into_iter()
                .map(|e| (e.type_, e.reason, e.note, e.series.map(|s| s.count)))
                .collect::<Vec<_>>()
        )
        .into()),
    }
}

/// [`event_with`]'s note.
async fn event_note(
    bed: &ControllerBed,
    name: &str,
    reason: &str,
    needles: &[&str],
) -> Result<String, Box<dyn Error>> {
    Ok(event_with(bed, name, reason, needles)
        .await?
        .note
        .unwrap_or_default())
}

/// Waits until `condition` holds of the replica; on timeout the error lists the receipts
/// and probes counted so far.
async fn until(
    replica: &Replica,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<(), Box<dyn Error>> {
    match eventually(what, WITHIN, &mut condition).await {
        Ok(()) => Ok(()),
        Err(error) => Err(format!(
            "{error}; receipts {:?}; probes {:?}",
            receipt_counts(replica),
            PROBE_RESULTS
                .iter()
                .map(|r| (*r, probes(replica, r)))
                .collect::<Vec<_>>()
        )
        .into()),
    }
}

/// Check 15's detail for the CSR `name` now: the core's verdict over the replica's own
/// attestations and probe results — the words the CSR's next Event would carry.
fn check_15_detail(
    bed: &ControllerBed,
    replica: &Replica,
    name: &str,
    policy: &Policy,
    port: u16,
) -> Result<String, Box<dyn Error>> {
    let csr = bed.csr(name)?.ok_or("the CSR is gone")?;
    let services = ServiceSet::listed([], []);
    let observed = Observed {
        attestations: replica.store(),
        nodes: None,
        services: Some(&services),
        access_review: None,
        ownership: Some(Ownership {
            lookup: replica.store().proofs(),
            port,
        }),
    };
    let verdict = decide(&csr_input(&csr), observed, policy, replica.store().now());
    let check = verdict
        .check(CheckName::IpSansOwned)
        .ok_or("no check 15 in the verdict")?;
    Ok(check.detail().to_owned())
}

// === the test's own proof listeners ===

/// A probe frame the approver wrote to one of the test's listeners.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// The address it arrived on (the SAN probed).
    local: IpAddr,
    /// The approver's address.
    sender: IpAddr,
    nonce: ProofNonce,
}

/// The test listening on a node's proof port in place of its agent: every frame the
/// approver writes, by the address it arrived on.
struct Catcher {
    frames: mpsc::UnboundedReceiver<Frame>,
    held: VecDeque<Frame>,
    _tasks: JoinSet<()>,
}

impl Catcher {
    fn start(listeners: Vec<TcpListener>) -> Self {
        let (tx, frames) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for listener in listeners {
            let tx = tx.clone();
            tasks.spawn(async move {
                let mut reading = JoinSet::new();
                while let Ok((mut conn, peer)) = listener.accept().await {
                    let Ok(local) = conn.local_addr() else {
                        continue;
                    };
                    let tx = tx.clone();
                    reading.spawn(async move {
                        let mut frame = [0; FRAME_BYTES];
                        if conn.read_exact(&mut frame).await.is_ok()
                            && let Some(nonce) = decode(&frame)
                        {
                            let _ = tx.send(Frame {
                                local: local.ip(),
                                sender: peer.ip(),
                                nonce,
                            });
                        }
                    });
                }
            });
        }
        Self {
            frames,
            held: VecDeque::new(),
            _tasks: tasks,
        }
    }

    /// The next frame sent to `san`.
    async fn next(&mut self, san: IpAddr) -> Result<Frame, Box<dyn Error>> {
        if let Some(i) = self.held.iter().position(|f| f.local == san)
            && let Some(frame) = self.held.remove(i)
        {
            return Ok(frame);
        }
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) if frame.local == san => return Ok(frame),
                Ok(Some(frame)) => self.held.push_back(frame),
                Ok(None) => return Err("the test's proof listeners stopped".into()),
                Err(_) => return Err(format!("no probe frame at {san} within {WITHIN:?}").into()),
            }
        }
    }

    /// Reports the next frames sent to `san`, as received on `local`, on `stream`, until
    /// one counts as `wanted` (a frame the test reads after its probe's deadline counts as
    /// spent; the next probe brings a fresh nonce). The nonce that counted.
    async fn report_until(
        &mut self,
        replica: &Replica,
        stream: &RawStream,
        san: IpAddr,
        local: IpAddr,
        wanted: &'static str,
    ) -> Result<ProofNonce, Box<dyn Error>> {
        for _ in 0..10 {
            let frame = self.next(san).await?;
            let (before, total) = (receipts(replica, wanted), receipts_total(replica));
            stream
                .send(raw::receipt(&frame.nonce, local, frame.sender))
                .await?;
            until(replica, "the receipt counted", || {
                receipts_total(replica) > total
            })
            .await?;
            if receipts(replica, wanted) > before {
                return Ok(frame.nonce);
            }
        }
        Err(format!(
            "ten receipts of probes to {san} and none counted as {wanted}: {:?}",
            receipt_counts(replica)
        )
        .into())
    }
}

// === a node that receives its own probes ===

/// Node-a's agent listens on `san`, which it attests and asks for under `required`: the
/// probe proves it and the CSR is approved, without a Warning.
async fn approved_on_its_own_address(san: IpAddr) -> TestResult {
    let port = free_port(san)?;
    let (bed, replica) = bed_with(Some(ProofMode::Required), proof_config(port)).await?;
    bed.add_node("node-a", &[san])?;
    let agent =
        listening_agent(&bed, &replica, "node-a", &[san], SocketAddr::new(san, port)).await?;

    let name = bed.create_csr("node-a", &[san]).await?.name_any();
    let csr = wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    assert!(probes(&replica, "proven") >= 1);
    assert!(receipts(&replica, "proven") >= 1);
    assert_eq!(
        probes(&replica, "other_node") + probes(&replica, "refused"),
        0
    );
    let progress = agent
        .wait_for_proof(WITHIN, |p| {
            p.frames(FrameOutcome::Received) >= 1 && p.sent() >= 1
        })
        .await;
    assert!(
        progress.is_some(),
        "the agent's own listener received the probe and reported it: {:?}",
        agent.proof_progress()
    );
    let approved = event_with(&bed, &name, "Approved", &[]).await?;
    assert_eq!(approved.type_.as_deref(), Some("Normal"));
    assert_eq!(unproven_approvals(&replica), 0);
    assert_eq!(
        warnings(&bed, &name)?,
        Vec::<String>::new(),
        "a probe its requester receives is no reason to warn"
    );
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_node_whose_agent_receives_the_probe_on_its_own_address_is_approved_under_required()
-> TestResult {
    approved_on_its_own_address(host_v4()?).await
}

#[tokio::test]
async fn a_node_whose_agent_receives_the_probe_on_its_ipv6_address_is_approved_under_required()
-> TestResult {
    let Some(san) = host_address(true) else {
        eprintln!(
            "skipped: this machine has no IPv6 address a CSR may name (only ::1 or fe80::/10)"
        );
        return Ok(());
    };
    approved_on_its_own_address(san).await
}

// === what the network says against the requester ===

#[tokio::test]
async fn a_squatters_csr_for_an_address_another_nodes_agent_receives_is_held_address_not_owned()
-> TestResult {
    let owned = host_v4()?;
    let port = free_port(owned)?;
    // The default policy (`preferred`): a receipt by another node holds the CSR all the same.
    let (bed, replica) = bed_with(None, proof_config(port)).await?;
    bed.add_node("node-a", &[owned])?;
    bed.add_node("node-b", &[elsewhere(3)])?;
    let owner = listening_agent(
        &bed,
        &replica,
        "node-a",
        &[owned],
        SocketAddr::new(owned, port),
    )
    .await?;
    // node-b put node-a's address on an interface of its own and reports it; its own
    // listener runs, on an address of its own.
    let squatter = listening_agent(
        &bed,
        &replica,
        "node-b",
        &[elsewhere(3), owned],
        SocketAddr::new(loopback(3, 3), port),
    )
    .await?;

    let name = bed.create_csr("node-b", &[owned]).await?.name_any();
    let held = event_with(
        &bed,
        &name,
        "AddressNotOwned",
        &[&format!(
            "a probe sent to {owned} was received by node-a's agent"
        )],
    )
    .await?;
    assert_eq!(held.type_.as_deref(), Some("Warning"));
    let note = held.note.unwrap_or_default();
    assert!(note.contains("not by node-b's"), "{note}");
    assert!(probes(&replica, "other_node") >= 1);
    assert!(receipts(&replica, "other_node") >= 1);
    assert!(matches!(
        proof_of(&replica, &name, "node-b", owned),
        Some(ProofState::ReceivedByOther { node, .. }) if node == "node-a"
    ));
    // Probed again, with the same answer; never approved, never denied.
    until(&replica, "a second probe of the squatted address", || {
        probes(&replica, "other_node") >= 2
    })
    .await?;
    assert!(undecided(&bed, &name)?);
    let received = owner
        .wait_for_proof(WITHIN, |p| p.frames(FrameOutcome::Received) >= 2)
        .await;
    assert!(received.is_some(), "{:?}", owner.proof_progress());
    assert_eq!(
        squatter.proof_progress().frames(FrameOutcome::Received),
        0,
        "the squatter never received its own CSR's probe"
    );
    squatter.stop().await;
    owner.stop().await;
    replica.stop().await?;
    Ok(())
}

/// Node-a, whose agent listens on an address of its own, asks for this machine's address,
/// which it attests and where the test takes the probe's connection and never reports it.
async fn unanswered(
    mode: ProofMode,
    test: u8,
) -> Result<
    (
        ControllerBed,
        Replica,
        ScriptedAgent,
        TcpListener,
        String,
        IpAddr,
    ),
    Box<dyn Error>,
> {
    let san = host_v4()?;
    let hole = listen(san, 0).await?;
    let port = hole.local_addr()?.port();
    let (bed, replica) = bed_with(Some(mode), proof_config(port)).await?;
    bed.add_node("node-a", &[san])?;
    let agent = listening_agent(
        &bed,
        &replica,
        "node-a",
        &[san],
        SocketAddr::new(loopback(test, 2), port),
    )
    .await?;
    let name = bed.create_csr("node-a", &[san]).await?.name_any();
    Ok((bed, replica, agent, hole, name, san))
}

#[tokio::test]
async fn under_required_an_address_nobody_answers_for_stays_pending_and_is_probed_again()
-> TestResult {
    let (bed, replica, agent, hole, name, san) = unanswered(ProofMode::Required, 4).await?;
    let event = event_with(&bed, &name, "OwnershipUnproven", &[&san.to_string()]).await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    until(&replica, "an unanswered probe", || {
        probes(&replica, "unanswered") >= 1
    })
    .await?;
    until(&replica, "a second attempt", || {
        matches!(
            proof_of(&replica, &name, "node-a", san),
            Some(ProofState::Unanswered { attempts, .. }) if attempts >= 2
        )
    })
    .await?;
    let Some(ProofState::Unanswered { what, .. }) = proof_of(&replica, &name, "node-a", san) else {
        return Err("no longer unanswered".into());
    };
    assert!(
        what.contains("the nonce was delivered") && what.contains("no agent reported it"),
        "{what}"
    );
    let mut policy = Policy::default();
    policy.ownership_proof.default = ProofMode::Required;
    let detail = check_15_detail(&bed, &replica, &name, &policy, hole.local_addr()?.port())?;
    assert!(
        detail.contains(&format!("no agent reported the probe sent to {san}"))
            && detail.contains(" attempts, the latest at "),
        "{detail}"
    );
    assert!(undecided(&bed, &name)?, "never approved, never denied");
    assert_eq!(receipts_total(&replica), 0);
    assert_eq!(unproven_approvals(&replica), 0);
    assert_eq!(agent.proof_progress().frames(FrameOutcome::Received), 0);
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn under_preferred_an_address_nobody_answers_for_is_approved_with_a_warning() -> TestResult {
    let (bed, replica, agent, _hole, name, san) = unanswered(ProofMode::Preferred, 14).await?;
    let csr = wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    assert!(probes(&replica, "unanswered") >= 1);
    until(&replica, "the unproven approval counted", || {
        unproven_approvals(&replica) == 1
    })
    .await?;
    let warning = event_with(
        &bed,
        &name,
        "OwnershipUnproven",
        &[&format!("approved with {san} not proven")],
    )
    .await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap_or_default();
    // Something at the address took the nonce (the test's listener) without reporting it:
    // that passes under preferred only after DELIVERED_UNREPORTED_BEFORE_PASSING tries in
    // a row, so a moment's flood of the owner's proof port cannot let a squatter through.
    assert!(
        note.contains(&format!("no agent reported the probe sent to {san}"))
            && note.contains(&format!(
                "{} attempts",
                rubber_stamp_core::ownership::DELIVERED_UNREPORTED_BEFORE_PASSING
            )),
        "{note}"
    );
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_refusal_is_no_evidence_while_the_requester_listens_on_one_address_only() -> TestResult {
    // A refusal holds a CSR (AddressNotOwned) only when the requester's agent listens on
    // every address of its node: then a refused address is another host's. node-a's agent
    // listens on one address of its own, so its report says proof_port 0, and the refusal
    // of the machine's address — by node-a's own kernel, for all the approver can tell —
    // is no evidence: the CSR waits, unproven. (The routed sandbox shows a refusal that
    // is evidence: `testbed/sandbox/tests/routed.rs`.)
    let refusing = host_v4()?;
    let own = loopback(5, 2);
    let port = free_port(refusing)?;
    let (bed, replica) = bed_with(Some(ProofMode::Required), proof_config(port)).await?;
    bed.add_node("node-a", &[refusing])?;
    let agent = listening_agent(
        &bed,
        &replica,
        "node-a",
        &[refusing],
        SocketAddr::new(own, port),
    )
    .await?;
    let name = bed.create_csr("node-a", &[refusing]).await?.name_any();
    let note = event_note(
        &bed,
        &name,
        "OwnershipUnproven",
        &["does not report a proof listener on every address"],
    )
    .await?;
    assert!(note.contains(&format!("{refusing}")), "{note}");
    until(&replica, "a second unanswered probe", || {
        probes(&replica, "unanswered") >= 2
    })
    .await?;
    assert_eq!(probes(&replica, "refused"), 0);
    assert!(undecided(&bed, &name)?);
    assert_eq!(unproven_approvals(&replica), 0);
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

// === forged and replayed receipts ===

/// A bed under `required` where the test listens on every SAN in `sans` in place of node-a's
/// agent: node-a is a raw stream attesting `sans`, node-b a raw stream attesting an address
/// of its own; node-a's CSR for `sans` is created.
struct Forgery {
    bed: ControllerBed,
    replica: Replica,
    catcher: Catcher,
    a: RawStream,
    b: RawStream,
    name: String,
}

async fn forgery(sans: &[IpAddr]) -> Result<Forgery, Box<dyn Error>> {
    let first = listen(sans[0], 0).await?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for san in &sans[1..] {
        listeners.push(listen(*san, port).await?);
    }
    let catcher = Catcher::start(listeners);
    let (bed, replica) = bed_with(Some(ProofMode::Required), proof_config(port)).await?;
    bed.add_node("node-a", sans)?;
    bed.add_node("node-b", &[elsewhere(6)])?;
    let a = raw_node(&bed, &replica, "node-a", sans, port).await?;
    let b = raw_node(&bed, &replica, "node-b", &[elsewhere(6)], port).await?;
    let name = bed.create_csr("node-a", sans).await?.name_any();
    Ok(Forgery {
        bed,
        replica,
        catcher,
        a,
        b,
        name,
    })
}

#[tokio::test]
async fn a_receipt_with_a_made_up_nonce_counts_as_unknown_and_changes_nothing() -> TestResult {
    let san = host_v4()?;
    let mut f = forgery(&[san]).await?;
    let frame = f.catcher.next(san).await?;
    // Made up with the replica's tag, on either node's stream: unknown. Entirely random:
    // another replica's, as far as this one can tell.
    for stream in [&f.a, &f.b] {
        stream
            .send(raw::receipt(&made_up_like(&frame.nonce), san, frame.sender))
            .await?;
    }
    f.b.send(raw::receipt(&made_up_nonce(), san, frame.sender))
        .await?;
    until(&f.replica, "the made-up receipts counted", || {
        receipts(&f.replica, "unknown") == 2 && receipts(&f.replica, "other_replica") == 1
    })
    .await?;
    assert_eq!(
        receipts_total(&f.replica),
        3,
        "{:?}",
        receipt_counts(&f.replica)
    );
    assert!(matches!(
        proof_of(&f.replica, &f.name, "node-a", san),
        Some(ProofState::Probing { .. } | ProofState::Unanswered { .. })
    ));
    assert!(undecided(&f.bed, &f.name)?);
    assert!(events_with(&f.bed, &f.name, "AddressNotOwned").is_empty());
    // The probe itself is untouched: its real nonce, reported by its node, proves the SAN.
    f.catcher.held.push_front(frame);
    f.catcher
        .report_until(&f.replica, &f.a, san, san, "proven")
        .await?;
    wait_for_csr(&f.bed, &f.name, WITHIN, is_approved).await?;
    assert_eq!(receipts(&f.replica, "unknown"), 2);
    assert_eq!(probes(&f.replica, "other_node"), 0);
    f.replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_real_nonce_on_another_nodes_stream_can_hold_the_csr_but_never_approve_it() -> TestResult
{
    let san = host_v4()?;
    let mut f = forgery(&[san]).await?;
    // node-b reports the nonce sent to node-a's address, as if it had received it.
    let stolen = f
        .catcher
        .report_until(&f.replica, &f.b, san, san, "other_node")
        .await?;
    let note = event_note(
        &f.bed,
        &f.name,
        "AddressNotOwned",
        &[&format!(
            "a probe sent to {san} was received by node-b's agent"
        )],
    )
    .await?;
    assert!(note.contains("not by node-a's"), "{note}");
    assert!(matches!(
        proof_of(&f.replica, &f.name, "node-a", san),
        Some(ProofState::ReceivedByOther { node, .. }) if node == "node-b"
    ));
    until(&f.replica, "the probe counted", || {
        probes(&f.replica, "other_node") == 1
    })
    .await?;
    // The same nonce, now from the right node: spent, and it changes nothing.
    f.a.send(raw::receipt(&stolen, san, san)).await?;
    until(&f.replica, "the replayed receipt counted", || {
        receipts(&f.replica, "spent") == 1
    })
    .await?;
    assert!(!is_proven(proof_of(&f.replica, &f.name, "node-a", san)));
    assert!(undecided(&f.bed, &f.name)?);
    // A later probe, received by node-a itself, proves the address.
    f.catcher
        .report_until(&f.replica, &f.a, san, san, "proven")
        .await?;
    let csr = wait_for_csr(&f.bed, &f.name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    assert_eq!(receipts(&f.replica, "other_node"), 1);
    f.replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_real_nonce_reported_after_its_probes_deadline_is_spent_and_proves_nothing() -> TestResult
{
    let san = host_v4()?;
    let mut f = forgery(&[san]).await?;
    let late = f.catcher.next(san).await?;
    // The first probe ends unanswered; only then does node-a report its nonce.
    until(&f.replica, "the first probe unanswered", || {
        probes(&f.replica, "unanswered") >= 1
    })
    .await?;
    f.a.send(raw::receipt(&late.nonce, san, late.sender))
        .await?;
    until(&f.replica, "the late receipt counted", || {
        receipts(&f.replica, "spent") == 1
    })
    .await?;
    assert_eq!(receipts(&f.replica, "proven"), 0);
    assert!(!is_proven(proof_of(&f.replica, &f.name, "node-a", san)));
    assert!(undecided(&f.bed, &f.name)?);
    // A probe's nonce reported in time does prove it.
    f.catcher
        .report_until(&f.replica, &f.a, san, san, "proven")
        .await?;
    wait_for_csr(&f.bed, &f.name, WITHIN, is_approved).await?;
    f.replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_nonce_proves_only_the_san_it_was_sent_to_whatever_address_the_receipt_names()
-> TestResult {
    let first = host_v4()?;
    let Some(second) = host_address(true) else {
        eprintln!("skipped: this machine has no IPv6 address a CSR may name, for a second SAN");
        return Ok(());
    };
    let mut f = forgery(&[first, second]).await?;
    // node-a reports the nonce sent to the first SAN as arrived on the second.
    let nonce = f
        .catcher
        .report_until(&f.replica, &f.a, first, second, "proven")
        .await?;
    assert!(matches!(
        proof_of(&f.replica, &f.name, "node-a", first),
        Some(ProofState::Proven { local, .. }) if local == second
    ));
    assert!(!is_proven(proof_of(&f.replica, &f.name, "node-a", second)));
    // Once more, for the second SAN: spent.
    f.a.send(raw::receipt(&nonce, second, second)).await?;
    until(&f.replica, "the second use counted", || {
        receipts(&f.replica, "spent") == 1
    })
    .await?;
    assert!(!is_proven(proof_of(&f.replica, &f.name, "node-a", second)));
    assert!(undecided(&f.bed, &f.name)?);
    // The second SAN's own nonce.
    f.catcher
        .report_until(&f.replica, &f.a, second, second, "proven")
        .await?;
    let csr = wait_for_csr(&f.bed, &f.name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    assert_eq!(receipts(&f.replica, "proven"), 2);
    f.replica.stop().await?;
    Ok(())
}

// === floods ===

#[tokio::test]
async fn a_flood_of_receipts_is_rate_limited_without_closing_the_stream() -> TestResult {
    let own = elsewhere(7);
    let (bed, replica) = bed_with(None, proof_config(10273)).await?;
    bed.add_node("node-a", &[own])?;
    let mut stream = raw_node(&bed, &replica, "node-a", &[own], 10273).await?;
    let stream_id = replica
        .store()
        .live_stream("node-a")
        .ok_or("no live stream")?
        .id;
    const FLOOD: u64 = 300;
    let approver = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for _ in 0..FLOOD {
        stream
            .send(raw::receipt(&made_up_nonce(), own, approver))
            .await?;
    }
    until(&replica, "every receipt counted", || {
        receipts_total(&replica) == FLOOD
    })
    .await?;
    // Random nonces: another replica's, as far as this one can tell, until the stream's
    // budget (a burst of 64, then 20 a second) is spent.
    let (looked_up, limited) = (
        receipts(&replica, "other_replica"),
        receipts(&replica, "rate_limited"),
    );
    assert_eq!(looked_up + limited, FLOOD, "{:?}", receipt_counts(&replica));
    assert!(limited > 0, "{looked_up} looked up, {limited} rate limited");
    assert!(
        looked_up >= 64,
        "the burst went through: {looked_up} looked up"
    );
    // The stream is open: a report after the flood is acknowledged on it.
    let report = raw::with_proof_port(raw::report(2, "node-a", &prefixed(&[own])), 10273);
    let ack = stream.report(report).await?;
    assert_eq!(ack.sequence, 2);
    assert_eq!(
        replica.store().live_stream("node-a").map(|s| s.id),
        Some(stream_id),
        "the same stream"
    );
    assert!(replica.store().attestation("node-a").is_some());
    for reason in ["rate_limited", "invalid_report", "malformed"] {
        assert_eq!(replica.metrics().grpc.closed_streams(reason), 0, "{reason}");
    }
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn probes_of_one_nodes_addresses_are_limited_per_node() -> TestResult {
    // The first SAN takes the probe's connection and never reports it, so its probe holds
    // the node's one slot until its deadline; the others are documentation addresses
    // nobody answers for, probed one at a time after it.
    let held = host_v4()?;
    let hole = listen(held, 0).await?;
    let port = hole.local_addr()?.port();
    let mut sans = vec![held];
    sans.extend((71..74).map(|h| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, h))));
    const PER_NODE: usize = 1;
    let proof = ProofConfig {
        max_per_node: PER_NODE,
        ..proof_config(port)
    };
    let (bed, replica) = bed_with(Some(ProofMode::Required), proof).await?;
    bed.add_node("node-a", &sans)?;
    let agent = listening_agent(
        &bed,
        &replica,
        "node-a",
        &sans,
        SocketAddr::new(loopback(17, 2), port),
    )
    .await?;
    let name = bed.create_csr("node-a", &sans).await?.name_any();
    let (mut most_gauge, mut most_book) = (0, 0);
    until(
        &replica,
        "every SAN probed, some put off by the per-node limit",
        || {
            most_gauge = most_gauge.max(replica.controller_metrics().proof.probes_in_flight.get());
            most_book = most_book.max(replica.store().proofs().in_flight());
            probes_limited(&replica, "node") > 0
                && sans
                    .iter()
                    .all(|san| proof_of(&replica, &name, "node-a", *san).is_some())
                && probes_total(&replica) >= 4
        },
    )
    .await?;
    assert!(
        most_gauge <= 1 && most_book <= PER_NODE,
        "in flight at most {PER_NODE}: gauge {most_gauge}, book {most_book}"
    );
    assert!(most_book >= 1, "sampled while a probe was in flight");
    assert_eq!(probes_limited(&replica, "overall"), 0);
    assert!(probes(&replica, "unanswered") >= 1, "the held SAN");
    assert_eq!(receipts_total(&replica), 0);
    event_with(&bed, &name, "OwnershipUnproven", &[]).await?;
    assert!(undecided(&bed, &name)?);
    drop(hole);
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

// === agents before 0.4 ===

/// A bed whose node-a runs an agent without a proof listener (it reports `proof_port` 0,
/// as agents before 0.4), configured by `tune`; node-a's CSR for its address.
async fn old_agent(
    tune: impl FnOnce(&mut ControllerConfig),
) -> Result<(ControllerBed, Replica, ScriptedAgent, String), Box<dyn Error>> {
    let own = elsewhere(8);
    let bed = ControllerBed::start().await?;
    let mut config = bed.controller_config("approver-0");
    // The shipped default (the bed turns the proof off for the other suites).
    config.policy = Arc::new(Policy::default());
    tune(&mut config);
    let replica = bed.replica_with_proof(config, proof_config(10273)).await?;
    replica.wait_acting(WITHIN).await?;
    bed.add_node("node-a", &[own])?;
    let agent = ScriptedAgent::builder(
        &bed.pki,
        "node-a",
        &[replica.addrs().grpc],
        &prefixed(&[own]),
    )
    .connect()
    .await?;
    assert_eq!(agent.proof_address(), None);
    agent.report().await?;
    let attestation = replica
        .store()
        .attestation("node-a")
        .ok_or("no attestation")?;
    assert_eq!(attestation.proof_port, None, "no proof port reported");
    let name = bed.create_csr("node-a", &[own]).await?.name_any();
    Ok((bed, replica, agent, name))
}

#[tokio::test]
async fn an_agent_without_a_proof_listener_is_approved_with_a_warning_under_the_default_policy()
-> TestResult {
    let (bed, replica, agent, name) = old_agent(|_| {}).await?;
    assert_eq!(
        replica.store().proofs().config().port,
        10273,
        "the default port"
    );
    let csr = wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    let warning = event_with(&bed, &name, "OwnershipUnproven", &["no proof listener"]).await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("ownershipProof `preferred`"), "{note}");
    until(&replica, "the unproven approval counted", || {
        unproven_approvals(&replica) == 1
    })
    .await?;
    assert!(
        probes_total(&replica) >= 1,
        "probed all the same: a node cannot opt out of the proof by running no listener"
    );
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_without_a_proof_listener_is_approved_as_before_with_ownership_proof_off()
-> TestResult {
    let policy = Policy::from_yaml("ownershipProof: {default: off}\n")?;
    let (bed, replica, agent, name) = old_agent(|config| {
        config.policy = Arc::new(policy);
        // One decision at a time: once a later CSR is approved, everything the controller
        // did after approving the first (its Events included) is done.
        config.concurrency = 1;
    })
    .await?;
    wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    let later = bed.create_csr("node-a", &[elsewhere(8)]).await?.name_any();
    wait_for_csr(&bed, &later, WITHIN, is_approved).await?;
    for csr in [&name, &later] {
        event_with(&bed, csr, "Approved", &[]).await?;
        assert_eq!(bed.event_reasons(csr)?, ["Approved"]);
        assert_eq!(warnings(&bed, csr)?, Vec::<String>::new());
    }
    assert_eq!(unproven_approvals(&replica), 0);
    assert_eq!(probes_total(&replica), 0, "nothing probed");
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_without_a_proof_listener_waits_under_required() -> TestResult {
    let (bed, replica, agent, name) =
        old_agent(|config| with_mode(config, ProofMode::Required)).await?;
    let event = event_with(&bed, &name, "OwnershipUnproven", &["no proof listener"]).await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains("runs no proof listener"), "{note}");
    assert!(undecided(&bed, &name)?);
    assert!(probes_total(&replica) >= 1, "probed all the same");
    assert_eq!(unproven_approvals(&replica), 0);
    agent.stop().await;
    replica.stop().await?;
    Ok(())
}
