//! Approver replicas as real `rubber-stamp-approver run` processes in the
//! root namespace: each serves attestation mTLS on its own address, health
//! and admin on loopback, and talks to the cluster as the approver's
//! ServiceAccount. The admin port is as deployed (HTTPS, every request reviewed
//! through the API server); the sandbox reads it with a token of its own.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rubber_stamp_core::AttestationSnapshot;
use rubber_stamp_testkit::command::ApproverCommand;
use serde::Deserialize;

use super::{SandboxError, Site};
use rubber_stamp_hosts::HostProcess;
use rubber_stamp_testkit::http;

/// How long a replica may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often its output is polled while it starts.
const POLL: Duration = Duration::from_millis(20);

/// What every replica is started with.
#[derive(Clone, Debug)]
pub struct ApproverSettings {
    /// The `rubber-stamp-approver` binary.
    pub binary: PathBuf,
    /// Serving certificate of the attestation port.
    pub tls_cert: PathBuf,
    /// Its key.
    pub tls_key: PathBuf,
    /// The cluster CA (kubelet client certificates chain to it).
    pub client_ca: PathBuf,
    /// The approver ServiceAccount's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The policy file (its `attestationMaxAge` is also the attestation store's max age).
    pub policy: PathBuf,
    /// The approver's namespace (its Lease and its own Events).
    pub namespace: String,
    /// Leader-election Lease duration (whole seconds, at least 3 s).
    pub lease_duration: Duration,
    /// Log filter (`--log-filter`).
    pub log_filter: String,
    /// The credential agents attest with (`--agent-identity`).
    pub agent_identity: crate::tokens::AgentIdentity,
    /// How the sandbox reads the admin port (`--admin-secure`): the serving CA, the name
    /// in the serving certificate, and a token allowed `/metrics`, `/attestations` and
    /// `/streams`.
    pub admin_client: http::HttpsClient,
}

/// One running replica.
#[derive(Debug)]
pub struct ApproverReplica {
    name: String,
    grpc: SocketAddr,
    health: SocketAddr,
    admin: SocketAddr,
    admin_client: http::HttpsClient,
    process: HostProcess,
}

/// One live stream in the replica's `/streams`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LiveStream {
    /// The node (from its certificate).
    pub node_name: String,
    /// The agent's source address.
    pub peer_address: IpAddr,
    /// Serial of the agent's client certificate.
    pub certificate_serial: String,
    /// When the stream opened (RFC 3339).
    pub opened_at: String,
}

#[derive(Debug, Deserialize)]
struct StreamList {
    streams: Vec<LiveStream>,
}

/// The JSON log line the approver writes once its listeners are bound.
#[derive(Debug, Deserialize)]
struct Listening {
    message: String,
    grpc: Option<String>,
    health: Option<String>,
    admin: Option<String>,
}

