//! `kubectl rubber-stamp`, through kubectl's own plugin discovery (`/usr/bin/kubectl` with
//! the built `kubectl-rubber_stamp` on `PATH`), against the testbed cluster with an approver
//! replica (its controller and its secure admin port, as deployed) and scripted agents:
//! `explain` on a pending, a denied and an approved CSR (text and JSON, the approver found
//! from the Lease and its Pod, its certificate verified against the published CA bundle,
//! the user's token accepted by its TokenReview and SubjectAccessReview), `status`; and
//! the refusals: a user who may not read CSRs, one who may not read the attestations, an
//! approver that cannot be found.
//!
//! `SKIP_KUBECTL=1` skips these tests, as the testbed's kubectl tests.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodIP, PodStatus};
use kube::ResourceExt as _;
use rubber_stamp_apiserver::UserInfo;
use rubber_stamp_approver::admin::auth::{AdminAuthConfig, AdminSecurity};
use rubber_stamp_approver::controller::{ControllerConfig, Leadership};
use rubber_stamp_approver::runtime::Listeners;
use rubber_stamp_e2e::channel::{TestApprover, approver_config};
use rubber_stamp_e2e::controller::{
    APPROVER_NAMESPACE, ControllerBed, conditions, eventually, is_approved, wait_for_csr,
};
use rubber_stamp_testkit::channel::SERVER_NAME;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KUBECTL: &str = "/usr/bin/kubectl";
const PLUGIN: &str = "kubectl-rubber_stamp";
/// Generous bound for things that take milliseconds when they work.
const WITHIN: Duration = Duration::from_secs(10);
/// Longest one kubectl run may take (the plugin bounds each request by 10 s).
const KUBECTL_WITHIN: Duration = Duration::from_secs(60);
/// The replica's name: the Lease's holder and its Pod's name.
const REPLICA: &str = "approver-0";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

/// `false` (and a line saying so) when `SKIP_KUBECTL=1`; a clear panic without kubectl.
fn kubectl_available() -> bool {
    if std::env::var("SKIP_KUBECTL").as_deref() == Ok("1") {
        eprintln!("SKIP_KUBECTL=1: skipping the kubectl plugin tests");
        return false;
    }
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: install kubectl (or set SKIP_KUBECTL=1 to skip the kubectl tests)"
    );
    true
}

// --- the plugin binary --------------------------------------------------------------------

/// The newest modification time under `path`.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The built plugin, next to this test's executable (`target/<profile>/`): used when newer
/// than the sources it is built from, else built with cargo in the same profile and target
/// directory (as the kit's `Binaries::find` does for the other binaries).
fn plugin_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or("no executable directory")?.to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let binary = dir.join(PLUGIN);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let sources = [
        "approver/src",
        "approver/Cargo.toml",
        "core/src",
        "proto",
        "listen",
    ]
    .iter()
    .filter_map(|s| newest(&workspace.join(s)))
    .max();
    if built.is_some() && built >= sources {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let target = dir.parent().ok_or("no target directory")?;
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target)
        .args(["-p", "rubber-stamp-approver", "--bin", PLUGIN]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    // What cargo sets for the test must not reach the nested build (ring's build script
    // watches some and would rebuild).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_")
            && !matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            && !key.starts_with("CARGO_BUILD_")
            || key == "OUT_DIR"
        {
            build.env_remove(key.as_ref());
        }
    }
    let status = build.stdin(Stdio::null()).stdout(Stdio::null()).status()?;
    if !status.success() {
        return Err(format!("building {PLUGIN} failed ({status})").into());
    }
    Ok(binary)
}

// --- kubectl ------------------------------------------------------------------------------

/// What one kubectl run printed and its exit code.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Asserts the run failed as the plugin fails (exit 64, as check's usage error), with
    /// every one of `said` in its error output.
    fn failed_saying(&self, said: &[&str]) {
        assert_eq!(self.code, Some(64), "{self:?}");
        for words in said {
            assert!(self.stderr.contains(words), "{words:?} in {}", self.stderr);
        }
    }

    fn json(&self) -> Result<Value, Box<dyn std::error::Error>> {
        serde_json::from_str(&self.stdout).map_err(|e| format!("not JSON ({e}): {self:?}").into())
    }
}

