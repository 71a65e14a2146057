//! `attest-load`: measures the real binaries. `approver` opens N mTLS attestation streams
//! with N distinct node certificates against a `rubber-stamp-approver` process and prints
//! its memory and CPU; `agent-idle` runs one `rubber-stamp-agent` process against an
//! approver and prints the agent's idle memory and CPU.
//!
//! Both spawn the binaries (built next to this one) so that only their own resident memory
//! is measured, never this harness's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use rubber_stamp_e2e::channel::procfs::Usage;
use rubber_stamp_e2e::channel::raw::{self, RawStream};
use rubber_stamp_e2e::channel::{ChannelPki, SERVER_NAME, http_get};
use rubber_stamp_testkit::command::{AgentCommand, ApproverCommand};
use rubber_stamp_testkit::pki::Leaf;
use rubber_stamp_testkit::spawned::{Spawned, parse_metrics};
use tokio::process::Command;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Measures the approver with many agents and the agent when idle"
)]
struct Args {
    /// Directory holding `rubber-stamp-approver` and `rubber-stamp-agent` (default: the
    /// directory of this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N streams with N node certificates against one approver process.
    Approver {
        /// Number of agents (distinct node certificates, one mTLS stream each).
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Pause before each memory reading, to let the process settle.
        #[arg(long, default_value = "3s", value_parser = rubber_stamp_agent::config::parse_duration)]
        settle: Duration,
        /// How long to measure idle CPU with every stream open.
        #[arg(long, default_value = "10s", value_parser = rubber_stamp_agent::config::parse_duration)]
        idle: Duration,
    },
    /// Run one agent process with its default intervals and measure it while idle.
    AgentIdle {
        /// How long to measure.
        #[arg(long, default_value = "60s", value_parser = rubber_stamp_agent::config::parse_duration)]
        over: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("this binary has no directory"))?
            .to_owned(),
    };
    let pki = ChannelPki::new()?;
    match args.command {
        Mode::Approver {
            agents,
            concurrency,
            settle,
            idle,
        } => approver_load(&bin_dir, &pki, agents, concurrency, settle, idle).await,
        Mode::AgentIdle { over } => agent_idle(&bin_dir, &pki, over).await,
    }
}

