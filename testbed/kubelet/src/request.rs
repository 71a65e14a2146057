//! The serving CSR exactly as a kubelet with `serverTLSBootstrap: true`
//! creates it, and how it reads the CSR's status while it waits.
//!
//! What the kubelet does (`pkg/kubelet/certificate/kubelet.go` and client-go
//! `util/certificate/csr`): an ECDSA P-256 key; a PKCS#10 request with subject
//! `O=system:nodes, CN=system:node:<node>` (that order, PrintableString), DNS SANs from the
//! node's `Hostname`/`*DNS` addresses and IP SANs from its `*IP` addresses,
//! no other extension, signed with ECDSA-SHA256; a
//! `certificates.k8s.io/v1` CertificateSigningRequest with `generateName:
//! csr-`, `signerName: kubernetes.io/kubelet-serving`, usages `digital
//! signature` + `server auth` (ECDSA keys; `key encipherment` is added only
//! for RSA keys since 1.27), and `expirationSeconds` when configured. The
//! API server fills in username, groups and uid.

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::ObjectMeta;
use rcgen::string::PrintableString;
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};

use super::error::KubeletError;
use super::identity::NodeIdentity;

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The usages a kubelet asks for with an ECDSA key.
pub const ECDSA_SERVING_USAGES: [&str; 2] = ["digital signature", "server auth"];
/// The name prefix the API server completes.
pub const GENERATE_NAME: &str = "csr-";
/// The smallest `expirationSeconds` the API server accepts.
pub const MIN_EXPIRATION_SECONDS: i32 = 600;

/// A fresh key and the PKCS#10 request for a node's serving certificate.
pub struct ServingRequest {
    identity: NodeIdentity,
    key: KeyPair,
    csr_pem: String,
}

impl std::fmt::Debug for ServingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingRequest")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ServingRequest {
    /// Generates an ECDSA P-256 key and the request for `identity`.
    pub fn generate(identity: &NodeIdentity) -> Result<Self, KubeletError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, go_string("system:nodes"));
        dn.push(DnType::CommonName, go_string(&identity.common_name()));
        params.distinguished_name = dn;
        params.subject_alt_names = identity
            .dns_names()
            .into_iter()
            .map(|n| Ok(SanType::DnsName(n.try_into()?)))
            .chain(identity.ips().iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            identity: identity.clone(),
            csr_pem: csr.pem()?,
            key,
        })
    }

    /// Who the request is for.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The request, PEM (`CERTIFICATE REQUEST`).
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The private key, PKCS#8 DER.
    pub fn key_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// The public key, SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }

    /// The CertificateSigningRequest object the kubelet creates.
    /// `expiration_seconds` is passed as given, as client-go does (the API
    /// server refuses values under [`MIN_EXPIRATION_SECONDS`]).
    pub fn object(&self, expiration_seconds: Option<i32>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                generate_name: Some(GENERATE_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(self.csr_pem.clone().into_bytes()),
                signer_name: KUBELET_SERVING_SIGNER.to_owned(),
                usages: Some(ECDSA_SERVING_USAGES.map(str::to_owned).to_vec()),
                expiration_seconds,
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        }
    }
}

/// A subject string encoded as Go's `crypto/x509` encodes it: PrintableString
/// when every character allows it (always, for node names), else UTF8String.
fn go_string(s: &str) -> DnValue {
    PrintableString::try_from(s).map_or_else(
        |_| DnValue::Utf8String(s.to_owned()),
        DnValue::PrintableString,
    )
}

