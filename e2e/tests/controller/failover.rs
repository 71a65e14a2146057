//! Two approver replicas and one Lease, and the testbed's faults: only the leader acts; a
//! leader cut off the API server stops acting before the standby can start, and the standby
//! approves a new CSR within the lease duration (+1 s); a graceful stop releases the Lease;
//! dropped watches, 410, 429, 500 and a 409 on the approval leave every valid CSR approved
//! exactly once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt as _;
use rubber_stamp_apiserver::{FaultAction, FaultRule};
use rubber_stamp_approver::controller::config::DEFAULT_LEASE_NAME;
use rubber_stamp_core::AttestationLookup as _;
use rubber_stamp_e2e::controller::{
    APPROVER_NAMESPACE, ControllerBed, Replica, ScriptedAgent, conditions, eventually, is_approved,
    wait_for_csr,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WITHIN: Duration = Duration::from_secs(10);
/// The tests' lease duration (see `ControllerBed::controller_config`).
const LEASE: Duration = Duration::from_secs(3);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, last))
}

fn approver_of(csr: &CertificateSigningRequest) -> String {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Approved"))
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

fn approved_once(csr: &CertificateSigningRequest) -> bool {
    conditions(csr) == ["Approved"]
}

async fn two_replicas(
    bed: &ControllerBed,
) -> Result<(Replica, Replica), Box<dyn std::error::Error>> {
    let a = bed
        .replica(bed.controller_config("approver-a"), true)
        .await?;
    let b = bed
        .replica(bed.controller_config("approver-b"), true)
        .await?;
    eventually("a leader", WITHIN, || {
        a.leadership().may_act() || b.leadership().may_act()
    })
    .await?;
    Ok(if a.leadership().may_act() {
        (a, b)
    } else {
        (b, a)
    })
}

/// A node with its Node object and an agent reporting to every replica.
async fn attested(
    bed: &ControllerBed,
    replicas: &[&Replica],
    node: &str,
    address: IpAddr,
) -> Result<ScriptedAgent, Box<dyn std::error::Error>> {
    bed.add_node(node, &[address])?;
    let agent = bed.agent(node, replicas, &[address]).await?;
    agent.report().await?;
    eventually("the attestation on every replica", WITHIN, || {
        replicas
            .iter()
            .all(|r| r.store().attestation(node).is_some())
    })
    .await?;
    Ok(agent)
}

#[tokio::test]
async fn only_the_leader_acts_and_a_cut_off_leader_stops_before_the_standby_takes_over()
-> TestResult {
    let bed = ControllerBed::start().await?;
    let (leader, standby) = two_replicas(&bed).await?;
    let both = [&leader, &standby];
    let _n1 = attested(&bed, &both, "node-1", ip(1)).await?;
    let _n2 = attested(&bed, &both, "node-2", ip(2)).await?;
    let _n3 = attested(&bed, &both, "node-3", ip(3)).await?;

    let first = bed.create_csr("node-1", &[ip(1)]).await?;
    let first = wait_for_csr(&bed, &first.name_any(), WITHIN, is_approved).await?;
    assert!(approver_of(&first).contains(leader.name()));
    assert!(!standby.leadership().may_act());
    assert_eq!(standby.controller_metrics().writes("approve", "ok"), 0);
    assert!(
        bed.events_about(&first.name_any())?
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some(leader.name())),
        "only the leader publishes Events"
    );

    // Cut the leader off the API server: it can no longer renew.
    leader.cut();
    let cut_at = jiff::Timestamp::now();
    let second = bed.create_csr("node-2", &[ip(2)]).await?;
    let second = wait_for_csr(
        &bed,
        &second.name_any(),
        LEASE + Duration::from_secs(3),
        is_approved,
    )
    .await?;
    assert!(
        approver_of(&second).contains(standby.name()),
        "{}",
        approver_of(&second)
    );
    let approved_at = second
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.last_update_time.as_ref())
        .ok_or("no lastUpdateTime")?
        .0;
    let took = approved_at.duration_since(cut_at);
    assert!(
        took < jiff::SignedDuration::try_from(LEASE + Duration::from_millis(1500))?,
        "the standby approved {took:#} after the leader was cut off"
    );
    // The old leader's last permission to act ended before the standby began.
    let old_end = leader.leadership().deadline().ok_or("no deadline")?;
    let new_start = standby
        .leadership()
        .acting_since()
        .ok_or("the standby does not act")?;
    assert!(!leader.leadership().may_act());
    assert!(
        old_end <= new_start,
        "the old leader could act until {:?} after the new one started",
        old_end - new_start
    );

    // Back on the network, the old leader sees the new holder and stays a standby.
    leader.heal();
    let third = bed.create_csr("node-3", &[ip(3)]).await?;
    let third = wait_for_csr(&bed, &third.name_any(), WITHIN, is_approved).await?;
    assert!(approver_of(&third).contains(standby.name()));
    assert!(!leader.leadership().may_act());

    // Every CSR approved exactly once: one Approved condition each, and the API server
    // accepted exactly three approvals across both replicas.
    for csr in [&first, &second, &third] {
        let now = bed.csr(&csr.name_any())?.ok_or("gone")?;
        assert!(approved_once(&now), "{:?}", conditions(&now));
    }
    let accepted = || {
        leader.controller_metrics().writes("approve", "ok")
            + standby.controller_metrics().writes("approve", "ok")
    };
    eventually("3 accepted approvals", WITHIN, || accepted() >= 3).await?;
    assert_eq!(accepted(), 3);
    leader.stop().await?;
    standby.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_graceful_stop_releases_the_lease_and_the_standby_takes_over() -> TestResult {
    let bed = ControllerBed::start().await?;
    let (leader, standby) = two_replicas(&bed).await?;
    let _n = attested(&bed, &[&leader, &standby], "node-4", ip(4)).await?;
    let holder = || -> Result<Option<String>, Box<dyn std::error::Error>> {
        let lease: Option<Lease> = bed
            .cluster
            .objects()
            .get(APPROVER_NAMESPACE, DEFAULT_LEASE_NAME)?;
        Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    };
    assert_eq!(holder()?.as_deref(), Some(leader.name()));
    leader.stop().await?;
    assert_eq!(holder()?, None, "released on the way out");
    let stopped_at = jiff::Timestamp::now();
    let csr = bed.create_csr("node-4", &[ip(4)]).await?;
    let csr = wait_for_csr(
        &bed,
        &csr.name_any(),
        LEASE + Duration::from_secs(3),
        is_approved,
    )
    .await?;
    assert!(approver_of(&csr).contains(standby.name()));
    let took = jiff::Timestamp::now().duration_since(stopped_at);
    assert!(
        took < jiff::SignedDuration::try_from(LEASE + Duration::from_millis(1500))?,
        "{took:#}"
    );
    standby.stop().await?;
    Ok(())
}

