//! Parsing `spec.request` once: PEM framing, PKCS#10 DER, self-signature,
//! subject, requested extensions and SANs, into a small owned [`ParsedRequest`].
//!
//! The parsed form keeps only the facts the decision reads (canonical SANs,
//! the node name, a few flags), never the DER, so the controller can hold one
//! per pending CSR and decide again whenever attestations change.

use std::fmt;
use std::net::IpAddr;

use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::{self, PemObject};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519, OID_X509_COMMON_NAME,
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_ORGANIZATION_NAME, Oid,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, SubjectPublicKeyInfo};

use crate::der::FramingError;
use crate::names::{self, HostnameError, IpProblem};
use crate::node_name::{NODE_CN_PREFIX, NODES_GROUP, NodeName, NodeNameError};
use crate::policy::Policy;

/// The PEM label of a PKCS#10 request.
pub const CSR_PEM_LABEL: &str = "CERTIFICATE REQUEST";
/// Most problems of one kind kept for the verdict's detail; the rest are counted.
pub const MAX_PROBLEMS_KEPT: usize = 8;
/// Most extensions a request may ask for (a kubelet asks for one: subjectAltName).
pub const MAX_REQUESTED_EXTENSIONS: usize = 64;

/// Why `spec.request` could not be used at all (check 2, `deny`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Larger than the policy's `maxRequestBytes`.
    #[error("spec.request is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Size of the PEM text.
        size: usize,
        /// The policy's limit.
        limit: usize,
    },
    /// No bytes at all.
    #[error("spec.request is empty")]
    Empty,
    /// Not exactly one PEM block.
    #[error("spec.request must hold exactly one PEM block, found {0}")]
    BlockCount(usize),
    /// One PEM block, but not a certificate request.
    #[error("spec.request holds a PEM {0} block, not CERTIFICATE REQUEST")]
    WrongLabel(String),
    /// The PEM block is malformed.
    #[error("spec.request is not valid PEM: {0}")]
    Pem(&'static str),
    /// The DER is not a PKCS#10 CertificationRequest.
    #[error("the request is not valid PKCS#10 DER ({0})")]
    Der(String),
    /// The DER framing is laxer than Go's `encoding/asn1` accepts (a wrong tag class,
    /// a non-minimal length, …): kube-apiserver would refuse the request.
    #[error("the request is not valid PKCS#10 DER (malformed at {0})")]
    Framing(#[from] FramingError),
    /// A public key of an algorithm we do not accept, or one the signature algorithm
    /// does not use.
    #[error("the request's public key is {key}, which {why}")]
    UnsupportedKey {
        /// The key algorithm (name or OID) and curve.
        key: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// Bytes after the DER structure.
    #[error("{0} stray bytes follow the PKCS#10 structure")]
    TrailingBytes(usize),
    /// A version other than v1 (0).
    #[error("the request has version {0}; PKCS#10 defines only version 1")]
    Version(u32),
    /// More than one extensionRequest attribute.
    #[error("the request carries {0} extensionRequest attributes; at most one is allowed")]
    SeveralExtensionRequests(usize),
    /// The same extension twice.
    #[error("the request asks for the {0} extension more than once")]
    DuplicateExtension(String),
    /// An extension the parser knows but could not decode.
    #[error("the request's {0} extension is malformed")]
    MalformedExtension(String),
    /// A signature algorithm we do not accept.
    #[error(
        "the self-signature uses {0}, which is not accepted (SHA-1 and unknown algorithms are refused)"
    )]
    UnsupportedSignature(String),
    /// The signature does not verify with the request's own key.
    #[error(
        "the self-signature does not verify: the request was altered, or was not signed by its own key, or the key is too weak"
    )]
    BadSignature,
}

/// The public key of the request, for details only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// ECDSA on another curve.
    EcdsaOther,
    /// RSA with this many modulus bits (0 if unreadable).
    Rsa(usize),
    /// Ed25519.
    Ed25519,
    /// Something else, by OID.
    Other(String),
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::EcdsaOther => f.write_str("ECDSA (other curve)"),
            Self::Rsa(bits) => write!(f, "RSA {bits}-bit"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Other(oid) => write!(f, "key algorithm {oid}"),
        }
    }
}

/// A problem with the request's subject (check 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectProblem {
    /// No CN.
    NoCommonName,
    /// More than one CN.
    SeveralCommonNames(usize),
    /// The CN is not `system:node:<name>`.
    CommonNameNotNode(String),
    /// The name after `system:node:` is not a valid node name.
    InvalidNodeName(String, NodeNameError),
    /// The organisations are not exactly `[system:nodes]`.
    Organizations(Vec<String>),
    /// An attribute other than CN and O.
    OtherAttribute(String),
    /// A CN or O value that is not a string.
    NotAString(&'static str),
}

