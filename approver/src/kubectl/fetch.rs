//! `GET /attestations` from an approver replica's admin port: over HTTPS with the user's
//! bearer token, the certificate verified against the approver's CA bundle, or over plain
//! HTTP without any credential. One HTTP/1.1 request, bounded in time (connect, handshake
//! and response together) and in size (the offline documents' limit for a snapshot).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, header};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use rubber_stamp_core::AttestationSnapshot;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::endpoint::Endpoint;
use super::flags::Scheme;
use crate::documents;

/// Largest snapshot read (the offline `check --attestations` limit).
pub const MAX_SNAPSHOT_BYTES: u64 = documents::MAX_ATTESTATIONS_DOCUMENT_BYTES;
/// Most bytes of an error answer quoted in a message.
const MAX_QUOTED_BYTES: usize = 200;

/// How to trust the approver's certificate.
#[derive(Clone, Debug)]
pub struct Trust {
    /// The CA certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// The name the certificate must carry.
    pub server_name: String,
    /// Where the CA bundle came from, for messages.
    pub origin: String,
}

/// One request for the snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotRequest<'a> {
    /// Where.
    pub endpoint: &'a Endpoint,
    /// With HTTPS: the trust; ignored over HTTP.
    pub trust: Option<&'a Trust>,
    /// With HTTPS: the bearer token; never sent over HTTP.
    pub token: Option<&'a str>,
    /// The whole exchange's deadline.
    pub timeout: Duration,
    /// Largest body.
    pub limit: u64,
}

/// Why the snapshot could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within the deadline.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The TCP connection failed.
    #[error("{url}: cannot connect: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (an unknown CA, a name the certificate does not carry, or
    /// a port that does not speak TLS).
    #[error(
        "{url}: TLS handshake failed (server name {server_name}, CA bundle from {origin}): {source}"
    )]
    Tls {
        /// The URL.
        url: String,
        /// The name the certificate had to carry.
        server_name: String,
        /// Where the CA bundle came from.
        origin: String,
        /// The error.
        source: std::io::Error,
    },
    /// HTTPS without a CA bundle, or a bundle with no certificate.
    #[error("{0}")]
    Trust(String),
    /// HTTP failed.
    #[error("{url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The error.
        source: hyper::Error,
    },
    /// 401: the token was refused (or none was sent).
    #[error("{url} answered 401 Unauthorized: {hint}")]
    Unauthorized {
        /// The URL.
        url: String,
        /// What to do.
        hint: String,
    },
    /// 403: the token's user may not read the snapshot.
    #[error(
        "{url} answered 403 Forbidden: you may not get the nonResourceURL /attestations ({body})"
    )]
    Forbidden {
        /// The URL.
        url: String,
        /// The answer's beginning.
        body: String,
    },
    /// Any other status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The answer's beginning.
        body: String,
    },
    /// More than the limit.
    #[error("{url}: the snapshot is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// Not a snapshot.
    #[error(transparent)]
    Invalid(#[from] documents::InputError),
}

/// The CA certificates in a PEM bundle.
pub fn roots_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

/// Fetches and parses the snapshot.
pub async fn attestations(request: SnapshotRequest<'_>) -> Result<AttestationSnapshot, FetchError> {
    let url = request.endpoint.attestations_url();
    let body = match tokio::time::timeout(request.timeout, get(&request, &url)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(FetchError::Timeout {
                url,
                timeout: request.timeout,
            });
        }
    };
    let text = String::from_utf8(body).map_err(|_| documents::InputError::NotText {
        what: "attestation snapshot",
        origin: url.clone(),
    })?;
    Ok(documents::attestations_document(&text, &url)?)
}

