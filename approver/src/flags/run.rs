//! Flags of `rubber-stamp-approver run`, each with an environment fallback, turned into a
//! checked [`RunConfig`] and, unless `--attestation-only`, a [`ControllerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rubber_stamp_listen::PlaintextLimits;

use super::controller::ControllerArgs;
use super::parse_duration;
use super::pki::PkiArgs;
use crate::admin::auth::{AdminAuthConfig, AdminSecurity};
use crate::channel::{ConnectionLimits, GrpcConfig, StreamLimits, TlsFiles, TokenConfig};
use crate::controller::config::max_age_of;
use crate::controller::{ControllerConfig, ControllerConfigError};
use crate::pki::PkiConfigError;
use crate::proof::ProofConfig;
use crate::runtime::config::{
    ListenAddrs, ListenerLimits, LogFormat, RunConfig, TlsSource, prune_interval,
};
use crate::store::StoreConfig;

/// `rubber-stamp-approver run`: serve the attestation API, health and admin endpoints.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Address of the mTLS attestation gRPC server (agents connect here). `[::]` listens on
    /// IPv6 and IPv4 (IPv4 only where the kernel has no IPv6), as do the other two.
    #[arg(long, env = "RUBBER_STAMP_GRPC_LISTEN", default_value = "[::]:8443")]
    pub grpc_listen: SocketAddr,

    /// Address of the plaintext `grpc.health.v1` server (liveness service "", readiness
    /// service "rubberstamp.v1.Attestation").
    #[arg(
        long,
        env = "RUBBER_STAMP_HEALTH_LISTEN",
        default_value = "[::]:8081",
        visible_alias = "health-probe-bind-address"
    )]
    pub health_listen: SocketAddr,

    /// Address of the admin server (HTTPS unless --admin-secure=false): GET /attestations
    /// (snapshot JSON), /streams, /metrics.
    #[arg(
        long,
        env = "RUBBER_STAMP_ADMIN_LISTEN",
        default_value = "[::]:9090",
        visible_alias = "metrics-bind-address"
    )]
    pub admin_listen: SocketAddr,

    /// PEM certificate chain the attestation server presents to agents (bring your own, e.g.
    /// from cert-manager; read again every --tls-refresh-interval). Without --tls-cert and
    /// --tls-key the approver keeps its own CA and certificate in the Secret --tls-secret.
    #[arg(long, env = "RUBBER_STAMP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "RUBBER_STAMP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of the CA(s) that sign kubelet client certificates (the cluster CA).
    /// Agents that attest with a certificate must present one chaining to it. Required
    /// when --agent-identity includes kubelet-cert.
    #[arg(long, env = "RUBBER_STAMP_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// Credentials agents may attest with, comma-separated: `kubelet-cert` (the kubelet's
    /// client certificate, verified against --client-ca) and `token` (a projected
    /// ServiceAccount token, verified with a TokenReview and bound to a node through its
    /// Pod; needs Kubernetes 1.30+ and RBAC for tokenreviews and pods).
    #[arg(
        long,
        env = "RUBBER_STAMP_AGENT_IDENTITY",
        value_enum,
        value_delimiter = ',',
        default_value = "kubelet-cert"
    )]
    pub agent_identity: Vec<AgentIdentityMode>,

    /// Audience agents' tokens must be issued for (the projected volume's `audience`).
    #[arg(
        long,
        env = "RUBBER_STAMP_AGENT_TOKEN_AUDIENCE",
        default_value = "rubber-stamp"
    )]
    pub agent_token_audience: String,

    /// Namespace of the agent's ServiceAccount and DaemonSet. Default: --namespace.
    #[arg(long, env = "RUBBER_STAMP_AGENT_NAMESPACE", value_name = "NAMESPACE")]
    pub agent_namespace: Option<String>,

    /// The agent's ServiceAccount: a token of any other is refused.
    #[arg(
        long,
        env = "RUBBER_STAMP_AGENT_SERVICE_ACCOUNT",
        default_value = "rubber-stamp-agent"
    )]
    pub agent_service_account: String,

    /// The agent's DaemonSet: a token's Pod must be controlled by it.
    #[arg(
        long,
        env = "RUBBER_STAMP_AGENT_DAEMONSET",
        default_value = "rubber-stamp-agent"
    )]
    pub agent_daemonset: String,

    /// Most TokenReviews in flight at once (a token seen before is answered from a cache
    /// until it expires).
    #[arg(
        long,
        env = "RUBBER_STAMP_TOKEN_REVIEW_CONCURRENCY",
        default_value_t = 16
    )]
    pub token_review_concurrency: usize,

    /// Longest a stream waits for its token's review (queueing included); past it the
    /// stream is refused with UNAVAILABLE and the agent retries.
    #[arg(long, env = "RUBBER_STAMP_TOKEN_REVIEW_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub token_review_timeout: Duration,

    /// Most tokens whose review outcome is cached.
    #[arg(
        long,
        env = "RUBBER_STAMP_TOKEN_CACHE_ENTRIES",
        default_value_t = 65_536
    )]
    pub token_cache_entries: usize,

    /// How long a refused token's outcome is remembered (an accepted one until it expires;
    /// a token the API server did not authenticate is not remembered).
    #[arg(long, env = "RUBBER_STAMP_TOKEN_REFUSAL_TTL", default_value = "30s", value_parser = parse_duration)]
    pub token_refusal_ttl: Duration,

    /// Longest a token may still be valid for when presented; one whose expiry is further
    /// away is refused without a review (it bounds how long an accepted token is cached and
    /// its stream lives).
    #[arg(long, env = "RUBBER_STAMP_TOKEN_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub token_max_lifetime: Duration,

    /// TokenReviews (cache misses) one source address may cause in a burst (IPv6: one /64);
    /// anyone who reaches the port can present tokens. Raise it where many agents share
    /// one address (NAT) and re-attach together.
    #[arg(
        long,
        env = "RUBBER_STAMP_TOKEN_REVIEW_SOURCE_BURST",
        default_value_t = 32
    )]
    pub token_review_source_burst: u32,

    /// After the burst, one more TokenReview per source address per this interval.
    #[arg(long, env = "RUBBER_STAMP_TOKEN_REVIEW_SOURCE_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub token_review_source_interval: Duration,

    /// This replica's name, sent to agents in every Ack (set it from the pod name).
    #[arg(long, env = "POD_NAME", default_value = "rubber-stamp-approver")]
    pub replica_name: String,

    /// Most authenticated connections on the attestation port (TLS handshakes in progress
    /// count separately, --max-handshakes); past it a connection is closed once its
    /// handshake completes.
    #[arg(long, env = "RUBBER_STAMP_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most TLS handshakes in progress on the attestation port. A new connection past it
    /// closes the oldest handshake of the source address with the most in progress, so a
    /// flood of connections that never finish their handshake cannot lock agents out.
    #[arg(long, env = "RUBBER_STAMP_MAX_HANDSHAKES", default_value_t = 1024)]
    pub max_handshakes: usize,

    /// Most TLS handshakes in progress from one source address; a new connection from it
    /// closes that address's oldest handshake. Raise it when many agents share one address
    /// (NAT).
    #[arg(
        long,
        env = "RUBBER_STAMP_MAX_HANDSHAKES_PER_SOURCE",
        default_value_t = 64
    )]
    pub max_handshakes_per_source: usize,

    /// Most open connections of one node (its agent needs one; a certificate rotation
    /// briefly two). A verified certificate that names no node, and a connection without a
    /// certificate (token mode: the node is known only once a stream's token is reviewed),
    /// count per source address: raise it where many agents share one address (NAT).
    #[arg(
        long,
        env = "RUBBER_STAMP_MAX_CONNECTIONS_PER_NODE",
        default_value_t = 4
    )]
    pub max_connections_per_node: usize,

    /// Most concurrent HTTP/2 streams per connection (an agent uses one).
    #[arg(
        long,
        env = "RUBBER_STAMP_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 4
    )]
    pub max_streams_per_connection: u32,

    /// Longest a new connection to the attestation port may take to send its TLS
    /// ClientHello.
    #[arg(long, env = "RUBBER_STAMP_CLIENT_HELLO_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub client_hello_timeout: Duration,

    /// Longest a TLS handshake may take.
    #[arg(long, env = "RUBBER_STAMP_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Longest a connection without a client certificate (token mode) may stay open before
    /// a stream on it is admitted with a token the API server vouches for; then it is closed.
    /// Longer than --token-review-timeout, so a review that waits its turn still fits.
    #[arg(long, env = "RUBBER_STAMP_UNVERIFIED_CONNECTION_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub unverified_connection_timeout: Duration,

    /// Most connections open on the health port. A new connection past it closes the
    /// oldest of the source address with the most (one that has not sent a request first).
    #[arg(
        long,
        env = "RUBBER_STAMP_HEALTH_MAX_CONNECTIONS",
        default_value_t = 64
    )]
    pub health_max_connections: usize,

    /// Most connections open on the health port from one source address; a new one closes
    /// that address's oldest.
    #[arg(
        long,
        env = "RUBBER_STAMP_HEALTH_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 8
    )]
    pub health_max_connections_per_source: usize,

    /// Longest a new connection to the health port may stay silent before it is closed.
    #[arg(long, env = "RUBBER_STAMP_HEALTH_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub health_request_timeout: Duration,

    /// Most connections open on the admin port. A new connection past it closes the
    /// oldest of the source address with the most (one that has not sent a request first).
    #[arg(long, env = "RUBBER_STAMP_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,

    /// Most connections open on the admin port from one source address; a new one closes
    /// that address's oldest.
    #[arg(
        long,
        env = "RUBBER_STAMP_ADMIN_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 16
    )]
    pub admin_max_connections_per_source: usize,

    /// Longest a new connection to the admin port may stay silent (or, with
    /// --admin-secure, take to finish its TLS handshake) before it is closed.
    #[arg(long, env = "RUBBER_STAMP_ADMIN_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub admin_request_timeout: Duration,

    /// Serve the admin port over HTTPS (the attestation port's serving certificate) and
    /// answer only callers with a bearer token the API server authenticates (TokenReview)
    /// and authorizes for the path (SubjectAccessReview, non-resource URL, verb get):
    /// `/metrics` for scrapers, `/attestations` and `/streams` for who may read every
    /// node's addresses. `false`: plain HTTP to anyone who can connect.
    #[arg(long, env = "RUBBER_STAMP_ADMIN_SECURE", num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set,
          visible_alias = "metrics-secure")]
    pub admin_secure: bool,

    /// How long an admin caller's allowed token and path are reused without asking the API
    /// server again (refusals: 10s).
    #[arg(long, env = "RUBBER_STAMP_ADMIN_AUTH_CACHE_TTL", default_value = "1m", value_parser = parse_duration)]
    pub admin_auth_cache_ttl: Duration,

    /// Most TokenReview + SubjectAccessReview pairs for admin callers in flight at once.
    #[arg(
        long,
        env = "RUBBER_STAMP_ADMIN_REVIEW_CONCURRENCY",
        default_value_t = 8
    )]
    pub admin_review_concurrency: usize,

    /// Longest an admin request waits for its reviews; past it, 503.
    #[arg(long, env = "RUBBER_STAMP_ADMIN_REVIEW_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub admin_review_timeout: Duration,

    /// Open files kept for everything but the listeners' connections (the API client,
    /// certificate files, the runtime). The connection limits of the health, admin and
    /// attestation ports, in that order, must fit in the open-file limit less this; one
    /// that does not is lowered, with a warning, at start.
    #[arg(long, env = "RUBBER_STAMP_RESERVED_DESCRIPTORS", default_value_t = 256)]
    pub reserved_descriptors: usize,

    /// Interval of HTTP/2 keepalive pings to agents.
    #[arg(long, env = "RUBBER_STAMP_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "RUBBER_STAMP_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// Largest message accepted or sent, in bytes (the wire contract's limit is 65536).
    #[arg(long, env = "RUBBER_STAMP_MAX_MESSAGE_BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1024..=65536))]
    pub max_message_bytes: u32,

    /// Reports one stream may send in a burst before the rate limit applies.
    #[arg(long, env = "RUBBER_STAMP_REPORT_BURST", default_value_t = 10)]
    pub report_burst: u32,

    /// After the burst, one report per this interval per stream; a faster stream is
    /// closed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "RUBBER_STAMP_REPORT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub report_interval: Duration,

    /// HTTP/2 initial flow-control window per stream, in bytes.
    #[arg(long, env = "RUBBER_STAMP_STREAM_WINDOW_BYTES", default_value_t = 64 * 1024)]
    pub stream_window_bytes: u32,

    /// HTTP/2 initial flow-control window per connection, in bytes.
    #[arg(long, env = "RUBBER_STAMP_CONNECTION_WINDOW_BYTES", default_value_t = 128 * 1024)]
    pub connection_window_bytes: u32,

    /// Attestation changes buffered for slow subscribers (the controller) before they
    /// must resynchronise.
    #[arg(long, env = "RUBBER_STAMP_CHANGE_BUFFER", default_value_t = 1024)]
    pub change_buffer: usize,

    /// Most challenges outstanding per node.
    #[arg(long, env = "RUBBER_STAMP_MAX_PENDING_CHALLENGES", default_value_t = 4)]
    pub max_pending_challenges: usize,

    /// The agents' proof port: the proof of address ownership (check 15) sends its nonce
    /// to this TCP port of each IP SAN. Must match the agents' --proof-listen.
    #[arg(long, env = "RUBBER_STAMP_PROOF_PORT", default_value_t = rubber_stamp_proto::proof::DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub proof_port: u16,

    /// How long one ownership probe may take, connecting included, before it counts as
    /// unanswered. Also the first wait before probing an unproven address again (doubled
    /// each time, up to 60s).
    #[arg(long, env = "RUBBER_STAMP_PROOF_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub proof_timeout: Duration,

    /// Most ownership probes in flight at once (each holds one outbound socket, counted in
    /// the open-file budget).
    #[arg(long, env = "RUBBER_STAMP_MAX_PROBES_IN_FLIGHT", default_value_t = 64)]
    pub max_probes_in_flight: usize,

    /// Most ownership probes in flight at once for one node's CSRs.
    #[arg(long, env = "RUBBER_STAMP_MAX_PROBES_PER_NODE", default_value_t = 4)]
    pub max_probes_per_node: usize,

    /// On SIGTERM, how long to wait for streams and servers to finish before exiting.
    #[arg(long, env = "RUBBER_STAMP_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(long, env = "RUBBER_STAMP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter: a default level and `target=level` directives, comma-separated (e.g.
    /// `info,rubber_stamp_approver=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// The controller's flags (policy, deny mode, dry run, leader election, flood valve).
    #[command(flatten)]
    pub controller: ControllerArgs,

    /// The approver's own CA and serving certificate (when no --tls-cert/--tls-key).
    #[command(flatten)]
    pub pki: PkiArgs,
}