impl fmt::Display for SubjectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCommonName => f.write_str("the subject has no CN"),
            Self::SeveralCommonNames(n) => write!(f, "the subject has {n} CNs"),
            Self::CommonNameNotNode(cn) => {
                write!(f, "CN {} is not system:node:<name>", names::quoted(cn))
            }
            Self::InvalidNodeName(name, e) => write!(
                f,
                "node name {} in the CN is not a valid node name ({e})",
                names::quoted(name)
            ),
            Self::Organizations(orgs) => {
                let list: Vec<String> = orgs.iter().map(|o| names::quoted(o)).collect();
                write!(
                    f,
                    "organizations are [{}], not exactly [system:nodes]",
                    list.join(", ")
                )
            }
            Self::OtherAttribute(attr) => {
                write!(f, "the subject has an unexpected attribute {attr}")
            }
            Self::NotAString(what) => write!(f, "the subject's {what} is not a string"),
        }
    }
}

/// A SAN that may not appear in a kubelet serving certificate (check 6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SanProblem {
    /// A DNS name that is not a valid hostname.
    Dns(String, HostnameError),
    /// An IP that must not be certified.
    Ip(Option<IpAddr>, IpProblem),
    /// A SAN of a kind other than DNS or IP (email, URI, other name, …).
    Kind(&'static str),
    /// The subjectAltName extension appears more than once.
    SeveralExtensions(usize),
}

impl fmt::Display for SanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(text, e) => write!(f, "DNS name {} is {e}", names::quoted(text)),
            Self::Ip(Some(ip), p) => write!(f, "IP {ip} is {p}"),
            Self::Ip(None, p) => write!(f, "an IP SAN is {p}"),
            Self::Kind(kind) => write!(f, "{kind} SANs are not allowed"),
            Self::SeveralExtensions(n) => write!(f, "{n} subjectAltName extensions"),
        }
    }
}

/// The SANs of a request: the acceptable ones in canonical form, and the problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sans {
    /// Acceptable DNS names, canonical (lower case, no trailing dot), in request order.
    pub dns: Vec<String>,
    /// Acceptable IP addresses, in request order.
    pub ips: Vec<IpAddr>,
    /// The first few problems.
    pub problems: Vec<SanProblem>,
    /// How many problems there were in all.
    pub problem_count: usize,
    /// How many SANs of any kind the request holds.
    pub total: usize,
}

/// What the requested extensions ask for beyond SANs (check 5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestedUsage {
    /// BasicConstraints with cA=true.
    pub ca: bool,
    /// KeyUsage with keyCertSign or cRLSign.
    pub cert_sign: bool,
    /// Extended key usages other than serverAuth (names or OIDs).
    pub other_ekus: Vec<String>,
}

/// A request that parsed and whose self-signature verified.
///
/// Owned, `Send + Sync`, and small: it holds no DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    der_len: usize,
    key: KeyKind,
    signature_algorithm: &'static str,
    node_name: Option<String>,
    subject_problems: Vec<SubjectProblem>,
    sans: Sans,
    usage: RequestedUsage,
}

// === impl ParsedRequest ===

impl ParsedRequest {
    /// Size of the DER request.
    pub fn der_len(&self) -> usize {
        self.der_len
    }

    /// The request's public key.
    pub fn key(&self) -> &KeyKind {
        &self.key
    }

    /// The self-signature's algorithm.
    pub fn signature_algorithm(&self) -> &'static str {
        self.signature_algorithm
    }

    /// The node named by `CN=system:node:<name>`, when that CN is well formed
    /// (even if the rest of the subject is not).
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// Everything wrong with the subject; empty when it is exactly
    /// `CN=system:node:<name>, O=system:nodes`.
    pub fn subject_problems(&self) -> &[SubjectProblem] {
        &self.subject_problems
    }

    /// The SANs.
    pub fn sans(&self) -> &Sans {
        &self.sans
    }

    /// What the request's extensions ask for beyond SANs.
    pub fn requested_usage(&self) -> &RequestedUsage {
        &self.usage
    }
}

/// Parses `spec.request` (PEM text) under the policy's size and SAN limits,
/// and verifies the self-signature. This is check 2 of the decision; its
/// result can be kept and passed to `decide_parsed` any number of times.
pub fn parse_request(pem_text: &[u8], policy: &Policy) -> Result<ParsedRequest, RequestError> {
    if pem_text.len() > policy.max_request_bytes {
        return Err(RequestError::TooLarge {
            size: pem_text.len(),
            limit: policy.max_request_bytes,
        });
    }
    if pem_text.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    let der = pem_der(pem_text)?;
    parse_der(der.as_ref(), policy.max_sans)
}

