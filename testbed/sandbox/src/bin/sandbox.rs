//! sandbox: the whole system in one command (`cargo run --release --bin
//! sandbox`): the testbed cluster, two approver replicas, honest and rogue
//! nodes, the CSR table and the CIS 1.2.5 proof. See docs/sandbox.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rubber_stamp_hosts::Topology;
use rubber_stamp_sandbox::prometheus::{self, Prometheus};
use rubber_stamp_sandbox::scenario::{self, ScenarioOptions};
use rubber_stamp_sandbox::tokens::AgentIdentity;
use rubber_stamp_sandbox::{Echo, Mode, ModeChoice, Narrator, Sandbox, SandboxOptions, Timings};
use rubber_stamp_testkit::command::duration_flag;
use tokio_util::sync::CancellationToken;

/// Exit code when the scenario ran but its result is wrong.
const EXIT_FAILED: u8 = 1;
/// Exit code when the sandbox could not run.
const EXIT_ERROR: u8 = 3;

/// Runs kubelet-rubber-stamp end to end on this machine: the testbed
/// Kubernetes API server with its kubelet-serving signer and the project's
/// RBAC, two leader-elected `rubber-stamp-approver` replicas, honest nodes and
/// four rogue cases, each node running the real `rubber-stamp-agent` and
/// `kubelet-sim`. Prints what happens and why, a `kubectl get csr`-style
/// table, and proves the point of CIS 1.2.5 by verifying each honest
/// kubelet's certificate against the cluster CA and the node's IP.
///
/// As root (with `ip` and `unshare`) every node is a network namespace; as
/// anyone else the sandbox runs on loopback and says so. `--topology routed` wires
/// each node to its own routed link, where the approver proves each IP SAN's
/// ownership (and a claimer of an address nobody owns joins the rogues).
///
/// Exit codes: 0 every honest CSR was approved and issued and no rogue CSR
/// was; 1 otherwise; 2 usage; 3 the sandbox could not run; 130/143 interrupted.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Honest nodes (worker-1 … worker-N).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,

    /// Leave out the rogue nodes (thief, squatter, claimer, no-agent, dns-thief,
    /// cloud-rogue, foreign-token).
    #[arg(long)]
    no_rogues: bool,

    /// Run on loopback even where network namespaces would work.
    #[arg(long)]
    loopback: bool,

    /// How the nodes are wired: `bridge` (one shared L2 segment; the approver's proof
    /// of address ownership is off, since whoever answers ARP receives an address) or
    /// `routed` (each node on its own link, the root namespace routing each address to
    /// its owner only, as a cloud VPC does; the proof is required, and a `claimer` of
    /// an address nobody owns joins the rogues). `routed` needs network namespaces.
    #[arg(long, value_enum, default_value = "bridge")]
    topology: TopologyArg,

    /// Leave everything running after the result and print how to explore it
    /// (kubeconfig for `kubectl`); Ctrl-C stops and cleans up.
    #[arg(long)]
    keep: bool,

    /// Approver replicas.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=9))]
    replicas: u8,

    /// How long the CSRs may take to reach their expected state, in seconds.
    #[arg(long, default_value_t = 40)]
    timeout: u64,

    /// Attestation max age (approver `--max-age` and the policy's
    /// `attestationMaxAge`), e.g. `60s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    max_age: Duration,

    /// Agent heartbeat interval.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat: Duration,

    /// Approver leader-election Lease duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    lease_duration: Duration,

    /// The approvers' log filter (their logs are in the log directory).
    #[arg(long, default_value = "info")]
    approver_log_filter: String,

    /// The agents' credential: `token` (a projected ServiceAccount token bound to a Pod of
    /// the agent DaemonSet on each node; adds the foreign-token rogue) or `kubelet-cert`
    /// (the kubelet's client certificate).
    #[arg(long, value_enum, default_value = "token")]
    identity: IdentityArg,

    /// Also run a real Prometheus server — PATH, or else `prometheus` on PATH or
    /// /usr/bin/prometheus (Debian's package) — that scrapes every approver's /metrics and
    /// evaluates the Helm chart's alerting rules with every `for:` set to 0s. The run then
    /// also needs `RubberStampAddressConflict` to fire, from the squatter, within --timeout.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    prometheus: Option<Option<PathBuf>>,
}

/// `--topology`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TopologyArg {
    /// A shared bridge.
    Bridge,
    /// A routed link per node.
    Routed,
}

impl From<TopologyArg> for Topology {
    fn from(arg: TopologyArg) -> Self {
        match arg {
            TopologyArg::Bridge => Self::Bridge,
            TopologyArg::Routed => Self::Routed,
        }
    }
}

/// `--identity`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum IdentityArg {
    /// Projected ServiceAccount tokens.
    Token,
    /// Kubelet client certificates.
    KubeletCert,
}

