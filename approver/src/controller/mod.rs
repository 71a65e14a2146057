//! The Kubernetes controller: watch kubelet-serving CSRs, Nodes, Services and ServiceCIDRs,
//! decide with the core against the attestation store, act (approve or deny through
//! `/approval`, or leave pending), explain (Events, metrics, logs) — on the Lease holder
//! only.
//!
//! Every replica runs the watches and keeps its caches warm (CSR reflector, parsed
//! requests, Node index, attestations from its own gRPC server), so a standby that becomes
//! leader decides on everything at once. Only the replica that may act
//! ([`Leadership::may_act`], checked right before every write) writes decisions and Events.
//!
//! # Layout
//!
//! - [`config`]: flags and the Kubernetes client.
//! - `reconcile`: one decision on one CSR, and acting on it.
//! - `table`: per-CSR memory (parsed request, node index, last explained state).
//! - `nodes`: Node objects as a live `NodeSet`.
//! - `services`: Services and ServiceCIDRs as a live `ServiceSet`.
//! - `triggers`: attestation, Node and Service changes → the CSRs they affect.
//! - [`leader`]: the Lease and the local "may act until" deadline.
//! - `review`: check 14 (SubjectAccessReview) with a short cache.
//! - `valve`: the flood valves (per node, and cluster-wide).
//! - [`explain`]: Events and condition messages.
//!
//! Wiring (what `run` does, and what tests do):
//!
//! ```ignore
//! let mut runtime = Runtime::new(run_config, Arc::new(SystemClock)).await?;
//! let leadership = runtime.plug_controller(client, controller_config)?;
//! runtime.run(listeners, termination()).await
//! ```

mod act;
pub mod config;
mod context;
pub mod explain;
pub mod leader;
mod nodes;
mod ownership;
mod plan;
mod reconcile;
pub mod review;
mod services;
mod table;
mod triggers;
mod valve;

use std::collections::{HashMap, HashSet};
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::runtime::controller::{self, Controller as KubeController};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ControllerMetrics, Metrics, ReasonText};
use crate::store::AttestationStore;
use rubber_stamp_core::{AttestationLookup as _, KUBELET_SERVING_SIGNER, is_fresh};

pub use config::{ClientError, ControllerConfig, ControllerConfigError, LeaseConfig};
pub use leader::{ElectionError, Leadership};
pub use reconcile::ReconcileError;

use context::{Apis, Context, Settings, State};
use leader::Election;
use nodes::NodeIndex;
use review::AccessReviews;
use services::ServiceIndex;
use table::CsrTable;
use triggers::Triggers;
use valve::FloodValve;

