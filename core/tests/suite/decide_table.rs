//! Table tests of `decide`: every check of docs/design.md fails alone in at least one
//! case (so removing any check from `decide` fails a test), passes in the
//! baseline, and every look-alike is refused or canonicalised.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
use rubber_stamp_core::policy::{DnsSuffix, HumanDuration, InterfacePattern};
use rubber_stamp_core::{
    AccessReview, AttestationSet, CheckName, CheckStatus, CsrInput, Decision, DenyMode,
    INTERFACES_SOURCE, Listing, NodeSet, Observed, Outcome, ParsedRequest, Policy, Reason,
    ServiceAddressMode, ServiceField, SourceReport, Verdict, decide, decide_parsed, parse_request,
};

use super::support::{CsrSpec, World, at, csr_input, dns_san, ip, pem_of, service};

use CheckName as C;

/// The CSR a healthy worker-1 sends.
fn good() -> CsrSpec {
    CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "fd00::11"])
}

/// Decides and checks the decision and exactly which checks failed, with which reasons.
#[track_caller]
fn expect(verdict: &Verdict, decision: Decision, failed: &[(CheckName, Reason)]) {
    let got: Vec<(CheckName, Reason)> = verdict
        .failed()
        .map(|c| (c.name(), c.reason().expect("failed checks have a reason")))
        .collect();
    assert_eq!(
        (verdict.decision(), got.as_slice()),
        (decision, failed),
        "verdict:\n{}",
        render(verdict)
    );
    // Every decided check is reported, in order.
    let names: Vec<CheckName> = verdict.checks().iter().map(|c| c.name()).collect();
    assert_eq!(names, CheckName::DECIDED, "checks out of order");
    for c in verdict.checks() {
        assert!(!c.detail().is_empty(), "{} has no detail", c.name());
    }
}

