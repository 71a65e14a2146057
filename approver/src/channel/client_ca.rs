//! The client-certificate verifier of the attestation port: WebPKI against `--client-ca`,
//! plus a warning an operator can act on when the two sides disagree about the CA.
//!
//! A `--client-ca` that is not the CA the kubelets' client certificates chain to (a
//! cluster whose kubelet client CA is not `kube-root-ca.crt`, a rotated CA) refuses every
//! agent, and the only trace would be a counter of `untrusted_certificate` handshakes. The
//! verifier names both CAs instead: the issuer of the refused certificate, and the subjects
//! in `--client-ca`, at most once per [`WARN_INTERVAL`] with a count of those held back.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rubber_stamp_listen::Throttle;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::time::Instant;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// Longest silence between two warnings about certificates from an unknown CA.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// A [`ClientCertVerifier`] that delegates every decision to `inner` and warns, rate
/// limited, when a certificate is refused for an issuer `--client-ca` does not hold (by
/// name, or by key under the same name).
pub struct WatchedClientCa {
    inner: Arc<dyn ClientCertVerifier>,
    path: PathBuf,
    /// The subjects of the CAs in `--client-ca`, for the warning.
    subjects: String,
    log: Mutex<Throttle>,
}

impl WatchedClientCa {
    /// Wraps `inner`, built from the certificates `cas` read from `path`.
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        path: PathBuf,
        cas: &[CertificateDer<'_>],
    ) -> Self {
        let subjects = cas
            .iter()
            .map(|ca| describe(ca).subject)
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            inner,
            path,
            subjects,
            log: Mutex::new(Throttle::new(WARN_INTERVAL)),
        }
    }

    fn warn_unknown_issuer(&self, end_entity: &CertificateDer<'_>) {
        let admitted = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now());
        let Some(held_back) = admitted else {
            return;
        };
        let presented = describe(end_entity);
        tracing::warn!(
            client_ca = %self.path.display(),
            client_ca_subjects = %self.subjects,
            certificate_subject = %presented.subject,
            certificate_issuer = %presented.issuer,
            certificate_authority_key_id = %presented.authority_key_id,
            held_back,
            "an agent's client certificate is not signed by a CA in --client-ca: \
             give --client-ca the CA that signs the kubelets' client certificates \
             (kube-controller-manager --cluster-signing-kube-apiserver-client-cert-file \
             or --cluster-signing-cert-file), or run the agents with --identity token"
        );
    }
}

impl fmt::Debug for WatchedClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedClientCa")
            .field("path", &self.path)
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for WatchedClientCa {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        // UnknownIssuer: no CA of that name. BadSignature: a CA of that name, another key
        // (a rotated cluster CA, or two CAs both called `CN=kubernetes`).
        if let Err(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) = &verdict
        {
            self.warn_unknown_issuer(end_entity);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// What the warning says about one certificate.
#[derive(Debug, PartialEq, Eq)]
struct Described {
    subject: String,
    issuer: String,
    authority_key_id: String,
}

/// The subject, issuer and authority key id of `der`, or `unparsable` for each.
fn describe(der: &CertificateDer<'_>) -> Described {
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => {
            let authority_key_id = cert
                .iter_extensions()
                .find_map(|ext| match ext.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                        aki.key_identifier.as_ref().map(|id| hex(id.0))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| "none".to_owned());
            Described {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                authority_key_id,
            }
        }
        Err(_) => Described {
            subject: "unparsable".to_owned(),
            issuer: "unparsable".to_owned(),
            authority_key_id: "unparsable".to_owned(),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair};

    use super::*;

    fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).expect("ca"), key)
    }

    /// A kubelet client certificate for worker-1, signed by `issuer` (with `key`).
    fn leaf_of(issuer: &rcgen::Certificate, key: &KeyPair) -> rcgen::Certificate {
        let leaf_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "system:node:worker-1");
        let issuer = rcgen::Issuer::from_ca_cert_der(issuer.der(), key).expect("issuer");
        params.signed_by(&leaf_key, &issuer).expect("leaf")
    }

    /// The verifier `--client-ca` holding `configured` gets.
    fn watched(configured: &rcgen::Certificate) -> WatchedClientCa {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(configured.der().clone()).expect("root");
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        WatchedClientCa::new(
            inner,
            PathBuf::from("/etc/client-ca.crt"),
            &[configured.der().clone()],
        )
    }

    /// Whether the throttle let this interval's line through already.
    fn warned(watched: &WatchedClientCa) -> bool {
        watched
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now())
            .is_none()
    }

    #[test]
    fn describes_subject_issuer_and_key_id() {
        let (ca, _) = ca("kubelet-client-ca");
        let described = describe(ca.der());
        assert_eq!(described.subject, "CN=kubelet-client-ca");
        assert_eq!(described.issuer, "CN=kubelet-client-ca");
        assert_eq!(
            describe(&CertificateDer::from(vec![1, 2, 3])).issuer,
            "unparsable"
        );
    }

    /// A certificate of the configured CA passes and warns about nothing.
    #[test]
    fn a_certificate_of_the_configured_ca_passes_without_a_warning() {
        let (configured, key) = ca("configured-ca");
        let watched = watched(&configured);
        let leaf = leaf_of(&configured, &key);
        assert!(
            watched
                .verify_client_cert(leaf.der(), &[], UnixTime::now())
                .is_ok()
        );
        assert!(!warned(&watched), "no warning for an accepted certificate");
    }

    /// A certificate of another CA is refused exactly as WebPKI refuses it, and the refusal
    /// is the one that warns (the throttle has just let a line through).
    #[test]
    fn a_certificate_of_another_ca_is_refused_and_warned_about() {
        let (configured, _) = ca("configured-ca");
        let (other, other_key) = ca("the-kubelets-real-ca");
        let leaf = leaf_of(&other, &other_key);
        let watched = watched(&configured);
        assert_eq!(watched.subjects, "CN=configured-ca");
        let verdict = watched.verify_client_cert(leaf.der(), &[], UnixTime::now());
        assert!(matches!(
            verdict,
            Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
        ));
        assert!(warned(&watched), "the refusal used this interval's line");
        assert_eq!(describe(leaf.der()).issuer, "CN=the-kubelets-real-ca");
    }

    /// A CA with the same name and another key (a rotation): refused as WebPKI refuses it,
    /// and warned about too.
    #[test]
    fn a_certificate_of_a_same_named_ca_with_another_key_is_warned_about() {
        let (configured, _) = ca("kubernetes");
        let (rotated, rotated_key) = ca("kubernetes");
        let leaf = leaf_of(&rotated, &rotated_key);
        let watched = watched(&configured);
        let verdict = watched.verify_client_cert(leaf.der(), &[], UnixTime::now());
        assert!(
            matches!(
                verdict,
                Err(Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                ))
            ),
            "{verdict:?}"
        );
        assert!(warned(&watched), "the refusal used this interval's line");
    }
}
