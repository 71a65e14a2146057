//! Flags of `rubber-stamp-agent`, each with an environment fallback, turned into a checked
//! [`AgentConfig`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rubber_stamp_listen::{Budget, Clamp, PlaintextLimits};

use crate::cloud::{CloudConfig, CloudMode};
use crate::proof::{ProofLimits, ProofListen};

use crate::identity::IdentitySource;

/// Default identity: the kubelet's rotating client certificate and key, in one file.
pub const KUBELET_CLIENT_PEM: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";

/// Default token file of `--identity token` (the projected volume's mount and path in the
/// shipped DaemonSet).
pub const TOKEN_FILE: &str = "/var/run/secrets/rubber-stamp/token";

/// The credential the agent attests with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdentityMode {
    /// The kubelet's client certificate and key (--cert, --key).
    KubeletCert,
    /// A projected ServiceAccount token bound to this agent's Pod (--token-file).
    Token,
}

/// rubber-stamp-agent: attests this node's hostname and addresses to every
/// kubelet-rubber-stamp approver replica over gRPC and TLS, identified by a projected
/// ServiceAccount token bound to its Pod (`--identity token`) or by the kubelet's own
/// client certificate (`--identity kubelet-cert`).
#[derive(Clone, Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct AgentArgs {
    /// The approver Service as HOST:PORT. A headless Service name resolves to every
    /// replica; the agent keeps one stream to each address.
    #[arg(long, env = "RUBBER_STAMP_APPROVER")]
    pub approver: ApproverAddress,

    /// Name the approver's serving certificate must carry (TLS server name). Defaults to
    /// the HOST of --approver; streams go to each resolved IP but verify this name.
    #[arg(long, env = "RUBBER_STAMP_SERVER_NAME")]
    pub server_name: Option<String>,

    /// Which resolved addresses get a stream. A dual-stack headless Service returns an IPv4
    /// and an IPv6 address for every replica; streams to both would replace each other on
    /// that replica (one stream per node), so `auto` uses IPv4 when any IPv4 address
    /// resolves and IPv6 otherwise.
    #[arg(long, env = "RUBBER_STAMP_IP_FAMILY", value_enum, default_value_t = IpFamily::Auto)]
    pub ip_family: IpFamily,

    /// PEM bundle of the CA(s) that sign the approver's serving certificate.
    #[arg(long, env = "RUBBER_STAMP_APPROVER_CA")]
    pub approver_ca: PathBuf,

    /// The credential to attest with: `kubelet-cert` (the kubelet's client certificate,
    /// mounted from the node) or `token` (a projected ServiceAccount token whose audience the
    /// approver expects; the kubelet rotates it and the agent reconnects with each new one).
    #[arg(
        long,
        env = "RUBBER_STAMP_IDENTITY",
        value_enum,
        default_value = "kubelet-cert"
    )]
    pub identity: IdentityMode,

    /// The projected ServiceAccount token file (`--identity token`).
    #[arg(long, env = "RUBBER_STAMP_TOKEN_FILE", default_value = TOKEN_FILE)]
    pub token_file: PathBuf,

    /// PEM file with the client certificate chain, and also the key unless --key is given
    /// (the kubelet keeps both in one file and rotates it by swapping a symlink).
    #[arg(long, env = "RUBBER_STAMP_CERT", default_value = KUBELET_CLIENT_PEM)]
    pub cert: PathBuf,

    /// PEM private key, when it is not in --cert.
    #[arg(long, env = "RUBBER_STAMP_KEY")]
    pub key: Option<PathBuf>,

    /// Address of the plaintext grpc.health.v1 server (liveness service "", readiness
    /// service "attested"). With hostNetwork this port is on the node. `[::]` listens on
    /// IPv6 and IPv4 (IPv4 only where the kernel has no IPv6).
    #[arg(long, env = "RUBBER_STAMP_HEALTH_LISTEN", default_value = "[::]:10271")]
    pub health_listen: SocketAddr,

    /// Most connections open on the health port. A new connection past it closes the
    /// oldest of the source address with the most (one that has not sent a request first).
    /// Every pod on the node can reach this port.
    #[arg(
        long,
        env = "RUBBER_STAMP_HEALTH_MAX_CONNECTIONS",
        default_value_t = 32
    )]
    pub health_max_connections: usize,

    /// Most connections open on the health port from one source address; a new one closes
    /// that address's oldest.
    #[arg(
        long,
        env = "RUBBER_STAMP_HEALTH_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 4
    )]
    pub health_max_connections_per_source: usize,

    /// Longest a new connection to the health port may stay silent before it is closed.
    #[arg(long, env = "RUBBER_STAMP_HEALTH_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub health_request_timeout: Duration,

    /// Address of the plaintext Prometheus metrics server (`GET /metrics`: attested,
    /// reports, Acks, challenges, failed streams by reason; never an address or a name).
    /// Unset: no metrics port. With hostNetwork this port is on the node; it has the health
    /// port's connection limits.
    #[arg(long, env = "RUBBER_STAMP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Address of the proof listener, or `off`: the approver proves that an IP address a
    /// kubelet asks a certificate for belongs to this node by writing a probe frame to it on
    /// this port, and the agent that receives it says so on its own streams (to replicas
    /// that accept it). `[::]` listens on IPv6 and IPv4 (IPv4 only where the kernel has no
    /// IPv6). With hostNetwork this port is on the node; at most 32 connections (4 per
    /// source) and 20 receipts a second (bursts of 40) whoever sends. `off`: reports say
    /// the node has no listener.
    #[arg(long, env = "RUBBER_STAMP_PROOF_LISTEN", default_value_t = ProofListen::default())]
    pub proof_listen: ProofListen,

    /// Open files kept for everything but the listeners' connections (streams to the
    /// approver replicas, reading the node's facts and certificate). The listeners'
    /// connection limits (health, proof, metrics, in that order) must fit in the open-file
    /// limit less this; a limit that does not is lowered, with a warning, at start.
    #[arg(long, env = "RUBBER_STAMP_RESERVED_DESCRIPTORS", default_value_t = 64)]
    pub reserved_descriptors: usize,

    /// Which cloud's instance metadata to read as a second source of facts (the public
    /// address and DNS names a cloud's kubelet puts in its CSR): `auto` detects it in the
    /// background (probing again every minute while none answers); naming the provider
    /// makes an unreadable service count as incomplete (CSRs wait) rather than absent;
    /// `off` reads none.
    #[arg(
        long,
        env = "RUBBER_STAMP_CLOUD_METADATA",
        value_enum,
        default_value = "auto"
    )]
    pub cloud_metadata: CloudMode,

    /// Address of the instance metadata service (every cloud serves it here).
    #[arg(
        long,
        env = "RUBBER_STAMP_CLOUD_METADATA_ENDPOINT",
        default_value = "169.254.169.254:80"
    )]
    pub cloud_metadata_endpoint: SocketAddr,

    /// Longest time one reading of the metadata service, or one detection probe, may take
    /// (half of it to connect); a known provider's reading that takes longer is reported as
    /// incomplete, which never supports a denial.
    #[arg(long, env = "RUBBER_STAMP_CLOUD_METADATA_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub cloud_metadata_timeout: Duration,

    /// How often the node's facts are read; a change is reported at once.
    #[arg(long, env = "RUBBER_STAMP_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Longest time between two reports on a stream.
    #[arg(long, env = "RUBBER_STAMP_HEARTBEAT_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How often the approver Service name is resolved again.
    #[arg(long, env = "RUBBER_STAMP_RESOLVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub resolve_interval: Duration,

    /// How often the certificate and key files (or the token file) are read to notice a
    /// rotation.
    #[arg(long, env = "RUBBER_STAMP_IDENTITY_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub identity_poll_interval: Duration,

    /// Longest time to establish a connection (TCP and TLS).
    #[arg(long, env = "RUBBER_STAMP_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// First reconnect delay; it doubles (with jitter) up to --backoff-max.
    #[arg(long, env = "RUBBER_STAMP_BACKOFF_MIN", default_value = "500ms", value_parser = parse_duration)]
    pub backoff_min: Duration,

    /// Longest reconnect delay.
    #[arg(long, env = "RUBBER_STAMP_BACKOFF_MAX", default_value = "30s", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Interval of HTTP/2 keepalive pings to the approver.
    #[arg(long, env = "RUBBER_STAMP_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is dropped.
    #[arg(long, env = "RUBBER_STAMP_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// File holding the machine id (mount the host's /etc/machine-id here).
    #[arg(
        long,
        env = "RUBBER_STAMP_MACHINE_ID_PATH",
        default_value = "/etc/machine-id"
    )]
    pub machine_id_path: PathBuf,

    /// File holding the kernel boot id.
    #[arg(
        long,
        env = "RUBBER_STAMP_BOOT_ID_PATH",
        default_value = "/proc/sys/kernel/random/boot_id"
    )]
    pub boot_id_path: PathBuf,

    /// Log format.
    #[arg(long, env = "RUBBER_STAMP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter: a default level and `target=level` directives, comma-separated (e.g.
    /// `info,rubber_stamp_agent=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which address family the agent streams over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IpFamily {
    /// IPv4 when the name has IPv4 addresses, else IPv6.
    Auto,
    /// IPv4 addresses only.
    Ipv4,
    /// IPv6 addresses only.
    Ipv6,
}

