//! `bench`: the cluster-scale benchmark. N simulated nodes (own certificates, own source
//! addresses) attach to real `rubber-stamp-approver` processes and create their serving
//! CSRs at once through the testbed cluster; then steady state, a leader crash, a replica
//! restart, and the decision floor. Prints a table and a JSON document.
//!
//! ```sh
//! cargo run --release -p rubber-stamp-bench --bin bench -- --nodes 10000
//! ```
//!
//! The approver and agent binaries are built first (release) unless `--bin-dir` names a
//! directory holding them. The testbed cluster and the simulated nodes run in this
//! process; only the approvers' and agents' own memory and CPU are measured. It needs
//! about four file descriptors per node: the soft and hard limits are raised when allowed
//! (root), otherwise run under `ulimit -n` high enough. Exits non-zero unless every CSR of
//! the storm is approved.
//!
//! `--proof required` runs the proof of address ownership (check 15) for every CSR: each
//! simulated agent serves the agent's own proof listener on its node address. Those
//! addresses (10.0.0.0/8) must be local, so unless they already are, the bench re-runs
//! itself in a private network namespace (`unshare --net`, root) where `lo` is up and
//! 10.0.0.0/8 is routed to it (`ip route add local 10.0.0.0/8 dev lo`).

#[path = "bench/fleet.rs"]
mod fleet;
#[path = "bench/observer.rs"]
mod observer;
#[path = "bench/process.rs"]
mod process;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/scenario.rs"]
mod scenario;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use rubber_stamp_agent::config::parse_duration;

/// The benchmark's options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Cluster-scale benchmark: bootstrap storm, steady state, failover, decision floor"
)]
pub(crate) struct Args {
    /// Simulated nodes (each with its own certificate, agent streams and kubelet).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) nodes: usize,
    /// Approver replicas (1 skips the failover scenario).
    #[arg(long, default_value_t = 2)]
    pub(crate) replicas: usize,
    /// Directory holding release `rubber-stamp-approver` and `rubber-stamp-agent`
    /// binaries; default: build them with cargo and use the workspace's target dir.
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// The approvers' Lease duration (the standby takes over within it after a crash).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) lease_duration: Duration,
    /// The controller's `--concurrency`.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: u16,
    /// Handshakes in flight while the fleet attaches and its kubelets connect.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// CSRs created one at a time on the idle system after the storm.
    #[arg(long, default_value_t = 20)]
    pub(crate) single: usize,
    /// How long steady state is measured (agents heartbeat every 60 s, staggered).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) steady: Duration,
    /// How long the real agent processes are measured.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) agent_window: Duration,
    /// Longest wait for the storm's approvals after the last CSR is created.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) storm_timeout: Duration,
    /// Also write the JSON document to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// The approvers' log filter.
    #[arg(long, default_value = "info")]
    pub(crate) approver_log: String,
    /// The agents' credential: `kubelet-cert` (each node's client certificate) or `token`
    /// (a projected ServiceAccount token per node, bound to a Pod of the agent DaemonSet on
    /// it; the approvers review each with the testbed cluster).
    #[arg(long, value_enum, default_value = "kubelet-cert")]
    pub(crate) identity: Identity,
    /// The approvers' `ownershipProof` (check 15): `off` (no probes; the bench's tables
    /// before issue 18) or `required` (every CSR's IP SAN probed, every simulated agent
    /// running the real proof listener on its node address).
    #[arg(long, value_enum, default_value = "off")]
    pub(crate) proof: Proof,
    /// The proof port: the simulated agents' listeners and the approvers' `--proof-port`.
    #[arg(long, default_value_t = rubber_stamp_proto::proof::DEFAULT_PORT)]
    pub(crate) proof_port: u16,
    /// The approvers' `--max-probes-in-flight` (default: theirs, 64).
    #[arg(long)]
    pub(crate) max_probes_in_flight: Option<usize>,
    #[command(subcommand)]
    command: Option<Internal>,
}

/// `--proof`: the approvers' `ownershipProof.default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Proof {
    /// No probes (the shipped default, `preferred`, would add a Warning Event per CSR:
    /// without `required` the simulated agents run no proof listener).
    Off,
    /// Every IP SAN proven by a probe its node's agent receives.
    Required,
}

impl Proof {
    /// The policy's `ownershipProof.default`.
    pub(crate) fn policy_mode(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Required => "required",
        }
    }
}

