//! Acting on a plan: the only part of the controller that writes. The `/approval` write
//! with the CSR's resourceVersion (a 409 reads the CSR again), Events through the process's
//! one [`Recorder`](kube::runtime::events::Recorder), a challenge fired and forgotten (its
//! answer is a report like any other), and the flood valves' announcements.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType};
use kube::{Resource as _, ResourceExt as _};
use rubber_stamp_core::{CheckName, Decision, NODE_CN_PREFIX, Reason, Verdict};
use tokio::time::Instant;

use super::context::{Context, Observation};
use super::explain::{
    self, APPROVED_REASON, Explanation, Held, MAX_NOTE_BYTES, NodeHold, Outcome, reasons,
};
use super::reconcile::ReconcileError;
use super::table::Decided;
use super::valve::{ValveChange, ValveState};
use crate::k8s;
use crate::store::ChallengeError;

/// A node is challenged at most once per this interval (the creation timestamp's
/// resolution: an answer within it may still predate the CSR).
pub(crate) const CHALLENGE_INTERVAL: Duration = Duration::from_secs(1);
/// Most nodes whose last challenge time is remembered.
const MAX_CHALLENGED_NODES: usize = 4096;
/// The `action` of every Event.
const ACTION: &str = "Decide";

/// The result of writing a decision.
pub(crate) enum Written {
    /// Done.
    Ok,
    /// 409: the CSR changed; here it is, fresh from the API server (if still ours).
    Changed(Option<Arc<CertificateSigningRequest>>),
    /// This replica may no longer act.
    NotActing,
}

// === impl Context ===

