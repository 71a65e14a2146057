//! `deploy/` as an operator renders it (`kubectl kustomize`): the approver's RBAC grants
//! exactly what the issue lists and the code uses, nothing binds the agent, the rendered
//! RBAC becomes live rules in the testbed cluster, the workloads are locked down and name
//! the ports, health services and flags the binaries really have, the overlays differ from
//! the base only where they should, the image build runs the release script, and
//! `docs/configuration.md` is what the binaries' `--help` says ([`config_doc`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory as _;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use rubber_stamp_apiserver::{Cluster, ClusterOptions};
use rubber_stamp_e2e::deploy::{self, NAMESPACE, find};
use serde_json::Value;

#[path = "config_doc.rs"]
mod config_doc;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The lease name the controller uses (its `--lease-name` default, issue 5).
const LEASE: &str = "rubber-stamp-approver";

/// One thing a role allows: verb on group/resource[/subresource], optionally one name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    group: String,
    resource: String,
    name: Option<String>,
    verb: String,
}

fn grant(group: &str, resource: &str, name: Option<&str>, verb: &str) -> Grant {
    Grant {
        group: group.to_owned(),
        resource: resource.to_owned(),
        name: name.map(str::to_owned),
        verb: verb.to_owned(),
    }
}

pub(crate) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every (group, resource, name, verb) a role's rules allow.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names = strings(&rule["resourceNames"]);
        let names: Vec<Option<&str>> = if names.is_empty() {
            vec![None]
        } else {
            names.iter().map(|n| Some(n.as_str())).collect()
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for name in &names {
                    for verb in strings(&rule["verbs"]) {
                        out.insert(grant(&group, &resource, *name, &verb));
                    }
                }
            }
        }
    }
    out
}

pub(crate) fn objects_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .collect()
}

pub(crate) fn role<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value, String> {
    find(objects, kind, name).ok_or_else(|| format!("{kind} {name} is not rendered"))
}

/// The default of a flag of `rubber-stamp-approver run`.
pub(crate) fn run_default(id: &str) -> Result<String, String> {
    let cli = rubber_stamp_approver::flags::Cli::command();
    let run = cli
        .find_subcommand("run")
        .ok_or("no run subcommand")?
        .clone();
    run.get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_default_values().first().cloned())
        .and_then(|v| v.to_str().map(str::to_owned))
        .ok_or_else(|| format!("run has no default for {id}"))
}

fn approver_cluster_role_grants() -> BTreeSet<Grant> {
    let csr = "certificatesigningrequests";
    BTreeSet::from([
        grant("certificates.k8s.io", csr, None, "get"),
        grant("certificates.k8s.io", csr, None, "list"),
        grant("certificates.k8s.io", csr, None, "watch"),
        grant(
            "certificates.k8s.io",
            "certificatesigningrequests/approval",
            None,
            "update",
        ),
        grant(
            "certificates.k8s.io",
            "signers",
            Some("kubernetes.io/kubelet-serving"),
            "approve",
        ),
        grant(
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
            "create",
        ),
        grant("", "nodes", None, "get"),
        grant("", "nodes", None, "list"),
        grant("", "nodes", None, "watch"),
        // Check 9's Service rule: two watches, no get.
        grant("", "services", None, "list"),
        grant("", "services", None, "watch"),
        grant("networking.k8s.io", "servicecidrs", None, "list"),
        grant("networking.k8s.io", "servicecidrs", None, "watch"),
        // Agents' ServiceAccount tokens (approver/src/channel/token.rs).
        grant("authentication.k8s.io", "tokenreviews", None, "create"),
    ])
}

#[test]
fn the_approver_cluster_role_grants_exactly_the_issue_list() -> TestResult {
    check_approver_cluster_role(deploy::rendered_base()?)
}

