//! End to end: an agent DaemonSet rollout (agents replaced one node at a
//! time, the next only once the new agent is ready, as `maxUnavailable: 1`
//! with a `grpc:` readiness probe does). Sampling every replica's
//! `/attestations` throughout shows that no node ever loses its attestation
//! for longer than the max age, and that every node ends up attested by its
//! new agent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rubber_stamp_e2e::channel;
use rubber_stamp_sandbox::{Timings, e2e};
use rubber_stamp_testkit::http as https;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const STEP: Duration = Duration::from_secs(20);
/// Short, so that a node whose new agent did not report would drop out
/// within the test.
const MAX_AGE: Duration = Duration::from_secs(3);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One observation of one node at one replica.
#[derive(Clone, Debug)]
struct Sample {
    at: jiff::Timestamp,
    /// Age of the attestation at that moment; `None` when there was none.
    age: Option<Duration>,
}

type Samples = Arc<Mutex<BTreeMap<(String, String), Vec<Sample>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_node_loses_its_attestation_during_an_agent_rollout() {
    let _alone = crate::one_system_at_a_time().await;
    let Some(mut sandbox) = e2e::namespaced(
        "no_node_loses_its_attestation_during_an_agent_rollout",
        Timings {
            max_age: MAX_AGE,
            ..Timings::fast()
        },
    )
    .await
    else {
        return;
    };
    for node in NODES {
        sandbox.add_node(node).await.expect("node");
        sandbox.start_agent(node).expect("agent");
    }
    sandbox.wait_attested(&NODES, STEP).await.expect("attested");
    for node in NODES {
        wait_ready(
            sandbox
                .node(node)
                .expect("node")
                .agent_health()
                .expect("host"),
        )
        .await;
    }

    // Sample every replica's snapshot until told to stop.
    let samples: Samples = Arc::default();
    let stop = CancellationToken::new();
    let admins: Vec<Admin> = sandbox
        .approvers()
        .iter()
        .map(|a| (a.name().to_owned(), a.admin(), a.admin_client().clone()))
        .collect();
    let sampler = tokio::spawn(sample(admins, Arc::clone(&samples), stop.clone()));

    // The rollout: one node at a time, the next once the new agent is ready.
    let mut replaced_at = BTreeMap::new();
    for node in NODES {
        let n = sandbox.node_mut(node).expect("node");
        n.stop_agent().await.expect("old agent stopped (SIGTERM)");
        let started = jiff::Timestamp::now();
        sandbox.start_agent(node).expect("new agent");
        wait_ready(
            sandbox
                .node(node)
                .expect("node")
                .agent_health()
                .expect("host"),
        )
        .await;
        replaced_at.insert(node, started);
    }
    // Keep watching for longer than the max age: a new agent that stopped
    // reporting would drop out meanwhile.
    tokio::time::sleep(MAX_AGE + Duration::from_secs(1)).await;
    stop.cancel();
    sampler.await.expect("sampler");

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let replicas = sandbox.approvers().len();
    assert_eq!(samples.len(), replicas * NODES.len(), "{samples:?}");
    for ((replica, node), series) in samples.iter() {
        assert!(
            series.len() > 20,
            "{replica}/{node}: only {} samples",
            series.len()
        );
        for s in series {
            let age = s
                .age
                .unwrap_or_else(|| panic!("{replica} had no attestation of {node} at {}", s.at));
            assert!(
                age <= MAX_AGE,
                "{replica}'s attestation of {node} was {age:?} old at {} (max age {MAX_AGE:?})",
                s.at
            );
        }
    }
    // Every node is attested through its new agent's stream at every replica.
    for replica in sandbox.approvers() {
        let streams = replica.streams().await.expect("streams");
        for node in NODES {
            let stream = streams
                .iter()
                .find(|s| s.node_name == node)
                .unwrap_or_else(|| panic!("{}: no stream of {node}", replica.name()));
            let opened: jiff::Timestamp = stream.opened_at.parse().expect("timestamp");
            assert!(
                opened >= replaced_at[node],
                "{}: {node}'s stream opened {opened}, before its new agent started",
                replica.name()
            );
        }
    }
}

/// Waits until the agent's `attested` readiness service is SERVING (what the
/// DaemonSet's readiness probe asks).
async fn wait_ready(health: SocketAddr) {
    e2e::eventually(
        &format!("agent at {health} to be ready"),
        STEP,
        || async move {
            (channel::health_status(health, "attested").await.ok() == Some(ServingStatus::Serving))
                .then_some(())
        },
    )
    .await;
}

/// A replica's name, admin address, and how the sandbox reads it (HTTPS, its token).
type Admin = (String, SocketAddr, https::HttpsClient);

async fn sample(admins: Vec<Admin>, samples: Samples, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    let started = Instant::now();
    while !stop.is_cancelled() {
        ticks.tick().await;
        for (replica, admin, client) in &admins {
            let now = jiff::Timestamp::now();
            let (status, body) = https::https_get(*admin, "/attestations", client)
                .await
                .unwrap_or_else(|e| {
                    panic!("{replica} /attestations after {:?}: {e}", started.elapsed())
                });
            assert_eq!(status, 200, "{replica}: {body}");
            let snapshot: rubber_stamp_core::AttestationSnapshot =
                serde_json::from_str(&body).expect("snapshot JSON");
            let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
            for node in NODES {
                let age = snapshot
                    .attestations
                    .iter()
                    .find(|a| a.node_name == node)
                    .map(|a| {
                        Duration::try_from(now.duration_since(a.received_at)).unwrap_or_default()
                    });
                samples
                    .entry((replica.clone(), node.to_owned()))
                    .or_default()
                    .push(Sample { at: now, age });
            }
        }
    }
}
