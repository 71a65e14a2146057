//! Unit tests of the attestation store: recording, replacement, challenges, changes, pruning.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use rubber_stamp_core::INTERFACES_SOURCE;

#[derive(Debug)]
struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn at(ts: &str) -> Arc<Self> {
        Arc::new(Self(Mutex::new(ts.parse().expect("timestamp"))))
    }

    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock");
        *now = now
            .checked_add(SignedDuration::try_from(by).expect("duration"))
            .expect("time");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock")
    }
}

fn mk_store(clock: Arc<ManualClock>, config: StoreConfig) -> AttestationStore {
    AttestationStore::new(config, clock)
}

fn mk_node(name: &str) -> NodeName {
    name.parse().expect("node name")
}

fn mk_facts(hostname: &str, ip: [u8; 4]) -> NodeFacts {
    NodeFacts {
        hostname: hostname.to_owned(),
        interfaces: vec![InterfaceFacts {
            name: "eth0".to_owned(),
            addresses: vec![format!("{}/24", Ipv4Addr::from(ip)).parse().expect("net")],
        }],
        machine_id: None,
        boot_id: None,
        agent_version: Some("test".to_owned()),
        sources: vec![SourceReport::complete(INTERFACES_SOURCE)],
        metadata: Vec::new(),
        proof_port: None,
    }
}

fn peer(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

#[tokio::test]
async fn a_report_becomes_an_attestation_under_the_leases_node_with_the_clocks_time() {
    let clock = ManualClock::at("2026-11-30T00:00:00Z");
    let store = mk_store(clock.clone(), StoreConfig::default());
    let mut changes = store.subscribe();
    let lease = store.open_stream(mk_node("worker-1"), peer(11), "0a".into());

    let recorded = store
        .record(&lease, mk_facts("worker-1", [10, 0, 0, 11]), None)
        .expect("recorded");
    assert!(!recorded.answered_challenge);
    let got = recorded.attestation;
    assert_eq!(got.node_name, "worker-1");
    assert_eq!(got.peer_address, Some(peer(11)));
    assert_eq!(got.received_at, clock.now());
    assert_eq!(store.attestation("worker-1"), Some(got));
    assert_eq!(
        changes.recv().await,
        Ok(AttestationChange {
            node: mk_node("worker-1"),
            kind: ChangeKind::Changed
        })
    );

    clock.advance(Duration::from_secs(60));
    let again = store
        .record(&lease, mk_facts("worker-1", [10, 0, 0, 11]), None)
        .expect("recorded")
        .attestation;
    assert_eq!(again.received_at, clock.now());
    assert_eq!(
        changes.recv().await.map(|c| c.kind),
        Ok(ChangeKind::Refreshed)
    );

    store
        .record(&lease, mk_facts("worker-1", [10, 0, 0, 12]), None)
        .expect("recorded");
    assert_eq!(
        changes.recv().await.map(|c| c.kind),
        Ok(ChangeKind::Changed)
    );
}

#[tokio::test]
async fn a_new_stream_replaces_the_old_one_of_the_same_node_only() {
    let store = mk_store(
        ManualClock::at("2026-11-30T00:00:00Z"),
        StoreConfig::default(),
    );
    let mut old = store.open_stream(mk_node("worker-1"), peer(11), "01".into());
    let other = store.open_stream(mk_node("worker-2"), peer(12), "02".into());
    let new = store.open_stream(mk_node("worker-1"), peer(13), "03".into());

    assert_eq!(old.next_command().await, None, "old stream told to end");
    assert_eq!(
        store
            .record(&old, mk_facts("worker-1", [10, 0, 0, 11]), None)
            .err(),
        Some(RecordError::Superseded {
            node: mk_node("worker-1"),
            stream: old.info().id
        })
    );
    drop(old);
    let live = store.live_stream("worker-1").expect("still live");
    assert_eq!(
        live.id,
        new.info().id,
        "dropping the old lease keeps the new one"
    );
    assert_eq!(live.certificate_serial, "03");
    assert_eq!(store.live_streams().len(), 2);
    assert!(
        store
            .record(&other, mk_facts("worker-2", [10, 0, 0, 12]), None)
            .is_ok()
    );
    drop(new);
    assert_eq!(store.live_stream("worker-1"), None);
}

#[tokio::test]
async fn attestations_outlive_their_stream_until_pruned_past_max_age() {
    let clock = ManualClock::at("2026-11-30T00:00:00Z");
    let config = StoreConfig {
        max_age: Duration::from_secs(300),
        ..StoreConfig::default()
    };
    let store = mk_store(clock.clone(), config);
    let lease = store.open_stream(mk_node("worker-1"), peer(11), "01".into());
    store
        .record(&lease, mk_facts("worker-1", [10, 0, 0, 11]), None)
        .expect("recorded");
    drop(lease);
    let mut changes = store.subscribe();

    clock.advance(Duration::from_secs(300));
    assert!(store.prune().is_empty(), "exactly max age is still kept");
    assert!(store.attestation("worker-1").is_some());

    clock.advance(Duration::from_secs(1));
    assert_eq!(store.prune(), vec![mk_node("worker-1")]);
    assert!(store.attestation("worker-1").is_none());
    assert_eq!(changes.recv().await.map(|c| c.kind), Ok(ChangeKind::Pruned));
}

#[tokio::test]
async fn a_challenge_is_answered_by_the_report_that_echoes_its_nonce() {
    let store = mk_store(
        ManualClock::at("2026-11-30T00:00:00Z"),
        StoreConfig::default(),
    );
    let mut lease = store.open_stream(mk_node("worker-1"), peer(11), "01".into());

    // Fired and forgotten: the store sends the nonce down the stream and returns.
    let sent = store
        .challenge("worker-1", Duration::from_secs(5))
        .expect("sent");
    assert_eq!(sent.expired, 0);
    let Some(StreamCommand::Challenge(nonce)) = lease.next_command().await else {
        panic!("no challenge sent down the stream");
    };
    assert_eq!(nonce.as_bytes().len(), CHALLENGE_NONCE_BYTES);

    // A report with another nonce is stored but does not answer the challenge.
    let unrelated = Nonce::from_bytes(vec![0; CHALLENGE_NONCE_BYTES]);
    let old = store
        .record(&lease, mk_facts("old", [10, 0, 0, 11]), Some(&unrelated))
        .expect("recorded");
    assert!(!old.answered_challenge);
    let fresh = store
        .record(&lease, mk_facts("fresh", [10, 0, 0, 11]), Some(&nonce))
        .expect("recorded");
    assert!(fresh.answered_challenge);
    assert_eq!(fresh.attestation.hostname, "fresh");
    // A nonce answers once.
    let again = store
        .record(&lease, mk_facts("fresh", [10, 0, 0, 11]), Some(&nonce))
        .expect("recorded");
    assert!(!again.answered_challenge);
}

#[tokio::test(start_paused = true)]
async fn challenge_errors_are_typed_and_unanswered_challenges_expire() {
    let store = mk_store(
        ManualClock::at("2026-11-30T00:00:00Z"),
        StoreConfig {
            max_pending_challenges: 1,
            ..StoreConfig::default()
        },
    );
    assert_eq!(
        store.challenge("worker-1", Duration::from_secs(1)),
        Err(ChallengeError::NoStream {
            node: "worker-1".into()
        })
    );

    let mut lease = store.open_stream(mk_node("worker-1"), peer(11), "01".into());
    assert_eq!(
        store.challenge("worker-1", Duration::from_secs(2)),
        Ok(Sent { expired: 0 })
    );
    // The first is pending and the node may have only one.
    assert_eq!(
        store.challenge("worker-1", Duration::from_secs(2)),
        Err(ChallengeError::Busy {
            node: "worker-1".into(),
            pending: 1
        })
    );
    assert!(matches!(
        lease.next_command().await,
        Some(StreamCommand::Challenge(_))
    ));
    // Unanswered past its validity, it is dropped and counted; a new one goes out.
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        store.challenge("worker-1", Duration::from_secs(2)),
        Ok(Sent { expired: 1 })
    );
    drop(lease);
    assert_eq!(
        store.challenge("worker-1", Duration::from_secs(2)),
        Err(ChallengeError::NoStream {
            node: "worker-1".into()
        })
    );
}