/// Finds exactly one `CERTIFICATE REQUEST` block and decodes it.
fn pem_der(text: &[u8]) -> Result<CertificateSigningRequestDer<'static>, RequestError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let begins: Vec<usize> = text
        .windows(BEGIN.len())
        .enumerate()
        .filter(|(_, w)| *w == BEGIN)
        .map(|(i, _)| i)
        .take(2)
        .collect();
    let first = match begins.as_slice() {
        [] => return Err(RequestError::BlockCount(0)),
        [first] => *first,
        _ => {
            let n = text.windows(BEGIN.len()).filter(|w| *w == BEGIN).count();
            return Err(RequestError::BlockCount(n));
        }
    };
    let after = &text[first + BEGIN.len()..];
    let label_end = after
        .iter()
        .position(|b| *b == b'-' || *b == b'\n' || *b == b'\r')
        .unwrap_or(after.len());
    let label = String::from_utf8_lossy(&after[..label_end]);
    if label != CSR_PEM_LABEL {
        return Err(RequestError::WrongLabel(names::quoted(&label)));
    }
    match CertificateSigningRequestDer::from_pem_slice(text) {
        Ok(der) => Ok(der),
        Err(pem::Error::MissingSectionEnd { .. }) => {
            Err(RequestError::Pem("the block has no matching END line"))
        }
        Err(pem::Error::IllegalSectionStart { .. }) => {
            Err(RequestError::Pem("the BEGIN line is malformed"))
        }
        Err(pem::Error::Base64Decode(_)) => Err(RequestError::Pem("the block is not valid base64")),
        Err(pem::Error::NoItemsFound) => Err(RequestError::Pem(
            "no well-formed CERTIFICATE REQUEST block (BEGIN must start a line)",
        )),
        Err(_) => Err(RequestError::Pem("the block could not be read")),
    }
}

fn parse_der(der: &[u8], max_sans: usize) -> Result<ParsedRequest, RequestError> {
    crate::der::check_request(der)?;
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| {
        let text = e.to_string();
        RequestError::Der(text.chars().take(120).collect())
    })?;
    if !rest.is_empty() {
        return Err(RequestError::TrailingBytes(rest.len()));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(RequestError::Version(info.version.0));
    }
    let signature_algorithm = signature_algorithm_name(&csr.signature_algorithm.algorithm)?;
    let key = key_kind(&info.subject_pki);
    check_key(&key, signature_algorithm)?;
    csr.verify_signature()
        .map_err(|_| RequestError::BadSignature)?;

    let extensions = requested_extensions(&csr)?;
    let (node_name, subject_problems) = subject(&csr);
    let mut sans = Sans::default();
    let mut usage = RequestedUsage::default();
    let mut san_extensions = 0usize;
    for ext in &extensions {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                san_extensions += 1;
                for name in &san.general_names {
                    add_san(&mut sans, name, max_sans);
                }
            }
            ParsedExtension::BasicConstraints(bc) => usage.ca |= bc.ca,
            ParsedExtension::KeyUsage(ku) => {
                usage.cert_sign |= ku.key_cert_sign() || ku.crl_sign();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                for (set, name) in [
                    (eku.any, "anyExtendedKeyUsage"),
                    (eku.client_auth, "clientAuth"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                ] {
                    if set {
                        push_bounded(&mut usage.other_ekus, name.to_owned());
                    }
                }
                for oid in &eku.other {
                    push_bounded(&mut usage.other_ekus, oid.to_id_string());
                }
            }
            _ => {}
        }
    }
    if san_extensions > 1 {
        sans.problem_count += 1;
        sans.problems
            .insert(0, SanProblem::SeveralExtensions(san_extensions));
        sans.problems.truncate(MAX_PROBLEMS_KEPT);
    }
    Ok(ParsedRequest {
        der_len: der.len(),
        key,
        signature_algorithm,
        node_name,
        subject_problems,
        sans,
        usage,
    })
}

fn push_bounded<T>(list: &mut Vec<T>, item: T) {
    if list.len() < MAX_PROBLEMS_KEPT {
        list.push(item);
    }
}

