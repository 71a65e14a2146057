//! End to end: the approver replica holding the Lease is killed (SIGKILL, no
//! goodbye) while CSRs are pending; the standby takes the Lease when it
//! expires and approves them, within the lease duration plus a margin, each
//! exactly once.

use std::time::{Duration, Instant};

use rubber_stamp_sandbox::{Timings, e2e};

const NODES: [&str; 2] = ["node-a", "node-b"];
const STEP: Duration = Duration::from_secs(20);
const LEASE: Duration = Duration::from_secs(3);
/// Time for the standby's next acquisition attempt, the agents' reports and
/// the decisions, beyond the lease duration.
const MARGIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_approves_pending_csrs_after_the_leader_is_killed() {
    let _alone = crate::one_system_at_a_time().await;
    let Some(mut sandbox) = e2e::namespaced(
        "the_standby_approves_pending_csrs_after_the_leader_is_killed",
        Timings {
            lease_duration: LEASE,
            ..Timings::fast()
        },
    )
    .await
    else {
        return;
    };
    let leader = sandbox.wait_leader(None, STEP).await.expect("a leader");
    let standby = sandbox
        .approvers()
        .iter()
        .map(|a| a.name().to_owned())
        .find(|n| *n != leader)
        .expect("a standby");

    // CSRs pending: the kubelets ask before any agent runs.
    for node in NODES {
        sandbox.add_node(node).await.expect("node");
        sandbox.start_kubelet(node, None).expect("kubelet");
    }
    sandbox
        .wait_rows(
            "the leader to mark both CSRs as awaiting attestation",
            STEP,
            |rows| {
                NODES.iter().all(|n| {
                    e2e::of(rows, n)
                        .first()
                        .is_some_and(|r| r.reason == "AwaitingAttestation")
                })
            },
        )
        .await
        .expect("pending");
    assert_eq!(
        sandbox.leader().await.expect("lease").as_deref(),
        Some(leader.as_str())
    );

    // The leader dies without releasing its Lease.
    let replica = sandbox.approver_mut(&leader).expect("leader");
    replica.kill().expect("SIGKILL");
    let killed = Instant::now();
    e2e::eventually("the killed leader to be gone", STEP, || {
        let running = replica.is_running();
        async move { (!running).then_some(()) }
    })
    .await;

    // The agents start now; only the standby can take their reports to a decision.
    for node in NODES {
        sandbox.start_agent(node).expect("agent");
    }
    let rows = sandbox
        .wait_rows(
            "the standby to approve both CSRs",
            LEASE + MARGIN + STEP,
            |rows| {
                NODES.iter().all(|n| {
                    e2e::of(rows, n)
                        .first()
                        .is_some_and(|r| r.approved_and_issued())
                })
            },
        )
        .await
        .expect("approved");
    let took = killed.elapsed();
    assert!(
        took <= LEASE + MARGIN,
        "approved {took:?} after the leader died (lease {LEASE:?} + margin {MARGIN:?})"
    );
    assert_eq!(
        sandbox.leader().await.expect("lease").as_deref(),
        Some(standby.as_str()),
        "the standby holds the Lease"
    );
    for node in NODES {
        let mine = e2e::of(&rows, node);
        assert_eq!(mine.len(), 1, "{node}: one CSR");
        assert_eq!(mine[0].approvals, 1, "{node}: approved exactly once");
        assert!(
            mine[0].message.contains(&format!("({standby})")),
            "{node}: approved by the standby: {}",
            mine[0].message
        );
    }
}
