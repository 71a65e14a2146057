//! The `sandbox` binary in loopback mode (forced, so this runs as root too):
//! it says that facts are supplied by the sandbox, every honest node gets a
//! certificate verified for its node IP, no rogue node gets one, and the exit
//! code says so. Needs no root.

use std::process::Command;
use std::time::{Duration, Instant};

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

#[test]
fn the_sandbox_binary_in_loopback_mode_says_so_and_passes() {
    let started = Instant::now();
    let output = Command::new(SANDBOX)
        .args(["--loopback", "--heartbeat", "2s", "--lease-duration", "4s"])
        .output()
        .expect("the sandbox binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(output.status.code(), Some(0), "{context}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    assert!(
        stdout.contains("LOOPBACK MODE: forced (--loopback)"),
        "{context}"
    );
    assert!(
        stdout.contains("the sandbox SUPPLIES each node's facts"),
        "{context}"
    );
    assert!(stdout.contains("RESULT: PASS"), "{context}");

    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("NAME "))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        table
            .first()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "NODE", "SANS", "CONDITION", "REASON"]),
        "{context}"
    );
    let row = |node: &str| -> Vec<&str> {
        table
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(node))
            .unwrap_or_else(|| panic!("no row for {node}\n{context}"))
            .split_whitespace()
            .collect()
    };
    for (i, node) in ["worker-1", "worker-2", "worker-3"].iter().enumerate() {
        let r = row(node);
        assert_eq!(&r[3..], ["Approved,Issued", "AutoApproved"], "{context}");
        // The node IPs the sandbox assigned (documentation ranges), never loopback.
        assert!(r[2].contains(&format!("192.0.2.{}", 10 + i)), "{context}");
        assert!(!r[2].contains("127."), "{context}");
        // The proof verified the kubelet for its node IP while connecting over loopback.
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(node)
                && l.contains(&format!("verified for 192.0.2.{}", 10 + i))
                && l.contains(&format!("CN=system:node:{node}"))
                && l.contains(": ok")),
            "{context}"
        );
    }
    assert_eq!(
        &row("thief")[3..],
        ["Denied", "AddressNotAttested"],
        "{context}"
    );
    assert_eq!(
        &row("squatter")[3..],
        ["Pending", "AddressConflict"],
        "{context}"
    );
    assert_eq!(
        &row("no-agent")[3..],
        ["Pending", "AwaitingAttestation"],
        "{context}"
    );
    assert_eq!(
        &row("dns-thief")[3..],
        ["Denied", "NameNotAllowed"],
        "{context}"
    );
    // Token mode (the default): another workload's token is refused at the stream.
    assert_eq!(
        &row("foreign-token")[3..],
        ["Pending", "AwaitingAttestation"],
        "{context}"
    );
    assert!(stdout.contains("(token_service_account)"), "{context}");
    for rogue in [
        "thief",
        "squatter",
        "no-agent",
        "dns-thief",
        "foreign-token",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(rogue) && l.contains("no certificate")),
            "{context}"
        );
    }
}
