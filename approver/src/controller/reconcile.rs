//! One decision on one CSR, in one direction: **observe** (the CSR in scope, its request
//! parsed once, its first sighting on this replica's clock), **decide** (the core, against
//! the live attestations, Nodes and Services; check 14's SubjectAccessReview is an input,
//! made once every other check passes), **plan** (a pure function of the verdict, the flood
//! valves and the settings), **act** (approve or deny through `/approval`, or explain, and
//! challenge the agent when fresh facts would decide).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::ResourceExt as _;
use kube::runtime::controller::Action;
use rubber_stamp_core::{AccessReview, Decision};

use super::act::Written;
use super::context::{Context, NotNow, Observation};
use super::plan::{Step, plan};

/// How often a decision is retried when its CSR changes underneath (409) before the
/// reconcile fails and is retried with backoff.
const MAX_ATTEMPTS: u32 = 3;
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

/// Decides on one CSR and acts.
pub(crate) async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = csr.name_any();
    ctx.metrics.reconciles.inc();
    let action = match ctx.observe(csr) {
        Ok(observation) => decide_and_act(observation, &ctx).await?,
        Err(NotNow::OutOfScope | NotNow::NodesNotListed | NotNow::NotActing) => {
            Action::await_change()
        }
    };
    ctx.state.table.succeeded(&name);
    Ok(action)
}

async fn decide_and_act(
    mut observation: Observation,
    ctx: &Arc<Context>,
) -> Result<Action, ReconcileError> {
    for _ in 0..MAX_ATTEMPTS {
        // Decide; check 14 only once every other check passes.
        let mut verdict = ctx.decide(&observation, &AccessReview::NotMade);
        if verdict.awaits_access_review() {
            let review = ctx
                .api
                .reviews
                .selfnodeserver(&observation.input, &ctx.metrics)
                .await
                .map_err(ReconcileError::AccessReview)?;
            verdict = ctx.decide(&observation, &review);
        }
        // Check 15: probe the SANs it wants proven; each probe decides again when it ends.
        // Not for a CSR about to be approved (a preferred SAN that passed unproven).
        let probe_wait = (verdict.decision() != Decision::Approve)
            .then(|| ctx.probe(&observation, &verdict))
            .flatten();
        // Plan: the valves are asked only about approvable CSRs.
        let hold = (verdict.decision() == Decision::Approve)
            .then(|| ctx.holds(&observation.input.username))
            .flatten();
        let plan = plan(
            &verdict,
            hold.as_ref().map(|h| h.as_held()),
            ctx.settings.dry_run,
        );
        // Act.
        let known = ctx.state.table.known(
            &observation.input.name,
            observation.csr.uid().as_deref().unwrap_or_default(),
        );
        let written = match plan.step {
            Step::Nothing => return Ok(Action::await_change()),
            Step::Explain(explanation) => {
                ctx.explain(&observation.csr, &verdict, &explanation).await;
                let wait = plan.challenge.and_then(|node| ctx.challenge(&node));
                let wait = [wait, probe_wait, Some(ctx.settings.pending_resync)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(ctx.settings.pending_resync);
                return Ok(Action::requeue(wait));
            }
            Step::Write(decision) => ctx.write(&observation.csr, decision, &verdict).await?,
        };
        match written {
            Written::Ok => {
                ctx.decided(&observation, known, &verdict).await;
                return Ok(Action::await_change());
            }
            Written::NotActing => return Ok(Action::await_change()),
            Written::Changed(None) => {
                ctx.state.table.forget(&observation.input.name);
                return Ok(Action::await_change());
            }
            Written::Changed(Some(fresh)) => observation = observation.refreshed(fresh),
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
    let failures = ctx.state.table.failed(&name);
    let exponent = failures.saturating_sub(1).min(16);
    let mut delay = RETRY_MIN.saturating_mul(1 << exponent).min(RETRY_MAX);
    if let Some(at_least) = error.retry_after() {
        delay = delay.max(at_least);
    }
    let node = ctx.state.table.node_of(&name);
    tracing::warn!(csr = %name, node = node.as_deref().unwrap_or("-"), %error, failures, retry_in = ?delay, "decision failed; retrying");
    Action::requeue(delay)
}