/// The approver's ClusterRole grants exactly the issue's list, and no role widens itself
/// (aggregation, wildcards, non-resource URLs but the admin port's two reader roles').
pub(crate) fn check_approver_cluster_role(base: &[Value]) -> TestResult {
    let cluster_role = role(base, "ClusterRole", "rubber-stamp:approver")?;
    assert_eq!(grants(cluster_role), approver_cluster_role_grants());
    // The admin port's paths, each `get` only (approver/src/admin/auth.rs), and only there.
    let admin_readers = BTreeMap::from([
        (
            "rubber-stamp:metrics-reader",
            serde_json::json!(["/metrics"]),
        ),
        (
            "rubber-stamp:attestation-reader",
            serde_json::json!(["/attestations", "/streams"]),
        ),
    ]);
    // Nothing that widens a role behind the list's back.
    for object in base {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "ClusterRole" | "Role") {
            continue;
        }
        assert!(object.get("aggregationRule").is_none(), "{object}");
        let reader = object["metadata"]["name"]
            .as_str()
            .and_then(|name| admin_readers.get(name))
            .filter(|_| kind == "ClusterRole");
        if let Some(urls) = reader {
            assert_eq!(
                object["rules"],
                serde_json::json!([{"nonResourceURLs": urls, "verbs": ["get"]}]),
                "{object}"
            );
            continue;
        }
        for rule in object["rules"].as_array().into_iter().flatten() {
            assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "wildcard in {field}: {rule}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_namespaced_roles_grant_only_what_the_code_uses() -> TestResult {
    check_namespaced_roles(deploy::rendered_base()?, NAMESPACE)
}

/// The Roles grant only what the code uses; the approver's own lives in `namespace`.
pub(crate) fn check_namespaced_roles(base: &[Value], namespace: &str) -> TestResult {
    // The names the code uses by default: the PKI's Secret and ConfigMap flags.
    let secret = run_default("tls_secret")?;
    let config_map = run_default("ca_configmap")?;
    // The Secret's namespace follows --namespace (POD_NAMESPACE: the Role's namespace).
    assert!(run_default("tls_namespace").is_err(), "no fixed default");
    let own = role(base, "Role", "rubber-stamp:approver")?;
    assert_eq!(own["metadata"]["namespace"], namespace);
    assert_eq!(
        grants(own),
        BTreeSet::from([
            // Leader election: kube-lease-manager creates, reads and patches (SSA) the Lease.
            grant("coordination.k8s.io", "leases", None, "create"),
            grant("coordination.k8s.io", "leases", Some(LEASE), "get"),
            grant("coordination.k8s.io", "leases", Some(LEASE), "patch"),
            // Flood-valve Warning Events on the approver's own Lease, repeats as a series.
            grant("events.k8s.io", "events", None, "create"),
            grant("events.k8s.io", "events", None, "patch"),
            // approver/src/pki/secret.rs: get, create, update of the two objects, and
            // delete of the Secret (re-created when its type is not kubernetes.io/tls).
            grant("", "secrets", None, "create"),
            grant("", "secrets", Some(&secret), "get"),
            grant("", "secrets", Some(&secret), "update"),
            grant("", "secrets", Some(&secret), "delete"),
            grant("", "configmaps", None, "create"),
            grant("", "configmaps", Some(&config_map), "get"),
            grant("", "configmaps", Some(&config_map), "update"),
            // approver/src/channel/token.rs: a token's Pod (the agents' namespace is this one).
            grant("", "pods", None, "get"),
        ])
    );
    // CSRs are cluster-scoped: their Events go to `default`.
    let csr_events = role(base, "Role", "rubber-stamp:approver-csr-events")?;
    assert_eq!(csr_events["metadata"]["namespace"], "default");
    assert_eq!(
        grants(csr_events),
        BTreeSet::from([
            grant("events.k8s.io", "events", None, "create"),
            // One recorder per replica folds repeats into a series on the first Event.
            grant("events.k8s.io", "events", None, "patch"),
        ])
    );
    // Kubelets may ask for serving certificates for themselves (what check 14 asks).
    let selfnodeserver = role(base, "ClusterRole", "rubber-stamp:selfnodeserver")?;
    assert_eq!(
        grants(selfnodeserver),
        BTreeSet::from([grant(
            "certificates.k8s.io",
            "certificatesigningrequests/selfnodeserver",
            None,
            "create"
        )])
    );
    Ok(())
}

#[test]
fn bindings_give_the_approver_its_roles_and_the_agent_nothing() -> TestResult {
    check_bindings(deploy::rendered_base()?, NAMESPACE)
}

/// Bindings give the approver's ServiceAccount (in `namespace`) its roles, kubelets theirs,
/// and the agent's ServiceAccount nothing.
pub(crate) fn check_bindings(base: &[Value], namespace: &str) -> TestResult {
    let mut bound: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        for binding in objects_of(base, kind) {
            let role_ref = format!(
                "{}/{}@{}",
                binding["roleRef"]["kind"].as_str().unwrap_or_default(),
                binding["roleRef"]["name"].as_str().unwrap_or_default(),
                binding["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("cluster"),
            );
            for subject in binding["subjects"].as_array().into_iter().flatten() {
                let who = format!(
                    "{}:{}/{}",
                    subject["kind"].as_str().unwrap_or_default(),
                    subject["namespace"].as_str().unwrap_or_default(),
                    subject["name"].as_str().unwrap_or_default()
                );
                bound.entry(who).or_default().insert(role_ref.clone());
            }
        }
    }
    let expected = BTreeMap::from([
        (
            format!(
                "ServiceAccount:{namespace}/{}",
                deploy::APPROVER_SERVICE_ACCOUNT
            ),
            BTreeSet::from([
                "ClusterRole/rubber-stamp:approver@cluster".to_owned(),
                format!("Role/rubber-stamp:approver@{namespace}"),
                "Role/rubber-stamp:approver-csr-events@default".to_owned(),
            ]),
        ),
        (
            "Group:/system:nodes".to_owned(),
            BTreeSet::from(["ClusterRole/rubber-stamp:selfnodeserver@cluster".to_owned()]),
        ),
    ]);
    assert_eq!(bound, expected);
    let agent = find(base, "ServiceAccount", deploy::AGENT_SERVICE_ACCOUNT)
        .ok_or("agent ServiceAccount")?;
    assert_eq!(agent["automountServiceAccountToken"], false);
    Ok(())
}

#[test]
fn the_audit_overlay_cannot_approve_and_runs_dry() -> TestResult {
    check_audit_variant(deploy::rendered_base()?, &deploy::render("overlays/audit")?)
}

/// `audit` is `base` with a dry-running approver whose ClusterRole cannot approve.
pub(crate) fn check_audit_variant(base: &[Value], audit: &[Value]) -> TestResult {
    let mut expected = approver_cluster_role_grants();
    expected.retain(|g| g.resource != "certificatesigningrequests/approval" && g.verb != "approve");
    assert_eq!(expected.len(), approver_cluster_role_grants().len() - 2);
    assert_eq!(
        grants(role(audit, "ClusterRole", "rubber-stamp:approver")?),
        expected
    );
    assert!(approver_args(audit)?.contains(&"--dry-run".to_owned()));
    assert!(!approver_args(base)?.contains(&"--dry-run".to_owned()));
    // Everything else is the base.
    assert_eq!(
        strip(
            audit,
            &[
                "ClusterRole/rubber-stamp:approver",
                "Deployment/rubber-stamp-approver"
            ]
        ),
        strip(
            base,
            &[
                "ClusterRole/rubber-stamp:approver",
                "Deployment/rubber-stamp-approver"
            ]
        )
    );
    Ok(())
}

#[test]
fn the_single_replica_overlay_changes_only_the_replica_count() -> TestResult {
    check_single_replica_variant(
        deploy::rendered_base()?,
        &deploy::render("overlays/single-replica")?,
    )
}

/// `single` is `base` with one approver replica, and can still be drained.
pub(crate) fn check_single_replica_variant(base: &[Value], single: &[Value]) -> TestResult {
    let replicas = |objects: &[Value]| {
        find(objects, "Deployment", "rubber-stamp-approver").map(|d| d["spec"]["replicas"].clone())
    };
    assert_eq!(replicas(base), Some(Value::from(2)));
    assert_eq!(replicas(single), Some(Value::from(1)));
    let without_replicas = |objects: &[Value]| {
        let mut objects = objects.to_vec();
        for o in &mut objects {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("replicas");
            }
        }
        objects
    };
    assert_eq!(without_replicas(single), without_replicas(base));
    // A PodDisruptionBudget with one replica must still let nodes drain.
    let pdb = find(base, "PodDisruptionBudget", "rubber-stamp-approver").ok_or("PDB")?;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none());
    Ok(())
}

