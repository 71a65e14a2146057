//! End to end: a node's agent dies (SIGKILL) and its attestation ages out;
//! the CSR its kubelet creates meanwhile stays pending, and the restarted
//! agent's first report gets it approved at once (the approver reacts to
//! the attestation, not to a periodic resync).

use std::time::{Duration, Instant};

use rubber_stamp_sandbox::csr::Condition;
use rubber_stamp_sandbox::{Timings, e2e};

const NODE: &str = "phoenix";
const STEP: Duration = Duration::from_secs(20);
/// Short, so the dead agent's attestation ages out quickly.
const MAX_AGE: Duration = Duration::from_secs(3);
/// Far below the controller's periodic re-check of pending CSRs (a minute).
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_gets_the_pending_csr_approved() {
    let _alone = crate::one_system_at_a_time().await;
    let Some(mut sandbox) = e2e::namespaced(
        "a_restarted_agent_gets_the_pending_csr_approved",
        Timings {
            max_age: MAX_AGE,
            ..Timings::fast()
        },
    )
    .await
    else {
        return;
    };
    sandbox.wait_leader(None, STEP).await.expect("a leader");
    sandbox.add_node(NODE).await.expect("node");
    sandbox.start_agent(NODE).expect("agent");
    sandbox
        .wait_attested(&[NODE], STEP)
        .await
        .expect("attested");

    // The agent dies mid-way; its attestation outlives the stream only until
    // it is older than the max age, then every replica drops it.
    sandbox
        .node_mut(NODE)
        .expect("node")
        .kill_agent()
        .await
        .expect("killed");
    let killed = Instant::now();
    let s = &sandbox;
    e2e::eventually(
        "every replica to drop the dead agent's attestation",
        STEP,
        move || async move {
            let mut gone = true;
            for replica in s.approvers() {
                let snapshot = replica.attestations().await.ok()?;
                gone &= snapshot.attestations.iter().all(|a| a.node_name != NODE);
            }
            gone.then_some(())
        },
    )
    .await;
    assert!(
        killed.elapsed() >= MAX_AGE - Duration::from_secs(1),
        "dropped before its max age"
    );

    // The kubelet asks now: nothing attests the node, so the CSR waits.
    sandbox.start_kubelet(NODE, None).expect("kubelet");
    let rows = sandbox
        .wait_rows("the CSR to wait for an attestation", STEP, |rows| {
            e2e::of(rows, NODE)
                .first()
                .is_some_and(|r| r.reason == "AwaitingAttestation")
        })
        .await
        .expect("pending");
    let csr = e2e::of(&rows, NODE)[0].name.clone();
    // It stays pending while the agent is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = sandbox.rows().await.expect("rows");
    let row = e2e::of(&rows, NODE)[0];
    assert_eq!(row.condition, Condition::Pending, "{row:?}");
    assert!(!row.issued);

    // The agent comes back: its first report approves the waiting CSR.
    sandbox.start_agent(NODE).expect("agent restarted");
    let restarted = Instant::now();
    let rows = sandbox
        .wait_rows("the waiting CSR to be approved", STEP, |rows| {
            e2e::of(rows, NODE)
                .first()
                .is_some_and(|r| r.approved_and_issued())
        })
        .await
        .expect("approved");
    let waited = restarted.elapsed();
    assert!(
        waited < PROMPT,
        "approved {waited:?} after the agent came back"
    );
    let row = e2e::of(&rows, NODE)[0];
    assert_eq!(row.name, csr, "the same CSR, not a new one");
    assert_eq!(row.approvals, 1);
    sandbox
        .node_mut(NODE)
        .expect("node")
        .wait_kubelet_serving(STEP)
        .await
        .expect("the kubelet serves with it");
}
