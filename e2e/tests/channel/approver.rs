//! The approver's attestation service against raw clients: identity only from verified
//! certificates, reports checked at the edge, one stream per node, challenges, health and
//! the admin snapshot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rubber_stamp_approver::health::{LIVENESS_SERVICE, READINESS_SERVICE};
use rubber_stamp_approver::runtime::Listeners;
use rubber_stamp_approver::store::ChallengeError;
use rubber_stamp_core::{AttestationLookup, AttestationSnapshot};
use rubber_stamp_e2e::channel::flood::connect_from;
use rubber_stamp_e2e::channel::raw::{self, RawStream};
use rubber_stamp_e2e::channel::{
    ChannelPki, TestApprover, approver_config, health_status, http_get, kubelet_spec, wait_for,
};
use rubber_stamp_proto::v1::{AgentMessage, approver_message};
use rubber_stamp_testkit::pki::LeafSpec;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

async fn start(pki: &ChannelPki) -> Result<TestApprover, Box<dyn std::error::Error>> {
    Ok(TestApprover::start(approver_config(pki)).await?)
}

async fn stream_as(
    pki: &ChannelPki,
    approver: &TestApprover,
    node: &str,
) -> Result<RawStream, Box<dyn std::error::Error>> {
    let leaf = pki.node(node)?;
    Ok(raw::attest(pki, approver.addrs.grpc, Some(&leaf)).await?)
}

