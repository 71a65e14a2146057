//! One decision on one CSR: parse (once), decide (the core, against the live attestation
//! store, Node index and Service index), check 14, then act — approve or deny through
//! `/approval` with the CSR's resourceVersion, or leave it pending (also when a flood valve
//! holds an approval: the requestor's own, then the cluster-wide one) — and explain (Event,
//! metric, log line) when its state changed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use tokio::time::Instant;

use super::explain::{self, APPROVED_REASON, Explanation, Held, NodeHold, Outcome, reasons};
use super::leader::Leadership;
use super::nodes::NodeIndex;
use super::review::AccessReviews;
use super::services::ServiceIndex;
use super::table::{CsrTable, Decided, ParseResult};
use super::triggers::Triggers;
use super::valve::{FloodValve, ValveChange, ValveState};
use crate::k8s;
use crate::metrics::ControllerMetrics;
use crate::store::AttestationStore;
use rubber_stamp_core::NODE_CN_PREFIX;
use rubber_stamp_core::{
    CheckName, CheckReport, CsrInput, Decision, Observed, Policy, Verdict, decide_parsed,
};

/// How often a decision is retried when its CSR changes underneath (409) before the
/// reconcile fails and is retried with backoff.
const MAX_ATTEMPTS: u32 = 3;
/// A node is challenged at most once per this interval (the creation timestamp's
/// resolution: an answer within it may still predate the CSR).
const CHALLENGE_INTERVAL: Duration = Duration::from_secs(1);
/// Most nodes whose last challenge time is remembered.
const MAX_CHALLENGED_NODES: usize = 4096;
/// Backoff of failed reconciles: first retry, and the longest wait.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The SubjectAccessReview of check 14 could not be made.
    #[error("SubjectAccessReview: {0}")]
    AccessReview(#[source] kube::Error),
    /// Writing the decision failed (other than a 409).
    #[error("writing the {decision} decision: {source}")]
    Write {
        /// `approve` or `deny`.
        decision: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Re-reading the CSR after a 409 failed.
    #[error("re-reading the CSR after a conflict: {0}")]
    Reread(#[source] kube::Error),
    /// The CSR changed underneath every attempt.
    #[error("the CSR changed underneath {0} decisions in a row")]
    Contended(u32),
}

impl ReconcileError {
    /// A short label for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::AccessReview(_) => "access_review",
            Self::Write { .. } => "write",
            Self::Reread(_) => "reread",
            Self::Contended(_) => "contended",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        let api = match self {
            Self::AccessReview(e) | Self::Reread(e) | Self::Write { source: e, .. } => e,
            Self::Contended(_) => return None,
        };
        match api {
            kube::Error::Api(status) if status.code == 429 => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// Everything a reconcile reads and writes.
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) csrs: Api<CertificateSigningRequest>,
    pub(crate) store: AttestationStore,
    pub(crate) nodes: Arc<NodeIndex>,
    pub(crate) services: Arc<ServiceIndex>,
    pub(crate) table: Arc<CsrTable>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) dry_run: bool,
    pub(crate) pending_resync: Duration,
    pub(crate) challenge_timeout: Duration,
    pub(crate) replica: String,
    pub(crate) leadership: Leadership,
    pub(crate) reviews: AccessReviews,
    pub(crate) valve: FloodValve,
    pub(crate) metrics: ControllerMetrics,
    pub(crate) triggers: Triggers,
    pub(crate) reporter: Reporter,
    /// Where the flood valve's Events go: the Lease (or the Pod without election).
    pub(crate) own_object: ObjectReference,
    pub(crate) challenged: Mutex<HashMap<String, Instant>>,
    /// Requestors whose approvals the per-node valve held (and announced).
    pub(crate) held_requestors: Mutex<HashSet<String>>,
}

/// The result of writing a decision.
enum Written {
    /// Done.
    Ok,
    /// 409: the CSR changed; here it is, fresh from the API server (if still ours).
    Changed(Option<Arc<CertificateSigningRequest>>),
    /// This replica may no longer act.
    NotActing,
}

/// The CSR's facts for the core, without `spec.request` (the parsed form is cached).
fn facts(csr: &CertificateSigningRequest) -> CsrInput {
    k8s::csr_facts(csr)
}

/// Decides on one CSR and acts.
pub(crate) async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = csr.name_any();
    ctx.metrics.reconciles.inc();
    let action = decide_and_act(csr, &ctx).await?;
    ctx.table.succeeded(&name);
    Ok(action)
}