impl IpFamily {
    /// The endpoints of `resolved` to keep streams to.
    pub fn select(self, resolved: &BTreeSet<SocketAddr>) -> BTreeSet<SocketAddr> {
        let want_v4 = match self {
            Self::Ipv4 => true,
            Self::Ipv6 => false,
            Self::Auto => resolved.iter().any(SocketAddr::is_ipv4),
        };
        resolved
            .iter()
            .filter(|a| a.is_ipv4() == want_v4)
            .copied()
            .collect()
    }
}

/// The approver's address: a DNS name (or IP literal) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApproverAddress {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why an approver address does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `:PORT`.
    #[error("{0:?} has no :PORT")]
    NoPort(String),
    /// The port is not a number in 1..=65535.
    #[error("{0:?} is not a port number")]
    BadPort(String),
    /// The host part is empty.
    #[error("the host part of {0:?} is empty")]
    NoHost(String),
}

/// Everything the agent needs, checked.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where the approver replicas are.
    pub approver: ApproverAddress,
    /// TLS server name to verify.
    pub server_name: String,
    /// Which resolved addresses get a stream.
    pub ip_family: IpFamily,
    /// CA bundle for the approver's certificate.
    pub approver_ca: PathBuf,
    /// Where the client certificate and key are.
    pub identity: IdentitySource,
    /// Intervals and timeouts.
    pub timings: Timings,
    /// Where the machine id and boot id are read from.
    pub machine_id_path: PathBuf,
    /// Where the boot id is read from.
    pub boot_id_path: PathBuf,
    /// Limits of the health port.
    pub health: PlaintextLimits,
    /// Limits of the metrics port, when one is served (`--metrics-listen`: the health
    /// port's limits).
    pub metrics: Option<PlaintextLimits>,
    /// Open files kept for everything but the health port's connections.
    pub reserved_descriptors: usize,
    /// The cloud's instance metadata.
    pub cloud: CloudConfig,
}

