//! `/usr/bin/kubectl` against the testbed: create a CSR from a file as a node, list it, approve it (forbidden for the node, allowed for the admin) and read the issued certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rubber_stamp_apiserver::{Cluster, ClusterOptions};
use rubber_stamp_testkit::csr::CsrSpec;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KUBECTL: &str = "/usr/bin/kubectl";

/// `None` when the test should be skipped (SKIP_KUBECTL=1); panics with a clear
/// message when kubectl is missing otherwise.
pub(crate) fn kubectl_available() -> Option<()> {
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

pub(crate) struct Out {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Out, std::io::Error> {
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

/// A testbed cluster and its admin's kubeconfig, written into a temporary folder that lives
/// as long as the returned handle; `None` when the kubectl tests are skipped.
pub(crate) async fn cluster_with_admin()
-> Result<Option<(Cluster, tempfile::TempDir, PathBuf)>, Box<dyn std::error::Error>> {
    if kubectl_available().is_none() {
        return Ok(None);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let admin = c.write_kubeconfig(&c.admin()?, dir.path(), "admin")?;
    Ok(Some((c, dir, admin)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_lists_approves_and_reads_a_csr() -> TestResult {
    let Some((c, dir, admin)) = cluster_with_admin().await? else {
        return Ok(());
    };
    let node = c.write_kubeconfig(&c.node("worker-1")?, dir.path(), "node")?;

    let req = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11"]).generate()?;
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

/// kube-apiserver creates the `kubernetes` Service on the first address of the service
/// range (`kubernetesservice.Controller.CreateOrUpdateMasterServiceIfNeeded`,
/// `ServiceIPRange`) and the default `kubernetes` ServiceCIDR
/// (`defaultservicecidr.Controller.sync`); `kubectl get svc -A` and
/// `kubectl get servicecidrs` print them, `kubectl create -f` of a Service gets the next
/// free ClusterIP (`Allocators.allocClusterIPs`), a taken one is refused, and a cluster
/// without the ServiceCIDR API answers 404 (a 1.30 server). (`kubectl create service`
/// sends protobuf, which the testbed decodes for CSRs, reviews, Secrets and ConfigMaps only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_the_kubernetes_service_and_service_cidr_and_creates_services() -> TestResult {
    let Some((c, dir, admin)) = cluster_with_admin().await? else {
        return Ok(());
    };

    let svc = kubectl(&admin, &["get", "svc", "-A"])?;
    assert!(svc.ok, "{}", svc.stderr);
    let row = svc
        .stdout
        .lines()
        .find(|l| l.starts_with("default"))
        .ok_or("no Service in default")?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        [
            "default",
            "kubernetes",
            "ClusterIP",
            "10.96.0.1",
            "<none>",
            "443/TCP"
        ],
        "{}",
        svc.stdout
    );
    let cidrs = kubectl(&admin, &["get", "servicecidrs"])?;
    assert!(cidrs.ok, "{}", cidrs.stderr);
    assert!(
        cidrs.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(..2) == Some(&["kubernetes", "10.96.0.0/12"][..])
        }),
        "{}",
        cidrs.stdout
    );

    let web_yaml = dir.path().join("web.yaml");
    std::fs::write(
        &web_yaml,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    )?;
    let created = kubectl(&admin, &["create", "-f", &web_yaml.display().to_string()])?;
    assert!(created.ok, "{}", created.stderr);
    let ip = kubectl(
        &admin,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )?;
    assert_eq!(ip.stdout.trim(), "10.96.0.2", "{}", ip.stderr);
    let web = kubectl(&admin, &["get", "svc", "web", "--no-headers"])?;
    assert!(web.stdout.contains("<pending>"), "{}", web.stdout);
    // A load balancer's address, as its controller sets it (status subresource).
    let patched = kubectl(
        &admin,
        &[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.50"}]}}}"#,
        ],
    )?;
    assert!(patched.ok, "{}", patched.stderr);
    let web = kubectl(&admin, &["get", "svc", "web", "--no-headers"])?;
    assert!(web.stdout.contains("192.0.2.50"), "{}", web.stdout);

    let yaml = dir.path().join("taken.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: taken\nspec:\n  clusterIP: 10.96.0.1\n  ports:\n  - port: 80\n",
    )?;
    let taken = kubectl(&admin, &["create", "-f", &yaml.display().to_string()])?;
    assert!(!taken.ok);
    assert!(
        taken.stderr.contains("provided IP is already allocated"),
        "{}",
        taken.stderr
    );
    c.shutdown().await;

    let old = Cluster::start(ClusterOptions {
        serve_service_cidrs: false,
        ..ClusterOptions::default()
    })
    .await?;
    let admin = old.write_kubeconfig(&old.admin()?, dir.path(), "old")?;
    let missing = kubectl(&admin, &["get", "servicecidrs"])?;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains("the server doesn't have a resource type \"servicecidrs\""),
        "{}",
        missing.stderr
    );
    let svc = kubectl(&admin, &["get", "svc", "kubernetes", "--no-headers"])?;
    assert!(svc.stdout.contains("10.96.0.1"), "{}", svc.stdout);
    old.shutdown().await;
    Ok(())
}

/// `kubectl create secret|configmap` send protobuf bodies (decoded as
/// k8s.io/api/core/v1's generated.proto says); the Secret's type defaults to `Opaque`
/// (`SetDefaults_Secret`), and `kubectl replace` changing it fails with "field is
/// immutable" (`ValidateSecretUpdate`), as on a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_secrets_and_config_maps_and_cannot_change_a_secret_type() -> TestResult {
    let Some((c, dir, admin)) = cluster_with_admin().await? else {
        return Ok(());
    };

    let created = kubectl(
        &admin,
        &["create", "secret", "generic", "s1", "--from-literal=a=b"],
    )?;
    assert!(created.ok, "create secret: {}", created.stderr);
    let ty = kubectl(
        &admin,
        &["get", "secret", "s1", "-o", "jsonpath={.type} {.data.a}"],
    )?;
    assert!(ty.ok, "{}", ty.stderr);
    assert_eq!(ty.stdout, "Opaque Yg==");

    let created = kubectl(&admin, &["create", "configmap", "c1", "--from-literal=k=v"])?;
    assert!(created.ok, "create configmap: {}", created.stderr);
    let data = kubectl(
        &admin,
        &["get", "configmap", "c1", "-o", "jsonpath={.data.k}"],
    )?;
    assert_eq!(data.stdout, "v", "{}", data.stderr);

    let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: c\n  tls.key: k\n";
    let file = dir.path().join("tls.yaml");
    std::fs::write(&file, manifest)?;
    let replaced = kubectl(&admin, &["replace", "-f", &file.to_string_lossy()])?;
    assert!(!replaced.ok, "a Secret's type changed");
    assert!(
        replaced.stderr.contains("field is immutable"),
        "{}",
        replaced.stderr
    );
    c.shutdown().await;
    Ok(())
}

/// `kubectl describe csr` lists the Events a controller published through
/// `events.k8s.io/v1` (it reads core `v1` Events with an `involvedObject` field selector
/// across namespaces), and `kubectl get events` in `default` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_csr_and_get_events_show_a_controllers_events() -> TestResult {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use kube::Resource as _;
    use kube::api::{Api, PostParams};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let Some((c, _dir, admin)) = cluster_with_admin().await? else {
        return Ok(());
    };
    let client = c.client(&c.admin()?).await?;
    let made = Api::<CertificateSigningRequest>::all(client.clone())
        .create(
            &PostParams::default(),
            &super::api::csr(
                "csr-described",
                "w1",
                "kubernetes.io/kubelet-serving",
                &["server auth", "digital signature"],
            )?,
        )
        .await?;
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "rubber-stamp-approver".into(),
            instance: Some("approver-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "AwaitingAttestation".into(),
        note: Some("10.0.0.7 is not attested yet".into()),
        action: "Wait".into(),
        secondary: None,
    };
    recorder.publish(&event, &made.object_ref(&())).await?;

    let described = kubectl(&admin, &["describe", "csr", "csr-described"])?;
    assert!(described.ok, "{}", described.stderr);
    let events = described
        .stdout
        .split("Events:")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        events.contains("AwaitingAttestation")
            && events.contains("10.0.0.7 is not attested yet")
            && events.contains("Warning"),
        "{}",
        described.stdout
    );

    let listed = kubectl(&admin, &["get", "events", "-n", "default"])?;
    assert!(listed.ok, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("AwaitingAttestation")
            && listed
                .stdout
                .contains("certificatesigningrequest/csr-described"),
        "{}",
        listed.stdout
    );
    c.shutdown().await;
    Ok(())
}