impl ApproverReplica {
    /// Starts replica `name` with its attestation server on `grpc` (port 0
    /// picks one) and waits until it says where it listens.
    pub async fn start(
        site: &Site,
        settings: &ApproverSettings,
        name: &str,
        grpc: SocketAddr,
    ) -> Result<Self, SandboxError> {
        let mut cmd = Command::new(&settings.binary);
        cmd.args(command(settings, name, grpc).args());
        let mut process = site.spawn_root(name, cmd)?;
        let listening = wait_listening(&mut process, name).await?;
        let admin_client = settings.admin_client.clone();
        let addr = |field: Option<String>, what: &str| -> Result<SocketAddr, SandboxError> {
            field
                .as_deref()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    SandboxError::Process(format!(
                        "{name}: its `listening` log line has no {what} address: {:?}",
                        listening.message
                    ))
                })
        };
        Ok(Self {
            name: name.to_owned(),
            grpc: addr(listening.grpc.clone(), "grpc")?,
            health: addr(listening.health.clone(), "health")?,
            admin: addr(listening.admin.clone(), "admin")?,
            admin_client,
            process,
        })
    }

    /// The replica's name (its `--replica-name`, the Lease holder identity).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where agents reach its attestation server.
    pub fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    /// Its `grpc.health.v1` address.
    pub fn health(&self) -> SocketAddr {
        self.health
    }

    /// Its admin (HTTPS) address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// How the sandbox reads its admin port: the CA, the certificate's name, the token.
    pub fn admin_client(&self) -> &http::HttpsClient {
        &self.admin_client
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Its attestation snapshot (`GET /attestations`).
    pub async fn attestations(&self) -> Result<AttestationSnapshot, SandboxError> {
        let body = self.get("/attestations").await?;
        serde_json::from_str(&body).map_err(|e| {
            SandboxError::Process(format!(
                "{}: /attestations is not a snapshot: {e}",
                self.name
            ))
        })
    }

    /// Its live streams (`GET /streams`).
    pub async fn streams(&self) -> Result<Vec<LiveStream>, SandboxError> {
        let body = self.get("/streams").await?;
        serde_json::from_str::<StreamList>(&body)
            .map(|l| l.streams)
            .map_err(|e| {
                SandboxError::Process(format!("{}: /streams is not a stream list: {e}", self.name))
            })
    }

    /// Its Prometheus metrics text.
    pub async fn metrics(&self) -> Result<String, SandboxError> {
        self.get("/metrics").await
    }

    /// `GET path` on the admin port as `client` (status and body, whatever the status).
    pub async fn get_as(
        &self,
        path: &str,
        client: &http::HttpsClient,
    ) -> Result<(u16, String), SandboxError> {
        tokio::time::timeout(
            Duration::from_secs(5),
            http::https_get(self.admin, path, client),
        )
        .await
        .map_err(|_| SandboxError::Timeout(format!("{} GET {path}", self.name)))?
        .map_err(|e| SandboxError::Process(format!("{} GET {path}: {e}", self.name)))
    }

    async fn get(&self, path: &str) -> Result<String, SandboxError> {
        let (status, body) = self.get_as(path, &self.admin_client).await?;
        if status != 200 {
            return Err(SandboxError::Process(format!(
                "{} GET {path}: HTTP {status}: {body}",
                self.name
            )));
        }
        Ok(body)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// SIGKILL: the replica dies without releasing anything.
    pub fn kill(&mut self) -> Result<(), SandboxError> {
        self.process.kill()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Result<(), SandboxError> {
        self.process.stop(grace).await?;
        Ok(())
    }

    /// What it logged (JSON lines on stderr).
    pub fn logs(&self) -> String {
        self.process.stderr().unwrap_or_default()
    }
}

/// Replica `name`'s command line: its controller with the cluster, the policy and leader
/// election.
pub fn command(settings: &ApproverSettings, name: &str, grpc: SocketAddr) -> ApproverCommand {
    ApproverCommand::new(&settings.tls_cert, &settings.tls_key, &settings.client_ca)
        .grpc_listen(grpc)
        .replica_name(name)
        .drain_timeout(Duration::from_secs(2))
        .log_filter(&settings.log_filter)
        .controller(
            &settings.kubeconfig,
            &settings.namespace,
            settings.lease_duration,
        )
        .policy(&settings.policy)
        .flag("agent-identity", settings.agent_identity.approver_flag())
        .flag("agent-namespace", crate::control::NAMESPACE)
        .admin_secure(true)
}

/// Polls the replica's stderr for the `listening` line.
async fn wait_listening(process: &mut HostProcess, name: &str) -> Result<Listening, SandboxError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let logs = process.stderr()?;
        if let Some(found) = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Listening>(l).ok())
            .find(|l| l.message == "listening")
        {
            return Ok(found);
        }
        if let Some(status) = process.try_wait()? {
            return Err(SandboxError::Process(format!(
                "{name} exited ({status}) before listening:\n{}",
                tail(&logs, 20)
            )));
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::Timeout(format!(
                "{name} to listen within {START_TIMEOUT:?}; its log:\n{}",
                tail(&logs, 20)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    use rubber_stamp_testkit::command::{duration_flag, valid_lease_duration};

    #[test]
    fn durations_are_written_as_the_flags_parse_them() {
        assert_eq!(duration_flag(Duration::from_secs(60)), "60s");
        assert_eq!(duration_flag(Duration::from_millis(1500)), "1500ms");
        for d in [Duration::from_secs(3), Duration::from_millis(250)] {
            assert_eq!(
                rubber_stamp_approver::flags::parse_duration(&duration_flag(d)),
                Ok(d)
            );
        }
    }

    #[test]
    fn lease_flags_are_ones_the_approver_accepts() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().expect("tempdir");
        for secs in [3, 4, 10, 15, 60] {
            let settings = ApproverSettings {
                binary: "rubber-stamp-approver".into(),
                tls_cert: "c".into(),
                tls_key: "k".into(),
                client_ca: "ca".into(),
                kubeconfig: dir.path().join("kubeconfig"),
                policy: dir.path().join("policy.yaml"),
                namespace: "rubber-stamp".into(),
                lease_duration: Duration::from_secs(secs),
                log_filter: "info".into(),
                agent_identity: crate::tokens::AgentIdentity::Token,
                admin_client: http::HttpsClient {
                    ca_pem: String::new(),
                    server_name: "rubber-stamp-approver.rubber-stamp.svc".into(),
                    token: None,
                },
            };
            assert!(valid_lease_duration(settings.lease_duration));
            std::fs::write(&settings.policy, "deny: always\n").expect("policy");
            let mut args: Vec<std::ffi::OsString> = vec!["rubber-stamp-approver".into()];
            args.extend(
                command(
                    &settings,
                    "approver-0",
                    "127.0.0.1:0".parse().expect("addr"),
                )
                .args(),
            );
            let cli = rubber_stamp_approver::flags::Cli::try_parse_from(args).expect("parses");
            let rubber_stamp_approver::flags::Command::Run(run) = cli.command else {
                panic!("not run");
            };
            let (_, controller) = run.into_parts().expect("a valid configuration");
            let lease = controller.and_then(|c| c.lease).expect("leader election");
            assert_eq!(lease.duration, Duration::from_secs(secs));
        }
        assert!(!valid_lease_duration(Duration::from_millis(3500)));
        assert!(!valid_lease_duration(Duration::from_secs(2)));
    }

    #[test]
    fn the_listening_line_is_found_in_json_logs() {
        let line = r#"{"timestamp":"2026-11-30T00:00:00Z","level":"INFO","message":"listening","grpc":"198.18.0.1:8443","health":"127.0.0.1:40001","admin":"127.0.0.1:40002","target":"rubber_stamp_approver::runtime"}"#;
        let parsed: Listening = serde_json::from_str(line).expect("parses");
        assert_eq!(parsed.message, "listening");
        assert_eq!(parsed.admin.as_deref(), Some("127.0.0.1:40002"));
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