fn render(v: &Verdict) -> String {
    v.checks()
        .iter()
        .map(|c| {
            format!(
                "  {} {:?} {:?} {}",
                c.name(),
                c.status(),
                c.reason(),
                c.detail()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one case: the CSR from `spec` (edited by `edit_csr`) in the
/// two-worker world (edited by `edit_world`).
#[track_caller]
fn case(
    spec: &CsrSpec,
    edit_csr: impl FnOnce(&mut CsrInput),
    edit_world: impl FnOnce(&mut World),
    decision: Decision,
    failed: &[(CheckName, Reason)],
) -> Verdict {
    let mut csr = csr_input("worker-1", &spec.pem());
    edit_csr(&mut csr);
    let mut world = World::two_workers();
    edit_world(&mut world);
    let verdict = world.decide(&csr);
    expect(&verdict, decision, failed);
    verdict
}

fn same(_: &mut CsrInput) {}
fn as_is(_: &mut World) {}

fn detail(v: &Verdict, name: CheckName) -> String {
    v.check(name).expect("check reported").detail().to_owned()
}

// === baseline ===

#[test]
fn kubelet_shaped_ecdsa_request_without_key_encipherment_is_approved() {
    let v = case(&good(), same, as_is, Decision::Approve, &[]);
    assert!(v.checks().iter().all(|c| c.status() == CheckStatus::Passed));
    let s = v
        .supporting_attestation()
        .expect("approval names its attestation");
    assert_eq!((s.node.as_str(), s.received_at), ("worker-1", at(30)));
    assert_eq!(s.peer_address, Some(ip("10.0.0.11")));
    assert_eq!(v.node(), Some("worker-1"));
    assert_eq!(v.reason(), None);
    assert!(v.summary().contains("all checks passed"), "{}", v.summary());
    assert!(detail(&v, C::Parse).contains("ECDSA P-256"));
}

#[test]
fn key_encipherment_usage_is_also_approved() {
    case(
        &good(),
        |c| c.usages.insert(1, "key encipherment".to_owned()),
        as_is,
        Decision::Approve,
        &[],
    );
}

#[test]
fn decide_and_decide_parsed_agree_and_one_parse_serves_many_decisions() {
    let spec = good();
    let csr = csr_input("worker-1", &spec.pem());
    let world = World::two_workers();
    let parsed = parse_request(&csr.request, &world.policy);
    let set: AttestationSet = world.attestations.iter().cloned().collect();
    let nodes: NodeSet = world
        .nodes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    // The controller keeps the parsed form and drops the PEM.
    let lean = CsrInput {
        request: Vec::new(),
        ..csr.clone()
    };
    let services = world.services.clone().expect("Services given");
    let observed = Observed {
        attestations: &set,
        nodes: Some(&nodes),
        services: Some(&services),
        access_review: None,
        ownership: None,
    };
    let a = decide(&csr, observed, &world.policy, world.now);
    let b = decide_parsed(&lean, parsed.as_ref(), observed, &world.policy, world.now);
    assert_eq!(a, b);
    assert_eq!(a.decision(), Decision::Approve);
    // With no attestations yet, the same parsed request is pending.
    let empty = AttestationSet::new();
    let c = decide_parsed(
        &lean,
        parsed.as_ref(),
        Observed {
            attestations: &empty,
            ..observed
        },
        &world.policy,
        world.now,
    );
    assert_eq!(c.decision(), Decision::Pending);
    assert_eq!(c.reason(), Some(Reason::AwaitingAttestation));

    fn is_send_sync<T: Send + Sync + 'static>(_: &T) {}
    let parsed = parsed.expect("parses");
    is_send_sync(&parsed);
    // Small: SANs and a name, never the DER.
    assert!(size_of::<ParsedRequest>() < 512);
    assert_eq!(parsed.sans().dns, ["worker-1"]);
    assert_eq!(parsed.sans().ips, [ip("10.0.0.11"), ip("fd00::11")]);
}

// === 1 scope ===

#[test]
fn scope_other_signers_and_final_csrs_are_ignored_without_parsing() {
    for signer in [
        "kubernetes.io/kube-apiserver-client-kubelet",
        "example.com/x",
        "",
    ] {
        let v = case(
            &good(),
            |c| c.signer_name = signer.to_owned(),
            as_is,
            Decision::Ignore,
            &[(C::Scope, Reason::OutOfScope)],
        );
        assert!(
            v.checks()[1..]
                .iter()
                .all(|c| c.status() == CheckStatus::Skipped)
        );
    }
    for condition in ["Approved", "Denied", "Failed"] {
        let v = case(
            &good(),
            |c| c.conditions = vec![condition.to_owned()],
            as_is,
            Decision::Ignore,
            &[(C::Scope, Reason::OutOfScope)],
        );
        assert!(detail(&v, C::Scope).contains(condition));
    }
    // Garbage in an out-of-scope CSR is not even parsed.
    let mut csr = csr_input("worker-1", "garbage");
    csr.signer_name = "other".to_owned();
    expect(
        &World::two_workers().decide(&csr),
        Decision::Ignore,
        &[(C::Scope, Reason::OutOfScope)],
    );
}

// === 2 parse ===

fn parse_fails(request: &[u8], needle: &str) {
    let mut csr = csr_input("worker-1", "");
    csr.request = request.to_vec();
    let v = World::two_workers().decide(&csr);
    expect(&v, Decision::Deny, &[(C::Parse, Reason::MalformedRequest)]);
    assert!(
        v.checks()[2..]
            .iter()
            .all(|c| c.status() == CheckStatus::Skipped),
        "checks after an unusable request are skipped"
    );
    let d = detail(&v, C::Parse);
    assert!(d.contains(needle), "{d:?} lacks {needle:?}");
}

#[test]
fn parse_garbage_and_wrong_framing_are_denied() {
    parse_fails(b"", "empty");
    parse_fails(b"hello, world", "exactly one PEM block, found 0");
    parse_fails(&[0xff, 0x00, 0x80, 0x7f], "exactly one PEM block, found 0");
    let good_pem = good().pem();
    let two = format!("{good_pem}{good_pem}");
    parse_fails(two.as_bytes(), "found 2");
    let cert_label = good_pem.replace("CERTIFICATE REQUEST", "CERTIFICATE");
    parse_fails(cert_label.as_bytes(), "not CERTIFICATE REQUEST");
    let old_label = good_pem.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
    parse_fails(old_label.as_bytes(), "not CERTIFICATE REQUEST");
    let no_end: String = good_pem.lines().take(3).collect::<Vec<_>>().join("\n");
    parse_fails(no_end.as_bytes(), "END");
    let bad_b64 = good_pem.replacen("MII", "M*I", 1);
    parse_fails(bad_b64.as_bytes(), "base64");
    parse_fails(
        pem_of(b"not DER at all").as_bytes(),
        "not valid PKCS#10 DER",
    );
}

#[test]
fn parse_truncated_and_padded_der_are_denied() {
    let der = good().der();
    parse_fails(pem_of(&der[..der.len() - 10]).as_bytes(), "PKCS#10");
    let mut padded = der.clone();
    padded.extend_from_slice(&[0, 0]);
    parse_fails(pem_of(&padded).as_bytes(), "stray bytes");
}

#[test]
fn parse_tampered_signature_is_denied() {
    // Flip one bit of the signature (the last byte of the DER)…
    let mut der = good().der();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    parse_fails(pem_of(&der).as_bytes(), "does not verify");
    // …or one byte of the signed content: the node name in the CN.
    let der = good().der();
    let at = der
        .windows(b"worker-1".len())
        .position(|w| w == b"worker-1")
        .expect("CN in DER");
    let mut forged = der.clone();
    forged[at + 7] = b'2';
    parse_fails(pem_of(&forged).as_bytes(), "does not verify");
}

#[test]
fn parse_refuses_duplicate_and_excessive_extensions() {
    let dummy = |i: u64| {
        rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, i], vec![5, 0])
    };
    let many = CsrSpec {
        custom: (0..70).map(dummy).collect(),
        ..good()
    };
    parse_fails(many.pem().as_bytes(), "more than 64");
    let twice = CsrSpec {
        custom: vec![dummy(1), dummy(1)],
        ..good()
    };
    parse_fails(twice.pem().as_bytes(), "more than once");
    // Unknown extensions a signer ignores are no reason to refuse.
    let one = CsrSpec {
        custom: vec![dummy(1)],
        ..good()
    };
    case(&one, same, as_is, Decision::Approve, &[]);
}

#[test]
fn parse_size_limit_applies_to_the_pem_text() {
    let policy = Policy {
        max_request_bytes: 256,
        ..Policy::default()
    };
    let pem_text = good().pem();
    assert!(pem_text.len() > 256);
    match parse_request(pem_text.as_bytes(), &policy) {
        Err(e) => assert!(e.to_string().contains("more than the limit of 256"), "{e}"),
        Ok(_) => panic!("a request over the limit must be refused"),
    }
}

// === 3 subject ===

#[test]
fn subject_must_be_exactly_the_node_cn_and_nodes_group() {
    let deny = [(C::Subject, Reason::SubjectInvalid)];
    let cases: Vec<(&str, CsrSpec)> = vec![
        (
            "no prefix",
            CsrSpec {
                cn: Some("worker-1".into()),
                ..good()
            },
        ),
        ("no CN", CsrSpec { cn: None, ..good() }),
        (
            "no O",
            CsrSpec {
                org: None,
                ..good()
            },
        ),
        (
            "wrong O",
            CsrSpec {
                org: Some("system:masters".into()),
                ..good()
            },
        ),
        (
            "extra OU",
            CsrSpec {
                ou: Some("ops".into()),
                ..good()
            },
        ),
        (
            "empty node name",
            CsrSpec {
                cn: Some("system:node:".into()),
                ..good()
            },
        ),
        (
            "upper-case node name",
            CsrSpec {
                cn: Some("system:node:Worker-1".into()),
                ..good()
            },
        ),
        (
            "NUL in node name",
            CsrSpec {
                cn: Some("system:node:worker-1\0".into()),
                ..good()
            },
        ),
        (
            "wildcard node name",
            CsrSpec {
                cn: Some("system:node:*".into()),
                ..good()
            },
        ),
    ];
    for (what, spec) in cases {
        let mut csr = csr_input("worker-1", &spec.pem());
        // The requestor matches the CN where there is one, so only 3 fails.
        if let Some(name) = spec
            .cn
            .as_deref()
            .and_then(|cn| cn.strip_prefix("system:node:"))
        {
            csr.username = format!("system:node:{name}");
        }
        let v = World::two_workers().decide(&csr);
        if spec.org.as_deref() != Some("system:nodes") || spec.ou.is_some() {
            // A valid CN with a bad O still names the node: every other check runs.
            expect(&v, Decision::Deny, &deny);
        } else {
            assert_eq!(v.decision(), Decision::Deny, "{what}: {}", render(&v));
            let failed: Vec<CheckName> = v.failed().map(|c| c.name()).collect();
            assert_eq!(failed, [C::Subject], "{what}: {}", render(&v));
            // Without a valid node name, the node checks cannot run.
            assert_eq!(
                v.check(C::AttestationFresh).map(|c| c.status()),
                Some(CheckStatus::Skipped),
                "{what}"
            );
        }
        assert!(!detail(&v, C::Subject).contains('\0'), "details escape NUL");
    }
}

// === 4 requestor ===

#[test]
fn requestor_must_be_the_node_in_the_nodes_group() {
    let deny = [(C::Requestor, Reason::RequestorMismatch)];
    let v = case(
        &good(),
        |c| c.username = "system:node:worker-2".to_owned(),
        as_is,
        Decision::Deny,
        &deny,
    );
    assert!(detail(&v, C::Requestor).contains("system:node:worker-2"));
    case(
        &good(),
        |c| c.username = "kubernetes-admin".to_owned(),
        as_is,
        Decision::Deny,
        &deny,
    );
    case(
        &good(),
        |c| c.groups = vec!["system:authenticated".to_owned()],
        as_is,
        Decision::Deny,
        &deny,
    );
}

// === 5 usages ===

#[test]
fn usages_must_be_a_serving_certificates() {
    let deny = [(C::Usages, Reason::UsagesInvalid)];
    let usage_sets: [&[&str]; 5] = [
        &["digital signature", "server auth", "client auth"],
        &["digital signature", "client auth"],
        &["server auth"],
        &[],
        &[
            "digital signature",
            "key encipherment",
            "server auth",
            "cert sign",
        ],
    ];
    for usages in usage_sets {
        case(
            &good(),
            |c| c.usages = usages.iter().map(|u| (*u).to_owned()).collect(),
            as_is,
            Decision::Deny,
            &deny,
        );
    }
    let v = case(
        &CsrSpec { ca: true, ..good() },
        same,
        as_is,
        Decision::Deny,
        &deny,
    );
    assert!(detail(&v, C::Usages).contains("CA certificate"));
    case(
        &CsrSpec {
            ekus: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            ..good()
        },
        same,
        as_is,
        Decision::Deny,
        &deny,
    );
    case(
        &CsrSpec {
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            ..good()
        },
        same,
        as_is,
        Decision::Deny,
        &deny,
    );
    // Requested extensions a kubelet-serving certificate would have anyway are fine.
    case(
        &CsrSpec {
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ..good()
        },
        same,
        as_is,
        Decision::Approve,
        &[],
    );
}

// === 6 SAN shape and look-alikes ===

fn with_sans(sans: Vec<SanType>) -> CsrSpec {
    CsrSpec { sans, ..good() }
}

#[test]
fn san_shape_refuses_other_kinds_and_look_alikes() {
    let deny = [(C::SanShape, Reason::SanInvalid)];
    let base = || good().sans;
    let mut hostile: Vec<(&str, SanType)> = vec![
        (
            "email",
            SanType::Rfc822Name("root@worker-1".try_into().expect("ascii")),
        ),
        (
            "URI",
            SanType::URI("https://worker-1".try_into().expect("ascii")),
        ),
        ("wildcard", dns_san("*.worker-1")),
        ("NUL", dns_san("worker-1\0.evil")),
        ("IP as DNS", dns_san("10.0.0.11")),
        ("underscore", dns_san("worker_1")),
        ("IPv4-mapped", SanType::IpAddress(ip("::ffff:10.0.0.11"))),
        ("IPv4-compatible", SanType::IpAddress(ip("::10.0.0.11"))),
        ("loopback", SanType::IpAddress(ip("127.0.0.1"))),
        ("loopback6", SanType::IpAddress(ip("::1"))),
        ("link-local", SanType::IpAddress(ip("169.254.169.254"))),
        ("link-local6", SanType::IpAddress(ip("fe80::1"))),
        ("multicast", SanType::IpAddress(ip("224.0.0.251"))),
        ("unspecified", SanType::IpAddress(ip("0.0.0.0"))),
        ("broadcast", SanType::IpAddress(ip("255.255.255.255"))),
    ];
    hostile.push((
        "otherName",
        SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            rcgen::OtherNameValue::Utf8String("worker-1@example".into()),
        )),
    ));
    for (what, san) in hostile {
        let mut sans = base();
        sans.push(san);
        let v = case(&with_sans(sans), same, as_is, Decision::Deny, &deny);
        let d = detail(&v, C::SanShape);
        assert!(!d.contains('\0'), "{what}: NUL must be escaped in {d:?}");
        // The acceptable SANs are still checked (and pass): one verdict explains everything.
        assert_eq!(
            v.check(C::IpSansAttested).map(|c| c.status()),
            Some(CheckStatus::Passed)
        );
    }
    let v = case(&with_sans(Vec::new()), same, as_is, Decision::Deny, &deny);
    assert!(detail(&v, C::SanShape).contains("no DNS or IP SAN"));
}