/// Nodes get their permissions from the Node authorizer (`NodeAuthorizer.Authorize` with
/// `bootstrappolicy.NodeRules()`), not from RBAC: the `system:node` ClusterRoleBinding has
/// no subjects, a node may create CSRs but not `certificatesigningrequests/selfnodeserver`
/// until a binding grants it (the deploy's `rubber-stamp:selfnodeserver`), and
/// `kubectl auth can-i` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_shows_the_node_authorizer_and_the_selfnodeserver_binding() -> TestResult
{
    let Some((c, dir, admin)) = cluster_with_admin().await? else {
        return Ok(());
    };
    let node = c.write_kubeconfig(&c.node("worker-1")?, dir.path(), "node")?;
    let can_i = |args: &[&str]| -> Result<String, std::io::Error> {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        Ok(kubectl(&node, &all)?.stdout.trim().to_owned())
    };
    let selfnodeserver = [
        "create",
        "certificatesigningrequests",
        "--subresource=selfnodeserver",
    ];

    let subjects = kubectl(
        &admin,
        &[
            "get",
            "clusterrolebinding",
            "system:node",
            "-o",
            "jsonpath={.subjects}",
        ],
    )?;
    assert!(subjects.ok, "{}", subjects.stderr);
    assert_eq!(subjects.stdout, "", "system:node is bound to nobody");
    assert_eq!(can_i(&["create", "certificatesigningrequests"])?, "yes");
    // AuthorizeNodeWithSelectors (1.32+): a node reads only its own Node; it may write any
    // Node as far as the authorizer goes, and NodeRestriction admission refuses another's.
    assert_eq!(can_i(&["get", "nodes/worker-1"])?, "yes");
    assert_eq!(can_i(&["get", "nodes/worker-2"])?, "no");
    assert_eq!(can_i(&["patch", "nodes/worker-1"])?, "yes");
    assert_eq!(can_i(&["patch", "nodes/worker-2"])?, "yes");
    let other: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "worker-2"}}))?;
    c.objects().create(&other)?;
    let patched = kubectl(
        &node,
        &[
            "patch",
            "node",
            "worker-2",
            "-p",
            r#"{"metadata":{"labels":{"stolen":"yes"}}}"#,
        ],
    )?;
    // kubectl reads the Node before patching it, which the node may not do for another's;
    // through the API (api.rs) the patch itself meets NodeRestriction's "is not allowed to
    // modify node".
    assert!(!patched.ok, "{}", patched.stdout);
    assert!(
        patched
            .stderr
            .contains("nodes \"worker-2\" is forbidden: User \"system:node:worker-1\" cannot get resource \"nodes\""),
        "{}",
        patched.stderr
    );
    assert_eq!(can_i(&["get", "secrets"])?, "no");
    assert_eq!(can_i(&selfnodeserver)?, "no");

    c.load_yaml(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: rubber-stamp:selfnodeserver\nrules:\n- apiGroups: [certificates.k8s.io]\n  resources: [certificatesigningrequests/selfnodeserver]\n  verbs: [create]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: rubber-stamp:selfnodeserver\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rubber-stamp:selfnodeserver}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:nodes}\n",
    )?;
    assert_eq!(can_i(&selfnodeserver)?, "yes");
    c.shutdown().await;
    Ok(())
}

/// Under the stale-reads fault, a list at a resourceVersion newer than the lagging cache
/// holds is 504 "Too large resource version" — never an answer older than asked for
/// (kubectl, whose client does not retry a 504 without Retry-After; kube-rs's does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cache_answers_a_newer_resource_version_with_504() -> TestResult {
    use k8s_openapi::api::core::v1::Node;
    let Some((c, _dir, admin)) = cluster_with_admin().await? else {
        return Ok(());
    };
    let snapshot = c.objects().serve_stale_reads::<Node>()?;
    let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"}}))?;
    c.objects().create(&node)?;
    let newer = format!("/api/v1/nodes?resourceVersion={}", snapshot + 1);
    let out = kubectl(&admin, &["get", "--raw", &newer])?;
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("Too large resource version"),
        "{}",
        out.stderr
    );
    let at_snapshot = format!("/api/v1/nodes?resourceVersion={snapshot}");
    let out = kubectl(&admin, &["get", "--raw", &at_snapshot])?;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        !out.stdout.contains("\"n1\""),
        "the snapshot predates n1: {}",
        out.stdout
    );
    c.shutdown().await;
    Ok(())
}
