//! `rubber-stamp-approver check` as a process: exit codes, JSON shape, text,
//! stdin, YAML and JSON input, unusable input (64), and the committed fixtures.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use rubber_stamp_testkit::csr::CsrSpec;
use serde_json::{Value, json};

use rubber_stamp_core::request::KeyKind;
use rubber_stamp_core::{
    AttestationSet, AttestationSnapshot, CsrInput, Decision, KUBELET_SERVING_SIGNER, NodeSet,
    Observed, Policy, decide, parse_request,
};

const BIN: &str = env!("CARGO_BIN_EXE_rubber-stamp-approver");
/// One minute after the fixtures' CSRs were created, 30 s after their attestations.
const NOW: &str = "2026-11-30T00:01:00Z";

/// `tests/fixtures/objects/` of this crate: CSR objects, attestations, Nodes.
fn objects(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/objects")
        .join(name)
}

/// The decision core's request fixtures (OpenSSL, Python `cryptography`, Go).
fn request_fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures");
    let mut files = Vec::new();
    for dir in ["openssl", "python", "go"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("fixture folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "pem") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A kubelet-shaped request for worker-1 with these SANs, signed with a fresh key.
fn kubelet_pem(dns: &[&str], ips: &[&str]) -> String {
    CsrSpec::kubelet("worker-1", dns, ips).pem()
}

fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

fn run_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let bytes = bytes.to_vec();
        // A writer thread, so a child that stops reading early (size limit)
        // or writes much cannot deadlock the test; a closed pipe is expected then.
        std::thread::spawn(move || match pipe.write_all(&bytes) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(()),
        })
    });
    let out = child.wait_with_output().expect("the binary finishes");
    if let Some(w) = writer {
        w.join().expect("writer thread").expect("write stdin");
    }
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally, not by a signal")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn failed_names(v: &Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The Service and ServiceCIDR lists of the committed world, as owned paths.
fn service_files() -> (PathBuf, PathBuf) {
    (objects("services.json"), objects("servicecidrs.json"))
}

/// The committed world: both workers attested 30 s after the CSR, Nodes, Services and
/// ServiceCIDRs given.
fn world_args<'a>(csr: &'a str, attestations: &'a str, nodes: &'a str) -> Vec<&'a str> {
    // Leaked once per call: the paths live for the test process anyway.
    let (services, cidrs) = service_files();
    let services: &'static str = Box::leak(services.display().to_string().into_boxed_str());
    let cidrs: &'static str = Box::leak(cidrs.display().to_string().into_boxed_str());
    vec![
        "check",
        "-f",
        csr,
        "--attestations",
        attestations,
        "--nodes",
        nodes,
        "--now",
        NOW,
        "-o",
        "json",
        "--services",
        services,
        "--service-cidrs",
        cidrs,
    ]
}

#[test]
fn kubectl_yaml_csr_is_approved_with_every_check_passed() {
    let (csr, att, nodes) = (
        objects("csr-ecdsa.yaml"),
        objects("attestations.json"),
        objects("nodes.json"),
    );
    let out = run(&world_args(path(&csr), path(&att), path(&nodes)));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["decision"], "approve");
    assert_eq!(v["csr"], "csr-8vh2k");
    assert_eq!(v["node"], "worker-1");
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 14);
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
        assert!(c["name"].is_string() && c["detail"].is_string(), "{c}");
    }
    assert_eq!(
        v["supportingAttestation"]["receivedAt"],
        "2026-11-30T00:00:30Z"
    );
}

#[test]
fn kubectl_json_rsa_csr_with_key_encipherment_is_approved() {
    let out = run(&world_args(
        path(&objects("csr-rsa.json")),
        path(&objects("attestations.json")),
        path(&objects("nodes.json")),
    ));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let v = json_of(&out);
    let parse = &v["checks"][1];
    assert!(
        parse["detail"]
            .as_str()
            .expect("detail")
            .contains("RSA 2048-bit")
    );
}

