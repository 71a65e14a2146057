//! The testbed cluster: an in-memory Kubernetes API server over HTTPS that
//! unmodified clients (kube-rs, kube-lease-manager, `kubectl`) talk to, with an
//! in-cluster kubelet-serving signer and deterministic fault injection.
//!
//! # Layout
//!
//! - [`resources`]: the table of served kinds (adding a kind is one entry).
//! - [`store`]: objects, the global resourceVersion, watch history.
//! - [`server`], [`request`], [`rest`], [`watch`]: HTTPS, request parsing, verbs, watches.
//! - [`auth`], [`rbac`]: authentication (certificates, tokens) and authorisation.
//! - [`patch`], [`managed`]: patches and server-side apply.
//! - [`csr`], [`signer`]: CertificateSigningRequest rules and the signer.
//! - [`services`]: Service and ServiceCIDR rules, ClusterIP allocation, and the
//!   `kubernetes` Service and ServiceCIDR created at start.
//! - [`secrets`]: Secret and ConfigMap rules (type defaulting and immutability, `stringData`).
//! - [`pods`]: Pod defaults, the ServiceAccount admission plugin, pod validation.
//! - [`tokens`]: bound ServiceAccount tokens — the `serviceaccounts/token` subresource,
//!   TokenReview, and their use as bearer credentials.
//! - [`discovery`], [`table`]: what kubectl needs to find and print things.
//! - [`proto`]: protobuf request bodies of kubectl's typed clients.
//! - [`faults`]: fault injection; [`kubeconfig`]: credentials and clients.
//!
//! Binaries: `testbed-cluster` (the cluster alone, with kubeconfigs in a directory) and
//! `testbed-pki` (its CA and certificates). Its conformance tests against kube-rs,
//! kube-lease-manager and `kubectl` are `tests/conformance.rs`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rubber_stamp_apiserver::ClusterError> {
//! use rubber_stamp_apiserver::{Cluster, ClusterOptions};
//! let cluster = Cluster::start(ClusterOptions::default()).await?;
//! let client = cluster.client(&cluster.admin()?).await?;
//! # drop(client);
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod csr;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod kubeconfig;
pub mod managed;
pub mod object;
pub mod patch;
pub mod pods;
pub mod proto;
pub mod rbac;
pub mod request;
pub mod resources;
pub mod rest;
pub mod secrets;
pub mod selector;
pub mod server;
pub mod services;
pub mod signer;
pub mod status;
pub mod store;
pub mod table;
pub mod tokens;
pub mod versions;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::UserInfo;
pub use faults::{Budget, FaultAction, FaultRule, Faults, RequestMatch};
pub use kubeconfig::{Auth, Credentials};
pub use services::ServiceNetwork;
pub use signer::SignerConfig;
pub use status::ApiError;
pub use store::ObjectKey;

use request::Output;
use resources::ResourceId;
use rubber_stamp_testkit::pki::{Ca, LeafSpec, PkiError};
use store::{Store, StoreError};