impl Context {
    /// Writes `decision` to the CSR's `/approval` subresource, with the CSR's
    /// resourceVersion as precondition: a stale write gets 409, and the CSR is read again.
    pub(crate) async fn write(
        &self,
        csr: &CertificateSigningRequest,
        decision: Decision,
        verdict: &Verdict,
    ) -> Result<Written, ReconcileError> {
        let name = csr.name_any();
        let label = decision.as_str();
        let replica = &self.settings.replica;
        let condition = match decision {
            Decision::Deny => {
                let (reason, message) = explain::denial(verdict, replica);
                condition("Denied", reason, message)
            }
            _ => condition(
                "Approved",
                APPROVED_REASON.to_owned(),
                explain::approval_message(verdict, replica),
            ),
        };
        let mut body = csr.clone();
        body.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(condition);
        // Right before the write: a replica whose Lease may have passed to another stops here.
        if !self.state.leadership.may_act() {
            return Ok(Written::NotActing);
        }
        let csrs = &self.api.csrs;
        match csrs
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
                let fresh = csrs.get_opt(&name).await.map_err(ReconcileError::Reread)?;
                let fresh = fresh.filter(|f| f.uid() == csr.uid() && k8s::csr_facts(f).in_scope());
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

    /// After a successful write: forget the CSR, count it (latencies on this replica's
    /// clock), and the Event. `known` is what the table knew before the write.
    pub(crate) async fn decided(
        &self,
        observation: &Observation,
        known: Option<Decided>,
        verdict: &Verdict,
    ) {
        let now = self.state.store.now();
        self.state.table.forget(&observation.input.name);
        if verdict.decision() == Decision::Approve {
            if let Some(known) = known {
                self.metrics
                    .approval_latency
                    .observe(seconds(now.duration_since(known.first_seen)));
            }
            if known.is_some_and(|k| k.waited)
                && let Some(supporting) = verdict.supporting_attestation()
            {
                self.metrics
                    .attestation_to_approval
                    .observe(seconds(now.duration_since(supporting.received_at)));
            }
        }
        let explanation = explain::explain(verdict, None, false);
        self.announce(&observation.csr, verdict, &explanation).await;
        self.state
            .store
            .proofs()
            .forget_csr(&observation.input.name);
        let unproven = verdict.unproven_allowed();
        if verdict.decision() == Decision::Approve && !unproven.is_empty() {
            self.metrics.proof.unproven_approvals.inc();
            let detail = verdict
                .check(CheckName::IpSansOwned)
                .map(|c| c.detail().to_owned())
                .unwrap_or_default();
            let listed: Vec<String> = unproven.iter().map(ToString::to_string).collect();
            let note = format!(
                "approved with {} not proven by the network (ownershipProof `preferred`): {detail}",
                listed.join(", ")
            );
            tracing::warn!(csr = %observation.input.name, node = verdict.node().unwrap_or("-"), "{note}");
            if let Err(error) = self
                .publish(
                    &observation.csr.object_ref(&()),
                    Reason::OwnershipUnproven.as_str(),
                    true,
                    &note,
                )
                .await
            {
                tracing::warn!(csr = %observation.input.name, %error, "publishing the OwnershipUnproven Event failed");
            }
        }
    }

    /// Records a CSR's explained state; when it changed, counts it, logs it and publishes
    /// its Event.
    pub(crate) async fn explain(
        &self,
        csr: &CertificateSigningRequest,
        verdict: &Verdict,
        explanation: &Explanation,
    ) {
        let name = csr.name_any();
        let uid = csr.uid().unwrap_or_default();
        let waits = explanation.outcome != Outcome::Approve || self.settings.dry_run;
        let recorded = self.state.table.record(&name, &uid, explanation.key, waits);
        if recorded.changed {
            self.announce(csr, verdict, explanation).await;
        } else {
            tracing::debug!(csr = %name, node = verdict.node().unwrap_or("-"), reason = explanation.reason, "unchanged");
        }
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
        let dry_run = self.settings.dry_run;
        self.metrics
            .decide(explanation.outcome.as_str(), explanation.reason, dry_run);
        match explanation.outcome {
            Outcome::Approve | Outcome::Deny => tracing::info!(
                csr = %name, node, decision = explanation.outcome.as_str(), reason = explanation.reason,
                dry_run, "{}", explanation.note
            ),
            Outcome::Pending | Outcome::Held => tracing::info!(
                csr = %name, node, decision = explanation.outcome.as_str(), reason = explanation.reason,
                "{}", explanation.note
            ),
        }
        if !self.state.leadership.may_act() || explain::without_event(explanation.reason) {
            return;
        }
        let regarding = csr.object_ref(&());
        if let Err(error) = self
            .publish(
                &regarding,
                explanation.reason,
                explanation.warning,
                &explanation.note,
            )
            .await
        {
            tracing::warn!(csr = %name, node, %error, reason = explanation.reason, "publishing the Event failed; it is retried with the next decision");
            self.state
                .table
                .unrecord(&name, csr.uid().as_deref().unwrap_or_default());
        }
    }

    /// Publishes one Event through the process's recorder, and counts it.
    async fn publish(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        warning: bool,
        note: &str,
    ) -> Result<(), kube::Error> {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(explain::truncate(note.to_owned(), MAX_NOTE_BYTES)),
            action: ACTION.to_owned(),
            secondary: None,
        };
        let published = self.recorder.publish(&event, regarding).await;
        self.metrics.event(if published.is_ok() {
            "published"
        } else {
            "failed"
        });
        published
    }