/// Set in the environment of the bench re-run in its private network namespace.
const NETNS_ENV: &str = "RUBBER_STAMP_BENCH_NETNS";

/// The network the simulated nodes' addresses are in (`SimNode::address`).
const NODE_NETWORK: &str = "10.0.0.0/8";

/// `--identity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Identity {
    /// Kubelet client certificates.
    KubeletCert,
    /// Projected ServiceAccount tokens.
    Token,
}

impl Identity {
    /// The approvers' `--agent-identity`.
    pub(crate) fn approver_flag(self) -> &'static str {
        match self {
            Self::KubeletCert => "kubelet-cert",
            Self::Token => "token",
        }
    }
}

/// Subcommands the benchmark runs itself with.
#[derive(Debug, clap::Subcommand)]
enum Internal {
    /// A worker process of simulated agents (started by the benchmark).
    #[command(hide = true)]
    Fleet(fleet::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Some(Internal::Fleet(worker)) = args.command {
        scenario::raise_nofile(u64::MAX)?;
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(fleet::run_worker(worker));
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: bench was built without optimisations; run it with --release");
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    // Approvers: a stream per node; this process: the cluster's connections.
    let wanted = u64::try_from(args.nodes)? + 4096;
    let limit = scenario::raise_nofile(wanted)?;
    if limit < wanted {
        eprintln!(
            "warning: only {limit} file descriptors allowed, {wanted} wanted: raise `ulimit -n` (hard limit) or run as root"
        );
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => build_binaries()?,
    };
    if args.proof == Proof::Required && !node_addresses_local()? {
        if std::env::var_os(NETNS_ENV).is_some() {
            bail!(
                "the simulated nodes' addresses ({NODE_NETWORK}) are not local, even in the bench's network namespace"
            );
        }
        return rerun_in_network_namespace(&bin_dir, args.bin_dir.is_none());
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(scenario::run(&args, bin_dir));
    // Leave nothing behind: simulated streams and connections belong to this runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let run = outcome?;
    println!("{}", run.report.table(&run.machine));
    let argv: Vec<String> = std::env::args().collect();
    let json = run.report.json(&run.machine, &argv);
    println!("{}", serde_json::to_string(&json)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for missed in run.report.missed() {
        eprintln!(
            "target missed: {} / {}: {:.3} {}",
            missed.section, missed.name, missed.value, missed.unit
        );
    }
    eprintln!("bench finished in {:.1?}", started.elapsed());
    Ok(())
}

/// Whether this network namespace delivers the simulated nodes' addresses locally: the
/// first and last node address of the largest fleet can be bound.
fn node_addresses_local() -> anyhow::Result<bool> {
    for index in [0, 0x00fe_ffff] {
        let address = fleet::SimNode::new(index)?.address;
        match std::net::TcpListener::bind((address, 0)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("binding {address}")),
        }
    }
    Ok(true)
}

/// Runs this bench again, with the same arguments, in a new network namespace whose `lo`
/// is up and takes [`NODE_NETWORK`] (`unshare --net`: needs root); exits with its status.
/// The namespace has no name and ends with its last process.
fn rerun_in_network_namespace(bin_dir: &std::path::Path, add_bin_dir: bool) -> anyhow::Result<()> {
    eprintln!(
        "bench: --proof required: running in a private network namespace with {NODE_NETWORK} local on lo"
    );
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--net", "--", "sh", "-euc"])
        .arg(format!(
            "ip link set lo up && ip route add local {NODE_NETWORK} dev lo && exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, "1");
    if add_bin_dir {
        command.arg("--bin-dir").arg(bin_dir);
    }
    let status = command
        .status()
        .context("running `unshare --net` (util-linux; needs root) for --proof required")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Builds the release approver and agent with the cargo running this benchmark; returns
/// the directory they are in.
fn build_binaries() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut command = std::process::Command::new(cargo);
    // `cargo run` gives this process the bench package's CARGO_PKG_*, CARGO_MANIFEST_* and
    // the like. Build scripts (ring's) rerun when those change in cargo's own environment,
    // so passing them on would rebuild ring and all above it here, and again on the next
    // plain build: several minutes per run.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key.as_ref(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "-p",
            "rubber-stamp-approver",
            "-p",
            "rubber-stamp-agent",
            "--bins",
        ])
        .status()
        .context("running cargo build for the approver and agent binaries")?;
    if !status.success() {
        bail!("building the approver and agent binaries failed: {status}");
    }
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(PathBuf::from)
        .context("the bench binary has no directory")
}