async fn decide_and_act(
    csr: Arc<CertificateSigningRequest>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = csr.name_any();
    let uid = csr.uid().unwrap_or_default();
    if !facts(&csr).in_scope() {
        ctx.table.forget(&name);
        return Ok(Action::await_change());
    }
    if !ctx.nodes.is_ready() {
        // The first Node list triggers every CSR once it is complete.
        return Ok(Action::await_change());
    }
    // Standbys parse and index too, so a new leader decides at once.
    let parsed = ctx.table.parsed(&csr, &ctx.policy);
    if !ctx.leadership.may_act() {
        // A new leader decides on everything when it starts acting.
        return Ok(Action::await_change());
    }
    let mut current = csr;
    for _ in 0..MAX_ATTEMPTS {
        let mut input = facts(&current);
        // "Received after the CSR" is judged on this replica's clock: against its own
        // first sighting, not the API server's creationTimestamp.
        input.seen_at = ctx.table.first_seen(&name, &uid);
        let mut verdict = ctx.decide(&input, &parsed);
        if verdict.decision() == Decision::Approve {
            let (allowed, detail) = ctx
                .reviews
                .selfnodeserver(&input, &ctx.metrics)
                .await
                .map_err(ReconcileError::AccessReview)?;
            verdict.push_authorization(allowed, detail);
        } else {
            verdict.push_check(CheckReport::skipped(
                CheckName::Authorization,
                "not evaluated: the SubjectAccessReview is made only once every other check passes",
            ));
        }
        let known = ctx.table.known(&name, &uid);
        let written = match verdict.decision() {
            Decision::Approve => {
                if let Some(hold) = ctx.node_hold(&input.username) {
                    return Ok(ctx
                        .explain(&current, &verdict, Some(Held::Node(&hold)))
                        .await);
                }
                let valve = ctx.valve_state();
                if valve.closed {
                    return Ok(ctx
                        .explain(&current, &verdict, Some(Held::Valve(&valve)))
                        .await);
                }
                if ctx.dry_run {
                    return Ok(ctx.explain(&current, &verdict, None).await);
                }
                ctx.write(&current, Decision::Approve, &verdict).await?
            }
            Decision::Deny => {
                if ctx.dry_run {
                    return Ok(ctx.explain(&current, &verdict, None).await);
                }
                ctx.write(&current, Decision::Deny, &verdict).await?
            }
            Decision::Pending => {
                let mut action = ctx.explain(&current, &verdict, None).await;
                // Any SAN pending only because the facts predate the CSR (checks 8/9)
                // asks the agent for fresh ones now, even when another check (say a
                // conflict) also holds the CSR: the fresh report turns that SAN into a
                // decision instead of a wait for the next heartbeat.
                if verdict.waits_on_predating_facts()
                    && let Some(node) = verdict.node()
                    && let Some(wait) = ctx.challenge(node)
                {
                    action = Action::requeue(wait);
                }
                return Ok(action);
            }
            Decision::Ignore => return Ok(Action::await_change()),
        };
        match written {
            Written::Ok => {
                ctx.decided(&current, known, &verdict).await;
                return Ok(Action::await_change());
            }
            Written::NotActing => return Ok(Action::await_change()),
            Written::Changed(None) => {
                ctx.table.forget(&name);
                return Ok(Action::await_change());
            }
            Written::Changed(Some(fresh)) => current = fresh,
        }
    }
    Err(ReconcileError::Contended(MAX_ATTEMPTS))
}

/// After a failed reconcile: count it and retry with per-CSR exponential backoff.
pub(crate) fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let name = csr.name_any();
    ctx.metrics.reconcile_error(error.metric_label());
    let failures = ctx.table.failed(&name);
    let exponent = failures.saturating_sub(1).min(16);
    let mut delay = RETRY_MIN.saturating_mul(1 << exponent).min(RETRY_MAX);
    if let Some(at_least) = error.retry_after() {
        delay = delay.max(at_least);
    }
    let node = ctx.table.node_of(&name);
    tracing::warn!(csr = %name, node = node.as_deref().unwrap_or("-"), %error, failures, retry_in = ?delay, "decision failed; retrying");
    Action::requeue(delay)
}

// === impl Context ===

impl Context {
    /// The core's verdict, under one consistent view of attestations, Nodes and Services
    /// (read locks, in that order, released before any `.await`).
    fn decide(&self, input: &CsrInput, parsed: &ParseResult) -> Verdict {
        let now = self.store.now();
        let attestations = self.store.read();
        let nodes = self.nodes.read();
        let services = self.services.read();
        let observed = Observed {
            attestations: &*attestations,
            nodes: Some(&*nodes),
            services: Some(&*services),
        };
        decide_parsed(input, parsed.as_ref(), observed, &self.policy, now)
    }

