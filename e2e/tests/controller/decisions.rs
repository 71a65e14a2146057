//! The controller against the testbed cluster (real HTTPS, real kube-rs watchers, the
//! shipped RBAC, the approver's ServiceAccount): kubelet-shaped CSRs created with each
//! node's identity are approved after their agent reports (and issued by the signer),
//! denied for another node's address (or left pending with `--deny=never`), decided but not
//! written in dry run, challenged when the facts predate them, kept pending when the
//! SubjectAccessReview refuses; Events once per change of state, metrics for every outcome;
//! a Service's address denied under the shipped policy (and re-decided when a Service
//! changes); one node's flood of CSRs holding only that node's approvals; a stale Node list
//! (a watch cache behind etcd) holding, never misdirecting, an approval.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Service, ServiceSpec};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::ResourceExt as _;
use kube::api::ObjectMeta;
use rubber_stamp_agent::identity::IdentitySource;
use rubber_stamp_agent::resolve::SystemResolver;
use rubber_stamp_core::{AttestationLookup as _, DenyMode, Policy};
use rubber_stamp_e2e::channel::{TestAgent, agent_config};
use rubber_stamp_e2e::controller::{
    ControllerBed, Replica, conditions, deploy_rbac_yaml, eventually, is_approved, is_issued,
    load_rbac, wait_for_csr,
};
use rubber_stamp_e2e::deploy::repo_root;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Generous bound for things that take milliseconds when they work.
const WITHIN: Duration = Duration::from_secs(10);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

async fn bed_and_replica(
    tune: impl FnOnce(&mut rubber_stamp_approver::controller::ControllerConfig),
) -> Result<(ControllerBed, Replica), Box<dyn std::error::Error>> {
    let bed = ControllerBed::start().await?;
    let mut config = bed.controller_config("approver-0");
    tune(&mut config);
    let replica = bed.replica(config, false).await?;
    replica.wait_acting(WITHIN).await?;
    Ok((bed, replica))
}

fn condition_of<'a>(
    csr: &'a CertificateSigningRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

async fn real_agent(
    bed: &ControllerBed,
    replica: &Replica,
    node: &str,
) -> Result<TestAgent, Box<dyn std::error::Error>> {
    let identity = bed.pki.write_combined(&bed.pki.node(node)?, node)?;
    Ok(TestAgent::start(
        agent_config(
            &bed.pki,
            replica.addrs().grpc,
            IdentitySource::Combined(identity),
        ),
        Arc::new(SystemResolver),
    )
    .await?)
}

