//! The issued serving certificate: checked against the key and the request,
//! kept in a kubelet-style certificate directory, reused when still good.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::*;

use super::error::KubeletError;
use super::identity::NodeIdentity;
use super::request::ServingRequest;

/// The file name the kubelet's certificate store points at the current
/// serving certificate (a symlink to a timestamped file: cert chain + key).
pub const CURRENT_FILE: &str = "kubelet-server-current.pem";
/// A stored certificate is reused only before this fraction of its lifetime
/// has passed (the kubelet rotates at 70–90 %).
const REUSE_BEFORE_LIFETIME: f64 = 0.8;

/// A serving certificate chain (leaf first) with its private key, checked to
/// belong together.
#[derive(Clone)]
pub struct ServingCertificate {
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    chain_pem: String,
    key_pem: String,
    facts: LeafFacts,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// What the leaf certificate says, as far as the simulator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafFacts {
    /// Subject common names.
    pub common_names: Vec<String>,
    /// Subject organisations.
    pub organizations: Vec<String>,
    /// DNS SANs, in certificate order.
    pub dns_names: Vec<String>,
    /// IP SANs, in certificate order.
    pub ips: Vec<IpAddr>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial number, hex.
    pub serial: String,
}

/// Checks `certificate_pem` (the CSR's `status.certificate`) against the
/// request it answers: the leaf's public key is the request's, its subject
/// and SANs are the ones asked for, and it is valid now.
pub fn verify_issued(
    request: &ServingRequest,
    certificate_pem: &str,
) -> Result<ServingCertificate, KubeletError> {
    let cert = ServingCertificate::from_pem(certificate_pem, &request.key_pem())?;
    cert.check_identity(request.identity())?;
    let now = jiff::Timestamp::now().as_second();
    if now < cert.facts.not_before || now > cert.facts.not_after {
        return Err(KubeletError::Mismatch(format!(
            "not valid now (valid from {} to {})",
            fmt_time(cert.facts.not_before),
            fmt_time(cert.facts.not_after)
        )));
    }
    Ok(cert)
}

// === impl ServingCertificate ===

impl ServingCertificate {
    /// Parses a chain (leaf first) and a private key, and checks that the key
    /// is the leaf's.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, KubeletError> {
        let mismatch = |d: String| KubeletError::Mismatch(d);
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| mismatch(format!("certificate PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| mismatch("no CERTIFICATE block".into()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| mismatch(format!("private key PEM: {e}")))?;
        let key_pair =
            KeyPair::try_from(&key).map_err(|e| mismatch(format!("private key: {e}")))?;
        let (_, parsed) = X509Certificate::from_der(leaf)
            .map_err(|e| mismatch(format!("certificate DER: {e}")))?;
        if parsed.public_key().raw != key_pair.subject_public_key_info().as_slice() {
            return Err(mismatch(
                "the certificate's public key is not the key we generated".into(),
            ));
        }
        let facts = leaf_facts(&parsed)?;
        let chain_pem = chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect::<String>();
        Ok(Self {
            chain_pem,
            key_pem: key_pair.serialize_pem(),
            key_der: key_pair.serialize_der(),
            chain,
            facts,
        })
    }

    /// What the leaf says.
    pub fn facts(&self) -> &LeafFacts {
        &self.facts
    }

    /// The chain, DER, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The chain then the key, PEM: the kubelet's store file format.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.chain_pem, self.key_pem)
    }

    /// Subject `O=system:nodes, CN=system:node:<name>` exactly, DNS SANs and
    /// IP SANs equal (as sets) to what `identity` asks for.
    pub fn check_identity(&self, identity: &NodeIdentity) -> Result<(), KubeletError> {
        let f = &self.facts;
        let mismatch = |what: &str, got: String, want: String| {
            Err(KubeletError::Mismatch(format!(
                "{what} is {got}, asked for {want}"
            )))
        };
        if f.common_names != [identity.common_name()] {
            return mismatch(
                "subject CN",
                format!("{:?}", f.common_names),
                identity.common_name(),
            );
        }
        if f.organizations != ["system:nodes"] {
            return mismatch(
                "subject O",
                format!("{:?}", f.organizations),
                "system:nodes".into(),
            );
        }
        let mut got_dns = f.dns_names.clone();
        let mut want_dns = identity.dns_names();
        got_dns.sort();
        want_dns.sort();
        if got_dns != want_dns {
            return mismatch("DNS SANs", format!("{got_dns:?}"), format!("{want_dns:?}"));
        }
        let mut got_ips = f.ips.clone();
        let mut want_ips = identity.ips().to_vec();
        got_ips.sort();
        want_ips.sort();
        if got_ips != want_ips {
            return mismatch("IP SANs", format!("{got_ips:?}"), format!("{want_ips:?}"));
        }
        Ok(())
    }