#[test]
fn upper_case_and_trailing_dot_names_are_canonicalised_before_comparing() {
    // worker-1's own name in another spelling is worker-1's name.
    let own = with_sans(vec![
        dns_san("WORKER-1."),
        SanType::IpAddress(ip("10.0.0.11")),
    ]);
    let v = case(&own, same, as_is, Decision::Approve, &[]);
    assert!(detail(&v, C::SanShape).contains("DNS worker-1"));
    // worker-2's name in another spelling is still worker-2's.
    let other = with_sans(vec![
        dns_san("Worker-2."),
        SanType::IpAddress(ip("10.0.0.11")),
    ]);
    let v = case(
        &other,
        same,
        as_is,
        Decision::Deny,
        &[
            (C::DnsSansAttested, Reason::NameNotAttested),
            (C::UniqueAmongAttestations, Reason::AddressConflict),
            (C::UniqueAmongNodes, Reason::AddressConflict),
        ],
    );
    assert!(detail(&v, C::DnsSansAttested).contains("worker-2"));
}

#[test]
fn too_many_sans_are_denied() {
    let mut policy_world = World::two_workers();
    policy_world.policy.max_sans = 3;
    let spec = CsrSpec::kubelet(
        "worker-1",
        &["worker-1"],
        &["10.0.0.11", "fd00::11", "10.0.0.11"],
    );
    let v = policy_world.decide(&csr_input("worker-1", &spec.pem()));
    expect(&v, Decision::Deny, &[(C::SanShape, Reason::SanInvalid)]);
    assert!(detail(&v, C::SanShape).contains("4 SANs, more than the limit of 3"));
}

#[test]
fn ten_thousand_sans_are_denied_quickly_and_kept_small() {
    let ips: Vec<SanType> = (0..10_000u32)
        .map(|i| SanType::IpAddress(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 0x100 + i))))
        .collect();
    let pem_text = with_sans(ips).pem();
    // 10,000 IP SANs are ~80 KiB of PEM: over the default size limit.
    let mut world = World::two_workers();
    let csr = csr_input("worker-1", &pem_text);
    expect(
        &world.decide(&csr),
        Decision::Deny,
        &[(C::Parse, Reason::MalformedRequest)],
    );
    // With the size limit raised, the SAN limit denies it, and the parsed form
    // keeps at most the limit. A generous ceiling guards against quadratic
    // work (the real cost is milliseconds; see the criterion bench).
    world.policy.max_request_bytes = 1024 * 1024;
    let started = std::time::Instant::now();
    let parsed = parse_request(&csr.request, &world.policy).expect("parses");
    let v = world.decide(&csr);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(parsed.sans().total, 10_000);
    assert_eq!(parsed.sans().ips.len(), world.policy.max_sans);
    assert_eq!(v.decision(), Decision::Deny);
    assert!(detail(&v, C::SanShape).contains("10000 SANs, more than the limit of 100"));
}

// === 7 attestation present and fresh ===

#[test]
fn missing_and_stale_attestations_leave_the_csr_pending() {
    let v = case(
        &good(),
        same,
        |w| w.attestations.retain(|a| a.node_name != "worker-1"),
        Decision::Pending,
        &[(C::AttestationFresh, Reason::AwaitingAttestation)],
    );
    for name in [C::DnsSansAttested, C::IpSansAttested, C::PeerBinding] {
        assert_eq!(
            v.check(name).map(|c| c.status()),
            Some(CheckStatus::Skipped),
            "{name}"
        );
    }
    assert!(v.supporting_attestation().is_none());
    // Stale: received 10 minutes before the decision (limit 5 minutes).
    let v = case(
        &good(),
        same,
        |w| w.now = at(30 + 600),
        Decision::Pending,
        &[(C::AttestationFresh, Reason::AttestationStale)],
    );
    assert!(detail(&v, C::AttestationFresh).contains("10m"));
    assert!(v.supporting_attestation().is_none());
    // Exactly at the limit still counts.
    case(
        &good(),
        same,
        |w| w.now = at(30 + 300),
        Decision::Approve,
        &[],
    );
}

#[test]
fn stale_facts_never_deny_a_missing_san() {
    let spec = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.0.0.99"]);
    case(
        &spec,
        same,
        |w| w.now = at(30 + 600),
        Decision::Pending,
        &[
            (C::AttestationFresh, Reason::AttestationStale),
            (C::IpSansAttested, Reason::UnattestedAddress),
        ],
    );
}

// === 8 DNS SANs attested ===

#[test]
fn dns_sans_must_be_the_node_name_or_attested_hostname() {
    let v = case(
        &CsrSpec::kubelet("worker-1", &["worker-1", "db.example.com"], &["10.0.0.11"]),
        same,
        as_is,
        Decision::Deny,
        &[(C::DnsSansAttested, Reason::NameNotAttested)],
    );
    assert!(detail(&v, C::DnsSansAttested).contains("db.example.com"));
    // The attested hostname counts under an allowed suffix...
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1", "worker-1.lan"], &["10.0.0.11"]),
        same,
        |w| {
            w.attestation_mut("worker-1").hostname = "Worker-1.lan".to_owned();
            w.policy.allowed_dns_suffixes = vec![DnsSuffix::new("lan").expect("suffix")];
        },
        Decision::Approve,
        &[],
    );
    // ...but a node's first label followed by a domain the operator did not allow
    // names an outside domain (issue 12, finding 14).
    let v = case(
        &CsrSpec::kubelet(
            "worker-1",
            &["worker-1", "worker-1.evil.example"],
            &["10.0.0.11"],
        ),
        same,
        |w| w.attestation_mut("worker-1").hostname = "worker-1.evil.example".to_owned(),
        Decision::Deny,
        &[(C::DnsSansAttested, Reason::NameNotAttested)],
    );
    assert!(detail(&v, C::DnsSansAttested).contains("does not count"));
    // A hostname unrelated to the node name is the agent's word alone: it
    // supports no DNS SAN (another node's short name, a name of any domain)...
    let v = case(
        &CsrSpec::kubelet("worker-1", &["worker-1", "w1.lan"], &["10.0.0.11"]),
        same,
        |w| w.attestation_mut("worker-1").hostname = "W1.lan".to_owned(),
        Decision::Deny,
        &[(C::DnsSansAttested, Reason::NameNotAttested)],
    );
    assert!(detail(&v, C::DnsSansAttested).contains("does not count"));
    // ...unless the policy says hostnames are trusted as reported.
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1", "w1.lan"], &["10.0.0.11"]),
        same,
        |w| {
            w.attestation_mut("worker-1").hostname = "W1.lan".to_owned();
            w.policy.hostname_must_match_node_name = false;
        },
        Decision::Approve,
        &[],
    );
}

