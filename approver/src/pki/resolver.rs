//! The serving certificate rustls asks for on every handshake, swappable at run time: a new
//! certificate is used for new handshakes while established connections keep theirs.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate and key do not make a serving identity.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The certificate PEM holds no certificate or is malformed.
    #[error("certificate: {0}")]
    Certificate(rustls_pki_types::pem::Error),
    /// The key PEM holds no private key or is malformed.
    #[error("private key: {0}")]
    Key(rustls_pki_types::pem::Error),
    /// rustls cannot use the key, or it does not belong to the certificate.
    #[error("certificate and key: {0}")]
    Mismatch(#[from] rustls::Error),
}

/// The certificate the attestation server presents. Cheap to share; [`swap`](Self::swap)
/// replaces it for every later handshake.
pub struct ServingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

/// Parses a PEM certificate chain (leaf first) and its PEM private key into what rustls
/// serves, checking that the key belongs to the leaf.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, KeyError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(KeyError::Certificate)?;
    if chain.is_empty() {
        return Err(KeyError::Certificate(
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(KeyError::Key)?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

// === impl ServingCertificate ===

impl ServingCertificate {
    /// Starts out serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// What new handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The leaf certificate served now, DER.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current().cert.first().cloned()
    }

    /// Serves `key` from the next handshake on. Returns whether the chain changed (swapping
    /// in the same chain again is a no-op).
    pub fn swap(&self, key: CertifiedKey) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.cert == key.cert {
            return false;
        }
        *current = Arc::new(key);
        true
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leaf = self.leaf();
        f.debug_struct("ServingCertificate")
            .field("leaf_bytes", &leaf.map(|l| l.len()))
            .finish()
    }
}
