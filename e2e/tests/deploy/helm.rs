//! The Helm chart `deploy/helm/kubelet-rubber-stamp` as Helm renders it: `.ci/render-helm`
//! lints it (strict), packages it and renders the package with Helm's own Go SDK, with the
//! default values and each value set of the chart's `ci/` folder. The tests hold the renders
//! equal, object by object, to what `kubectl kustomize` renders from `deploy/` (the base,
//! and each overlay the chart has a value for), run the kustomize checks of [`manifests`]
//! on them, and check the chart's own additions: the monitoring objects around the chart's
//! files, the NetworkPolicy, every value (schema, README, the value set that sets them all),
//! values the schema refuses, the package, and the commands `docs/install.md` documents.
//!
//! [`manifests`]: crate::manifests

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use rubber_stamp_e2e::deploy::{self, NAMESPACE};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::manifests::{
    self, TestResult, approver_args, container, objects_of, role, run_default, strings,
};

/// The chart, from the repository root.
const CHART: &str = "deploy/helm/kubelet-rubber-stamp";
/// The release name `.ci/render-helm` renders with (and `docs/install.md` installs as).
const RELEASE: &str = "kubelet-rubber-stamp";
/// The namespace of the `everything` and `other-namespace` renders.
const OTHER_NAMESPACE: &str = "cluster-addons";
/// The value sets `.ci/render-helm` refuses, by the names it files their errors under.
const REJECTED: &[&str] = &[
    "identity-mode",
    "image-digest",
    "pod-monitor-scheme",
    "replicas-type",
    "token-over-http",
    "token-unverified",
    "typo-nested",
    "typo-top-level",
];
/// The objects the toggles add to the default render.
const OPTIONAL: &[&str] = &[
    "ServiceMonitor/rubber-stamp-approver",
    "PodMonitor/rubber-stamp-agent",
    "PrometheusRule/rubber-stamp",
    "ConfigMap/rubber-stamp-dashboard",
    "NetworkPolicy/rubber-stamp-approver",
];

/// What `.ci/render-helm` produced.
#[derive(Debug)]
struct Renders {
    /// The packaged chart, as `helm package` wrote it.
    package: Vec<u8>,
    /// The objects of each value set (`default`, and each `ci/<set>-values.yaml`).
    sets: BTreeMap<String, Vec<Value>>,
    /// Each set's rendered NOTES.txt.
    notes: BTreeMap<String, String>,
    /// Why each refused value set was refused.
    rejected: BTreeMap<String, String>,
}

impl Renders {
    fn set(&self, name: &str) -> Result<&[Value], String> {
        self.sets
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("no {name} render (ci/{name}-values.yaml)"))
    }
}

/// Runs `.ci/render-helm` once per test process (it installs what it needs) into a
/// directory of its own, and reads what it wrote.
fn renders() -> Result<&'static Renders, String> {
    static RENDERS: OnceLock<Result<Renders, String>> = OnceLock::new();
    RENDERS
        .get_or_init(render_helm)
        .as_ref()
        .map_err(Clone::clone)
}

fn render_helm() -> Result<Renders, String> {
    let root = deploy::repo_root();
    let out = tempfile::tempdir().map_err(|e| e.to_string())?;
    let output = Command::new(root.join(".ci/render-helm"))
        .arg(out.path())
        .current_dir(&root)
        .output()
        .map_err(|e| format!("running .ci/render-helm: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            ".ci/render-helm failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let read_dir = |dir: &Path, ext: &str| -> Result<BTreeMap<String, String>, String> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(ext) {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or("file name")?
                .to_owned();
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            files.insert(name, text);
        }
        Ok(files)
    };
    let mut sets = BTreeMap::new();
    for (name, text) in read_dir(out.path(), "yaml")? {
        sets.insert(name, parse(&text)?);
    }
    let archive = out.path().join(format!("package/{RELEASE}-0.1.0.tgz"));
    let package = std::fs::read(&archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    Ok(Renders {
        package,
        sets,
        notes: read_dir(&out.path().join("notes"), "txt")?,
        rejected: read_dir(&out.path().join("rejected"), "txt")?,
    })
}

/// The objects of a YAML stream.
fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| e.to_string())?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `Kind namespace/name` of an object.
fn id(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The objects by [`id`]; an object rendered twice is an error.
fn by_id(objects: &[Value]) -> Result<BTreeMap<String, &Value>, String> {
    let mut map = BTreeMap::new();
    for object in objects {
        if map.insert(id(object), object).is_some() {
            return Err(format!("{} is rendered twice", id(object)));
        }
    }
    Ok(map)
}

/// The JSON pointers where `a` and `b` differ.
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                let here = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(x), Some(y)) => differences(x, y, &here, out),
                    (Some(x), None) => out.push(format!("{here}: only in the chart: {x}")),
                    (None, Some(y)) => out.push(format!("{here}: only in deploy/: {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(x, y, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: the chart has {a}, deploy/ has {b}")),
        _ => {}
    }
}