/// Accepted self-signature algorithms, by name; anything else is refused.
fn signature_algorithm_name(oid: &Oid<'_>) -> Result<&'static str, RequestError> {
    let accepted = [
        (&OID_SIG_ECDSA_WITH_SHA256, "ecdsa-with-SHA256"),
        (&OID_SIG_ECDSA_WITH_SHA384, "ecdsa-with-SHA384"),
        (&OID_PKCS1_SHA256WITHRSA, "sha256WithRSAEncryption"),
        (&OID_PKCS1_SHA384WITHRSA, "sha384WithRSAEncryption"),
        (&OID_PKCS1_SHA512WITHRSA, "sha512WithRSAEncryption"),
        (&OID_PKCS1_RSASSAPSS, "RSASSA-PSS"),
        (&OID_SIG_ED25519, "Ed25519"),
    ];
    if let Some((_, name)) = accepted.iter().find(|(o, _)| *o == oid) {
        return Ok(name);
    }
    let name = if *oid == OID_PKCS1_SHA1WITHRSA || *oid == OID_SHA1_WITH_RSA {
        "sha1WithRSAEncryption".to_owned()
    } else {
        oid.to_id_string()
    };
    Err(RequestError::UnsupportedSignature(name))
}

/// Refuses a key of an unknown algorithm (even one whose parameters name a known
/// curve: Go leaves such a key unparsed and its signature unverifiable), an ECDSA key
/// on a curve we do not verify, and a key of another family than the signature's.
fn check_key(key: &KeyKind, signature_algorithm: &str) -> Result<(), RequestError> {
    let refuse = |why| {
        Err(RequestError::UnsupportedKey {
            key: key.to_string(),
            why,
        })
    };
    let family_matches = match key {
        KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => signature_algorithm.starts_with("ecdsa"),
        KeyKind::Rsa(_) => signature_algorithm.contains("RSA"),
        KeyKind::Ed25519 => signature_algorithm == "Ed25519",
        KeyKind::EcdsaOther => return refuse("is not on P-256 or P-384"),
        KeyKind::Other(_) => return refuse("is not RSA, ECDSA or Ed25519"),
    };
    if family_matches {
        Ok(())
    } else {
        refuse("does not match the signature algorithm")
    }
}

fn requested_extensions<'a>(
    csr: &'a X509CertificationRequest<'a>,
) -> Result<Vec<&'a X509Extension<'a>>, RequestError> {
    let mut found: Vec<&X509Extension<'_>> = Vec::new();
    let mut requests = 0usize;
    for attr in csr.certification_request_info.iter_attributes() {
        if let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() {
            requests += 1;
            found.extend(req.extensions.iter());
        }
    }
    if requests > 1 {
        return Err(RequestError::SeveralExtensionRequests(requests));
    }
    // Checked before the quadratic duplicate search below.
    if found.len() > MAX_REQUESTED_EXTENSIONS {
        return Err(RequestError::Der(format!(
            "{} requested extensions, more than {MAX_REQUESTED_EXTENSIONS}",
            found.len()
        )));
    }
    for (i, ext) in found.iter().enumerate() {
        if ext.parsed_extension().error().is_some() {
            return Err(RequestError::MalformedExtension(extension_name(&ext.oid)));
        }
        // Requests carry a handful of extensions; quadratic is fine and
        // avoids hashing borrowed OIDs.
        if found[..i].iter().any(|e| e.oid == ext.oid) {
            return Err(RequestError::DuplicateExtension(extension_name(&ext.oid)));
        }
    }
    Ok(found)
}

fn extension_name(oid: &Oid<'_>) -> String {
    let known = [
        (&OID_X509_EXT_SUBJECT_ALT_NAME, "subjectAltName"),
        (&OID_X509_EXT_KEY_USAGE, "keyUsage"),
        (&OID_X509_EXT_EXTENDED_KEY_USAGE, "extendedKeyUsage"),
        (&OID_X509_EXT_BASIC_CONSTRAINTS, "basicConstraints"),
    ];
    known
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| (*n).to_owned())
        .unwrap_or_else(|| oid.to_id_string())
}

fn attribute_name(oid: &Oid<'_>) -> String {
    let known: [(&[u64], &str); 8] = [
        (&[2, 5, 4, 3], "CN"),
        (&[2, 5, 4, 10], "O"),
        (&[2, 5, 4, 11], "OU"),
        (&[2, 5, 4, 6], "C"),
        (&[2, 5, 4, 8], "ST"),
        (&[2, 5, 4, 7], "L"),
        (&[2, 5, 4, 5], "serialNumber"),
        (&[1, 2, 840, 113549, 1, 9, 1], "emailAddress"),
    ];
    let arcs: Option<Vec<u64>> = oid.iter().map(|it| it.collect());
    arcs.and_then(|arcs| {
        known
            .iter()
            .find(|(k, _)| *k == arcs.as_slice())
            .map(|(_, n)| (*n).to_owned())
    })
    .unwrap_or_else(|| oid.to_id_string())
}

