//! The testbed's cloud instance metadata service: what AWS (IMDSv2), Google Compute
//! Engine, Azure (IMDS) and OpenStack (Nova) serve at `169.254.169.254`, for one instance,
//! following each provider's documented protocol — AWS's session token (`PUT
//! /latest/api/token` with a TTL header, then the token on every read, 401 without it),
//! GCE's `Metadata-Flavor: Google` both ways (403 without it), Azure's `Metadata: true`
//! (400 without it), OpenStack's JSON documents and EC2-compatible paths — so the agent's
//! reader is tested against the protocols, and the sandbox's cloud node has a metadata
//! service in its network namespace. [`Fault`]s make it slow, redirect, oversized or
//! garbage.
//!
//! No real cloud runs here; each handler cites the page it follows.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which provider's protocol the service speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// AWS EC2 IMDSv2.
    Aws,
    /// Google Compute Engine.
    Gcp,
    /// Azure IMDS.
    Azure,
    /// OpenStack Nova.
    Openstack,
}

/// The instance the service describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// Private (interface) addresses.
    pub private: Vec<IpAddr>,
    /// Public addresses (1:1 NAT: on no interface of the instance).
    pub public: Vec<IpAddr>,
    /// The private DNS name (AWS `local-hostname`, GCE `hostname`, Azure computer name,
    /// OpenStack `hostname`).
    pub private_name: Option<String>,
    /// The public DNS name (AWS `public-hostname`; the others have none).
    pub public_name: Option<String>,
}

/// How the service misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// It does not.
    #[default]
    None,
    /// Every answer waits this long.
    Slow(Duration),
    /// Every read answers `307` to elsewhere.
    Redirect,
    /// Every read answers a body of this many bytes.
    Oversized(usize),
    /// Every read answers bytes that mean nothing.
    Garbage,
}

#[derive(Debug)]
struct State {
    provider: Provider,
    instance: Mutex<Instance>,
    fault: Mutex<Fault>,
    token: String,
    requests: Mutex<u64>,
}