/// Errors of the testbed cluster's library API.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Binding the listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("test PKI: {0}")]
    Pki(#[from] PkiError),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The kind is not served.
    #[error("kind {0} is not served by the testbed")]
    UnknownKind(String),
    /// The API refused the operation.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A YAML document could not be loaded.
    #[error("YAML document {index}: {message}")]
    Yaml {
        /// Zero-based document index.
        index: usize,
        /// What was wrong.
        message: String,
    },
    /// (De)serialising an object failed.
    #[error("object encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// Building a kubeconfig or client failed.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The ServiceAccount token signing key could not be made.
    #[error("ServiceAccount token signing key: {0}")]
    SigningKey(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How to run a cluster. Every limit has a safe default.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Where to listen (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Watch events retained per kind; older resourceVersions get `410 Gone` (default 10 000).
    pub history_limit: usize,
    /// Undelivered events per kind a live watcher may fall behind before it is closed (default 16 384).
    pub watch_channel_capacity: usize,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (default 5 s).
    pub bookmark_interval: Duration,
    /// Largest request body (default 3 MiB, like kube-apiserver).
    pub max_body_bytes: usize,
    /// Seed of the fault injector's RNG (default 0).
    pub fault_seed: u64,
    /// Run the kubelet-serving signer (default true).
    pub signer: Option<SignerConfig>,
    /// Extra DNS names for the serving certificate.
    pub extra_dns_names: Vec<String>,
    /// `--service-cluster-ip-range`: ClusterIPs are allocated from it, the `kubernetes`
    /// Service gets its first address, the `kubernetes` ServiceCIDR holds it (default
    /// 10.96.0.0/12).
    pub service_network: ServiceNetwork,
    /// Serve `networking.k8s.io/v1` ServiceCIDRs, as Kubernetes 1.33+ does (default true);
    /// false answers 404 for them, as a 1.30 server does.
    pub serve_service_cidrs: bool,
    /// `--service-account-issuer`: the `iss` of the ServiceAccount tokens the cluster issues
    /// and the only one it accepts (default [`tokens::DEFAULT_ISSUER`]).
    pub service_account_issuer: String,
    /// `--api-audiences`: the audiences of a token requested without any, and what a bearer
    /// token must be meant for (default empty: the issuer, [`tokens::API_AUDIENCE`]).
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration`: longer TokenRequests are shortened to it
    /// (default [`tokens::DEFAULT_MAX_TOKEN_EXPIRATION`], 48 hours).
    pub service_account_max_token_expiration: Duration,
    /// `--service-account-extend-token-expiration`: a pod-bound token asked for 3607 s (the
    /// kubelet's) lives a year with a `warnafter` claim (default true).
    pub service_account_extend_token_expiration: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            history_limit: 10_000,
            watch_channel_capacity: 16_384,
            bookmark_interval: Duration::from_secs(5),
            max_body_bytes: 3 * 1024 * 1024,
            fault_seed: 0,
            signer: Some(SignerConfig::default()),
            extra_dns_names: Vec::new(),
            service_network: ServiceNetwork::default(),
            serve_service_cidrs: true,
            service_account_issuer: tokens::DEFAULT_ISSUER.to_owned(),
            api_audiences: Vec::new(),
            service_account_max_token_expiration: tokens::DEFAULT_MAX_TOKEN_EXPIRATION,
            service_account_extend_token_expiration: true,
        }
    }
}

/// Limits the request path consults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Bookmark interval.
    pub bookmark_interval: Duration,
}

/// State shared by every request.
#[derive(Debug)]
pub struct State {
    /// Objects.
    pub store: Arc<Store>,
    /// Authorizer.
    pub authz: rbac::Authorizer,
    /// Static tokens.
    pub tokens: auth::TokenTable,
    /// The ServiceAccount token signer and checker, with the token clock.
    pub issuer: tokens::Issuer,
    /// Faults.
    pub faults: Arc<Faults>,
    /// Limits.
    pub limits: Limits,
    /// `host:port` for discovery.
    pub server_address: String,
    /// The Service ranges.
    pub services: ServiceNetwork,
    /// Kinds answered with 404 as if not compiled in (ServiceCIDRs of an older server).
    pub unserved: Vec<ResourceId>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
}

/// The response body type.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response under construction.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    content_type: String,
    body: Body,
    warnings: Vec<String>,
    retry_after: Option<u32>,
}

// === impl Reply ===

impl Reply {
    fn full(status: u16, content_type: &str, bytes: Bytes) -> Self {
        Self {
            status,
            content_type: content_type.to_owned(),
            body: Full::new(bytes).map_err(|never| match never {}).boxed(),
            warnings: Vec::new(),
            retry_after: None,
        }
    }

    /// Pre-serialised JSON.
    pub fn json_bytes(status: u16, bytes: Bytes) -> Self {
        Self::full(status, "application/json", bytes)
    }

    /// A JSON (or YAML) value.
    pub fn value(status: u16, value: &Value, output: Output) -> Self {
        if output == Output::Yaml
            && let Ok(y) = serde_yaml::to_string(value)
        {
            return Self::full(status, "application/yaml", Bytes::from(y));
        }
        Self::json_bytes(status, Bytes::from(value.to_string()))
    }

    /// Plain text.
    pub fn text(status: u16, text: &str) -> Self {
        Self::full(
            status,
            "text/plain; charset=utf-8",
            Bytes::from(text.to_owned()),
        )
    }

    /// A streaming body.
    pub fn stream<S>(status: u16, content_type: &str, body: StreamBody<S>) -> Self
    where
        S: futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static,
    {
        Self {
            status,
            content_type: content_type.to_owned(),
            body: body.boxed(),
            warnings: Vec::new(),
            retry_after: None,
        }
    }

    /// A `Status` for an error.
    pub fn error(e: &ApiError) -> Self {
        let mut r = Self::json_bytes(e.code, Bytes::from(e.to_status().to_string()));
        r.retry_after = e.retry_after;
        r
    }

    /// Adds `Warning` headers.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }

    /// Overrides the Content-Type.
    pub fn with_content_type(mut self, ct: &str) -> Self {
        self.content_type = ct.to_owned();
        self
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let mut b = Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, self.content_type)
            .header(http::header::CACHE_CONTROL, "no-cache, private");
        for w in &self.warnings {
            let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
            b = b.header("Warning", format!("299 - \"{escaped}\""));
        }
        if let Some(secs) = self.retry_after {
            b = b.header(http::header::RETRY_AFTER, secs.to_string());
        }
        match b.body(self.body) {
            Ok(r) => r,
            Err(_) => {
                let mut r = Response::new(
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed(),
                );
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        }
    }
}

/// The current time as kube-apiserver writes timestamps (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

const BOOTSTRAP_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A running testbed cluster.
#[derive(Debug)]
pub struct Cluster {
    state: Arc<State>,
    ca: Arc<Ca>,
    addr: SocketAddr,
    url: String,
    tasks: Vec<JoinHandle<()>>,
}

fn tls_acceptor(
    ca: &Ca,
    addr: SocketAddr,
    extra_dns: &[String],
) -> Result<tokio_rustls::TlsAcceptor, ClusterError> {
    let mut dns: Vec<&str> = vec![
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ];
    dns.extend(extra_dns.iter().map(String::as_str));
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ];
    if !ips.contains(&addr.ip()) && !addr.ip().is_unspecified() {
        ips.push(addr.ip());
    }
    let leaf = ca.issue(&LeafSpec::server("kube-apiserver", &dns, &ips))?;
    let tls = |e: &dyn std::fmt::Display| ClusterError::Tls(e.to_string());
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(leaf.cert_der.clone())], key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn resource_id<K: Resource>() -> Result<ResourceId, ClusterError> {
    resources::find(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
        .ok_or_else(|| ClusterError::UnknownKind(format!("{}/{}", K::API_VERSION, K::KIND)))
}

// === impl Cluster ===

impl Cluster {
    /// Starts a cluster with a new CA on `options.listen`.
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| ClusterError::Bind {
                    addr: options.listen,
                    source,
                })?;
        Self::start_with(listener, Ca::new("testbed-cluster-ca")?, options)
    }

    /// Starts a cluster on an existing listener with a given cluster CA.
    pub fn start_with(
        listener: TcpListener,
        ca: Ca,
        options: ClusterOptions,
    ) -> Result<Self, ClusterError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: options.listen,
            source,
        })?;
        let acceptor = tls_acceptor(&ca, addr, &options.extra_dns_names)?;
        let store = Arc::new(Store::new(
            options.history_limit,
            options.watch_channel_capacity,
        ));
        let issuer = tokens::Issuer::new(
            &options.service_account_issuer,
            &options.api_audiences,
            options.service_account_max_token_expiration,
            options.service_account_extend_token_expiration,
        )
        .map_err(ClusterError::SigningKey)?;
        let state = Arc::new(State {
            authz: rbac::Authorizer::new(store.clone()),
            store,
            tokens: auth::TokenTable::default(),
            issuer,
            faults: Arc::new(Faults::new(options.fault_seed)),
            limits: Limits {
                max_body_bytes: options.max_body_bytes,
                bookmark_interval: options.bookmark_interval,
            },
            server_address: addr.to_string(),
            services: options.service_network.clone(),
            unserved: if options.serve_service_cidrs {
                Vec::new()
            } else {
                vec![resources::ids::service_cidrs()]
            },
            shutdown: CancellationToken::new(),
        });
        let ca = Arc::new(ca);
        let host = match addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let mut cluster = Self {
            url: format!("https://{host}:{}", addr.port()),
            state: state.clone(),
            ca: ca.clone(),
            addr,
            tasks: Vec::new(),
        };
        cluster.bootstrap()?;
        cluster.tasks.push(tokio::spawn(server::serve(
            listener,
            state.clone(),
            acceptor,
        )));
        if let Some(config) = options.signer {
            cluster.tasks.push(tokio::spawn(signer::run(
                state.store.clone(),
                ca,
                config,
                state.shutdown.clone(),
            )));
        }
        Ok(cluster)
    }

    /// Serves on `listener` until `shutdown` resolves, then stops gracefully.
    pub async fn serve(
        listener: TcpListener,
        ca: Ca,
        options: ClusterOptions,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ClusterError> {
        let cluster = Self::start_with(listener, ca, options)?;
        shutdown.await;
        cluster.shutdown().await;
        Ok(())
    }

    fn bootstrap(&self) -> Result<(), ClusterError> {
        for ns in BOOTSTRAP_NAMESPACES {
            self.apply_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        self.load_yaml(rbac::BOOTSTRAP_RBAC)?;
        // What kube-apiserver's controllers create before it reports ready: the default
        // ServiceCIDR (where served) and the `kubernetes` Service on the range's first
        // address, targeting the serving port.
        let network = &self.state.services;
        if self.state.unserved.is_empty() {
            self.apply_value(services::default_service_cidr(network, &now_rfc3339()))?;
        }
        if let Some(kubernetes) = services::kubernetes_service(network, self.addr.port()) {
            self.apply_value(kubernetes)?;
        }
        Ok(())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA (it also signs kubelet-serving certificates).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The fault handle.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Direct object access, bypassing HTTP and authorisation.
    pub fn objects(&self) -> Objects<'_> {
        Objects { state: &self.state }
    }

    /// Credentials with a client certificate for any user and groups.
    pub fn user(&self, name: &str, groups: &[&str]) -> Result<Credentials, ClusterError> {
        let leaf = self.ca.issue(&LeafSpec::client(name, groups))?;
        Ok(Credentials {
            user: UserInfo::new(name, groups),
            auth: Auth::ClientCertificate {
                cert_pem: leaf.cert_pem,
                key_pem: leaf.key_pem,
            },
        })
    }

    /// The cluster admin (`kubernetes-admin`, group `system:masters`).
    pub fn admin(&self) -> Result<Credentials, ClusterError> {
        self.user("kubernetes-admin", &[auth::MASTERS])
    }

    /// A kubelet's client credentials (`system:node:<name>`, group `system:nodes`).
    pub fn node(&self, name: &str) -> Result<Credentials, ClusterError> {
        self.user(&format!("{}{name}", auth::NODE_PREFIX), &[auth::NODES])
    }

    /// Registers a static bearer token for `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) -> Credentials {
        self.state.tokens.insert(token, user.clone());
        Credentials {
            user,
            auth: Auth::Token(token.to_owned()),
        }
    }

    /// A token for ServiceAccount `namespace/name` (the ServiceAccount object is created if missing).
    pub fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Credentials, ClusterError> {
        let id = resources::find("", "v1", "serviceaccounts")
            .ok_or_else(|| ClusterError::UnknownKind("v1/ServiceAccount".into()))?;
        if self
            .state
            .store
            .get(id, &ObjectKey::new(namespace, name))
            .is_none()
        {
            self.apply_value(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                    "metadata": {"name": name, "namespace": namespace}}))?;
        }
        let bytes: [u8; 24] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.add_token(&token, UserInfo::service_account(namespace, name)))
    }

    /// The kubeconfig YAML for some credentials.
    pub fn kubeconfig(&self, creds: &Credentials) -> Result<String, ClusterError> {
        kubeconfig::kubeconfig_yaml(&self.url, self.ca_pem(), creds)
    }

    /// Writes `<dir>/<stem>.kubeconfig` for some credentials.
    pub fn write_kubeconfig(
        &self,
        creds: &Credentials,
        dir: &Path,
        stem: &str,
    ) -> Result<PathBuf, ClusterError> {
        kubeconfig::write_kubeconfig(dir, stem, &self.url, self.ca_pem(), creds)
    }

    /// A kube-rs client for some credentials, built from their kubeconfig.
    pub async fn client(&self, creds: &Credentials) -> Result<kube::Client, ClusterError> {
        kubeconfig::client(&self.url, self.ca_pem(), creds).await
    }

    /// Creates or replaces every object in a (multi-document) YAML string,
    /// e.g. RBAC manifests; returns the keys written, in order.
    pub fn load_yaml(&self, yaml: &str) -> Result<Vec<(String, ObjectKey)>, ClusterError> {
        use serde::Deserialize as _;
        let mut out = Vec::new();
        for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let value = Value::deserialize(doc).map_err(|e| ClusterError::Yaml {
                index,
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            let items = if value.get("kind").and_then(Value::as_str) == Some("List") {
                value
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            } else {
                vec![value]
            };
            for item in items {
                let kind_name = item
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let key = self.apply_value(item).map_err(|e| ClusterError::Yaml {
                    index,
                    message: e.to_string(),
                })?;
                out.push((kind_name, key));
            }
        }
        Ok(out)
    }

    /// Like [`Cluster::load_yaml`] for a file.
    pub fn load_yaml_file(&self, path: &Path) -> Result<Vec<(String, ObjectKey)>, ClusterError> {
        let yaml = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.load_yaml(&yaml)
    }

    fn apply_value(&self, value: Value) -> Result<ObjectKey, ClusterError> {
        let av = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kd = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let id = resources::find_by_kind(av, kd)
            .ok_or_else(|| ClusterError::UnknownKind(format!("{av}/{kd}")))?;
        let ns = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        Objects { state: &self.state }.upsert_value(id, &ns, value)
    }

    /// Stops serving: ends watches, drains connections, stops the signer.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Direct access to stored objects for tests and benchmarks: no HTTP, no
/// authorisation, but the same defaulting, validation and resourceVersions.
#[derive(Debug)]
pub struct Objects<'a> {
    state: &'a State,
}

