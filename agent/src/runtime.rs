//! Wiring of the agent: identity and facts pollers, one stream per approver endpoint
//! (re-resolved on an interval), readiness, the health server, and the metrics server and
//! proof listener when they run; stop on a token.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cloud::Cloud;
use crate::config::{AgentConfig, ApproverAddress, IpFamily};
use crate::facts::{Facts, FactsError, SystemFacts, WithCloud};
use crate::health;
use crate::identity::watch_identity;
use crate::metrics::{self, AgentMetrics};
use crate::proof::{ProofEvents, ProofFeed, ProofLimits, ProofListener};
use crate::readiness::Readiness;
use crate::resolve::Resolve;
use crate::session::{ApproverCa, SessionContext};

/// How long stopping waits for streams and servers.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node's facts cannot be read at all.
    #[error(transparent)]
    Facts(#[from] FactsError),
    /// The health server failed.
    #[error("health server: {0}")]
    Health(#[from] tonic::transport::Error),
}

/// Runs the agent until `stop`, serving health on `health`.
pub async fn run(
    config: AgentConfig,
    health: TcpListener,
    resolver: Arc<dyn Resolve>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    run_with_metrics(config, health, None, resolver, stop).await
}

/// Like [`run`], also serving Prometheus metrics on `metrics` (`--metrics-listen`).
pub async fn run_with_metrics(
    config: AgentConfig,
    health: TcpListener,
    metrics: Option<TcpListener>,
    resolver: Arc<dyn Resolve>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let listeners = Listeners {
        health,
        metrics,
        proof: None,
    };
    run_with_listeners(config, listeners, resolver, stop).await
}

/// The agent's bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// The health server's (`--health-listen`).
    pub health: TcpListener,
    /// The metrics server's, when it runs (`--metrics-listen`).
    pub metrics: Option<TcpListener>,
    /// The proof listener, when it runs (`--proof-listen`): reports carry its port and its
    /// receipts go to every replica that accepts them. `None`: reports say `proof_port` 0.
    pub proof: Option<ProofListener>,
}

/// Runs the agent until `stop` on `listeners`.
pub async fn run_with_listeners(
    config: AgentConfig,
    listeners: Listeners,
    resolver: Arc<dyn Resolve>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let Listeners {
        health,
        metrics,
        proof,
    } = listeners;
    let cloud = Cloud::new(config.cloud);
    let facts = Facts::new(WithCloud::new(
        SystemFacts::new(config.machine_id_path.clone(), config.boot_id_path.clone())?,
        cloud.clone(),
    ));
    if let Err(error) = facts.refresh().await {
        tracing::warn!(%error, "cannot read the node's facts yet; reporting nothing until a read succeeds");
    }
    let (identity_tx, identity) = watch::channel(None);
    let readiness = Readiness::new();
    // Every stream's events are counted, and its Acks reach readiness.
    let counted = AgentMetrics::new(readiness.clone());
    let context = SessionContext {
        server_name: config.server_name.clone(),
        approver_ca: ApproverCa::File(config.approver_ca.clone()),
        timings: config.timings,
        identity,
        facts: facts.clone(),
        events: Arc::new(counted.clone()),
        local_address: None,
        stagger_first_heartbeat: false,
    };

    let mut tasks = JoinSet::new();
    tasks.spawn(watch_identity(
        config.identity.clone(),
        config.timings.identity_poll_interval,
        identity_tx,
        stop.clone(),
    ));
    let readable = facts.readable();
    tasks.spawn(detect_cloud(cloud, facts.clone(), stop.clone()));
    tasks.spawn(poll_facts(
        facts,
        config.timings.poll_interval,
        stop.clone(),
    ));
    tasks.spawn(readiness.clone().expire(stop.clone()));
    tasks.spawn(readiness.clone().follow_facts(readable, stop.clone()));
    let proof_feed = proof.as_ref().map(ProofListener::feed);
    // The proof listener stops only after the streams have ended: while a stream says the
    // node listens on every address, it must, or the approver could take the node's own
    // refusal of a probe for another host's (a rollout's SIGTERM).
    let proof_stop = CancellationToken::new();
    let proof_task = proof.map(|proof| {
        tokio::spawn(proof.serve(
            Arc::new(counted.clone()) as Arc<dyn ProofEvents>,
            proof_stop.clone(),
        ))
    });
    let streams = tokio::spawn(manage_endpoints(
        context,
        proof_feed,
        resolver,
        config.approver.clone(),
        config.ip_family,
        config.timings.resolve_interval,
        stop.clone(),
    ));
    if let Some(listener) = metrics {
        let limits = config.metrics.unwrap_or(config.health);
        tasks.spawn(metrics::serve(listener, limits, counted, stop.clone()));
    }
    let served = health::serve(health, config.health, readiness, stop.clone()).await;
    // The health server returns only once `stop` is cancelled (or on error).
    stop.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, async {
        let _ = streams.await;
        proof_stop.cancel();
        if let Some(task) = proof_task {
            let _ = task.await;
        }
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("stopping timed out");
        proof_stop.cancel();
        tasks.abort_all();
    }
    served.map_err(Into::into)
}

