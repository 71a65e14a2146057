//! The smallest HTTP/1.1 client: one `GET` with `Connection: close`, for the admin and
//! metrics endpoints of the processes under test.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Why a `GET` failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The response is not one this client reads.
    #[error("HTTP: {0}")]
    Response(String),
}

/// `GET path` over HTTP/1.1 on `addr`; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), HttpError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
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
