//! The point of CIS 1.2.5: a client that trusts only the cluster CA and
//! expects a node's IP (as kube-apiserver with
//! `--kubelet-certificate-authority` does) connects to the node's kubelet,
//! verifies the certificate, and talks to it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// How long each step (connect, handshake, request) may take.
const STEP: Duration = Duration::from_secs(5);
/// Most bytes read from the kubelet's answer.
const MAX_ANSWER: u64 = 64 * 1024;

/// What a verified connection showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The certificate's subject.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Its SANs, DNS names first.
    pub sans: Vec<String>,
    /// Its serial, hex.
    pub serial: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// The status line and body of `GET /healthz`.
    pub healthz: String,
}

/// Why a connection was not verified.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The trust bundle does not parse.
    #[error("the cluster CA does not parse: {0}")]
    Ca(String),
    /// TCP failed (nothing serves there).
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake or certificate verification failed.
    #[error("TLS with {addr} for {expected}: {source}")]
    Tls {
        /// Where.
        addr: SocketAddr,
        /// The name that was expected.
        expected: IpAddr,
        /// rustls' reason.
        source: std::io::Error,
    },
    /// A step took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Something after the handshake failed.
    #[error("{0}")]
    Other(String),
}

/// Connects to `addr`, verifies the server certificate against `ca_pem` for
/// the IP `expected` (nothing else is trusted), then `GET /healthz`.
pub async fn verify_kubelet(
    ca_pem: &str,
    addr: SocketAddr,
    expected: IpAddr,
) -> Result<Verified, ProofError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ProofError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| ProofError::Ca(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ProofError::Other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| ProofError::Timeout("connecting"))?
        .map_err(|source| ProofError::Connect { addr, source })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = tokio::time::timeout(
        STEP,
        connector.connect(ServerName::IpAddress(expected.into()), tcp),
    )
    .await
    .map_err(|_| ProofError::Timeout("the TLS handshake"))?
    .map_err(|source| ProofError::Tls {
        addr,
        expected,
        source,
    })?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| ProofError::Other("the server sent no certificate".into()))?;
    let (_, cert) = X509Certificate::from_der(&leaf)
        .map_err(|e| ProofError::Other(format!("the certificate does not parse: {e}")))?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            let mut dns = Vec::new();
            let mut ips = Vec::new();
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ips.push(IpAddr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ips.push(IpAddr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
            dns.extend(ips);
            dns
        })
        .unwrap_or_default();
    let not_after = jiff::Timestamp::from_second(cert.validity().not_after.timestamp())
        .map_or_else(|_| cert.validity().not_after.to_string(), |t| t.to_string());
    let verified = Verified {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_after,
        healthz: String::new(),
    };
    tokio::time::timeout(
        STEP,
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n"),
    )
    .await
    .map_err(|_| ProofError::Timeout("sending the request"))?
    .map_err(|e| ProofError::Other(format!("sending the request: {e}")))?;
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, (&mut tls).take(MAX_ANSWER).read_to_end(&mut answer))
        .await
        .map_err(|_| ProofError::Timeout("reading the answer"))?
        .map_err(|e| ProofError::Other(format!("reading the answer: {e}")))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or("").trim().to_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_owned();
    Ok(Verified {
        healthz: format!("{status}: {body}"),
        ..verified
    })
}