    /// The per-node flood valve for `requestor` (the CSR's `spec.username`, which the API
    /// server set): its hold when the requestor has more pending CSRs than the bound, then
    /// announced once (a Warning Event on its Node, or on the Lease for a requestor that is
    /// not a node). Every approvable CSR of a held requestor is held, not just the newest:
    /// approving any lets the flood drain one approval at a time, and an honest kubelet
    /// waits on one CSR only.
    pub(crate) fn node_hold(&self, requestor: &str) -> Option<NodeHold> {
        let pending = self.table.pending_by(requestor);
        let bound = self.table.per_requestor_bound();
        if pending <= bound {
            return None;
        }
        let hold = NodeHold {
            requestor: requestor.to_owned(),
            node: requestor.strip_prefix(NODE_CN_PREFIX).map(str::to_owned),
            pending,
            bound,
        };
        let first = self
            .held_requestors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(requestor.to_owned());
        if first {
            self.announce_node_hold(&hold, true);
        }
        Some(hold)
    }

    /// Requestors held before and now back within the per-node bound: forgotten,
    /// announced, and returned so that their CSRs are decided again.
    pub(crate) fn release_requestors(&self) -> Vec<String> {
        let bound = self.table.per_requestor_bound();
        let released: Vec<String> = {
            let mut held = self
                .held_requestors
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let released: Vec<String> = held
                .iter()
                .filter(|r| self.table.pending_by(r) <= bound)
                .cloned()
                .collect();
            for r in &released {
                held.remove(r);
            }
            released
        };
        for requestor in &released {
            let hold = NodeHold {
                requestor: requestor.clone(),
                node: requestor.strip_prefix(NODE_CN_PREFIX).map(str::to_owned),
                pending: self.table.pending_by(requestor),
                bound,
            };
            self.announce_node_hold(&hold, false);
        }
        released
    }