/// Every interval and timeout of the agent.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Facts polling.
    pub poll_interval: Duration,
    /// Longest gap between reports on a stream.
    pub heartbeat_interval: Duration,
    /// Re-resolution of the Service name.
    pub resolve_interval: Duration,
    /// Polling of the identity files.
    pub identity_poll_interval: Duration,
    /// Connection establishment.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// HTTP/2 keepalive interval.
    pub keepalive_interval: Duration,
    /// HTTP/2 keepalive timeout.
    pub keepalive_timeout: Duration,
}

/// Why the flags do not make a configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An interval that must be positive is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// `--backoff-min` is above `--backoff-max`.
    #[error("--backoff-min must not exceed --backoff-max")]
    Backoff,
    /// A connection limit is zero.
    #[error("--{0} must be greater than zero")]
    ZeroLimit(&'static str),
}

// === impl AgentArgs ===

impl AgentArgs {
    /// The checked configuration.
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        for (value, flag) in [
            (self.poll_interval, "poll-interval"),
            (self.heartbeat_interval, "heartbeat-interval"),
            (self.resolve_interval, "resolve-interval"),
            (self.identity_poll_interval, "identity-poll-interval"),
            (self.connect_timeout, "connect-timeout"),
            (self.backoff_min, "backoff-min"),
            (self.keepalive_interval, "keepalive-interval"),
            (self.keepalive_timeout, "keepalive-timeout"),
            (self.health_request_timeout, "health-request-timeout"),
            (self.cloud_metadata_timeout, "cloud-metadata-timeout"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(flag));
            }
        }
        for (value, flag) in [
            (self.health_max_connections, "health-max-connections"),
            (
                self.health_max_connections_per_source,
                "health-max-connections-per-source",
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(flag));
            }
        }
        if self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff);
        }
        let identity = match (self.identity, self.key) {
            (IdentityMode::Token, _) => IdentitySource::Token(self.token_file),
            (IdentityMode::KubeletCert, Some(key)) => IdentitySource::Separate {
                cert: self.cert,
                key,
            },
            (IdentityMode::KubeletCert, None) => IdentitySource::Combined(self.cert),
        };
        Ok(AgentConfig {
            server_name: self
                .server_name
                .unwrap_or_else(|| self.approver.host.clone()),
            approver: self.approver,
            ip_family: self.ip_family,
            approver_ca: self.approver_ca,
            identity,
            timings: Timings {
                poll_interval: self.poll_interval,
                heartbeat_interval: self.heartbeat_interval,
                resolve_interval: self.resolve_interval,
                identity_poll_interval: self.identity_poll_interval,
                connect_timeout: self.connect_timeout,
                backoff_min: self.backoff_min,
                backoff_max: self.backoff_max,
                keepalive_interval: self.keepalive_interval,
                keepalive_timeout: self.keepalive_timeout,
            },
            machine_id_path: self.machine_id_path,
            boot_id_path: self.boot_id_path,
            health: PlaintextLimits {
                max_connections: self.health_max_connections,
                max_connections_per_source: self.health_max_connections_per_source,
                request_timeout: self.health_request_timeout,
            },
            metrics: self.metrics_listen.map(|_| PlaintextLimits {
                max_connections: self.health_max_connections,
                max_connections_per_source: self.health_max_connections_per_source,
                request_timeout: self.health_request_timeout,
            }),
            reserved_descriptors: self.reserved_descriptors,
            cloud: CloudConfig {
                mode: self.cloud_metadata,
                endpoint: self.cloud_metadata_endpoint,
                timeout: self.cloud_metadata_timeout,
            },
        })
    }
}

