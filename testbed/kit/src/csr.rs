//! Certificate requests made with rcgen: kubelet-shaped ones and, field by field, every
//! way a request can be what no kubelet sends (no CN, a second OU, a CA request, odd key
//! usages, custom extensions). The one CSR builder of the tests, the decision core's
//! benchmark and the testbed; the kubelet simulator's own request is its behaviour and
//! lives with it.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::pki::PkiError;

/// What a request says. [`Default`] is a request with nothing in it.
#[derive(Clone, Debug, Default)]
pub struct CsrSpec {
    /// Subject CN (None: no CN).
    pub cn: Option<String>,
    /// Subject O (None: no O).
    pub org: Option<String>,
    /// An extra subject OU.
    pub ou: Option<String>,
    /// SANs in order.
    pub sans: Vec<SanType>,
    /// Request a CA certificate.
    pub ca: bool,
    /// Requested extended key usages.
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    /// Requested key usages.
    pub key_usages: Vec<KeyUsagePurpose>,
    /// Other requested extensions.
    pub custom: Vec<CustomExtension>,
}

/// A generated request with its fresh ECDSA P-256 key.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request, DER.
    pub csr_der: Vec<u8>,
    /// The `CERTIFICATE REQUEST` PEM.
    pub csr_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl CsrSpec {
    /// What a kubelet asks for: `CN=system:node:<node>, O=system:nodes` and the SANs.
    ///
    /// # Panics
    ///
    /// When an entry of `ips` is not an IP address (a test's typo).
    pub fn kubelet(node: &str, dns: &[&str], ips: &[&str]) -> Self {
        let ips: Vec<IpAddr> = ips
            .iter()
            .map(|i| i.parse().unwrap_or_else(|_| panic!("{i:?} is not an IP")))
            .collect();
        Self::kubelet_with(node, dns, &ips)
    }

    /// [`kubelet`](Self::kubelet) with the IP SANs as addresses.
    pub fn kubelet_with(node: &str, dns: &[&str], ips: &[IpAddr]) -> Self {
        let mut sans: Vec<SanType> = dns.iter().map(|d| dns_san(d)).collect();
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        Self {
            cn: Some(format!("system:node:{node}")),
            org: Some("system:nodes".to_owned()),
            sans,
            ..Self::default()
        }
    }

    /// The request, signed with a fresh ECDSA P-256 key.
    pub fn generate(&self) -> Result<Request, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(org) = &self.org {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        if let Some(ou) = &self.ou {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        if let Some(cn) = &self.cn {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        params.subject_alt_names = self.sans.clone();
        if self.ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.extended_key_usages = self.ekus.clone();
        params.key_usages = self.key_usages.clone();
        params.custom_extensions = self.custom.clone();
        let csr = params.serialize_request(&key)?;
        Ok(Request {
            csr_der: csr.der().to_vec(),
            csr_pem: csr.pem()?,
            key_pem: key.serialize_pem(),
        })
    }

    /// The DER request.
    ///
    /// # Panics
    ///
    /// When rcgen refuses the spec (a test's mistake, not an input under test).
    pub fn der(&self) -> Vec<u8> {
        self.must_generate().csr_der
    }

    /// The PEM request.
    ///
    /// # Panics
    ///
    /// As [`der`](Self::der).
    pub fn pem(&self) -> String {
        self.must_generate().csr_pem
    }

    fn must_generate(&self) -> Request {
        match self.generate() {
            Ok(request) => request,
            Err(error) => panic!("rcgen refused the test request {self:?}: {error}"),
        }
    }
}

/// A DNS SAN (any ASCII, even NUL or `*`).
///
/// # Panics
///
/// When `name` is not ASCII.
pub fn dns_san(name: &str) -> SanType {
    match name.try_into() {
        Ok(name) => SanType::DnsName(name),
        Err(error) => panic!("{name:?} cannot be a DNS SAN: {error}"),
    }
}

/// PEM `CERTIFICATE REQUEST` armour around DER.
pub fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.to_vec()))
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::prelude::X509CertificationRequest;

    use super::*;

    #[test]
    fn a_kubelet_request_says_what_a_kubelet_says() {
        let request = CsrSpec::kubelet("worker-1", &["worker-1"], &["10.0.0.11", "fd00::11"])
            .generate()
            .expect("request");
        let (_, csr) = X509CertificationRequest::from_der(&request.csr_der).expect("parses");
        let info = &csr.certification_request_info;
        assert_eq!(
            info.subject.to_string(),
            "O=system:nodes, CN=system:node:worker-1"
        );
        assert!(
            request
                .csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert_eq!(
            pem_of(&request.csr_der).replace("\r\n", "\n"),
            request.csr_pem
        );
        csr.verify_signature().expect("self-signed with its key");
    }

    #[test]
    fn an_empty_spec_is_a_request_with_nothing_in_it() {
        let der = CsrSpec::default().der();
        let (_, csr) = X509CertificationRequest::from_der(&der).expect("parses");
        assert_eq!(csr.certification_request_info.subject.to_string(), "");
        assert!(
            csr.requested_extensions()
                .is_none_or(|mut e| e.next().is_none())
        );
    }
}
