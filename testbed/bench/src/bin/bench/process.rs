//! The measured processes: `rubber-stamp-approver` replicas and `rubber-stamp-agent`s,
//! spawned from the release binaries so that their memory and CPU are theirs alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use rubber_stamp_e2e::channel::http_get;
use rubber_stamp_testkit::command::{AgentCommand, ApproverCommand};
pub(crate) use rubber_stamp_testkit::spawned::Spawned;
use tokio::process::Command;

/// Where the binaries are and how approvers are configured.
#[derive(Debug, Clone)]
pub(crate) struct ApproverSetup {
    /// Directory holding `rubber-stamp-approver` and `rubber-stamp-agent`.
    pub(crate) bin_dir: PathBuf,
    /// Serving certificate and key of the attestation port.
    pub(crate) tls_cert: PathBuf,
    /// Its key.
    pub(crate) tls_key: PathBuf,
    /// The cluster CA (client certificates of kubelets and agents).
    pub(crate) client_ca: PathBuf,
    /// Kubeconfig of the approver's ServiceAccount.
    pub(crate) kubeconfig: PathBuf,
    /// Namespace of the Lease and Events.
    pub(crate) namespace: String,
    /// Lease duration.
    pub(crate) lease_duration: Duration,
    /// Connection limit (above the fleet size).
    pub(crate) max_connections: usize,
    /// The controller's `--concurrency`.
    pub(crate) concurrency: u16,
    /// Log filter.
    pub(crate) log_filter: String,
    /// The agents' credential (`--agent-identity`).
    pub(crate) agent_identity: &'static str,
    /// Namespace of the agent's ServiceAccount and Pods (`--agent-namespace`).
    pub(crate) agent_namespace: String,
    /// The policy file (`--policy`): the defaults with the bench's `ownershipProof`.
    pub(crate) policy: PathBuf,
    /// `--proof-port`.
    pub(crate) proof_port: u16,
    /// `--max-probes-in-flight`, when not the approver's default.
    pub(crate) max_probes_in_flight: Option<usize>,
}

/// One approver replica process.
#[derive(Debug)]
pub(crate) struct Approver {
    /// Its name (Lease identity).
    pub(crate) name: String,
    /// The process.
    pub(crate) process: Spawned,
    /// Attestation port.
    pub(crate) grpc: SocketAddr,
    /// Admin port (`/metrics`).
    pub(crate) admin: SocketAddr,
}

impl Approver {
    /// Starts replica `name`, its attestation port on `grpc` (port 0: any).
    pub(crate) async fn start(
        setup: &ApproverSetup,
        name: &str,
        grpc: SocketAddr,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(setup.bin_dir.join("rubber-stamp-approver"));
        let mut flags = ApproverCommand::new(&setup.tls_cert, &setup.tls_key, &setup.client_ca)
            .grpc_listen(grpc)
            .replica_name(name)
            .controller(&setup.kubeconfig, &setup.namespace, setup.lease_duration)
            .policy(&setup.policy)
            .concurrency(setup.concurrency)
            .max_connections(setup.max_connections)
            .log_filter(&setup.log_filter)
            .flag("agent-identity", setup.agent_identity)
            .flag("agent-namespace", &setup.agent_namespace)
            .flag("proof-port", setup.proof_port.to_string());
        if let Some(n) = setup.max_probes_in_flight {
            flags = flags.flag("max-probes-in-flight", n.to_string());
        }
        command.args(flags.args());
        let process = Spawned::start(name, &mut command, "listening").await?;
        Ok(Self {
            name: name.to_owned(),
            grpc: process.addr("grpc")?,
            admin: process.addr("admin")?,
            process,
        })
    }

    /// Its Prometheus metrics, `name{labels}` → value.
    pub(crate) async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let (status, text) = http_get(self.admin, "/metrics").await?;
        if status != 200 {
            bail!("{}: /metrics answered {status}", self.name);
        }
        Ok(rubber_stamp_testkit::spawned::parse_metrics(&text))
    }

    /// One metric (0 when absent).
    pub(crate) async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(self.metrics().await?.get(name).copied().unwrap_or(0.0))
    }

    /// Waits until `metric` reaches `at_least`, polling every 50 ms.
    pub(crate) async fn wait_metric(
        &self,
        metric: &str,
        at_least: f64,
        within: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(metric).await?;
            if value >= at_least {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {metric} is {value}, not {at_least}, after {within:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Live attestation streams of an approver.
pub(crate) const LIVE_STREAMS: &str = "rubber_stamp_attestation_live_streams";
/// TokenReviews a replica sent (cache misses).
pub(crate) const TOKEN_REVIEWS: &str = "rubber_stamp_attestation_token_reviews_total";
/// 1 while the replica acts on CSRs.
pub(crate) const LEADER: &str = "rubber_stamp_controller_leader";
/// The families of the proof of address ownership (check 15), by their prefix.
pub(crate) const PROOF_METRICS: &str = "rubber_stamp_proof_";

/// One `rubber-stamp-agent` process.
#[derive(Debug)]
pub(crate) struct Agent {
    /// The process.
    pub(crate) process: Spawned,
}

impl Agent {
    /// Starts an agent streaming to `approver` with the certificate file of `identity`, or
    /// its token file when it has one; `extra` flags override its defaults.
    pub(crate) async fn start(
        bin_dir: &Path,
        name: &str,
        approver: SocketAddr,
        approver_ca: &Path,
        identity: (&Path, Option<&Path>),
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let (cert, token) = identity;
        let mut agent = AgentCommand::new(approver, approver_ca, cert);
        if let Some(token) = token {
            agent = agent.token_file(token);
        }
        let mut command = Command::new(bin_dir.join("rubber-stamp-agent"));
        command
            .args(
                agent
                    .server_name(rubber_stamp_e2e::channel::SERVER_NAME)
                    .json_logs()
                    .log_filter("warn,rubber_stamp_agent=info")
                    .args(),
            )
            .args(extra);
        Ok(Self {
            process: Spawned::start(name, &mut command, "attestation stream open").await?,
        })
    }
}