impl From<IdentityArg> for AgentIdentity {
    fn from(arg: IdentityArg) -> Self {
        match arg {
            IdentityArg::Token => Self::Token,
            IdentityArg::KubeletCert => Self::KubeletCert,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = rubber_stamp_approver::flags::parse_duration(s)?;
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else {
        Ok(d)
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if args.loopback && args.topology == TopologyArg::Routed {
        use clap::CommandFactory as _;
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--topology routed needs network namespaces; it cannot run with --loopback",
            )
            .exit();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandbox: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(run(args)))
}

async fn run(args: Args) -> u8 {
    let interrupted = CancellationToken::new();
    let signal = match watch_signals(interrupted.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandbox: cannot watch SIGINT/SIGTERM: {e}");
            return EXIT_ERROR;
        }
    };
    let narrator = Arc::new(Narrator::new(Echo::Stdout));
    let keep = args.keep;
    // On Ctrl-C the scenario future is dropped, and with it every process,
    // host, the cluster and the state directory.
    let result = tokio::select! {
        result = scenario(&args, Arc::clone(&narrator)) => Some(result),
        () = interrupted.cancelled() => None,
    };
    let (sandbox, prometheus, outcome) = match result {
        None => {
            eprintln!("sandbox: interrupted; everything it started is stopped and removed");
            return signal.code();
        }
        Some(Err(e)) => {
            eprintln!("sandbox: {e}");
            return EXIT_ERROR;
        }
        Some(Ok(done)) => done,
    };
    let code = if outcome.success() { 0 } else { EXIT_FAILED };
    narrator.raw(format!(
        "(finished in {:.1} s; exit code {code})",
        narrator.elapsed().as_secs_f64()
    ));
    if keep {
        explain_keep(
            &sandbox,
            prometheus.as_ref(),
            &narrator,
            outcome.stopped_agent.as_ref().map(|s| s.node.as_str()),
        );
        interrupted.cancelled().await;
        drop(prometheus);
        drop(sandbox);
        eprintln!("sandbox: stopped and cleaned up");
    }
    code
}

async fn scenario(
    args: &Args,
    narrator: Arc<Narrator>,
) -> Result<(Sandbox, Option<Prometheus>, scenario::Outcome), rubber_stamp_sandbox::SandboxError> {
    // Before anything starts: a missing Prometheus is a usage problem, not a result.
    let prometheus_binary = match &args.prometheus {
        None => None,
        Some(path) => {
            let binary = prometheus::find_binary(path.as_deref()).ok_or_else(|| {
                rubber_stamp_sandbox::SandboxError::Setup(format!(
                    "--prometheus: no `prometheus` on PATH nor at {}; install Debian's package (apt-get install --no-install-recommends prometheus) or give the binary's path",
                    prometheus::DEBIAN_BINARY
                ))
            })?;
            if !binary.is_file() {
                return Err(rubber_stamp_sandbox::SandboxError::Setup(format!(
                    "--prometheus {}: no such file",
                    binary.display()
                )));
            }
            Some(binary)
        }
    };
    let options = SandboxOptions {
        mode: if args.loopback {
            ModeChoice::Loopback
        } else {
            ModeChoice::Auto
        },
        replicas: usize::from(args.replicas),
        timings: Timings {
            agent_heartbeat: args.heartbeat,
            max_age: args.max_age,
            lease_duration: args.lease_duration,
            ..Timings::default()
        },
        approver_log_filter: args.approver_log_filter.clone(),
        identity: args.identity.into(),
        topology: args.topology.into(),
    };
    let mut sandbox = Sandbox::start(options, narrator).await?;
    let mut prometheus = match &prometheus_binary {
        Some(binary) => Some(prometheus::watch(&sandbox, binary).await?),
        None => None,
    };
    let mut outcome = scenario::run(
        &mut sandbox,
        &ScenarioOptions {
            honest: usize::from(args.nodes),
            rogues: !args.no_rogues,
            timeout: Duration::from_secs(args.timeout),
            identity: args.identity.into(),
        },
    )
    .await?;
    if let Some(server) = prometheus.as_mut() {
        check_alerts(
            &sandbox,
            server,
            Duration::from_secs(args.timeout),
            &mut outcome,
        )
        .await;
    }
    Ok((sandbox, prometheus, outcome))
}

/// Waits for Prometheus to fire `RubberStampAddressConflict` (the squatter's and the cloud
/// rogue's conflicts) and says what every alert shows; a failure fails the run.
async fn check_alerts(
    sandbox: &Sandbox,
    server: &mut Prometheus,
    within: Duration,
    outcome: &mut scenario::Outcome,
) {
    let narrator = sandbox.narrator().clone();
    narrator.raw("");
    narrator.raw(format!(
        "Prometheus: the alerts of {} against the approvers' metrics (every `for:` set to 0s: an alert fires at once, whatever duration its text names):",
        prometheus::RULES_PATH
    ));
    let topology = outcome.topology.unwrap_or_default();
    let expected = outcome
        .cast
        .iter()
        .any(|(_, role)| role.expected(topology).1 == "AddressConflict");
    if !expected {
        narrator.raw(format!(
            "  no rogue claims another node's address (--no-rogues): not waiting for {}",
            prometheus::ADDRESS_CONFLICT
        ));
        return;
    }
    match prometheus::check(sandbox, server, within).await {
        Ok(_) => narrator.raw(format!(
            "MONITORING: PASS — Prometheus fires {} from the approvers' own metrics.",
            prometheus::ADDRESS_CONFLICT
        )),
        Err(e) => {
            narrator.raw(format!("MONITORING: FAIL — {e}"));
            outcome.problems.push(format!("Prometheus: {e}"));
        }
    }
}

fn explain_keep(
    sandbox: &Sandbox,
    prometheus: Option<&Prometheus>,
    narrator: &Narrator,
    stopped_agent: Option<&str>,
) {
    let kubectl = if std::path::Path::new("/usr/bin/kubectl").exists() {
        "/usr/bin/kubectl"
    } else {
        "kubectl"
    };
    narrator.raw("");
    narrator.raw("Everything keeps running (--keep). Explore it:");
    narrator.raw(format!(
        "  export KUBECONFIG={}",
        sandbox.control().admin_kubeconfig.display()
    ));
    narrator.raw(format!("  {kubectl} get csr"));
    narrator.raw(format!(
        "  {kubectl} get events -n default         # the approver's Events (why each CSR is where it is)"
    ));
    narrator.raw(format!(
        "  {kubectl} describe csr NAME             # one CSR, with its Events"
    ));
    narrator.raw(format!(
        "  {kubectl} get nodes -o wide; {kubectl} get lease -n rubber-stamp"
    ));
    if sandbox.identity() == AgentIdentity::Token {
        narrator.raw(format!(
            "  {kubectl} get pods -n rubber-stamp -o wide   # the agent Pods the tokens are bound to"
        ));
    }
    // The admin ports are HTTPS for callers the API server authorizes: the sandbox's
    // observer (rubber-stamp:metrics-reader and rubber-stamp:attestation-reader).
    let token = sandbox
        .state_dir()
        .join(rubber_stamp_sandbox::system::OBSERVER_TOKEN);
    let ca = &sandbox.serving().ca_path;
    let service = rubber_stamp_sandbox::pki::SERVICE_NAME;
    for a in sandbox.approvers() {
        narrator.raw(format!(
            "  curl -s --cacert {} --connect-to ::{} -H \"Authorization: Bearer $(cat {})\" https://{service}/attestations   # {}'s attestation snapshot (also /streams, /metrics)",
            ca.display(),
            a.admin(),
            token.display(),
            a.name()
        ));
    }
    if let Some(a) = sandbox.approvers().first() {
        narrator.raw(format!(
            "  {kubectl} rubber-stamp explain CSR --approver-url https://{} --approver-server-name {service} --approver-ca {} --token \"$(cat {})\" --policy {}   # the kubectl plugin (cargo build --release --bin kubectl-rubber_stamp; target/release on PATH); also `status`",
            a.admin(),
            ca.display(),
            token.display(),
            sandbox.state_dir().join("policy.yaml").display()
        ));
    }
    if let Some(server) = prometheus {
        narrator.raw(format!(
            "  {}/alerts   # Prometheus: the chart's alerts (files in {})",
            server.url(),
            server.dir().display()
        ));
    }
    if let Mode::Namespaces = sandbox.mode() {
        narrator.raw("  ip netns list   # one namespace per node; `ip netns exec <ns> ip addr` shows a node's interfaces");
    }
    if let (Some(Topology::Routed), Some(network)) = (sandbox.topology(), sandbox.network()) {
        narrator.raw(format!(
            "  ip route show root {}; ip -6 route show root {}   # the router: each node's addresses to its own link, the rest unreachable",
            network.ipv4_subnet(),
            network.ipv6_subnet()
        ));
    }
    if let Some(stopped) = stopped_agent {
        narrator.raw(format!(
            "  ({stopped}'s agent stays stopped, as the scenario left it)"
        ));
    }
    narrator.raw(format!(
        "  state (kubeconfigs, certificates, policy): {}",
        sandbox.state_dir().display()
    ));
    narrator.raw(format!("  process logs: {}", sandbox.log_dir().display()));
    narrator.raw(format!(
        "  heartbeat {}, max age {}",
        duration_flag(sandbox.context().timings.agent_heartbeat),
        duration_flag(sandbox.context().timings.max_age)
    ));
    narrator.raw("Press Ctrl-C to stop and clean up everything.");
}

/// Which signal ended the run.
struct Signals {
    code: Arc<std::sync::atomic::AtomicU8>,
}

impl Signals {
    fn code(&self) -> u8 {
        self.code.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Cancels `token` on SIGINT (exit code 130) or SIGTERM (143).
fn watch_signals(token: CancellationToken) -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let code = Arc::new(std::sync::atomic::AtomicU8::new(130));
    let record = Arc::clone(&code);
    tokio::spawn(async move {
        let c = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        record.store(c, std::sync::atomic::Ordering::SeqCst);
        token.cancel();
    });
    Ok(Signals { code })
}