fn admin_user() -> UserInfo {
    UserInfo::new("system:admin", &[auth::MASTERS]).authenticated()
}

// === impl Objects ===

impl Objects<'_> {
    /// One object.
    pub fn get<K: Resource + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, ClusterError> {
        let id = resource_id::<K>()?;
        let ns = if resources::kind(id).namespaced {
            namespace
        } else {
            ""
        };
        match self.state.store.get(id, &ObjectKey::new(ns, name)) {
            Some(o) => Ok(Some(serde_json::from_slice(&o.json)?)),
            None => Ok(None),
        }
    }

    /// Every object of a kind (in a namespace if given).
    pub fn list<K: Resource + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<K>, ClusterError> {
        let id = resource_id::<K>()?;
        self.state
            .store
            .list(id, namespace, None, None, |_, _| true)
            .items
            .iter()
            .map(|o| serde_json::from_slice(&o.json).map_err(ClusterError::from))
            .collect()
    }

    /// How many objects of a kind exist.
    pub fn count<K: Resource>(&self) -> Result<usize, ClusterError> {
        Ok(self.state.store.count(resource_id::<K>()?))
    }

    /// Creates an object as the admin.
    pub fn create<K>(&self, obj: &K) -> Result<K, ClusterError>
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned,
    {
        self.create_as(&admin_user(), obj)
    }

    /// Creates an object as `user` (a CSR records `user` as its requestor).
    pub fn create_as<K>(&self, user: &UserInfo, obj: &K) -> Result<K, ClusterError>
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned,
    {
        let id = resource_id::<K>()?;
        let ns = obj
            .metadata()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let value = (resources::kind(id).normalize)(serde_json::to_value(obj)?)?;
        match rest::create_object(self.state, user, id, &ns, value, Some("testbed"), false)? {
            rest::Created::Stored(stored) => Ok(serde_json::from_slice(&stored.json)?),
            rest::Created::DryRun(value) => Ok(serde_json::from_value(value)?),
        }
    }

    /// Replaces an object wholesale (status included, no strategy), keeping
    /// its uid and creationTimestamp; a set resourceVersion is a precondition.
    pub fn update<K>(&self, obj: &K) -> Result<K, ClusterError>
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned,
    {
        let id = resource_id::<K>()?;
        let k = resources::kind(id);
        let meta = obj.metadata();
        let name = meta.name.clone().unwrap_or_default();
        let ns = if k.namespaced {
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        };
        let key = ObjectKey::new(&ns, &name);
        let precondition: Option<u64> = meta
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok());
        let value = (k.normalize)(serde_json::to_value(obj)?)?;
        loop {
            let current = self
                .state
                .store
                .get(id, &key)
                .ok_or_else(|| ApiError::not_found(k, &name))?;
            if precondition.is_some_and(|p| p != current.rv) {
                return Err(ApiError::conflict(k, &name).into());
            }
            let old = current.value()?;
            let mut new = value.clone();
            for f in ["uid", "creationTimestamp"] {
                if let Some(v) = old.pointer(&format!("/metadata/{f}")) {
                    new["metadata"][f] = v.clone();
                }
            }
            managed::track_update(k, Some(&old), &mut new, "testbed", "", &now_rfc3339());
            match self.state.store.update(id, &key, current.rv, new) {
                Ok(o) => return Ok(serde_json::from_slice(&o.json)?),
                Err(StoreError::Conflict) if precondition.is_none() => continue,
                Err(StoreError::Conflict) => return Err(ApiError::conflict(k, &name).into()),
                Err(_) => return Err(ApiError::not_found(k, &name).into()),
            }
        }
    }

    /// Deletes an object; `false` if it did not exist.
    pub fn delete<K: Resource>(&self, namespace: &str, name: &str) -> Result<bool, ClusterError> {
        let id = resource_id::<K>()?;
        let ns = if resources::kind(id).namespaced {
            namespace
        } else {
            ""
        };
        Ok(self
            .state
            .store
            .delete(id, &ObjectKey::new(ns, name), None)
            .is_ok())
    }

    /// Every change committed to a kind from now on, as the store commits it (no HTTP, no
    /// selectors): for benchmarks that time writes from inside the cluster. The receiver
    /// holds up to `watch_channel_capacity` undelivered changes; past that it lags.
    pub fn subscribe<K: Resource>(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<Arc<store::Change>>, ClusterError> {
        Ok(self.state.store.subscribe(resource_id::<K>()?))
    }

    /// Freezes what clients read of kind `K` at its current state: from now until
    /// [`Objects::catch_up_reads`] (or [`Faults::clear`]), its lists answer this snapshot and
    /// its watches — open ones too — hold back every later change, as a watch cache behind
    /// etcd does ([`faults::StaleView`]). Writes go on as usual. Returns the snapshot's
    /// resourceVersion.
    pub fn serve_stale_reads<K: Resource>(&self) -> Result<u64, ClusterError> {
        let id = resource_id::<K>()?;
        // In storage form, so that every version of the resource is served from it.
        let storage = versions::storage_of(id);
        let page = self
            .state
            .store
            .list(storage, None, None, None, |_, _| true);
        let objects = page
            .items
            .into_iter()
            .filter_map(|o| {
                let v = o.value().ok()?;
                let meta = v.get("metadata")?;
                let key = ObjectKey::new(
                    meta.get("namespace").and_then(Value::as_str).unwrap_or(""),
                    meta.get("name").and_then(Value::as_str).unwrap_or(""),
                );
                Some((key, o))
            })
            .collect();
        self.state.faults.serve_stale(
            id,
            faults::StaleView {
                rv: page.rv,
                objects,
            },
        );
        Ok(page.rv)
    }

    /// Ends [`Objects::serve_stale_reads`] for kind `K`: lists are current again and the
    /// held watch events are delivered.
    pub fn catch_up_reads<K: Resource>(&self) -> Result<(), ClusterError> {
        self.state.faults.catch_up(resource_id::<K>()?);
        Ok(())
    }

    /// Moves the clock that issues and checks ServiceAccount tokens forward by `by`, as if
    /// that much time had passed for them and nothing else: tokens issued before expire
    /// once their `exp` plus the minute of leeway ([`tokens::LEEWAY`]) is behind it, and an
    /// object deleted with finalizers invalidates its tokens a minute after its
    /// `deletionTimestamp` by it. Tokens issued afterwards are issued at the moved time.
    /// There is no way back (as for a real clock); [`Faults::clear`] leaves it where it is.
    pub fn advance_token_clock(&self, by: Duration) {
        self.state.issuer.advance_clock(by);
    }

    /// Drops all retained watch history: watches from older resourceVersions get 410.
    pub fn compact(&self) {
        self.state.store.compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.current_rv()
    }

    fn upsert_value(
        &self,
        id: ResourceId,
        namespace: &str,
        value: Value,
    ) -> Result<ObjectKey, ClusterError> {
        let k = resources::kind(id);
        let value = (k.normalize)(value)?;
        let (key, prepared) = rest::prepare_create(
            self.state,
            &admin_user(),
            id,
            namespace,
            value,
            Some("testbed"),
        )?;
        match rest::store_new(self.state, id, key.clone(), prepared.clone())? {
            Ok(_) => Ok(key),
            Err(StoreError::AlreadyExists) => {
                let Some(current) = self.state.store.get(id, &key) else {
                    return Err(ApiError::conflict(k, &key.name).into());
                };
                let old = current.value()?;
                let mut new = prepared;
                for f in ["uid", "creationTimestamp"] {
                    if let Some(v) = old.pointer(&format!("/metadata/{f}")) {
                        new["metadata"][f] = v.clone();
                    }
                }
                self.state
                    .store
                    .update(id, &key, current.rv, new)
                    .map_err(|_| ApiError::conflict(k, &key.name))?;
                Ok(key)
            }
            Err(_) => Err(ApiError::conflict(k, &key.name).into()),
        }
    }
}