#[tokio::test]
async fn a_kubelet_csr_is_approved_after_its_agent_reports_and_the_signer_issues_it() -> TestResult
{
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("worker-1", &[])?;
    // The real agent reports this machine's facts; the CSR names only the node (DNS SAN),
    // which holds whatever interfaces this machine has.
    let agent = real_agent(&bed, &replica, "worker-1").await?;
    let store = replica.store().clone();
    eventually("the agent's attestation", WITHIN, || {
        store.attestation("worker-1").is_some()
    })
    .await?;

    let csr = bed.create_csr("worker-1", &[]).await?;
    let name = csr.name_any();
    let csr = wait_for_csr(&bed, &name, WITHIN, |c| is_approved(c) && is_issued(c)).await?;
    assert_eq!(
        conditions(&csr),
        ["Approved"],
        "approved once, never denied"
    );
    let approved = condition_of(&csr, "Approved").ok_or("no Approved condition")?;
    assert_eq!(approved.reason.as_deref(), Some("AutoApproved"));
    let message = approved.message.as_deref().unwrap_or_default();
    for needle in [
        "approver-0",
        "node worker-1's attestation",
        "from 127.0.0.1",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let attestation = store.attestation("worker-1").ok_or("no attestation")?;
    assert!(
        message.contains("received at 20"),
        "names when the attestation arrived: {message:?} ({attestation:?})"
    );

    eventually("the Approved Event", WITHIN, || {
        bed.event_reasons(&name).is_ok_and(|r| r == ["Approved"])
    })
    .await?;
    let metrics = replica.controller_metrics();
    eventually("the approval counted", WITHIN, || {
        metrics.writes("approve", "ok") == 1
    })
    .await?;
    assert_eq!(metrics.decisions("approve", "Approved", false), 1);
    assert_eq!(metrics.writes("approve", "ok"), 1);
    let text = replica.metrics_text().await?;
    for line in [
        "rubber_stamp_controller_decisions_total{outcome=\"approve\",reason=\"Approved\",dry_run=\"false\"} 1",
        "rubber_stamp_controller_leader 1",
        "rubber_stamp_controller_approval_latency_seconds_count 1",
        "rubber_stamp_controller_decision_writes_total{decision=\"approve\",result=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    agent.stop().await?;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_csr_created_before_its_agent_starts_is_approved_as_soon_as_the_agent_reports()
-> TestResult {
    // The pending resync is a minute: only the attestation trigger can be this prompt.
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("worker-2", &[])?;
    let csr = bed.create_csr("worker-2", &[]).await?;
    let name = csr.name_any();
    eventually("the AwaitingAttestation Event", WITHIN, || {
        bed.event_reasons(&name)
            .is_ok_and(|r| r == ["AwaitingAttestation"])
    })
    .await?;

    // Decide again several times in the same state: a Node change triggers its CSRs.
    let metrics = replica.controller_metrics();
    for i in 1..=3 {
        let before = metrics.reconciles.get();
        let mut node: Node = bed
            .cluster
            .objects()
            .get("", "worker-2")?
            .ok_or("no Node")?;
        if let Some(status) = node.status.as_mut() {
            status.addresses = Some(vec![k8s_openapi::api::core::v1::NodeAddress {
                type_: "InternalIP".to_owned(),
                address: ip(100 + i).to_string(),
            }]);
        }
        node.metadata.resource_version = None;
        bed.cluster.objects().update(&node)?;
        eventually("another decision", WITHIN, || {
            metrics.reconciles.get() > before
        })
        .await?;
    }
    assert_eq!(
        bed.event_reasons(&name)?,
        ["AwaitingAttestation"],
        "no new Event while the state stays the same"
    );
    assert!(!is_approved(&bed.csr(&name)?.ok_or("gone")?));

    let agent = real_agent(&bed, &replica, "worker-2").await?;
    let csr = wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    let attestation = replica
        .store()
        .attestation("worker-2")
        .ok_or("no attestation")?;
    let approved_at = condition_of(&csr, "Approved")
        .and_then(|c| c.last_update_time.as_ref())
        .ok_or("no lastUpdateTime")?
        .0;
    let delay = approved_at.duration_since(attestation.received_at);
    assert!(
        delay < SignedDuration::from_millis(1500),
        "approved {delay:#} after the first report: a trigger, not the one-minute resync"
    );
    eventually("the Approved Event", WITHIN, || {
        bed.event_reasons(&name)
            .is_ok_and(|r| r == ["AwaitingAttestation", "Approved"])
    })
    .await?;
    let text = replica.metrics_text().await?;
    assert!(
        text.contains("rubber_stamp_controller_attestation_to_approval_seconds_count 1"),
        "{text}"
    );
    assert_eq!(
        metrics.decisions("pending", "AwaitingAttestation", false),
        1
    );
    agent.stop().await?;
    replica.stop().await?;
    Ok(())
}

/// Waits until the wall clock is a full second past the CSR's creation, so that a report
/// sent now is known to postdate it (creation timestamps have one-second resolution).
async fn past_creation(csr: &CertificateSigningRequest) -> TestResult {
    let created = csr
        .metadata
        .creation_timestamp
        .as_ref()
        .ok_or("no creationTimestamp")?
        .0;
    let after = created + SignedDuration::from_millis(1100);
    eventually("a second past the CSR's creation", WITHIN, || {
        Timestamp::now() > after
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_csr_for_another_nodes_address_is_denied_once_a_challenge_brings_facts_that_postdate_it()
-> TestResult {
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("node-a", &[ip(1)])?;
    bed.add_node("node-b", &[ip(2)])?;
    let a = bed.agent("node-a", &[&replica], &[ip(1)]).await?;
    let b = bed.agent("node-b", &[&replica], &[ip(2)]).await?;
    a.report().await?;
    b.report().await?;
    let store = replica.store().clone();
    eventually("both attestations", WITHIN, || {
        store.attestation("node-a").is_some() && store.attestation("node-b").is_some()
    })
    .await?;

    let csr = bed.create_csr("node-a", &[ip(1), ip(2)]).await?;
    let name = csr.name_any();
    // Against facts older than the CSR it waits (the IP may be new), with a Warning for the
    // conflict with node-b. No report from the test's side: the controller challenges
    // node-a's agent because 10.0.0.2 is missing from facts that predate the CSR, and the
    // answer — received after this replica first saw the CSR, on its own clock — settles
    // it without waiting for a heartbeat.
    let csr = wait_for_csr(&bed, &name, WITHIN, |c| !conditions(c).is_empty()).await?;
    assert!(
        a.challenges_answered() >= 1,
        "the denial came from a challenge, not a heartbeat"
    );
    assert_eq!(conditions(&csr), ["Denied"]);
    let denied = condition_of(&csr, "Denied").ok_or("no Denied condition")?;
    assert_eq!(denied.reason.as_deref(), Some("AddressNotAttested"));
    let message = denied.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("10.0.0.2 is not on any interface node-a's agent reported"),
        "{message}"
    );
    eventually("the AddressConflict and Denied Events", WITHIN, || {
        bed.event_reasons(&name)
            .is_ok_and(|r| r == ["AddressConflict", "Denied"])
    })
    .await?;
    let pending = &bed.events_about(&name)?[0];
    assert_eq!(pending.type_.as_deref(), Some("Warning"));
    let note = pending.note.as_deref().unwrap_or_default();
    assert!(
        note.contains("10.0.0.2 is also attested by node-b"),
        "{note}"
    );
    let metrics = replica.controller_metrics();
    assert_eq!(metrics.decisions("deny", "Denied", false), 1);
    assert_eq!(metrics.writes("deny", "ok"), 1);
    assert_eq!(metrics.writes("approve", "ok"), 0);
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn with_deny_never_a_would_be_denial_stays_pending_with_a_warning() -> TestResult {
    let (bed, replica) = bed_and_replica(|config| {
        let mut policy = Policy::clone(&config.policy);
        policy.deny = DenyMode::Never;
        config.policy = Arc::new(policy);
    })
    .await?;
    bed.add_node("node-a", &[ip(1)])?;
    let a = bed.agent("node-a", &[&replica], &[ip(1)]).await?;
    let csr = bed.create_csr("node-a", &[ip(1), ip(9)]).await?;
    let name = csr.name_any();
    past_creation(&csr).await?;
    a.report().await?;
    eventually("the would-be denial's Event", WITHIN, || {
        bed.event_reasons(&name)
            .is_ok_and(|r| r.last().is_some_and(|l| l == "AddressNotAttested"))
    })
    .await?;
    let events = bed.events_about(&name)?;
    let last = events.last().ok_or("no Event")?;
    assert_eq!(last.type_.as_deref(), Some("Warning"));
    let note = last.note.as_deref().unwrap_or_default();
    assert!(note.contains("would be denied"), "{note}");
    assert!(note.contains("10.0.0.9"), "{note}");
    assert!(conditions(&bed.csr(&name)?.ok_or("gone")?).is_empty());
    let metrics = replica.controller_metrics();
    assert_eq!(metrics.decisions("pending", "AddressNotAttested", false), 1);
    assert_eq!(metrics.writes("deny", "ok"), 0);
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn dry_run_decides_and_explains_but_writes_nothing_to_csrs() -> TestResult {
    let (bed, replica) = bed_and_replica(|config| config.dry_run = true).await?;
    bed.add_node("node-a", &[ip(1)])?;
    let a = bed.agent("node-a", &[&replica], &[ip(1)]).await?;
    a.report().await?;
    let store = replica.store().clone();
    eventually("the attestation", WITHIN, || {
        store.attestation("node-a").is_some()
    })
    .await?;
    let good = bed.create_csr("node-a", &[ip(1)]).await?;
    let bad = bed.create_csr("node-a", &[ip(1), ip(7)]).await?;
    eventually("WouldApprove", WITHIN, || {
        bed.event_reasons(&good.name_any())
            .is_ok_and(|r| r == ["WouldApprove"])
    })
    .await?;
    past_creation(&bad).await?;
    a.report().await?;
    eventually("WouldDeny", WITHIN, || {
        bed.event_reasons(&bad.name_any())
            .is_ok_and(|r| r.last().is_some_and(|l| l == "WouldDeny"))
    })
    .await?;
    for created in [&good, &bad] {
        let now = bed.csr(&created.name_any())?.ok_or("gone")?;
        assert!(conditions(&now).is_empty(), "nothing written");
        assert_eq!(
            now.metadata.resource_version, created.metadata.resource_version,
            "the CSR was not written at all"
        );
    }
    let metrics = replica.controller_metrics();
    assert_eq!(metrics.decisions("approve", "WouldApprove", true), 1);
    assert_eq!(metrics.decisions("deny", "WouldDeny", true), 1);
    assert_eq!(
        metrics.writes("approve", "ok") + metrics.writes("deny", "ok"),
        0
    );
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn facts_predating_a_csr_are_challenged_and_the_answer_decides() -> TestResult {
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("node-d", &[ip(4)])?;
    let d = bed.agent("node-d", &[&replica], &[ip(4)]).await?;
    d.report().await?;
    let store = replica.store().clone();
    eventually("the attestation", WITHIN, || {
        store.attestation("node-d").is_some()
    })
    .await?;
    // The node just got a second address; its agent has not reported it yet.
    d.set_addresses(&[(ip(4), 24), (ip(44), 24)]);
    let csr = bed.create_csr("node-d", &[ip(4), ip(44)]).await?;
    let name = csr.name_any();
    // Pending on facts that predate the CSR → a challenge → the answer has the address.
    let csr = wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    assert!(d.challenges_answered() >= 1, "the agent was challenged");
    let metrics = replica.controller_metrics();
    assert!(metrics.challenges("answered") >= 1);
    let attestation = store.attestation("node-d").ok_or("no attestation")?;
    assert!(
        attestation
            .addresses()
            .any(|(iface, a)| iface == "eth0" && a == ip(44))
    );
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_refused_subject_access_review_keeps_the_csr_pending_with_an_event() -> TestResult {
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    assert!(
        bed.cluster
            .objects()
            .delete::<ClusterRoleBinding>("", "rubber-stamp:selfnodeserver")?,
        "the shipped RBAC binds selfnodeserver to system:nodes"
    );
    bed.add_node("node-e", &[ip(5)])?;
    let e = bed.agent("node-e", &[&replica], &[ip(5)]).await?;
    e.report().await?;
    let csr = bed.create_csr("node-e", &[ip(5)]).await?;
    let name = csr.name_any();
    // Which Events come before it depends on what reaches the controller first (the
    // Node, the report, the CSR): wait for the one this test is about, whatever precedes it.
    eventually("the SubjectAccessDenied Event", WITHIN, || {
        bed.event_reasons(&name)
            .is_ok_and(|r| r.iter().any(|reason| reason == "SubjectAccessDenied"))
    })
    .await?;
    let events = bed.events_about(&name)?;
    let event = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("SubjectAccessDenied"))
        .ok_or("no SubjectAccessDenied Event")?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.as_deref().unwrap_or_default();
    assert!(
        note.contains(
            "system:node:node-e may not create certificatesigningrequests/selfnodeserver"
        ),
        "{note}"
    );
    assert!(conditions(&bed.csr(&name)?.ok_or("gone")?).is_empty());
    assert!(
        replica
            .metrics_text()
            .await?
            .contains("rubber_stamp_controller_access_reviews_total{result=\"denied\"} 1")
    );

    // Bound again, the next decision (the agent's next report) approves.
    load_rbac(&bed.cluster, &deploy_rbac_yaml()?)?;
    e.report().await?;
    wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_flood_valve_holds_approvals_while_too_many_csrs_are_pending_and_then_resumes()
-> TestResult {
    let (bed, replica) = bed_and_replica(|config| config.max_pending_csrs = Some(2)).await?;
    let lease = rubber_stamp_approver::controller::config::DEFAULT_LEASE_NAME;
    let mut flood = Vec::new();
    for (i, node) in ["quiet-1", "quiet-2", "quiet-3"].into_iter().enumerate() {
        let address = ip(20 + u8::try_from(i)?);
        bed.add_node(node, &[address])?;
        flood.push(bed.create_csr(node, &[address]).await?.name_any());
    }
    let metrics = replica.controller_metrics();
    eventually("the valve to close", WITHIN, || {
        metrics.flood_valve_closed.get() == 1
    })
    .await?;
    eventually("the FloodValveClosed Event on the Lease", WITHIN, || {
        bed.event_reasons(lease)
            .is_ok_and(|r| r == ["FloodValveClosed"])
    })
    .await?;
    let closed = &bed.events_about(lease)?[0];
    assert_eq!(closed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        closed.regarding.as_ref().and_then(|r| r.kind.as_deref()),
        Some("Lease")
    );
    assert!(
        closed.note.as_deref().is_some_and(
            |n| n.contains("3 kubelet-serving CSRs are pending, more than the bound of 2")
        ),
        "{closed:?}"
    );

    // A CSR that passes every check is held back, and says why.
    bed.add_node("node-v", &[ip(30)])?;
    let v = bed.agent("node-v", &[&replica], &[ip(30)]).await?;
    v.report().await?;
    let held = bed.create_csr("node-v", &[ip(30)]).await?.name_any();
    eventually("the ApprovalHeld Event", WITHIN, || {
        bed.event_reasons(&held)
            .is_ok_and(|r| r == ["ApprovalHeld"])
    })
    .await?;
    assert!(conditions(&bed.csr(&held)?.ok_or("gone")?).is_empty());
    assert!(
        replica
            .metrics_text()
            .await?
            .contains("rubber_stamp_controller_flood_valve_closed 1")
    );
    // The rollout signal: three Nodes whose agents never reported, one attested.
    eventually(
        "the attestation coverage and pending gauges",
        WITHIN,
        || {
            metrics.unattested_nodes.get() == 3
                && metrics.attested_nodes.get() == 1
                && metrics.pending_csrs.get() == 4
        },
    )
    .await?;

    // Back within the bound, approvals resume by themselves.
    for name in &flood[..2] {
        bed.cluster
            .objects()
            .delete::<CertificateSigningRequest>("", name)?;
    }
    wait_for_csr(&bed, &held, WITHIN, is_approved).await?;
    assert_eq!(metrics.flood_valve_closed.get(), 0);
    eventually("the FloodValveOpened Event", WITHIN, || {
        bed.event_reasons(lease)
            .is_ok_and(|r| r == ["FloodValveClosed", "FloodValveOpened"])
    })
    .await?;
    assert_eq!(metrics.decisions("held", "ApprovalHeld", false), 1);
    replica.stop().await?;
    Ok(())
}

/// The policy as `deploy/base` ships it.
fn shipped_policy() -> Result<Policy, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(repo_root().join("deploy/base/policy.yaml"))?;
    Ok(Policy::from_yaml(&text)?)
}

#[tokio::test]
async fn a_node_attesting_the_kubernetes_service_ip_is_denied_under_the_shipped_policy()
-> TestResult {
    // Root on a node puts 10.96.0.1 (the testbed's `kubernetes` Service, made at start as
    // kube-apiserver makes it) on a dummy interface its agent counts, and asks for it.
    let policy = shipped_policy()?;
    assert!(
        policy.denied_cidrs.is_empty(),
        "the shipped policy denies no network"
    );
    let (bed, replica) = bed_and_replica(|config| config.policy = Arc::new(policy)).await?;
    let kubernetes: Service = bed
        .cluster
        .objects()
        .get("default", "kubernetes")?
        .ok_or("no kubernetes Service")?;
    let service_ip: IpAddr = kubernetes
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or("no clusterIP")?
        .parse()?;
    assert_eq!(service_ip, IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)));
    bed.add_node("rogue-1", &[ip(60)])?;
    let rogue = bed
        .agent("rogue-1", &[&replica], &[ip(60), service_ip])
        .await?;
    rogue.report().await?;
    let store = replica.store().clone();
    eventually("the rogue's attestation", WITHIN, || {
        store.attestation("rogue-1").is_some()
    })
    .await?;
    let name = bed
        .create_csr("rogue-1", &[ip(60), service_ip])
        .await?
        .name_any();
    let csr = wait_for_csr(&bed, &name, WITHIN, |c| !conditions(c).is_empty()).await?;
    assert_eq!(conditions(&csr), ["Denied"]);
    let denied = condition_of(&csr, "Denied").ok_or("no Denied condition")?;
    assert_eq!(denied.reason.as_deref(), Some("AddressNotAllowed"));
    let message = denied.message.as_deref().unwrap_or_default();
    assert!(
        message
            .contains("10.96.0.1 is a cluster IP of Service default/kubernetes (spec.clusterIPs)"),
        "{message}"
    );
    assert!(
        message.ends_with("see docs/operations.md#addressnotallowed"),
        "{message}"
    );
    eventually("the Denied Event", WITHIN, || {
        bed.event_reasons(&name).is_ok_and(|r| r == ["Denied"])
    })
    .await?;

    // A Service that appears later is noticed by the pending CSRs that ask for its
    // address: this one waits on a conflict (another Node lists 10.0.0.64) until an
    // external IP makes 10.0.0.63 a Service's (late-1's Node does not list it); only the
    // Service trigger can decide it within the one-minute resync.
    bed.add_node("other-1", &[ip(64)])?;
    bed.add_node("late-1", &[ip(65)])?;
    let late = bed.agent("late-1", &[&replica], &[ip(63), ip(64)]).await?;
    late.report().await?;
    eventually("late-1's attestation", WITHIN, || {
        store.attestation("late-1").is_some()
    })
    .await?;
    let name = bed
        .create_csr("late-1", &[ip(63), ip(64)])
        .await?
        .name_any();
    eventually("the AddressConflict Event", WITHIN, || {
        bed.event_reasons(&name)
            .is_ok_and(|r| r == ["AddressConflict"])
    })
    .await?;
    bed.cluster.objects().create(&Service {
        metadata: ObjectMeta {
            name: Some("shop".to_owned()),
            namespace: Some("default".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            external_ips: Some(vec![ip(63).to_string()]),
            ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })?;
    let csr = wait_for_csr(&bed, &name, WITHIN, |c| !conditions(c).is_empty()).await?;
    assert_eq!(conditions(&csr), ["Denied"]);
    let message = condition_of(&csr, "Denied")
        .and_then(|c| c.message.as_deref())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(
            "10.0.0.63 is an external IP of Service default/shop (spec.externalIPs), and Node late-1 does not list it"
        ),
        "{message}"
    );
    drop(rogue);
    drop(late);
    replica.stop().await?;
    Ok(())
}

#[tokio::test]
async fn one_nodes_flood_of_pending_csrs_holds_only_that_nodes_approvals() -> TestResult {
    // The default bounds: Nodes + 100 for the cluster, 10 per node.
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("flood-1", &[ip(70)])?;
    bed.add_node("honest-1", &[ip(71)])?;
    let metrics = replica.controller_metrics();
    // 115 CSRs from one node that stay pending (its agent is not running): more than
    // the 102 the cluster-wide valve allows.
    let mut flood = Vec::new();
    for _ in 0..115 {
        flood.push(bed.create_csr("flood-1", &[ip(70)]).await?.name_any());
    }
    eventually("the flood counted", WITHIN, || {
        metrics.pending_csrs.get() == 115
    })
    .await?;
    eventually("flood-1 held", WITHIN, || {
        metrics.flood_valve_held_nodes.get() == 1
    })
    .await?;
    assert_eq!(
        metrics.flood_valve_closed.get(),
        0,
        "one node cannot close the cluster-wide valve"
    );

    // Another node's honest CSR is approved meanwhile.
    let honest = bed.agent("honest-1", &[&replica], &[ip(71)]).await?;
    honest.report().await?;
    let name = bed.create_csr("honest-1", &[ip(71)]).await?.name_any();
    wait_for_csr(&bed, &name, WITHIN, is_approved).await?;

    // The flooding node's CSRs, approvable once its agent reports, are all held.
    let flooder = bed.agent("flood-1", &[&replica], &[ip(70)]).await?;
    flooder.report().await?;
    eventually(
        "the NodeApprovalsHeld Event on Node flood-1",
        WITHIN,
        || {
            bed.event_reasons("flood-1")
                .is_ok_and(|r| r == ["NodeApprovalsHeld"])
        },
    )
    .await?;
    let event = &bed.events_about("flood-1")?[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.kind.as_deref()),
        Some("Node")
    );
    let note = event.note.as_deref().unwrap_or_default();
    assert!(
        note.starts_with(
            "Approvals for node flood-1 are held: 115 kubelet-serving CSRs from system:node:flood-1 are pending, more than the per-node bound of 10"
        ) && note.ends_with("docs/operations.md#nodeapprovalsheld"),
        "{note}"
    );
    eventually("an ApprovalHeld Event on one of them", WITHIN, || {
        bed.event_reasons(&flood[0])
            .is_ok_and(|r| r.last().is_some_and(|r| r == "ApprovalHeld"))
    })
    .await?;
    for name in &flood {
        assert!(conditions(&bed.csr(name)?.ok_or("gone")?).is_empty());
    }
    assert!(
        replica
            .metrics_text()
            .await?
            .contains("rubber_stamp_controller_flood_valve_held_nodes 1")
    );

    // Cleaned up to within its bound, the node's approvals resume by themselves.
    for name in &flood[10..] {
        bed.cluster
            .objects()
            .delete::<CertificateSigningRequest>("", name)?;
    }
    for name in &flood[..10] {
        wait_for_csr(&bed, name, WITHIN, is_approved).await?;
    }
    eventually("the NodeApprovalsResumed Event", WITHIN, || {
        bed.event_reasons("flood-1")
            .is_ok_and(|r| r == ["NodeApprovalsHeld", "NodeApprovalsResumed"])
    })
    .await?;
    assert_eq!(metrics.flood_valve_held_nodes.get(), 0);
    drop(honest);
    drop(flooder);
    replica.stop().await?;
    Ok(())
}

/// Sets a Node's InternalIPs (its Hostname stays), as its kubelet would after an address
/// moved.
fn set_node_addresses(bed: &ControllerBed, name: &str, ips: &[IpAddr]) -> TestResult {
    use k8s_openapi::api::core::v1::NodeAddress;
    let mut node: Node = bed.cluster.objects().get("", name)?.ok_or("no such Node")?;
    let mut addresses: Vec<NodeAddress> = ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".to_owned(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".to_owned(),
        address: name.to_owned(),
    });
    node.status.get_or_insert_with(Default::default).addresses = Some(addresses);
    bed.cluster.objects().update(&node)?;
    Ok(())
}

/// A stale view of the Nodes — what a watch cache behind etcd serves after an API server
/// restart or on a lagging HA replica — cannot get a CSR approved for the wrong node.
/// 10.0.0.1 moves from node-a to node-b while the API server's view of the Nodes lags; the
/// approver restarts and its first list answers the old snapshot (node-a still has
/// 10.0.0.1). node-a, whose
/// agent (root on node-a) keeps claiming 10.0.0.1, is not approved for it; node-b waits
/// while the stale Node list still shows the address on node-a, and is approved once the
/// view is current; node-a's CSR is denied on facts that postdate it.
#[tokio::test]
async fn a_stale_node_list_cannot_get_a_csr_approved_for_the_wrong_node() -> TestResult {
    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("node-a", &[ip(1)])?;
    bed.add_node("node-b", &[ip(2)])?;
    let a = bed.agent("node-a", &[&replica], &[ip(1)]).await?;
    let b = bed.agent("node-b", &[&replica], &[ip(2)]).await?;
    a.report().await?;
    b.report().await?;
    let store = replica.store().clone();
    eventually("both attestations", WITHIN, || {
        store.attestation("node-a").is_some() && store.attestation("node-b").is_some()
    })
    .await?;

    // The cache falls behind, then the address moves, and the approver restarts: the new
    // replica's first list of the Nodes is the snapshot from before the move (its
    // watches then hold every later change), as after a failover onto an API server
    // whose watch cache lags.
    bed.cluster.objects().serve_stale_reads::<Node>()?;
    set_node_addresses(&bed, "node-a", &[ip(3)])?;
    set_node_addresses(&bed, "node-b", &[ip(2), ip(1)])?;
    a.stop().await;
    b.stop().await;
    replica.stop().await?;
    let replica = bed
        .replica(bed.controller_config("approver-1"), false)
        .await?;
    replica.wait_acting(WITHIN).await?;
    // node-a's agent (root on node-a) keeps claiming 10.0.0.1; node-b's reports it now.
    let a = bed.agent("node-a", &[&replica], &[ip(1)]).await?;
    let b = bed.agent("node-b", &[&replica], &[ip(2), ip(1)]).await?;
    a.report().await?;
    b.report().await?;
    let store = replica.store().clone();
    eventually("both attestations on the new replica", WITHIN, || {
        store.attestation("node-a").is_some() && store.attestation("node-b").is_some()
    })
    .await?;

    let for_a = bed.create_csr("node-a", &[ip(1)]).await?.name_any();
    eventually("a decision about node-a's CSR", WITHIN, || {
        bed.event_reasons(&for_a).is_ok_and(|r| !r.is_empty())
    })
    .await?;
    let reasons = bed.event_reasons(&for_a)?;
    assert_eq!(reasons, ["AddressConflict"], "node-b attests 10.0.0.1 too");
    let csr = bed.csr(&for_a)?.ok_or("node-a's CSR")?;
    assert!(conditions(&csr).is_empty(), "{:?}", conditions(&csr));

    // node-a stops claiming the address; node-b asks; the view catches up.
    a.set_addresses(&[(ip(3), 24)]);
    a.report().await?;
    let for_b = bed.create_csr("node-b", &[ip(2), ip(1)]).await?.name_any();
    eventually("a decision about node-b's CSR", WITHIN, || {
        bed.event_reasons(&for_b).is_ok_and(|r| !r.is_empty())
    })
    .await?;
    // The stale Node list is what holds node-b: it still shows 10.0.0.1 on node-a.
    let note = bed.events_about(&for_b)?[0]
        .note
        .clone()
        .unwrap_or_default();
    assert!(
        note.contains("10.0.0.1 is in Node node-a's status.addresses"),
        "{note}"
    );
    let csr = bed.csr(&for_b)?.ok_or("node-b's CSR")?;
    assert!(conditions(&csr).is_empty(), "{:?}", conditions(&csr));
    bed.cluster.objects().catch_up_reads::<Node>()?;
    let csr = wait_for_csr(&bed, &for_b, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"]);
    let csr = wait_for_csr(&bed, &for_a, WITHIN, |c| !conditions(c).is_empty()).await?;
    assert_eq!(
        conditions(&csr),
        ["Denied"],
        "node-a's facts no longer hold 10.0.0.1"
    );
    // The counters follow the writes' answers, which may come after the watch events.
    let metrics = replica.controller_metrics();
    eventually("both writes counted", WITHIN, || {
        metrics.writes("approve", "ok") == 1 && metrics.writes("deny", "ok") == 1
    })
    .await?;
    replica.stop().await?;
    Ok(())
}

/// The real agent with a cloud's metadata (the testbed's service, AWS's protocol): while
/// the service is too slow to read, the node's CSR for its public address (on no
/// interface) waits — the reports say the source is incomplete, so even facts received
/// after the CSR are no evidence — and once the service answers, the same CSR is approved
/// on the address the metadata states. Never denied in between.
#[tokio::test]
async fn a_public_address_waits_while_the_metadata_is_unreadable_and_is_approved_once_read()
-> TestResult {
    use rubber_stamp_agent::cloud::{CloudConfig, CloudMode};
    use rubber_stamp_e2e::channel::agent_config;
    use rubber_stamp_metadata_sim::{Fault, Instance, MetadataService, Provider};

    let (bed, replica) = bed_and_replica(|_| {}).await?;
    bed.add_node("worker-1", &[])?;
    let public: IpAddr = "203.0.113.77".parse()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metadata = MetadataService::start(
        listener,
        Provider::Aws,
        Instance {
            public: vec![public],
            ..Instance::default()
        },
    )?;
    metadata.set_fault(Fault::Slow(Duration::from_secs(60)));
    let identity = bed
        .pki
        .write_combined(&bed.pki.node("worker-1")?, "worker-1")?;
    let mut config = agent_config(
        &bed.pki,
        replica.addrs().grpc,
        IdentitySource::Combined(identity),
    );
    config.cloud = CloudConfig {
        mode: CloudMode::Aws,
        endpoint: metadata.addr(),
        // Generous enough for a busy machine once the service answers.
        timeout: Duration::from_millis(1500),
    };
    let agent = TestAgent::start(config, Arc::new(SystemResolver)).await?;
    let store = replica.store().clone();
    eventually(
        "an attestation marking cloud:aws incomplete",
        WITHIN,
        || {
            store.attestation("worker-1").is_some_and(|a| {
                a.sources
                    .iter()
                    .any(|s| s.source == "cloud:aws" && !s.complete)
            })
        },
    )
    .await?;

    let csr = bed.create_csr("worker-1", &[public]).await?;
    let name = csr.name_any();
    past_creation(&csr).await?;
    // A report received after the CSR (the agent reads every 200 ms), still incomplete,
    // and a decision on it: pending for want of evidence, not denied.
    let created = csr
        .metadata
        .creation_timestamp
        .as_ref()
        .ok_or("no creationTimestamp")?
        .0;
    eventually("a report received after the CSR", WITHIN, || {
        store
            .attestation("worker-1")
            .is_some_and(|a| a.received_at > created + SignedDuration::from_secs(1))
    })
    .await?;
    // The controller challenged the facts that predate the CSR; the answer is a report
    // after it, still incomplete. (Had anything denied the CSR in between, it could not be
    // approved below: the conditions would hold Denied.)
    let metrics = replica.controller_metrics();
    eventually("the challenge answered", WITHIN, || {
        metrics.challenges("answered") >= 1
    })
    .await?;
    let waiting = bed.csr(&name)?.ok_or("the CSR")?;
    assert!(
        conditions(&waiting).is_empty(),
        "{:?}",
        conditions(&waiting)
    );

    metadata.set_fault(Fault::None);
    let csr = wait_for_csr(&bed, &name, WITHIN, is_approved).await?;
    assert_eq!(conditions(&csr), ["Approved"], "approved, never denied");
    let a = store.attestation("worker-1").ok_or("attestation")?;
    assert!(
        a.metadata
            .iter()
            .any(|m| m.source == "cloud:aws" && m.addresses.contains(&public)),
        "{a:?}"
    );
    agent.stop().await?;
    replica.stop().await?;
    Ok(())
}
