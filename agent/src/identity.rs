//! The agent's TLS identity: the kubelet's client certificate and key, read from files and
//! read again on an interval so a rotation (the kubelet swaps a symlink) is picked up.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Largest identity file read, in bytes (a kubelet client PEM is about 2 KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where the certificate and key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// One PEM file holding the certificate chain and the key (the kubelet's layout).
    Combined(PathBuf),
    /// Separate certificate and key files.
    Separate {
        /// Certificate chain, PEM.
        cert: PathBuf,
        /// Private key, PEM.
        key: PathBuf,
    },
}

/// A loaded certificate and key, as PEM, with what the certificate says for logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM holding the certificate chain (may also hold the key).
    pub cert_pem: Vec<u8>,
    /// PEM holding the private key (may also hold the certificates).
    pub key_pem: Vec<u8>,
    /// The leaf's subject common name.
    pub common_name: String,
    /// The leaf's serial number, lower-case hex.
    pub serial: String,
    /// End of the leaf's validity, RFC 3339.
    pub not_after: String,
}

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is larger than any identity file should be.
    #[error("{0} is larger than 1 MiB")]
    TooLarge(PathBuf),
    /// The certificate file holds no certificate or has broken PEM.
    #[error("{path}: no usable certificate: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The key file holds no private key or has broken PEM.
    #[error("{path}: no usable private key: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The private key is not the certificate's (or not a key rustls can use).
    #[error("{key} does not hold the private key of the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The leaf certificate is not valid X.509.
    #[error("{path}: certificate does not parse: {reason}")]
    X509 {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

// === impl IdentitySource ===

impl IdentitySource {
    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        match self {
            Self::Combined(path) | Self::Separate { cert: path, .. } => path,
        }
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        match self {
            Self::Combined(path) | Self::Separate { key: path, .. } => path,
        }
    }

    /// Reads and checks the files: at least one certificate, one private key.
    pub fn load(&self) -> Result<ClientIdentity, IdentityError> {
        let cert_path = self.cert_path();
        let cert_pem = read(cert_path)?;
        let key_pem = match self {
            Self::Combined(_) => cert_pem.clone(),
            Self::Separate { key, .. } => read(key)?,
        };
        ClientIdentity::check(cert_pem, key_pem, cert_path, self.key_path())
    }
}

// === impl ClientIdentity ===

impl ClientIdentity {
    /// An identity from PEM in memory (a simulated node's), checked as files are; errors
    /// name the files `(memory)`.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, IdentityError> {
        let memory = Path::new("(memory)");
        Self::check(cert_pem, key_pem, memory, memory)
    }

    /// Checks the PEM: at least one certificate, one private key that is the leaf's.
    fn check(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, IdentityError> {
        let certificate_error = |source| IdentityError::Certificate {
            path: cert_path.to_owned(),
            source,
        };
        let leaf = CertificateDer::pem_slice_iter(&cert_pem)
            .next()
            .ok_or(rustls_pki_types::pem::Error::NoItemsFound)
            .map_err(certificate_error)?
            .map_err(certificate_error)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| IdentityError::Key {
            path: key_path.to_owned(),
            source,
        })?;
        // A half-rotated pair (separate files written one after the other) is refused here,
        // so the agent keeps its previous identity instead of failing every handshake.
        rustls::sign::CertifiedKey::from_der(
            vec![leaf.clone().into_owned()],
            key,
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| IdentityError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: e.to_string(),
        })?;
        let (_, cert) = X509Certificate::from_der(&leaf).map_err(|e| IdentityError::X509 {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let serial = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let not_after = cert
            .validity()
            .not_after
            .to_rfc2822()
            .unwrap_or_else(|_| cert.validity().not_after.to_string());
        Ok(Self {
            cert_pem,
            key_pem,
            common_name,
            serial,
            not_after,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let read_error = |source| IdentityError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > MAX_FILE_BYTES {
        return Err(IdentityError::TooLarge(path.to_owned()));
    }
    std::fs::read(path).map_err(read_error)
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("common_name", &self.common_name)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Reads the identity every `interval` until `stop`, publishing on `tx` whenever the
/// files' content changes and still makes a valid identity. A half-written or broken
/// file keeps the previous identity in use (and is logged) until it is valid again.
pub async fn watch_identity(
    source: IdentitySource,
    interval: Duration,
    tx: watch::Sender<Option<Arc<ClientIdentity>>>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match source.load() {
            Ok(identity) => {
                last_error = None;
                let changed = tx.send_if_modified(|current| {
                    if current.as_deref() == Some(&identity) {
                        return false;
                    }
                    tracing::info!(
                        common_name = %identity.common_name,
                        serial = %identity.serial,
                        not_after = %identity.not_after,
                        "client identity loaded"
                    );
                    *current = Some(Arc::new(identity.clone()));
                    true
                });
                if changed {
                    tracing::debug!("streams will reconnect with the new identity");
                }
            }
            Err(error) => {
                let message = error.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!(%error, "client identity unusable; keeping the previous one");
                    last_error = Some(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn mk_pems(cn: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_combined_file_and_separate_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = mk_pems("system:node:worker-1");
        let combined = dir.path().join("kubelet-client-current.pem");
        std::fs::write(&combined, format!("{cert}{key}")).expect("write");
        let id = IdentitySource::Combined(combined).load().expect("combined");
        assert_eq!(id.common_name, "system:node:worker-1");
        assert!(!id.serial.is_empty());

        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &cert).expect("write");
        std::fs::write(&k, &key).expect("write");
        let separate = IdentitySource::Separate {
            cert: c.clone(),
            key: k.clone(),
        }
        .load()
        .expect("separate");
        assert_eq!(separate.serial, id.serial);

        // Another certificate's key is refused, naming both files.
        // The same PEM from memory makes the same identity.
        let memory = ClientIdentity::from_pem(cert.clone().into_bytes(), key.clone().into_bytes())
            .expect("from memory");
        assert_eq!(memory.serial, id.serial);
        assert_eq!(memory.common_name, "system:node:worker-1");

        let (_, other_key) = mk_pems("system:node:worker-1");
        std::fs::write(&k, &other_key).expect("write");
        let mismatch = IdentitySource::Separate { cert: c, key: k }.load();
        assert!(
            matches!(mismatch, Err(IdentityError::Mismatch { .. })),
            "{mismatch:?}"
        );
    }

    #[test]
    fn missing_or_incomplete_files_are_precise_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pem");
        assert!(matches!(
            IdentitySource::Combined(path.clone()).load(),
            Err(IdentityError::Read { .. })
        ));
        let (cert, key) = mk_pems("system:node:a");
        std::fs::write(&path, &cert).expect("write");
        assert!(matches!(
            IdentitySource::Combined(path.clone()).load(),
            Err(IdentityError::Key { .. })
        ));
        std::fs::write(&path, &key).expect("write");
        assert!(matches!(
            IdentitySource::Combined(path).load(),
            Err(IdentityError::Certificate { .. })
        ));
    }
}
