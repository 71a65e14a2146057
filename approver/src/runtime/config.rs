//! What `run` needs, checked ([`RunConfig`], built from the flags in `crate::flags::run`):
//! listen addresses and listener limits, where the serving certificate comes from, and the
//! settings of the store and the attestation server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use rubber_stamp_listen::{Budget, Clamp, PlaintextLimits};

use crate::admin::auth::AdminSecurity;
use crate::channel::{GrpcConfig, TlsFiles};
use crate::pki::PkiConfig;
use crate::store::StoreConfig;

/// Where the attestation port's serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// Bring-your-own files, read again every `reload_interval`.
    Files {
        /// Certificate, key and client CA files.
        files: TlsFiles,
        /// How often the certificate and key are read for changes.
        reload_interval: Duration,
    },
    /// The approver's own CA and certificate, kept in a Secret.
    Secret {
        /// CA bundle that client (kubelet) certificates must chain to, when accepted.
        client_ca: Option<PathBuf>,
        /// Where and how long.
        pki: PkiConfig,
    },
}

impl TlsSource {
    /// The client CA bundle, when kubelet client certificates are accepted.
    pub fn client_ca(&self) -> Option<&std::path::Path> {
        match self {
            Self::Files { files, .. } => files.client_ca.as_deref(),
            Self::Secret { client_ca, .. } => client_ca.as_deref(),
        }
    }
}

/// Files, reloaded every minute (the `--tls-refresh-interval` default).
impl From<TlsFiles> for TlsSource {
    fn from(files: TlsFiles) -> Self {
        Self::Files {
            files,
            reload_interval: Duration::from_secs(60),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the servers listen.
#[derive(Clone, Copy, Debug)]
pub struct ListenAddrs {
    /// mTLS attestation gRPC.
    pub grpc: SocketAddr,
    /// Plaintext `grpc.health.v1`.
    pub health: SocketAddr,
    /// Admin HTTP.
    pub admin: SocketAddr,
}

/// Limits of the plaintext listeners and the descriptors kept in reserve.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// The health port.
    pub health: PlaintextLimits,
    /// The admin port.
    pub admin: PlaintextLimits,
    /// Open files kept for everything but the listeners' connections.
    pub reserved_descriptors: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            health: PlaintextLimits {
                max_connections: 64,
                max_connections_per_source: 8,
                request_timeout: Duration::from_secs(5),
            },
            admin: PlaintextLimits {
                max_connections: 64,
                max_connections_per_source: 16,
                request_timeout: Duration::from_secs(5),
            },
            reserved_descriptors: 256,
        }
    }
}

/// Everything `run` needs, checked.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Listen addresses (tests pass their own listeners instead).
    pub listen: ListenAddrs,
    /// Limits of the health and admin ports, and the descriptor reserve.
    pub listeners: ListenerLimits,
    /// Whether the admin port is HTTPS with delegated authorization, or open HTTP.
    pub admin: AdminSecurity,
    /// Where the attestation port's certificate comes from, and the client CA.
    pub tls: TlsSource,
    /// Store settings.
    pub store: StoreConfig,
    /// Attestation server limits.
    pub grpc: GrpcConfig,
    /// How often aged-out attestations are removed.
    pub prune_interval: Duration,
    /// How long shutdown waits for servers and tasks.
    pub drain_timeout: Duration,
}

impl RunConfig {
    /// Fills the namespaces that neither their own flag nor `--namespace` set (the TLS
    /// Secret's, the agents') with the API client's default namespace (in-cluster: the
    /// Pod's; else the kubeconfig context's).
    pub fn resolve_namespaces(&mut self, client_default: &str) {
        if let TlsSource::Secret { pki, .. } = &mut self.tls {
            for namespace in [&mut pki.namespace, &mut pki.service_namespace] {
                if namespace.is_empty() {
                    client_default.clone_into(namespace);
                }
            }
        }
        if let Some(token) = &mut self.grpc.token
            && token.namespace.is_empty()
        {
            client_default.clone_into(&mut token.namespace);
        }
    }

    /// Lowers the connection limits that the open-file limit `nofile` (`None`: unlimited)
    /// cannot hold next to the reserve: the health port first (it must answer while the
    /// attestation port is saturated), then the admin port, then the ownership probes in
    /// flight (one outbound socket each), then handshakes in progress (at
    /// most a quarter of what is left), then authenticated connections. Returns what was
    /// lowered, for the log.
    pub fn fit_descriptors(&mut self, nofile: Option<u64>) -> Vec<Clamp> {
        let listeners = &mut self.listeners;
        let connections = &mut self.grpc.connections;
        let mut budget = Budget::new(
            nofile,
            listeners.reserved_descriptors,
            "--reserved-descriptors",
        );
        listeners.health.max_connections =
            budget.grant("--health-max-connections", listeners.health.max_connections);
        listeners.admin.max_connections =
            budget.grant("--admin-max-connections", listeners.admin.max_connections);
        // Each probe in flight holds one outbound socket.
        self.store.proof.max_in_flight =
            budget.grant("--max-probes-in-flight", self.store.proof.max_in_flight);
        connections.max_handshakes =
            budget.grant_part("--max-handshakes", connections.max_handshakes, 1, 4);
        connections.max_connections =
            budget.grant("--max-connections", connections.max_connections);
        budget.clamps().to_vec()
    }
}

/// A tenth of the max age, between one second and thirty.
pub fn prune_interval(max_age: Duration) -> Duration {
    (max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
}
