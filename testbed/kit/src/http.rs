//! The smallest HTTP/1.1 client: one `GET` with `Connection: close`, for the admin and
//! metrics endpoints of the processes under test — in plain HTTP, or over TLS with an
//! optional bearer token ([`https_get`], the approver's secure admin port).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Why a `GET` failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The response is not one this client reads.
    #[error("HTTP: {0}")]
    Response(String),
    /// The TLS client could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
}

/// `GET path` over HTTP/1.1 on `addr`; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), HttpError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    get(stream, addr, path, None).await
}

/// How [`https_get`] trusts the server and who it says it is.
#[derive(Clone, Debug)]
pub struct HttpsClient {
    /// PEM of the CA(s) the server's certificate must chain to.
    pub ca_pem: String,
    /// The name the certificate must hold.
    pub server_name: String,
    /// Sent as `Authorization: Bearer`, if any.
    pub token: Option<String>,
}

/// `GET path` over HTTPS (HTTP/1.1) on `addr`, as `client` says; status code and body.
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    client: &HttpsClient,
) -> Result<(u16, String), HttpError> {
    let roots = CertificateDer::pem_slice_iter(client.ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::Tls(format!("CA PEM: {e}")))?;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| HttpError::Tls(format!("CA: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Tls(e.to_string()))?
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = ServerName::try_from(client.server_name.clone())
        .map_err(|e| HttpError::Tls(format!("server name: {e}")))?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    get(tls, addr, path, client.token.as_deref()).await
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), HttpError> {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response).await {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a whole response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let response = String::from_utf8(response).map_err(|e| HttpError::Response(e.to_string()))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| HttpError::Response("no header/body separator".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Response(format!("bad status line in {head:?}")))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(HttpError::Response(
            "chunked responses are not supported".into(),
        ));
    }
    Ok((status, body.to_owned()))
}