/// Fails, saying where, unless `chart` and `kustomize` hold the same objects.
fn assert_same_objects(what: &str, chart: &[Value], kustomize: &[Value]) -> TestResult {
    let chart = by_id(chart)?;
    let kustomize = by_id(kustomize)?;
    let mut problems = Vec::new();
    for key in chart
        .keys()
        .chain(kustomize.keys())
        .collect::<BTreeSet<_>>()
    {
        match (chart.get(key), kustomize.get(key)) {
            (Some(a), Some(b)) => {
                let mut here = Vec::new();
                differences(a, b, "", &mut here);
                problems.extend(here.into_iter().map(|d| format!("{key}: {d}")));
            }
            (Some(_), None) => problems.push(format!("{key}: only in the chart")),
            (None, Some(_)) => problems.push(format!("{key}: only in deploy/")),
            (None, None) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}:\n  {}", problems.join("\n  ")).into())
    }
}

/// `objects` without the one Namespace, which `helm install --create-namespace` creates
/// instead of the chart (namespace.create is off by default).
fn without_namespace(objects: &[Value]) -> Result<Vec<Value>, String> {
    let namespaces = objects_of(objects, "Namespace");
    match namespaces.as_slice() {
        [only] if only["metadata"]["name"] == NAMESPACE => Ok(objects
            .iter()
            .filter(|o| o["kind"] != "Namespace")
            .cloned()
            .collect()),
        _ => Err(format!(
            "deploy/ should render exactly the Namespace {NAMESPACE}, not {namespaces:?}"
        )),
    }
}

/// Objects without those named `Kind/name`.
fn without(objects: &[Value], skip: &[&str]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| {
            let key = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            !skip.contains(&key.as_str())
        })
        .cloned()
        .collect()
}