/// Objects without those named `Kind/name`.
fn strip(objects: &[Value], skip: &[&str]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| {
            let id = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            !skip.contains(&id.as_str())
        })
        .cloned()
        .collect()
}

pub(crate) fn container<'a>(
    objects: &'a [Value],
    kind: &str,
    name: &str,
) -> Result<&'a Value, String> {
    let workload = role(objects, kind, name)?;
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .ok_or("no containers")?;
    match containers.as_slice() {
        [only] => Ok(only),
        _ => Err(format!("{kind} {name} should have exactly one container")),
    }
}

pub(crate) fn approver_args(objects: &[Value]) -> Result<Vec<String>, String> {
    Ok(strings(
        &container(objects, "Deployment", "rubber-stamp-approver")?["args"],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_manifests_load_into_the_testbed_and_the_rbac_is_live() -> TestResult {
    check_rbac_is_live(deploy::rendered_base()?, NAMESPACE).await
}

/// Loads `base` (everything of it the testbed stores; its namespaced objects in
/// `namespace`) into a testbed cluster and checks its RBAC with real calls as the approver
/// and with SubjectAccessReviews for everyone it names.
pub(crate) async fn check_rbac_is_live(base: &[Value], namespace: &str) -> TestResult {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let skipped: BTreeSet<String> = deploy::load_supported(&cluster, base)?
        .into_iter()
        .collect();
    assert_eq!(
        skipped,
        ["DaemonSet", "Deployment", "PodDisruptionBudget", "Service"]
            .map(str::to_owned)
            .into(),
        "a new kind in deploy/: decide whether the testbed should load it"
    );
    let approver_creds = cluster.service_account(namespace, deploy::APPROVER_SERVICE_ACCOUNT)?;
    let approver = cluster.client(&approver_creds).await?;
    let admin = cluster.client(&cluster.admin()?).await?;

    // Real calls as the approver: allowed ones succeed, others are 403.
    let csrs: Api<CertificateSigningRequest> = Api::all(approver.clone());
    csrs.list(&ListParams::default()).await?;
    let nodes: Api<Node> = Api::all(approver.clone());
    nodes.list(&ListParams::default()).await?;
    let secrets: Api<Secret> = Api::namespaced(approver.clone(), namespace);
    assert_eq!(secrets.get_opt("rubber-stamp-approver-tls").await?, None);
    assert_eq!(
        status(secrets.list(&ListParams::default()).await),
        Some(403)
    );
    assert_eq!(status(secrets.get("some-other-secret").await), Some(403));
    let kube_system: Api<Secret> = Api::namespaced(approver.clone(), "kube-system");
    assert_eq!(
        status(kube_system.get("rubber-stamp-approver-tls").await),
        Some(403)
    );
    let node = serde_json::from_value::<Node>(serde_json::json!({"metadata": {"name": "n1"}}))?;
    assert_eq!(
        status(nodes.create(&PostParams::default(), &node).await),
        Some(403)
    );

    // The same rules through SubjectAccessReview, for everyone the manifests name.
    let sars: Api<SubjectAccessReview> = Api::all(admin);
    let sa = format!(
        "system:serviceaccount:{namespace}:{}",
        deploy::APPROVER_SERVICE_ACCOUNT
    );
    let agent = format!(
        "system:serviceaccount:{namespace}:{}",
        deploy::AGENT_SERVICE_ACCOUNT
    );
    #[rustfmt::skip]
    let cases: &[Access<'_>] = &[
        // user, groups, verb, group, resource/sub, name, namespace, allowed
        (&sa, &[], "update", "certificates.k8s.io", "certificatesigningrequests/approval", "csr-1", "", true),
        (&sa, &[], "approve", "certificates.k8s.io", "signers", "kubernetes.io/kubelet-serving", "", true),
        (&sa, &[], "approve", "certificates.k8s.io", "signers", "kubernetes.io/kube-apiserver-client", "", false),
        (&sa, &[], "delete", "certificates.k8s.io", "certificatesigningrequests", "csr-1", "", false),
        (&sa, &[], "update", "certificates.k8s.io", "certificatesigningrequests/status", "csr-1", "", false),
        (&sa, &[], "create", "authorization.k8s.io", "subjectaccessreviews", "", "", true),
        (&sa, &[], "watch", "", "services", "", "", true),
        (&sa, &[], "get", "", "services", "kubernetes", "default", false),
        (&sa, &[], "update", "", "services", "kubernetes", "default", false),
        (&sa, &[], "list", "networking.k8s.io", "servicecidrs", "", "", true),
        (&sa, &[], "delete", "networking.k8s.io", "servicecidrs", "kubernetes", "", false),
        (&sa, &[], "patch", "coordination.k8s.io", "leases", LEASE, namespace, true),
        (&sa, &[], "patch", "coordination.k8s.io", "leases", "another-lease", namespace, false),
        (&sa, &[], "update", "coordination.k8s.io", "leases", LEASE, namespace, false),
        (&sa, &[], "create", "events.k8s.io", "events", "", "default", true),
        (&sa, &[], "create", "events.k8s.io", "events", "", "kube-system", false),
        (&sa, &[], "update", "", "configmaps", "rubber-stamp-ca", namespace, true),
        (&sa, &[], "update", "", "configmaps", "kube-root-ca.crt", namespace, false),
        (&sa, &[], "delete", "", "secrets", "rubber-stamp-approver-tls", namespace, true),
        (&sa, &[], "delete", "", "secrets", "kube-root-ca.crt", namespace, false),
        (&agent, &[], "get", "", "configmaps", "rubber-stamp-ca", namespace, false),
        (&agent, &[], "list", "", "nodes", "", "", false),
        ("system:node:worker-1", &["system:nodes"], "create", "certificates.k8s.io", "certificatesigningrequests/selfnodeserver", "", "", true),
        ("mallory", &[], "create", "certificates.k8s.io", "certificatesigningrequests/selfnodeserver", "", "", false),
    ];
    for (user, groups, verb, group, resource, name, namespace, allowed) in cases {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some((*user).to_owned()),
                groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some((*verb).to_owned()),
                    group: Some((*group).to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource: Some(subresource.to_owned()),
                    name: Some((*name).to_owned()),
                    namespace: Some((*namespace).to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = sars.create(&PostParams::default(), &review).await?;
        assert_eq!(
            answer.status.map(|s| s.allowed),
            Some(*allowed),
            "{user} {verb} {group}/{resource}/{subresource} {namespace}/{name}"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// user, groups, verb, API group, resource[/subresource], name, namespace, allowed.
type Access<'a> = (
    &'a str,
    &'a [&'a str],
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    bool,
);

fn status<T>(result: Result<T, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

#[test]
fn the_workloads_are_locked_down() -> TestResult {
    check_workloads_locked_down(deploy::rendered_base()?)
}

/// The approver and the agent (token mode) run locked down, scheduled as add-ons.
pub(crate) fn check_workloads_locked_down(base: &[Value]) -> TestResult {
    let approver = role(base, "Deployment", "rubber-stamp-approver")?;
    let agent = role(base, "DaemonSet", "rubber-stamp-agent")?;
    for (workload, uid) in [(approver, 65532), (agent, 65532)] {
        let pod = &workload["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["securityContext"]["runAsUser"], uid);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], uid != 0);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["privileged"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert!(c["securityContext"]["capabilities"].get("add").is_none());
        for host in ["hostPID", "hostIPC"] {
            assert!(pod.get(host).is_none(), "{host}");
        }
        for resource in ["cpu", "memory"] {
            for bound in ["requests", "limits"] {
                assert!(
                    c["resources"][bound][resource].is_string(),
                    "{bound}.{resource}"
                );
            }
        }
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            assert!(
                volume.get("secret").is_none(),
                "no Secret is mounted: {volume}"
            );
        }
        for mount in c["volumeMounts"].as_array().into_iter().flatten() {
            assert_eq!(mount["readOnly"], true, "{mount}");
        }
    }

    let pod = &approver["spec"]["template"]["spec"];
    assert_eq!(approver["spec"]["replicas"], 2);
    assert!(pod.get("hostNetwork").is_none());
    assert_eq!(pod["serviceAccountName"], deploy::APPROVER_SERVICE_ACCOUNT);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    // A new cluster's first nodes: control-plane taints and a cloud's uninitialised taint
    // must not keep the approver off them; it is scheduled as a cluster add-on.
    let tolerated: Vec<&str> = pod["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(
        tolerated,
        [
            "node-role.kubernetes.io/control-plane",
            "node.cloudprovider.kubernetes.io/uninitialized"
        ]
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let env: BTreeMap<String, String> = pod["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("metadata.name")
    );
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("metadata.namespace")
    );

    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], deploy::AGENT_SERVICE_ACCOUNT);
    let strategy = &agent["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert!(strategy["rollingUpdate"]["maxUnavailable"].is_string());
    assert!(
        agent["spec"]["minReadySeconds"]
            .as_u64()
            .is_some_and(|s| s > 0)
    );
    let host_paths: BTreeSet<(String, String)> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["hostPath"]["path"].as_str()?.to_owned(),
                v["hostPath"]["type"].as_str()?.to_owned(),
            ))
        })
        .collect();
    // Token mode: nothing of the kubelet's is mounted, only the machine id.
    assert_eq!(
        host_paths,
        BTreeSet::from([("/etc/machine-id".to_owned(), "File".to_owned())])
    );
    assert!(
        host_paths
            .iter()
            .all(|(path, _)| !path.starts_with("/var/lib/kubelet"))
    );
    let token = token_volume(agent)?;
    assert_eq!(
        token["audience"],
        run_default("agent_token_audience")?.as_str()
    );
    assert!(
        token["expirationSeconds"]
            .as_u64()
            .is_some_and(|s| (600..=86_400).contains(&s)),
        "{token}"
    );
    let args = strings(&pod["containers"][0]["args"]);
    assert!(args.contains(&"--identity=token".to_owned()), "{args:?}");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "token")
        .ok_or("token mount")?;
    assert!(args.contains(&format!(
        "--token-file={}/{}",
        mount["mountPath"].as_str().ok_or("mountPath")?,
        token["path"].as_str().ok_or("path")?
    )));
    // The approver accepts tokens from the agents of its own namespace: --agent-namespace
    // defaults to --namespace, which POD_NAMESPACE sets (the env is checked elsewhere).
    let approver_args = approver_args(base)?;
    assert!(approver_args.contains(&"--agent-identity=token,kubelet-cert".to_owned()));
    assert!(
        !approver_args
            .iter()
            .any(|a| a.starts_with("--agent-namespace") || a.starts_with("--namespace")),
        "{approver_args:?}"
    );
    Ok(())
}

/// The agent's projected ServiceAccount token source.
fn token_volume(agent: &Value) -> Result<&Value, String> {
    agent["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "token")
        .and_then(|v| v["projected"]["sources"].as_array())
        .and_then(|sources| sources.iter().find_map(|s| s.get("serviceAccountToken")))
        .ok_or_else(|| "no projected token volume".to_owned())
}

#[test]
fn the_kubelet_cert_overlay_mounts_the_kubelets_certificate_and_drops_the_pod_rule() -> TestResult {
    check_kubelet_cert_variant(
        deploy::rendered_base()?,
        &deploy::render("overlays/kubelet-cert")?,
    )
}

/// `overlay` is `base` with agents that read the kubelet's certificate, and an approver that
/// accepts only certificates and has no token rules.
pub(crate) fn check_kubelet_cert_variant(base: &[Value], overlay: &[Value]) -> TestResult {
    // The approver accepts certificates only, and loses the rule only agents' tokens need
    // (pods get, below); tokenreviews create stays for the admin port's callers.
    let expected = approver_cluster_role_grants();
    assert_eq!(
        grants(role(overlay, "ClusterRole", "rubber-stamp:approver")?),
        expected
    );
    let own = grants(role(overlay, "Role", "rubber-stamp:approver")?);
    let mut base_own = grants(role(base, "Role", "rubber-stamp:approver")?);
    base_own.retain(|g| g.resource != "pods");
    assert_eq!(own, base_own);
    let args = approver_args(overlay)?;
    assert!(
        args.contains(&"--agent-identity=kubelet-cert".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&"--client-ca=/etc/rubber-stamp/client-ca/ca.crt".to_owned()));
    // The agent reads the kubelet's certificate from the node, as root.
    let agent = role(overlay, "DaemonSet", "rubber-stamp-agent")?;
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 0);
    let agent_args = strings(&pod["containers"][0]["args"]);
    assert!(agent_args.contains(&"--identity=kubelet-cert".to_owned()));
    assert!(agent_args.contains(&format!(
        "--cert={}",
        rubber_stamp_agent::config::KUBELET_CLIENT_PEM
    )));
    assert!(token_volume(agent).is_err(), "no token in the overlay");
    let pki = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "kubelet-pki")
        .ok_or("kubelet-pki volume")?;
    assert_eq!(pki["hostPath"]["path"], "/var/lib/kubelet/pki");
    // The kubelet's symlink is absolute: the directory must be mounted at the same path.
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == "/var/lib/kubelet/pki" && m["readOnly"] == true)
    );
    // Everything else is the base.
    let changed = [
        "ClusterRole/rubber-stamp:approver",
        "Role/rubber-stamp:approver",
        "Deployment/rubber-stamp-approver",
        "DaemonSet/rubber-stamp-agent",
    ];
    assert_eq!(strip(overlay, &changed), strip(base, &changed));
    Ok(())
}

