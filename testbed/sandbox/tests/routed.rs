//! The `sandbox` binary with `--topology routed` (needs root: simulated hosts; without
//! it these fail, or skip visibly with `SKIP_NETNS=1`): every node on its own routed
//! link and the approver's proof of address ownership required. The honest and cloud
//! nodes are approved as on the bridge; the claimer (an address nobody owns, on a dummy
//! interface) is held with OwnershipUnproven; the squatter (worker-1's address on a
//! dummy interface) with AddressNotOwned, also after worker-1's agent is stopped and a
//! probe is refused; the exit code says so. Also: `--topology routed` refuses
//! `--loopback`.

use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Instant;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

/// One whole system at a time: two at once would share two cores.
static ONE_SYSTEM: Mutex<()> = Mutex::new(());

/// Runs the sandbox with `args` after the routed flags and the faster timings of the
/// loopback test; returns its output and everything printed, for messages.
fn run_routed(args: &[&str]) -> (Output, String) {
    let _alone = ONE_SYSTEM.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let output = Command::new(SANDBOX)
        .args([
            "--topology",
            "routed",
            "--heartbeat",
            "2s",
            "--lease-duration",
            "4s",
        ])
        .args(args)
        .output()
        .expect("the sandbox binary runs");
    let context = format!(
        "after {:?}\nstdout:\n{}\nstderr:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, context)
}

/// The table's rows, split on whitespace, by node.
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("NAME "))
        .take_while(|l| !l.is_empty() && !l.starts_with("  ("))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn row<'a>(table: &'a [Vec<String>], node: &str, context: &str) -> &'a [String] {
    let mine: Vec<&Vec<String>> = table
        .iter()
        .filter(|r| r.get(1).map(String::as_str) == Some(node))
        .collect();
    assert_eq!(mine.len(), 1, "one CSR of {node}\n{context}");
    mine[0]
}

/// The IP SANs of a row (its third column: DNS names and IPs, comma-separated).
fn ips(row: &[String]) -> Vec<IpAddr> {
    row[2].split(',').filter_map(|s| s.parse().ok()).collect()
}

/// What every routed run must show, whatever the agents' credential.
fn assert_routed_run(output: &Output, context: &str) {
    assert_eq!(output.status.code(), Some(0), "{context}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("routed (--topology routed): every host on its own point-to-point veth"),
        "{context}"
    );
    assert!(
        stdout.contains("ownership proof required (ownershipProof.default: required)"),
        "{context}"
    );
    assert!(
        stdout.contains("Off for 203.0.113.0/24: cloud-1's NAT'd public address"),
        "{context}"
    );
    let table = table(&stdout);
    assert_eq!(
        table.first().map(|h| h.join(" ")),
        Some("NAME NODE SANS CONDITION REASON".to_owned()),
        "{context}"
    );
    for node in ["worker-1", "worker-2", "worker-3", "cloud-1"] {
        assert_eq!(
            &row(&table, node, context)[3..],
            ["Approved,Issued", "AutoApproved"],
            "{node}: every SAN proven (the cloud's public one off)\n{context}"
        );
    }
    let worker1 = ips(row(&table, "worker-1", context));
    let stolen = worker1
        .iter()
        .find(|ip| ip.is_ipv4())
        .copied()
        .expect("worker-1's IPv4");
    let squatter = row(&table, "squatter", context);
    assert_eq!(
        &squatter[3..],
        ["Pending", "AddressNotOwned"],
        "the probe of worker-1's address reached worker-1\n{context}"
    );
    assert!(ips(squatter).contains(&stolen), "{context}");
    let claimer = row(&table, "claimer", context);
    assert_eq!(
        &claimer[3..],
        ["Pending", "OwnershipUnproven"],
        "the probe of an address nobody owns reached no one\n{context}"
    );
    // Its own two addresses and the claimed one, which no other node asked for.
    let others: Vec<IpAddr> = table
        .iter()
        .skip(1)
        .filter(|r| r[1] != "claimer")
        .flat_map(|r| ips(r))
        .collect();
    let claimer_ips = ips(claimer);
    assert_eq!(claimer_ips.len(), 3, "{context}");
    assert!(
        claimer_ips.iter().all(|ip| !others.contains(ip)),
        "{context}"
    );
    assert_eq!(
        &row(&table, "thief", context)[3..],
        ["Denied", "AddressNotAttested"],
        "{context}"
    );
    assert_eq!(
        &row(&table, "dns-thief", context)[3..],
        ["Denied", "NameNotAllowed"],
        "{context}"
    );
    assert_eq!(
        &row(&table, "cloud-rogue", context)[3..],
        ["Pending", "AddressConflict"],
        "the cloud's public range is `off`: the conflict still holds it\n{context}"
    );
    assert_eq!(
        &row(&table, "no-agent", context)[3..],
        ["Pending", "AwaitingAttestation"],
        "{context}"
    );

    // worker-1's agent was stopped, a probe was refused, and the squatter stayed held.
    assert!(
        stdout.contains("worker-1") && stdout.contains("its agent is stopped (SIGTERM"),
        "{context}"
    );
    assert!(
        stdout.lines().any(
            |l| l.contains("rubber_stamp_proof_probes_total{result=\"refused\"}")
                && l.contains(&format!("{stolen}:10273"))
                && l.contains("even while worker-1's agent is stopped")
        ),
        "{context}"
    );
    assert!(
        stdout.lines().any(|l| l
            .starts_with("  (squatter: AddressNotOwned even while worker-1's agent is stopped")),
        "the note under the table\n{context}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("RESULT: PASS")
            && l.contains("squatter (AddressNotOwned, even while worker-1's agent is stopped)")
            && l.contains("claimer (OwnershipUnproven)")),
        "{context}"
    );
    // The proof: honest kubelets verified (it needs the kubelets, not the agents), rogues
    // without certificates.
    for node in ["worker-1", "worker-2", "worker-3"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(node)
                && l.contains("verified for")
                && l.contains(": ok")),
            "{node}\n{context}"
        );
    }
    for rogue in ["squatter", "claimer"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(rogue) && l.contains("no certificate")),
            "{rogue}\n{context}"
        );
    }
}

#[test]
fn the_sandbox_binary_on_the_routed_topology_holds_the_claimer_and_the_squatter_by_ownership() {
    if !rubber_stamp_hosts::available_or_skip("the_sandbox_binary_on_the_routed_topology") {
        return;
    }
    let (output, context) = run_routed(&[]);
    assert_routed_run(&output, &context);
    // Token mode (the default): the foreign token is still refused at the stream.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        &row(&table(&stdout), "foreign-token", &context)[3..],
        ["Pending", "AwaitingAttestation"],
        "{context}"
    );
}

#[test]
fn the_sandbox_binary_on_the_routed_topology_with_kubelet_certificates() {
    if !rubber_stamp_hosts::available_or_skip("the_sandbox_binary_routed_with_kubelet_cert") {
        return;
    }
    let (output, context) = run_routed(&["--identity", "kubelet-cert"]);
    assert_routed_run(&output, &context);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !table(&stdout)
            .iter()
            .any(|r| r.get(1).map(String::as_str) == Some("foreign-token")),
        "no foreign-token rogue with kubelet certificates\n{context}"
    );
}

#[test]
fn the_routed_topology_refuses_loopback_mode() {
    let output = Command::new(SANDBOX)
        .args(["--topology", "routed", "--loopback"])
        .output()
        .expect("the sandbox binary runs");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs network namespaces"), "{stderr}");
    // Refused before anything starts.
    assert!(output.stdout.is_empty());
}
