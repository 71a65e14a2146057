//! The agent's credential, read from files and read again on an interval so a rotation is
//! picked up: the kubelet's client certificate and key (the kubelet swaps a symlink), or a
//! projected ServiceAccount token (the kubelet rewrites the volume at 80 % of its life).
//!
//! A token is sent as it is, in the `authorization` header of every stream; the approver has
//! the API server review it. What the agent reads from the token's payload (node, Pod,
//! expiry) is for its logs only — it verifies nothing and decides nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rubber_stamp_proto::limits::MAX_TOKEN_BYTES;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Largest identity file read, in bytes (a kubelet client PEM is about 2 KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where the credential is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// A projected ServiceAccount token file (`--identity token`).
    Token(PathBuf),
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

/// A loaded credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A client certificate and key, presented in the TLS handshake.
    Certificate(ClientCertificate),
    /// A ServiceAccount token, presented on every stream.
    Token(BearerToken),
}

/// A ServiceAccount token, with what its payload says for logs (unverified).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// The token.
    pub token: Arc<str>,
    /// The node its `kubernetes.io` claim names, if any.
    pub node: Option<String>,
    /// The Pod it is bound to, if any.
    pub pod: Option<String>,
    /// Its `exp`, Unix seconds.
    pub expires: Option<u64>,
}

/// A loaded certificate and key, as PEM, with what the certificate says for logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
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
    /// The token file does not hold a usable token.
    #[error("{path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
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
    /// The certificate file (the token file for a token).
    pub fn cert_path(&self) -> &Path {
        match self {
            Self::Combined(path) | Self::Separate { cert: path, .. } | Self::Token(path) => path,
        }
    }

    /// The key file (the token file for a token).
    pub fn key_path(&self) -> &Path {
        match self {
            Self::Combined(path) | Self::Separate { key: path, .. } | Self::Token(path) => path,
        }
    }

    /// Reads and checks the files: at least one certificate, one private key; or one token.
    pub fn load(&self) -> Result<ClientIdentity, IdentityError> {
        if let Self::Token(path) = self {
            let bytes = read(path)?;
            return BearerToken::parse(&bytes).map_err(|reason| IdentityError::Token {
                path: path.clone(),
                reason,
            });
        }
        let cert_path = self.cert_path();
        let cert_pem = read(cert_path)?;
        let key_pem = match self {
            Self::Combined(_) | Self::Token(_) => cert_pem.clone(),
            Self::Separate { key, .. } => read(key)?,
        };
        ClientCertificate::check(cert_pem, key_pem, cert_path, self.key_path())
            .map(ClientIdentity::Certificate)
    }
}

// === impl ClientIdentity ===

impl ClientIdentity {
    /// An identity from PEM in memory (a simulated node's), checked as files are; errors
    /// name the files `(memory)`.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, IdentityError> {
        let memory = Path::new("(memory)");
        ClientCertificate::check(cert_pem, key_pem, memory, memory).map(Self::Certificate)
    }

    /// An identity from a token in memory (a simulated node's), checked as a file is.
    pub fn from_token(token: &str) -> Result<Self, IdentityError> {
        BearerToken::parse(token.as_bytes()).map_err(|reason| IdentityError::Token {
            path: PathBuf::from("(memory)"),
            reason,
        })
    }

    /// The node this credential names, as far as the agent can tell (for a log line that
    /// compares it with the node the approver attributes reports to).
    pub fn claimed_node(&self) -> Option<&str> {
        match self {
            Self::Certificate(certificate) => certificate.common_name.strip_prefix("system:node:"),
            Self::Token(token) => token.node.as_deref(),
        }
    }

    fn log_loaded(&self) {
        match self {
            Self::Certificate(identity) => tracing::info!(
                common_name = %identity.common_name,
                serial = %identity.serial,
                not_after = %identity.not_after,
                "client certificate loaded"
            ),
            Self::Token(token) => tracing::info!(
                node = token.node.as_deref().unwrap_or("(none)"),
                pod = token.pod.as_deref().unwrap_or("(none)"),
                expires = token.expires.unwrap_or_default(),
                "ServiceAccount token loaded"
            ),
        }
    }
}

// === impl BearerToken ===