/// How often gauges are refreshed and the flood valve is re-evaluated.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the controller could not be plugged in or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The attestation store keeps attestations for another age than the policy's.
    #[error(
        "the attestation store's max age ({store:?}) differs from the policy's attestationMaxAge ({policy:?}); derive the store's from the policy"
    )]
    MaxAge {
        /// The store's.
        store: Duration,
        /// The policy's.
        policy: Duration,
    },
    /// The configuration is inconsistent (e.g. lease timings built by hand).
    #[error(transparent)]
    Config(#[from] ControllerConfigError),
    /// Leader election failed.
    #[error(transparent)]
    Election(#[from] ElectionError),
    /// A part of the controller stopped although no shutdown was requested.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// The controller of one replica, assembled but not running.
pub struct Controller {
    client: Client,
    store: AttestationStore,
    metrics: ControllerMetrics,
    config: ControllerConfig,
    leadership: Leadership,
}

// === impl Controller ===

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("leadership", &self.leadership)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller deciding with `store`'s attestations and counting in `metrics`.
    pub fn new(
        client: Client,
        store: AttestationStore,
        metrics: &Metrics,
        config: ControllerConfig,
    ) -> Result<Self, ControllerError> {
        let (store_age, policy_age) = (store.config().max_age, config.attestation_max_age());
        if store_age != policy_age {
            return Err(ControllerError::MaxAge {
                store: store_age,
                policy: policy_age,
            });
        }
        let leadership = match &config.lease {
            Some(lease) => {
                // kube-lease-manager panics on timings it cannot use: check them here.
                LeaseConfig::new(lease.name.clone(), lease.duration, lease.grace)?;
                Leadership::elected()
            }
            None => Leadership::unelected(),
        };
        Ok(Self {
            client,
            store,
            metrics: metrics.controller.clone(),
            config,
            leadership,
        })
    }

    /// Whether (and until when) this replica acts.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Runs until `stop`, then: stops acting, lets running decisions finish, releases the
    /// Lease.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ControllerError> {
        let Self {
            client,
            store,
            metrics,
            config,
            leadership,
        } = self;
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let lease_namespace = config
            .lease_namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let table = Arc::new(CsrTable::new(
            store.clock(),
            config.max_pending_csrs_per_node,
        ));
        let nodes = Arc::new(NodeIndex::default());
        let services = Arc::new(ServiceIndex::default());
        let (triggers, streams) = Triggers::new(Arc::clone(&table));
        let own_object = match &config.lease {
            Some(lease) => ObjectReference {
                api_version: Some("coordination.k8s.io/v1".to_owned()),
                kind: Some("Lease".to_owned()),
                name: Some(lease.name.clone()),
                namespace: Some(lease_namespace.clone()),
                ..ObjectReference::default()
            },
            None => ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(config.replica.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectReference::default()
            },
        };
        let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
        let ctx = Arc::new(Context {
            api: Apis {
                csrs: csrs.clone(),
                reviews: AccessReviews::new(Api::all(client.clone()), config.access_review_ttl),
            },
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: explain::REPORTING_CONTROLLER.to_owned(),
                    instance: Some(explain::reporting_instance(&config.replica)),
                },
            ),
            state: State {
                store: store.clone(),
                nodes: Arc::clone(&nodes),
                services: Arc::clone(&services),
                table: Arc::clone(&table),
                valve: FloodValve::new(config.max_pending_csrs),
                held_requestors: Mutex::new(HashSet::new()),
                challenged: Mutex::new(HashMap::new()),
                leadership: leadership.clone(),
                triggers: triggers.clone(),
            },
            settings: Settings {
                policy: Arc::clone(&config.policy),
                dry_run: config.dry_run,
                pending_resync: config.pending_resync,
                challenge_timeout: config.challenge_timeout,
                replica: config.replica.clone(),
                own_object,
            },
            metrics: metrics.clone(),
        });
        tracing::info!(
            replica = %config.replica,
            namespace = %namespace,
            dry_run = config.dry_run,
            deny = %config.policy.deny,
            leader_election = config.lease.is_some(),
            "controller starting"
        );

        let background = CancellationToken::new();
        let mut tasks: JoinSet<&'static str> = JoinSet::new();
        tasks.spawn({
            let watch = nodes::watch_nodes(
                Api::<Node>::all(client.clone()),
                Arc::clone(&nodes),
                triggers.clone(),
                metrics.nodes.clone(),
                background.clone(),
            );
            async move {
                watch.await;
                "the Node watch"
            }
        });
        tasks.spawn({
            let watch = services::watch_services(
                Api::<Service>::all(client.clone()),
                Arc::clone(&services),
                triggers.clone(),
                background.clone(),
            );
            async move {
                watch.await;
                "the Service watch"
            }
        });
        tasks.spawn({
            let watch = services::watch_service_cidrs(
                Api::<ServiceCIDR>::all(client.clone()),
                Arc::clone(&services),
                triggers.clone(),
                background.clone(),
            );
            async move {
                watch.await;
                "the ServiceCIDR watch"
            }
        });
        tasks.spawn({
            let follow = triggers::follow_attestations(
                store.subscribe(),
                triggers.clone(),
                background.clone(),
            );
            async move {
                follow.await;
                "the attestation follower"
            }
        });
        tasks.spawn({
            let status = status_loop(Arc::clone(&ctx), background.clone());
            async move {
                status.await;
                "the status loop"
            }
        });
        tasks.spawn({
            let follow = follow_acting(
                leadership.clone(),
                triggers.clone(),
                metrics.clone(),
                background.clone(),
            );
            async move {
                follow.await;
                "the leadership follower"
            }
        });
        let release = CancellationToken::new();
        let election = config.lease.clone().map(|lease| {
            tokio::spawn(
                Election {
                    client: client.clone(),
                    namespace: lease_namespace.clone(),
                    identity: config.replica.clone(),
                    lease,
                    leadership: leadership.clone(),
                }
                .run(release.clone()),
            )
        });

        let selector = format!("spec.signerName={KUBELET_SERVING_SIGNER}");
        let (reader, writer) = reflector::store();
        let stream_table = Arc::clone(&table);
        let csr_events = watcher(csrs, watcher::Config::default().fields(&selector))
            .default_backoff()
            // The reflector keeps every CSR; field ownership is never read.
            .modify(|csr| csr.metadata.managed_fields = None)
            .reflect(writer)
            .inspect_ok(move |event| stream_table.apply_event(event))
            .applied_objects();
        let shutdown = CancellationToken::new();
        // No debounce: a CSR is decided the moment its event (or its node's report) arrives;
        // the scheduler already merges requests for a CSR that is waiting or being decided.
        // Bounded concurrency: each decision waits on two or three API round trips
        // (SubjectAccessReview, /approval, Event), so --concurrency (64) in flight keeps a
        // remote API server busy during a bootstrap storm without flooding it.
        let decisions = KubeController::for_stream(csr_events, reader)
            .with_config(
                controller::Config::default()
                    .concurrency(config.concurrency)
                    .debounce(Duration::ZERO),
            )
            .reconcile_on(ReceiverStream::new(streams.one))
            .reconcile_all_on(ReceiverStream::new(streams.all))
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(reconcile::reconcile, reconcile::error_policy, ctx)
            .for_each(|result| {
                report(result);
                ready(())
            });
        let mut decisions = std::pin::pin!(decisions);

        let mut failure = None;
        let mut decisions_done = false;
        tokio::select! {
            () = stop.cancelled() => {}
            () = &mut decisions => {
                decisions_done = true;
                failure = Some(ControllerError::Stopped("the CSR controller"));
            }
            Some(joined) = tasks.join_next() => {
                failure = Some(ControllerError::Stopped(joined.unwrap_or("a controller task")));
            }
        }
        // Stop acting first, then let running decisions finish (they see that they may no
        // longer write), then release the Lease so a standby can start.
        leadership.stop();
        shutdown.cancel();
        if !decisions_done {
            decisions.await;
        }
        background.cancel();
        while tasks.join_next().await.is_some() {}
        release.cancel();
        if let Some(election) = election {
            match election.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    failure.get_or_insert(ControllerError::Election(error));
                }
                Err(error) => {
                    tracing::error!(%error, "the election task failed");
                }
            }
        }
        metrics.leader.set(0);
        tracing::info!("controller stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Logs what the controller stream reports (reconcile errors are also counted by
/// `error_policy`).
fn report(
    result: Result<
        (
            reflector::ObjectRef<CertificateSigningRequest>,
            controller::Action,
        ),
        controller::Error<ReconcileError, watcher::Error>,
    >,
) {
    match result {
        Ok(_) | Err(controller::Error::ObjectNotFound(_)) => {}
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(controller::Error::QueueError(error)) => {
            tracing::warn!(%error, "watching CertificateSigningRequests");
        }
        Err(error) => tracing::warn!(%error, "CSR controller"),
    }
}

/// Every [`STATUS_INTERVAL`]: gauges (pending CSRs, attested and unattested nodes, nodes
/// held) and the flood valves (which reopen here once the pending CSRs are back within
/// their bounds).
async fn status_loop(ctx: Arc<Context>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(STATUS_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reasons set before: a reason no pending CSR has any more goes back to 0.
    let mut reasons_seen = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        ctx.metrics
            .pending_csrs
            .set(i64::try_from(ctx.state.table.len()).unwrap_or(i64::MAX));
        let summary = ctx.state.table.summary();
        // Reasons are the acting replica's: a standby decides nothing, and would report
        // every pending CSR as Undecided beside the leader's real reasons.
        let acting = ctx.state.leadership.may_act();
        let mut counts: std::collections::BTreeMap<&'static str, usize> = summary
            .by_reason
            .into_iter()
            .filter(|_| acting)
            .map(|(reason, n)| (reason.unwrap_or("Undecided"), n))
            .fold(Default::default(), |mut acc, (reason, n)| {
                *acc.entry(reason).or_default() += n;
                acc
            });
        for reason in &reasons_seen {
            counts.entry(*reason).or_default();
        }
        for (reason, n) in counts {
            reasons_seen.insert(reason);
            ctx.metrics
                .pending_csrs_by_reason
                .get_or_create(&ReasonText { reason })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let oldest = summary.oldest.map_or(0, |first_seen| {
            ctx.state
                .store
                .now()
                .duration_since(first_seen)
                .as_secs()
                .max(0)
        });
        ctx.metrics.oldest_pending_csr_age.set(oldest);
        ctx.metrics
            .flood_valve_held_nodes
            .set(i64::try_from(ctx.state.table.requestors_over_bound()).unwrap_or(i64::MAX));
        if !ctx.state.nodes.is_ready() {
            continue;
        }
        ctx.valve_state();
        let released = ctx.release_requestors();
        let sent = async {
            for requestor in &released {
                ctx.state.triggers.requestor(requestor).await;
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = sent => {}
        }
        let (attested, unattested) = attestation_coverage(&ctx);
        ctx.metrics
            .attested_nodes
            .set(i64::try_from(attested).unwrap_or(i64::MAX));
        ctx.metrics
            .unattested_nodes
            .set(i64::try_from(unattested).unwrap_or(i64::MAX));
    }
}

/// Nodes with a fresh attestation, and Node objects without one.
fn attestation_coverage(ctx: &Context) -> (usize, usize) {
    let (state, policy) = (&ctx.state, &ctx.settings.policy);
    let now = state.store.now();
    let attestations = state.store.read();
    let nodes = state.nodes.read();
    let fresh = |name: &str| {
        attestations
            .attestation(name)
            .is_some_and(|a| is_fresh(a.received_at, now, policy))
    };
    let attested = attestations
        .iter()
        .filter(|a| is_fresh(a.received_at, now, policy))
        .count();
    let unattested = nodes.iter().filter(|n| !fresh(&n.name)).count();
    (attested, unattested)
}

/// Follows acting: the leader gauge, a log line, and a decision on every CSR whenever this
/// replica starts acting.
async fn follow_acting(
    leadership: Leadership,
    triggers: Triggers,
    metrics: ControllerMetrics,
    stop: CancellationToken,
) {
    let mut acting = leadership.acting();
    loop {
        let now_acting = *acting.borrow_and_update();
        metrics.leader.set(i64::from(now_acting));
        if now_acting {
            tracing::info!("acting on CSRs (leader); deciding on every CSR");
            triggers.everything();
        } else {
            tracing::info!("not acting on CSRs (standby)");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = acting.changed() => if changed.is_err() { return },
        }
    }
}