#[test]
fn cluster_service_names_are_denied_whatever_the_node_attests() {
    let deny = [(C::DnsSansAttested, Reason::NameNotAllowed)];
    for name in [
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10-0-0-11.default.pod.cluster.local",
        "svc",
    ] {
        // Even a hostname set to the very name, trusted as reported, does not help.
        let v = case(
            &CsrSpec::kubelet("worker-1", &["worker-1", name], &["10.0.0.11"]),
            same,
            |w| {
                w.attestation_mut("worker-1").hostname = name.to_owned();
                w.policy.hostname_must_match_node_name = false;
            },
            Decision::Deny,
            &deny,
        );
        let d = detail(&v, C::DnsSansAttested);
        assert!(
            d.contains("denied domain") || d.contains("the cluster's API server"),
            "{name}: {d}"
        );
        // Definite: denied without any attestation at all.
        case(
            &CsrSpec::kubelet("worker-1", &["worker-1", name], &["10.0.0.11"]),
            same,
            |w| w.attestations.clear(),
            Decision::Deny,
            &[
                (C::AttestationFresh, Reason::AwaitingAttestation),
                (C::DnsSansAttested, Reason::NameNotAllowed),
            ],
        );
    }
    // The suffix matches whole labels only, and the list is the policy's.
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11"]),
        same,
        |w| {
            w.policy.denied_dns_suffixes = vec![DnsSuffix::new("internal").expect("suffix")];
        },
        Decision::Approve,
        &[],
    );
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1.internal"], &["10.0.0.11"]),
        same,
        |w| {
            w.attestation_mut("worker-1").hostname = "worker-1.internal".to_owned();
            w.policy.denied_dns_suffixes = vec![DnsSuffix::new("internal").expect("suffix")];
        },
        Decision::Deny,
        &deny,
    );
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1.mysvc"], &["10.0.0.11"]),
        same,
        |w| w.policy.allowed_dns_suffixes = vec![DnsSuffix::new("mysvc").expect("suffix")],
        Decision::Approve,
        &[],
    );
}

#[test]
fn allowed_dns_suffixes_extend_the_node_name_and_hostname_only() {
    let suffix = |w: &mut World| {
        w.policy.allowed_dns_suffixes = vec![DnsSuffix::new("nodes.example.com").expect("suffix")];
    };
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1.nodes.example.com"], &["10.0.0.11"]),
        same,
        suffix,
        Decision::Approve,
        &[],
    );
    case(
        &CsrSpec::kubelet(
            "worker-1",
            &["evil.worker-1.nodes.example.com"],
            &["10.0.0.11"],
        ),
        same,
        suffix,
        Decision::Deny,
        &[(C::DnsSansAttested, Reason::NameNotAttested)],
    );
    // Without the suffix in the policy, the same name is denied.
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1.nodes.example.com"], &["10.0.0.11"]),
        same,
        as_is,
        Decision::Deny,
        &[(C::DnsSansAttested, Reason::NameNotAttested)],
    );
}

// === 9 IP SANs attested ===

#[test]
fn unattested_ip_is_denied_against_facts_newer_than_the_csr() {
    let spec = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.0.0.99"]);
    let v = case(
        &spec,
        same,
        as_is,
        Decision::Deny,
        &[(C::IpSansAttested, Reason::AddressNotAttested)],
    );
    assert!(detail(&v, C::IpSansAttested).contains("10.0.0.99 is not on any interface"));
    assert!(!v.pending_only_on_predating_facts());
}

#[test]
fn unattested_ip_is_pending_against_facts_older_than_the_csr() {
    let spec = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.0.0.99"]);
    let pending = [(C::IpSansAttested, Reason::UnattestedAddress)];
    // Received before the CSR was created.
    let v = case(
        &spec,
        same,
        |w| w.attestation_mut("worker-1").received_at = at(-30),
        Decision::Pending,
        &pending,
    );
    assert!(
        v.pending_only_on_predating_facts(),
        "the controller should challenge the agent"
    );
    assert!(detail(&v, C::IpSansAttested).contains("not clearly newer than the CSR"));
    assert_eq!(v.reason(), Some(Reason::UnattestedAddress));
    // Received within the creation timestamp's second: may still predate it.
    case(
        &spec,
        same,
        |w| w.attestation_mut("worker-1").received_at = at(0),
        Decision::Pending,
        &pending,
    );
    // Creation time unknown.
    case(
        &spec,
        |c| c.created_at = None,
        as_is,
        Decision::Pending,
        &pending,
    );
    // The same for a DNS name.
    let v = case(
        &CsrSpec::kubelet("worker-1", &["worker-1", "db.example.com"], &["10.0.0.11"]),
        same,
        |w| w.attestation_mut("worker-1").received_at = at(-30),
        Decision::Pending,
        &[(C::DnsSansAttested, Reason::UnattestedAddress)],
    );
    assert!(v.pending_only_on_predating_facts());
}

#[test]
fn ips_on_excluded_interfaces_are_not_the_nodes() {
    for (addr, iface) in [
        ("10.96.0.10", "kube-ipvs0"),
        ("10.244.1.1", "cni0"),
        ("10.244.1.7", "cali12345"),
    ] {
        let spec = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", addr]);
        let v = case(
            &spec,
            same,
            |w| w.attestations.retain(|a| a.node_name == "worker-1"),
            Decision::Deny,
            &[(C::IpSansAttested, Reason::AddressNotAttested)],
        );
        let d = detail(&v, C::IpSansAttested);
        assert!(d.contains(iface) && d.contains("excluded"), "{d}");
    }
    // The same address on a counted interface is fine.
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.244.1.1"]),
        same,
        |w| {
            w.attestations.retain(|a| a.node_name == "worker-1");
            w.policy.excluded_interfaces = vec![InterfacePattern::new("lo").expect("pattern")];
        },
        Decision::Approve,
        &[],
    );
}

#[test]
fn cidr_policy_denies_service_and_foreign_addresses_even_without_facts() {
    let deny = [(C::IpSansAttested, Reason::AddressNotAllowed)];
    let v = case(
        &good(),
        same,
        |w| w.policy.denied_cidrs = vec!["10.0.0.0/24".parse().expect("net")],
        Decision::Deny,
        &deny,
    );
    assert!(detail(&v, C::IpSansAttested).contains("denied network 10.0.0.0/24"));
    case(
        &good(),
        same,
        |w| w.policy.allowed_cidrs = vec!["10.0.0.0/8".parse().expect("net")],
        Decision::Deny,
        &deny,
    );
    case(
        &good(),
        same,
        |w| {
            w.policy.allowed_cidrs = vec![
                "10.0.0.0/8".parse().expect("net"),
                "fd00::/8".parse().expect("net"),
            ]
        },
        Decision::Approve,
        &[],
    );
    // Without any attestation the CIDR policy still denies.
    case(
        &good(),
        same,
        |w| {
            w.attestations.clear();
            w.policy.denied_cidrs = vec!["fd00::/64".parse().expect("net")];
        },
        Decision::Deny,
        &[
            (C::AttestationFresh, Reason::AwaitingAttestation),
            (C::IpSansAttested, Reason::AddressNotAllowed),
        ],
    );
}

#[test]
fn another_nodes_ip_and_name_are_refused() {
    let v = case(
        &CsrSpec::kubelet(
            "worker-1",
            &["worker-1", "worker-2"],
            &["10.0.0.11", "10.0.0.12"],
        ),
        same,
        as_is,
        Decision::Deny,
        &[
            (C::DnsSansAttested, Reason::NameNotAttested),
            (C::IpSansAttested, Reason::AddressNotAttested),
            (C::UniqueAmongAttestations, Reason::AddressConflict),
            (C::UniqueAmongNodes, Reason::AddressConflict),
        ],
    );
    let d = detail(&v, C::UniqueAmongAttestations);
    assert!(
        d.contains("10.0.0.12 is also attested by worker-2 (eth0)"),
        "{d}"
    );
    assert!(
        d.contains("worker-2 is the node name or hostname of worker-2"),
        "{d}"
    );
    assert_eq!(v.reason(), Some(Reason::NameNotAttested));
}

// === 10 peer binding ===