#[test]
fn probes_ports_and_names_match_what_the_binaries_serve() -> TestResult {
    check_probes_ports_and_names(deploy::rendered_base()?, NAMESPACE)
}

/// Probes, ports, Service and volume names are what the binaries serve and read.
pub(crate) fn check_probes_ports_and_names(base: &[Value], namespace: &str) -> TestResult {
    let approver = container(base, "Deployment", "rubber-stamp-approver")?;
    let agent = container(base, "DaemonSet", "rubber-stamp-agent")?;
    let port = |addr: String| -> Result<u64, String> {
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or(format!("no port in {addr}"))
    };
    let approver_health = port(run_default("health_listen")?)?;
    let attestation = port(run_default("grpc_listen")?)?;
    let admin = port(run_default("admin_listen")?)?;
    let agent_cmd = rubber_stamp_agent::config::AgentArgs::command();
    let agent_health = port(
        agent_cmd
            .get_arguments()
            .find(|a| a.get_id() == "health_listen")
            .and_then(|a| a.get_default_values().first().cloned())
            .and_then(|v| v.to_str().map(str::to_owned))
            .ok_or("agent health default")?,
    )?;

    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(approver[probe]["grpc"]["port"], approver_health, "{probe}");
    }
    assert!(approver["livenessProbe"]["grpc"].get("service").is_none());
    assert_eq!(
        approver["readinessProbe"]["grpc"]["service"],
        rubber_stamp_approver::health::READINESS_SERVICE
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(agent[probe]["grpc"]["port"], agent_health, "{probe}");
    }
    assert!(agent["livenessProbe"]["grpc"].get("service").is_none());
    assert_eq!(
        agent["readinessProbe"]["grpc"]["service"],
        rubber_stamp_agent::health::READINESS_SERVICE
    );
    let ports: BTreeMap<String, u64> = approver["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()?)))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("attestation".to_owned(), attestation),
            ("health".to_owned(), approver_health),
            ("metrics".to_owned(), admin),
        ])
    );

    // The headless Service agents resolve: its name, namespace and port are what the agent
    // dials and what the approver's serving certificate names.
    let service = role(base, "Service", &run_default("service_name")?)?;
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["metadata"]["namespace"], namespace);
    let attestation_port = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "attestation")
        .ok_or("attestation port")?;
    assert_eq!(attestation_port["port"], attestation);
    let agent_args = strings(&agent["args"]);
    assert!(
        agent_args.contains(&format!(
            "--approver={}.$(POD_NAMESPACE).svc:{attestation}",
            run_default("service_name")?
        )),
        "{agent_args:?}"
    );
    // The agent's ports are what its flags listen on; its proof listener on the port the
    // approver probes by default, on both families.
    let proof = rubber_stamp_agent::proof::ProofListen::default();
    let proof_port = proof.address().map(|a| u64::from(a.port()));
    assert_eq!(
        proof_port,
        Some(u64::from(rubber_stamp_proto::proof::DEFAULT_PORT))
    );
    assert!(
        agent_args.contains(&format!("--proof-listen={proof}")),
        "{agent_args:?}"
    );
    let agent_ports: BTreeMap<String, u64> = agent["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()?)))
        .collect();
    assert_eq!(agent_ports.get("health"), Some(&agent_health));
    assert_eq!(agent_ports.get("proof"), proof_port.as_ref());
    // The CA bundle the agent reads is the ConfigMap the approver publishes.
    let agent_pod = &role(base, "DaemonSet", "rubber-stamp-agent")?["spec"]["template"]["spec"];
    let ca_volume = agent_pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "approver-ca")
        .ok_or("approver-ca volume")?;
    assert_eq!(
        ca_volume["configMap"]["name"],
        run_default("ca_configmap")?.as_str()
    );
    assert!(ca_volume["configMap"].get("optional").is_none());
    assert!(agent_args.contains(&"--approver-ca=/etc/rubber-stamp/approver-ca/ca.crt".to_owned()));
    // The approver's client CA: kube-root-ca.crt, mounted where --client-ca points.
    let approver_pod =
        &role(base, "Deployment", "rubber-stamp-approver")?["spec"]["template"]["spec"];
    let client_ca = approver_pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "client-ca")
        .ok_or("client-ca volume")?;
    assert_eq!(client_ca["configMap"]["name"], "kube-root-ca.crt");
    assert!(
        approver_args(base)?.contains(&"--client-ca=/etc/rubber-stamp/client-ca/ca.crt".to_owned())
    );
    Ok(())
}

