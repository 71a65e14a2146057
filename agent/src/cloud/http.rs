//! A small, strict HTTP/1.1 client for instance metadata services: one connection per
//! request to a fixed link-local endpoint, bodies capped, redirects refused, and every
//! request bounded by the caller's deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest metadata answer read, in bytes: OpenStack's `meta_data.json` may carry 128
/// user `meta` items of up to 255 + 255 bytes, Azure's document every tag of the VM.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a metadata request failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection to the service at all (refused, unreachable, or not within the
    /// connect timeout): nothing serves metadata there.
    #[error("{0}")]
    Unreachable(String),
    /// The TCP connection or HTTP exchange failed.
    #[error("{0}")]
    Transport(String),
    /// The service answered with a redirect, which is never followed.
    #[error("{path}: answered a redirect ({status}), which is refused")]
    Redirect {
        /// The path asked.
        path: String,
        /// The status.
        status: StatusCode,
    },
    /// The service answered an unexpected status.
    #[error("{path}: answered {status}")]
    Status {
        /// The path asked.
        path: String,
        /// The status.
        status: StatusCode,
    },
    /// The answer was larger than [`MAX_BODY_BYTES`].
    #[error("{0}: the answer is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge(String),
    /// The answer is not what the protocol says.
    #[error("{path}: {problem}")]
    Malformed {
        /// The path asked.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: Bytes,
}

/// A client for the metadata service at one address.
#[derive(Clone, Copy, Debug)]
pub struct MetadataClient {
    endpoint: SocketAddr,
    connect_timeout: Duration,
}

/// Aborts the connection's task when the request ends, however it ends (an error, the
/// caller's timeout dropping the future).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl MetadataClient {
    /// A client for the service at `endpoint` (169.254.169.254:80 on every cloud); a
    /// connection not made within `connect_timeout` is [`MetadataError::Unreachable`].
    pub fn new(endpoint: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            endpoint,
            connect_timeout,
        }
    }

    /// Sends one request and reads the whole answer; the caller bounds the time.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, MetadataError> {
        let transport =
            |e: &dyn std::fmt::Display| MetadataError::Transport(format!("{path}: {e}"));
        let unreachable = |e: &dyn std::fmt::Display| {
            MetadataError::Unreachable(format!("connecting to {}: {e}", self.endpoint))
        };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.endpoint))
            .await
            .map_err(|_| unreachable(&format!("no connection within {:?}", self.connect_timeout)))?
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| transport(&e))?;
        let _driver = AbortOnDrop(tokio::spawn(connection));
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.endpoint.ip().to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).map_err(|e| transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(MetadataError::Redirect {
                path: path.to_owned(),
                status,
            });
        }
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    MetadataError::TooLarge(path.to_owned())
                } else {
                    transport(&e)
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            headers: parts.headers,
            body,
        })
    }

    /// `GET path` as text: `Some` for 200, `None` for 404 (the instance has none),
    /// an error otherwise or when the body is not UTF-8.
    pub async fn text(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Option<String>, MetadataError> {
        let answer = self.request(method, path, headers).await?;
        match answer.status {
            StatusCode::OK => String::from_utf8(answer.body.to_vec())
                .map(Some)
                .map_err(|_| MetadataError::Malformed {
                    path: path.to_owned(),
                    problem: "the answer is not UTF-8 text".to_owned(),
                }),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(MetadataError::Status {
                path: path.to_owned(),
                status,
            }),
        }
    }
}