#[test]
fn peer_binding_needs_the_agent_to_connect_from_the_nodes_address() {
    let pending = [(C::PeerBinding, Reason::PeerMismatch)];
    let v = case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").peer_address = Some(ip("192.0.2.7")),
        Decision::Pending,
        &pending,
    );
    assert!(detail(&v, C::PeerBinding).contains("192.0.2.7"));
    case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").peer_address = None,
        Decision::Pending,
        &pending,
    );
    // Connected from an allowed-CIDR-outside address that is the node's own.
    case(
        &CsrSpec::kubelet("worker-1", &["worker-1"], &["fd00::11"]),
        same,
        |w| w.policy.allowed_cidrs = vec!["fd00::/8".parse().expect("net")],
        Decision::Pending,
        &pending,
    );
    // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6.
    case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").peer_address = Some(ip("::ffff:10.0.0.11")),
        Decision::Approve,
        &[],
    );
    // Credentials used from another cluster machine: the source address is
    // reported by the thief too, but another node attests it (any interface)
    // or lists it in its Node object.
    let v = case(
        &good(),
        same,
        |w| {
            let a = w.attestation_mut("worker-1");
            a.peer_address = Some(ip("10.0.0.12"));
            a.interfaces[0]
                .addresses
                .push("10.0.0.12/32".parse().expect("net"));
        },
        Decision::Pending,
        &pending,
    );
    assert!(detail(&v, C::PeerBinding).contains("attested by worker-2"));
    case(
        &good(),
        same,
        |w| {
            let a = w.attestation_mut("worker-1");
            a.peer_address = Some(ip("10.0.0.99"));
            a.interfaces[0]
                .addresses
                .push("10.0.0.99/32".parse().expect("net"));
            w.node_mut("worker-2")
                .addresses
                .push(rubber_stamp_core::NodeAddress {
                    kind: "InternalIP".to_owned(),
                    address: "10.0.0.99".to_owned(),
                });
        },
        Decision::Pending,
        &pending,
    );
    // Loopback (an agent in the approver's own network namespace) is on every
    // node: it is not compared with other nodes.
    case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").peer_address = Some(ip("127.0.0.1")),
        Decision::Approve,
        &[],
    );
    // Switched off (NAT): skipped, not passed.
    let v = case(
        &good(),
        same,
        |w| {
            w.attestation_mut("worker-1").peer_address = Some(ip("192.0.2.7"));
            w.policy.peer_binding = false;
        },
        Decision::Approve,
        &[],
    );
    assert_eq!(
        v.check(C::PeerBinding).map(|c| c.status()),
        Some(CheckStatus::Skipped)
    );
}

// === 11 uniqueness ===

#[test]
fn an_address_another_node_also_attests_is_a_conflict() {
    let pending = [(C::UniqueAmongAttestations, Reason::AddressConflict)];
    // Root on worker-2 adds worker-1's IP to a real interface.
    let v = case(
        &good(),
        same,
        |w| {
            w.attestation_mut("worker-2").interfaces[1]
                .addresses
                .push("10.0.0.11/32".parse().expect("net"))
        },
        Decision::Pending,
        &pending,
    );
    assert_eq!(v.reason(), Some(Reason::AddressConflict));
    // IPv4-mapped spelling in the other attestation is the same address.
    case(
        &good(),
        same,
        |w| {
            w.attestation_mut("worker-2").interfaces[1]
                .addresses
                .push("::ffff:10.0.0.11/128".parse().expect("net"))
        },
        Decision::Pending,
        &pending,
    );
    // Another node claiming worker-1 as its hostname.
    case(
        &good(),
        same,
        |w| w.attestation_mut("worker-2").hostname = "Worker-1".to_owned(),
        Decision::Pending,
        &pending,
    );
    // On another node's excluded interface it is still that node's (a Service
    // IP on kube-ipvs0 is on every node; root on worker-1 putting it on a
    // dummy interface must not get it into a certificate).
    let v = case(
        &good(),
        same,
        |w| {
            w.attestation_mut("worker-2").interfaces[2]
                .addresses
                .push("10.0.0.11/32".parse().expect("net"))
        },
        Decision::Pending,
        &pending,
    );
    assert!(detail(&v, C::UniqueAmongAttestations).contains("an excluded interface"));
    // In a stale attestation it is no conflict.
    case(
        &good(),
        same,
        |w| {
            let other = w.attestation_mut("worker-2");
            other.interfaces[1]
                .addresses
                .push("10.0.0.11/32".parse().expect("net"));
            other.received_at = at(-600);
        },
        Decision::Approve,
        &[],
    );
}

#[test]
fn an_address_another_node_object_lists_is_a_conflict() {
    let v = case(
        &good(),
        same,
        |w| {
            w.node_mut("worker-2")
                .addresses
                .push(rubber_stamp_core::NodeAddress {
                    kind: "ExternalIP".to_owned(),
                    address: "fd00:0::11".to_owned(),
                })
        },
        Decision::Pending,
        &[(C::UniqueAmongNodes, Reason::AddressConflict)],
    );
    assert!(detail(&v, C::UniqueAmongNodes).contains("Node worker-2"));
}

#[test]
fn without_nodes_the_node_checks_are_skipped_not_passed() {
    let v = case(&good(), same, |w| w.nodes = None, Decision::Approve, &[]);
    for name in [C::UniqueAmongNodes, C::NodeObject] {
        let c = v.check(name).expect("reported");
        assert_eq!(c.status(), CheckStatus::Skipped, "{name}");
        assert_eq!(c.passed_flag(), None);
    }
    assert!(v.summary().contains("2 skipped"), "{}", v.summary());
}

// === 12 node object ===

#[test]
fn the_node_must_exist_and_match_the_attested_ids() {
    case(
        &good(),
        same,
        |w| {
            if let Some(ns) = w.nodes.as_mut() {
                ns.retain(|n| n.name != "worker-1")
            }
        },
        Decision::Pending,
        &[(C::NodeObject, Reason::NodeMissing)],
    );
    let v = case(
        &good(),
        same,
        |w| w.node_mut("worker-1").machine_id = Some("another-machine".to_owned()),
        Decision::Pending,
        &[(C::NodeObject, Reason::NodeMismatch)],
    );
    assert!(detail(&v, C::NodeObject).contains("machineID"));
    case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").boot_id = Some("rebooted-elsewhere".to_owned()),
        Decision::Pending,
        &[(C::NodeObject, Reason::NodeMismatch)],
    );
    // Unknown on one side: not compared.
    let v = case(
        &good(),
        same,
        |w| {
            w.attestation_mut("worker-1").machine_id = None;
            w.node_mut("worker-1").boot_id = None;
        },
        Decision::Approve,
        &[],
    );
    assert!(detail(&v, C::NodeObject).contains("no machine-id or boot-id"));
    // Case does not matter for hex ids.
    case(
        &good(),
        same,
        |w| w.node_mut("worker-1").machine_id = Some("MACHINE-worker-1".to_owned()),
        Decision::Approve,
        &[],
    );
}

// === 13 expiration ===

#[test]
fn expiration_beyond_the_policy_maximum_is_denied() {
    let max = |w: &mut World| w.policy.max_expiration_seconds = 86_400;
    case(
        &good(),
        |c| c.expiration_seconds = Some(864_000),
        max,
        Decision::Deny,
        &[(C::Expiration, Reason::ExpirationTooLong)],
    );
    case(
        &good(),
        |c| c.expiration_seconds = Some(3_600),
        max,
        Decision::Approve,
        &[],
    );
    case(
        &good(),
        |c| c.expiration_seconds = None,
        max,
        Decision::Approve,
        &[],
    );
    // The shipped default is one year, kube-controller-manager's signing duration
    // (issue 12, finding 7): the approver does not rely on the signer's cap.
    let v = case(
        &good(),
        |c| c.expiration_seconds = Some(i32::MAX),
        as_is,
        Decision::Deny,
        &[(C::Expiration, Reason::ExpirationTooLong)],
    );
    assert!(detail(&v, C::Expiration).contains("31536000"));
    case(
        &good(),
        |c| c.expiration_seconds = Some(31_536_000),
        as_is,
        Decision::Approve,
        &[],
    );
}

// === deny mode and verdict helpers ===

#[test]
fn deny_never_leaves_would_be_denials_pending() {
    let spec = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.0.0.99"]);
    let v = case(
        &spec,
        same,
        |w| w.policy.deny = DenyMode::Never,
        Decision::Pending,
        &[(C::IpSansAttested, Reason::AddressNotAttested)],
    );
    let c = v.check(C::IpSansAttested).expect("reported");
    assert!(c.would_deny());
    assert_eq!(c.outcome(), Some(Outcome::Pending));
    assert!(c.detail().contains("would be denied"));
    // Not a "facts predate the CSR" wait: a challenge would not help.
    assert!(!v.pending_only_on_predating_facts());
    // Garbage too.
    let mut csr = csr_input("worker-1", "garbage");
    csr.request = b"garbage".to_vec();
    let mut world = World::two_workers();
    world.policy.deny = DenyMode::Never;
    assert_eq!(world.decide(&csr).decision(), Decision::Pending);
}