// === impl AgentConfig ===

impl AgentConfig {
    /// The health port's defaults: 32 connections, 4 per source, 5 s to speak.
    pub const DEFAULT_HEALTH: PlaintextLimits = PlaintextLimits {
        max_connections: 32,
        max_connections_per_source: 4,
        request_timeout: Duration::from_secs(5),
    };

    /// Lowers the listeners' connection limits if the open-file limit `nofile` (`None`:
    /// unlimited) cannot hold them next to the reserve, in order of importance: the health
    /// port, the proof listener's `proof` (when it runs), the metrics port; returns what
    /// was lowered.
    pub fn fit_descriptors(
        &mut self,
        nofile: Option<u64>,
        proof: Option<&mut ProofLimits>,
    ) -> Vec<Clamp> {
        let mut budget = Budget::new(nofile, self.reserved_descriptors, "--reserved-descriptors");
        self.health.max_connections =
            budget.grant("--health-max-connections", self.health.max_connections);
        if let Some(proof) = proof {
            proof.max_connections = budget.grant(
                "the proof listener's connection limit (--proof-listen)",
                proof.max_connections,
            );
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.max_connections = budget.grant(
                "--health-max-connections (the metrics port)",
                metrics.max_connections,
            );
        }
        budget.clamps().to_vec()
    }
}

// === impl ApproverAddress ===

