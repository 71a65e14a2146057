//! CSRs made by other implementations (OpenSSL, Python `cryptography`, Go's
//! `crypto/x509` as the kubelet uses it), committed under `tests/fixtures/`:
//! each decides as expected in the two-worker world.

use std::path::{Path, PathBuf};

use rubber_stamp_core::policy::DnsSuffix;
use rubber_stamp_core::{CheckName, Decision, Reason};

use super::support::{World, csr_input};

use CheckName as C;

/// The usages a kubelet sends with an ECDSA / Ed25519 key.
pub(crate) const USAGES_ECDSA: &[&str] = &["digital signature", "server auth"];
/// The usages a kubelet sends with an RSA key.
pub(crate) const USAGES_RSA: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// One committed fixture and what the two-worker world decides on it.
#[derive(Debug)]
pub(crate) struct Fixture {
    /// Path under `tests/fixtures/`.
    pub(crate) path: &'static str,
    /// `spec.usages` to send with it.
    pub(crate) usages: &'static [&'static str],
    /// The decision.
    pub(crate) decision: Decision,
    /// The failed checks and their reasons.
    pub(crate) failed: &'static [(CheckName, Reason)],
    /// A phrase the first failed check's detail (or the parse detail) contains.
    pub(crate) detail: &'static str,
}

const fn fx(
    path: &'static str,
    usages: &'static [&'static str],
    decision: Decision,
    failed: &'static [(CheckName, Reason)],
    detail: &'static str,
) -> Fixture {
    Fixture {
        path,
        usages,
        decision,
        failed,
        detail,
    }
}

const APPROVE: Decision = Decision::Approve;
const DENY: Decision = Decision::Deny;
const PARSE: &[(CheckName, Reason)] = &[(C::Parse, Reason::MalformedRequest)];
const SUBJECT: &[(CheckName, Reason)] = &[(C::Subject, Reason::SubjectInvalid)];
const USAGES: &[(CheckName, Reason)] = &[(C::Usages, Reason::UsagesInvalid)];
const SAN: &[(CheckName, Reason)] = &[(C::SanShape, Reason::SanInvalid)];
const OTHER_NODES_IP: &[(CheckName, Reason)] = &[
    (C::IpSansAttested, Reason::AddressNotAttested),
    (C::UniqueAmongAttestations, Reason::AddressConflict),
    (C::UniqueAmongNodes, Reason::AddressConflict),
];
const DNS: &[(CheckName, Reason)] = &[(C::DnsSansAttested, Reason::NameNotAttested)];

/// Every committed CSR fixture.
pub(crate) const FIXTURES: &[Fixture] = &[
    // OpenSSL 3 CLI.
    fx(
        "openssl/ecdsa-p256.csr.pem",
        USAGES_ECDSA,
        APPROVE,
        &[],
        "ECDSA P-256",
    ),
    fx(
        "openssl/rsa-2048.csr.pem",
        USAGES_RSA,
        APPROVE,
        &[],
        "RSA 2048-bit",
    ),
    fx(
        "openssl/hostile-sha1-rsa.csr.pem",
        USAGES_RSA,
        DENY,
        PARSE,
        "sha1WithRSAEncryption",
    ),
    fx(
        "openssl/hostile-rsa-1024.csr.pem",
        USAGES_RSA,
        DENY,
        PARSE,
        "does not verify",
    ),
    fx(
        "openssl/hostile-ca.csr.pem",
        USAGES_ECDSA,
        DENY,
        USAGES,
        "CA certificate",
    ),
    fx(
        "openssl/hostile-client-auth.csr.pem",
        USAGES_ECDSA,
        DENY,
        USAGES,
        "clientAuth",
    ),
    fx(
        "openssl/hostile-extra-ou.csr.pem",
        USAGES_ECDSA,
        DENY,
        SUBJECT,
        "attribute OU",
    ),
    fx(
        "openssl/hostile-email-san.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "email SANs",
    ),
    fx(
        "openssl/hostile-other-nodes-ip.csr.pem",
        USAGES_ECDSA,
        DENY,
        OTHER_NODES_IP,
        "10.0.0.12",
    ),
    fx(
        "openssl/hostile-ipv4-mapped.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "IPv4-mapped",
    ),
    // Python cryptography.
    fx(
        "python/ecdsa-p256.csr.pem",
        USAGES_ECDSA,
        APPROVE,
        &[],
        "ECDSA P-256",
    ),
    fx(
        "python/ecdsa-p384-sha384.csr.pem",
        USAGES_ECDSA,
        APPROVE,
        &[],
        "ECDSA P-384",
    ),
    fx(
        "python/rsa-3072-pss.csr.pem",
        USAGES_RSA,
        APPROVE,
        &[],
        "RSASSA-PSS",
    ),
    fx(
        "python/ed25519.csr.pem",
        USAGES_ECDSA,
        APPROVE,
        &[],
        "Ed25519",
    ),
    fx(
        "python/hostile-two-orgs.csr.pem",
        USAGES_ECDSA,
        DENY,
        SUBJECT,
        "system:masters",
    ),
    fx(
        "python/hostile-cn-upper-case.csr.pem",
        USAGES_ECDSA,
        DENY,
        SUBJECT,
        "upper-case",
    ),
    fx(
        "python/hostile-wildcard.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "wildcard",
    ),
    fx(
        "python/hostile-uri-san.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "URI SANs",
    ),
    fx(
        "python/hostile-no-san.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "no DNS or IP SAN",
    ),
    fx(
        "python/hostile-nul-dns.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "NUL",
    ),
    fx(
        "python/hostile-non-ascii-dns.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "non-ASCII",
    ),
    fx(
        "python/hostile-bad-ip-length.csr.pem",
        USAGES_ECDSA,
        DENY,
        SAN,
        "neither 4 nor 16",
    ),
    fx(
        "python/hostile-tampered-signature.csr.pem",
        USAGES_ECDSA,
        DENY,
        PARSE,
        "does not verify",
    ),
    // Go crypto/x509, exactly as the kubelet calls it.
    fx(
        "go/kubelet-dual-stack.csr.pem",
        USAGES_ECDSA,
        APPROVE,
        &[],
        "ECDSA P-256",
    ),
    fx(
        "go/kubelet-fqdn.csr.pem",
        USAGES_ECDSA,
        DENY,
        DNS,
        "worker-1.nodes.example.com",
    ),
    fx(
        "go/kubelet-other-node-ip.csr.pem",
        USAGES_ECDSA,
        DENY,
        OTHER_NODES_IP,
        "10.0.0.12",
    ),
];

