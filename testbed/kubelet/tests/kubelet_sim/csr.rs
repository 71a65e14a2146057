//! The serving CSR the kubelet simulator creates is exactly a kubelet's:
//! parsed independently with x509-parser (subject, SANs, extensions, key and
//! signature) and as a CertificateSigningRequest object (signer, usages,
//! generateName, expirationSeconds), from the library, from the binary, and
//! from the binary inside a simulated host (hostname and addresses
//! discovered there).

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rubber_stamp_hosts::{self as hosts, Network};
use rubber_stamp_kubelet_sim::{NodeIdentity, ServingRequest};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::*;

use crate::KUBELET_SIM;

const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
const OID_SAN: &str = "2.5.29.17";
const OID_O: &str = "2.5.4.10";
const OID_CN: &str = "2.5.4.3";

/// Everything a CSR says, read by x509-parser (not by the code under test).
#[derive(Debug, PartialEq, Eq)]
struct CsrFacts {
    version: u32,
    /// RDNs in order, each as (attribute OID, ASN.1 string tag, value).
    subject: Vec<Vec<(String, u32, String)>>,
    signature_algorithm: String,
    key_algorithm: String,
    curve: Option<String>,
    /// OIDs of the PKCS#10 attributes.
    attributes: Vec<String>,
    /// OIDs of the requested extensions.
    extensions: Vec<String>,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
}

fn inspect(pem: &str) -> CsrFacts {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).expect("CSR PEM");
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("PKCS#10 DER");
    assert!(rest.is_empty(), "trailing bytes after the CSR");
    csr.verify_signature().expect("self-signature verifies");
    let info = &csr.certification_request_info;
    let subject = info
        .subject
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    (
                        a.attr_type().to_id_string(),
                        a.attr_value().tag().0,
                        a.as_str().expect("string attribute").to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    let mut extensions = Vec::new();
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    for attr in info.iter_attributes() {
        if let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() {
            for ext in &req.extensions {
                extensions.push(ext.oid.to_id_string());
                if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                            GeneralName::IPAddress(b) => ips.push(match b.len() {
                                4 => IpAddr::from(<[u8; 4]>::try_from(*b).expect("v4")),
                                _ => IpAddr::from(<[u8; 16]>::try_from(*b).expect("v6")),
                            }),
                            other => panic!("unexpected SAN {other:?}"),
                        }
                    }
                }
            }
        }
    }
    CsrFacts {
        version: info.version.0,
        subject,
        signature_algorithm: csr.signature_algorithm.algorithm.to_id_string(),
        key_algorithm: info.subject_pki.algorithm.algorithm.to_id_string(),
        curve: info
            .subject_pki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
        attributes: info
            .iter_attributes()
            .map(|a| a.oid.to_id_string())
            .collect(),
        extensions,
        dns_names,
        ips,
    }
}

/// What a kubelet's CSR for this identity says.
fn kubelet_csr(node: &str, dns: &[&str], ips: &[IpAddr]) -> CsrFacts {
    CsrFacts {
        version: 0,
        // PrintableString (tag 19), as Go's crypto/x509 writes these.
        subject: vec![
            vec![(OID_O.into(), 19, "system:nodes".into())],
            vec![(OID_CN.into(), 19, format!("system:node:{node}"))],
        ],
        signature_algorithm: OID_ECDSA_SHA256.into(),
        key_algorithm: OID_EC_PUBLIC_KEY.into(),
        curve: Some(OID_P256.into()),
        attributes: vec![OID_EXTENSION_REQUEST.into()],
        extensions: vec![OID_SAN.into()],
        dns_names: dns.iter().map(|d| (*d).to_owned()).collect(),
        ips: ips.to_vec(),
    }
}