/// Why the flags do not make a configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A setting that must be positive is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// The keepalive timeout is not shorter than the interval.
    #[error("--keepalive-timeout must be shorter than --keepalive-interval")]
    KeepaliveTimeout,
    /// The PKI flags are inconsistent.
    #[error(transparent)]
    Pki(#[from] PkiConfigError),
    /// The controller's flags (or the policy file) are unusable.
    #[error(transparent)]
    Controller(#[from] ControllerConfigError),
    /// Kubelet certificates are accepted but there is no CA to verify them with.
    #[error("--agent-identity includes kubelet-cert: --client-ca is required")]
    NoClientCa,
    /// No credential is accepted.
    #[error("--agent-identity names no credential")]
    NoAgentIdentity,
    /// The token lifetime bound is beyond what any projected token lives.
    #[error("--token-max-lifetime must be at most 48h (kube-apiserver's longest token)")]
    TokenLifetime,
}

/// Longest `--token-max-lifetime`: kube-apiserver's default
/// `--service-account-max-token-expiration`.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(48 * 3600);

/// Longest a refusal is remembered, whatever `--token-refusal-ttl` says.
const MAX_REFUSAL_TTL: Duration = Duration::from_secs(3600);

/// A credential agents may attest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentIdentityMode {
    /// The kubelet's client certificate (`CN=system:node:<name>`, `O=system:nodes`).
    KubeletCert,
    /// A projected ServiceAccount token bound to a Pod of the agent DaemonSet.
    Token,
}

