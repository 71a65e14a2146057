//! Floods of idle connections against the real binaries, each run with the open-file limit
//! of a container under systemd or lower (`prlimit --nofile=N:N` on the child only; nothing
//! changes machine-wide): the agent never sends a report it failed to read, the approver's
//! health keeps answering, an agent still attaches within seconds, accept never runs out of
//! descriptors, and resident memory stays under a stated bound.
//!
//! Bounds, for the debug binaries these tests run (release binaries are smaller): the
//! agent's resident set stays under 64 MiB, the approver's under 128 MiB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use rubber_stamp_agent::identity::IdentitySource;
use rubber_stamp_core::{AttestationLookup, AttestationSnapshot};
use rubber_stamp_e2e::channel::flood::Flood;
use rubber_stamp_e2e::channel::{
    ChannelPki, FixedResolver, SERVER_NAME, TestAgent, TestApprover, agent_config, approver_config,
    health_status, http_get, wait_for,
};
use rubber_stamp_sandbox::binaries::Binaries;
use rubber_stamp_testkit::command::{AgentCommand, ApproverCommand};
use rubber_stamp_testkit::spawned::{Spawned, parse_metrics};
use tokio::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The agent's resident set stays under this (KiB).
const AGENT_RSS_BOUND_KIB: u64 = 64 * 1024;
/// The approver's resident set stays under this (KiB).
const APPROVER_RSS_BOUND_KIB: u64 = 128 * 1024;
/// Deadline of every wait.
const STEP: Duration = Duration::from_secs(20);
/// "Within seconds".
const ATTACH_WITHIN: Duration = Duration::from_secs(5);

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The binaries, built if missing or stale; the test process's own descriptor limit
/// raised for the flood's connections.
fn setup() -> Result<Binaries, Box<dyn std::error::Error>> {
    rubber_stamp_listen::raise_nofile_limit()?;
    Ok(Binaries::find(|line| eprintln!("{line}"))?)
}

/// `binary` under `prlimit --nofile=nofile:nofile`.
fn limited(nofile: u64, binary: &Path) -> Command {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(binary);
    command
}

/// The agent binary streaming to `approver` with fast timings and JSON logs.
fn fast_agent(approver: SocketAddr, pki: &ChannelPki, cert: &Path) -> AgentCommand {
    AgentCommand::new(approver, &pki.serving_ca, cert)
        .server_name(SERVER_NAME)
        .duration("poll-interval", Duration::from_millis(200))
        .duration("heartbeat-interval", Duration::from_millis(500))
        .duration("backoff-min", Duration::from_millis(50))
        .duration("backoff-max", Duration::from_millis(400))
        .json_logs()
        .log_filter("info")
}

/// The approver binary, attestation only, on loopback port 0, ready.
async fn spawn_approver(
    binaries: &Binaries,
    pki: &ChannelPki,
    nofile: u64,
) -> Result<Spawned, Box<dyn std::error::Error>> {
    let mut command = limited(nofile, &binaries.approver);
    command.args(
        ApproverCommand::new(&pki.server_cert, &pki.server_key, &pki.cluster_ca)
            .replica_name("flooded")
            .args(),
    );
    let approver = Spawned::start("approver", &mut command, "listening").await?;
    let health = approver.addr("health")?;
    wait_for("the approver's readiness", STEP, || async {
        probe(health, rubber_stamp_approver::health::READINESS_SERVICE).await
            == Some(ServingStatus::Serving)
    })
    .await?;
    Ok(approver)
}

/// A health check that gives up after five seconds (a server out of descriptors leaves
/// the connection in its backlog, unanswered).
async fn probe(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    tokio::time::timeout(Duration::from_secs(5), health_status(addr, service))
        .await
        .ok()?
        .ok()
}

/// The approver's metrics, `name{labels}` → value.
async fn metrics(
    admin: SocketAddr,
) -> Result<std::collections::HashMap<String, f64>, Box<dyn std::error::Error>> {
    let (status, text) = tokio::time::timeout(Duration::from_secs(5), http_get(admin, "/metrics"))
        .await
        .map_err(|_| "no answer from /metrics within 5 s")??;
    if status != 200 {
        return Err(format!("/metrics answered {status}").into());
    }
    Ok(parse_metrics(&text))
}

fn accept_errors(metrics: &std::collections::HashMap<String, f64>) -> f64 {
    metrics
        .iter()
        .filter(|(name, _)| name.starts_with("rubber_stamp_accept_errors_total"))
        .map(|(_, value)| value)
        .sum()
}

