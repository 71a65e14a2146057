//! End to end, agents with tokens: a token stolen from one node (`victim`) and presented by
//! the real agent on another host (`holder`) makes the approver attribute that agent's
//! reports to the victim — the token names the victim — but the connection comes from the
//! holder's address, which the holder's own Node lists, and the facts describe the holder's
//! machine: the victim's CSR is held (never approved, never denied on those facts) until
//! a person looks, and is approved once the victim's own agent reports again.

use std::time::Duration;

use rubber_stamp_sandbox::csr::Condition;
use rubber_stamp_sandbox::tokens::AgentIdentity;
use rubber_stamp_sandbox::{Timings, e2e};

const VICTIM: &str = "victim";
const HOLDER: &str = "holder";
const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stolen_token_used_from_another_host_does_not_get_a_certificate() {
    let _alone = crate::one_system_at_a_time().await;
    let Some(mut sandbox) = e2e::namespaced_with(
        "a_stolen_token_used_from_another_host_does_not_get_a_certificate",
        Timings::fast(),
        AgentIdentity::Token,
    )
    .await
    else {
        return;
    };
    sandbox.wait_leader(None, STEP).await.expect("a leader");
    sandbox.add_node(VICTIM).await.expect("victim");
    sandbox.add_node(HOLDER).await.expect("holder");
    let stolen = sandbox
        .node(VICTIM)
        .expect("victim")
        .token()
        .expect("token mode")
        .to_owned();
    let holder_ip = sandbox.node(HOLDER).expect("holder").addresses()[0];
    sandbox
        .node_mut(HOLDER)
        .expect("holder")
        .set_token(&stolen)
        .expect("token");
    sandbox.start_agent(HOLDER).expect("the holder's agent");
    // Every replica holds an attestation of the victim, sent from the holder's address.
    sandbox
        .wait_attested(&[VICTIM], STEP)
        .await
        .expect("attested as the victim");
    for (replica, attestation) in sandbox.attestations_of(VICTIM).await.expect("snapshot") {
        let a = attestation.unwrap_or_else(|| panic!("{replica}: no attestation"));
        assert_eq!(a.peer_address, Some(holder_ip), "{replica}");
        assert_eq!(a.hostname, HOLDER, "{replica}: the facts are the holder's");
    }
    assert!(
        sandbox
            .attestations_of(HOLDER)
            .await
            .expect("snapshot")
            .iter()
            .all(|(_, a)| a.is_none()),
        "the token names the victim, not the host it is used from"
    );

    // The victim's kubelet asks for its own addresses: held, not approved, not denied.
    sandbox.start_kubelet(VICTIM, None).expect("kubelet");
    let rows = sandbox
        .wait_rows("the victim's CSR to be held", STEP, |rows| {
            e2e::of(rows, VICTIM)
                .first()
                .is_some_and(|r| matches!(r.reason.as_str(), "PeerMismatch" | "NodeMismatch"))
        })
        .await
        .expect("held");
    let row = e2e::of(&rows, VICTIM)[0].clone();
    assert_eq!(row.condition, Condition::Pending, "{row:?}");
    assert!(!row.issued);
    assert!(
        row.message.contains(&holder_ip.to_string()) || row.reason == "NodeMismatch",
        "{row:?}"
    );
    // The holder's agent stops; the victim's own agent reports: approved — so the CSR was
    // never denied on the holder's facts (a denial is final).
    sandbox
        .node_mut(HOLDER)
        .expect("holder")
        .stop_agent()
        .await
        .expect("stopped");
    sandbox.start_agent(VICTIM).expect("the victim's agent");
    let csr = row.name.clone();
    sandbox
        .wait_rows("the victim's CSR to be approved", STEP, |rows| {
            rows.iter()
                .any(|r| r.name == csr && r.approved_and_issued())
        })
        .await
        .expect("approved once the victim reports");
}