/// The body of a 200 answer.
async fn get(request: &SnapshotRequest<'_>, url: &str) -> Result<Vec<u8>, FetchError> {
    let endpoint = request.endpoint;
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| FetchError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    match endpoint.scheme {
        Scheme::Http => exchange(tcp, request, url, None).await,
        Scheme::Https => {
            let trust = request.trust.ok_or_else(|| {
                FetchError::Trust(format!("{url}: HTTPS needs the approver's CA bundle"))
            })?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(trust.roots.iter().cloned());
            if added == 0 {
                return Err(FetchError::Trust(format!(
                    "the CA bundle from {} holds no usable certificate",
                    trust.origin
                )));
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Trust(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let server_name = ServerName::try_from(trust.server_name.clone()).map_err(|_| {
                FetchError::Trust(format!("{:?} is not a server name", trust.server_name))
            })?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .map_err(|source| FetchError::Tls {
                    url: url.to_owned(),
                    server_name: trust.server_name.clone(),
                    origin: trust.origin.clone(),
                    source,
                })?;
            exchange(tls, request, url, request.token).await
        }
    }
}

/// One GET over `io`.
async fn exchange<IO>(
    io: IO,
    request: &SnapshotRequest<'_>,
    url: &str,
    token: Option<&str>,
) -> Result<Vec<u8>, FetchError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |source| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_err)?;
    let driver = tokio::spawn(async move {
        // Its error, if any, is the response's too.
        let _ = connection.await;
    });
    let mut builder = Request::get(request.endpoint.attestations_path())
        .header(header::HOST, request.endpoint.authority())
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("kubectl-rubber_stamp/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let outgoing = builder
        .body(String::new())
        .map_err(|e| FetchError::Trust(format!("{url}: cannot make the request: {e}")))?;
    let response = sender.send_request(outgoing).await.map_err(http_err)?;
    let status = response.status();
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = if status == StatusCode::OK {
        request.limit
    } else {
        MAX_QUOTED_BYTES as u64
    };
    if status == StatusCode::OK && declared.is_some_and(|d| d > limit) {
        driver.abort();
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        });
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(http_err)?;
        if let Ok(data) = frame.into_data() {
            if (bytes.len() + data.len()) as u64 > limit {
                if status != StatusCode::OK {
                    let room = MAX_QUOTED_BYTES.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&data[..room.min(data.len())]);
                    break;
                }
                driver.abort();
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            bytes.extend_from_slice(&data);
        }
    }
    driver.abort();
    if status == StatusCode::OK {
        return Ok(bytes);
    }
    let quoted = quote(&bytes);
    Err(match status {
        StatusCode::UNAUTHORIZED => FetchError::Unauthorized {
            url: url.to_owned(),
            hint: match token {
                Some(_) => format!(
                    "the approver did not accept your bearer token ({quoted}); pass another with --token"
                ),
                None => "no bearer token was sent: your kubeconfig user has none (a client certificate is not enough); pass one with --token, e.g. from `kubectl create token`".to_owned(),
            },
        },
        StatusCode::FORBIDDEN => FetchError::Forbidden {
            url: url.to_owned(),
            body: quoted,
        },
        status => FetchError::Status {
            url: url.to_owned(),
            status,
            body: quoted,
        },
    })
}

