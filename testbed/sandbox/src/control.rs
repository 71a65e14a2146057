//! The sandbox's control plane: the testbed cluster (API server and its
//! kubelet-serving signer) with the project's own namespace and RBAC from
//! `deploy/`, and kubeconfigs for the admin and the approver's ServiceAccount.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::SandboxError;
use rubber_stamp_apiserver::{Cluster, ClusterOptions};

/// The approver's namespace (deploy/base/namespace.yaml).
pub const NAMESPACE: &str = "rubber-stamp";
/// The approver's ServiceAccount (deploy/base/rbac.yaml).
pub const SERVICE_ACCOUNT: &str = "rubber-stamp-approver";
/// The leader-election Lease the approver's Role may write (deploy/base/rbac.yaml).
pub const LEASE_NAME: &str = "rubber-stamp-approver";

/// The ServiceAccount the sandbox reads the approvers' admin ports as, bound to the
/// shipped ClusterRoles `rubber-stamp:metrics-reader` and `rubber-stamp:attestation-reader`
/// as an operator binds Prometheus and the on-call engineers.
pub const OBSERVER: &str = "system:serviceaccount:rubber-stamp:sandbox-observer";

/// The manifests loaded into the cluster, as (path in the repository, content).
pub const DEPLOY_MANIFESTS: [(&str, &str); 2] = [
    (
        "deploy/base/namespace.yaml",
        include_str!("../../../deploy/base/namespace.yaml"),
    ),
    (
        "deploy/base/rbac.yaml",
        include_str!("../../../deploy/base/rbac.yaml"),
    ),
];

/// A running cluster with the project's RBAC and the kubeconfigs to use it.
pub struct ControlPlane {
    /// The testbed cluster.
    pub cluster: Cluster,
    /// A kube-rs client as the cluster admin.
    pub admin: kube::Client,
    /// `admin.kubeconfig` (for `kubectl`).
    pub admin_kubeconfig: PathBuf,
    /// `approver.kubeconfig`: the approver ServiceAccount's bearer token.
    pub approver_kubeconfig: PathBuf,
    /// What was loaded from `deploy/`, as `Kind namespace/name`.
    pub loaded: Vec<String>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("cluster", &self.cluster)
            .field("admin_kubeconfig", &self.admin_kubeconfig)
            .field("approver_kubeconfig", &self.approver_kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts the cluster on `listen`, loads `deploy/`'s namespace and RBAC,
    /// and writes the kubeconfigs to `dir`.
    pub async fn start(listen: SocketAddr, dir: &Path) -> Result<Self, SandboxError> {
        let cluster = Cluster::start(ClusterOptions {
            listen,
            ..ClusterOptions::default()
        })
        .await?;
        let mut loaded = Vec::new();
        for (path, yaml) in DEPLOY_MANIFESTS {
            let keys = cluster
                .load_yaml(yaml)
                .map_err(|e| SandboxError::Setup(format!("loading {path}: {e}")))?;
            loaded.extend(keys.into_iter().map(|(kind, key)| {
                if key.namespace.is_empty() {
                    format!("{kind} {}", key.name)
                } else {
                    format!("{kind} {}/{}", key.namespace, key.name)
                }
            }));
        }
        let admin_creds = cluster.admin()?;
        let admin = cluster.client(&admin_creds).await?;
        let admin_kubeconfig = cluster.write_kubeconfig(&admin_creds, dir, "admin")?;
        let approver = cluster.service_account(NAMESPACE, SERVICE_ACCOUNT)?;
        let approver_kubeconfig = cluster.write_kubeconfig(&approver, dir, "approver")?;
        Ok(Self {
            cluster,
            admin,
            admin_kubeconfig,
            approver_kubeconfig,
            loaded,
        })
    }

    /// The bearer token of [`OBSERVER`], bound to the two admin-port ClusterRoles.
    pub fn admin_observer(&self) -> Result<String, SandboxError> {
        let creds = self
            .cluster
            .service_account(NAMESPACE, "sandbox-observer")?;
        for role in ["metrics-reader", "attestation-reader"] {
            self.cluster
                .load_yaml(&format!(
                    "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: sandbox-observer:{role}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: rubber-stamp:{role}
subjects:
  - kind: ServiceAccount
    name: sandbox-observer
    namespace: {NAMESPACE}
"
                ))
                .map_err(|e| SandboxError::Setup(format!("binding the observer to {role}: {e}")))?;
        }
        match creds.auth {
            rubber_stamp_apiserver::Auth::Token(token) => Ok(token),
            rubber_stamp_apiserver::Auth::ClientCertificate { .. } => Err(SandboxError::Setup(
                "the cluster gave the observer ServiceAccount no token".to_owned(),
            )),
        }
    }

    /// Writes a kubeconfig with a kubelet's client certificate for `node`
    /// (`system:node:<node>`, group `system:nodes`, from the cluster CA) and
    /// returns it with the certificate and key as one PEM (the kubelet's
    /// `kubelet-client-current.pem`, which the agent reads).
    pub fn node_credentials(
        &self,
        node: &str,
        dir: &Path,
    ) -> Result<NodeCredentials, SandboxError> {
        let creds = self.cluster.node(node)?;
        let kubeconfig = self.cluster.write_kubeconfig(&creds, dir, "kubelet")?;
        let rubber_stamp_apiserver::Auth::ClientCertificate { cert_pem, key_pem } = &creds.auth
        else {
            return Err(SandboxError::Setup(format!(
                "the cluster gave node {node} no client certificate"
            )));
        };
        let client_pem = dir.join("kubelet-client-current.pem");
        write_private(&client_pem, &format!("{cert_pem}{key_pem}"))?;
        Ok(NodeCredentials {
            kubeconfig,
            client_pem,
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.clone(),
            kube: creds,
        })
    }
}

/// A node's kubelet credentials on disk.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    /// `kubelet.kubeconfig`.
    pub kubeconfig: PathBuf,
    /// Certificate and key in one PEM file.
    pub client_pem: PathBuf,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, PEM.
    pub key_pem: String,
    /// The credentials, for in-process clients.
    pub kube: rubber_stamp_apiserver::Credentials,
}

/// Writes a file readable only by its owner.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), SandboxError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| SandboxError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}