/// The object fields a kubelet sets, and that it leaves the rest to the
/// API server.
fn assert_kubelet_object(obj: &CertificateSigningRequest, expiration: Option<i32>) {
    assert_eq!(obj.metadata.name, None);
    assert_eq!(obj.metadata.generate_name.as_deref(), Some("csr-"));
    assert_eq!(obj.spec.signer_name, "kubernetes.io/kubelet-serving");
    assert_eq!(
        obj.spec.usages.as_deref(),
        Some(&["digital signature".to_owned(), "server auth".to_owned()][..]),
        "ECDSA keys: no key encipherment (kubelet >= 1.27)"
    );
    assert_eq!(obj.spec.expiration_seconds, expiration);
    assert_eq!(obj.spec.username, None);
    assert_eq!(obj.spec.groups, None);
    assert_eq!(obj.spec.uid, None);
    assert!(obj.status.is_none());
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn library_request_is_a_kubelet_serving_csr() {
    let ips = [ip("198.18.7.2"), ip("fd12:3456:789a:1::2")];
    let id = NodeIdentity::new("worker-1", "worker-1", &ips).expect("identity");
    let req = ServingRequest::generate(&id).expect("request");
    assert_eq!(
        inspect(req.csr_pem()),
        kubelet_csr("worker-1", &["worker-1"], &ips)
    );
    let obj = req.object(Some(86_400));
    assert_kubelet_object(&obj, Some(86_400));
    assert_eq!(
        std::str::from_utf8(&obj.spec.request.0).expect("utf-8"),
        req.csr_pem()
    );

    // A node name that differs from the hostname is a second DNS SAN.
    let id = NodeIdentity::new("worker-1.cluster", "worker-1", &ips[..1]).expect("identity");
    let req = ServingRequest::generate(&id).expect("request");
    assert_eq!(
        inspect(req.csr_pem()),
        kubelet_csr(
            "worker-1.cluster",
            &["worker-1", "worker-1.cluster"],
            &ips[..1]
        )
    );

    // Each request has a fresh key.
    let again = ServingRequest::generate(&id).expect("request");
    assert_ne!(req.key_pem(), again.key_pem());
}

#[test]
fn binary_prints_the_same_csr_object() {
    let out = Command::new(KUBELET_SIM)
        .args([
            "--print-csr",
            "--node-name",
            "edge-7",
            "--hostname-override",
            "edge-7",
            "--node-ip",
            "198.18.9.4,fd00:1:2:3::4",
            "--ip",
            "198.18.9.5",
            "--expiration-seconds",
            "3600",
        ])
        .output()
        .expect("run kubelet-sim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let obj: CertificateSigningRequest =
        serde_yaml::from_slice(&out.stdout).expect("a CertificateSigningRequest in YAML");
    assert_kubelet_object(&obj, Some(3600));
    let pem = std::str::from_utf8(&obj.spec.request.0).expect("utf-8");
    assert_eq!(
        inspect(pem),
        kubelet_csr(
            "edge-7",
            &["edge-7"],
            &[ip("198.18.9.4"), ip("fd00:1:2:3::4"), ip("198.18.9.5")]
        )
    );
}

#[test]
fn binary_refuses_what_the_api_server_or_a_kubelet_would_not_send() {
    for (args, needle) in [
        (&["--expiration-seconds", "60"][..], "600"),
        (&["--node-name", "Bad_Name"][..], "node name"),
        (&["--node-ip", "0.0.0.0"][..], "unspecified"),
    ] {
        let out = Command::new(KUBELET_SIM)
            .args(["--print-csr", "--hostname-override", "ok"])
            .args(args)
            .output()
            .expect("run kubelet-sim");
        assert!(!out.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let help = Command::new(KUBELET_SIM)
        .arg("--help")
        .output()
        .expect("run kubelet-sim");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--kubeconfig",
        "--server",
        "--node-ip",
        "--cert-dir",
        "--port",
        "KUBELET_SIM_NODE_NAME",
        "Exit codes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test]
async fn inside_a_host_the_csr_names_that_hosts_hostname_and_addresses() {
    if !hosts::available_or_skip("inside_a_host_the_csr_names_that_hosts_hostname") {
        return;
    }
    let (net, hosts) = Network::with_hosts(&["kubelet-a", "kubelet-b"]).expect("network");
    // A rogue-style extra interface is discovered too (the agent would
    // attest it; the approver decides whether it counts).
    let extra = net.allocate_ipv4().expect("allocate");
    hosts[1]
        .add_dummy("dummy0", ipnet::IpNet::V4(extra))
        .expect("dummy");
    for (host, extra) in [(&hosts[0], None), (&hosts[1], Some(extra.addr()))] {
        let out = host
            .run(
                Command::new(KUBELET_SIM).arg("--print-csr"),
                Duration::from_secs(10),
            )
            .await
            .expect("run kubelet-sim in the host");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let obj: CertificateSigningRequest = serde_yaml::from_slice(&out.stdout).expect("CSR YAML");
        let pem = std::str::from_utf8(&obj.spec.request.0).expect("utf-8");
        let mut ips = vec![IpAddr::from(host.ipv4())];
        ips.extend(extra.map(IpAddr::from));
        ips.sort();
        ips.push(IpAddr::from(host.ipv6()));
        assert_eq!(
            inspect(pem),
            kubelet_csr(host.hostname(), &[host.hostname()], &ips),
            "hostname from the UTS namespace, addresses from the network namespace \
             (no loopback, no link-local)"
        );
    }
}