fn chart_file(path: &str) -> Result<String, String> {
    let path = deploy::repo_root().join(CHART).join(path);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn yaml_file(path: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

#[test]
fn the_default_render_is_deploy_base_and_helm_creates_the_namespace() -> TestResult {
    let renders = renders()?;
    let base = deploy::rendered_base()?;
    // `helm install -n rubber-stamp --create-namespace`: Helm creates the namespace...
    assert_same_objects(
        "the default render against deploy/base less its Namespace",
        renders.set("default")?,
        &without_namespace(base)?,
    )?;
    // ...or, with namespace.create (for `helm template | kubectl apply`, Argo CD, Flux), the
    // chart renders deploy/base's Namespace, labels and all.
    assert_same_objects(
        "namespace.create against deploy/base",
        renders.set("namespace")?,
        base,
    )?;
    Ok(())
}

#[test]
fn the_variant_renders_are_the_overlays() -> TestResult {
    let renders = renders()?;
    for (set, overlay) in [
        ("kubelet-cert", "overlays/kubelet-cert"),
        ("audit", "overlays/audit"),
        ("single-replica", "overlays/single-replica"),
    ] {
        assert_same_objects(
            &format!("ci/{set}-values.yaml against deploy/{overlay} less its Namespace"),
            renders.set(set)?,
            &without_namespace(&deploy::render(overlay)?)?,
        )?;
    }
    Ok(())
}

#[test]
fn the_network_policy_is_the_overlays() -> TestResult {
    let renders = renders()?;
    let overlay = deploy::render("overlays/network-policy")?;
    let policies = |objects: &[Value]| -> Vec<Value> {
        objects_of(objects, "NetworkPolicy")
            .into_iter()
            .cloned()
            .collect()
    };
    assert_eq!(policies(&overlay).len(), 1);
    assert_same_objects(
        "networkPolicy.enabled against deploy/overlays/network-policy",
        &policies(renders.set("toggles")?),
        &policies(&overlay),
    )?;
    // The overlay adds only the NetworkPolicy to the base.
    assert_same_objects(
        "deploy/overlays/network-policy less its NetworkPolicy against deploy/base",
        &without(&overlay, &["NetworkPolicy/rubber-stamp-approver"]),
        deploy::rendered_base()?,
    )?;
    // It selects the approver's Pods, lets in its three ports and lets out only the API
    // server, DNS and the probes of the agents' proof port. The agents run with
    // hostNetwork: no NetworkPolicy applies to them.
    let policy = role(&overlay, "NetworkPolicy", "rubber-stamp-approver")?;
    let approver = role(&overlay, "Deployment", "rubber-stamp-approver")?;
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        approver["spec"]["selector"]["matchLabels"]
    );
    let ports: BTreeSet<u64> = policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    let container_ports: BTreeSet<u64> =
        container(&overlay, "Deployment", "rubber-stamp-approver")?["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
    assert_eq!(ports, container_ports);
    let egress: BTreeSet<u64> = policy["spec"]["egress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(
        egress,
        BTreeSet::from([
            53,
            443,
            6443,
            u64::from(rubber_stamp_proto::proof::DEFAULT_PORT)
        ])
    );
    let agent = role(&overlay, "DaemonSet", "rubber-stamp-agent")?;
    assert_eq!(agent["spec"]["template"]["spec"]["hostNetwork"], true);
    Ok(())
}

#[test]
fn the_monitoring_objects_wrap_the_charts_files() -> TestResult {
    let renders = renders()?;
    let toggles = renders.set("toggles")?;
    // The toggles add their objects and change nothing else.
    assert_same_objects(
        "the toggles' render less what they add against the default render",
        &without(toggles, OPTIONAL),
        renders.set("default")?,
    )?;

    // The ServiceMonitor scrapes the headless Service's metrics port, which is the
    // approver's admin port (/metrics), over HTTPS, verified against the approver's CA for
    // the Service's name, with Prometheus' own ServiceAccount token.
    let monitor = role(toggles, "ServiceMonitor", "rubber-stamp-approver")?;
    let service = role(toggles, "Service", &run_default("service_name")?)?;
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .ok_or("ServiceMonitor selector")?;
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": [NAMESPACE]})
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == endpoint["port"])
        .ok_or("the ServiceMonitor's port is not on the Service")?;
    let admin_port = run_default("admin_listen")?
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u64>().ok())
        .ok_or("admin port")?;
    assert_eq!(port["port"], admin_port);
    assert_eq!(endpoint["path"], rubber_stamp_approver::admin::METRICS_PATH);
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"],
        json!({
            "ca": {"configMap": {"name": run_default("ca_configmap")?, "key": "ca.crt"}},
            "serverName": format!("{}.{NAMESPACE}.svc", run_default("service_name")?),
            "insecureSkipVerify": false,
        })
    );
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    // Prometheus needs get on /metrics: the ClusterRole is rendered (bound by values).
    let reader = role(toggles, "ClusterRole", "rubber-stamp:metrics-reader")?;
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );

    // The PrometheusRule is files/alerts.yaml, unchanged.
    let rule = role(toggles, "PrometheusRule", "rubber-stamp")?;
    let alerts: Value = serde_yaml::from_str(&chart_file("files/alerts.yaml")?)?;
    assert!(alerts["groups"].is_array(), "files/alerts.yaml has groups");
    assert_eq!(rule["spec"], alerts);
    // The dashboard ConfigMap holds files/dashboard.json, for the Grafana sidecar.
    let dashboard = role(toggles, "ConfigMap", "rubber-stamp-dashboard")?;
    assert_eq!(
        dashboard["data"]["kubelet-rubber-stamp.json"],
        chart_file("files/dashboard.json")?.as_str()
    );
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dashboard["metadata"]["namespace"], NAMESPACE);

    // The PodMonitor scrapes the agents' metrics port, in plain HTTP (no token: the agents'
    // metrics hold counts and readiness only).
    let agent_ports: Vec<&str> = container(toggles, "DaemonSet", "rubber-stamp-agent")?["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(agent_ports, ["health", "metrics", "proof"]);
    let pod_monitor = role(toggles, "PodMonitor", "rubber-stamp-agent")?;
    assert_eq!(
        pod_monitor["spec"]["selector"],
        json!({"matchLabels": {"app.kubernetes.io/name": "rubber-stamp-agent"}})
    );
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["scheme"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert!(endpoint.get("bearerTokenFile").is_none());
    Ok(())
}

#[test]
fn the_default_render_passes_the_kustomize_checks() -> TestResult {
    let renders = renders()?;
    let default = renders.set("default")?;
    manifests::check_approver_cluster_role(default)?;
    manifests::check_namespaced_roles(default, NAMESPACE)?;
    manifests::check_bindings(default, NAMESPACE)?;
    manifests::check_workloads_locked_down(default)?;
    manifests::check_probes_ports_and_names(default, NAMESPACE)?;
    let policy = std::fs::read_to_string(deploy::repo_root().join("deploy/base/policy.yaml"))?;
    manifests::check_policy_config_map(default, &policy)?;
    manifests::check_kubelet_cert_variant(default, renders.set("kubelet-cert")?)?;
    manifests::check_audit_variant(default, renders.set("audit")?)?;
    manifests::check_single_replica_variant(default, renders.set("single-replica")?)?;
    for (name, objects) in &renders.sets {
        manifests::check_flags_exist(&format!("helm {name}"), objects)?;
    }
    Ok(())
}

/// The objects of `objects` with every occurrence of the namespace `from` (as a whole
/// string) replaced by `to`.
fn renamespaced(objects: &[Value], from: &str, to: &str) -> Vec<Value> {
    fn walk(value: &mut Value, from: &str, to: &str) {
        match value {
            Value::String(s) if s == from => *s = to.to_owned(),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, from, to)),
            Value::Object(map) => map.values_mut().for_each(|v| walk(v, from, to)),
            _ => {}
        }
    }
    let mut objects = objects.to_vec();
    objects.iter_mut().for_each(|o| walk(o, from, to));
    objects
}

