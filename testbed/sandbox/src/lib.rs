//! The whole system on one machine, for the `sandbox` binary and the
//! end-to-end tests: the testbed cluster with the project's RBAC, approver
//! replicas as real `rubber-stamp-approver run` processes, and simulated
//! nodes each running the real `rubber-stamp-agent` and `kubelet-sim`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rubber_stamp_sandbox::SandboxError> {
//! use std::sync::Arc;
//! use rubber_stamp_sandbox::{Echo, Narrator, Sandbox, SandboxOptions};
//! let narrator = Arc::new(Narrator::new(Echo::Stdout));
//! let mut sandbox = Sandbox::start(SandboxOptions::default(), narrator).await?;
//! sandbox.add_node("worker-1").await?;
//! sandbox.start_agent("worker-1")?;
//! sandbox.wait_attested(&["worker-1"], std::time::Duration::from_secs(10)).await?;
//! sandbox.start_kubelet("worker-1", None)?;
//! # Ok(()) }
//! ```
//!
//! Two modes: **namespaces** (root with `ip` and `unshare`): every node is a
//! simulated host (`rubber_stamp_hosts`) on a private bridge, and the agent reads
//! its facts with sysinfo like on a real node; **loopback** (anything else, or
//! forced): every node is a set of addresses on this machine and its facts
//! are supplied by the sandbox through an in-process attester over the real
//! mTLS channel (see [`attester`]). See `docs/sandbox.md`.
//!
//! # Layout
//!
//! - [`system`]: [`Sandbox`], the assembled system, and its options.
//! - [`scenario`]: the honest/rogue scenario and its [`scenario::Outcome`].
//! - [`control`]: the cluster with `deploy/`'s RBAC and the kubeconfigs.
//! - [`approver`]: approver replica processes and their admin endpoints.
//! - [`node`]: a simulated node (host, agent, kubelet-sim, Node object).
//! - [`attester`]: loopback mode's in-process attesting client.
//! - [`pki`]: the approver's serving CA and certificate.
//! - [`csr`]: CSRs decoded for people and the `kubectl get csr`-style table.
//! - [`watch`]: narration of CSR changes and Events as they happen.
//! - [`proof`]: verifying a kubelet's certificate as kube-apiserver would.
//! - [`prometheus`]: a real Prometheus server scraping the approvers and evaluating the
//!   chart's alerting rules (`--prometheus`).
//! - [`tokens`]: the agents' ServiceAccount, Pods and projected tokens (`--identity token`).
//! - [`binaries`]: finding (or building) the real binaries.
//! - [`e2e`]: helpers of the end-to-end tests.
//! - [`narrate`]: the running commentary.

pub mod approver;
pub mod attester;
pub mod control;
pub mod csr;
pub mod e2e;
pub mod narrate;
pub mod node;
pub mod pki;
pub mod prometheus;
pub mod proof;
pub mod scenario;
pub mod system;
pub mod tokens;
pub mod watch;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use narrate::{Echo, Narrator};
pub use rubber_stamp_testkit::binaries;
pub use system::{Mode, ModeChoice, Sandbox, SandboxOptions};

use rubber_stamp_hosts::{HostProcess, HostsError, Network};

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Simulated hosts failed.
    #[error(transparent)]
    Hosts(#[from] HostsError),
    /// The testbed cluster failed.
    #[error(transparent)]
    Cluster(#[from] rubber_stamp_apiserver::ClusterError),
    /// Certificates could not be made.
    #[error(transparent)]
    Pki(#[from] rubber_stamp_testkit::pki::PkiError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The binaries are missing.
    #[error(transparent)]
    Binaries(#[from] binaries::BinariesError),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Setting something up failed.
    #[error("{0}")]
    Setup(String),
    /// A process misbehaved.
    #[error("{0}")]
    Process(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// Intervals of the agents and the approver. The sandbox's defaults show the
/// system at a human pace; the end-to-end tests use [`Timings::fast`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Agent `--poll-interval` (facts re-read; a change is reported at once).
    pub agent_poll: Duration,
    /// Agent `--heartbeat-interval`.
    pub agent_heartbeat: Duration,
    /// Agent `--resolve-interval` (the approver Service name).
    pub agent_resolve: Duration,
    /// Agent `--backoff-max`.
    pub agent_backoff_max: Duration,
    /// Agent `--keepalive-interval` (HTTP/2 pings; the timeout is half of
    /// it): how soon an agent notices a connection that died silently, e.g.
    /// because the node's address it was made from is gone.
    pub agent_keepalive: Duration,
    /// Approver `--max-age` and the policy's `attestationMaxAge`.
    pub max_age: Duration,
    /// Approver leader-election Lease duration.
    pub lease_duration: Duration,
}

impl Default for Timings {
    /// The sandbox's pace.
    fn default() -> Self {
        Self {
            agent_poll: Duration::from_secs(1),
            agent_heartbeat: Duration::from_secs(5),
            agent_resolve: Duration::from_secs(5),
            agent_backoff_max: Duration::from_secs(2),
            agent_keepalive: Duration::from_secs(30),
            max_age: Duration::from_secs(60),
            lease_duration: Duration::from_secs(10),
        }
    }
}

impl Timings {
    /// Short intervals for the end-to-end tests.
    pub fn fast() -> Self {
        Self {
            agent_poll: Duration::from_millis(200),
            agent_heartbeat: Duration::from_secs(1),
            agent_resolve: Duration::from_secs(1),
            agent_backoff_max: Duration::from_millis(500),
            agent_keepalive: Duration::from_secs(2),
            max_age: Duration::from_secs(10),
            lease_duration: Duration::from_secs(3),
        }
    }
}

/// Where the sandbox's processes run.
#[derive(Debug)]
pub enum Site {
    /// Simulated hosts on a private bridge; root-namespace processes through
    /// the network's `spawn_root`.
    Namespaces(Network),
    /// Everything on this machine's loopback; process output in `log_dir`.
    Loopback {
        /// Where process output goes.
        log_dir: PathBuf,
    },
}

impl Site {
    /// Starts a process in the root namespace (approver replicas), in its own
    /// process group with captured output, killed when the handle drops.
    pub fn spawn_root(&self, label: &str, cmd: Command) -> Result<HostProcess, HostsError> {
        match self {
            Self::Namespaces(network) => network.spawn_root(label, &cmd),
            Self::Loopback { log_dir } => HostProcess::spawn(label, cmd, log_dir),
        }
    }

    /// The network, in namespace mode.
    pub fn network(&self) -> Option<&Network> {
        match self {
            Self::Namespaces(n) => Some(n),
            Self::Loopback { .. } => None,
        }
    }

    /// Where process output goes.
    pub fn log_dir(&self) -> PathBuf {
        match self {
            Self::Namespaces(n) => n.run_dir().to_owned(),
            Self::Loopback { log_dir } => log_dir.clone(),
        }
    }
}