#[tokio::test]
async fn every_valid_csr_is_approved_exactly_once_through_api_faults() -> TestResult {
    let bed = ControllerBed::start().await?;
    let replica = bed
        .replica(bed.controller_config("approver-0"), false)
        .await?;
    replica.wait_acting(WITHIN).await?;
    let faults = bed.cluster.faults();
    // Faults on the controller's own requests only (the test's kubelets and Lease renewals
    // are not hit): 429 and 500 on a share of SubjectAccessReviews and approvals, failing
    // re-lists.
    faults.inject(
        FaultRule::new(FaultAction::TooManyRequests {
            retry_after_secs: 1,
        })
        .fraction(0.3)
        .resource("subjectaccessreviews"),
    );
    faults.inject(
        FaultRule::new(FaultAction::InternalError)
            .fraction(0.3)
            .verb("update")
            .subresource("approval"),
    );
    faults.inject(
        FaultRule::new(FaultAction::InternalError)
            .times(2)
            .verb("list")
            .resource("certificatesigningrequests"),
    );

    let mut agents = Vec::new();
    let mut names = Vec::new();
    for i in 0..8u8 {
        let node = format!("flaky-{i}");
        bed.add_node(&node, &[ip(10 + i)])?;
        let agent = bed.agent(&node, &[&replica], &[ip(10 + i)]).await?;
        let csr = bed.create_csr(&node, &[ip(10 + i)]).await?;
        let name = csr.name_any();
        if i == 3 {
            // The first approval of this one gets a 409: re-read, re-decide, approve.
            faults.conflict_next_update("certificatesigningrequests", &name);
        }
        match i % 3 {
            0 => faults.drop_watches(),
            1 => {
                faults.expire_next_watch();
                faults.drop_watches();
            }
            _ => {}
        }
        agent.report().await?;
        agents.push(agent);
        names.push(name);
    }
    for name in &names {
        let csr = wait_for_csr(&bed, name, Duration::from_secs(30), is_approved).await?;
        assert!(approved_once(&csr), "{name}: {:?}", conditions(&csr));
    }
    // The store shows an approval a moment before its client reads the response.
    let metrics = replica.controller_metrics();
    eventually("8 accepted approvals", WITHIN, || {
        metrics.writes("approve", "ok") >= 8
    })
    .await?;
    assert_eq!(
        metrics.writes("approve", "ok"),
        8,
        "the API server accepted exactly one approval per CSR"
    );
    assert!(
        metrics.writes("approve", "conflict") >= 1,
        "the 409 was met"
    );
    assert!(
        metrics.reconcile_errors("write") + metrics.reconcile_errors("access_review") >= 1,
        "faults were met and retried"
    );
    assert!(faults.injected() >= 3);
    faults.clear();
    replica.stop().await?;
    Ok(())
}
