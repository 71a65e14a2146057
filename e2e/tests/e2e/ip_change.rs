//! End to end: a node's address changes (moved in its namespace); its agent
//! reports the change, its kubelet asks again, and the new certificate is
//! approved for the new IP and not the old; a later request still naming the
//! old IP is denied.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use rubber_stamp_sandbox::csr::{Condition, CsrRow};
use rubber_stamp_sandbox::tokens::AgentIdentity;
use rubber_stamp_sandbox::{Sandbox, Timings, e2e, proof};

const NODE: &str = "mover";
const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_ip_change_the_new_ip_is_approved_and_the_old_is_not() {
    let _alone = crate::one_system_at_a_time().await;
    // Agents with the kubelet's certificate here (the other sandbox tests use tokens).
    let Some(mut sandbox) = e2e::namespaced_with(
        "after_an_ip_change_the_new_ip_is_approved_and_the_old_is_not",
        Timings::fast(),
        AgentIdentity::KubeletCert,
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
    let old_v4 = sandbox
        .node(NODE)
        .expect("node")
        .host()
        .expect("host")
        .initial_addresses()[0];
    let old = old_v4.addr();

    // First certificate: for the address the node started with.
    sandbox.start_kubelet(NODE, None).expect("kubelet");
    let first = approved_besides(&sandbox, &[]).await;
    assert!(first.ips.contains(&old), "{first:?}");
    sandbox
        .node_mut(NODE)
        .expect("node")
        .stop_kubelet()
        .await
        .expect("stop");

    // The address moves: a new one on eth0, the old one gone.
    let network = sandbox.network().expect("namespace mode");
    let new_v4 = IpNet::V4(network.allocate_ipv4().expect("address"));
    let new = new_v4.addr();
    sandbox
        .node_mut(NODE)
        .expect("node")
        .change_address(old_v4, new_v4)
        .await
        .expect("address change");
    sandbox
        .node(NODE)
        .expect("node")
        .update_node_addresses(sandbox.node_client(NODE).await.expect("client"))
        .await
        .expect("Node status");
    // The agent notices within its poll interval and every replica learns it.
    let s = &sandbox;
    e2e::eventually(
        "every replica to see the new address and not the old",
        STEP,
        move || async move { attests(s, new, old).await.then_some(()) },
    )
    .await;

    // The kubelet does not reuse a certificate for other addresses: a new CSR.
    sandbox.start_kubelet(NODE, None).expect("kubelet");
    let second = approved_besides(&sandbox, &[&first.name]).await;
    assert_ne!(second.name, first.name);
    assert!(second.ips.contains(&new), "{second:?}");
    assert!(!second.ips.contains(&old), "{second:?}");
    let serving = sandbox
        .node_mut(NODE)
        .expect("node")
        .wait_kubelet_serving(STEP)
        .await
        .expect("serving");
    let ca = sandbox.control().cluster.ca_pem().to_owned();
    let verified = proof::verify_kubelet(&ca, serving, new)
        .await
        .expect("verified for the new IP");
    assert!(verified.sans.contains(&new.to_string()));
    assert!(!verified.sans.contains(&old.to_string()));
    let refused = proof::verify_kubelet(&ca, serving, old).await;
    assert!(
        refused.is_err(),
        "the certificate must not be valid for the old IP"
    );

    // A request that still names the old address is denied: the fresh facts
    // (the approver challenges the agent) do not have it.
    sandbox
        .node_mut(NODE)
        .expect("node")
        .stop_kubelet()
        .await
        .expect("stop");
    let stale: Vec<IpAddr> = vec![old];
    sandbox.start_kubelet(NODE, Some(&stale)).expect("kubelet");
    let rows = sandbox
        .wait_rows("the CSR naming the old IP to be decided", STEP, |rows| {
            e2e::of(rows, NODE).len() == 3
                && e2e::of(rows, NODE)
                    .iter()
                    .all(|r| r.condition != Condition::Pending)
        })
        .await
        .expect("decided");
    let third = e2e::of(&rows, NODE)
        .into_iter()
        .find(|r| r.ips == stale)
        .expect("the CSR for the old IP");
    assert_eq!(third.condition, Condition::Denied, "{third:?}");
    assert_eq!(third.reason, "AddressNotAttested", "{third:?}");
    assert!(!third.issued);
}

/// Waits until the node has one CSR besides `known`, and every one is
/// approved and issued; returns the new one.
async fn approved_besides(sandbox: &Sandbox, known: &[&str]) -> CsrRow {
    let rows = sandbox
        .wait_rows(
            &format!("{} approved CSRs of {NODE}", known.len() + 1),
            STEP,
            |rows| {
                let mine = e2e::of(rows, NODE);
                mine.len() == known.len() + 1 && mine.iter().all(|r| r.approved_and_issued())
            },
        )
        .await
        .expect("approved");
    e2e::of(&rows, NODE)
        .into_iter()
        .find(|r| !known.contains(&r.name.as_str()))
        .cloned()
        .expect("the new CSR")
}

/// Whether every replica's attestation of the node has `new` and not `old`.
async fn attests(sandbox: &Sandbox, new: IpAddr, old: IpAddr) -> bool {
    for replica in sandbox.approvers() {
        let Ok(snapshot) = replica.attestations().await else {
            return false;
        };
        let Some(a) = snapshot.attestations.iter().find(|a| a.node_name == NODE) else {
            return false;
        };
        let ips: Vec<IpAddr> = a.addresses().map(|(_, ip)| ip).collect();
        if !ips.contains(&new) || ips.contains(&old) {
            return false;
        }
    }
    true
}