#[tokio::test]
async fn a_lagging_subscriber_learns_it_lagged_and_the_writer_never_blocks() {
    let store = mk_store(
        ManualClock::at("2026-11-30T00:00:00Z"),
        StoreConfig {
            change_capacity: 2,
            ..StoreConfig::default()
        },
    );
    let mut changes = store.subscribe();
    let lease = store.open_stream(mk_node("worker-1"), peer(11), "01".into());
    for i in 0..5 {
        store
            .record(&lease, mk_facts("worker-1", [10, 0, 0, i]), None)
            .expect("recorded without waiting for the subscriber");
    }
    assert_eq!(
        changes.recv().await,
        Err(SubscriptionError::Lagged { missed: 3 })
    );
    assert_eq!(
        changes.recv().await.map(|c| c.node),
        Ok(mk_node("worker-1"))
    );
}

#[test]
fn lookups_go_through_the_core_index() {
    let store = mk_store(
        ManualClock::at("2026-11-30T00:00:00Z"),
        StoreConfig::default(),
    );
    let a = store.open_stream(mk_node("worker-1"), peer(11), "01".into());
    let b = store.open_stream(mk_node("worker-2"), peer(12), "02".into());
    store
        .record(&a, mk_facts("shared", [10, 0, 0, 50]), None)
        .expect("recorded");
    store
        .record(&b, mk_facts("worker-2", [10, 0, 0, 50]), None)
        .expect("recorded");
    let view = store.read();
    let claimants: Vec<_> = view
        .claimants_of_ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 50)))
        .iter()
        .map(|a| a.node_name.clone())
        .collect();
    assert_eq!(claimants, ["worker-1", "worker-2"]);
    assert_eq!(view.claimants_of_name("SHARED.").len(), 1);
    drop(view);
    assert_eq!(store.snapshot().attestations.len(), 2);
}