fn long_flags(cmd: &clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

#[test]
fn every_flag_in_the_manifests_exists_in_the_binaries() -> TestResult {
    let cli = rubber_stamp_approver::flags::Cli::command();
    let run = cli.find_subcommand("run").ok_or("run")?;
    for overlay in [
        "base",
        "overlays/audit",
        "overlays/single-replica",
        "overlays/kubelet-cert",
    ] {
        check_flags_exist(overlay, &deploy::render(overlay)?)?;
    }
    // The downward-API variables are read by flags of the binaries.
    let envs: BTreeSet<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned))
        .collect();
    assert!(
        envs.contains("POD_NAME") && envs.contains("POD_NAMESPACE"),
        "{envs:?}"
    );
    Ok(())
}

/// Every flag the workloads of `objects` (rendered from `source`) pass exists in the
/// binaries.
pub(crate) fn check_flags_exist(source: &str, objects: &[Value]) -> TestResult {
    let cli = rubber_stamp_approver::flags::Cli::command();
    let run_flags = long_flags(cli.find_subcommand("run").ok_or("run")?);
    let agent_flags = long_flags(&rubber_stamp_agent::config::AgentArgs::command());
    let flag = |arg: &str| arg.split('=').next().unwrap_or(arg).to_owned();
    let args = approver_args(objects)?;
    assert_eq!(args.first().map(String::as_str), Some("run"), "{source}");
    for arg in &args[1..] {
        let f = flag(arg);
        assert!(
            run_flags.contains(&f),
            "{source}: approver flag {f} does not exist"
        );
    }
    for arg in strings(&container(objects, "DaemonSet", "rubber-stamp-agent")?["args"]) {
        assert!(
            agent_flags.contains(&flag(&arg)),
            "{source}: agent flag {arg} does not exist"
        );
    }
    Ok(())
}