async fn approver_load(
    bin_dir: &Path,
    pki: &ChannelPki,
    agents: usize,
    concurrency: usize,
    settle: Duration,
    idle: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let leaves: Vec<(String, Leaf)> = (0..agents)
        .map(|i| {
            let node = format!("load-node-{i:05}");
            pki.node(&node).map(|leaf| (node, leaf))
        })
        .collect::<Result<_, _>>()?;
    println!(
        "issued {agents} node certificates in {:.1?}",
        started.elapsed()
    );

    let mut approver = spawn_approver(bin_dir, pki, agents).await?;
    let (grpc, admin) = (approver.addr("grpc")?, approver.addr("admin")?);
    tokio::time::sleep(settle).await;
    let baseline = approver.usage()?;

    let started = Instant::now();
    let opened: Vec<Result<RawStream, String>> = futures::stream::iter(leaves.iter().enumerate())
        .map(|(i, (node, leaf))| async move {
            let mut stream = raw::attest(pki, grpc, Some(leaf))
                .await
                .map_err(|s| format!("{node}: {s}"))?;
            stream
                .report(load_report(1, i, node))
                .await
                .map_err(|s| format!("{node}: {s}"))?;
            Ok(stream)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let connect_time = started.elapsed();
    let (mut streams, failures): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    let mut streams: Vec<RawStream> = streams.drain(..).filter_map(Result::ok).collect();
    if let Some(Err(first)) = failures.first() {
        bail!(
            "{} of {agents} streams failed; first: {first}",
            failures.len()
        );
    }
    println!(
        "opened {} streams, each acknowledged, in {:.1?}",
        streams.len(),
        connect_time
    );

    let (_, snapshot) = http_get(admin, "/attestations").await?;
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot)?;
    let stored = snapshot["attestations"].as_array().map_or(0, Vec::len);
    let metrics = metrics(admin).await?;
    println!(
        "approver holds {stored} attestations; live_streams={}, connections={}",
        metrics
            .get("rubber_stamp_attestation_live_streams")
            .copied()
            .unwrap_or(-1.0),
        metrics
            .get("rubber_stamp_attestation_connections")
            .copied()
            .unwrap_or(-1.0),
    );
    if stored != agents {
        bail!("expected {agents} attestations, the approver holds {stored}");
    }

    tokio::time::sleep(settle).await;
    let connected = approver.usage()?;

    // A second round: every agent reports again (a heartbeat).
    let before_round = approver.usage()?;
    let started = Instant::now();
    let acks =
        futures::stream::iter(streams.iter_mut().enumerate())
            .map(|(i, stream)| async move {
                stream.report(load_report(2, i, "again")).await.map(|_| ())
            })
            .buffer_unordered(concurrency)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
    let round_time = started.elapsed();
    let after_round = approver.usage()?;

    tokio::time::sleep(idle).await;
    let after_idle = approver.usage()?;

    drop(streams);
    tokio::time::sleep(settle).await;
    let closed = approver.usage()?;
    let stop_time = approver.terminate().await?;

    let n = agents as f64;
    let per_stream = (connected.rss_kib as f64 - baseline.rss_kib as f64) * 1024.0 / n;
    println!();
    println!("approver (pid {}), {agents} agents:", approver.pid());
    print_usage("  idle, no agents          ", baseline);
    print_usage("  all streams open         ", connected);
    print_usage("  after the second round   ", after_round);
    print_usage("  after idling             ", after_idle);
    print_usage("  all streams closed       ", closed);
    println!("  per stream (open - idle)  : {per_stream:.0} bytes RSS");
    println!(
        "  second round             : {acks} reports acknowledged in {:.1?}, {:.1} µs CPU per report",
        round_time,
        (after_round.cpu.saturating_sub(before_round.cpu)).as_secs_f64() * 1e6 / n
    );
    println!(
        "  idle with {agents} streams   : {:.2}% of one core over {:.0?}",
        100.0 * after_idle.cpu.saturating_sub(after_round.cpu).as_secs_f64() / idle.as_secs_f64(),
        idle
    );
    println!(
        "  projection for 10,000    : {:.0} MiB RSS",
        (baseline.rss_kib as f64 * 1024.0 + per_stream * 10_000.0) / (1024.0 * 1024.0)
    );
    println!("  SIGTERM to exit          : {stop_time:.1?}");
    Ok(())
}

async fn agent_idle(bin_dir: &Path, pki: &ChannelPki, over: Duration) -> anyhow::Result<()> {
    let mut approver = spawn_approver(bin_dir, pki, 16).await?;
    let (grpc, admin) = (approver.addr("grpc")?, approver.addr("admin")?);
    let identity = pki.write_combined(&pki.node("idle-node")?, "idle-node")?;
    let mut agent = Spawned::start(
        "agent",
        Command::new(bin_dir.join("rubber-stamp-agent")).args(
            AgentCommand::new(grpc, &pki.serving_ca, &identity)
                .server_name(SERVER_NAME)
                .json_logs()
                .args(),
        ),
        "starting",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(admin, "/attestations").await?;
        if body.contains("\"nodeName\":\"idle-node\"") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent did not attest within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let start-up allocations and the first report settle before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = agent.usage()?;
    tokio::time::sleep(over).await;
    let end = agent.usage()?;
    let stop_time = agent.terminate().await?;
    approver.terminate().await?;
    let cpu = end.cpu.saturating_sub(start.cpu);
    println!(
        "agent (pid {}), default intervals (poll 10 s, heartbeat 60 s), one approver:",
        agent.pid()
    );
    print_usage("  at start of measurement ", start);
    print_usage("  at end of measurement   ", end);
    println!(
        "  CPU over {over:.0?}          : {cpu:.2?} ({:.3}% of one core)",
        100.0 * cpu.as_secs_f64() / over.as_secs_f64()
    );
    println!("  SIGTERM to exit         : {stop_time:.1?}");
    Ok(())
}

fn load_report(sequence: u64, i: usize, tag: &str) -> rubber_stamp_proto::v1::AgentMessage {
    let ip = std::net::IpAddr::from([10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    raw::report(sequence, &format!("host-{i}-{tag}"), &[(ip, 16)])
}

fn print_usage(label: &str, usage: Usage) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{label}: RSS {:>6.1} MiB (anon {:>6.1}, file {:>4.1}, peak {:>6.1}), CPU {:>7.2?}",
        mib(usage.rss_kib),
        mib(usage.anon_kib),
        mib(usage.file_kib),
        mib(usage.peak_rss_kib),
        usage.cpu
    );
}

async fn spawn_approver(
    bin_dir: &Path,
    pki: &ChannelPki,
    connections: usize,
) -> anyhow::Result<Spawned> {
    Spawned::start(
        "approver",
        // No cluster here: the attestation servers only.
        Command::new(bin_dir.join("rubber-stamp-approver")).args(
            ApproverCommand::new(&pki.server_cert, &pki.server_key, &pki.cluster_ca)
                .max_connections(connections + 64)
                .log_filter("warn,rubber_stamp_approver::runtime=info")
                .args(),
        ),
        "listening",
    )
    .await
}

async fn metrics(admin: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let (_, text) = http_get(admin, "/metrics").await?;
    Ok(parse_metrics(&text))
}