    /// Logs and publishes a per-node hold (`held`) or its end, on the Node (or the Lease).
    fn announce_node_hold(&self, hold: &NodeHold, held: bool) {
        let who = hold.node.as_deref().unwrap_or(&hold.requestor);
        let (reason, note) = if held {
            tracing::warn!(
                requestor = %hold.requestor,
                pending = hold.pending,
                bound = hold.bound,
                "per-node flood valve: approvals for this requestor are held"
            );
            (reasons::NODE_APPROVALS_HELD, explain::node_hold_note(hold))
        } else {
            tracing::info!(
                requestor = %hold.requestor,
                pending = hold.pending,
                bound = hold.bound,
                "per-node flood valve: approvals for this requestor resume"
            );
            (
                reasons::NODE_APPROVALS_RESUMED,
                format!(
                    "Approvals for {who} resumed: {} kubelet-serving CSRs from {} are pending, within the per-node bound of {}",
                    hold.pending, hold.requestor, hold.bound
                ),
            )
        };
        if !self.leadership.may_act() {
            return;
        }
        let regarding = match &hold.node {
            Some(node) => ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(node.clone()),
                ..ObjectReference::default()
            },
            None => self.own_object.clone(),
        };
        self.spawn_event(regarding, reason, held, note);
    }

    /// Publishes an Event in the background (counted; a failure is logged).
    fn spawn_event(
        &self,
        regarding: ObjectReference,
        reason: &'static str,
        warning: bool,
        note: String,
    ) {
        let client = self.client.clone();
        let reporter = self.reporter.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            match explain::publish(&client, &reporter, &regarding, reason, warning, &note).await {
                Ok(()) => metrics.event("published"),
                Err(error) => {
                    metrics.event("failed");
                    tracing::warn!(%error, reason, "publishing the flood valve Event failed");
                }
            }
        });
    }

    /// The cluster-wide flood valve against the pending count (at most the per-node bound
    /// counted per requestor); announces a change.
    pub(crate) fn valve_state(&self) -> ValveState {
        let state = self.valve.update(self.table.capped_len(), self.nodes.len());
        self.metrics.flood_valve_closed.set(i64::from(state.closed));
        self.metrics
            .flood_valve_bound
            .set(i64::try_from(state.bound).unwrap_or(i64::MAX));
        if let Some(change) = state.change {
            self.announce_valve(change, &state);
        }
        state
    }

    fn announce_valve(&self, change: ValveChange, state: &ValveState) {
        let (reason, warning, note) = match change {
            ValveChange::Closed => {
                tracing::warn!(
                    pending = state.pending,
                    bound = state.bound,
                    "flood valve closed: approvals stop until the pending kubelet-serving CSRs are back within the bound"
                );
                (
                    reasons::FLOOD_VALVE_CLOSED,
                    true,
                    format!(
                        "Approvals stopped: {} kubelet-serving CSRs are pending, more than the bound of {} (at most {} counted per node). Inspect them (kubectl get csr) and delete the unwanted ones; see docs/operations.md#floodvalveclosed",
                        state.pending,
                        state.bound,
                        self.table.per_requestor_bound()
                    ),
                )
            }
            ValveChange::Opened => {
                tracing::info!(
                    pending = state.pending,
                    bound = state.bound,
                    "flood valve opened: approvals resume"
                );
                self.triggers.everything();
                (
                    reasons::FLOOD_VALVE_OPENED,
                    false,
                    format!(
                        "Approvals resumed: {} kubelet-serving CSRs are pending, within the bound of {}",
                        state.pending, state.bound
                    ),
                )
            }
        };
        if !self.leadership.may_act() {
            return;
        }
        self.spawn_event(self.own_object.clone(), reason, warning, note);
    }

    /// Records the verdict's state; when it changed, counts it, logs it and publishes its
    /// Event. Returns the action for a CSR left undecided.
    async fn explain(
        &self,
        csr: &CertificateSigningRequest,
        verdict: &Verdict,
        held: Option<Held<'_>>,
    ) -> Action {
        let explanation = explain::explain(verdict, held, self.dry_run);
        let name = csr.name_any();
        let uid = csr.uid().unwrap_or_default();
        let waits = explanation.outcome != Outcome::Approve || self.dry_run;
        let recorded = self.table.record(&name, &uid, explanation.key, waits);
        if recorded.changed {
            self.announce(csr, verdict, &explanation).await;
        } else {
            tracing::debug!(csr = %name, node = verdict.node().unwrap_or("-"), reason = explanation.reason, "unchanged");
        }
        Action::requeue(self.pending_resync)
    }

    /// Counts, logs and publishes one explained state.
    async fn announce(
        &self,
        csr: &CertificateSigningRequest,
        verdict: &Verdict,
        explanation: &Explanation,
    ) {
        let name = csr.name_any();
        let node = verdict.node().unwrap_or("-");
        self.metrics.decide(
            explanation.outcome.as_str(),
            explanation.reason,
            self.dry_run,
        );
        match explanation.outcome {
            Outcome::Approve | Outcome::Deny => tracing::info!(
                csr = %name, node, decision = explanation.outcome.as_str(), reason = explanation.reason,
                dry_run = self.dry_run, "{}", explanation.note
            ),
            Outcome::Pending | Outcome::Held => tracing::info!(
                csr = %name, node, decision = explanation.outcome.as_str(), reason = explanation.reason,
                "{}", explanation.note
            ),
        }
        if !self.leadership.may_act() {
            return;
        }
        let regarding = csr.object_ref(&());
        match explain::publish(
            &self.client,
            &self.reporter,
            &regarding,
            explanation.reason,
            explanation.warning,
            &explanation.note,
        )
        .await
        {
            Ok(()) => self.metrics.event("published"),
            Err(error) => {
                self.metrics.event("failed");
                tracing::warn!(csr = %name, node, %error, reason = explanation.reason, "publishing the Event failed; it is retried with the next decision");
                self.table
                    .unrecord(&name, csr.uid().as_deref().unwrap_or_default());
            }
        }
    }

    /// Writes `decision` to the CSR's `/approval` subresource, with the CSR's
    /// resourceVersion as precondition: a stale write gets 409, and the CSR is read again.
    async fn write(
        &self,
        csr: &CertificateSigningRequest,
        decision: Decision,
        verdict: &Verdict,
    ) -> Result<Written, ReconcileError> {
        let name = csr.name_any();
        let label = decision.as_str();
        let condition = match decision {
            Decision::Deny => {
                let (reason, message) = explain::denial(verdict, &self.replica);
                condition("Denied", reason, message)
            }
            _ => condition(
                "Approved",
                APPROVED_REASON.to_owned(),
                explain::approval_message(verdict, &self.replica),
            ),
        };
        let mut body = csr.clone();
        body.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(condition);
        // Right before the write: a replica whose Lease may have passed to another stops here.
        if !self.leadership.may_act() {
            return Ok(Written::NotActing);
        }
        match self
            .csrs
            .replace_subresource::<CertificateSigningRequest>(
                "approval",
                &name,
                &PostParams::default(),
                &body,
            )
            .await
        {
            Ok(_) => {
                self.metrics.write(label, "ok");
                Ok(Written::Ok)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.metrics.write(label, "conflict");
                tracing::info!(csr = %name, decision = label, "the CSR changed underneath; reading it again");
                let fresh = match self.csrs.get_opt(&name).await {
                    Ok(fresh) => fresh,
                    Err(error) => return Err(ReconcileError::Reread(error)),
                };
                let fresh = fresh.filter(|f| f.uid() == csr.uid() && facts(f).in_scope());
                Ok(Written::Changed(fresh.map(Arc::new)))
            }
            Err(source) => {
                self.metrics.write(label, "error");
                Err(ReconcileError::Write {
                    decision: label,
                    source,
                })
            }
        }
    }

    /// After a successful write: metrics, forget the CSR, and the Event. `known` is what the
    /// table knew before the write.
    async fn decided(
        &self,
        csr: &CertificateSigningRequest,
        known: Option<Decided>,
        verdict: &Verdict,
    ) {
        let name = csr.name_any();
        let now = self.store.now();
        self.table.forget(&name);
        let explanation = explain::explain(verdict, None, false);
        if verdict.decision() == Decision::Approve {
            let created = csr.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let start = creation_instant(created, known.map(|k| k.first_seen));
            if let Some(start) = start {
                self.metrics
                    .approval_latency
                    .observe(seconds(now.duration_since(start)));
            }
            if known.is_some_and(|k| k.waited)
                && let Some(supporting) = verdict.supporting_attestation()
            {
                self.metrics
                    .attestation_to_approval
                    .observe(seconds(now.duration_since(supporting.received_at)));
            }
        }
        self.announce(csr, verdict, &explanation).await;
    }

    /// Challenges `node`'s agent for a fresh report, at most once per second per node (the
    /// answer arrives as an attestation change and triggers the node's CSRs). Returns when
    /// to decide again if the challenge had to wait.
    fn challenge(&self, node: &str) -> Option<Duration> {
        let now = Instant::now();
        {
            let mut challenged = self
                .challenged
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(last) = challenged.get(node) {
                let since = now.duration_since(*last);
                if since < CHALLENGE_INTERVAL {
                    return Some(CHALLENGE_INTERVAL - since);
                }
            }
            if challenged.len() >= MAX_CHALLENGED_NODES {
                challenged.retain(|_, at| now.duration_since(*at) < CHALLENGE_INTERVAL);
            }
            challenged.insert(node.to_owned(), now);
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let timeout = self.challenge_timeout;
        let node = node.to_owned();
        tokio::spawn(async move {
            match store.challenge(&node, timeout).await {
                Ok(_) => {
                    metrics.challenge("answered");
                    tracing::debug!(node = %node, "challenge answered");
                }
                Err(error) => {
                    metrics.challenge(challenge_label(&error));
                    tracing::info!(node = %node, %error, "challenge not answered; waiting for the agent's next report");
                }
            }
        });
        None
    }
}