#[test]
fn the_policy_shipped_in_deploy_is_a_valid_policy() -> TestResult {
    let text = std::fs::read_to_string(deploy::repo_root().join("deploy/base/policy.yaml"))?;
    let policy = rubber_stamp_core::Policy::from_yaml(&text)?;
    assert_eq!(policy, rubber_stamp_core::Policy::default());
    // The commented examples are valid too, once uncommented.
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with(|c: char| c.is_ascii_lowercase()) && l.contains(':')
                || l.starts_with("  - ")
                || l.strip_prefix("  ").is_some_and(|k| {
                    k.starts_with(|c: char| c.is_ascii_lowercase()) && k.contains(':')
                })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let example = rubber_stamp_core::Policy::from_yaml(&uncommented)?;
    assert!(
        !example.denied_cidrs.is_empty()
            && !example.peer_binding
            && example.metadata_sources.ip_sans.is_empty(),
        "{uncommented}"
    );
    check_policy_config_map(deploy::rendered_base()?, &text)
}

/// `objects` hold one policy ConfigMap, with `text` as its policy.yaml, and the approver
/// mounts it.
pub(crate) fn check_policy_config_map(objects: &[Value], text: &str) -> TestResult {
    let policies: Vec<&Value> = objects_of(objects, "ConfigMap")
        .into_iter()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("rubber-stamp-policy-"))
        })
        .collect();
    let [policy_cm] = policies.as_slice() else {
        return Err(format!("one generated policy ConfigMap, not {}", policies.len()).into());
    };
    assert_eq!(policy_cm["data"]["policy.yaml"], text);
    let pod = &role(objects, "Deployment", "rubber-stamp-approver")?["spec"]["template"]["spec"];
    let mounted = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "policy")
        .ok_or("policy volume")?;
    assert_eq!(mounted["configMap"]["name"], policy_cm["metadata"]["name"]);
    Ok(())
}

