//! The real agent against the real approver service, both in-process on loopback:
//! attestation, readiness from Acks, reconnects, certificate rotation, challenges and one
//! stream per resolved endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rubber_stamp_agent::health::LIVENESS_SERVICE;
use rubber_stamp_agent::identity::IdentitySource;
use rubber_stamp_agent::resolve::SystemResolver;
use rubber_stamp_approver::runtime::{ListenAddrs, Listeners};
use rubber_stamp_core::AttestationLookup;
use rubber_stamp_e2e::channel::{
    ChannelPki, FixedResolver, TestAgent, TestApprover, agent_config, approver_config,
    health_status, serial_of, wait_for,
};
use tonic_health::pb::health_check_response::ServingStatus;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WITHIN: Duration = Duration::from_secs(10);

fn loopback(port: u16) -> ListenAddrs {
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    ListenAddrs {
        grpc: at(port),
        health: at(0),
        admin: at(0),
    }
}

/// The kubelet's layout: `kubelet-client-<stamp>.pem` files and a
/// `kubelet-client-current.pem` symlink that is swapped atomically on rotation.
fn rotate_symlink(dir: &Path, target: &Path) -> std::io::Result<()> {
    let link = dir.join("kubelet-client-current.pem");
    let tmp = dir.join("kubelet-client-current.pem.tmp");
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(tmp, link)
}