impl RunArgs {
    /// The checked configuration of the servers (see [`into_parts`](Self::into_parts)).
    pub fn into_config(self) -> Result<RunConfig, ConfigError> {
        Ok(self.into_parts()?.0)
    }

    /// The checked configurations of the servers and of the controller (`None` with
    /// `--attestation-only`). The policy's `attestationMaxAge` is the attestation store's
    /// max age: one value for freshness, the agents' Acks and pruning.
    pub fn into_parts(self) -> Result<(RunConfig, Option<ControllerConfig>), ConfigError> {
        let positive = |d: Duration, flag| {
            if d.is_zero() {
                Err(ConfigError::Zero(flag))
            } else {
                Ok(d)
            }
        };
        let policy = self.controller.policy()?;
        let max_age = max_age_of(&policy);
        positive(self.handshake_timeout, "handshake-timeout")?;
        positive(self.client_hello_timeout, "client-hello-timeout")?;
        positive(self.health_request_timeout, "health-request-timeout")?;
        positive(self.admin_request_timeout, "admin-request-timeout")?;
        positive(self.admin_auth_cache_ttl, "admin-auth-cache-ttl")?;
        positive(self.admin_review_timeout, "admin-review-timeout")?;
        positive(self.keepalive_interval, "keepalive-interval")?;
        positive(self.report_interval, "report-interval")?;
        if self.keepalive_timeout >= self.keepalive_interval {
            return Err(ConfigError::KeepaliveTimeout);
        }
        for (value, flag) in [
            (self.max_connections, "max-connections"),
            (self.max_handshakes, "max-handshakes"),
            (self.max_handshakes_per_source, "max-handshakes-per-source"),
            (self.health_max_connections, "health-max-connections"),
            (
                self.health_max_connections_per_source,
                "health-max-connections-per-source",
            ),
            (self.admin_max_connections, "admin-max-connections"),
            (self.admin_review_concurrency, "admin-review-concurrency"),
            (
                self.admin_max_connections_per_source,
                "admin-max-connections-per-source",
            ),
            (self.max_connections_per_node, "max-connections-per-node"),
            (
                self.max_streams_per_connection as usize,
                "max-streams-per-connection",
            ),
            (self.report_burst as usize, "report-burst"),
            (self.change_buffer, "change-buffer"),
            (self.max_pending_challenges, "max-pending-challenges"),
            (self.max_probes_in_flight, "max-probes-in-flight"),
            (self.max_probes_per_node, "max-probes-per-node"),
            (self.token_review_concurrency, "token-review-concurrency"),
            (self.token_cache_entries, "token-cache-entries"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(flag));
            }
        }
        positive(self.token_review_timeout, "token-review-timeout")?;
        positive(self.proof_timeout, "proof-timeout")?;
        positive(
            self.unverified_connection_timeout,
            "unverified-connection-timeout",
        )?;
        positive(self.token_max_lifetime, "token-max-lifetime")?;
        positive(
            self.token_review_source_interval,
            "token-review-source-interval",
        )?;
        if self.token_max_lifetime > MAX_TOKEN_LIFETIME {
            return Err(ConfigError::TokenLifetime);
        }
        if self.token_review_source_burst == 0 {
            return Err(ConfigError::Zero("token-review-source-burst"));
        }
        // The approver's own namespace (POD_NAMESPACE) is the default of every other
        // namespace; without it, the client's (resolved when the client exists).
        let own_namespace = self.controller.namespace.clone();
        let kubelet_cert = self
            .agent_identity
            .contains(&AgentIdentityMode::KubeletCert);
        let token = self
            .agent_identity
            .contains(&AgentIdentityMode::Token)
            .then(|| TokenConfig {
                audience: self.agent_token_audience.clone(),
                namespace: self
                    .agent_namespace
                    .clone()
                    .or_else(|| own_namespace.clone())
                    .unwrap_or_default(),
                service_account: self.agent_service_account.clone(),
                daemonset: self.agent_daemonset.clone(),
                max_concurrent_reviews: self.token_review_concurrency,
                review_timeout: self.token_review_timeout,
                cache_entries: self.token_cache_entries,
                refusal_ttl: self.token_refusal_ttl.min(MAX_REFUSAL_TTL),
                max_lifetime: self.token_max_lifetime,
                source_burst: self.token_review_source_burst,
                source_interval: self.token_review_source_interval,
            });
        if !kubelet_cert && token.is_none() {
            return Err(ConfigError::NoAgentIdentity);
        }
        if kubelet_cert && self.client_ca.is_none() {
            return Err(ConfigError::NoClientCa);
        }
        let controller = self
            .controller
            .into_config(policy, self.replica_name.clone())?;
        let reload_interval = self.pki.tls_refresh_interval;
        let pki = self.pki.into_config(own_namespace.as_deref())?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files {
                files: TlsFiles {
                    cert,
                    key,
                    client_ca: self.client_ca,
                },
                reload_interval,
            },
            // clap's `requires` makes a lone --tls-cert or --tls-key a usage error.
            _ => TlsSource::Secret {
                client_ca: self.client_ca,
                pki,
            },
        };
        let run = RunConfig {
            listen: ListenAddrs {
                grpc: self.grpc_listen,
                health: self.health_listen,
                admin: self.admin_listen,
            },
            listeners: ListenerLimits {
                health: PlaintextLimits {
                    max_connections: self.health_max_connections,
                    max_connections_per_source: self.health_max_connections_per_source,
                    request_timeout: self.health_request_timeout,
                },
                admin: PlaintextLimits {
                    max_connections: self.admin_max_connections,
                    max_connections_per_source: self.admin_max_connections_per_source,
                    request_timeout: self.admin_request_timeout,
                },
                reserved_descriptors: self.reserved_descriptors,
            },
            admin: if self.admin_secure {
                AdminSecurity::Kubernetes(AdminAuthConfig {
                    allowed_ttl: self.admin_auth_cache_ttl,
                    max_concurrent_reviews: self.admin_review_concurrency,
                    review_timeout: self.admin_review_timeout,
                })
            } else {
                AdminSecurity::Open
            },
            tls,
            store: StoreConfig {
                max_age,
                change_capacity: self.change_buffer,
                max_pending_challenges: self.max_pending_challenges,
                proof: ProofConfig {
                    port: self.proof_port,
                    timeout: self.proof_timeout,
                    max_in_flight: self.max_probes_in_flight,
                    max_per_node: self.max_probes_per_node,
                    retry_min: self.proof_timeout,
                    ..ProofConfig::default()
                },
            },
            grpc: GrpcConfig {
                connections: ConnectionLimits {
                    max_connections: self.max_connections,
                    max_handshakes: self.max_handshakes,
                    client_hello_timeout: self.client_hello_timeout,
                    handshake_timeout: self.handshake_timeout,
                    max_handshakes_per_source: self.max_handshakes_per_source,
                    max_connections_per_peer: self.max_connections_per_node,
                    unverified_timeout: self.unverified_connection_timeout,
                },
                streams: StreamLimits {
                    max_message_bytes: self.max_message_bytes as usize,
                    report_burst: self.report_burst,
                    report_interval: self.report_interval,
                },
                max_streams_per_connection: self.max_streams_per_connection,
                keepalive_interval: self.keepalive_interval,
                keepalive_timeout: self.keepalive_timeout,
                stream_window_bytes: self.stream_window_bytes,
                connection_window_bytes: self.connection_window_bytes,
                replica: self.replica_name,
                kubelet_cert,
                token,
            },
            prune_interval: prune_interval(max_age),
            drain_timeout: self.drain_timeout,
        };
        Ok((run, controller))
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(extra: &[&str]) -> Result<RunConfig, String> {
        parse_parts(extra).map(|(run, _)| run)
    }

    fn parse_parts(extra: &[&str]) -> Result<(RunConfig, Option<ControllerConfig>), String> {
        let base = [
            "run",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--client-ca",
            "ca",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())?;
        cli.run.into_parts().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_safe_ones() {
        let config = parse(&[]).expect("config");
        assert_eq!(config.store.max_age, Duration::from_secs(300));
        assert_eq!(config.grpc.streams.max_message_bytes, 65536);
        assert_eq!(
            config.grpc.connections.handshake_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(config.grpc.keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.prune_interval, Duration::from_secs(30));
    }

    #[test]
    fn the_policy_is_the_one_source_of_the_max_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, "attestationMaxAge: 90s\ndeny: always\n").expect("write");
        let policy = policy.to_str().expect("utf-8 path");
        let (config, controller) =
            parse_parts(&["--policy", policy, "--deny", "never"]).expect("config");
        assert_eq!(config.store.max_age, Duration::from_secs(90));
        assert_eq!(config.prune_interval, Duration::from_secs(9));
        let controller = controller.expect("controller on by default");
        assert_eq!(controller.attestation_max_age(), Duration::from_secs(90));
        assert_eq!(
            controller.policy.deny,
            rubber_stamp_core::DenyMode::Never,
            "--deny overrides"
        );
        assert!(
            parse(&["--max-age", "90s"]).is_err_and(|e| e.contains("--max-age")),
            "the duplicate flag is gone"
        );
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, "attestationMaxAge: 0s\n").expect("write");
        assert!(
            parse(&["--policy", broken.to_str().expect("utf-8")])
                .is_err_and(|e| e.contains("attestationMaxAge"))
        );
    }

    #[test]
    fn agent_identity_flags_are_checked() {
        let run = parse(&[]).expect("config");
        assert!(
            run.grpc.kubelet_cert && run.grpc.token.is_none(),
            "certificates by default"
        );
        let run = parse(&[
            "--agent-identity=token,kubelet-cert",
            "--token-refusal-ttl=100h",
        ])
        .expect("config");
        let token = run.grpc.token.expect("tokens");
        assert!(run.grpc.kubelet_cert);
        assert_eq!(token.refusal_ttl, MAX_REFUSAL_TTL, "capped");
        assert_eq!(token.max_lifetime, Duration::from_secs(24 * 3600));
        assert!(
            parse(&["--agent-identity=token", "--token-max-lifetime=49h"])
                .is_err_and(|e| e.contains("--token-max-lifetime"))
        );
        assert!(
            parse(&["--agent-identity=token", "--token-review-source-burst=0"])
                .is_err_and(|e| e.contains("--token-review-source-burst"))
        );
        // Without kubelet certificates no client CA is needed; with them it is.
        let cli = Cli::try_parse_from([
            "run",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--agent-identity=token",
        ])
        .expect("token mode parses without --client-ca");
        let run = cli.run;
        let certificates = RunArgs {
            agent_identity: vec![AgentIdentityMode::KubeletCert],
            ..run.clone()
        };
        assert_eq!(
            certificates.into_config().map(|_| ()),
            Err(ConfigError::NoClientCa)
        );
        assert!(run.into_config().is_ok_and(|c| c.tls.client_ca().is_none()));
    }

    #[test]
    fn booleans_and_kubernetes_flag_names_as_operators_write_them() {
        // Every boolean: bare, =true, =false.
        for (args, dry_run, elected) in [
            (&[][..], false, true),
            (&["--dry-run"][..], true, true),
            (&["--dry-run=true"][..], true, true),
            (&["--dry-run=false"][..], false, true),
            (&["--leader-elect"][..], false, true),
            (&["--leader-elect=true"][..], false, true),
            (&["--leader-elect=false"][..], false, false),
        ] {
            let (_, controller) = parse_parts(args).expect("config");
            let controller = controller.expect("controller");
            assert_eq!(controller.dry_run, dry_run, "{args:?}");
            assert_eq!(controller.lease.is_some(), elected, "{args:?}");
        }
        let (_, none) = parse_parts(&["--attestation-only=true"]).expect("config");
        assert!(none.is_none());
        let (_, some) = parse_parts(&["--attestation-only=false"]).expect("config");
        assert!(some.is_some());
        assert!(parse(&["--dry-run=maybe"]).is_err());
        // controller-runtime's and client-go's names, beside this project's own.
        let (run, controller) = parse_parts(&[
            "--leader-elect-lease-duration=4s",
            "--leader-elect-resource-name=my-lease",
            "--leader-elect-resource-namespace=ops",
            "--lease-grace=1s",
            "--metrics-bind-address=127.0.0.1:9443",
            "--health-probe-bind-address=127.0.0.1:8082",
        ])
        .expect("config");
        let controller = controller.expect("controller");
        let lease = controller.lease.expect("elected");
        assert_eq!(lease.duration, Duration::from_secs(4));
        assert_eq!(lease.name, "my-lease");
        assert_eq!(controller.lease_namespace.as_deref(), Some("ops"));
        assert_eq!(controller.namespace, None);
        assert_eq!(run.listen.admin.to_string(), "127.0.0.1:9443");
        assert_eq!(run.listen.health.to_string(), "127.0.0.1:8082");
    }

    #[test]
    fn controller_flags_are_checked() {
        let (_, controller) = parse_parts(&[
            "--dry-run",
            "--lease-duration",
            "3s",
            "--lease-grace",
            "1s",
            "--max-pending-csrs",
            "7",
            "--replica-name",
            "approver-0",
        ])
        .expect("config");
        let controller = controller.expect("controller");
        assert!(controller.dry_run);
        assert_eq!(controller.replica, "approver-0");
        assert_eq!(controller.max_pending_csrs, Some(7));
        let lease = controller.lease.expect("elected by default");
        assert_eq!(lease.duration, Duration::from_secs(3));
        assert_eq!(lease.name, "rubber-stamp-approver");
        let (_, solo) = parse_parts(&["--leader-elect=false"]).expect("config");
        assert!(solo.expect("controller").lease.is_none());
        let (_, none) = parse_parts(&["--attestation-only"]).expect("config");
        assert!(none.is_none());
        assert!(
            parse(&["--lease-duration", "5s", "--lease-grace", "4s"])
                .is_err_and(|e| e.contains("--lease-grace"))
        );
        assert!(parse(&["--max-pending-csrs", "0"]).is_err());
        assert!(parse(&["--concurrency", "0"]).is_err());
    }

    /// `--namespace` (the only flag `POD_NAMESPACE` feeds) is the default of the Lease's,
    /// the TLS Secret's and the agents' namespaces; each can be set on its own; without any,
    /// they stay empty for the client's default namespace.
    #[test]
    fn one_namespace_is_the_default_of_the_others() {
        let secret = |args: &[&str]| {
            let cli = Cli::try_parse_from(
                [
                    "run",
                    "--client-ca",
                    "ca",
                    "--agent-identity",
                    "token,kubelet-cert",
                ]
                .into_iter()
                .chain(args.iter().copied()),
            )
            .expect("parse");
            let (run, controller) = cli.run.into_parts().expect("config");
            let TlsSource::Secret { pki, .. } = run.tls else {
                panic!("no --tls-cert: the Secret")
            };
            // The certificate names the Service in the approver's own namespace, wherever
            // the Secret is.
            assert_eq!(
                pki.service_namespace,
                controller
                    .as_ref()
                    .and_then(|c| c.namespace.clone())
                    .unwrap_or_default()
            );
            let token = run.grpc.token.expect("token identity");
            let controller = controller.expect("controller");
            (
                pki.namespace,
                token.namespace,
                controller.namespace,
                controller.lease_namespace,
            )
        };
        assert_eq!(
            secret(&["--namespace", "ops"]),
            ("ops".into(), "ops".into(), Some("ops".into()), None)
        );
        assert_eq!(
            secret(&[
                "--namespace=ops",
                "--tls-namespace=pki",
                "--agent-namespace=agents",
                "--lease-namespace=leases"
            ]),
            (
                "pki".into(),
                "agents".into(),
                Some("ops".into()),
                Some("leases".into())
            )
        );
        let (pki, agents, own, _) = secret(&[]);
        assert!(pki.is_empty() && agents.is_empty() && own.is_none());
        let cli = Cli::try_parse_from(["run", "--client-ca", "ca"]).expect("parse");
        let mut run = cli.run.into_config().expect("config");
        run.resolve_namespaces("from-client");
        assert!(matches!(&run.tls, TlsSource::Secret { pki, .. }
            if pki.namespace == "from-client" && pki.service_namespace == "from-client"));
        assert!(
            Cli::try_parse_from(["run", "--client-ca", "ca", "--namespace", "Not_A_Label"])
                .expect("parse")
                .run
                .into_config()
                .is_err_and(|e| e.to_string().contains("--tls-namespace"))
        );
        // POD_NAMESPACE reaches --namespace only.
        let command = crate::flags::Cli::command();
        let run = command.find_subcommand("run").expect("run");
        let fed: Vec<_> = run
            .get_arguments()
            .filter(|a| a.get_env().is_some_and(|e| e == "POD_NAMESPACE"))
            .map(|a| a.get_id().to_string())
            .collect();
        assert_eq!(fed, ["namespace"]);
    }

    #[test]
    fn certificate_files_or_the_secret() {
        let files = parse(&[]).expect("config");
        assert!(
            matches!(&files.tls, TlsSource::Files { files, reload_interval }
                if files.cert == std::path::Path::new("c") && *reload_interval == Duration::from_secs(60))
        );
        let cli = Cli::try_parse_from(["run", "--client-ca", "ca", "--tls-namespace", "ops"])
            .expect("parse");
        let config = cli.run.into_config().expect("config");
        assert!(matches!(&config.tls, TlsSource::Secret { pki, .. }
                if pki.namespace == "ops" && pki.secret == "rubber-stamp-approver-tls"));
        assert!(Cli::try_parse_from(["run", "--client-ca", "ca", "--tls-cert", "c"]).is_err());
    }

    #[test]
    fn connection_limits_are_fitted_into_the_open_file_limit() {
        let mut config = parse(&[]).expect("config");
        assert!(config.fit_descriptors(Some(1_048_576)).is_empty());
        assert_eq!(config.grpc.connections.max_connections, 20_000);
        let clamps = config.fit_descriptors(Some(1024));
        let flags: Vec<_> = clamps.iter().map(|c| c.flag).collect();
        assert_eq!(flags, ["--max-handshakes", "--max-connections"]);
        assert_eq!(config.listeners.health.max_connections, 64, "health first");
        assert_eq!(
            config.store.proof.max_in_flight, 64,
            "probes before streams"
        );
        assert_eq!(config.grpc.connections.max_handshakes, 144);
        assert_eq!(config.grpc.connections.max_connections, 432);
        let total = config.listeners.reserved_descriptors
            + config.listeners.health.max_connections
            + config.listeners.admin.max_connections
            + config.store.proof.max_in_flight
            + config.grpc.connections.max_handshakes
            + config.grpc.connections.max_connections;
        assert_eq!(total, 1024);
        assert!(
            parse(&["--health-max-connections", "0"])
                .is_err_and(|e| e.contains("--health-max-connections"))
        );
        assert!(parse(&["--client-hello-timeout", "0s"]).is_err());
    }

    #[test]
    fn durations_and_limits_are_checked() {
        let config = parse(&["--handshake-timeout", "1m"]).expect("config");
        assert_eq!(
            config.grpc.connections.handshake_timeout,
            Duration::from_secs(60)
        );
        assert!(parse(&["--handshake-timeout=-5m"]).is_err_and(|e| e.contains("negative")));
        assert!(parse(&["--max-message-bytes", "100000"]).is_err());
        assert!(
            parse(&["--keepalive-timeout", "40s"])
                .is_err_and(|e| e.contains("shorter than --keepalive-interval"))
        );
    }
}