fn challenge_label(error: &crate::store::ChallengeError) -> &'static str {
    use crate::store::ChallengeError;
    match error {
        ChallengeError::NoStream { .. } => "no_stream",
        ChallengeError::Busy { .. } => "busy",
        ChallengeError::StreamClosed { .. } => "stream_closed",
        ChallengeError::Timeout { .. } => "timeout",
    }
}

fn condition(type_: &str, reason: String, message: String) -> CertificateSigningRequestCondition {
    CertificateSigningRequestCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason),
        message: Some(message),
        last_update_time: Some(Time(Timestamp::now())),
        last_transition_time: None,
    }
}

/// When the CSR was created, as precisely as known: `creationTimestamp` has one-second
/// resolution, so when this replica saw the CSR within that second, that sighting is the
/// better (still conservative) estimate.
pub(crate) fn creation_instant(
    created: Option<Timestamp>,
    first_seen: Option<Timestamp>,
) -> Option<Timestamp> {
    match (created, first_seen) {
        (Some(c), Some(f)) if f >= c && f.duration_since(c) < SignedDuration::from_secs(1) => {
            Some(f)
        }
        (Some(c), _) => Some(c),
        (None, f) => f,
    }
}

fn seconds(d: SignedDuration) -> f64 {
    d.as_secs_f64().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_is_refined_by_a_sighting_within_its_second() {
        let at = |ms: i64| Timestamp::from_millisecond(ms).expect("ts");
        assert_eq!(
            creation_instant(Some(at(1_000)), Some(at(1_400))),
            Some(at(1_400))
        );
        assert_eq!(
            creation_instant(Some(at(1_000)), Some(at(9_000))),
            Some(at(1_000)),
            "seen long after (a restart): the creation time stands"
        );
        assert_eq!(creation_instant(None, Some(at(5))), Some(at(5)));
        assert_eq!(creation_instant(None, None), None);
    }
}
