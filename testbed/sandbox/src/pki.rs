//! The approver's serving PKI in the sandbox: its own CA (the agents' trust
//! bundle, separate from the cluster CA) and one serving certificate for the
//! approver Service name and every replica address, shared by the replicas
//! as a Deployment shares its TLS Secret.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::SandboxError;
use rubber_stamp_testkit::pki::Ca;

/// The approver's headless Service as agents dial it.
pub const SERVICE_NAME: &str = "rubber-stamp-approver.rubber-stamp.svc";
/// The same, fully qualified (also in the certificate).
pub const SERVICE_FQDN: &str = "rubber-stamp-approver.rubber-stamp.svc.cluster.local";

/// The serving CA and certificate, on disk.
#[derive(Debug)]
pub struct ServingPki {
    /// Signs the approver's serving certificate.
    pub ca: Ca,
    /// The CA certificate (agents' `--approver-ca`).
    pub ca_path: PathBuf,
    /// The serving certificate chain.
    pub cert_path: PathBuf,
    /// Its key.
    pub key_path: PathBuf,
}

impl ServingPki {
    /// A new CA and a certificate for the Service names and `replicas`,
    /// written to `dir` (`approver-serving-ca.crt`, `approver.crt`, `approver.key`).
    pub fn create(dir: &Path, replicas: &[IpAddr]) -> Result<Self, SandboxError> {
        let ca = Ca::new("rubber-stamp-approver-serving-ca")?;
        let ca_path = ca.write_cert(dir, "approver-serving-ca")?;
        let leaf = ca.server(&[SERVICE_NAME, SERVICE_FQDN], replicas)?;
        let (cert_path, key_path, _) = leaf.write(dir, "approver")?;
        Ok(Self {
            ca,
            ca_path,
            cert_path,
            key_path,
        })
    }
}