fn subject(csr: &X509CertificationRequest<'_>) -> (Option<String>, Vec<SubjectProblem>) {
    let name = &csr.certification_request_info.subject;
    let mut problems = Vec::new();
    let mut cns: Vec<&AttributeTypeAndValue<'_>> = Vec::new();
    let mut orgs: Vec<String> = Vec::new();
    let mut org_count = 0usize;
    for attr in name.iter_attributes() {
        if *attr.attr_type() == OID_X509_COMMON_NAME {
            cns.push(attr);
        } else if *attr.attr_type() == OID_X509_ORGANIZATION_NAME {
            org_count += 1;
            match attr.as_str() {
                Ok(o) => push_bounded(&mut orgs, o.to_owned()),
                Err(_) => push_bounded(&mut problems, SubjectProblem::NotAString("O")),
            }
        } else {
            push_bounded(
                &mut problems,
                SubjectProblem::OtherAttribute(attribute_name(attr.attr_type())),
            );
        }
    }
    let node_name = match cns.as_slice() {
        [] => {
            problems.insert(0, SubjectProblem::NoCommonName);
            None
        }
        [cn] => match cn.as_str() {
            Err(_) => {
                problems.insert(0, SubjectProblem::NotAString("CN"));
                None
            }
            Ok(cn) => match cn.strip_prefix(NODE_CN_PREFIX) {
                None => {
                    problems.insert(0, SubjectProblem::CommonNameNotNode(cn.to_owned()));
                    None
                }
                Some(node) => match node.parse::<NodeName>() {
                    Ok(_) => Some(node.to_owned()),
                    Err(e) => {
                        problems.insert(0, SubjectProblem::InvalidNodeName(node.to_owned(), e));
                        None
                    }
                },
            },
        },
        several => {
            problems.insert(0, SubjectProblem::SeveralCommonNames(several.len()));
            None
        }
    };
    if org_count != 1 || orgs.first().map(String::as_str) != Some(NODES_GROUP) {
        push_bounded(&mut problems, SubjectProblem::Organizations(orgs));
    }
    (node_name, problems)
}

fn add_san(sans: &mut Sans, name: &GeneralName<'_>, max_sans: usize) {
    sans.total += 1;
    let problem = |sans: &mut Sans, p: SanProblem| {
        sans.problem_count += 1;
        push_bounded(&mut sans.problems, p);
    };
    match name {
        GeneralName::DNSName(text) => match names::canonical_hostname(text) {
            Ok(dns) => {
                if sans.dns.len() + sans.ips.len() < max_sans {
                    sans.dns.push(dns);
                }
            }
            Err(e) => {
                let shown: String = text.chars().take(300).collect();
                problem(sans, SanProblem::Dns(shown, e));
            }
        },
        GeneralName::IPAddress(octets) => match names::san_ip(octets) {
            Ok(ip) => {
                if sans.dns.len() + sans.ips.len() < max_sans {
                    sans.ips.push(ip);
                }
            }
            Err((ip, p)) => problem(sans, SanProblem::Ip(ip, p)),
        },
        GeneralName::RFC822Name(_) => problem(sans, SanProblem::Kind("email")),
        GeneralName::URI(_) => problem(sans, SanProblem::Kind("URI")),
        GeneralName::OtherName(..) => problem(sans, SanProblem::Kind("otherName")),
        GeneralName::DirectoryName(_) => problem(sans, SanProblem::Kind("directoryName")),
        GeneralName::RegisteredID(_) => problem(sans, SanProblem::Kind("registeredID")),
        GeneralName::X400Address(_) => problem(sans, SanProblem::Kind("x400Address")),
        GeneralName::EDIPartyName(_) => problem(sans, SanProblem::Kind("ediPartyName")),
        GeneralName::Invalid(..) => problem(sans, SanProblem::Kind("undecodable")),
    }
}

fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> KeyKind {
    let alg = &spki.algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match alg.parameters.as_ref().and_then(|p| p.as_oid().ok()) {
            Some(curve) if curve == OID_EC_P256 => KeyKind::EcdsaP256,
            Some(curve) if curve == OID_NIST_EC_P384 => KeyKind::EcdsaP384,
            _ => KeyKind::EcdsaOther,
        }
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        // Go reads RSA keys only under rsaEncryption; an id-RSASSA-PSS key is unknown
        // to it (the PSS *signature* of an rsaEncryption key is fine).
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        KeyKind::Rsa(bits)
    } else if alg.algorithm == OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else {
        KeyKind::Other(alg.algorithm.to_id_string())
    }
}
