//! Certificates with rcgen: the approver's own CA, serving certificates for the Service's DNS
//! names, and the facts the renewal plan needs from what the Secret holds (validity, names,
//! who signed what).

use std::time::Duration;

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// How far certificates are backdated, for clocks that run a little behind ours (the same
/// allowance kube-controller-manager's signer makes).
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Largest PEM accepted for one certificate or key from the Secret.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// rcgen refused to generate, parse or sign.
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM value is not one well-formed certificate.
    #[error("{what}: not a PEM certificate: {reason}")]
    Pem {
        /// Which value.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A PEM value is larger than [`MAX_PEM_BYTES`].
    #[error("{0} is larger than 64 KiB")]
    TooLarge(&'static str),
    /// The certificate does not parse as X.509.
    #[error("{what}: {reason}")]
    X509 {
        /// Which value.
        what: &'static str,
        /// What x509-parser said.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{0}: the private key does not match the certificate")]
    KeyMismatch(&'static str),
    /// A CA certificate without `cA=true`.
    #[error("{0}: not a CA certificate")]
    NotCa(&'static str),
    /// A time outside what X.509 and jiff can both represent.
    #[error("validity time out of range")]
    TimeRange,
}

/// What the renewal plan needs to know about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// DNS subject alternative names, in certificate order.
    pub dns_names: Vec<String>,
    /// Serial number, lower-case hex (for logs).
    pub serial: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// A certificate and its private key, both PEM, with what the certificate says.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// Parsed facts of the certificate.
    pub info: CertInfo,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("KeyedCert")
            .field("serial", &self.info.serial)
            .field("not_after", &self.info.not_after)
            .finish_non_exhaustive()
    }
}

/// A new self-signed CA with a fresh ECDSA P-256 key, valid from `now` (backdated) for
/// `validity`. It may sign only end-entity certificates (path length 0).
pub fn new_ca(now: Timestamp, validity: Duration) -> Result<KeyedCert, AuthorityError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kubelet-rubber-stamp");
    // The time makes successive CAs distinguishable in the bundle and in logs.
    dn.push(
        DnType::CommonName,
        format!(
            "rubber-stamp-approver CA {}",
            now.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, now, validity)?;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    keyed(cert.pem(), key.serialize_pem(), "new CA")
}

/// A serving certificate for `dns_names` (the first is also the CN) with a fresh ECDSA P-256
/// key, signed by `ca`, valid from `now` (backdated) for `validity` but never past the CA.
pub fn issue_serving(
    ca: &KeyedCert,
    dns_names: &[String],
    now: Timestamp,
    validity: Duration,
) -> Result<KeyedCert, AuthorityError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(first) = dns_names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.subject_alt_names = dns_names
        .iter()
        .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, validity)?;
    let ca_end = to_offset(ca.info.not_after)?;
    if params.not_after > ca_end {
        params.not_after = ca_end;
    }
    params.serial_number = Some(random_serial());
    let cert = params.signed_by(&key, &issuer)?;
    keyed(cert.pem(), key.serialize_pem(), "new serving certificate")
}

/// Reads a CA certificate and key (from the Secret): one certificate, `cA=true`, the key
/// belongs to it.
pub fn read_ca(
    cert_pem: &str,
    key_pem: &str,
    what: &'static str,
) -> Result<KeyedCert, AuthorityError> {
    let ca = keyed(cert_pem.to_owned(), key_pem.to_owned(), what)?;
    let der = &ca.info.der;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| AuthorityError::X509 {
        what,
        reason: e.to_string(),
    })?;
    if !cert.is_ca() {
        return Err(AuthorityError::NotCa(what));
    }
    Ok(ca)
}

/// Reads a leaf certificate and key (from the Secret).
pub fn read_leaf(
    cert_pem: &str,
    key_pem: &str,
    what: &'static str,
) -> Result<KeyedCert, AuthorityError> {
    keyed(cert_pem.to_owned(), key_pem.to_owned(), what)
}

/// Reads a certificate without its key (the previous CA, kept only in the bundle).
pub fn read_cert(cert_pem: &str, what: &'static str) -> Result<CertInfo, AuthorityError> {
    if cert_pem.len() > MAX_PEM_BYTES {
        return Err(AuthorityError::TooLarge(what));
    }
    let der = single_pem(cert_pem, what)?;
    info(der, what)
}

/// Whether `leaf` carries a valid signature by `ca`'s key.
pub fn signed_by(leaf: &CertInfo, ca: &CertInfo) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(&leaf.der),
        X509Certificate::from_der(&ca.der),
    ) else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

fn keyed(
    cert_pem: String,
    key_pem: String,
    what: &'static str,
) -> Result<KeyedCert, AuthorityError> {
    if cert_pem.len() > MAX_PEM_BYTES || key_pem.len() > MAX_PEM_BYTES {
        return Err(AuthorityError::TooLarge(what));
    }
    let der = single_pem(&cert_pem, what)?;
    let info = info(der, what)?;
    let key = KeyPair::from_pem(&key_pem)?;
    let (_, cert) = X509Certificate::from_der(&info.der).map_err(|e| AuthorityError::X509 {
        what,
        reason: e.to_string(),
    })?;
    if key.subject_public_key_info() != cert.public_key().raw {
        return Err(AuthorityError::KeyMismatch(what));
    }
    Ok(KeyedCert {
        cert_pem,
        key_pem,
        info,
    })
}

fn single_pem(pem_text: &str, what: &'static str) -> Result<Vec<u8>, AuthorityError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| AuthorityError::Pem {
        what,
        reason: e.to_string(),
    })?;
    match blocks.as_slice() {
        [block] if block.tag() == "CERTIFICATE" => Ok(block.contents().to_vec()),
        [block] => Err(AuthorityError::Pem {
            what,
            reason: format!("a {} block", block.tag()),
        }),
        blocks => Err(AuthorityError::Pem {
            what,
            reason: format!("{} PEM blocks where one was expected", blocks.len()),
        }),
    }
}

fn info(der: Vec<u8>, what: &'static str) -> Result<CertInfo, AuthorityError> {
    let x509 = |e: &dyn std::fmt::Display| AuthorityError::X509 {
        what,
        reason: e.to_string(),
    };
    let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| x509(&e))?;
    if !rest.is_empty() {
        return Err(x509(&"trailing bytes after the certificate"));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|_| AuthorityError::TimeRange)
    };
    let validity = cert.validity();
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some((*name).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(x509(&e)),
    };
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let not_before = time(validity.not_before)?;
    let not_after = time(validity.not_after)?;
    Ok(CertInfo {
        not_before,
        not_after,
        dns_names,
        serial,
        der,
    })
}

fn set_validity(
    params: &mut CertificateParams,
    now: Timestamp,
    validity: Duration,
) -> Result<(), AuthorityError> {
    let validity =
        jiff::SignedDuration::try_from(validity).map_err(|_| AuthorityError::TimeRange)?;
    let backdate =
        jiff::SignedDuration::try_from(BACKDATE).map_err(|_| AuthorityError::TimeRange)?;
    let start = now
        .checked_sub(backdate)
        .map_err(|_| AuthorityError::TimeRange)?;
    let end = now
        .checked_add(validity)
        .map_err(|_| AuthorityError::TimeRange)?;
    params.not_before = to_offset(start)?;
    params.not_after = to_offset(end)?;
    Ok(())
}

fn to_offset(t: Timestamp) -> Result<time::OffsetDateTime, AuthorityError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| AuthorityError::TimeRange)
}

/// 16 random bytes, positive as DER INTEGERs must be for serial numbers.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