#[test]
fn another_nodes_ip_is_denied_or_pending_by_timing_and_deny_mode() {
    let csr = objects("csr-other-node-ip.yaml");
    let nodes = objects("nodes.json");
    // Facts received after the CSR: deny (1).
    let out = run(&world_args(
        path(&csr),
        path(&objects("attestations.json")),
        path(&nodes),
    ));
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let v = json_of(&out);
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "AddressNotAttested");
    assert_eq!(
        failed_names(&v),
        [
            "ip-sans-attested",
            "unique-among-attestations",
            "unique-among-nodes"
        ]
    );
    // Facts from before the CSR (still fresh): pending (2), never a denial.
    let before = objects("attestations-before-csr.json");
    let mut args = world_args(path(&csr), path(&before), path(&nodes));
    args[8] = "2026-11-30T00:00:30Z";
    let out = run(&args);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    let v = json_of(&out);
    let ip_check = &v["checks"][8];
    assert_eq!(ip_check["name"], "ip-sans-attested");
    assert_eq!(ip_check["reason"], "UnattestedAddress");
    // --deny never: pending (2), marked as a would-be denial.
    let after = objects("attestations.json");
    let mut args = world_args(path(&csr), path(&after), path(&nodes));
    args.extend(["--deny", "never"]);
    let out = run(&args);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert_eq!(json_of(&out)["checks"][8]["wouldDeny"], true);
}

#[test]
fn without_attestations_it_is_pending_and_text_says_why() {
    let out = run(&[
        "check",
        "-f",
        path(&objects("csr-ecdsa.yaml")),
        "--now",
        NOW,
    ]);
    assert_eq!(code(&out), 2);
    let text = stdout(&out);
    assert!(
        text.starts_with("CSR csr-8vh2k for node worker-1: PENDING (AwaitingAttestation)"),
        "{text}"
    );
    for name in [
        "scope",
        "attestation-fresh",
        "unique-among-nodes",
        "node-object",
        "summary:",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("skip"), "{text}");
}

#[test]
fn without_nodes_the_node_checks_are_skipped_with_passed_null() {
    let out = run(&[
        "check",
        "-f",
        path(&objects("csr-ecdsa.yaml")),
        "--attestations",
        path(&objects("attestations.json")),
        "--now",
        NOW,
        "-o",
        "json",
    ]);
    assert_eq!(code(&out), 0);
    let v = json_of(&out);
    let skipped: Vec<&Value> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "skipped")
        .collect();
    let names: Vec<&str> = skipped.iter().filter_map(|c| c["name"].as_str()).collect();
    // Without --services either, check 9's Service rule is not evaluated: skipped too.
    assert_eq!(
        names,
        ["ip-sans-attested", "unique-among-nodes", "node-object"]
    );
    assert!(skipped.iter().all(|c| c["passed"].is_null()));
    assert!(
        skipped[0]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("not evaluated against the cluster's Services")),
        "{}",
        skipped[0]
    );
}

#[test]
fn a_services_address_is_denied_with_the_service_named_and_skipped_without_services() {
    let dir = tempfile::tempdir().expect("temp dir");
    // worker-1's agent reports 10.96.0.1 (the `kubernetes` Service) on eth0.
    let mut snapshot: Value =
        serde_json::from_str(&std::fs::read_to_string(objects("attestations.json")).expect("read"))
            .expect("JSON");
    for a in snapshot["attestations"].as_array_mut().expect("list") {
        if a["nodeName"] == "worker-1" {
            for iface in a["interfaces"].as_array_mut().expect("interfaces") {
                if iface["name"] == "eth0" {
                    iface["addresses"]
                        .as_array_mut()
                        .expect("addresses")
                        .push(json!("10.96.0.1/32"));
                }
            }
        }
    }
    let att = dir.path().join("attestations.json");
    std::fs::write(&att, snapshot.to_string()).expect("write attestations");
    let pem_text = kubelet_pem(&["worker-1"], &["10.0.0.11", "10.96.0.1"]);
    let csr = dir.path().join("csr.json");
    let obj = csr_object(pem_text.as_bytes(), &["digital signature", "server auth"]);
    std::fs::write(&csr, obj.to_string()).expect("write CSR");
    let nodes = objects("nodes.json");
    let out = run(&world_args(path(&csr), path(&att), path(&nodes)));
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["reason"], "AddressNotAllowed");
    let ip_check = &v["checks"][8];
    assert_eq!(ip_check["name"], "ip-sans-attested");
    assert!(
        ip_check["detail"].as_str().is_some_and(|d| d
            .contains("10.96.0.1 is a cluster IP of Service default/kubernetes (spec.clusterIPs)")),
        "{ip_check}"
    );
    // Without the Service inputs the rule is not evaluated, and says so.
    let out = run(&[
        "check",
        "-f",
        path(&csr),
        "--attestations",
        path(&att),
        "--nodes",
        path(&nodes),
        "--now",
        NOW,
        "-o",
        "json",
    ]);
    let v = json_of(&out);
    assert_eq!(v["checks"][8]["status"], "skipped", "{}", v["checks"][8]);
    // The ServiceCIDR list alone denies it too (10.96.0.0/12).
    let (_, cidrs) = service_files();
    let mut args = vec![
        "check",
        "-f",
        path(&csr),
        "--attestations",
        path(&att),
        "--nodes",
        path(&nodes),
        "--now",
        NOW,
        "-o",
        "json",
    ];
    args.extend(["--service-cidrs", path(&cidrs)]);
    let out = run(&args);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        json_of(&out)["checks"][8]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("ServiceCIDR kubernetes")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_approved_csr_is_ignored() {
    let out = run(&[
        "check",
        "-f",
        path(&objects("csr-approved.yaml")),
        "-o",
        "json",
    ]);
    assert_eq!(code(&out), 3);
    assert_eq!(json_of(&out)["decision"], "ignore");
}