    /// Publishes an Event in the background (a failure is counted and logged).
    fn spawn_event(
        self: &Arc<Self>,
        regarding: ObjectReference,
        reason: &'static str,
        warning: bool,
        note: String,
    ) {
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = ctx.publish(&regarding, reason, warning, &note).await {
                tracing::warn!(%error, reason, "publishing the flood valve Event failed");
            }
        });
    }

    /// Challenges `node`'s agent for a fresh report, at most once per second per node, and
    /// forgets it: the answer is a report like any other, whose attestation change triggers
    /// the node's CSRs. Returns when to decide again if the challenge had to wait.
    pub(crate) fn challenge(&self, node: &str) -> Option<Duration> {
        let now = Instant::now();
        {
            let mut challenged = self
                .state
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
        match self
            .state
            .store
            .challenge(node, self.settings.challenge_timeout)
        {
            Ok(sent) => {
                self.metrics.challenge("sent");
                for _ in 0..sent.expired {
                    self.metrics.challenge("expired");
                }
                tracing::debug!(node, "challenged");
            }
            Err(error) => {
                self.metrics.challenge(challenge_label(&error));
                tracing::info!(node, %error, "could not challenge; waiting for the agent's next report");
            }
        }
        None
    }

    /// The flood valve holding approvals of `requestor` (the CSR's `spec.username`, which
    /// the API server set) back, if one does: the requestor's own bound first, then the
    /// cluster-wide one. A hold is announced when it begins.
    pub(crate) fn holds(self: &Arc<Self>, requestor: &str) -> Option<Hold> {
        if let Some(hold) = self.node_hold(requestor) {
            return Some(Hold::Node(hold));
        }
        let valve = self.valve_state();
        valve.closed.then_some(Hold::Valve(valve))
    }

    /// The per-node flood valve for `requestor`: its hold when the requestor has more
    /// pending CSRs than the bound, then announced once (a Warning Event on its Node, or on
    /// the Lease for a requestor that is not a node). Every approvable CSR of a held
    /// requestor is held, not just the newest: approving any lets the flood drain one
    /// approval at a time, and an honest kubelet waits on one CSR only.
    fn node_hold(self: &Arc<Self>, requestor: &str) -> Option<NodeHold> {
        let table = &self.state.table;
        let pending = table.pending_by(requestor);
        let bound = table.per_requestor_bound();
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
            .state
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
    pub(crate) fn release_requestors(self: &Arc<Self>) -> Vec<String> {
        let table = &self.state.table;
        let bound = table.per_requestor_bound();
        let released: Vec<String> = {
            let mut held = self
                .state
                .held_requestors
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let released: Vec<String> = held
                .iter()
                .filter(|r| table.pending_by(r) <= bound)
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
                pending: table.pending_by(requestor),
                bound,
            };
            self.announce_node_hold(&hold, false);
        }
        released
    }

    /// Logs and publishes a per-node hold (`held`) or its end, on the Node (or the Lease).
    fn announce_node_hold(self: &Arc<Self>, hold: &NodeHold, held: bool) {
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
        if !self.state.leadership.may_act() {
            return;
        }
        let regarding = match &hold.node {
            Some(node) => ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(node.clone()),
                ..ObjectReference::default()
            },
            None => self.settings.own_object.clone(),
        };
        self.spawn_event(regarding, reason, held, note);
    }

    /// The cluster-wide flood valve against the pending count (at most the per-node bound
    /// counted per requestor); announces a change.
    pub(crate) fn valve_state(self: &Arc<Self>) -> ValveState {
        let table = &self.state.table;
        let state = self
            .state
            .valve
            .update(table.capped_len(), self.state.nodes.len());
        self.metrics.flood_valve_closed.set(i64::from(state.closed));
        self.metrics
            .flood_valve_bound
            .set(i64::try_from(state.bound).unwrap_or(i64::MAX));
        if let Some(change) = state.change {
            self.announce_valve(change, &state);
        }
        state
    }

    fn announce_valve(self: &Arc<Self>, change: ValveChange, state: &ValveState) {
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
                        self.state.table.per_requestor_bound()
                    ),
                )
            }
            ValveChange::Opened => {
                tracing::info!(
                    pending = state.pending,
                    bound = state.bound,
                    "flood valve opened: approvals resume"
                );
                self.state.triggers.everything();
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
        if !self.state.leadership.may_act() {
            return;
        }
        self.spawn_event(self.settings.own_object.clone(), reason, warning, note);
    }
}

/// A flood valve's hold on an approvable CSR.
#[derive(Clone, Debug)]
pub(crate) enum Hold {
    /// The requestor's own bound.
    Node(NodeHold),
    /// The cluster-wide bound.
    Valve(ValveState),
}

impl Hold {
    /// As the explanation takes it.
    pub(crate) fn as_held(&self) -> Held<'_> {
        match self {
            Self::Node(hold) => Held::Node(hold),
            Self::Valve(valve) => Held::Valve(valve),
        }
    }
}

fn challenge_label(error: &ChallengeError) -> &'static str {
    match error {
        ChallengeError::NoStream { .. } => "no_stream",
        ChallengeError::Busy { .. } => "busy",
        ChallengeError::StreamClosed { .. } => "stream_closed",
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

fn seconds(d: SignedDuration) -> f64 {
    d.as_secs_f64().max(0.0)
}