#[test]
fn images_are_placeholders_that_an_overlay_can_override() -> TestResult {
    let base = deploy::rendered_base()?;
    let version = env!("CARGO_PKG_VERSION");
    let approver = container(base, "Deployment", "rubber-stamp-approver")?;
    let agent = container(base, "DaemonSet", "rubber-stamp-agent")?;
    assert_eq!(
        approver["image"],
        format!("registry.invalid/kubelet-rubber-stamp/rubber-stamp-approver:{version}")
    );
    assert_eq!(
        agent["image"],
        format!("registry.invalid/kubelet-rubber-stamp/rubber-stamp-agent:{version}")
    );
    // The overlay the README tells operators to write.
    let dir = tempfile::tempdir()?;
    // kustomize takes only relative paths to bases: up to `/`, then down to deploy/base.
    let up = dir.path().components().count().saturating_sub(1);
    let base_dir = Path::new(&"../".repeat(up))
        .join(deploy::repo_root().join("deploy/base").strip_prefix("/")?);
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\n\
             images:\n  - name: registry.invalid/kubelet-rubber-stamp/rubber-stamp-approver\n    \
             newName: registry.example.com/rubber-stamp-approver\n    newTag: v9\n  \
             - name: registry.invalid/kubelet-rubber-stamp/rubber-stamp-agent\n    \
             newName: registry.example.com/rubber-stamp-agent\n    \
             digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
            base_dir.display()
        ),
    )?;
    let mine = deploy::render_dir(dir.path())?;
    assert_eq!(
        container(&mine, "Deployment", "rubber-stamp-approver")?["image"],
        "registry.example.com/rubber-stamp-approver:v9"
    );
    assert_eq!(
        container(&mine, "DaemonSet", "rubber-stamp-agent")?["image"],
        "registry.example.com/rubber-stamp-agent@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
    Ok(())
}

#[test]
fn the_image_builds_with_the_release_script_ci_runs() -> TestResult {
    let root = deploy::repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let script = std::fs::read_to_string(root.join("build/release.sh"))?;
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml"))?;
    // The builder runs the script, and nothing else compiles.
    let logical = dockerfile.replace("\\\n", " ");
    let runs: Vec<&str> = logical
        .lines()
        .filter(|l| l.trim_start().starts_with("RUN "))
        .collect();
    assert!(
        runs.iter().any(|l| l.contains("build/release.sh")),
        "{runs:?}"
    );
    assert!(
        !runs.iter().any(|l| l.contains("cargo ")),
        "cargo outside the script: {runs:?}"
    );
    // The script's one cargo line: release, locked, both packages with every binary (the
    // kubectl plugin is one of the approver package's).
    let cargo: Vec<&str> = script
        .lines()
        .filter(|l| l.trim_start().starts_with("cargo "))
        .collect();
    assert_eq!(cargo.len(), 1, "{cargo:?}");
    for part in [
        "cargo build",
        "--release",
        "--locked",
        "-p rubber-stamp-approver",
        "-p rubber-stamp-agent",
        "--bins",
    ] {
        assert!(cargo[0].contains(part), "{part} missing from {}", cargo[0]);
    }
    // ...and it checks and copies the three binaries.
    let binaries = script
        .lines()
        .find(|l| l.trim_start().starts_with("binaries=("))
        .ok_or("no binaries=(...) list in build/release.sh")?;
    for binary in [
        "rubber-stamp-approver",
        "rubber-stamp-agent",
        "kubectl-rubber_stamp",
    ] {
        assert!(
            binaries.contains(binary),
            "{binary} missing from {binaries}"
        );
    }
    // The builder image is the pinned toolchain.
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .ok_or("channel")?;
    assert!(
        dockerfile.contains(&format!("rust:{channel}-")),
        "the builder image must be rust:{channel}"
    );
    // One stage per binary, the approver non-root (the Deployment's uid), the agent root.
    for (stage, binary, user) in [
        ("approver", "rubber-stamp-approver", "65532:65532"),
        ("agent", "rubber-stamp-agent", "0:0"),
    ] {
        let start = dockerfile
            .find(&format!(" AS {stage}\n"))
            .ok_or(format!("no stage {stage}"))?;
        let body = dockerfile[start..]
            .split("\nFROM ")
            .next()
            .unwrap_or_default();
        assert!(body.contains(&format!("/out/{binary} ")), "{stage}: {body}");
        assert!(body.contains(&format!("USER {user}")), "{stage}: {body}");
        assert!(
            body.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]")),
            "{stage}: {body}"
        );
    }
    // The kubectl plugin ships beside the approver, and alone in a stage to write out.
    for (stage, line) in [
        (
            "approver",
            "COPY --from=build /out/kubectl-rubber_stamp /usr/local/bin/kubectl-rubber_stamp",
        ),
        (
            "kubectl-plugin",
            "COPY --from=build /out/kubectl-rubber_stamp /kubectl-rubber_stamp",
        ),
    ] {
        let start = dockerfile
            .find(&format!(" AS {stage}\n"))
            .ok_or(format!("no stage {stage}"))?;
        let body = dockerfile[start..]
            .split("\nFROM ")
            .next()
            .unwrap_or_default();
        assert!(body.lines().any(|l| l == line), "{stage}: {body}");
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore"))?;
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
    assert!(Path::new(&root.join("build/release.sh")).exists());
    Ok(())
}