/// An answer's beginning as one line of text.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_QUOTED_BYTES)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.is_empty() {
        "no explanation".to_owned()
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use hyper::service::service_fn;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls_pki_types::PrivateKeyDer;
    use tokio::net::TcpListener;

    use super::*;

    const TOKEN: &str = "s3cret-token";
    const NAME: &str = "rubber-stamp-approver.rubber-stamp.svc";
    const SNAPSHOT: &str = r#"{"attestations": [{"nodeName": "worker-1", "hostname": "worker-1",
        "interfaces": [{"name": "eth0", "addresses": ["10.0.0.11/24"]}],
        "peerAddress": "10.0.0.11", "receivedAt": "2026-01-01T00:00:00Z"}]}"#;

    struct Pki {
        ca_pem: String,
        server: rustls::ServerConfig,
    }

    fn pki(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
        )
        .expect("server config");
        Pki {
            ca_pem: ca_cert.pem(),
            server,
        }
    }

    /// An admin port: HTTPS (with `tls`) or HTTP, answering `/attestations` with `body` to
    /// the right bearer token (any request over HTTP), 401 without one, 403 to another.
    async fn serve(tls: Option<rustls::ServerConfig>, body: String) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let secure = acceptor.is_some();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let auth = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = body.clone();
                        async move {
                            let (status, text) = match (secure, auth.as_deref()) {
                                _ if req.uri().path() != "/attestations" => {
                                    (404, "not found".to_owned())
                                }
                                (false, Some(_)) => (400, "a token over plain HTTP".to_owned()),
                                (false, None) => (200, body),
                                (true, None) => (401, "Unauthorized".to_owned()),
                                (true, Some(a)) if a == format!("Bearer {TOKEN}") => (200, body),
                                (true, Some(_)) => (
                                    403,
                                    "forbidden: user \"bob\" cannot get path \"/attestations\""
                                        .to_owned(),
                                ),
                            };
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(text)
                                    .expect("response"),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        addr
    }

    fn endpoint(scheme: Scheme, addr: SocketAddr) -> Endpoint {
        Endpoint::at(scheme, IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    }

    fn trust(ca_pem: &str, server_name: &str) -> Trust {
        Trust {
            roots: roots_from_pem(ca_pem).expect("roots"),
            server_name: server_name.to_owned(),
            origin: "the test".to_owned(),
        }
    }

    fn request<'a>(
        e: &'a Endpoint,
        t: Option<&'a Trust>,
        token: Option<&'a str>,
    ) -> SnapshotRequest<'a> {
        SnapshotRequest {
            endpoint: e,
            trust: t,
            token,
            timeout: Duration::from_secs(5),
            limit: 1 << 20,
        }
    }

    #[tokio::test]
    async fn https_with_the_approvers_ca_and_a_bearer_token_reads_the_snapshot() {
        let pki = pki(NAME);
        let addr = serve(Some(pki.server), SNAPSHOT.to_owned()).await;
        let e = endpoint(Scheme::Https, addr);
        let t = trust(&pki.ca_pem, NAME);
        let snapshot = attestations(request(&e, Some(&t), Some(TOKEN)))
            .await
            .expect("snapshot");
        assert_eq!(snapshot.attestations.len(), 1);
        assert_eq!(snapshot.attestations[0].node_name, "worker-1");

        let refused = attestations(request(&e, Some(&t), Some("other"))).await;
        assert!(
            matches!(refused, Err(FetchError::Forbidden { .. })),
            "{refused:?}"
        );
        let anonymous = attestations(request(&e, Some(&t), None)).await;
        assert!(
            anonymous
                .as_ref()
                .is_err_and(|e| e.to_string().contains("--token")),
            "{anonymous:?}"
        );
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_or_for_another_name_is_refused_before_the_token_is_sent()
    {
        let pki = pki(NAME);
        let other = self::pki(NAME);
        let addr = serve(Some(pki.server), SNAPSHOT.to_owned()).await;
        let e = endpoint(Scheme::Https, addr);
        let wrong_ca = trust(&other.ca_pem, NAME);
        let r = attestations(request(&e, Some(&wrong_ca), Some(TOKEN))).await;
        assert!(matches!(r, Err(FetchError::Tls { .. })), "{r:?}");
        let wrong_name = trust(&pki.ca_pem, "approver.other.svc");
        let r = attestations(request(&e, Some(&wrong_name), Some(TOKEN))).await;
        assert!(matches!(r, Err(FetchError::Tls { .. })), "{r:?}");
        let r = attestations(request(&e, None, Some(TOKEN))).await;
        assert!(matches!(r, Err(FetchError::Trust(_))), "{r:?}");
    }

    #[tokio::test]
    async fn plain_http_never_carries_the_token() {
        let addr = serve(None, SNAPSHOT.to_owned()).await;
        let e = endpoint(Scheme::Http, addr);
        // The test server answers 400 to a token over HTTP: `exchange` is given none.
        let snapshot = attestations(request(&e, None, None))
            .await
            .expect("snapshot");
        assert_eq!(snapshot.attestations.len(), 1);
        let https_port_over_http = serve(Some(pki(NAME).server), SNAPSHOT.to_owned()).await;
        let r = attestations(SnapshotRequest {
            timeout: Duration::from_secs(2),
            ..request(&endpoint(Scheme::Http, https_port_over_http), None, None)
        })
        .await;
        assert!(r.is_err(), "{r:?}");
    }

    #[tokio::test]
    async fn a_snapshot_over_the_limit_or_not_a_snapshot_is_refused() {
        let addr = serve(None, SNAPSHOT.to_owned()).await;
        let e = endpoint(Scheme::Http, addr);
        let small = SnapshotRequest {
            limit: 64,
            ..request(&e, None, None)
        };
        let r = attestations(small).await;
        assert!(
            matches!(r, Err(FetchError::TooLarge { limit: 64, .. })),
            "{r:?}"
        );
        let junk = serve(None, "{\"attestations\": 7}".to_owned()).await;
        let r = attestations(request(&endpoint(Scheme::Http, junk), None, None)).await;
        assert!(matches!(r, Err(FetchError::Invalid(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_silent_port_times_out() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let e = endpoint(Scheme::Http, addr);
        let r = attestations(SnapshotRequest {
            timeout: Duration::from_millis(200),
            ..request(&e, None, None)
        })
        .await;
        assert!(matches!(r, Err(FetchError::Timeout { .. })), "{r:?}");
        drop(listener);
    }

    #[test]
    fn bundles_without_certificates_are_refused() {
        assert!(roots_from_pem("").is_err());
        assert!(
            roots_from_pem("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