#[test]
fn authorization_is_an_input_asked_for_once_everything_else_passes() {
    let csr = csr_input("worker-1", &good().pem());
    let world = World::two_workers();
    let set: AttestationSet = world.attestations.iter().cloned().collect();
    let nodes: NodeSet = world
        .nodes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let with = |review: &AccessReview| {
        decide(
            &csr,
            Observed {
                attestations: &set,
                nodes: Some(&nodes),
                services: None,
                access_review: Some(review),
                ownership: None,
            },
            &world.policy,
            world.now,
        )
    };
    // Not made yet: reported, not evaluated; the controller makes it now.
    let v = with(&AccessReview::NotMade);
    assert_eq!(v.decision(), Decision::Approve);
    assert!(v.awaits_access_review());
    assert_eq!(v.checks().last().map(|c| c.name()), Some(C::Authorization));
    assert_eq!(v.checks().last().map(|c| c.name().number()), Some(14));
    assert_eq!(
        v.check(C::Authorization).map(|c| c.status()),
        Some(CheckStatus::Skipped)
    );
    // Refused: pending, with the reviewer's words.
    let v = with(&AccessReview::Refused(
        "system:node:worker-1 may not create selfnodeserver".to_owned(),
    ));
    assert_eq!(v.decision(), Decision::Pending);
    assert!(!v.awaits_access_review());
    assert_eq!(v.reason(), Some(Reason::SubjectAccessDenied));
    assert!(
        v.summary()
            .contains("authorization: system:node:worker-1 may not")
    );
    // Allowed: approved, every check passed.
    let v = with(&AccessReview::Allowed("allowed".to_owned()));
    assert_eq!(v.decision(), Decision::Approve);
    assert!(!v.awaits_access_review());
    assert_eq!(v.failed().count(), 0);
    assert_eq!(
        v.check(C::Authorization).map(|c| c.status()),
        Some(CheckStatus::Passed)
    );
    // Offline (no review possible): check 14 is not reported at all.
    let v = world.decide(&csr);
    assert!(v.check(C::Authorization).is_none());
    assert!(!v.awaits_access_review());
    // A CSR another check holds never asks for the review.
    let mut stale = world.clone();
    stale.now = at(30 + 600);
    let set_stale: AttestationSet = stale.attestations.iter().cloned().collect();
    let v = decide(
        &csr,
        Observed {
            attestations: &set_stale,
            nodes: Some(&nodes),
            services: None,
            access_review: Some(&AccessReview::NotMade),
            ownership: None,
        },
        &stale.policy,
        stale.now,
    );
    assert_eq!(v.decision(), Decision::Pending);
    assert!(!v.awaits_access_review());
}

#[test]
fn summary_names_every_failing_check_on_one_line() {
    let v = case(
        &CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.0.0.99"]),
        |c| c.expiration_seconds = Some(999_999),
        |w| {
            w.policy.max_expiration_seconds = 86_400;
            w.attestation_mut("worker-1").peer_address = Some(ip("192.0.2.1"));
        },
        Decision::Deny,
        &[
            // The report does not contain its own source address: it cannot show
            // that the node lacks 10.0.0.99, so that SAN waits.
            (C::IpSansAttested, Reason::UnattestedAddress),
            (C::PeerBinding, Reason::PeerMismatch),
            (C::Expiration, Reason::ExpirationTooLong),
        ],
    );
    let s = v.summary();
    assert!(!s.contains('\n'));
    for name in ["ip-sans-attested:", "peer-binding:", "expiration:"] {
        assert!(s.contains(name), "{s}");
    }
    assert_eq!(v.reason(), Some(Reason::ExpirationTooLong));
}

#[test]
fn verdict_json_has_the_documented_shape() {
    let v = case(&good(), same, |w| w.nodes = None, Decision::Approve, &[]);
    let json = serde_json::to_value(&v).expect("serialises");
    assert_eq!(json["decision"], "approve");
    let checks = json["checks"].as_array().expect("checks list");
    assert_eq!(checks.len(), 14);
    assert_eq!(checks[0]["name"], "scope");
    assert_eq!(checks[0]["passed"], true);
    assert!(checks.iter().all(|c| c["detail"].is_string()));
    let skipped: Vec<&serde_json::Value> =
        checks.iter().filter(|c| c["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 2);
    assert!(skipped.iter().all(|c| c["passed"].is_null()));
    assert_eq!(json["supportingAttestation"]["node"], "worker-1");
}

// === evidence before denial ===
//
// A denial cannot be undone: a SAN missing from the node's facts is denied only when the
// facts demonstrably describe the host after the CSR existed — received after it on one
// clock, complete by the agent's account, consistent with the connection they came on,
// and not doubted by the Node object. Everything else waits (`UnattestedAddress`) and
// says why.

/// worker-1 asks for its own address and 10.0.0.99, which it does not have.
fn asks_for_a_foreign_ip() -> CsrSpec {
    CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "10.0.0.99"])
}

const WAITS: [(CheckName, Reason); 1] = [(C::IpSansAttested, Reason::UnattestedAddress)];

#[test]
fn an_incomplete_report_never_supports_a_denial() {
    // The agent cut its list at a limit, and says so.
    let v = case(
        &asks_for_a_foreign_ip(),
        same,
        |w| {
            w.attestation_mut("worker-1").sources = vec![SourceReport::incomplete(
                INTERFACES_SOURCE,
                "left out 12 addresses past the limits",
            )];
        },
        Decision::Pending,
        &WAITS,
    );
    let d = detail(&v, C::IpSansAttested);
    assert!(d.contains("incomplete: left out 12 addresses"), "{d}");
    assert!(d.contains("instead of denying"), "{d}");
    // An agent that does not say (older than the field) is not taken as complete.
    let v = case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.attestation_mut("worker-1").sources.clear(),
        Decision::Pending,
        &WAITS,
    );
    assert!(detail(&v, C::IpSansAttested).contains("does not say"));
    // What an incomplete report does contain still supports an approval.
    case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").sources.clear(),
        Decision::Approve,
        &[],
    );
}

#[test]
fn a_report_without_its_own_source_address_never_supports_a_denial() {
    // An empty report (an agent that could not read its interfaces) from the node's
    // own address: it is not the node's view of itself.
    let v = case(
        &asks_for_a_foreign_ip(),
        same,
        |w| {
            let a = w.attestation_mut("worker-1");
            a.interfaces.clear();
            a.peer_address = Some(ip("10.0.0.11"));
        },
        Decision::Pending,
        &[
            (C::IpSansAttested, Reason::UnattestedAddress),
            (C::PeerBinding, Reason::PeerMismatch),
        ],
    );
    assert!(detail(&v, C::IpSansAttested).contains("does not contain 10.0.0.11"));
    // No source address recorded at all.
    let v = case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.attestation_mut("worker-1").peer_address = None,
        Decision::Pending,
        &[
            (C::IpSansAttested, Reason::UnattestedAddress),
            (C::PeerBinding, Reason::PeerMismatch),
        ],
    );
    assert!(detail(&v, C::IpSansAttested).contains("no source address"));
    // Behind NAT with peer binding off: the same rule holds, so nothing is denied.
    case(
        &asks_for_a_foreign_ip(),
        same,
        |w| {
            w.policy.peer_binding = false;
            w.attestation_mut("worker-1").peer_address = Some(ip("192.0.2.1"));
        },
        Decision::Pending,
        &WAITS,
    );
}

#[test]
fn doubted_facts_never_support_a_denial() {
    // The Node says another machine: the facts may not be this node's.
    let v = case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.node_mut("worker-1").machine_id = Some("machine-other".to_owned()),
        Decision::Pending,
        &[
            (C::IpSansAttested, Reason::UnattestedAddress),
            (C::NodeObject, Reason::NodeMismatch),
        ],
    );
    assert!(detail(&v, C::IpSansAttested).contains("may come from another machine"));
    case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.node_mut("worker-1").boot_id = Some("boot-other".to_owned()),
        Decision::Pending,
        &[
            (C::IpSansAttested, Reason::UnattestedAddress),
            (C::NodeObject, Reason::NodeMismatch),
        ],
    );
    // Received "after now": the approver's clock stepped back, or the store is wrong.
    let v = case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.attestation_mut("worker-1").received_at = at(90),
        Decision::Pending,
        &WAITS,
    );
    assert!(detail(&v, C::IpSansAttested).contains("ahead of the approver's clock"));
}