#[test]
fn stdin_takes_yaml_and_json() {
    let yaml = std::fs::read(objects("csr-ecdsa.yaml")).expect("fixture");
    let att = objects("attestations.json");
    let args = [
        "check",
        "-f",
        "-",
        "--attestations",
        path(&att),
        "--now",
        NOW,
        "-o",
        "json",
    ];
    let out = run_with_stdin(&args, Some(&yaml));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json = std::fs::read(objects("csr-rsa.json")).expect("fixture");
    let out = run_with_stdin(&args, Some(&json));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json_of(&out)["csr"], "csr-q7x4d");
}

#[test]
fn a_policy_file_changes_the_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "deniedCidrs: [10.0.0.0/24]\n").expect("write policy");
    let (csr, att, nodes) = (
        objects("csr-ecdsa.yaml"),
        objects("attestations.json"),
        objects("nodes.json"),
    );
    let mut args = world_args(path(&csr), path(&att), path(&nodes));
    args.extend(["--policy", path(&policy)]);
    let out = run(&args);
    assert_eq!(code(&out), 1);
    assert_eq!(json_of(&out)["reason"], "AddressNotAllowed");
}

/// A kubectl-shaped CSR object around `pem` text, as JSON.
fn csr_object(pem_text: &[u8], usages: &[&str]) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "csr-fixture", "creationTimestamp": "2026-11-30T00:00:00Z"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem_text),
            "signerName": "kubernetes.io/kubelet-serving",
            "usages": usages,
            "username": "system:node:worker-1",
            "groups": ["system:nodes", "system:authenticated"],
        },
        "status": {},
    })
}

/// `check` agrees with the core: for every request the other implementations made, its
/// exit code and JSON are the core's own verdict on the same inputs (the core's tests hold
/// what that verdict must be).
#[test]
fn every_fixture_from_other_implementations_gets_the_cores_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (att, nodes) = (objects("attestations.json"), objects("nodes.json"));
    let snapshot: AttestationSnapshot =
        serde_json::from_slice(&std::fs::read(&att).expect("attestations")).expect("snapshot");
    let attestations = AttestationSet::from(snapshot);
    // `kubectl get nodes -o json` prints a `List` of Nodes.
    let node_list: Value =
        serde_json::from_slice(&std::fs::read(&nodes).expect("nodes")).expect("Node list");
    let node_set: NodeSet = node_list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let node: k8s_openapi::api::core::v1::Node =
                serde_json::from_value(n.clone()).expect("Node");
            rubber_stamp_approver::k8s::node_record(&node)
        })
        .collect();
    let now: jiff::Timestamp = NOW.parse().expect("time");
    let policy = Policy::default();
    let files = request_fixtures();
    assert!(files.len() >= 20, "only {} fixtures", files.len());
    for fixture in files {
        let pem_text = std::fs::read(&fixture).expect("fixture");
        let rsa = matches!(
            parse_request(&pem_text, &policy).map(|r| r.key().clone()),
            Ok(KeyKind::Rsa(_))
        );
        let usages: &[&str] = if rsa {
            &["digital signature", "key encipherment", "server auth"]
        } else {
            &["digital signature", "server auth"]
        };
        let input = CsrInput {
            name: "csr-fixture".to_owned(),
            signer_name: KUBELET_SERVING_SIGNER.to_owned(),
            request: pem_text.clone(),
            usages: usages.iter().map(|u| (*u).to_owned()).collect(),
            username: "system:node:worker-1".to_owned(),
            groups: vec!["system:nodes".to_owned(), "system:authenticated".to_owned()],
            created_at: Some("2026-11-30T00:00:00Z".parse().expect("time")),
            ..CsrInput::default()
        };
        let observed = Observed {
            attestations: &attestations,
            nodes: Some(&node_set),
            services: None,
            access_review: None,
            ownership: None,
        };
        let core = decide(&input, observed, &policy, now);
        let file = dir.path().join("csr.json");
        std::fs::write(&file, csr_object(&pem_text, usages).to_string()).expect("write CSR");
        let out = run(&world_args(path(&file), path(&att), path(&nodes)));
        let want = match core.decision() {
            Decision::Approve => 0,
            Decision::Deny => 1,
            Decision::Pending => 2,
            Decision::Ignore => 3,
        };
        let name = fixture.display();
        assert_eq!(code(&out), want, "{name}: {}{}", stdout(&out), stderr(&out));
        let v = json_of(&out);
        assert_eq!(v["decision"], core.decision().as_str(), "{name}");
        let core_failed: Vec<&str> = core.failed().map(|c| c.name().as_str()).collect();
        assert_eq!(failed_names(&v), core_failed, "{name}");
    }
}

