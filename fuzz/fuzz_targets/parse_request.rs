//! Fuzzes `spec.request` parsing with arbitrary bytes, then decides on whatever parses.
//!
//! The first byte picks the framing: odd wraps the rest as the DER inside a
//! `CERTIFICATE REQUEST` PEM block (so the fuzzer reaches the DER and
//! signature code quickly), even feeds the rest as PEM text as is.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rubber_stamp_core::{
    INTERFACES_SOURCE, SourceReport,
    Attestation, AttestationSet, CsrInput, Decision, InterfaceFacts, KUBELET_SERVING_SIGNER,
    Observed, Policy, decide_parsed, names, parse_request,
};

fn world() -> &'static AttestationSet {
    static WORLD: OnceLock<AttestationSet> = OnceLock::new();
    WORLD.get_or_init(|| {
        let received_at = jiff::Timestamp::UNIX_EPOCH;
        ["worker-1", "worker-2"]
            .iter()
            .enumerate()
            .map(|(i, node)| Attestation {
                node_name: (*node).to_owned(),
                hostname: (*node).to_owned(),
                interfaces: vec![InterfaceFacts {
                    name: "eth0".to_owned(),
                    addresses: vec![
                        format!("10.0.0.{}/24", 11 + i).parse().expect("net"),
                        format!("fd00::{}/64", 11 + i).parse().expect("net"),
                    ],
                }],
                peer_address: None,
                received_at,
                machine_id: None,
                boot_id: None,
                agent_version: None,
                sources: vec![SourceReport::complete(INTERFACES_SOURCE)],
                metadata: Vec::new(),
                proof_port: None,
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text: Vec<u8> = if mode & 1 == 1 {
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", rest.to_vec())).into_bytes()
    } else {
        rest.to_vec()
    };
    let policy = Policy::default();
    let parsed = parse_request(&text, &policy);
    if let Ok(req) = &parsed {
        let sans = req.sans();
        assert!(sans.dns.len() + sans.ips.len() <= policy.max_sans);
        for dns in &sans.dns {
            // Every kept name is canonical and valid.
            assert_eq!(names::canonical_hostname(dns).as_deref(), Ok(dns.as_str()));
        }
        for ip in &sans.ips {
            assert_eq!(names::ip_problem(*ip), None);
        }
        if let Some(node) = req.node_name() {
            assert_eq!(names::check_dns1123_subdomain(node), Ok(()));
        }
    }
    let csr = CsrInput {
        signer_name: KUBELET_SERVING_SIGNER.to_owned(),
        usages: vec!["digital signature".to_owned(), "server auth".to_owned()],
        username: "system:node:worker-1".to_owned(),
        groups: vec!["system:nodes".to_owned()],
        created_at: Some(jiff::Timestamp::UNIX_EPOCH),
        ..CsrInput::default()
    };
    let verdict = decide_parsed(
        &csr,
        parsed.as_ref(),
        Observed::attestations(world()),
        &policy,
        jiff::Timestamp::UNIX_EPOCH,
    );
    if parsed.is_err() {
        assert_eq!(verdict.decision(), Decision::Deny);
    }
    let _ = verdict.summary();
});
