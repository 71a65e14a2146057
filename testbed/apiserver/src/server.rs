//! The HTTPS front: TLS with optional client certificates, per-connection
//! identity, authentication of each request, non-resource endpoints
//! (health, version, discovery), authorisation and dispatch to the verbs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::auth::{UserInfo, bearer};
use super::discovery;
use super::faults::RequestFacts;
use super::rbac::{Attributes, ResourceAttributes, forbidden_message};
use super::request::Ctx;
use super::request::{Output, Query, negotiate, parse_resource_path};
use super::resources::{Behaviour, Subresource, kind};
use super::rest;
use super::status::ApiError;
use super::tokens;
use super::watch;
use super::{Body, Reply, State};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `state.shutdown` is cancelled, then drains.
pub async fn serve(listener: TcpListener, state: Arc<State>, acceptor: TlsAcceptor) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = state.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| UserInfo::from_certificate(c))
                .map(|u| Arc::new(u.authenticated()));
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(state, user, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

/// Answers one request.
pub async fn handle(
    state: Arc<State>,
    conn_user: Option<Arc<UserInfo>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let latency = state.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let reply = match dispatch(&state, conn_user, req).await {
        Ok(r) => r,
        Err(e) => Reply::error(&e),
    };
    tracing::trace!(%method, %path, status = reply.status, "request");
    reply.into_response()
}

fn header(req: &http::request::Parts, name: http::header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn authorize_path(
    state: &State,
    user: &UserInfo,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    let verb = method.as_str().to_ascii_lowercase();
    let attrs = Attributes {
        user,
        verb: &verb,
        resource: None,
        path,
    };
    if state.authz.authorize(&attrs).allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden_path(&forbidden_message(&attrs)))
    }
}

fn discovery_reply(value: serde_json::Value, aggregated: bool) -> Reply {
    if aggregated {
        Reply::json_bytes(200, Bytes::from(value.to_string()))
            .with_content_type(discovery::AGGREGATED_CONTENT_TYPE)
    } else {
        Reply::value(200, &value, Output::Json)
    }
}

