//! The attested channel's PKI on disk: the cluster CA (kubelet client certificates), the
//! approver's serving CA and certificate, and a stranger CA nobody trusts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::pki::{Ca, Leaf, LeafSpec, PkiError};

/// The name in the approver's serving certificate that agents verify.
pub const SERVER_NAME: &str = "localhost";

/// Why the channel's PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Generating or writing certificates failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The temporary directory could not be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The three CAs of the channel and the approver's serving certificate, on disk.
#[derive(Debug)]
pub struct ChannelPki {
    dir: TempDir,
    /// Signs kubelet client certificates (the approver's client CA).
    pub cluster: Ca,
    /// Signs the approver's serving certificate (the agents' trust bundle).
    pub serving: Ca,
    /// Signs certificates nobody should trust.
    pub stranger: Ca,
    /// Path of the cluster CA certificate.
    pub cluster_ca: PathBuf,
    /// Path of the serving CA certificate.
    pub serving_ca: PathBuf,
    /// The approver's serving certificate and key.
    pub server: Leaf,
    /// Path of the serving certificate (the approver's `--tls-cert`).
    pub server_cert: PathBuf,
    /// Path of its key (`--tls-key`).
    pub server_key: PathBuf,
}

impl ChannelPki {
    /// Fresh CAs and a serving certificate for `localhost`, 127.0.0.1 and ::1, written to
    /// a temporary directory.
    pub fn new() -> Result<Self, SetupError> {
        install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let cluster = Ca::new("test-cluster-ca")?;
        let serving = Ca::new("test-approver-serving-ca")?;
        let stranger = Ca::new("stranger-ca")?;
        let cluster_ca = cluster.write_cert(dir.path(), "cluster-ca")?;
        let serving_ca = serving.write_cert(dir.path(), "serving-ca")?;
        let server = serving.server(
            &[SERVER_NAME],
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        )?;
        let (server_cert, server_key, _) = server.write(dir.path(), "approver")?;
        Ok(Self {
            dir,
            cluster,
            serving,
            stranger,
            cluster_ca,
            serving_ca,
            server,
            server_cert,
            server_key,
        })
    }

    /// The directory everything is written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubelet client certificate for `node` from the cluster CA.
    pub fn node(&self, node: &str) -> Result<Leaf, PkiError> {
        self.cluster.node_client(node)
    }

    /// A client certificate from the cluster CA with any subject.
    pub fn client(&self, spec: &LeafSpec) -> Result<Leaf, PkiError> {
        self.cluster.issue(spec)
    }

    /// Writes `leaf` as the kubelet does (certificate and key in one PEM file) and returns
    /// the path.
    pub fn write_combined(&self, leaf: &Leaf, stem: &str) -> Result<PathBuf, PkiError> {
        let (_, _, combined) = leaf.write(self.dir(), stem)?;
        Ok(combined)
    }
}

/// Installs rustls' ring provider for this process (a no-op when already installed).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The serial number of a certificate, lower-case hex (as the approver records it).
pub fn serial_of(leaf: &Leaf) -> Result<String, PkiError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(&leaf.cert_der).map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The leaf spec the kubelet's certificates follow, for tests that vary one field.
pub fn kubelet_spec(node: &str) -> LeafSpec {
    LeafSpec::client(&format!("system:node:{node}"), &["system:nodes"])
}