impl FromStr for ApproverAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoPort(s.to_owned()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(AddressError::NoHost(s.to_owned()));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| AddressError::BadPort(s.to_owned()))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ApproverAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses a duration such as `500ms`, `10s`, `5m` or `PT1M`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{s:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentConfig, String> {
        let base = ["rubber-stamp-agent", "--approver-ca", "ca.crt"];
        let args = AgentArgs::try_parse_from(base.iter().chain(args)).map_err(|e| e.to_string())?;
        args.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_use_the_kubelet_certificate_and_the_service_name() {
        let config = parse(&["--approver", "approver.kube-system.svc:8443"]).expect("config");
        assert_eq!(config.server_name, "approver.kube-system.svc");
        assert_eq!(config.approver.port, 8443);
        assert_eq!(
            config.identity,
            IdentitySource::Combined(KUBELET_CLIENT_PEM.into())
        );
        assert_eq!(config.timings.poll_interval, Duration::from_secs(10));
        assert_eq!(config.timings.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(config.health, AgentConfig::DEFAULT_HEALTH);
        assert_eq!(config.reserved_descriptors, 64);
    }

    #[test]
    fn the_proof_listener_listens_on_both_families_unless_told_otherwise() {
        let args = |extra: &[&str]| {
            let base = [
                "rubber-stamp-agent",
                "--approver-ca",
                "ca.crt",
                "--approver",
                "a:1",
            ];
            AgentArgs::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())
        };
        let defaults = args(&[]).expect("args");
        assert_eq!(
            defaults.proof_listen.address(),
            Some(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 10273)))
        );
        assert_eq!(
            args(&["--proof-listen", "off"]).expect("args").proof_listen,
            ProofListen::Off
        );
        assert_eq!(
            args(&["--proof-listen", "10.0.0.5:10273"])
                .expect("args")
                .proof_listen
                .address(),
            Some(SocketAddr::from(([10, 0, 0, 5], 10273)))
        );
        assert!(
            args(&["--proof-listen", "yes"])
                .is_err_and(|e| e.contains("--proof-listen") && e.contains("off"))
        );
    }

    #[test]
    fn the_health_limit_is_fitted_into_the_open_file_limit() {
        let mut config = parse(&["--approver", "a:1"]).expect("config");
        let mut proof = ProofLimits::DEFAULT;
        assert!(
            config
                .fit_descriptors(Some(1024), Some(&mut proof))
                .is_empty()
        );
        assert!(config.fit_descriptors(None, Some(&mut proof)).is_empty());
        assert_eq!(proof, ProofLimits::DEFAULT);
        let mut config =
            parse(&["--approver", "a:1", "--health-max-connections", "5000"]).expect("config");
        let clamps = config.fit_descriptors(Some(1024), None);
        assert_eq!(clamps.len(), 1);
        assert_eq!(clamps[0].flag, "--health-max-connections");
        assert_eq!(
            config.health.max_connections, 960,
            "1024 less a reserve of 64"
        );
        // The proof listener's slots come out of the same budget, after the health port's.
        let mut config =
            parse(&["--approver", "a:1", "--health-max-connections", "950"]).expect("config");
        let mut proof = ProofLimits::DEFAULT;
        let clamps = config.fit_descriptors(Some(1024), Some(&mut proof));
        assert_eq!(config.health.max_connections, 950);
        assert_eq!(proof.max_connections, 10, "960 less the health port's 950");
        assert_eq!(clamps.len(), 1);
        assert!(clamps[0].flag.contains("--proof-listen"), "{}", clamps[0]);
        assert!(
            parse(&[
                "--approver",
                "a:1",
                "--health-max-connections-per-source",
                "0"
            ])
            .is_err_and(|e| e.contains("--health-max-connections-per-source"))
        );
    }

    #[test]
    fn separate_key_and_explicit_server_name() {
        let config = parse(&[
            "--approver",
            "[fd00::1]:443",
            "--server-name",
            "approver.example",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--backoff-min",
            "100ms",
        ])
        .expect("config");
        assert_eq!(config.approver.host, "fd00::1");
        assert_eq!(config.approver.to_string(), "[fd00::1]:443");
        assert_eq!(config.server_name, "approver.example");
        assert_eq!(
            config.identity,
            IdentitySource::Separate {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        assert_eq!(config.timings.backoff_min, Duration::from_millis(100));
    }

    #[test]
    fn token_mode_reads_the_projected_token_file() {
        let config = parse(&["--approver", "a:1", "--identity", "token"]).expect("config");
        assert_eq!(config.identity, IdentitySource::Token(TOKEN_FILE.into()));
        let config = parse(&[
            "--approver",
            "a:1",
            "--identity",
            "token",
            "--token-file",
            "/t/token",
        ])
        .expect("config");
        assert_eq!(config.identity, IdentitySource::Token("/t/token".into()));
        assert!(
            parse(&["--approver", "a:1", "--identity", "password"])
                .is_err_and(|e| e.contains("kubelet-cert") && e.contains("token"))
        );
    }

    #[test]
    fn one_address_family_per_replica() {
        let addrs: BTreeSet<SocketAddr> = ["10.0.0.1:8443", "[fd00::1]:8443", "10.0.0.2:8443"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let v4: Vec<_> = IpFamily::Auto
            .select(&addrs)
            .into_iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(v4, ["10.0.0.1:8443", "10.0.0.2:8443"]);
        let v6: Vec<_> = IpFamily::Ipv6
            .select(&addrs)
            .into_iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(v6, ["[fd00::1]:8443"]);
        let only_v6: BTreeSet<SocketAddr> = ["[fd00::1]:8443".parse().expect("addr")].into();
        assert_eq!(IpFamily::Auto.select(&only_v6), only_v6);
        assert!(IpFamily::Ipv4.select(&only_v6).is_empty());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--approver", "no-port"]).is_err_and(|e| e.contains("no :PORT")));
        assert!(parse(&["--approver", "host:0"]).is_err_and(|e| e.contains("not a port")));
        assert!(parse(&["--approver", ":80"]).is_err_and(|e| e.contains("empty")));
        assert!(
            parse(&["--approver", "a:1", "--poll-interval", "0s"])
                .is_err_and(|e| e.contains("--poll-interval must be greater than zero"))
        );
        assert!(
            parse(&["--approver", "a:1", "--backoff-min", "1m"])
                .is_err_and(|e| e.contains("--backoff-min must not exceed"))
        );
    }
}