#[tokio::test]
async fn a_report_reaches_the_store_under_the_certificates_node_with_the_peer_address() -> TestResult
{
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;

    let ack = stream
        .report(raw::report(1, "Worker-1", &[(ip(10, 0, 0, 11), 24)]))
        .await?;
    assert_eq!(ack.sequence, 1);
    assert_eq!(ack.node_name, "worker-1");
    assert_eq!(ack.max_age_seconds, 300);
    assert_eq!(ack.replica, "approver-test");

    let attestation = approver
        .store()
        .attestation("worker-1")
        .ok_or("not stored")?;
    assert_eq!(attestation.node_name, "worker-1");
    assert_eq!(attestation.hostname, "worker-1", "canonical form");
    assert_eq!(attestation.peer_address, Some(ip(127, 0, 0, 1)));
    let eth0 = attestation
        .interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .ok_or("no eth0")?;
    assert_eq!(eth0.addresses, ["10.0.0.11/24".parse()?]);
    assert_eq!(approver.metrics().grpc.reports_accepted.get(), 1);

    // The admin endpoint serves the same snapshot, in the format `check --attestations` reads.
    let (status, body) = http_get(approver.addrs.admin, "/attestations").await?;
    assert_eq!(status, 200);
    let snapshot: AttestationSnapshot = serde_json::from_str(&body)?;
    assert_eq!(snapshot, approver.store().snapshot());
    assert_eq!(snapshot.attestations.len(), 1);
    let (status, metrics) = http_get(approver.addrs.admin, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("rubber_stamp_attestation_reports_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rubber_stamp_attestation_live_streams 1"),
        "{metrics}"
    );

    drop(stream);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn clients_without_a_verified_node_certificate_are_refused_counted_and_store_nothing()
-> TestResult {
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    let addr = approver.addrs.grpc;
    let stranger = pki.stranger.node_client("worker-1")?;
    let expired = pki.client(&kubelet_spec("worker-1").expired())?;
    let not_a_node = pki.client(&LeafSpec::client("system:admin", &["system:nodes"]))?;
    let plain_name = pki.client(&LeafSpec::client("worker-1", &["system:nodes"]))?;
    let no_group = pki.client(&LeafSpec::client(
        "system:node:worker-1",
        &["system:masters"],
    ))?;

    let cases = [
        (None, "no_client_certificate"),
        (Some(&stranger), "untrusted_certificate"),
        (Some(&expired), "expired_certificate"),
        (Some(&not_a_node), "not_a_node_certificate"),
        (Some(&plain_name), "not_a_node_certificate"),
        (Some(&no_group), "not_in_nodes_group"),
    ];
    for (identity, reason) in cases {
        let refused = async {
            let mut stream = raw::attest(&pki, addr, identity).await?;
            // A TLS 1.3 client learns of a refused certificate only when it uses the
            // connection, so try to report.
            stream
                .report(raw::report(1, "worker-1", &[(ip(10, 0, 0, 11), 24)]))
                .await
        }
        .await;
        let status = refused.expect_err(reason);
        let grpc = &approver.metrics().grpc;
        // The server counts a refused handshake right after it sends the alert, so the
        // client may see the refusal first.
        wait_for(reason, Duration::from_secs(5), || async {
            grpc.refused_connections(reason) + grpc.refused_streams(reason) >= 1
        })
        .await?;
        if reason.starts_with("not_") {
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{reason}: {status:?}"
            );
            assert!(grpc.refused_streams(reason) >= 1, "{reason}");
        } else {
            assert_ne!(status.code(), Code::Ok, "{reason}: {status:?}");
            assert_eq!(grpc.refused_connections(reason), 1, "{reason}");
        }
    }
    assert!(approver.store().is_empty(), "nothing stored");
    assert!(approver.store().live_streams().is_empty());
    assert_eq!(approver.metrics().grpc.reports_accepted.get(), 0);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn one_node_cannot_hold_more_than_its_share_of_connections() -> TestResult {
    let pki = ChannelPki::new()?;
    let mut config = approver_config(&pki);
    config.grpc.connections.max_connections_per_peer = 2;
    let approver = TestApprover::start(config).await?;
    let addr = approver.addrs.grpc;
    let report = |n| raw::report(n, "worker-1", &[(ip(10, 0, 0, 11), 24)]);
    let mut first = stream_as(&pki, &approver, "worker-1").await?;
    first.report(report(1)).await?;
    let second = raw::connect(&pki, addr, Some(&pki.node("worker-1")?)).await?;
    let mut second = raw::open(second).await?;
    second.report(report(2)).await?;

    // A third connection of worker-1 is closed once its handshake names the node.
    let third = raw::attest(&pki, addr, Some(&pki.node("worker-1")?)).await;
    let refused = match third {
        Err(status) => status,
        Ok(mut stream) => stream
            .report(report(3))
            .await
            .expect_err("third connection"),
    };
    assert_ne!(refused.code(), Code::Ok, "{refused:?}");
    let grpc = &approver.metrics().grpc;
    wait_for("peer_connection_limit", Duration::from_secs(5), || async {
        grpc.refused_connections("peer_connection_limit") >= 1
    })
    .await?;
    // Other nodes are not affected.
    let mut other = stream_as(&pki, &approver, "worker-2").await?;
    other
        .report(raw::report(1, "worker-2", &[(ip(10, 0, 0, 12), 24)]))
        .await?;

    // A closed connection gives its slot back.
    drop(second);
    wait_for(
        "a slot for worker-1 again",
        Duration::from_secs(10),
        || async {
            match stream_as(&pki, &approver, "worker-1").await {
                Ok(mut stream) => stream.report(report(4)).await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await?;
    drop(first);
    approver.stop().await?;
    Ok(())
}

/// Whether the approver closed `stream` (end of stream or reset) within five seconds.
async fn closed_by_approver(stream: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(stream, &mut byte)
        )
        .await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_source_full_of_silent_handshakes_loses_its_oldest_and_an_agent_still_attaches()
-> TestResult {
    let pki = ChannelPki::new()?;
    let mut config = approver_config(&pki);
    config.grpc.connections.max_handshakes_per_source = 2;
    config.grpc.connections.client_hello_timeout = Duration::from_secs(1);
    let approver = TestApprover::start(config).await?;
    let addr = approver.addrs.grpc;
    // Two connections that never send a ClientHello hold this source's two slots...
    let mut idle = [
        tokio::net::TcpStream::connect(addr).await?,
        tokio::net::TcpStream::connect(addr).await?,
    ];
    // ...a third takes the oldest one's slot rather than being refused...
    let _third = tokio::net::TcpStream::connect(addr).await?;
    assert!(closed_by_approver(&mut idle[0]).await, "oldest evicted");
    let listeners = &approver.metrics().listeners;
    assert_eq!(
        listeners.shed_connections("attestation", "evicted_per_source"),
        1
    );
    // ...and so does an agent from the same address, at once, while the others still
    // hold their slots.
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;
    stream
        .report(raw::report(1, "worker-1", &[(ip(10, 0, 0, 11), 24)]))
        .await?;
    assert!(closed_by_approver(&mut idle[1]).await);
    // A silent connection that is not evicted is closed when its ClientHello is late.
    let _late = tokio::net::TcpStream::connect(addr).await?;
    let grpc = &approver.metrics().grpc;
    wait_for("client_hello_timeout", Duration::from_secs(5), || async {
        grpc.refused_connections("client_hello_timeout") >= 1
    })
    .await?;
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_flood_of_silent_handshakes_from_many_sources_cannot_lock_an_agent_out() -> TestResult {
    let pki = ChannelPki::new()?;
    let mut config = approver_config(&pki);
    config.grpc.connections.max_handshakes = 16;
    config.grpc.connections.max_handshakes_per_source = 8;
    let approver = TestApprover::start(config).await?;
    let addr = approver.addrs.grpc;
    // Eight addresses, eight silent connections each: four times the handshake slots.
    let mut flood = Vec::new();
    for source in 10..18 {
        for _ in 0..8 {
            flood.push(connect_from(ip(127, 0, 0, source), addr).await?);
        }
    }
    let listeners = &approver.metrics().listeners;
    wait_for("the flood to be shed", Duration::from_secs(5), || async {
        listeners.shed_connections("attestation", "evicted_total") >= 48
    })
    .await?;
    // Every new connection evicts the busiest source's oldest, never the agent's.
    let started = std::time::Instant::now();
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;
    stream
        .report(raw::report(1, "worker-1", &[(ip(10, 0, 0, 11), 24)]))
        .await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(approver.store().attestation("worker-1").is_some());
    drop(flood);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_node_cannot_write_another_nodes_record() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    let mut worker2 = stream_as(&pki, &approver, "worker-2").await?;
    worker2
        .report(raw::report(1, "worker-2", &[(ip(10, 0, 0, 12), 24)]))
        .await?;
    let before = approver
        .store()
        .attestation("worker-2")
        .ok_or("worker-2 missing")?;

    // worker-1 reports worker-2's hostname and address: there is no field that could
    // name worker-2, so it can only describe itself (and the decision sees the conflict).
    let mut worker1 = stream_as(&pki, &approver, "worker-1").await?;
    let ack = worker1
        .report(raw::report(1, "worker-2", &[(ip(10, 0, 0, 12), 24)]))
        .await?;
    assert_eq!(ack.node_name, "worker-1");

    assert_eq!(
        approver.store().attestation("worker-2"),
        Some(before),
        "untouched"
    );
    let claim = approver
        .store()
        .attestation("worker-1")
        .ok_or("worker-1 missing")?;
    assert_eq!(claim.hostname, "worker-2");
    let claimants: Vec<_> = approver
        .store()
        .claimants_of_ip(ip(10, 0, 0, 12))
        .iter()
        .map(|a| a.node_name.clone())
        .collect();
    assert_eq!(claimants, ["worker-1", "worker-2"]);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_reports_close_only_their_own_stream_with_a_precise_status() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    let mut bystander = stream_as(&pki, &approver, "worker-2").await?;
    let mut sequence = 1;
    bystander
        .report(raw::report(sequence, "worker-2", &[(ip(10, 0, 0, 12), 24)]))
        .await?;

    // Semantically invalid: a 5-byte address.
    let mut bad = stream_as(&pki, &approver, "worker-1").await?;
    let mut message = raw::report(1, "worker-1", &[]);
    if let Some(rubber_stamp_proto::v1::agent_message::Kind::Report(r)) = &mut message.kind {
        r.interfaces.push(raw::interface("eth1", &[]));
        r.interfaces[2]
            .addresses
            .push(rubber_stamp_proto::v1::IpPrefix {
                address: vec![1, 2, 3, 4, 5],
                prefix_length: 8,
            });
    }
    let status = bad.report(message).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("\"eth1\": address #0 is 5 bytes long"),
        "{status:?}"
    );

    // Too large: over the 64 KiB message limit.
    let mut big = stream_as(&pki, &approver, "worker-1").await?;
    let status = big
        .report(raw::report(1, &"a".repeat(70 * 1024), &[]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("message too large"), "{status:?}");

    // Not protobuf at all.
    let channel = raw::connect(&pki, approver.addrs.grpc, Some(&pki.node("worker-1")?)).await?;
    let (tx, mut rx) = raw::open_bytes(channel).await?;
    tx.send(vec![0xff, 0xff, 0xff, 0xff]).await?;
    let status = rx.message().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("malformed message"), "{status:?}");

    // A sequence that does not increase.
    let mut replay = stream_as(&pki, &approver, "worker-1").await?;
    replay.report(raw::report(5, "worker-1", &[])).await?;
    let status = replay
        .report(raw::report(5, "worker-1", &[]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("sequence 5 is not greater than"),
        "{status:?}"
    );

    let grpc = &approver.metrics().grpc;
    assert_eq!(grpc.closed_streams("invalid_report"), 2);
    assert_eq!(grpc.closed_streams("message_too_large"), 1);
    assert_eq!(grpc.closed_streams("malformed_message"), 1);

    // The bystander's stream was never disturbed.
    for _ in 0..3 {
        sequence += 1;
        let ack = bystander
            .report(raw::report(sequence, "worker-2", &[(ip(10, 0, 0, 12), 24)]))
            .await?;
        assert_eq!(ack.sequence, sequence);
    }
    assert_eq!(
        approver
            .store()
            .live_stream("worker-2")
            .map(|s| s.peer_address),
        Some(ip(127, 0, 0, 1))
    );
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_report_without_interfaces_is_refused_and_never_stored() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;
    stream
        .report(raw::report(1, "worker-1", &[(ip(10, 0, 0, 11), 24)]))
        .await?;
    let before = approver.store().attestation("worker-1");

    // What an agent out of descriptors would have sent: sysinfo listed nothing.
    let mut empty = raw::report(2, "worker-1", &[]);
    if let Some(rubber_stamp_proto::v1::agent_message::Kind::Report(r)) = &mut empty.kind {
        r.interfaces.clear();
    }
    let status = stream.report(empty).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "report has no interfaces; every node has at least a loopback interface, so the agent failed to read them"
    );
    assert_eq!(approver.metrics().grpc.closed_streams("invalid_report"), 1);
    assert_eq!(
        approver.store().attestation("worker-1"),
        before,
        "the last complete report stands"
    );
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn reports_faster_than_the_rate_limit_close_the_stream() -> TestResult {
    let pki = ChannelPki::new()?;
    let mut config = approver_config(&pki);
    config.grpc.streams.report_burst = 2;
    config.grpc.streams.report_interval = Duration::from_secs(3600);
    let approver = TestApprover::start(config).await?;
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;
    stream.report(raw::report(1, "worker-1", &[])).await?;
    stream.report(raw::report(2, "worker-1", &[])).await?;
    let status = stream
        .report(raw::report(3, "worker-1", &[]))
        .await
        .expect_err("limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(approver.metrics().grpc.closed_streams("rate_limited"), 1);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_new_stream_of_the_same_node_replaces_the_old_one() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    let mut first = stream_as(&pki, &approver, "worker-1").await?;
    first.report(raw::report(1, "worker-1", &[])).await?;
    let first_id = approver
        .store()
        .live_stream("worker-1")
        .ok_or("no stream")?
        .id;

    let mut second = stream_as(&pki, &approver, "worker-1").await?;
    second.report(raw::report(1, "worker-1", &[])).await?;
    let status = first.next().await.expect_err("old stream closed");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");

    let live = approver.store().live_streams();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, first_id);
    assert_eq!(approver.metrics().grpc.live_streams.get(), 1);
    assert_eq!(approver.metrics().grpc.closed_streams("replaced"), 1);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_challenge_is_answered_by_the_report_that_echoes_its_nonce() -> TestResult {
    let pki = ChannelPki::new()?;
    let approver = start(&pki).await?;
    assert_eq!(
        approver
            .store()
            .challenge("worker-1", Duration::from_secs(1)),
        Err(ChallengeError::NoStream {
            node: "worker-1".into()
        })
    );
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;
    stream
        .report(raw::report(1, "worker-1", &[(ip(10, 0, 0, 11), 24)]))
        .await?;

    // Fired and forgotten: the nonce goes down the stream at once.
    approver
        .store()
        .challenge("worker-1", Duration::from_secs(10))?;
    let nonce = match stream.next().await?.kind {
        Some(approver_message::Kind::Challenge(c)) => c.nonce,
        other => return Err(format!("expected a challenge, got {other:?}").into()),
    };
    assert!(nonce.len() >= 16);
    let answer: AgentMessage =
        raw::with_nonce(raw::report(2, "worker-1", &[(ip(10, 0, 0, 99), 24)]), nonce);
    // The answer is recorded (and acknowledged) like any report, and counted as an
    // answer where it is recorded.
    let ack = stream.report(answer).await?;
    assert_eq!(ack.sequence, 2);
    let fresh = approver
        .store()
        .attestation("worker-1")
        .ok_or("no attestation")?;
    let eth0 = fresh
        .interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .ok_or("no eth0")?;
    assert_eq!(
        eth0.addresses,
        ["10.0.0.99/24".parse()?],
        "the answering report's facts"
    );
    assert_eq!(approver.metrics().controller.challenges("answered"), 1);

    // A closed stream cannot be challenged; the attestation outlives it.
    drop(stream);
    let store = approver.store().clone();
    wait_for("the stream to close", Duration::from_secs(5), || async {
        store.challenge("worker-1", Duration::from_secs(1)).is_err()
    })
    .await?;
    assert!(approver.store().attestation("worker-1").is_some());
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn health_answers_a_real_client_and_readiness_follows_the_attestation_server() -> TestResult {
    let pki = ChannelPki::new()?;
    let listeners = Listeners::bind(&approver_config(&pki).listen).await?;
    let health: SocketAddr = listeners.health.local_addr()?;
    // A task plugged next to the servers that holds the drain open until released, so
    // the health server can be observed while the approver shuts down.
    let (draining_tx, draining) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let approver = TestApprover::start_on(approver_config(&pki), listeners, |runtime| {
        runtime.spawn("drain-holder", |stop| async move {
            stop.cancelled().await;
            let _ = draining_tx.send(());
            let _ = released.await;
            Ok(())
        });
    })
    .await?;
    assert_eq!(
        health_status(health, LIVENESS_SERVICE).await?,
        ServingStatus::Serving
    );
    assert_eq!(
        health_status(health, READINESS_SERVICE).await?,
        ServingStatus::Serving
    );
    let mut stream = stream_as(&pki, &approver, "worker-1").await?;
    stream.report(raw::report(1, "worker-1", &[])).await?;

    approver.request_stop();
    draining.await?;
    assert_eq!(
        health_status(health, READINESS_SERVICE).await?,
        ServingStatus::NotServing
    );
    assert_eq!(
        health_status(health, LIVENESS_SERVICE).await?,
        ServingStatus::Serving
    );
    let status = stream.next().await.expect_err("stream ended by shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let _ = release.send(());
    approver.stop().await?;
    assert!(
        health_status(health, LIVENESS_SERVICE).await.is_err(),
        "health server stopped last"
    );
    Ok(())
}