fn assert_rss_under(process: &Spawned, bound_kib: u64, what: &str) -> TestResult {
    let usage = process.usage()?;
    eprintln!(
        "{what}: resident {} KiB (peak {} KiB)",
        usage.rss_kib, usage.peak_rss_kib
    );
    assert!(
        usage.peak_rss_kib < bound_kib,
        "{what}: peak resident set {} KiB, bound {bound_kib} KiB",
        usage.peak_rss_kib
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooded_on_its_health_port_keeps_reporting_its_whole_node() -> TestResult {
    const NODE: &str = "flooded-node";
    let binaries = setup()?;
    let pki = ChannelPki::new()?;
    let approver = TestApprover::start(approver_config(&pki)).await?;
    let cert = pki.write_combined(&pki.node(NODE)?, NODE)?;
    let mut command = limited(256, &binaries.agent);
    command.args(fast_agent(approver.addrs.grpc, &pki, &cert).args());
    let mut agent = Spawned::start("agent", &mut command, "starting").await?;
    let health = agent.addr("health")?;
    let store = approver.store();
    let complete = || {
        store
            .attestation(NODE)
            .is_some_and(|a| a.interfaces.iter().any(|i| i.name == "lo"))
    };
    wait_for("the agent's first report", STEP, || async { complete() }).await?;

    // More idle connections from one address than the agent has descriptors. While the
    // flood fills up and holds, the agent goes on reading its node and reporting it (poll
    // every 200 ms, heartbeat every 500 ms): watch a dozen reports arrive, every one of
    // them complete.
    let flood = Flood::start(health, vec![loopback(2)], 400);
    let grpc = &approver.metrics().grpc;
    let before = grpc.reports_accepted.get();
    let deadline = Instant::now() + STEP;
    while flood.opened() < 400 || grpc.reports_accepted.get() < before + 12 {
        assert!(complete(), "the approver holds an incomplete report");
        assert_eq!(
            grpc.closed_streams("invalid_report"),
            0,
            "the agent sent a report it failed to read"
        );
        assert!(
            Instant::now() < deadline,
            "after {STEP:?}: {} flood connections, {} reports",
            flood.opened(),
            grpc.reports_accepted.get() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        probe(health, rubber_stamp_agent::health::LIVENESS_SERVICE).await,
        Some(ServingStatus::Serving),
        "the agent's health answers during the flood"
    );
    assert_eq!(
        probe(health, rubber_stamp_agent::health::READINESS_SERVICE).await,
        Some(ServingStatus::Serving)
    );
    assert_rss_under(&agent, AGENT_RSS_BOUND_KIB, "agent")?;
    flood.stop().await;
    assert_eq!(grpc.closed_streams("invalid_report"), 0);
    agent.terminate().await?;
    approver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_read_its_node_reports_nothing_until_it_can() -> TestResult {
    const NODE: &str = "starved-node";
    let binaries = setup()?;
    let pki = ChannelPki::new()?;
    let approver = TestApprover::start(approver_config(&pki)).await?;
    let cert = pki.write_combined(&pki.node(NODE)?, NODE)?;
    // Misconfigured on purpose: no reserve and a health port that may take every one of
    // its 64 descriptors, so a flood leaves it none to read the node's interfaces with.
    let mut command = limited(64, &binaries.agent);
    command.args(
        fast_agent(approver.addrs.grpc, &pki, &cert)
            .flag("reserved-descriptors", "0")
            .flag("health-max-connections", "64")
            .flag("health-max-connections-per-source", "64")
            .duration("health-request-timeout", Duration::from_secs(3600))
            .args(),
    );
    let mut agent = Spawned::start("agent", &mut command, "starting").await?;
    let health = agent.addr("health")?;
    let store = approver.store();
    let complete = || {
        store
            .attestation(NODE)
            .is_some_and(|a| a.interfaces.iter().any(|i| i.name == "lo"))
    };
    wait_for("the agent's first report", STEP, || async {
        complete() && store.live_stream(NODE).is_some()
    })
    .await?;

    let grpc = &approver.metrics().grpc;
    let flood = Flood::start(health, vec![loopback(3)], 100);
    // Its reads fail: the heartbeat that finds nothing ends the stream instead of
    // reporting, and every reconnect fails the same way.
    let deadline = Instant::now() + STEP;
    while store.live_stream(NODE).is_some() {
        assert!(complete(), "the approver holds an incomplete report");
        assert_eq!(grpc.closed_streams("invalid_report"), 0);
        assert!(Instant::now() < deadline, "the agent kept its stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let silent_since = grpc.reports_accepted.get();
    flood.stop().await;
    // Descriptors back: it reads its whole node again and reports it.
    wait_for("the agent's reports to resume", STEP, || async {
        grpc.reports_accepted.get() >= silent_since + 3 && store.live_stream(NODE).is_some()
    })
    .await?;
    assert!(complete());
    assert_eq!(grpc.closed_streams("invalid_report"), 0);
    agent.terminate().await?;
    approver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_flooded_on_its_health_port_keeps_answering_its_probes() -> TestResult {
    let binaries = setup()?;
    let pki = ChannelPki::new()?;
    let approver = spawn_approver(&binaries, &pki, 1024).await?;
    let health = approver.addr("health")?;
    let admin = approver.addr("admin")?;

    let flood = Flood::start(health, vec![loopback(2)], 1100);
    wait_for("the flood's connections", STEP, || async {
        flood.opened() >= 1100
    })
    .await?;
    // The probes keep being answered while the flood goes on.
    for _ in 0..5 {
        assert_eq!(
            probe(health, rubber_stamp_approver::health::LIVENESS_SERVICE).await,
            Some(ServingStatus::Serving),
            "liveness answered during the flood"
        );
        assert_eq!(
            probe(health, rubber_stamp_approver::health::READINESS_SERVICE).await,
            Some(ServingStatus::Serving)
        );
    }
    let metrics = metrics(admin).await?;
    assert_eq!(accept_errors(&metrics), 0.0, "never out of descriptors");
    assert!(
        metrics
            .get("rubber_stamp_shed_connections_total{listener=\"health\",reason=\"evicted_per_source\"}")
            .is_some_and(|n| *n >= 1000.0),
        "the flood evicted itself: {metrics:?}"
    );
    assert_rss_under(&approver, APPROVER_RSS_BOUND_KIB, "approver")?;
    flood.stop().await;
    let mut approver = approver;
    approver.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_attaches_within_seconds_while_the_attestation_port_is_flooded() -> TestResult {
    const NODE: &str = "late-agent";
    let binaries = setup()?;
    let pki = ChannelPki::new()?;
    let approver = spawn_approver(&binaries, &pki, 1024).await?;
    let grpc = approver.addr("grpc")?;
    let health = approver.addr("health")?;
    let admin = approver.addr("admin")?;

    // Seventeen addresses with 64 silent connections each: every one under the per-source
    // handshake limit, together more than the approver's descriptors.
    let sources: Vec<IpAddr> = (10..27).map(loopback).collect();
    let flood = Flood::start(grpc, sources, 17 * 64);
    wait_for("the flood's connections", STEP, || async {
        flood.opened() >= 17 * 64
    })
    .await?;

    // The real agent's session code, with the kubelet's certificate, while the flood goes
    // on: it attaches and its report is stored.
    let started = Instant::now();
    let cert = pki.write_combined(&pki.node(NODE)?, NODE)?;
    let agent = TestAgent::start(
        agent_config(&pki, grpc, IdentitySource::Combined(cert)),
        FixedResolver::new([grpc]),
    )
    .await?;
    wait_for("the agent's attestation", ATTACH_WITHIN, || async {
        let Ok(Ok((200, body))) =
            tokio::time::timeout(Duration::from_secs(5), http_get(admin, "/attestations")).await
        else {
            return false;
        };
        serde_json::from_str::<AttestationSnapshot>(&body)
            .is_ok_and(|s| s.attestations.iter().any(|a| a.node_name == NODE))
    })
    .await?;
    eprintln!("attached after {:?} under the flood", started.elapsed());
    assert_eq!(
        probe(health, rubber_stamp_approver::health::LIVENESS_SERVICE).await,
        Some(ServingStatus::Serving)
    );
    let metrics = metrics(admin).await?;
    assert_eq!(accept_errors(&metrics), 0.0, "never out of descriptors");
    assert!(
        metrics
            .get("rubber_stamp_shed_connections_total{listener=\"attestation\",reason=\"evicted_total\"}")
            .is_some_and(|n| *n >= 1.0),
        "{metrics:?}"
    );
    assert_rss_under(&approver, APPROVER_RSS_BOUND_KIB, "approver")?;
    flood.stop().await;
    agent.stop().await?;
    let mut approver = approver;
    approver.terminate().await?;
    Ok(())
}