#[test]
fn after_the_csr_is_judged_on_the_approvers_own_clock() {
    // The API server's clock runs 40 s ahead: its creationTimestamp (t0) is later than
    // the approver's own sighting (t0 − 40 s on the approver's clock). A report received
    // 30 s after that sighting is after the CSR, whatever creationTimestamp says.
    case(
        &asks_for_a_foreign_ip(),
        |c| c.seen_at = Some(at(-40)),
        |w| w.attestation_mut("worker-1").received_at = at(-10),
        Decision::Deny,
        &[(C::IpSansAttested, Reason::AddressNotAttested)],
    );
    // The API server's clock runs behind: creationTimestamp says the report (30 s
    // later) came after, but the approver saw the CSR only at t0 + 45 s, after it.
    let v = case(
        &asks_for_a_foreign_ip(),
        |c| c.seen_at = Some(at(45)),
        as_is,
        Decision::Pending,
        &WAITS,
    );
    assert!(detail(&v, C::IpSansAttested).contains("first sighting of the CSR"));
    // Received at the very instant of the sighting: not after it.
    case(
        &asks_for_a_foreign_ip(),
        |c| c.seen_at = Some(at(30)),
        as_is,
        Decision::Pending,
        &WAITS,
    );
    // Offline (no sighting), the creation time is compared with the policy's skew bound.
    case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.attestation_mut("worker-1").received_at = at(5),
        Decision::Pending,
        &WAITS,
    );
    case(
        &asks_for_a_foreign_ip(),
        same,
        |w| w.attestation_mut("worker-1").received_at = at(7),
        Decision::Deny,
        &[(C::IpSansAttested, Reason::AddressNotAttested)],
    );
    case(
        &asks_for_a_foreign_ip(),
        same,
        |w| {
            w.attestation_mut("worker-1").received_at = at(7);
            w.policy.clock_skew = HumanDuration::new(jiff::SignedDuration::from_secs(30));
        },
        Decision::Pending,
        &WAITS,
    );
}

#[test]
fn names_of_the_api_server_and_of_loopback_are_never_a_nodes() {
    // A node named `kubernetes`, whose hostname is `kubernetes.default`, attests both.
    for name in ["kubernetes", "kubernetes.default"] {
        let spec = CsrSpec::kubelet("kubernetes", &[name], &["10.0.0.13"]);
        let mut csr = csr_input("kubernetes", &spec.pem());
        csr.username = "system:node:kubernetes".to_owned();
        let mut world = World::two_workers();
        let mut a = world.attestation_mut("worker-2").clone();
        a.node_name = "kubernetes".to_owned();
        a.hostname = "kubernetes.default".to_owned();
        a.interfaces[1].addresses = vec!["10.0.0.13/24".parse().expect("net")];
        a.peer_address = Some(ip("10.0.0.13"));
        a.machine_id = Some("machine-kubernetes".to_owned());
        a.boot_id = Some("boot-kubernetes".to_owned());
        world.attestations.push(a);
        world
            .nodes
            .get_or_insert_with(Vec::new)
            .push(super::support::node_record("kubernetes", &["10.0.0.13"]));
        world.policy.hostname_must_match_node_name = false;
        let v = world.decide(&csr);
        expect(
            &v,
            Decision::Deny,
            &[(C::DnsSansAttested, Reason::NameNotAllowed)],
        );
        assert!(detail(&v, C::DnsSansAttested).contains("the cluster's API server"));
    }
    // A node named `localhost`, and the loopback domain.
    for (node, name) in [
        ("localhost", "localhost"),
        ("worker-1", "localhost.localdomain"),
        ("worker-1", "worker-1.localhost"),
    ] {
        let spec = CsrSpec::kubelet(node, &[name], &["10.0.0.11"]);
        let mut csr = csr_input(node, &spec.pem());
        csr.username = format!("system:node:{node}");
        let mut world = World::two_workers();
        let a = world.attestation_mut("worker-1");
        a.node_name = node.to_owned();
        a.hostname = name.to_owned();
        world.policy.hostname_must_match_node_name = false;
        world.policy.allowed_dns_suffixes = vec![DnsSuffix::new("localhost").expect("suffix")];
        let v = world.decide(&csr);
        let got = v.check(C::DnsSansAttested).and_then(|c| c.reason());
        assert_eq!(
            got,
            Some(Reason::NameNotAllowed),
            "{node} {name}:\n{}",
            render(&v)
        );
        assert_eq!(v.decision(), Decision::Deny);
        assert!(detail(&v, C::DnsSansAttested).contains("loopback"));
    }
}

#[test]
fn every_reading_of_a_name_counts_whatever_the_order_of_the_suffixes() {
    let orders: [&[&str]; 2] = [
        &["example.com", "nodes.example.com"],
        &["nodes.example.com", "example.com"],
    ];
    for order in orders {
        let suffixes = |w: &mut World| {
            w.policy.allowed_dns_suffixes = order
                .iter()
                .map(|s| DnsSuffix::new(s).expect("suffix"))
                .collect();
        };
        // worker-1's honest name under the longer suffix is approved in both orders.
        case(
            &CsrSpec::kubelet("worker-1", &["worker-1.nodes.example.com"], &["10.0.0.11"]),
            same,
            suffixes,
            Decision::Approve,
            &[],
        );
        // `worker-1.nodes.example.com` is also node `worker-1.nodes` + `example.com`:
        // when such a node exists, the name is ambiguous and waits in both orders.
        let v = case(
            &CsrSpec::kubelet("worker-1", &["worker-1.nodes.example.com"], &["10.0.0.11"]),
            same,
            |w| {
                suffixes(w);
                w.attestation_mut("worker-2").node_name = "worker-1.nodes".to_owned();
                w.node_mut("worker-2").name = "worker-1.nodes".to_owned();
            },
            Decision::Pending,
            &[
                (C::UniqueAmongAttestations, Reason::AddressConflict),
                (C::UniqueAmongNodes, Reason::AddressConflict),
            ],
        );
        assert!(detail(&v, C::UniqueAmongAttestations).contains("worker-1.nodes"));
    }
}

#[test]
fn every_spelling_inet_aton_reads_as_an_address_is_refused() {
    for name in [
        "10.0.0.031",
        "10.25",
        "167772171",
        "0xa.0.0.11",
        "012.0.0.013",
    ] {
        let v = case(
            &CsrSpec::kubelet("worker-1", &["worker-1", name], &["10.0.0.11"]),
            same,
            |w| {
                w.attestation_mut("worker-1").hostname = name.to_owned();
                w.policy.hostname_must_match_node_name = false;
            },
            Decision::Deny,
            &[(C::SanShape, Reason::SanInvalid)],
        );
        assert!(
            detail(&v, C::SanShape).contains("IP address written as a DNS name"),
            "{name}"
        );
    }
}

// === the cluster's Service addresses (check 9) ===

/// worker-1 has put `addr` on eth0 (a counted interface) and asks for it.
fn asks_for_attested(addr: &str) -> (CsrSpec, impl FnOnce(&mut World)) {
    let spec = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", addr]);
    let addr = format!("{addr}/32");
    let addr = if addr.contains(':') {
        addr.replace("/32", "/128")
    } else {
        addr
    };
    let edit = move |w: &mut World| {
        w.attestation_mut("worker-1").interfaces[1]
            .addresses
            .push(addr.parse().expect("net"));
    };
    (spec, edit)
}

/// Runs a case in the world with the kubeadm-like Services, after `edit`. worker-2's
/// attestation is left out: it holds the Service IPs on kube-ipvs0, a conflict of its own
/// (check 11) that these cases do not look at.
#[track_caller]
fn service_case(
    addr: &str,
    edit: impl FnOnce(&mut World),
    decision: Decision,
    failed: &[(CheckName, Reason)],
) -> Verdict {
    let (spec, attest) = asks_for_attested(addr);
    let csr = csr_input("worker-1", &spec.pem());
    let mut world = World::two_workers().with_cluster_services();
    world.attestations.retain(|a| a.node_name == "worker-1");
    attest(&mut world);
    edit(&mut world);
    let verdict = world.decide(&csr);
    expect(&verdict, decision, failed);
    verdict
}