#[test]
fn garbage_in_a_readable_csr_object_is_a_denial_not_an_input_error() {
    for request in [
        &b"hello"[..],
        &[0xff, 0xfe, 0x00][..],
        b"-----BEGIN CERTIFICATE REQUEST-----\n",
    ] {
        let obj = csr_object(request, &["digital signature", "server auth"]);
        let out = run_with_stdin(
            &["check", "-f", "-", "-o", "json"],
            Some(obj.to_string().as_bytes()),
        );
        assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
        assert_eq!(failed_names(&json_of(&out)), ["parse"]);
    }
}

#[test]
fn unusable_input_and_bad_usage_exit_64_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let csr = objects("csr-ecdsa.yaml");
    let garbage = write("garbage.yaml", "spec: [unclosed");
    let garbage_json = write("garbage.json", "{{{ not json");
    let empty = write("empty.yaml", "");
    let list = write("list.yaml", "apiVersion: v1\nkind: List\nitems: []\n");
    let not_b64 = write(
        "bad.json",
        r#"{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{"name":"x"},"spec":{"request":"***","signerName":"kubernetes.io/kubelet-serving"}}"#,
    );
    let no_kind = write("nokind.yaml", "spec:\n  signerName: x\n  request: aGk=\n");
    let bad_policy = write("policy.yaml", "maxSans: 0\n");
    let typo_policy = write("typo.yaml", "peerBnding: false\n");
    let binary = write("binary", "\u{0}\u{1}\u{2}");
    let nodes_as_csr = objects("nodes.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["check", "-f", "/nonexistent/csr.yaml"], "cannot read"),
        (vec!["check", "-f", path(&garbage)], "YAML"),
        (vec!["check", "-f", path(&garbage_json)], "JSON"),
        (vec!["check", "-f", path(&empty)], "empty"),
        (vec!["check", "-f", path(&list)], "List"),
        (
            vec!["check", "-f", path(&not_b64)],
            "CertificateSigningRequest",
        ),
        (vec!["check", "-f", path(&no_kind)], "kind"),
        (
            vec!["check", "-f", path(&binary)],
            "CertificateSigningRequest",
        ),
        (vec!["check", "-f", path(&nodes_as_csr)], "List"),
        (
            vec!["check", "-f", path(&csr), "--policy", path(&bad_policy)],
            "maxSans",
        ),
        (
            vec!["check", "-f", path(&csr), "--policy", path(&typo_policy)],
            "unknown field",
        ),
        (
            vec!["check", "-f", path(&csr), "--attestations", path(&garbage)],
            "attestation",
        ),
        (
            vec!["check", "-f", path(&csr), "--nodes", path(&csr)],
            "Node list",
        ),
        (
            vec!["check", "-f", path(&csr), "--now", "yesterday"],
            "RFC 3339",
        ),
        (vec!["check", "-f", path(&csr), "-o", "xml"], "xml"),
        (
            vec!["check", "-f", path(&csr), "--deny", "sometimes"],
            "sometimes",
        ),
        (vec!["check"], "--filename"),
        (vec!["check", "--bogus"], "--bogus"),
        (vec![], "Usage"),
        (vec!["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let out = run(&args);
        assert_eq!(code(&out), 64, "{args:?}: {}{}", stdout(&out), stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: {:?} lacks {needle:?}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
    // A CSR too large to be a CSR.
    let big = "a".repeat(5 * 1024 * 1024);
    let out = run_with_stdin(&["check", "-f", "-"], Some(big.as_bytes()));
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["check", "--help"]] {
        let out = run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty());
    }
    let out = run(&["check", "--help"]);
    assert!(stdout(&out).contains("--attestations"));
}
