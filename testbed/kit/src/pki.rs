//! Test PKI: certificate authorities and leaf certificates generated at test time with rcgen.
//!
//! Tests use separate CAs for the cluster (kubelet client certificates, the
//! API server), for the approver's gRPC serving certificate, and for
//! strangers whose certificates must be refused. Certificate requests are
//! [`crate::csr`]'s.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Errors from generating or writing test certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign.
    #[error("generating certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rcgen keeps one value per attribute type, so a subject can carry at most
    /// two organisations (the second under an attribute type rcgen treats as distinct).
    #[error("a test subject can have at most two organisations, got {0}")]
    TooManyOrganizations(usize),
    /// A certificate did not parse.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// Writing a PEM file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A certificate authority that can issue leaf certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What a leaf certificate should say.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// Subject organisations (Kubernetes groups), in order.
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Extended key usage `clientAuth`.
    pub client_auth: bool,
    /// Extended key usage `serverAuth`.
    pub server_auth: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A client certificate valid from an hour ago for a day.
    pub fn client(common_name: &str, organizations: &[&str]) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: common_name.to_owned(),
            organizations: organizations.iter().map(|o| (*o).to_owned()).collect(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            client_auth: true,
            server_auth: false,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
        }
    }

    /// A server certificate for the given names and addresses, valid for a day.
    pub fn server(common_name: &str, dns_names: &[&str], ips: &[IpAddr]) -> Self {
        Self {
            dns_names: dns_names.iter().map(|n| (*n).to_owned()).collect(),
            ips: ips.to_vec(),
            client_auth: false,
            server_auth: true,
            ..Self::client(common_name, &[])
        }
    }

    /// The same certificate, but already expired (valid two days ago for one day).
    pub fn expired(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::days(2);
        self.not_after = now - Duration::days(1);
        self
    }
}

/// An issued leaf certificate with its private key, in PEM and DER.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl Leaf {
    /// Certificate followed by key in one PEM document, the way the kubelet
    /// writes `kubelet-client-current.pem`.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Writes `<dir>/<stem>.crt`, `<dir>/<stem>.key` and `<dir>/<stem>.pem`
    /// (combined); returns the three paths in that order.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf, PathBuf), PkiError> {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        let combined = dir.join(format!("{stem}.pem"));
        write_file(&crt, &self.cert_pem)?;
        write_file(&key, &self.key_pem)?;
        write_file(&combined, &self.combined_pem())?;
        Ok((crt, key, combined))
    }
}

// === impl Ca ===

impl Ca {
    /// A new self-signed CA with an ECDSA P-256 key, valid for ten years.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The rcgen issuer, for signing CSRs (`CertificateSigningRequestParams::signed_by`).
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let orgs: Vec<&str> = spec.organizations.iter().map(String::as_str).collect();
        params.distinguished_name = subject(&spec.common_name, &orgs)?;
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
            .chain(spec.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// A kubelet client certificate: `CN=system:node:<node>`, `O=system:nodes`.
    pub fn node_client(&self, node: &str) -> Result<Leaf, PkiError> {
        self.issue(&LeafSpec::client(
            &format!("system:node:{node}"),
            &["system:nodes"],
        ))
    }

    /// A server certificate for the given DNS names and IPs.
    pub fn server(&self, dns_names: &[&str], ips: &[IpAddr]) -> Result<Leaf, PkiError> {
        let cn = dns_names.first().copied().unwrap_or("server");
        self.issue(&LeafSpec::server(cn, dns_names, ips))
    }

    /// Writes the CA certificate to `<dir>/<stem>.crt`; returns the path.
    pub fn write_cert(&self, dir: &Path, stem: &str) -> Result<PathBuf, PkiError> {
        let path = dir.join(format!("{stem}.crt"));
        write_file(&path, &self.cert_pem)?;
        Ok(path)
    }
}

/// `O=<org>…, CN=<cn>`. rcgen's `DistinguishedName` holds one value per
/// attribute type, so a second organisation goes in under a custom attribute
/// type with the organisationName OID (2.5.4.10): on the wire it is an
/// ordinary second `O`. More than two is refused rather than silently dropped.
fn subject(common_name: &str, organizations: &[&str]) -> Result<DistinguishedName, PkiError> {
    const ORGANIZATION_NAME_OID: [u64; 4] = [2, 5, 4, 10];
    let mut dn = DistinguishedName::new();
    match organizations {
        [] => {}
        [one] => dn.push(DnType::OrganizationName, *one),
        [first, second] => {
            dn.push(DnType::OrganizationName, *first);
            dn.push(
                DnType::CustomDnType(ORGANIZATION_NAME_OID.to_vec()),
                *second,
            );
        }
        more => return Err(PkiError::TooManyOrganizations(more.len())),
    }
    dn.push(DnType::CommonName, common_name);
    Ok(dn)
}

fn write_file(path: &Path, contents: &str) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn node_client_certificate_is_kubelet_shaped_and_chains_to_its_ca() {
        let ca = Ca::new("test-cluster-ca").expect("ca");
        let leaf = ca.node_client("worker-1").expect("leaf");
        let (_, cert) = X509Certificate::from_der(&leaf.cert_der).expect("parse leaf");
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cn, ["system:node:worker-1"]);
        assert_eq!(orgs, ["system:nodes"]);

        let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(ca.cert_pem().as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
            .expect("ca pem");
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("parse ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("leaf signed by ca");
        let stranger = Ca::new("stranger").expect("stranger");
        let stranger_der =
            rustls_pki_types::pem::PemObject::from_pem_slice(stranger.cert_pem().as_bytes())
                .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
                .expect("stranger pem");
        let (_, stranger_cert) = X509Certificate::from_der(&stranger_der).expect("parse");
        assert!(
            cert.verify_signature(Some(stranger_cert.public_key()))
                .is_err()
        );
    }

    #[test]
    fn two_organisations_both_reach_the_certificate_and_three_are_refused() {
        let ca = Ca::new("ca").expect("ca");
        let leaf = ca
            .issue(&LeafSpec::client(
                "system:node:n",
                &["system:nodes", "system:masters"],
            ))
            .expect("leaf");
        let (_, cert) = X509Certificate::from_der(&leaf.cert_der).expect("parse");
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(orgs, ["system:nodes", "system:masters"]);
        let three = ca.issue(&LeafSpec::client("x", &["a", "b", "c"]));
        assert!(matches!(three, Err(PkiError::TooManyOrganizations(3))));
    }

    #[test]
    fn expired_spec_yields_a_certificate_that_is_not_valid_now() {
        let ca = Ca::new("ca").expect("ca");
        let leaf = ca
            .issue(&LeafSpec::client("system:node:old", &["system:nodes"]).expired())
            .expect("leaf");
        let (_, cert) = X509Certificate::from_der(&leaf.cert_der).expect("parse");
        assert!(!cert.validity().is_valid());
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = Ca::new("ca").expect("ca");
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).expect("reload");
        let leaf = again.node_client("n").expect("leaf");
        let (_, cert) = X509Certificate::from_der(&leaf.cert_der).expect("parse");
        assert_eq!(
            cert.issuer().to_string(),
            "CN=ca",
            "issuer name taken from the reloaded CA"
        );
    }
}
