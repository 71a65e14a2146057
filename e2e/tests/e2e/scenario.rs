//! End to end, on simulated hosts with the real binaries: honest nodes get
//! serving certificates that verify for their IPs; a node asking for another
//! node's IP is denied; a node that puts that IP on a dummy interface so its
//! agent attests it stays pending with AddressConflict; a node whose agent
//! never runs stays pending with AwaitingAttestation; a cloud node whose agent reads its
//! public address and DNS name from its metadata service (the real agent, AWS's protocol,
//! the project's metadata-sim at 169.254.169.254 in its namespace) is approved for them,
//! and a rogue whose metadata claims that address stays pending with AddressConflict.
//! The agents attest with projected ServiceAccount tokens (the sandbox's default); one
//! whose agent presents another workload's token is refused and stays pending with
//! AwaitingAttestation.

use std::time::Duration;

use rubber_stamp_sandbox::csr::Condition;
use rubber_stamp_sandbox::scenario::{self, ScenarioOptions};
use rubber_stamp_sandbox::tokens::AgentIdentity;
use rubber_stamp_sandbox::{Timings, e2e};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn honest_nodes_are_approved_and_every_rogue_case_is_not() {
    let _alone = crate::one_system_at_a_time().await;
    let Some(mut sandbox) = e2e::namespaced(
        "honest_nodes_are_approved_and_every_rogue_case_is_not",
        Timings::fast(),
    )
    .await
    else {
        return;
    };
    let outcome = scenario::run(
        &mut sandbox,
        &ScenarioOptions {
            honest: 3,
            rogues: true,
            timeout: Duration::from_secs(30),
            identity: AgentIdentity::Token,
        },
    )
    .await
    .expect("the scenario runs");
    assert!(outcome.success(), "problems: {:#?}", outcome.problems);
    assert!(
        outcome.surprises.is_empty(),
        "surprises: {:#?}",
        outcome.surprises
    );

    let worker1 = sandbox.node("worker-1").expect("worker-1").addresses();
    let stolen = worker1[0];
    for node in ["worker-1", "worker-2", "worker-3"] {
        let rows = outcome.rows_of(node);
        assert_eq!(rows.len(), 1, "{node}: one CSR");
        let row = rows[0];
        assert!(row.approved_and_issued(), "{node}: {row:?}");
        assert_eq!(row.reason, "AutoApproved");
        assert_eq!(row.approvals, 1, "{node}: approved exactly once");
        assert_eq!(
            row.ips,
            sandbox.node(node).expect("node").addresses(),
            "{node} asked for exactly its own addresses"
        );
        assert_eq!(row.dns, [node]);
    }
    let thief = outcome.rows_of("thief");
    assert_eq!(thief.len(), 1);
    assert_eq!(thief[0].condition, Condition::Denied, "{:?}", thief[0]);
    assert_eq!(thief[0].reason, "AddressNotAttested");
    assert!(
        thief[0].ips.contains(&stolen),
        "the thief asked for {stolen}"
    );
    assert!(!thief[0].issued);
    let squatter = outcome.rows_of("squatter");
    assert_eq!(squatter.len(), 1);
    assert_eq!(
        squatter[0].condition,
        Condition::Pending,
        "{:?}",
        squatter[0]
    );
    assert_eq!(squatter[0].reason, "AddressConflict");
    assert!(squatter[0].ips.contains(&stolen));
    let silent = outcome.rows_of("no-agent");
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].condition, Condition::Pending);
    assert_eq!(silent[0].reason, "AwaitingAttestation");
    let foreign = outcome.rows_of("foreign-token");
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0].condition, Condition::Pending, "{:?}", foreign[0]);
    assert_eq!(foreign[0].reason, "AwaitingAttestation");
    for (replica, attestation) in sandbox
        .attestations_of("foreign-token")
        .await
        .expect("snapshot")
    {
        assert!(attestation.is_none(), "{replica} attested foreign-token");
    }
    for replica in sandbox.approvers() {
        let metrics = replica.metrics().await.expect("metrics");
        assert!(
            metrics.lines().any(|l| l.starts_with(
                "rubber_stamp_attestation_refused_streams_total{reason=\"token_service_account\"}"
            )),
            "{}: no token_service_account refusal",
            replica.name()
        );
    }
    let dns_thief = outcome.rows_of("dns-thief");
    assert_eq!(dns_thief.len(), 1);
    assert_eq!(
        dns_thief[0].condition,
        Condition::Denied,
        "{:?}",
        dns_thief[0]
    );
    assert_eq!(dns_thief[0].reason, "NameNotAllowed");
    assert!(
        dns_thief[0]
            .dns
            .iter()
            .any(|d| d == scenario::SERVICE_HOSTNAME),
        "{:?}",
        dns_thief[0]
    );
    assert!(!dns_thief[0].issued);

    // The squatter's agent really attested the stolen address (on its dummy
    // interface): the conflict is the approver's finding, not a missing fact.
    for (replica, attestation) in sandbox.attestations_of("squatter").await.expect("snapshot") {
        let a = attestation.unwrap_or_else(|| panic!("{replica} has no attestation of squatter"));
        assert!(
            a.addresses()
                .any(|(iface, ip)| iface == scenario::DUMMY_INTERFACE && ip == stolen),
            "{replica}: {a:?}"
        );
    }
    // The DNS thief's agent really attested the Service name as its hostname (the
    // real agent read it from its UTS namespace): the denial is the policy's.
    for (replica, attestation) in sandbox
        .attestations_of("dns-thief")
        .await
        .expect("snapshot")
    {
        let a = attestation.unwrap_or_else(|| panic!("{replica} has no attestation of dns-thief"));
        assert_eq!(a.hostname, scenario::SERVICE_HOSTNAME, "{replica}");
    }

    // The proof: every honest node's kubelet verified for each of its IPs,
    // against the cluster CA, showing its own name; the impostor line refused.
    for node in ["worker-1", "worker-2", "worker-3"] {
        let ips = sandbox.node(node).expect("node").addresses();
        for ip in &ips {
            let line = outcome
                .proofs
                .iter()
                .find(|p| p.node == node && p.expected == Some(*ip) && p.should_verify)
                .unwrap_or_else(|| panic!("no proof line for {node} {ip}"));
            let verified = line
                .result
                .as_ref()
                .unwrap_or_else(|e| panic!("{node} {ip}: {e}"));
            assert_eq!(
                verified.subject,
                format!("O=system:nodes, CN=system:node:{node}")
            );
            assert!(verified.sans.contains(&ip.to_string()));
            assert!(verified.healthz.ends_with(": ok"), "{verified:?}");
        }
    }
    // The cloud node: approved for its public address and the cloud's DNS name, which its
    // real agent read from the metadata service; its certificate verifies for the public
    // address; the rogue whose metadata claims that address is held.
    let cloud = outcome.rows_of("cloud-1");
    assert_eq!(cloud.len(), 1);
    assert!(cloud[0].approved_and_issued(), "{:?}", cloud[0]);
    assert!(
        cloud[0].ips.contains(&scenario::CLOUD_PUBLIC),
        "{:?}",
        cloud[0]
    );
    assert!(
        cloud[0].dns.iter().any(|d| d == scenario::CLOUD_DNS),
        "{:?}",
        cloud[0]
    );
    for (replica, attestation) in sandbox.attestations_of("cloud-1").await.expect("snapshot") {
        let a = attestation.unwrap_or_else(|| panic!("{replica} has no attestation of cloud-1"));
        let aws = a
            .metadata
            .iter()
            .find(|m| m.source == "cloud:aws")
            .unwrap_or_else(|| panic!("{replica}: no cloud:aws facts in {a:?}"));
        assert!(
            aws.addresses.contains(&scenario::CLOUD_PUBLIC),
            "{replica}: {aws:?}"
        );
        assert!(
            aws.dns_names.iter().any(|d| d == scenario::CLOUD_DNS),
            "{replica}: {aws:?}"
        );
        assert!(
            !a.addresses().any(|(_, ip)| ip == scenario::CLOUD_PUBLIC),
            "on no interface"
        );
    }
    let public = outcome
        .proofs
        .iter()
        .find(|p| p.node == "cloud-1" && p.expected == Some(scenario::CLOUD_PUBLIC))
        .expect("a proof line for cloud-1's public address");
    assert!(public.result.is_ok(), "{:?}", public.result);
    let rogue = outcome.rows_of("cloud-rogue");
    assert_eq!(rogue.len(), 1);
    assert_eq!(rogue[0].condition, Condition::Pending, "{:?}", rogue[0]);
    assert_eq!(rogue[0].reason, "AddressConflict");
    assert!(!rogue[0].issued);

    let impostor = outcome
        .proofs
        .iter()
        .find(|p| !p.should_verify && p.expected == Some(stolen))
        .expect("the impostor line");
    assert!(
        impostor
            .result
            .as_ref()
            .is_err_and(|e| e.contains("certificate")),
        "{:?}",
        impostor.result
    );
}