/// `PATH` with only the plugin (through a link in a directory of its own), `HOME` for
/// kubectl's cache.
#[derive(Debug)]
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn install() -> Result<Self, Box<dyn std::error::Error>> {
        let binary = plugin_binary()?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("bin"))?;
        std::os::unix::fs::symlink(&binary, dir.path().join("bin").join(PLUGIN))?;
        Ok(Self { dir })
    }

    /// `kubectl ARGS` with `KUBECONFIG` set to `kubeconfig` when given (else unset).
    async fn kubectl(
        &self,
        kubeconfig: Option<&Path>,
        args: &[&str],
    ) -> Result<Ran, Box<dyn std::error::Error>> {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
        );
        let mut command = tokio::process::Command::new(KUBECTL);
        command
            .args(args.iter().filter(|a| **a != NO_OPT_IN))
            // The test users authenticate with tokens the plugin may pass on (an operator
            // opts in the same way; the `NO_OPT_IN` case shows the default).
            .args(
                (args.first() == Some(&"rubber-stamp") && !args.contains(&NO_OPT_IN))
                    .then_some("--send-kubeconfig-token"),
            )
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let out = tokio::time::timeout(KUBECTL_WITHIN, command.output())
            .await
            .map_err(|_| format!("kubectl {args:?} ran longer than {KUBECTL_WITHIN:?}"))??;
        Ok(Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

// --- the cluster --------------------------------------------------------------------------

/// An approver replica with its controller and the admin port as deployed (HTTPS with the
/// attestation port's certificate, TokenReview and SubjectAccessReview), its Pod (the
/// Lease holder's, with the admin port named as in `deploy/`), and the CA bundle ConfigMap
/// the approver publishes.
struct Approver {
    approver: TestApprover,
}

async fn approver(bed: &ControllerBed) -> Result<Approver, Box<dyn std::error::Error>> {
    let config: ControllerConfig = bed.controller_config(REPLICA);
    let mut run = approver_config(&bed.pki);
    run.store.max_age = config.attestation_max_age();
    run.grpc.replica = REPLICA.to_owned();
    run.admin = AdminSecurity::Kubernetes(AdminAuthConfig::default());
    let listeners = Listeners::bind(&run.listen).await?;
    let client = bed.approver_client(None).await?;
    let mut plugged = None;
    let approver = TestApprover::start_with(run, listeners, Some(client.clone()), |runtime| {
        plugged = Some(runtime.plug_controller(client, config));
    })
    .await?;
    let leadership: Leadership = plugged.ok_or("the controller was not plugged in")??;
    eventually("the replica to act", WITHIN, || leadership.may_act()).await?;

    let admin_port = approver.addrs.admin.port();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": REPLICA, "namespace": APPROVER_NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "rubber-stamp-approver"}},
        "spec": {
            "serviceAccountName": "rubber-stamp-approver",
            "containers": [{
                "name": "approver",
                "image": "registry.invalid/kubelet-rubber-stamp/rubber-stamp-approver:0.1.0",
                "args": ["run"],
                "ports": [
                    {"name": "attestation", "containerPort": approver.addrs.grpc.port()},
                    {"name": "metrics", "containerPort": admin_port}
                ]
            }]
        }
    }))?;
    let mut pod = bed.cluster.objects().create(&pod)?;
    pod.status = Some(PodStatus {
        phase: Some("Running".to_owned()),
        pod_ip: Some("127.0.0.1".to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: "127.0.0.1".to_owned(),
        }]),
        ..PodStatus::default()
    });
    bed.cluster.objects().update(&pod)?;
    let bundle: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "rubber-stamp-ca", "namespace": APPROVER_NAMESPACE},
        "data": {"ca.crt": bed.pki.serving.cert_pem()}
    }))?;
    bed.cluster.objects().create(&bundle)?;
    Ok(Approver { approver })
}

/// What `explain` and `status` read, as a ClusterRole and a Role in the approver's
/// namespace (docs/operations.md lists the same), bound to `user`; with `attestations`,
/// also `rubber-stamp:attestation-reader` (the shipped role for the admin port's
/// `/attestations`).
fn grant(
    bed: &ControllerBed,
    user: &str,
    attestations: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    bed.cluster.load_yaml(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: rubber-stamp-explain
rules:
  - apiGroups: [certificates.k8s.io]
    resources: [certificatesigningrequests]
    verbs: [get, list]
  - apiGroups: ['']
    resources: [nodes, services]
    verbs: [list]
  - apiGroups: [networking.k8s.io]
    resources: [servicecidrs]
    verbs: [list]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [list]
  - apiGroups: [authorization.k8s.io]
    resources: [subjectaccessreviews]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: rubber-stamp-explain
  namespace: {APPROVER_NAMESPACE}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get]
  - apiGroups: ['']
    resources: [pods, configmaps]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: rubber-stamp-explain-{user}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rubber-stamp-explain}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: rubber-stamp-explain-{user}
  namespace: {APPROVER_NAMESPACE}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: rubber-stamp-explain}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"
    ))?;
    if attestations {
        bed.cluster.load_yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: rubber-stamp-attestation-reader-{user}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'rubber-stamp:attestation-reader'}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"
        ))?;
    }
    Ok(())
}