/// Raises the open-file limit to the hard limit and lowers the listeners' connection
/// limits (the proof listener's `proof`, when it runs) if it cannot hold them, logging both.
pub fn fit_descriptors(config: &mut AgentConfig, proof: Option<&mut ProofLimits>) {
    let nofile = rubber_stamp_listen::raise_nofile_limit_logged();
    for clamp in config.fit_descriptors(nofile, proof) {
        clamp.log();
    }
}

/// Detects the cloud in the background (`auto`), then reads the facts again so that every
/// stream reports the outcome at once; while no metadata service answers, probes again
/// ([`Cloud::redetect_after`]).
async fn detect_cloud(cloud: Cloud, facts: Facts, stop: CancellationToken) {
    if !cloud.detects() {
        return;
    }
    let mut first = true;
    loop {
        let found = tokio::select! {
            () = stop.cancelled() => return,
            found = cloud.detect() => found,
        };
        if (found || first)
            && let Err(error) = facts.refresh().await
        {
            tracing::warn!(%error, "reading the node's facts after detecting the cloud");
        }
        if found {
            return;
        }
        first = false;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(cloud.redetect_after()) => {}
        }
    }
}

async fn poll_facts(facts: Facts, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(error) = facts.refresh().await {
                    tracing::warn!(%error, "reading the node's facts failed; reporting nothing and not ready until a read succeeds");
                }
            }
        }
    }
}

/// Resolves the approver address every `interval` and keeps exactly one stream per
/// resolved endpoint of the chosen family: new endpoints get a stream, vanished ones have theirs stopped. A
/// failed or empty resolution keeps the current streams (they reconnect on their own).
/// Every stream passes on `proof`'s receipts.
async fn manage_endpoints(
    context: SessionContext,
    proof: Option<ProofFeed>,
    resolver: Arc<dyn Resolve>,
    address: ApproverAddress,
    family: IpFamily,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut sessions: HashMap<SocketAddr, CancellationToken> = HashMap::new();
    let mut running = JoinSet::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let resolved = tokio::select! {
            () = stop.cancelled() => break,
            resolved = resolver.resolve(&address) => resolved,
        };
        let endpoints: BTreeSet<SocketAddr> = match resolved.map(|all| family.select(&all)) {
            Ok(endpoints) if !endpoints.is_empty() => endpoints,
            Ok(_) => {
                tracing::warn!(%address, ?family, "the approver address resolves to no usable address; keeping current streams");
                continue;
            }
            Err(error) => {
                tracing::warn!(%address, %error, "resolving the approver failed; keeping current streams");
                continue;
            }
        };
        sessions.retain(|endpoint, token| {
            let keep = endpoints.contains(endpoint);
            if !keep {
                tracing::info!(%endpoint, "approver endpoint gone; closing its stream");
                token.cancel();
            }
            keep
        });
        for endpoint in endpoints {
            if let std::collections::hash_map::Entry::Vacant(slot) = sessions.entry(endpoint) {
                tracing::info!(%endpoint, "approver endpoint found; opening a stream");
                let token = stop.child_token();
                running.spawn(context.clone().run_with_proof(
                    endpoint,
                    proof.clone(),
                    token.clone(),
                ));
                slot.insert(token);
            }
        }
        // Reap sessions that already stopped.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}