/// `tests/fixtures/` of this crate.
pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The text of a fixture.
pub(crate) fn read(path: &str) -> String {
    let full = fixtures_dir().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn every_fixture_decides_as_expected() {
    for f in FIXTURES {
        let mut csr = csr_input("worker-1", &read(f.path));
        csr.usages = f.usages.iter().map(|u| (*u).to_owned()).collect();
        let v = World::two_workers().decide(&csr);
        let failed: Vec<(CheckName, Reason)> = v
            .failed()
            .map(|c| (c.name(), c.reason().expect("reason")))
            .collect();
        let details: Vec<String> = v
            .checks()
            .iter()
            .map(|c| format!("{}: {}", c.name(), c.detail()))
            .collect();
        assert_eq!(
            (v.decision(), failed.as_slice()),
            (f.decision, f.failed),
            "{}:\n{}",
            f.path,
            details.join("\n")
        );
        let where_detail = f.failed.first().map_or(C::Parse, |(n, _)| *n);
        let d = v
            .check(where_detail)
            .map(|c| c.detail())
            .unwrap_or_default();
        assert!(
            d.contains(f.detail),
            "{}: {d:?} lacks {:?}",
            f.path,
            f.detail
        );
    }
}

#[test]
fn every_committed_fixture_is_in_the_table() {
    let mut on_disk = Vec::new();
    for dir in ["openssl", "python", "go"] {
        let entries = std::fs::read_dir(fixtures_dir().join(dir)).expect("fixture folder");
        for entry in entries {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".pem") {
                on_disk.push(format!("{dir}/{name}"));
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|f| f.path.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn go_kubelet_fqdn_is_approved_with_the_suffix_allowed() {
    let mut world = World::two_workers();
    world.policy.allowed_dns_suffixes = vec![DnsSuffix::new(".nodes.example.com").expect("suffix")];
    let v = world.decide(&csr_input("worker-1", &read("go/kubelet-fqdn.csr.pem")));
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
}

/// Every request of `go-framing/` that Go's `x509.ParseCertificateRequest` (with
/// `CheckSignature`) refuses, the core refuses too; the unmutated request parses.
#[test]
fn the_core_refuses_every_framing_go_refuses() {
    let policy = rubber_stamp_core::Policy::default();
    let dir = fixtures_dir().join("go-framing");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("go-framing folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "der"))
        .collect();
    files.sort();
    let (mut refused_by_go, mut base) = (0, 0);
    for path in &files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let der = std::fs::read(path).expect("fixture");
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let ours = rubber_stamp_core::parse_request(pem.as_bytes(), &policy);
        if name.ends_with("go_reject.der") {
            refused_by_go += 1;
            assert!(ours.is_err(), "{name}: Go refuses it, the core accepted it");
        } else if name.contains("-base-") {
            base += 1;
            assert!(ours.is_ok(), "{name}: {ours:?}");
        }
    }
    assert_eq!(base, 1);
    assert!(refused_by_go >= 70, "only {refused_by_go} refused requests");
}