#[test]
fn a_services_cluster_ip_is_denied_whatever_the_node_attests() {
    let deny = [(C::IpSansAttested, Reason::AddressNotAllowed)];
    // The default policy (deploy/base/policy.yaml ships it): no deniedCidrs at all.
    let v = service_case("10.96.0.1", |_| {}, Decision::Deny, &deny);
    let d = detail(&v, C::IpSansAttested);
    assert!(
        d.contains("10.96.0.1 is a cluster IP of Service default/kubernetes (spec.clusterIPs)"),
        "{d}"
    );
    // Even when its own Node lists it: cluster IPs are never a node's.
    let v = service_case(
        "10.96.0.10",
        |w| {
            w.node_mut("worker-1")
                .addresses
                .push(rubber_stamp_core::NodeAddress {
                    kind: "ExternalIP".to_owned(),
                    address: "10.96.0.10".to_owned(),
                })
        },
        Decision::Deny,
        &deny,
    );
    assert!(detail(&v, C::IpSansAttested).contains("Service kube-system/kube-dns"));
    // IPv6 too, in any spelling the request carries.
    let v = service_case("fd00:10:96::1", |_| {}, Decision::Deny, &deny);
    assert!(detail(&v, C::IpSansAttested).contains("Service default/kubernetes"));
}

#[test]
fn an_address_in_a_service_cidr_is_denied_even_when_no_service_holds_it() {
    let deny = [(C::IpSansAttested, Reason::AddressNotAllowed)];
    for addr in ["10.100.0.5", "fd00:10:96::ab"] {
        let v = service_case(addr, |_| {}, Decision::Deny, &deny);
        let d = detail(&v, C::IpSansAttested);
        assert!(d.contains("(ServiceCIDR kubernetes)"), "{d}");
    }
    // Without the ServiceCIDR API (before 1.33) the range is unknown: the policy's
    // deniedCidrs stand in, and the check says so when it passes.
    let v = service_case(
        "10.100.0.5",
        |w| {
            let s = w.services_mut();
            s.clear_ranges();
            s.set_ranges_listing(Listing::Unserved);
        },
        Decision::Approve,
        &[],
    );
    assert!(detail(&v, C::IpSansAttested).contains("serves no ServiceCIDRs"));
    service_case(
        "10.100.0.5",
        |w| {
            let s = w.services_mut();
            s.clear_ranges();
            s.set_ranges_listing(Listing::Unserved);
            w.policy.denied_cidrs = vec!["10.96.0.0/12".parse().expect("net")];
        },
        Decision::Deny,
        &[(C::IpSansAttested, Reason::AddressNotAllowed)],
    );
}

#[test]
fn external_and_load_balancer_ips_are_denied_unless_the_nodes_own_node_lists_them() {
    let web = || {
        service(
            "shop",
            "web",
            &[
                ("10.96.5.5", ServiceField::ClusterIp),
                ("192.0.2.50", ServiceField::LoadBalancerIngress),
                ("198.51.100.7", ServiceField::ExternalIp),
            ],
        )
    };
    let lists = |w: &mut World, addr: &str| {
        w.node_mut("worker-1")
            .addresses
            .push(rubber_stamp_core::NodeAddress {
                kind: "ExternalIP".to_owned(),
                address: addr.to_owned(),
            });
    };
    for (addr, field) in [
        ("192.0.2.50", "status.loadBalancer.ingress[].ip"),
        ("198.51.100.7", "spec.externalIPs"),
    ] {
        // Another machine's load balancer or external IP, put on worker-1's eth0.
        let v = service_case(
            addr,
            |w| {
                w.services_mut().insert(Arc::new(web()));
            },
            Decision::Deny,
            &[(C::IpSansAttested, Reason::AddressNotAllowed)],
        );
        let d = detail(&v, C::IpSansAttested);
        assert!(
            d.contains(&format!("of Service shop/web ({field})"))
                && d.contains("Node worker-1 does not list it"),
            "{d}"
        );
        // k3s ServiceLB / bare-metal externalIPs: the address is worker-1's own, its
        // Node lists it, and the kubelet asks for it. Not denied by this rule.
        let v = service_case(
            addr,
            |w| {
                w.services_mut().insert(Arc::new(web()));
                lists(w, addr);
            },
            Decision::Approve,
            &[],
        );
        let d = detail(&v, C::IpSansAttested);
        assert!(
            d.contains("allowed because Node worker-1 lists it in status.addresses"),
            "{d}"
        );
        // Another Node listing it is check 11's conflict, not an exemption.
        service_case(
            addr,
            |w| {
                w.services_mut().insert(Arc::new(web()));
                lists(w, addr);
                w.node_mut("worker-2")
                    .addresses
                    .push(rubber_stamp_core::NodeAddress {
                        kind: "ExternalIP".to_owned(),
                        address: addr.to_owned(),
                    });
            },
            Decision::Pending,
            &[(C::UniqueAmongNodes, Reason::AddressConflict)],
        );
        // Without Node objects the exemption cannot be told: wait, never deny.
        let v = service_case(
            addr,
            |w| {
                w.services_mut().insert(Arc::new(web()));
                w.nodes = None;
            },
            Decision::Pending,
            &[(C::IpSansAttested, Reason::AddressConflict)],
        );
        assert!(detail(&v, C::IpSansAttested).contains("needs Node objects"));
    }
}

#[test]
fn the_service_rule_switched_off_looks_at_no_service() {
    let v = service_case(
        "10.96.0.1",
        |w| w.policy.service_addresses = ServiceAddressMode::Ignore,
        Decision::Approve,
        &[],
    );
    assert_eq!(
        v.check(C::IpSansAttested).map(|c| c.status()),
        Some(CheckStatus::Passed)
    );
}

#[test]
fn without_services_the_rule_is_reported_as_not_evaluated_never_as_passed() {
    let v = service_case("10.96.0.1", |w| w.services = None, Decision::Approve, &[]);
    let c = v.check(C::IpSansAttested).expect("reported");
    assert_eq!(c.status(), CheckStatus::Skipped);
    assert!(
        c.detail().starts_with(
            "not evaluated against the cluster's Services (Services and ServiceCIDRs not given)"
        ),
        "{}",
        c.detail()
    );
    // Only the ranges missing: the Services are still compared.
    service_case(
        "10.96.0.1",
        |w| w.services_mut().set_ranges_listing(Listing::NotGiven),
        Decision::Deny,
        &[(C::IpSansAttested, Reason::AddressNotAllowed)],
    );
    let v = service_case(
        "10.100.0.5",
        |w| w.services_mut().set_ranges_listing(Listing::NotGiven),
        Decision::Approve,
        &[],
    );
    assert!(
        detail(&v, C::IpSansAttested).contains("(ServiceCIDRs not given)"),
        "{}",
        detail(&v, C::IpSansAttested)
    );
}

#[test]
fn until_the_services_are_listed_ip_sans_wait_and_dns_only_requests_do_not() {
    let v = service_case(
        "10.0.0.11",
        |w| w.services_mut().set_services_listing(Listing::Waiting),
        Decision::Pending,
        &[(C::IpSansAttested, Reason::AwaitingServices)],
    );
    assert!(detail(&v, C::IpSansAttested).contains("the Services have not been listed yet"));
    service_case(
        "10.0.0.11",
        |w| w.services_mut().set_ranges_listing(Listing::Waiting),
        Decision::Pending,
        &[(C::IpSansAttested, Reason::AwaitingServices)],
    );
    // A definite violation is denied all the same.
    service_case(
        "10.96.0.1",
        |w| w.services_mut().set_services_listing(Listing::Waiting),
        Decision::Deny,
        &[(C::IpSansAttested, Reason::AddressNotAllowed)],
    );
    let csr = csr_input(
        "worker-1",
        &CsrSpec::kubelet("worker-1", &["worker-1"], &[]).pem(),
    );
    let mut world = World::two_workers();
    world.services_mut().set_services_listing(Listing::Waiting);
    expect(&world.decide(&csr), Decision::Approve, &[]);
}

#[test]
fn deny_never_leaves_a_service_address_pending_as_a_would_be_denial() {
    let v = service_case(
        "10.96.0.1",
        |w| w.policy.deny = DenyMode::Never,
        Decision::Pending,
        &[(C::IpSansAttested, Reason::AddressNotAllowed)],
    );
    assert!(v.check(C::IpSansAttested).is_some_and(|c| c.would_deny()));
}

#[test]
fn a_peer_mismatch_states_the_fact_and_suggests_no_switch() {
    let v = case(
        &good(),
        same,
        |w| w.attestation_mut("worker-1").peer_address = Some(ip("192.0.2.1")),
        Decision::Pending,
        &[(C::PeerBinding, Reason::PeerMismatch)],
    );
    let d = detail(&v, C::PeerBinding);
    assert_eq!(
        d,
        "worker-1's agent connected from 192.0.2.1, which is not one of the addresses it reported"
    );
    for advice in ["peerBinding", "NAT", "set "] {
        assert!(!d.contains(advice), "{d}");
    }
}