/// A running metadata service.
#[derive(Debug)]
pub struct MetadataService {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

/// AWS's token header, its TTL header and the path that issues tokens.
pub const AWS_TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const AWS_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

impl MetadataService {
    /// Serves `instance` in `provider`'s protocol on `listener` until dropped.
    pub fn start(
        listener: TcpListener,
        provider: Provider,
        instance: Instance,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            provider,
            instance: Mutex::new(instance),
            fault: Mutex::new(Fault::None),
            token: format!("AQAEA{:016x}", rand_token()),
            requests: Mutex::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, Arc::clone(&state), stop.clone()));
        Ok(Self { addr, state, stop })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on it misbehaves so.
    pub fn set_fault(&self, fault: Fault) {
        *self
            .state
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// From now on it describes `instance`.
    pub fn set_instance(&self, instance: Instance) {
        *self
            .state
            .instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = instance;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        *self
            .state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MetadataService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn rand_token() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

async fn serve(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn answer(state: &State, req: Request<Incoming>) -> Reply {
    *state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner) += 1;
    let fault = *state.fault.lock().unwrap_or_else(PoisonError::into_inner);
    if let Fault::Slow(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let (parts, body) = req.into_parts();
    // The body is never needed; read it so the connection stays usable.
    let _ = body.collect().await;
    match fault {
        Fault::Redirect => {
            let mut r = reply(StatusCode::TEMPORARY_REDIRECT, "");
            r.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_static("http://203.0.113.80/latest/meta-data/"),
            );
            return with_flavor(state, r);
        }
        Fault::Oversized(n) => return with_flavor(state, reply(StatusCode::OK, vec![b'1'; n])),
        Fault::Garbage => {
            return with_flavor(
                state,
                reply(StatusCode::OK, &b"\xff\xfe<html>not metadata"[..]),
            );
        }
        Fault::None | Fault::Slow(_) => {}
    }
    let instance = state
        .instance
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let response = match state.provider {
        Provider::Aws => aws(
            state,
            &parts.method,
            path,
            header(AWS_TOKEN_HEADER),
            header(AWS_TTL_HEADER),
            &instance,
        ),
        Provider::Gcp => gcp(path, header("metadata-flavor"), &instance),
        Provider::Azure => azure(path, header("metadata"), &instance),
        Provider::Openstack => openstack(path, &instance),
    };
    with_flavor(state, response)
}

/// GCE's server marks every answer as its own.
fn with_flavor(state: &State, mut response: Reply) -> Reply {
    if state.provider == Provider::Gcp {
        response
            .headers_mut()
            .insert("Metadata-Flavor", http::HeaderValue::from_static("Google"));
    }
    response
}

fn lines(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn found(text: String) -> Reply {
    if text.is_empty() {
        reply(StatusCode::NOT_FOUND, "")
    } else {
        reply(StatusCode::OK, text)
    }
}

/// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html>:
/// tokens come from `PUT /latest/api/token` with a TTL header (400 without it); IMDSv2-only
/// instances answer 401 to a read without a valid token. One interface, MAC
/// `0e:00:00:00:00:01`; IPv6 addresses there.
fn aws(
    state: &State,
    method: &Method,
    path: &str,
    token: Option<&str>,
    ttl: Option<&str>,
    i: &Instance,
) -> Reply {
    const MAC: &str = "0e:00:00:00:00:01";
    if path == "/latest/api/token" {
        if method != Method::PUT {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        return match ttl.and_then(|t| t.parse::<u32>().ok()) {
            Some(1..=21600) => reply(StatusCode::OK, state.token.clone()),
            _ => reply(StatusCode::BAD_REQUEST, ""),
        };
    }
    if token != Some(state.token.as_str()) {
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = i.private.iter().partition(|ip| ip.is_ipv4());
    let public_v4: Vec<IpAddr> = i.public.iter().copied().filter(IpAddr::is_ipv4).collect();
    let mac = format!("/latest/meta-data/network/interfaces/macs/{MAC}/");
    match path {
        "/latest/meta-data/local-ipv4" => {
            found(v4.first().map(ToString::to_string).unwrap_or_default())
        }
        "/latest/meta-data/public-ipv4" => found(
            public_v4
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        "/latest/meta-data/local-hostname" => found(i.private_name.clone().unwrap_or_default()),
        "/latest/meta-data/public-hostname" => found(i.public_name.clone().unwrap_or_default()),
        "/latest/meta-data/network/interfaces/macs/" => found(format!("{MAC}/")),
        p if p.strip_prefix(mac.as_str()) == Some("local-ipv4s") => found(lines(&v4)),
        p if p.strip_prefix(mac.as_str()) == Some("public-ipv4s") => found(lines(&public_v4)),
        p if p.strip_prefix(mac.as_str()) == Some("ipv6s") => found(lines(&v6)),
        _ => reply(StatusCode::NOT_FOUND, ""),
    }
}

/// <https://cloud.google.com/compute/docs/metadata/querying-metadata>: requests without
/// `Metadata-Flavor: Google` get 403; `?recursive=true` answers JSON.
fn gcp(path: &str, flavor: Option<&str>, i: &Instance) -> Reply {
    if flavor != Some("Google") {
        return reply(
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        );
    }
    match path {
        "/computeMetadata/v1/instance/id" => reply(StatusCode::OK, "4567890123456789012"),
        "/computeMetadata/v1/instance/hostname" => {
            found(i.private_name.clone().unwrap_or_default())
        }
        "/computeMetadata/v1/instance/network-interfaces/?recursive=true" => {
            let (v4, v6): (Vec<&IpAddr>, Vec<&IpAddr>) =
                i.private.iter().partition(|ip| ip.is_ipv4());
            let iface = json!({
                "ip": v4.first().map(ToString::to_string).unwrap_or_default(),
                "ipv6s": v6.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "network": "projects/1/networks/default",
                "accessConfigs": i.public.iter().filter(|ip| ip.is_ipv4())
                    .map(|ip| json!({"externalIp": ip.to_string(), "type": "ONE_TO_ONE_NAT"}))
                    .collect::<Vec<_>>(),
                "ipv6AccessConfigs": i.public.iter().filter(|ip| ip.is_ipv6())
                    .map(|ip| json!({"externalIpv6": ip.to_string(), "type": "DIRECT_IPV6"}))
                    .collect::<Vec<_>>(),
            });
            reply(StatusCode::OK, json!([iface]).to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, ""),
    }
}

/// <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>:
/// requests without `Metadata: true` get 400.
fn azure(path: &str, metadata: Option<&str>, i: &Instance) -> Reply {
    if metadata != Some("true") {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "Bad request. Required metadata header not specified"}).to_string(),
        );
    }
    if !path.starts_with("/metadata/instance?") || !path.contains("api-version=") {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "Bad request. api-version was not specified in the request"})
                .to_string(),
        );
    }
    let (v4, v6): (Vec<&IpAddr>, Vec<&IpAddr>) = i.private.iter().partition(|ip| ip.is_ipv4());
    let public_v4: Vec<&IpAddr> = i.public.iter().filter(|ip| ip.is_ipv4()).collect();
    let ipv4: Vec<Value> = v4
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            json!({"privateIpAddress": ip.to_string(),
            "publicIpAddress": public_v4.get(n).map(ToString::to_string).unwrap_or_default()})
        })
        .collect();
    let ipv6: Vec<Value> = v6
        .iter()
        .map(|ip| json!({"privateIpAddress": ip.to_string()}))
        .collect();
    let doc = json!({
        "compute": {"osProfile": {"computerName": i.private_name.clone().unwrap_or_default()},
                    "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6"},
        "network": {"interface": [{"ipv4": {"ipAddress": ipv4}, "ipv6": {"ipAddress": ipv6}}]},
    });
    reply(StatusCode::OK, doc.to_string())
}

/// <https://docs.openstack.org/nova/latest/user/metadata.html>: `meta_data.json`,
/// `network_data.json`, and the EC2-compatible `public-ipv4` (the floating address).
fn openstack(path: &str, i: &Instance) -> Reply {
    match path {
        "/openstack/latest/meta_data.json" => reply(
            StatusCode::OK,
            json!({"uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
                   "hostname": i.private_name.clone().unwrap_or_default(),
                   "name": "instance"})
            .to_string(),
        ),
        "/openstack/latest/network_data.json" => reply(
            StatusCode::OK,
            json!({"networks": i.private.iter().enumerate().map(|(n, ip)| json!({
                "id": format!("network{n}"), "type": if ip.is_ipv4() {"ipv4"} else {"ipv6"},
                "ip_address": ip.to_string()})).collect::<Vec<_>>()})
            .to_string(),
        ),
        "/latest/meta-data/public-ipv4" => found(
            i.public
                .iter()
                .find(|ip| ip.is_ipv4())
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        _ => reply(StatusCode::NOT_FOUND, ""),
    }
}