impl BearerToken {
    /// A token from a file's bytes: one line of visible ASCII (it travels in an HTTP
    /// header), at most [`MAX_TOKEN_BYTES`]. A JWT payload that does not decode is fine:
    /// the approver's review decides; only the log loses the claims.
    fn parse(bytes: &[u8]) -> Result<ClientIdentity, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "the token is not UTF-8".to_owned())?
            .trim();
        if text.is_empty() {
            return Err("the token file is empty (the kubelet has not written it yet?)".to_owned());
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "the token is {} bytes, more than {MAX_TOKEN_BYTES}",
                text.len()
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters other than visible ASCII".to_owned());
        }
        let claims = text
            .split('.')
            .nth(1)
            .and_then(|payload| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload.trim_end_matches('='))
                    .ok()
            })
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .unwrap_or_default();
        let kubernetes = &claims["kubernetes.io"];
        let name = |object: &str| kubernetes[object]["name"].as_str().map(str::to_owned);
        Ok(ClientIdentity::Token(Self {
            token: Arc::from(text),
            node: name("node"),
            pod: name("pod"),
            expires: claims["exp"].as_u64(),
        }))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("BearerToken")
            .field("node", &self.node)
            .field("pod", &self.pod)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

// === impl ClientCertificate ===

impl ClientCertificate {
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

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
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
                    identity.log_loaded();
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

    fn jwt(payload: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"ES256"}"#),
            b64(payload.to_string().as_bytes()),
            b64(b"signature")
        )
    }

    #[test]
    fn a_token_file_loads_with_its_claims_for_the_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let token = jwt(&serde_json::json!({
            "exp": 1_900_000_000u64,
            "kubernetes.io": {"node": {"name": "worker-1"}, "pod": {"name": "agent-x"}},
        }));
        std::fs::write(&path, format!("{token}\n")).expect("write");
        let ClientIdentity::Token(loaded) =
            IdentitySource::Token(path.clone()).load().expect("token")
        else {
            panic!("a token source loads a token");
        };
        assert_eq!(
            &*loaded.token, token,
            "the trailing newline is not part of it"
        );
        assert_eq!(loaded.node.as_deref(), Some("worker-1"));
        assert_eq!(loaded.pod.as_deref(), Some("agent-x"));
        assert_eq!(loaded.expires, Some(1_900_000_000));
        assert!(
            !format!("{loaded:?}").contains(&token),
            "Debug never shows the token"
        );
        // An opaque token still loads (the approver decides); the claims are just unknown.
        std::fs::write(&path, "opaque-token").expect("write");
        let ClientIdentity::Token(opaque) =
            IdentitySource::Token(path.clone()).load().expect("opaque")
        else {
            panic!("token");
        };
        assert_eq!(opaque.node, None);
        for (bad, why) in [
            ("", "empty"),
            ("two words", "visible ASCII"),
            ("caf\u{e9}", "visible ASCII"),
        ] {
            std::fs::write(&path, bad).expect("write");
            let error = IdentitySource::Token(path.clone())
                .load()
                .expect_err(bad)
                .to_string();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        std::fs::write(&path, "x".repeat(MAX_TOKEN_BYTES + 1)).expect("write");
        assert!(
            IdentitySource::Token(path)
                .load()
                .is_err_and(|e| e.to_string().contains("more than"))
        );
    }

    fn certificate(identity: ClientIdentity) -> ClientCertificate {
        match identity {
            ClientIdentity::Certificate(certificate) => certificate,
            ClientIdentity::Token(_) => panic!("a certificate source loads a certificate"),
        }
    }

    #[test]
    fn loads_a_combined_file_and_separate_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = mk_pems("system:node:worker-1");
        let combined = dir.path().join("kubelet-client-current.pem");
        std::fs::write(&combined, format!("{cert}{key}")).expect("write");
        let id = certificate(IdentitySource::Combined(combined).load().expect("combined"));
        assert_eq!(id.common_name, "system:node:worker-1");
        assert!(!id.serial.is_empty());

        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &cert).expect("write");
        std::fs::write(&k, &key).expect("write");
        let separate = certificate(
            IdentitySource::Separate {
                cert: c.clone(),
                key: k.clone(),
            }
            .load()
            .expect("separate"),
        );
        assert_eq!(separate.serial, id.serial);

        // Another certificate's key is refused, naming both files.
        // The same PEM from memory makes the same identity.
        let memory = certificate(
            ClientIdentity::from_pem(cert.clone().into_bytes(), key.clone().into_bytes())
                .expect("from memory"),
        );
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