/// A user with a static bearer token (the approver reviews it as it reviews any) and its
/// kubeconfig.
fn user(
    bed: &ControllerBed,
    dir: &Path,
    name: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let token = format!("{name}-token-0123456789abcdef");
    let creds = bed.cluster.add_token(&token, UserInfo::new(name, &[]));
    Ok(bed.cluster.write_kubeconfig(&creds, dir, name)?)
}

/// Waits until the replica sees every Node (as a kubelet registers its Node before it
/// asks, so what the controller says does not depend on which watch came first).
async fn nodes_seen(bed: &ControllerBed, approver: &Approver) -> TestResult {
    let nodes = bed
        .cluster
        .objects()
        .list::<k8s_openapi::api::core::v1::Node>(None)?
        .len();
    let metrics = approver.approver.metrics().controller.clone();
    eventually("the replica to see every Node", WITHIN, || {
        usize::try_from(metrics.nodes.get()) == Ok(nodes)
    })
    .await?;
    Ok(())
}

fn condition_reason(csr: &CertificateSigningRequest, type_: &str) -> Option<String> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| c.reason.clone())
}

/// The arguments every plugin run in these tests adds: the testbed's serving certificate
/// names `localhost`, not the approver Service's names a real one carries.
const SERVER: &str = "--approver-server-name";
/// Not a flag of the plugin: a marker for [`Plugin::kubectl`] to leave out
/// `--send-kubeconfig-token`, removed before kubectl runs.
const NO_OPT_IN: &str = "--no-opt-in-marker";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rubber_stamp_explains_pending_denied_and_approved_csrs_from_the_live_cluster()
-> TestResult {
    if !kubectl_available() {
        return Ok(());
    }
    let plugin = Plugin::install()?;
    let bed = ControllerBed::start().await?;
    let approver = approver(&bed).await?;
    let dir = tempfile::tempdir()?;
    let operator = user(&bed, dir.path(), "operator")?;
    grant(&bed, "operator", true)?;

    // worker-1 attests and is approved; rogue-1 asks for the `kubernetes` Service's
    // address and is denied; lonely has no agent and waits.
    bed.add_node("worker-1", &[ip(11)])?;
    bed.add_node("rogue-1", &[ip(60)])?;
    bed.add_node("lonely", &[ip(70)])?;
    nodes_seen(&bed, &approver).await?;
    let replica_addr = approver.approver.addrs.grpc;
    let mut agents = Vec::new();
    for (node, addresses) in [("worker-1", vec![ip(11)]), ("rogue-1", vec![ip(60)])] {
        let prefixed: Vec<(IpAddr, u32)> = addresses.iter().map(|a| (*a, 24)).collect();
        let agent = rubber_stamp_e2e::controller::ScriptedAgent::connect(
            &bed.pki,
            node,
            &[replica_addr],
            &prefixed,
        )
        .await?;
        agent.report().await?;
        agents.push(agent);
    }
    let store = approver.approver.store().clone();
    eventually("both attestations", WITHIN, || {
        use rubber_stamp_core::AttestationLookup as _;
        store.attestation("worker-1").is_some() && store.attestation("rogue-1").is_some()
    })
    .await?;

    let approved = bed.create_csr("worker-1", &[ip(11)]).await?.name_any();
    let service_ip = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1));
    let denied = bed
        .create_csr("rogue-1", &[ip(60), service_ip])
        .await?
        .name_any();
    let pending = bed.create_csr("lonely", &[ip(70)]).await?.name_any();
    wait_for_csr(&bed, &approved, WITHIN, is_approved).await?;
    let csr = wait_for_csr(&bed, &denied, WITHIN, |c| !conditions(c).is_empty()).await?;
    assert_eq!(
        condition_reason(&csr, "Denied").as_deref(),
        Some("AddressNotAllowed")
    );
    for (name, reason) in [
        (&approved, "Approved"),
        (&denied, "Denied"),
        (&pending, "AwaitingAttestation"),
    ] {
        eventually(&format!("the {reason} Event"), WITHIN, || {
            bed.event_reasons(name)
                .is_ok_and(|r| r.iter().any(|x| x == reason))
        })
        .await?;
    }

    // Pending, as text: check's report, then where the facts came from, then what the
    // approver said. KUBECONFIG is how kubectl users usually point at a cluster.
    let ran = plugin
        .kubectl(
            Some(&operator),
            &["rubber-stamp", "explain", &pending, SERVER, SERVER_NAME],
        )
        .await?;
    assert_eq!(ran.code, Some(2), "pending is exit code 2: {ran:?}");
    let admin = approver.approver.addrs.admin.port();
    for line in [
        format!("CSR {pending} for node lonely: PENDING (AwaitingAttestation)"),
        format!(
            "approver: {REPLICA} holds Lease rubber-stamp/rubber-stamp-approver; attestations of 2 nodes from https://127.0.0.1:{admin}/attestations (discovered)"
        ),
        "policy: built-in default (the leader runs without --policy)".to_owned(),
        "conditions: none".to_owned(),
        "events by rubber-stamp-approver, oldest first:".to_owned(),
    ] {
        assert!(
            ran.stdout.lines().any(|l| l == line),
            "{line:?} not in:\n{}\n{}",
            ran.stdout,
            ran.stderr
        );
    }
    assert!(
        ran.stdout.lines().any(|l| l.contains("AwaitingAttestation")
            && l.contains(REPLICA)
            && l.contains("Normal")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.contains("attestation-fresh") && l.contains("no attestation")),
        "check 7 says why: {}",
        ran.stdout
    );

    // The same as JSON, with kubectl's own flags after the plugin's name.
    let ran = plugin
        .kubectl(
            None,
            &[
                "rubber-stamp",
                "explain",
                &pending,
                "--kubeconfig",
                &operator.to_string_lossy(),
                "-n",
                APPROVER_NAMESPACE,
                SERVER,
                SERVER_NAME,
                "-o",
                "json",
            ],
        )
        .await?;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    let json = ran.json()?;
    assert_eq!(json["csr"], pending.as_str());
    assert_eq!(json["decision"], "pending");
    assert_eq!(json["reason"], "AwaitingAttestation");
    assert_eq!(json["node"], "lonely");
    assert_eq!(json["approver"]["leader"], REPLICA);
    assert_eq!(json["approver"]["foundBy"], "discovered");
    assert_eq!(json["approver"]["attestations"], 2);
    assert_eq!(json["events"][0]["reason"], "AwaitingAttestation");
    assert_eq!(json["events"][0]["reportingInstance"], REPLICA);
    assert!(
        json["checks"].as_array().is_some_and(|c| !c.is_empty()),
        "{json}"
    );

    // Denied and approved: final, so out of the approver's scope now (exit 3); their
    // conditions and Events say what it did and why.
    for (name, condition, reason, event) in [
        (&denied, "Denied", "AddressNotAllowed", "Denied"),
        (&approved, "Approved", "AutoApproved", "Approved"),
    ] {
        let ran = plugin
            .kubectl(
                Some(&operator),
                &[
                    "rubber-stamp",
                    "explain",
                    name,
                    SERVER,
                    SERVER_NAME,
                    "-o",
                    "json",
                ],
            )
            .await?;
        assert_eq!(ran.code, Some(3), "{name}: {ran:?}");
        let json = ran.json()?;
        assert_eq!(json["decision"], "ignore", "{json}");
        assert_eq!(json["conditions"][0]["type"], condition, "{json}");
        assert_eq!(json["conditions"][0]["reason"], reason, "{json}");
        let events: Vec<&str> = json["events"]
            .as_array()
            .ok_or("events")?
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert!(events.contains(&event), "{events:?}");
    }
    let ran = plugin
        .kubectl(
            Some(&operator),
            &["rubber-stamp", "explain", &denied, SERVER, SERVER_NAME],
        )
        .await?;
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("  Denied  AddressNotAllowed  ")
                && l.contains("10.96.0.1 is a cluster IP of Service default/kubernetes")),
        "{}",
        ran.stdout
    );

    // status: lonely has no attestation, and its CSR waits for one.
    let ran = plugin
        .kubectl(
            Some(&operator),
            &["rubber-stamp", "status", SERVER, SERVER_NAME, "-o", "json"],
        )
        .await?;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let json = ran.json()?;
    assert_eq!(json["nodes"]["total"], 3, "{json}");
    assert_eq!(json["nodes"]["attested"], 2, "{json}");
    assert_eq!(json["nodes"]["unattested"][0]["name"], "lonely", "{json}");
    let pending_csrs = json["pending"].as_array().ok_or("pending")?;
    assert_eq!(pending_csrs.len(), 1, "{json}");
    assert_eq!(pending_csrs[0]["csr"], pending.as_str());
    assert_eq!(pending_csrs[0]["reason"], "AwaitingAttestation");
    assert_eq!(pending_csrs[0]["approverSaid"], "AwaitingAttestation");
    let ran = plugin
        .kubectl(
            Some(&operator),
            &["rubber-stamp", "status", SERVER, SERVER_NAME],
        )
        .await?;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .lines()
            .any(|l| l == "nodes: 2 of 3 with a fresh attestation; without one:"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with(&format!("  {pending}")) && l.contains("AwaitingAttestation")),
        "{}",
        ran.stdout
    );

    for agent in agents {
        agent.stop().await;
    }
    approver.approver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_not_read_csrs_or_attestations_cannot_explain_and_is_told_why() -> TestResult {
    if !kubectl_available() {
        return Ok(());
    }
    let plugin = Plugin::install()?;
    let bed = ControllerBed::start().await?;
    let approver = approver(&bed).await?;
    let dir = tempfile::tempdir()?;
    bed.add_node("worker-1", &[ip(11)])?;
    nodes_seen(&bed, &approver).await?;
    let name = bed.create_csr("worker-1", &[ip(11)]).await?.name_any();

    // No permission at all: the API server's 403 on the CSR, exit 64 as check's usage error.
    let nobody = user(&bed, dir.path(), "nobody")?;
    let ran = plugin
        .kubectl(
            Some(&nobody),
            &["rubber-stamp", "explain", &name, SERVER, SERVER_NAME],
        )
        .await?;
    ran.failed_saying(&[
        &format!("you may not get certificatesigningrequests.certificates.k8s.io/{name}"),
        "forbidden",
    ]);
    assert!(ran.stdout.is_empty(), "{ran:?}");
    let ran = plugin
        .kubectl(
            Some(&nobody),
            &["rubber-stamp", "status", SERVER, SERVER_NAME],
        )
        .await?;
    ran.failed_saying(&["you may not list certificatesigningrequests"]);

    // Every read but the attestations: the approver's own 403, naming the path.
    let reader = user(&bed, dir.path(), "reader")?;
    grant(&bed, "reader", false)?;
    let ran = plugin
        .kubectl(
            Some(&reader),
            &["rubber-stamp", "explain", &name, SERVER, SERVER_NAME],
        )
        .await?;
    ran.failed_saying(&["403 Forbidden", "/attestations"]);

    // The admin port's certificate must carry the name asked for: the default, the
    // approver Service's name, is not on the testbed's certificate.
    let ran = plugin
        .kubectl(Some(&reader), &["rubber-stamp", "explain", &name])
        .await?;
    ran.failed_saying(&[
        "TLS handshake failed",
        "rubber-stamp-approver.rubber-stamp.svc",
    ]);

    // Without --token or --send-kubeconfig-token the kubeconfig's credential stays home:
    // the admin port refuses the anonymous request and the error says how to opt in.
    let ran = plugin
        .kubectl(
            Some(&reader),
            &[
                "rubber-stamp",
                "explain",
                &name,
                SERVER,
                SERVER_NAME,
                NO_OPT_IN,
            ],
        )
        .await?;
    ran.failed_saying(&["401", "--send-kubeconfig-token"]);

    // No Lease of that name: the error says how to name the approver instead.
    let ran = plugin
        .kubectl(
            Some(&reader),
            &[
                "rubber-stamp",
                "explain",
                &name,
                "--lease-name",
                "nobody-holds-this",
            ],
        )
        .await?;
    ran.failed_saying(&["cannot find the approver's admin port", "--approver-url"]);
    // Usage errors are 64 too, not clap's 2 (pending).
    let ran = plugin
        .kubectl(Some(&reader), &["rubber-stamp", "explain"])
        .await?;
    ran.failed_saying(&[]);

    approver.approver.stop().await?;
    Ok(())
}
