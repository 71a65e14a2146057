//! What every decision shares — the API, one event [`Recorder`] for the process, the
//! controller's state, its settings and its metrics — and the two reads of a decision:
//! observing a CSR and deciding on it with the core.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::Recorder;
use kube::{Api, ResourceExt as _};
use rubber_stamp_core::{
    AccessReview, CsrInput, Observed, Ownership, Policy, Verdict, decide_parsed,
};
use tokio::time::Instant;

use super::leader::Leadership;
use super::nodes::NodeIndex;
use super::review::AccessReviews;
use super::services::ServiceIndex;
use super::table::{CsrTable, ParseResult};
use super::triggers::Triggers;
use super::valve::FloodValve;
use crate::k8s;
use crate::metrics::ControllerMetrics;
use crate::store::AttestationStore;

/// Everything a reconcile reads and writes.
pub(crate) struct Context {
    /// The API server.
    pub(crate) api: Apis,
    /// Every Event of this replica, through one recorder: kube-runtime folds repeats of
    /// an Event into a series on it.
    pub(crate) recorder: Recorder,
    /// What the controller knows and remembers.
    pub(crate) state: State,
    /// How it decides and acts.
    pub(crate) settings: Settings,
    /// Its metrics.
    pub(crate) metrics: ControllerMetrics,
}

/// The API server: CSRs (watch, `/approval`) and SubjectAccessReviews.
pub(crate) struct Apis {
    /// CertificateSigningRequests.
    pub(crate) csrs: Api<CertificateSigningRequest>,
    /// Check 14's reviews, with their cache.
    pub(crate) reviews: AccessReviews,
}

/// What the controller knows (attestations, Nodes, Services, CSRs) and remembers (valves,
/// challenges, leadership).
pub(crate) struct State {
    /// Attestations, from this replica's own gRPC server.
    pub(crate) store: AttestationStore,
    /// The Node objects.
    pub(crate) nodes: Arc<NodeIndex>,
    /// The Services and ServiceCIDRs.
    pub(crate) services: Arc<ServiceIndex>,
    /// Undecided CSRs: parsed requests, first sightings, explained states.
    pub(crate) table: Arc<CsrTable>,
    /// The cluster-wide flood valve.
    pub(crate) valve: FloodValve,
    /// Requestors whose approvals the per-node valve holds (announced once).
    pub(crate) held_requestors: Mutex<HashSet<String>>,
    /// When each node was last challenged.
    pub(crate) challenged: Mutex<HashMap<String, Instant>>,
    /// Whether (and until when) this replica acts.
    pub(crate) leadership: Leadership,
    /// Asks for decisions on CSRs.
    pub(crate) triggers: Triggers,
}

/// How the controller decides and acts; fixed for its life.
pub(crate) struct Settings {
    /// The policy.
    pub(crate) policy: Arc<Policy>,
    /// Decide and explain, never write.
    pub(crate) dry_run: bool,
    /// Longest time between two decisions on a pending CSR.
    pub(crate) pending_resync: Duration,
    /// How long a challenge stays valid.
    pub(crate) challenge_timeout: Duration,
    /// This replica's name (in condition messages).
    pub(crate) replica: String,
    /// Where the valves' Events go: the Lease (or the Pod without election).
    pub(crate) own_object: ObjectReference,
}

/// One CSR as this replica sees it right now: the core's input (with the first sighting
/// on this replica's clock) and the parsed request.
pub(crate) struct Observation {
    /// The CSR object.
    pub(crate) csr: Arc<CertificateSigningRequest>,
    /// What the core reads of it.
    pub(crate) input: CsrInput,
    /// Its request, parsed once per CSR.
    pub(crate) parsed: Arc<ParseResult>,
}

/// Why a CSR is not observed for a decision now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotNow {
    /// Another signer, or already decided: it is forgotten.
    OutOfScope,
    /// The first Node list is not complete; it triggers every CSR when it is.
    NodesNotListed,
    /// This replica does not act; a new leader decides on everything when it starts.
    NotActing,
}

// === impl Context ===

impl Context {
    /// Observes `csr`: in scope, the Nodes listed, the request parsed (standbys parse too, so
    /// a new leader decides at once), this replica acting.
    pub(crate) fn observe(
        &self,
        csr: Arc<CertificateSigningRequest>,
    ) -> Result<Observation, NotNow> {
        let mut input = k8s::csr_facts(&csr);
        if !input.in_scope() {
            self.state.table.forget(&csr.name_any());
            self.state.store.proofs().forget_csr(&csr.name_any());
            return Err(NotNow::OutOfScope);
        }
        if !self.state.nodes.is_ready() {
            return Err(NotNow::NodesNotListed);
        }
        let parsed = self.state.table.parsed(&csr, &self.settings.policy);
        if !self.state.leadership.may_act() {
            return Err(NotNow::NotActing);
        }
        // "Received after the CSR" is judged on this replica's clock: against its own first
        // sighting, not the API server's creationTimestamp.
        input.seen_at = self
            .state
            .table
            .first_seen(&input.name, csr.uid().as_deref().unwrap_or_default());
        Ok(Observation { csr, input, parsed })
    }

    /// The core's verdict on `observation` with check 14's `review`, under one consistent
    /// view of attestations, Nodes and Services (read locks, in that order, released before
    /// any `.await`).
    pub(crate) fn decide(&self, observation: &Observation, review: &AccessReview) -> Verdict {
        let state = &self.state;
        let now = state.store.now();
        let attestations = state.store.read();
        let nodes = state.nodes.read();
        let services = state.services.read();
        let observed = Observed {
            attestations: &*attestations,
            nodes: Some(&*nodes),
            services: Some(&*services),
            access_review: Some(review),
            ownership: Some(Ownership {
                lookup: state.store.proofs(),
                port: state.store.proofs().config().port,
            }),
        };
        decide_parsed(
            &observation.input,
            observation.parsed.as_ref().as_ref(),
            observed,
            &self.settings.policy,
            now,
        )
    }
}

// === impl Observation ===

impl Observation {
    /// The same CSR, as the API server returned it after a conflict.
    pub(crate) fn refreshed(self, csr: Arc<CertificateSigningRequest>) -> Self {
        let mut input = k8s::csr_facts(&csr);
        input.seen_at = self.input.seen_at;
        Self {
            csr,
            input,
            parsed: self.parsed,
        }
    }
}
