//! The project's `deploy/` manifests as an operator renders them (`kubectl kustomize`), for
//! tests: the rendered objects, and [`load_rendered_rbac`], which loads the approver's RBAC
//! into a testbed cluster and returns the approver ServiceAccount's credentials — the
//! identity the PKI and controller tests run as, so any API call the manifests do not allow
//! fails them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize as _;
use serde_json::Value;

use rubber_stamp_apiserver::{Cluster, ClusterError, Credentials};

/// The namespace every namespaced object of `deploy/` lives in.
pub const NAMESPACE: &str = "rubber-stamp";
/// The approver's ServiceAccount.
pub const APPROVER_SERVICE_ACCOUNT: &str = "rubber-stamp-approver";
/// The agent's ServiceAccount (bound to nothing).
pub const AGENT_SERVICE_ACCOUNT: &str = "rubber-stamp-agent";
/// The kinds the testbed stores of what `deploy/` renders; the workloads (Deployment,
/// DaemonSet, Service, PodDisruptionBudget) it cannot run.
pub const TESTBED_KINDS: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];
/// The RBAC kinds (and what they need to exist) that [`load_rbac`] loads.
pub const RBAC_KINDS: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// Why rendering or loading the manifests failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// kubectl could not be started.
    #[error(
        "running {kubectl}: {source} (kubectl is needed to render deploy/; set KUBECTL to its path)"
    )]
    Spawn {
        /// The kubectl used.
        kubectl: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `kubectl kustomize` failed.
    #[error("kubectl kustomize {dir}: {stderr}")]
    Kustomize {
        /// The kustomization directory.
        dir: PathBuf,
        /// kubectl's error output.
        stderr: String,
    },
    /// The rendered YAML did not parse.
    #[error("rendered YAML: {0}")]
    Yaml(String),
    /// The cluster refused an object.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The repository root (the parent of the testbed crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_owned)
}

/// The kubectl to render with: `$KUBECTL`, else `/usr/bin/kubectl`.
pub fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".to_owned())
}

/// Renders a kustomization directory and returns its objects, in kubectl's order.
pub fn render_dir(dir: &Path) -> Result<Vec<Value>, DeployError> {
    let kubectl = kubectl();
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|source| DeployError::Spawn {
            kubectl: kubectl.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(DeployError::Kustomize {
            dir: dir.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let text = String::from_utf8(output.stdout).map_err(|e| DeployError::Yaml(e.to_string()))?;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).map_err(|e| DeployError::Yaml(e.to_string()))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// Renders `deploy/<overlay>` (`"base"`, `"overlays/audit"`, …).
pub fn render(overlay: &str) -> Result<Vec<Value>, DeployError> {
    render_dir(&repo_root().join("deploy").join(overlay))
}

/// `deploy/base` rendered once per test process.
pub fn rendered_base() -> Result<&'static [Value], DeployError> {
    static BASE: OnceLock<Vec<Value>> = OnceLock::new();
    if let Some(base) = BASE.get() {
        return Ok(base);
    }
    let rendered = render("base")?;
    Ok(BASE.get_or_init(|| rendered))
}

/// The object of `kind` named `name` (any namespace).
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
}

/// Loads the RBAC rendered from `deploy/base` (its namespace, ServiceAccounts, roles and
/// bindings) into `cluster`, and returns credentials of the approver's ServiceAccount.
/// Controller and PKI tests run as that identity, so they fail on any call `deploy/` does
/// not allow.
pub fn load_rendered_rbac(cluster: &Cluster) -> Result<Credentials, DeployError> {
    load_rbac(cluster, rendered_base()?)
}

/// Like [`load_rendered_rbac`] for objects a test rendered or edited itself (e.g. with
/// [`without_verb`] to prove a rule is needed).
pub fn load_rbac(cluster: &Cluster, objects: &[Value]) -> Result<Credentials, DeployError> {
    let rbac: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| RBAC_KINDS.contains(&k)))
        .collect();
    load(cluster, &rbac)?;
    Ok(cluster.service_account(NAMESPACE, APPROVER_SERVICE_ACCOUNT)?)
}

/// Loads every object of a kind the testbed stores ([`TESTBED_KINDS`]); returns the kinds
/// it left out because the testbed cannot run them.
pub fn load_supported(cluster: &Cluster, objects: &[Value]) -> Result<Vec<String>, DeployError> {
    let (supported, skipped): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| {
        o["kind"]
            .as_str()
            .is_some_and(|k| TESTBED_KINDS.contains(&k))
    });
    load(cluster, &supported)?;
    Ok(skipped
        .iter()
        .filter_map(|o| o["kind"].as_str().map(str::to_owned))
        .collect())
}

fn load(cluster: &Cluster, objects: &[&Value]) -> Result<(), DeployError> {
    let stream = objects
        .iter()
        .map(|o| serde_json::to_string(o).map_err(|e| DeployError::Yaml(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?
        .join("\n---\n");
    cluster.load_yaml(&stream)?;
    Ok(())
}

/// A copy of `objects` where the `kind`/`name` role no longer grants `verb` on `resource`
/// (a rule left without verbs is removed).
pub fn without_verb(
    objects: &[Value],
    kind: &str,
    name: &str,
    resource: &str,
    verb: &str,
) -> Vec<Value> {
    let mut objects = objects.to_vec();
    for object in &mut objects {
        if object["kind"].as_str() != Some(kind)
            || object["metadata"]["name"].as_str() != Some(name)
        {
            continue;
        }
        let Some(rules) = object["rules"].as_array_mut() else {
            continue;
        };
        for rule in rules.iter_mut() {
            let names_resource = rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r.as_str() == Some(resource)));
            if names_resource && let Some(verbs) = rule["verbs"].as_array_mut() {
                verbs.retain(|v| v.as_str() != Some(verb));
            }
        }
        rules.retain(|rule| rule["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    }
    objects
}