async fn dispatch(
    state: &Arc<State>,
    conn_user: Option<Arc<UserInfo>>,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    // Endpoints the real server serves to anyone (system:public-info-viewer).
    if method == Method::GET {
        match segments.first().copied() {
            Some("healthz" | "livez" | "readyz") => return Ok(Reply::text(200, "ok")),
            Some("version") if segments.len() == 1 => {
                return Ok(Reply::value(200, &discovery::version(), Output::Json));
            }
            _ => {}
        }
    }

    let user: UserInfo = match conn_user {
        Some(u) => (*u).clone(),
        None => match header(&parts, http::header::AUTHORIZATION) {
            // Static tokens, then bound ServiceAccount tokens for the API audiences.
            Some(h) => bearer(h)
                .and_then(|t| tokens::authenticate_request(state, t))
                .ok_or_else(ApiError::unauthorized)?,
            None => return Err(ApiError::unauthorized()),
        },
    };
    if segments.first() == Some(&"openapi") {
        authorize_path(state, &user, &method, &path)?;
        let doc = match segments.as_slice() {
            ["openapi", "v3"] => Some(discovery::openapi_v3_root()),
            ["openapi", "v3", rest @ ..] => discovery::openapi_v3_group(&rest.join("/")),
            _ => None,
        };
        return doc
            .map(|d| Reply::value(200, &d, Output::Json))
            .ok_or_else(ApiError::no_route);
    }
    let accept = header(&parts, http::header::ACCEPT);
    let output = negotiate(accept)?;

    match segments.as_slice() {
        ["api"] | ["apis"] => {
            authorize_path(state, &user, &method, &path)?;
            let legacy = segments[0] == "api";
            if output == Output::AggregatedDiscovery {
                let doc = discovery::without(discovery::aggregated(legacy), &state.unserved)
                    .ok_or_else(ApiError::no_route)?;
                return Ok(discovery_reply(doc, true));
            }
            let doc = if legacy {
                discovery::api_versions(&state.server_address)
            } else {
                discovery::without(discovery::api_group_list(), &state.unserved)
                    .ok_or_else(ApiError::no_route)?
            };
            Ok(discovery_reply(doc, false))
        }
        ["api", "v1"] => {
            authorize_path(state, &user, &method, &path)?;
            discovery::api_resource_list("", "v1")
                .and_then(|d| discovery::without(d, &state.unserved))
                .map(|d| discovery_reply(d, false))
                .ok_or_else(ApiError::no_route)
        }
        ["apis", group] => {
            authorize_path(state, &user, &method, &path)?;
            discovery::api_group(group)
                .and_then(|d| discovery::without(d, &state.unserved))
                .map(|d| discovery_reply(d, false))
                .ok_or_else(ApiError::no_route)
        }
        ["apis", group, version] => {
            authorize_path(state, &user, &method, &path)?;
            discovery::api_resource_list(group, version)
                .and_then(|d| discovery::without(d, &state.unserved))
                .map(|d| discovery_reply(d, false))
                .ok_or_else(ApiError::no_route)
        }
        ["api", "v1", rest @ ..] => {
            resource(state, &user, parts, body, "", "v1", rest, output).await
        }
        ["apis", group, version, rest @ ..] => {
            resource(
                state,
                &user,
                parts.clone(),
                body,
                group,
                version,
                rest,
                output,
            )
            .await
        }
        _ => {
            authorize_path(state, &user, &method, &path)?;
            Err(ApiError::no_route())
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the request split in parts"
)]
async fn resource(
    state: &Arc<State>,
    user: &UserInfo,
    parts: http::request::Parts,
    body: Incoming,
    group: &str,
    version: &str,
    rest: &[&str],
    output: Output,
) -> Result<Reply, ApiError> {
    let query = Query::parse(parts.uri.query());
    let info = parse_resource_path(group, version, rest, &parts.method, &query)?;
    if state.unserved.contains(&info.id) {
        return Err(ApiError::no_route());
    }
    let k = kind(info.id);
    let sub = info.subresource.map_or("", |s| s.name());
    if let Some(e) = state.faults.check(&RequestFacts {
        verb: info.verb,
        kind: k,
        subresource: sub,
        name: &info.name,
    }) {
        return Err(e);
    }
    let attrs = ResourceAttributes {
        namespace: info.namespace.clone(),
        group: group.to_owned(),
        resource: k.plural.to_owned(),
        subresource: sub.to_owned(),
        name: info.name.clone(),
    };
    let authz = Attributes {
        user,
        verb: info.verb,
        resource: Some(&attrs),
        path: parts.uri.path(),
    };
    if !state.authz.authorize(&authz).allowed {
        return Err(ApiError::forbidden(
            k,
            &info.name,
            &forbidden_message(&authz),
        ));
    }
    if info.verb == "watch" {
        return watch::watch(state, &info, &query, output);
    }
    if output == Output::AggregatedDiscovery {
        return Err(ApiError::not_acceptable(
            header(&parts, http::header::ACCEPT).unwrap_or(""),
        ));
    }
    let body = match Limited::new(body, state.limits.max_body_bytes)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ApiError::too_large(state.limits.max_body_bytes));
        }
        Err(e) => return Err(ApiError::bad_request(format!("reading request body: {e}"))),
    };
    let ctx = Ctx {
        state,
        user,
        query: &query,
        output,
        user_agent: header(&parts, http::header::USER_AGENT).unwrap_or(""),
        content_type: header(&parts, http::header::CONTENT_TYPE),
        body,
    };
    match info.verb {
        "create" if k.behaviour == Behaviour::Review => rest::review(&ctx, &info),
        "create" if info.subresource == Some(Subresource::Token) => {
            tokens::create_token(&ctx, &info)
        }
        "get" => rest::get(&ctx, &info),
        "list" => rest::list(&ctx, &info),
        "create" => rest::create(&ctx, &info),
        "update" | "patch" => rest::update(&ctx, &info),
        "delete" => rest::delete(&ctx, &info),
        "deletecollection" => rest::delete_collection(&ctx, &info),
        _ => Err(ApiError::method_not_allowed("")),
    }
}