#[test]
fn the_chart_installs_into_any_namespace() -> TestResult {
    let renders = renders()?;
    let other = renders.set("other-namespace")?;
    // Every namespace in it is the release namespace, but the Events Role's in `default`
    // (CSRs and Nodes are cluster-scoped: their Events live there).
    for object in other {
        let namespace = &object["metadata"]["namespace"];
        if object["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("Role"))
            && object["metadata"]["name"] == "rubber-stamp:approver-csr-events"
        {
            assert_eq!(namespace, "default");
        } else if !namespace.is_null() {
            assert_eq!(namespace, OTHER_NAMESPACE, "{}", id(object));
        }
    }
    assert_same_objects(
        "the default values rendered in another namespace, renamed back",
        &renamespaced(other, OTHER_NAMESPACE, NAMESPACE),
        renders.set("default")?,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_live_in_another_namespace() -> TestResult {
    let renders = renders()?;
    // What `helm install -n cluster-addons --create-namespace` creates first.
    let mut objects = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": OTHER_NAMESPACE},
    })];
    objects.extend(renders.set("other-namespace")?.iter().cloned());
    manifests::check_rbac_is_live(&objects, OTHER_NAMESPACE).await
}

/// The dotted paths of the values the schema defines: it refuses unknown keys in each
/// object it lists `properties` of, and everything below a property it does not is the
/// value's own (a map of labels, a Kubernetes type, a list).
fn schema_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    match schema["properties"].as_object() {
        Some(properties) if schema["additionalProperties"] == false => {
            for (key, property) in properties {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                schema_paths(property, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

fn at<'a>(values: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(values, |v, key| &v[key])
}

#[test]
fn every_value_is_in_the_schema_the_readme_and_the_everything_set() -> TestResult {
    let chart = deploy::repo_root().join(CHART);
    let schema: Value = serde_json::from_str(&chart_file("values.schema.json")?)?;
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let defaults = yaml_file(&chart.join("values.yaml"))?;
    let everything = yaml_file(&chart.join("ci/everything-values.yaml"))?;
    let readme = chart_file("README.md")?;
    let mut paths = Vec::new();
    schema_paths(&schema, "", &mut paths);
    assert!(paths.len() > 50, "{paths:?}");
    // Values that stay at their default in the everything set, and why.
    let kept = BTreeMap::from([(
        "serviceMonitor.scheme",
        "https is the default, and tlsConfig applies only with it",
    )]);
    for path in &paths {
        // A default for every value (no value only in the schema)...
        assert!(
            !at(&defaults, path).is_null(),
            "{path}: no default in values.yaml"
        );
        // ...a row in the README's table...
        assert!(
            readme.contains(&format!("| `{path}` |")),
            "{path}: not in the chart's README.md"
        );
        // ...and set, to something else, by the value set that sets them all.
        let set = at(&everything, path);
        assert!(!set.is_null(), "{path}: not in ci/everything-values.yaml");
        if !kept.contains_key(path.as_str()) {
            assert_ne!(
                set,
                at(&defaults, path),
                "{path}: everything sets its default"
            );
        }
    }
    // No value in values.yaml that the schema does not define (the schema refuses it,
    // so the default render would fail; this says which).
    fn leaves(value: &Value, schema: &Value, prefix: &str, out: &mut Vec<String>) {
        if let (Some(map), Some(properties)) = (value.as_object(), schema["properties"].as_object())
        {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match properties.get(key) {
                    Some(property) => leaves(value, property, &path, out),
                    None => out.push(path),
                }
            }
        }
    }
    let mut unknown = Vec::new();
    leaves(&defaults, &schema, "", &mut unknown);
    leaves(&everything, &schema, "", &mut unknown);
    assert!(unknown.is_empty(), "not in values.schema.json: {unknown:?}");
    Ok(())
}

#[test]
fn the_everything_render_shows_every_value() -> TestResult {
    let renders = renders()?;
    let all = renders.set("everything")?;
    let ns = OTHER_NAMESPACE;
    let deployment = role(all, "Deployment", "rubber-stamp-approver")?;
    let daemonset = role(all, "DaemonSet", "rubber-stamp-agent")?;
    let approver_pod = &deployment["spec"]["template"];
    let agent_pod = &daemonset["spec"]["template"];
    let approver = container(all, "Deployment", "rubber-stamp-approver")?;
    let agent = container(all, "DaemonSet", "rubber-stamp-agent")?;

    // Images by digest, pull policy and pull Secrets.
    assert_eq!(
        approver["image"],
        "registry.example.com/rubber-stamp-approver@sha256:1111111111111111111111111111111111111111111111111111111111111111"
    );
    assert_eq!(
        agent["image"],
        "registry.example.com/rubber-stamp-agent@sha256:2222222222222222222222222222222222222222222222222222222222222222"
    );
    assert_eq!(approver["imagePullPolicy"], "IfNotPresent");
    assert_eq!(agent["imagePullPolicy"], "Always");
    for pod in [approver_pod, agent_pod] {
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": "registry-example-com"}])
        );
    }
    // The approver: replicas, dry run (and no approval rules), client CA, extra args.
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = approver_args(all)?;
    assert_eq!(args.last().map(String::as_str), Some("--deny=never"));
    assert!(args.contains(&"--dry-run".to_owned()));
    assert!(args.contains(&"--agent-identity=kubelet-cert".to_owned()));
    let rules = &role(all, "ClusterRole", "rubber-stamp:approver")?["rules"];
    for absent in ["certificatesigningrequests/approval", "signers"] {
        assert!(
            !rules.to_string().contains(&format!("\"{absent}\"")),
            "{absent} in {rules}"
        );
    }
    let client_ca = approver_pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "client-ca")
        .ok_or("client-ca volume")?;
    assert_eq!(
        client_ca["configMap"],
        json!({"name": "rubber-stamp-client-ca", "items": [{"key": "kubelet-client-ca.crt", "path": "ca.crt"}]})
    );
    // The agent: the kubelet's certificate where k3s keeps it, extra args.
    let agent_args = strings(&agent["args"]);
    for arg in [
        "--identity=kubelet-cert",
        "--cert=/var/lib/rancher/k3s/agent/client-kubelet.crt",
        "--key=/var/lib/rancher/k3s/agent/client-kubelet.key",
    ] {
        assert!(
            agent_args.contains(&arg.to_owned()),
            "{arg}: {agent_args:?}"
        );
    }
    assert_eq!(
        agent_args.last().map(String::as_str),
        Some("--cloud-metadata=aws")
    );
    // Its proof listener on another port, which the approver's NetworkPolicy lets out.
    assert!(agent_args.contains(&"--proof-listen=[::]:10373".to_owned()));
    let proof_port = agent["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "proof")
        .ok_or("proof port")?;
    assert_eq!(proof_port["containerPort"], 10373);
    assert_eq!(
        agent_pod["spec"]["volumes"][0],
        json!({"name": "kubelet-pki", "hostPath": {"path": "/var/lib/rancher/k3s/agent", "type": "Directory"}})
    );
    // Scheduling and Pod metadata, each component its own.
    for (pod, c, tier, cpu, priority, dns, node_selector, toleration) in [
        (
            approver_pod,
            approver,
            "control",
            "50m",
            "rubber-stamp-critical",
            "ClusterFirst",
            json!({"node-role.kubernetes.io/control-plane": ""}),
            "node-role.kubernetes.io/control-plane",
        ),
        (
            agent_pod,
            agent,
            "node",
            "10m",
            "rubber-stamp-node-critical",
            "Default",
            json!({"kubernetes.io/os": "linux"}),
            "example.com/dedicated",
        ),
    ] {
        assert_eq!(pod["metadata"]["labels"]["example.com/tier"], tier);
        assert_eq!(
            pod["metadata"]["annotations"]["example.com/owner"],
            "platform"
        );
        assert_eq!(c["resources"]["requests"]["cpu"], cpu);
        assert_eq!(pod["spec"]["priorityClassName"], priority);
        assert_eq!(pod["spec"]["dnsPolicy"], dns);
        assert_eq!(pod["spec"]["nodeSelector"], node_selector);
        assert_eq!(pod["spec"]["tolerations"][0]["key"], toleration);
        assert!(pod["spec"]["affinity"]["nodeAffinity"].is_object());
    }
    // Pod labels do not reach the selectors; the default anti-affinity is merged, not lost.
    assert_eq!(
        deployment["spec"]["selector"],
        json!({"matchLabels": {"app.kubernetes.io/name": "rubber-stamp-approver"}})
    );
    assert!(approver_pod["spec"]["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(
        approver_pod["metadata"]["annotations"],
        json!({"example.com/owner": "platform"})
    );

    // The policy: its text, and the name kustomize's configMapGenerator gives that text.
    let everything_values = yaml_file(
        &deploy::repo_root()
            .join(CHART)
            .join("ci/everything-values.yaml"),
    )?;
    let policy = everything_values["policy"].as_str().ok_or("policy")?;
    rubber_stamp_core::Policy::from_yaml(policy)?;
    manifests::check_policy_config_map(all, policy)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("policy.yaml"), policy)?;
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         configMapGenerator:\n  - name: rubber-stamp-policy\n    files:\n      - policy.yaml\n",
    )?;
    let generated = deploy::render_dir(dir.path())?;
    let mounted = approver_pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "policy")
        .ok_or("policy volume")?;
    assert_eq!(
        mounted["configMap"]["name"],
        generated[0]["metadata"]["name"]
    );

    // Namespace, common labels, reader bindings.
    let namespace = role(all, "Namespace", ns)?;
    assert_eq!(namespace["metadata"]["labels"]["example.com/zone"], "infra");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/warn"],
        "baseline"
    );
    let extra = [
        "ConfigMap/rubber-stamp-client-ca",
        "PriorityClass/rubber-stamp-critical",
    ];
    for object in without(all, &extra) {
        assert_eq!(
            object["metadata"]["labels"]["example.com/team"],
            "platform",
            "{}",
            id(&object)
        );
    }
    for (binding, subject) in [
        (
            "rubber-stamp:metrics-reader",
            json!({"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}),
        ),
        (
            "rubber-stamp:attestation-reader",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "platform-admins"}),
        ),
    ] {
        let binding = role(all, "ClusterRoleBinding", binding)?;
        assert_eq!(binding["roleRef"]["name"], binding["metadata"]["name"]);
        assert_eq!(binding["subjects"], json!([subject]));
    }
    // Monitoring.
    let monitor = role(all, "ServiceMonitor", "rubber-stamp-approver")?;
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"], "1m");
    assert_eq!(endpoint["scrapeTimeout"], "20s");
    assert_eq!(
        endpoint["tlsConfig"],
        json!({
            "ca": {"configMap": {"name": "rubber-stamp-metrics-ca", "key": "ca.crt"}},
            "serverName": "metrics.rubber-stamp.example.com",
            "insecureSkipVerify": true,
        })
    );
    assert_eq!(endpoint["bearerTokenFile"], Value::Null);
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "node");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    let rule = role(all, "PrometheusRule", "rubber-stamp")?;
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let dashboard = role(all, "ConfigMap", "rubber-stamp-dashboard")?;
    assert_eq!(dashboard["metadata"]["namespace"], "grafana");
    assert_eq!(
        dashboard["metadata"]["labels"]["example.com/dashboards"],
        "true"
    );
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Kubernetes"
    );
    // The NetworkPolicy's peers and API server.
    let policy = &role(all, "NetworkPolicy", "rubber-stamp-approver")?["spec"];
    assert_eq!(
        policy["ingress"][0]["from"],
        json!([{"ipBlock": {"cidr": "192.0.2.0/24"}}])
    );
    assert_eq!(
        policy["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "observability"
    );
    assert_eq!(
        policy["egress"][0],
        json!({"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "198.51.100.10/32"}}]})
    );
    assert!(policy["egress"][1]["to"][0]["podSelector"].is_null());
    assert_eq!(
        policy["egress"][2],
        json!({"ports": [{"port": 10373, "protocol": "TCP"}]})
    );
    // Extra objects, a map and a string, both through tpl.
    let ca = role(all, "ConfigMap", "rubber-stamp-client-ca")?;
    assert_eq!(ca["metadata"]["namespace"], ns);
    let priority = role(all, "PriorityClass", "rubber-stamp-critical")?;
    assert_eq!(priority["metadata"]["labels"]["release"], RELEASE);
    assert_eq!(priority["description"], format!("The approver of {ns}."));
    // Every namespaced object follows the release namespace, but the Events Role's and
    // the dashboard's.
    for object in all {
        let namespace = &object["metadata"]["namespace"];
        if !namespace.is_null()
            && object["metadata"]["name"] != "rubber-stamp:approver-csr-events"
            && object["metadata"]["name"] != "rubber-stamp-dashboard"
        {
            assert_eq!(namespace, ns, "{}", id(object));
        }
    }
    Ok(())
}

#[test]
fn invalid_values_are_refused_with_the_key_they_got_wrong() -> TestResult {
    let renders = renders()?;
    let names: Vec<&str> = renders.rejected.keys().map(String::as_str).collect();
    assert_eq!(names, REJECTED);
    for (name, key) in [
        ("typo-top-level", "'agentIdentiy'"),
        (
            "typo-nested",
            "at '/approver': additional properties 'replica'",
        ),
        (
            "identity-mode",
            "at '/agentIdentity': value must be one of 'token', 'kubelet-cert'",
        ),
        ("replicas-type", "at '/approver/replicas'"),
        ("image-digest", "at '/agent/image/digest'"),
        (
            "pod-monitor-scheme",
            "at '/podMonitor': additional properties 'scheme'",
        ),
    ] {
        let message = &renders.rejected[name];
        assert!(
            message.starts_with("values don't meet the specifications of the schema"),
            "{name}: {message}"
        );
        assert!(message.contains(key), "{name}: {message}");
    }
    // Values the schema allows but that would hand Prometheus' token to anyone: the
    // templates refuse them, naming the value to change.
    for (name, key) in [
        ("token-over-http", "set serviceMonitor.bearerTokenFile to"),
        (
            "token-unverified",
            "verify the certificate (tlsConfig.caConfigMap)",
        ),
    ] {
        let message = &renders.rejected[name];
        assert!(message.contains(key), "{name}: {message}");
    }
    Ok(())
}

#[test]
fn the_chart_is_versioned_with_the_images_and_packages_without_its_ci_values() -> TestResult {
    let renders = renders()?;
    let chart: Value = serde_yaml::from_str(&chart_file("Chart.yaml")?)?;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["type"], "application");
    assert_eq!(chart["name"], RELEASE);
    assert_eq!(chart["version"], "0.1.0");
    assert_eq!(chart["appVersion"], version);
    // The default images are deploy/base's, whose tag is the appVersion.
    let default = renders.set("default")?;
    let base = deploy::rendered_base()?;
    for (kind, name) in [
        ("Deployment", "rubber-stamp-approver"),
        ("DaemonSet", "rubber-stamp-agent"),
    ] {
        let image = container(default, kind, name)?["image"]
            .as_str()
            .ok_or("image")?
            .to_owned();
        assert!(image.ends_with(&format!(":{version}")), "{image}");
        assert_eq!(
            image,
            container(base, kind, name)?["image"]
                .as_str()
                .ok_or("image")?
        );
    }
    // What `helm package` wrote (renders() ran it): the files users install, not ci/.
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join(format!("{RELEASE}-0.1.0.tgz"));
    std::fs::write(&archive, &renders.package)?;
    let listing = Command::new("tar").arg("tzf").arg(&archive).output()?;
    assert!(listing.status.success(), "tar tzf {}", archive.display());
    let files: BTreeSet<String> = String::from_utf8(listing.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    for file in [
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "README.md",
        ".helmignore",
        "files/alerts.yaml",
        "files/dashboard.json",
        "templates/NOTES.txt",
        "templates/_helpers.tpl",
    ] {
        assert!(
            files.contains(&format!("{RELEASE}/{file}")),
            "{file} not packaged: {files:?}"
        );
    }
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with(&format!("{RELEASE}/ci/"))),
        "{files:?}"
    );
    // The NOTES name the release namespace and what to do next.
    let notes = &renders.notes["default"];
    assert!(
        notes.contains(&format!("-n {NAMESPACE} rollout status")),
        "{notes}"
    );
    assert!(notes.contains("serverTLSBootstrap"), "{notes}");
    assert!(!renders.notes["namespace"].contains("kubectl label namespace"));
    Ok(())
}

