//! Credentials for any identity, kubeconfig files for them, and kube-rs clients built from those kubeconfigs.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::json;

use super::ClusterError;
use super::auth::UserInfo;

/// How a client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A client certificate issued by the cluster CA.
    ClientCertificate {
        /// Certificate PEM.
        cert_pem: String,
        /// Private key PEM.
        key_pem: String,
    },
    /// A bearer token: a static one ([`crate::Cluster::add_token`]) or a ServiceAccount
    /// token from a TokenRequest.
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientCertificate { .. } => f.write_str("ClientCertificate(..)"),
            Self::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// An identity a client can use against the testbed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Who the server will see (without `system:authenticated`).
    pub user: UserInfo,
    /// The secret.
    pub auth: Auth,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig (YAML) for `server` trusting `ca_pem`, authenticating as `creds`.
pub fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    creds: &Credentials,
) -> Result<String, ClusterError> {
    let user_name = creds.user.name.clone();
    let user = match &creds.auth {
        Auth::ClientCertificate { cert_pem, key_pem } => json!({
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }),
        Auth::Token(t) => json!({"token": t}),
    };
    let context = format!("{user_name}@testbed");
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": "testbed", "user": user_name, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).map_err(|e| ClusterError::Kubeconfig(e.to_string()))
}

/// Writes `<dir>/<stem>.kubeconfig` (mode 0600); returns its path.
pub fn write_kubeconfig(
    dir: &Path,
    stem: &str,
    server: &str,
    ca_pem: &str,
    creds: &Credentials,
) -> Result<PathBuf, ClusterError> {
    let path = dir.join(format!("{stem}.kubeconfig"));
    let yaml = kubeconfig_yaml(server, ca_pem, creds)?;
    std::fs::write(&path, yaml).map_err(|source| ClusterError::Io {
        path: path.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ClusterError::Io {
                path: path.clone(),
                source,
            },
        )?;
    }
    Ok(path)
}

/// A kube-rs client configured exactly as from that kubeconfig.
pub async fn client(
    server: &str,
    ca_pem: &str,
    creds: &Credentials,
) -> Result<kube::Client, ClusterError> {
    let yaml = kubeconfig_yaml(server, ca_pem, creds)?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml)
        .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| ClusterError::Kubeconfig(e.to_string()))
}