/// The YAML block after `<!-- tested: NAME -->` in the README.
fn readme_snippet(readme: &str, name: &str) -> Result<String, String> {
    let marker = format!("<!-- tested: {name} -->\n```yaml\n");
    let start = readme
        .find(&marker)
        .ok_or(format!("README has no snippet {name:?}"))?
        + marker.len();
    let end = readme[start..]
        .find("```")
        .ok_or(format!("snippet {name:?} is not closed"))?;
    Ok(readme[start..start + end].to_owned())
}

#[test]
fn the_readme_overlay_renders_with_its_images_policy_and_client_ca() -> TestResult {
    let root = deploy::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    // The layout the README describes: the clone and `my-cluster/` side by side.
    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&root, dir.path().join("kubelet-rubber-stamp"))?;
    let mine = dir.path().join("my-cluster");
    std::fs::create_dir(&mine)?;
    let kustomization = readme_snippet(&readme, "my-cluster/kustomization.yaml")?;
    let policy = readme_snippet(&readme, "my-cluster/policy.yaml")?;
    std::fs::write(mine.join("kustomization.yaml"), &kustomization)?;
    std::fs::write(mine.join("policy.yaml"), &policy)?;
    assert!(
        !rubber_stamp_core::Policy::from_yaml(&policy)?
            .denied_cidrs
            .is_empty()
    );

    let rendered = deploy::render_dir(&mine)?;
    assert_eq!(
        container(&rendered, "Deployment", "rubber-stamp-approver")?["image"],
        "registry.example.com/rubber-stamp-approver:0.1.0"
    );
    assert_eq!(
        container(&rendered, "DaemonSet", "rubber-stamp-agent")?["image"],
        "registry.example.com/rubber-stamp-agent:0.1.0"
    );
    let policies: Vec<&Value> = objects_of(&rendered, "ConfigMap")
        .into_iter()
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("rubber-stamp-policy-"))
        })
        .collect();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["data"]["policy.yaml"], policy.as_str());
    let volume = |objects: &[Value], name: &str| -> Result<Value, String> {
        let pod =
            &role(objects, "Deployment", "rubber-stamp-approver")?["spec"]["template"]["spec"];
        pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .cloned()
            .ok_or(format!("no volume {name}"))
    };
    assert_eq!(
        volume(&rendered, "policy")?["configMap"]["name"],
        policies[0]["metadata"]["name"]
    );

    // Step 3's client CA override, added to the same kustomization.
    let mut merged: serde_yaml::Value = serde_yaml::from_str(&kustomization)?;
    let extra: serde_yaml::Value = serde_yaml::from_str(&readme_snippet(
        &readme,
        "my-cluster/kustomization.yaml (client CA)",
    )?)?;
    let (Some(merged_map), Some(extra_map)) = (merged.as_mapping_mut(), extra.as_mapping()) else {
        return Err("kustomizations are mappings".into());
    };
    for (key, value) in extra_map {
        match (merged_map.get_mut(key), value) {
            (Some(serde_yaml::Value::Sequence(have)), serde_yaml::Value::Sequence(more)) => {
                have.extend(more.iter().cloned());
            }
            _ => {
                merged_map.insert(key.clone(), value.clone());
            }
        }
    }
    std::fs::write(
        mine.join("kustomization.yaml"),
        serde_yaml::to_string(&merged)?,
    )?;
    let ca = rubber_stamp_testkit::pki::Ca::new("kubelet-client-ca")?;
    std::fs::write(mine.join("kubelet-client-ca.crt"), ca.cert_pem())?;
    let rendered = deploy::render_dir(&mine)?;
    let client_ca = volume(&rendered, "client-ca")?;
    let name = client_ca["configMap"]["name"].as_str().ok_or("name")?;
    assert!(name.starts_with("rubber-stamp-client-ca-"), "{client_ca}");
    assert_eq!(
        client_ca["configMap"]["items"],
        serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}])
    );
    let config_map = find(&rendered, "ConfigMap", name).ok_or("client CA ConfigMap")?;
    assert_eq!(config_map["data"]["ca.crt"], ca.cert_pem());
    assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
    Ok(())
}
