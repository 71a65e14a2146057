//! `/usr/bin/kubectl` against the testbed: create a CSR from a file as a node, list it, approve it (forbidden for the node, allowed for the admin) and read the issued certificate.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rubber_stamp_testbed::apiserver::{Cluster, ClusterOptions};
use rubber_stamp_testbed::pki;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KUBECTL: &str = "/usr/bin/kubectl";

/// `None` when the test should be skipped (SKIP_KUBECTL=1); panics with a clear
/// message when kubectl is missing otherwise.
fn kubectl_available() -> Option<()> {
    if std::env::var("SKIP_KUBECTL").as_deref() == Ok("1") {
        eprintln!("SKIP_KUBECTL=1: skipping the kubectl tests");
        return None;
    }
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: install kubectl (or set SKIP_KUBECTL=1 to skip the kubectl tests)"
    );
    Some(())
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Out, std::io::Error> {
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", kubeconfig.parent().unwrap_or(Path::new("/tmp")))
        .output()?;
    Ok(Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_lists_approves_and_reads_a_csr() -> TestResult {
    if kubectl_available().is_none() {
        return Ok(());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let admin = c.write_kubeconfig(&c.admin()?, dir.path(), "admin")?;
    let node = c.write_kubeconfig(&c.node("worker-1")?, dir.path(), "node")?;

    let req = pki::kubelet_serving_request("worker-1", &["worker-1"], &["10.0.0.11".parse()?])?;
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: csr-kubectl\nspec:\n  request: {}\n  signerName: kubernetes.io/kubelet-serving\n  expirationSeconds: 86400\n  usages: [digital signature, server auth]\n",
        base64::engine::general_purpose::STANDARD.encode(&req.csr_pem)
    );
    let file = dir.path().join("csr.yaml");
    std::fs::write(&file, manifest)?;
    let file = file.to_string_lossy().into_owned();

    let created = kubectl(&node, &["create", "-f", &file])?;
    assert!(created.ok, "create: {}", created.stderr);
    assert!(
        created
            .stdout
            .contains("certificatesigningrequest.certificates.k8s.io/csr-kubectl created")
    );

    let listed = kubectl(&admin, &["get", "csr"])?;
    assert!(listed.ok, "get: {}", listed.stderr);
    let header: Vec<&str> = listed
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    let row: Vec<&str> = listed
        .stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "csr-kubectl");
    assert_eq!(
        &row[2..],
        [
            "kubernetes.io/kubelet-serving",
            "system:node:worker-1",
            "24h",
            "Pending"
        ]
    );

    let denied = kubectl(&node, &["certificate", "approve", "csr-kubectl"])?;
    assert!(!denied.ok, "a node must not approve");
    assert!(
        denied.stderr.contains("Forbidden")
            && denied
                .stderr
                .contains("certificatesigningrequests/approval"),
        "{}",
        denied.stderr
    );

    let approved = kubectl(&admin, &["certificate", "approve", "csr-kubectl"])?;
    assert!(approved.ok, "approve: {}", approved.stderr);
    assert!(approved.stdout.contains("approved"), "{}", approved.stdout);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = kubectl(&admin, &["get", "csr", "csr-kubectl", "--no-headers"])?;
        if got.stdout.contains("Approved,Issued") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not issued: {} {}",
            got.stdout,
            got.stderr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cert = kubectl(
        &admin,
        &[
            "get",
            "csr",
            "csr-kubectl",
            "-o",
            "jsonpath={.status.certificate}",
        ],
    )?;
    assert!(cert.ok, "{}", cert.stderr);
    let pem = base64::engine::general_purpose::STANDARD.decode(cert.stdout.trim())?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)?;
    let parsed = block.parse_x509()?;
    assert_eq!(
        parsed.subject().to_string(),
        "O=system:nodes, CN=system:node:worker-1"
    );
    let (_, ca) = x509_parser::pem::parse_x509_pem(c.ca_pem().as_bytes())?;
    parsed.verify_signature(Some(ca.parse_x509()?.public_key()))?;

    // The exploration command from the docs works, across kinds and namespaces.
    let all = kubectl(&admin, &["get", "csr,nodes,leases", "-A"])?;
    assert!(all.ok, "{}", all.stderr);
    assert!(all.stdout.contains("csr-kubectl"));
    let can = kubectl(
        &node,
        &["auth", "can-i", "create", "certificatesigningrequests"],
    )?;
    assert_eq!(can.stdout.trim(), "yes", "{}", can.stderr);
    let cannot = kubectl(&node, &["auth", "can-i", "delete", "nodes"])?;
    assert_eq!(cannot.stdout.trim(), "no", "{}", cannot.stderr);
    c.shutdown().await;
    Ok(())
}