    /// Whether a stored certificate can be used instead of asking for a new
    /// one (what the kubelet's certificate manager does on start): it matches
    /// `identity` and less than 80 % of its lifetime has passed.
    pub fn reusable_for(&self, identity: &NodeIdentity, now: i64) -> Result<(), KubeletError> {
        self.check_identity(identity)?;
        let f = &self.facts;
        let lifetime = (f.not_after - f.not_before) as f64;
        let renew_at = f.not_before + (lifetime * REUSE_BEFORE_LIFETIME) as i64;
        if now < f.not_before || now >= renew_at {
            return Err(KubeletError::Mismatch(format!(
                "due for renewal (valid {} to {}, renew from {})",
                fmt_time(f.not_before),
                fmt_time(f.not_after),
                fmt_time(renew_at)
            )));
        }
        Ok(())
    }

    /// A rustls server configuration serving this chain (ring provider,
    /// ALPN h2 and http/1.1, no client authentication).
    pub fn tls_config(&self) -> Result<Arc<rustls::ServerConfig>, KubeletError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::try_from(self.key_der.clone())
            .map_err(|e| KubeletError::Mismatch(format!("private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn leaf_facts(cert: &X509Certificate<'_>) -> Result<LeafFacts, KubeletError> {
    let strings = |it: &mut dyn Iterator<Item = &AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| KubeletError::Mismatch(format!("subjectAltName: {e}")))?;
    for name in san.iter().flat_map(|s| &s.value.general_names) {
        match name {
            GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
            GeneralName::IPAddress(b) => ips.push(ip_from_bytes(b)?),
            other => {
                return Err(KubeletError::Mismatch(format!("unexpected SAN {other:?}")));
            }
        }
    }
    Ok(LeafFacts {
        common_names: strings(&mut cert.subject().iter_common_name()),
        organizations: strings(&mut cert.subject().iter_organization()),
        dns_names,
        ips,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, KubeletError> {
    match b.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(b).map_err(|_| bad_ip())?)),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(b).map_err(|_| bad_ip())?)),
        _ => Err(bad_ip()),
    }
}

fn bad_ip() -> KubeletError {
    KubeletError::Mismatch("an IP SAN is neither 4 nor 16 bytes".into())
}

pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A Unix time as RFC 3339, for messages.
pub(crate) fn fmt_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

/// A kubelet-style certificate directory (`--cert-dir`): timestamped
/// `kubelet-server-<time>.pem` files (mode 0600) and the
/// `kubelet-server-current.pem` symlink to the newest.
#[derive(Clone, Debug)]
pub struct CertDir {
    dir: PathBuf,
}

// === impl CertDir ===

impl CertDir {
    /// The directory (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `<dir>/kubelet-server-current.pem`.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    /// Writes the certificate and key to a new timestamped file and points
    /// the `current` symlink at it (atomically); returns the file's path.
    pub fn store(&self, cert: &ServingCertificate) -> Result<PathBuf, KubeletError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KubeletError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let stamp = jiff::Timestamp::now()
            .strftime("%Y-%m-%d-%H-%M-%S")
            .to_string();
        let name = format!("kubelet-server-{stamp}.pem");
        let file = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(cert.combined_pem().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &file).map_err(io(&file))?;
        let link_tmp = self.dir.join(format!(".{CURRENT_FILE}.tmp"));
        let _ = std::fs::remove_file(&link_tmp);
        std::os::unix::fs::symlink(&name, &link_tmp).map_err(io(&link_tmp))?;
        std::fs::rename(&link_tmp, self.current_path()).map_err(io(&self.current_path()))?;
        Ok(file)
    }

    /// The current certificate, if the directory has one.
    pub fn load_current(&self) -> Result<Option<ServingCertificate>, KubeletError> {
        let path = self.current_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KubeletError::Io { path, source }),
        };
        ServingCertificate::from_pem(&text, &text)
            .map(Some)
            .map_err(|e| KubeletError::Pem {
                path,
                detail: e.to_string(),
            })
    }
}