#[tokio::test]
async fn the_agent_attests_its_facts_and_is_ready_only_while_acks_are_fresh() -> TestResult {
    let pki = ChannelPki::new()?;
    let mut config = approver_config(&pki);
    config.store.max_age = Duration::from_secs(2);
    // Bind first so the agent can start before the approver serves.
    let listeners = Listeners::bind(&loopback(0)).await?;
    let grpc = listeners.grpc.local_addr()?;
    let identity = pki.write_combined(&pki.node("worker-1")?, "worker-1")?;
    let agent = TestAgent::start(
        agent_config(&pki, grpc, IdentitySource::Combined(identity)),
        Arc::new(SystemResolver),
    )
    .await?;

    let health = agent.health;
    wait_for("agent health", WITHIN, || async move {
        health_status(health, LIVENESS_SERVICE).await.ok() == Some(ServingStatus::Serving)
    })
    .await?;
    assert_eq!(
        agent.readiness().await?,
        ServingStatus::NotServing,
        "no ack yet"
    );

    let approver = TestApprover::start_on(config, listeners, |_| {}).await?;
    wait_for("agent readiness", WITHIN, || async {
        agent.readiness().await.ok() == Some(ServingStatus::Serving)
    })
    .await?;
    let attestation = approver
        .store()
        .attestation("worker-1")
        .ok_or("not attested")?;
    assert_eq!(
        attestation.peer_address,
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    assert_eq!(attestation.hostname, hostname.trim().to_ascii_lowercase());
    let lo = attestation
        .interfaces
        .iter()
        .find(|i| i.name == "lo")
        .ok_or("no lo")?;
    assert!(lo.addresses.contains(&"127.0.0.1/8".parse()?), "{lo:?}");
    assert!(attestation.boot_id.is_some());
    assert_eq!(
        attestation.agent_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    // Its metrics say the same (what a PodMonitor scrapes): attested, reports acknowledged.
    let text = agent.metrics_text().await?;
    assert!(text.contains("rubber_stamp_agent_attested 1"), "{text}");
    assert!(!text.contains("rubber_stamp_agent_acks_total 0"), "{text}");
    assert!(
        !text.contains("rubber_stamp_agent_reports_total 0"),
        "{text}"
    );

    // Acks stop: readiness lapses once the last one is older than the 2 s max age.
    approver.stop().await?;
    wait_for("agent unreadiness", WITHIN, || async {
        agent.readiness().await.ok() == Some(ServingStatus::NotServing)
    })
    .await?;
    // ...and the metrics follow, with the failed reconnections counted by reason.
    wait_for("the agent's metrics to show the lapse", WITHIN, || async {
        agent.metrics_text().await.is_ok_and(|t| {
            t.contains("rubber_stamp_agent_attested 0")
                && t.contains("rubber_stamp_agent_stream_errors_total{reason=")
        })
    })
    .await?;
    assert_eq!(
        health_status(health, LIVENESS_SERVICE).await?,
        ServingStatus::Serving
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_agent_reconnects_after_the_approver_restarts_and_reports_again() -> TestResult {
    let pki = ChannelPki::new()?;
    let first = TestApprover::start(approver_config(&pki)).await?;
    let grpc = first.addrs.grpc;
    let identity = pki.write_combined(&pki.node("worker-1")?, "worker-1")?;
    let agent = TestAgent::start(
        agent_config(&pki, grpc, IdentitySource::Combined(identity)),
        Arc::new(SystemResolver),
    )
    .await?;
    wait_for("first attestation", WITHIN, || async {
        first.store().attestation("worker-1").is_some()
    })
    .await?;
    first.stop().await?;

    // Same port, new process state: an empty store.
    let listeners = Listeners::bind(&loopback(grpc.port())).await?;
    let second = TestApprover::start_on(approver_config(&pki), listeners, |_| {}).await?;
    assert!(second.store().is_empty());
    wait_for("attestation after restart", WITHIN, || async {
        second.store().attestation("worker-1").is_some()
    })
    .await?;
    assert!(second.store().live_stream("worker-1").is_some());
    agent.stop().await?;
    second.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_rotated_certificate_on_disk_reaches_the_approver() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = TestApprover::start(approver_config(&pki)).await?;
    let old = pki.node("worker-1")?;
    let new = pki.node("worker-1")?;
    let old_file = pki.write_combined(&old, "kubelet-client-2026-01-01")?;
    rotate_symlink(pki.dir(), &old_file)?;
    let current = pki.dir().join("kubelet-client-current.pem");
    let agent = TestAgent::start(
        agent_config(&pki, approver.addrs.grpc, IdentitySource::Combined(current)),
        Arc::new(SystemResolver),
    )
    .await?;
    let (old_serial, new_serial) = (serial_of(&old)?, serial_of(&new)?);
    assert_ne!(old_serial, new_serial);
    wait_for("stream with the first certificate", WITHIN, || async {
        approver
            .store()
            .live_stream("worker-1")
            .map(|s| s.certificate_serial)
            == Some(old_serial.clone())
    })
    .await?;

    let new_file = pki.write_combined(&new, "kubelet-client-2026-02-01")?;
    rotate_symlink(pki.dir(), &new_file)?;
    wait_for("stream with the rotated certificate", WITHIN, || async {
        approver
            .store()
            .live_stream("worker-1")
            .map(|s| s.certificate_serial)
            == Some(new_serial.clone())
    })
    .await?;
    // The old stream was replaced, not left behind, and the agent stayed attested.
    assert_eq!(approver.store().live_streams().len(), 1);
    assert_eq!(agent.readiness().await?, ServingStatus::Serving);
    agent.stop().await?;
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_challenge_is_answered_by_the_agent_with_a_fresh_report() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = TestApprover::start(approver_config(&pki)).await?;
    let identity = pki.write_combined(&pki.node("worker-1")?, "worker-1")?;
    let mut config = agent_config(
        &pki,
        approver.addrs.grpc,
        IdentitySource::Combined(identity),
    );
    // No heartbeats or polls during the test: only the challenge can cause a report.
    config.timings.heartbeat_interval = Duration::from_secs(3600);
    config.timings.poll_interval = Duration::from_secs(3600);
    let agent = TestAgent::start(config, Arc::new(SystemResolver)).await?;
    wait_for("attestation", WITHIN, || async {
        approver.store().attestation("worker-1").is_some()
    })
    .await?;
    let before = approver.store().attestation("worker-1").ok_or("missing")?;

    // Fired and forgotten: the answer is a report like any other, recorded as an answer.
    approver
        .store()
        .challenge("worker-1", Duration::from_secs(5))?;
    wait_for("the answer", WITHIN, || async {
        approver
            .store()
            .attestation("worker-1")
            .is_some_and(|a| a.received_at > before.received_at)
    })
    .await?;
    assert_eq!(
        approver.metrics().controller.challenges("answered"),
        1,
        "the fresh report answered the challenge"
    );
    agent.stop().await?;
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn every_heartbeat_carries_facts_read_for_it() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = TestApprover::start(approver_config(&pki)).await?;
    let identity = pki.write_combined(&pki.node("worker-1")?, "worker-1")?;
    let dir = tempfile::tempdir()?;
    let machine_id = dir.path().join("machine-id");
    std::fs::write(&machine_id, "0123456789abcdef0123456789abcdef\n")?;
    let mut config = agent_config(
        &pki,
        approver.addrs.grpc,
        IdentitySource::Combined(identity),
    );
    config.machine_id_path = machine_id.clone();
    // The poller would not notice the change for an hour: only a heartbeat that
    // reads the facts afresh can report it.
    config.timings.poll_interval = Duration::from_secs(3600);
    config.timings.heartbeat_interval = Duration::from_millis(200);
    let agent = TestAgent::start(config, Arc::new(SystemResolver)).await?;
    let machine_id_of = || {
        approver
            .store()
            .attestation("worker-1")
            .and_then(|a| a.machine_id.clone())
    };
    wait_for("first attestation", WITHIN, || async {
        machine_id_of().as_deref() == Some("0123456789abcdef0123456789abcdef")
    })
    .await?;
    std::fs::write(&machine_id, "fedcba9876543210fedcba9876543210\n")?;
    wait_for("a heartbeat with the new machine-id", WITHIN, || async {
        machine_id_of().as_deref() == Some("fedcba9876543210fedcba9876543210")
    })
    .await?;
    agent.stop().await?;
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_agent_keeps_one_stream_per_resolved_endpoint() -> TestResult {
    let pki = ChannelPki::new()?;
    // Two replicas on the same port, as behind a headless Service: 127.0.0.1 and 127.0.0.2.
    let first = TestApprover::start(approver_config(&pki)).await?;
    let port = first.addrs.grpc.port();
    let mut addrs = loopback(port);
    addrs.grpc = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port));
    let second = TestApprover::start_on(
        approver_config(&pki),
        Listeners::bind(&addrs).await?,
        |_| {},
    )
    .await?;
    let resolver = FixedResolver::new([first.addrs.grpc, second.addrs.grpc]);

    let identity = pki.write_combined(&pki.node("worker-1")?, "worker-1")?;
    let agent = TestAgent::start(
        agent_config(&pki, first.addrs.grpc, IdentitySource::Combined(identity)),
        resolver.clone(),
    )
    .await?;
    wait_for("both replicas attested", WITHIN, || async {
        first.store().live_stream("worker-1").is_some()
            && second.store().live_stream("worker-1").is_some()
    })
    .await?;
    assert!(first.store().attestation("worker-1").is_some());
    assert!(second.store().attestation("worker-1").is_some());

    // The second replica leaves the Service: its stream is closed, the first stays.
    resolver.set([first.addrs.grpc]);
    wait_for("stream to the removed replica closed", WITHIN, || async {
        second.store().live_stream("worker-1").is_none()
    })
    .await?;
    assert!(first.store().live_stream("worker-1").is_some());
    assert_eq!(
        second.metrics().grpc.closed_streams("client_closed")
            + second.metrics().grpc.closed_streams("transport_error"),
        1
    );
    // Its attestation stays until it ages out.
    assert!(second.store().attestation("worker-1").is_some());

    agent.stop().await?;
    first.stop().await?;
    second.stop().await?;
    Ok(())
}