#[test]
fn the_install_guide_runs_what_ci_renders() -> TestResult {
    let root = deploy::repo_root();
    let guide = std::fs::read_to_string(root.join("docs/install.md"))?;
    // Every helm command of the guide installs, upgrades or renders this chart, as the
    // release and into the namespace the tests render.
    let commands: Vec<&str> = guide
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("helm "))
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    let chart = CHART;
    let mut seen = BTreeSet::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let verb = words.get(1).copied().unwrap_or_default();
        seen.insert(verb);
        match verb {
            "install" | "upgrade" | "template" => {
                assert_eq!(words.get(2).copied(), Some(RELEASE), "{command}");
                let source = words.get(3).copied().unwrap_or_default();
                assert!(
                    source == chart
                        || source == format!("{RELEASE}-0.1.0.tgz")
                        || source.starts_with("oci://"),
                    "{command}"
                );
                let namespace = words
                    .windows(2)
                    .find(|w| w[0] == "-n" || w[0] == "--namespace")
                    .map(|w| w[1]);
                assert_eq!(namespace, Some(NAMESPACE), "{command}");
                // Each values file it names is one the tests render.
                for file in words.windows(2).filter(|w| w[0] == "-f").map(|w| w[1]) {
                    assert!(
                        file.starts_with(&format!("{chart}/ci/")) && root.join(file).exists()
                            || file == "my-values.yaml",
                        "{command}"
                    );
                }
            }
            "package" => assert_eq!(words.get(2).copied(), Some(chart), "{command}"),
            "push" => assert_eq!(
                words.get(2).copied(),
                Some(format!("{RELEASE}-0.1.0.tgz").as_str()),
                "{command}"
            ),
            "lint" => assert!(words.contains(&"--strict") && words.contains(&chart)),
            "uninstall" => assert_eq!(
                words.get(2..),
                Some([RELEASE, "-n", NAMESPACE].as_slice()),
                "{command}"
            ),
            "show" | "get" | "history" | "rollback" | "pull" | "registry" => {}
            other => panic!("helm {other}: a command the tests do not know: {command}"),
        }
    }
    for verb in ["install", "upgrade", "uninstall", "package", "push", "lint"] {
        assert!(seen.contains(verb), "docs/install.md has no helm {verb}");
    }
    // The kustomize path: every overlay it names exists.
    for line in guide.lines().filter(|l| l.contains("deploy/overlays/")) {
        for overlay in line
            .split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')' || c == ',')
            .filter(|w| w.starts_with("deploy/overlays/"))
        {
            let dir = root.join(overlay.trim_end_matches(['.', ':', '/']));
            assert!(dir.join("kustomization.yaml").exists(), "{overlay}");
        }
    }
    // And the README points to it.
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    assert!(
        readme.contains("(docs/install.md)"),
        "README does not link docs/install.md"
    );
    Ok(())
}

#[test]
fn the_schema_keeps_the_identity_modes_of_the_agent() -> TestResult {
    // agentIdentity's modes are the agent's --identity values.
    let schema: Value = serde_json::from_str(&chart_file("values.schema.json")?)?;
    let modes: BTreeSet<String> = strings(&schema["properties"]["agentIdentity"]["enum"])
        .into_iter()
        .collect();
    let agent = <rubber_stamp_agent::config::AgentArgs as clap::CommandFactory>::command();
    let identity = agent
        .get_arguments()
        .find(|a| a.get_id() == "identity")
        .ok_or("agent --identity")?;
    let accepted: BTreeSet<String> = identity
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    assert_eq!(modes, accepted);
    Ok(())
}