/// Where a CSR stands, read the way client-go's `WaitForCertificate` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsrState {
    /// No decision yet, or approved but not issued yet.
    Pending {
        /// Whether it carries an `Approved` condition.
        approved: bool,
    },
    /// Approved and `status.certificate` is set.
    Issued {
        /// `status.certificate` (PEM, leaf first).
        certificate_pem: String,
    },
    /// A `Denied` condition.
    Denied {
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// A `Failed` condition.
    Failed {
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
}

/// The state of `csr`. `Denied` and `Failed` win over everything; a
/// certificate counts only with an `Approved` condition (as in client-go).
pub fn csr_state(csr: &CertificateSigningRequest) -> CsrState {
    let Some(status) = &csr.status else {
        return CsrState::Pending { approved: false };
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let text = |c: &k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition| {
        (
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        )
    };
    // A condition with status "False" does not count (the API server only
    // ever sets "True" for these types, but be exact).
    let active = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status != "False")
    };
    if let Some(c) = active("Denied") {
        let (reason, message) = text(c);
        return CsrState::Denied { reason, message };
    }
    if let Some(c) = active("Failed") {
        let (reason, message) = text(c);
        return CsrState::Failed { reason, message };
    }
    let approved = active("Approved").is_some();
    match &status.certificate {
        Some(cert) if approved && !cert.0.is_empty() => CsrState::Issued {
            certificate_pem: String::from_utf8_lossy(&cert.0).into_owned(),
        },
        _ => CsrState::Pending { approved },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    fn mk_csr(conditions: &[(&str, &str)], certificate: Option<&str>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: (*t).to_owned(),
                            status: (*s).to_owned(),
                            reason: Some(format!("{t}Reason")),
                            message: Some(format!("{t} message")),
                            ..CertificateSigningRequestCondition::default()
                        })
                        .collect(),
                ),
                certificate: certificate.map(|c| ByteString(c.as_bytes().to_vec())),
            }),
            ..CertificateSigningRequest::default()
        }
    }

    #[test]
    fn state_follows_conditions_and_certificate() {
        assert_eq!(
            csr_state(&CertificateSigningRequest::default()),
            CsrState::Pending { approved: false }
        );
        assert_eq!(
            csr_state(&mk_csr(&[("Approved", "True")], None)),
            CsrState::Pending { approved: true }
        );
        assert_eq!(
            csr_state(&mk_csr(&[("Approved", "True")], Some(""))),
            CsrState::Pending { approved: true },
            "an empty certificate is not issued yet"
        );
        assert_eq!(
            csr_state(&mk_csr(&[("Approved", "True")], Some("PEM"))),
            CsrState::Issued {
                certificate_pem: "PEM".into()
            }
        );
        assert_eq!(
            csr_state(&mk_csr(&[], Some("PEM"))),
            CsrState::Pending { approved: false },
            "a certificate without approval does not count"
        );
        assert_eq!(
            csr_state(&mk_csr(&[("Denied", "True")], None)),
            CsrState::Denied {
                reason: "DeniedReason".into(),
                message: "Denied message".into()
            }
        );
        assert_eq!(
            csr_state(&mk_csr(&[("Approved", "True"), ("Failed", "True")], None)),
            CsrState::Failed {
                reason: "FailedReason".into(),
                message: "Failed message".into()
            }
        );
        assert_eq!(
            csr_state(&mk_csr(&[("Denied", "False")], None)),
            CsrState::Pending { approved: false }
        );
    }

    #[test]
    fn object_is_what_the_kubelet_creates() {
        let id = NodeIdentity::new("w", "w", &["198.18.0.2".parse().expect("ip")]).expect("id");
        let req = ServingRequest::generate(&id).expect("request");
        let obj = req.object(Some(3600));
        assert_eq!(obj.metadata.generate_name.as_deref(), Some("csr-"));
        assert_eq!(obj.metadata.name, None);
        assert_eq!(obj.spec.signer_name, "kubernetes.io/kubelet-serving");
        assert_eq!(
            obj.spec.usages.as_deref(),
            Some(&["digital signature".to_owned(), "server auth".to_owned()][..])
        );
        assert_eq!(obj.spec.expiration_seconds, Some(3600));
        assert_eq!(obj.spec.request.0, req.csr_pem().as_bytes());
        assert_eq!(obj.spec.username, None, "the API server fills it in");
        assert_eq!(req.object(None).spec.expiration_seconds, None);
    }
}
