//! The approver's Prometheus registry and metric families, served at `/metrics`.
//!
//! Every family lives in a per-component struct ([`GrpcMetrics`], …) that registers itself
//! under its own prefix in [`Metrics::new`]. To add a component's metrics (the controller's,
//! say): write a `ControllerMetrics` with a `register(&mut Registry) -> Self`, add a field
//! here and one line to [`Metrics::new`]. All names start with `rubber_stamp_`.

use std::fmt;

pub mod proof;
pub mod tls;

pub use proof::ProofMetrics;
pub use tls::TlsMetrics;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of `rubber_stamp_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfoLabels {
    /// The binary's name.
    pub component: &'static str,
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
}

/// This build's `rubber_stamp_build_info` labels.
pub const BUILD_INFO: BuildInfoLabels = BuildInfoLabels {
    component: "rubber-stamp-approver",
    version: env!("CARGO_PKG_VERSION"),
};

/// Every metric the approver exports.
pub struct Metrics {
    registry: Registry,
    /// The attestation gRPC service.
    pub grpc: GrpcMetrics,
    /// The attestation port's serving certificate.
    pub tls: TlsMetrics,
    /// The Kubernetes controller.
    pub controller: ControllerMetrics,
    /// Every listener's accept errors and shed connections.
    pub listeners: ListenerMetrics,
    /// Admin requests by how their authentication and authorization ended (`allowed`,
    /// `unauthenticated`, `forbidden`, `unavailable`); none with `--admin-secure=false`.
    pub admin_requests: Family<ResultLabel, Counter>,
    /// TokenReview + SubjectAccessReview pairs sent for admin callers (cache misses only).
    pub admin_reviews: Counter,
}

/// A `reason` label: why a connection or stream was refused or closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A short snake_case reason, from the error's `metric_label()`.
    pub reason: &'static str,
}

/// Metrics of the attestation gRPC service (prefix `rubber_stamp_attestation_`).
#[derive(Clone, Debug, Default)]
pub struct GrpcMetrics {
    /// Open mTLS connections (after the handshake).
    pub connections: Gauge,
    /// Live attestation streams (one per node at most).
    pub live_streams: Gauge,
    /// Reports accepted and stored.
    pub reports_accepted: Counter,
    /// Connections refused before any stream, by reason (TLS handshake failures,
    /// handshake timeouts, the connection limit).
    pub refused_connections: Family<ReasonLabel, Counter>,
    /// Streams refused at open, by reason (the certificate does not name a node).
    pub refused_streams: Family<ReasonLabel, Counter>,
    /// Streams that ended after they were accepted, by reason (the agent closed it, a newer
    /// stream replaced it, a report was invalid or too frequent, shutdown, …).
    pub closed_streams: Family<ReasonLabel, Counter>,
    /// The controller's challenges family (`rubber_stamp_controller_challenges_total`):
    /// the channel counts `answered` where the answering report is recorded.
    pub challenges: Family<ResultLabel, Counter>,
    /// TokenReviews sent to verify agents' ServiceAccount tokens (cache misses only).
    pub token_reviews: Counter,
    /// The proof's receipts family (`rubber_stamp_proof_receipts_total`), counted where
    /// agents' receipts arrive.
    pub proof_receipts: Family<ResultLabel, Counter>,
}

// === impl Metrics ===

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rubber_stamp");
        // Constant 1 with the build's labels, for `on (instance) group_left(version)` joins
        // and to see a rollout's versions side by side.
        let build_info = Family::<BuildInfoLabels, Gauge>::default();
        build_info.get_or_create(&BUILD_INFO).set(1);
        registry.register(
            "build_info",
            "Always 1: the running binary's name and version as labels",
            build_info,
        );
        let grpc = GrpcMetrics::register(registry.sub_registry_with_prefix("attestation"));
        let tls = TlsMetrics::register(registry.sub_registry_with_prefix("tls"));
        let controller =
            ControllerMetrics::register(registry.sub_registry_with_prefix("controller"));
        let proof = ProofMetrics::register(registry.sub_registry_with_prefix("proof"));
        let listeners = ListenerMetrics::register(&mut registry);
        let admin_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "admin_requests",
            "Requests to the admin port by authentication and authorization result",
            admin_requests.clone(),
        );
        let admin_reviews = Counter::default();
        registry.register(
            "admin_reviews",
            "TokenReview and SubjectAccessReview pairs sent for admin callers (cache misses)",
            admin_reviews.clone(),
        );
        // One family for a challenge's life: sent and refused by the controller, answered
        // where the report is recorded.
        let grpc = GrpcMetrics {
            challenges: controller.challenges.clone(),
            proof_receipts: proof.receipts.clone(),
            ..grpc
        };
        let controller = ControllerMetrics {
            proof,
            ..controller
        };
        Self {
            registry,
            grpc,
            tls,
            controller,
            listeners,
            admin_requests,
            admin_reviews,
        }
    }

    /// The registry, for components that register their own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("grpc", &self.grpc)
            .field("controller", &self.controller)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

// === impl GrpcMetrics ===

impl GrpcMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "connections",
            "Open mTLS connections on the attestation port",
            metrics.connections.clone(),
        );
        registry.register(
            "live_streams",
            "Live attestation streams, at most one per node",
            metrics.live_streams.clone(),
        );
        registry.register(
            "reports_accepted",
            "Node reports accepted and stored",
            metrics.reports_accepted.clone(),
        );
        registry.register(
            "refused_connections",
            "Connections refused before any stream, by reason",
            metrics.refused_connections.clone(),
        );
        registry.register(
            "refused_streams",
            "Attestation streams refused at open, by reason",
            metrics.refused_streams.clone(),
        );
        registry.register(
            "closed_streams",
            "Accepted attestation streams that ended, by reason",
            metrics.closed_streams.clone(),
        );
        registry.register(
            "token_reviews",
            "TokenReviews sent to verify agents' ServiceAccount tokens (cache misses)",
            metrics.token_reviews.clone(),
        );
        metrics
    }

    /// Counts a refused connection.
    pub fn refuse_connection(&self, reason: &'static str) {
        self.refused_connections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a refused stream.
    pub fn refuse_stream(&self, reason: &'static str) {
        self.refused_streams
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a closed stream.
    pub fn close_stream(&self, reason: &'static str) {
        self.closed_streams
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Current count of refused connections for `reason`.
    pub fn refused_connections(&self, reason: &'static str) -> u64 {
        self.refused_connections
            .get(&ReasonLabel { reason })
            .map_or(0, |c| c.get())
    }

    /// Current count of refused streams for `reason`.
    pub fn refused_streams(&self, reason: &'static str) -> u64 {
        self.refused_streams
            .get(&ReasonLabel { reason })
            .map_or(0, |c| c.get())
    }

    /// Current count of closed streams for `reason`.
    pub fn closed_streams(&self, reason: &'static str) -> u64 {
        self.closed_streams
            .get(&ReasonLabel { reason })
            .map_or(0, |c| c.get())
    }
}

/// Names of the approver's listeners, the `listener` label.
pub mod listener {
    /// The mTLS attestation port.
    pub const ATTESTATION: &str = "attestation";
    /// The plaintext `grpc.health.v1` port.
    pub const HEALTH: &str = "health";
    /// The admin HTTP port.
    pub const ADMIN: &str = "admin";
}

/// A `listener` label: `attestation`, `health` or `admin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// The listener.
    pub listener: &'static str,
}

/// Labels of a connection a listener closed before serving it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// The listener.
    pub listener: &'static str,
    /// `evicted_per_source`, `evicted_total` or `request_timeout`.
    pub reason: &'static str,
}

/// Metrics of every listener (no prefix beyond `rubber_stamp_`): what the bounded accept
/// loops of `rubber-stamp-listen` report.
#[derive(Clone, Debug, Default)]
pub struct ListenerMetrics {
    /// Failed `accept(2)` calls by listener (`EMFILE`, `ENFILE`, `ENOBUFS`, …).
    pub accept_errors: Family<ListenerLabel, Counter>,
    /// Connections closed to stay within a listener's limits, by listener and reason.
    pub shed_connections: Family<ShedLabels, Counter>,
}

// === impl ListenerMetrics ===

impl ListenerMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "accept_errors",
            "Failed accepts by listener; the listener backs off while descriptors or buffers are exhausted",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "shed_connections",
            "Connections closed before they were served, to stay within a listener's limits, by listener and reason",
            metrics.shed_connections.clone(),
        );
        metrics
    }

    /// Current count of accept errors of `listener`.
    pub fn accept_errors(&self, listener: &'static str) -> u64 {
        self.accept_errors
            .get(&ListenerLabel { listener })
            .map_or(0, |c| c.get())
    }

    /// Current count of connections `listener` shed for `reason`.
    pub fn shed_connections(&self, listener: &'static str, reason: &'static str) -> u64 {
        self.shed_connections
            .get(&ShedLabels { listener, reason })
            .map_or(0, |c| c.get())
    }
}

impl rubber_stamp_listen::Events for ListenerMetrics {
    fn accept_failed(&self, listener: &'static str, _: &std::io::Error) {
        self.accept_errors
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }

    fn shed(&self, listener: &'static str, reason: &'static str) {
        self.shed_connections
            .get_or_create(&ShedLabels { listener, reason })
            .inc();
    }
}

/// Labels of one decision the controller reached.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `approve`, `deny`, `pending` or `held` (approvable, but the flood valve is closed).
    pub outcome: &'static str,
    /// The Event reason: `Approved`, `Denied`, `AwaitingAttestation`, `AddressConflict`, …
    pub reason: &'static str,
    /// `true` when nothing was written because of `--dry-run`.
    pub dry_run: bool,
}

/// A `reason` label whose values are decision reasons (a closed set of names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReasonText {
    /// The Event reason (`AddressConflict`, …), or `Undecided`.
    pub reason: &'static str,
}

/// A `result` label: how one operation ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// A short snake_case result.
    pub result: &'static str,
}

/// Labels of a write of a decision to a CSR's `/approval` subresource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `approve` or `deny`.
    pub decision: &'static str,
    /// `ok`, `conflict` (409, re-read and re-decided) or `error`.
    pub result: &'static str,
}

/// An `error` label: why a reconcile failed (from the error's `metric_label()`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// A short snake_case error kind.
    pub error: &'static str,
}

/// Latency buckets in seconds, from 5 ms to 10 minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Metrics of the Kubernetes controller (prefix `rubber_stamp_controller_`).
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// Decisions by outcome, reason and dry run; counted once per change of a CSR's state
    /// (the same changes that produce an Event), not once per reconcile.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Seconds from this replica's first sighting of a CSR to its approval (both readings
    /// of the replica's clock: the watch delivers a CSR within milliseconds of its creation).
    pub approval_latency: Histogram,
    /// Seconds from the arrival of the attestation that an approval rests on to the approval,
    /// for CSRs that had been waiting (pending) before.
    pub attestation_to_approval: Histogram,
    /// Kubelet-serving CSRs without an Approved, Denied or Failed condition.
    pub pending_csrs: Gauge,
    /// The same CSRs by the reason of their last decision on this replica (`Undecided`:
    /// not decided yet): the current state, where the decisions counter counts changes.
    pub pending_csrs_by_reason: Family<ReasonText, Gauge>,
    /// Seconds since this replica first saw the oldest pending CSR (0: none pending).
    pub oldest_pending_csr_age: Gauge,
    /// Nodes with a fresh attestation on this replica.
    pub attested_nodes: Gauge,
    /// Node objects without a fresh attestation: during an agent rollout, the nodes still to
    /// come; afterwards, nodes whose agent is down or cannot reach this replica.
    pub unattested_nodes: Gauge,
    /// Node objects known to the controller.
    pub nodes: Gauge,
    /// 1 while this replica holds the Lease and may act on CSRs, else 0.
    pub leader: Gauge,
    /// 1 while the flood valve holds approvals back, else 0.
    pub flood_valve_closed: Gauge,
    /// The number of pending CSRs above which the flood valve closes.
    pub flood_valve_bound: Gauge,
    /// Requestors (nodes) with more pending CSRs than `--max-pending-csrs-per-node`: their
    /// approvals are held. One gauge, not a label per node, to keep the series bounded.
    pub flood_valve_held_nodes: Gauge,
    /// Writes of decisions to `/approval`, by decision and result.
    pub writes: Family<WriteLabels, Counter>,
    /// SubjectAccessReviews for check 14, by result (`allowed`, `denied`, `cached`, `error`).
    pub access_reviews: Family<ResultLabel, Counter>,
    /// Challenges to agents whose facts cannot decide a CSR yet, by result: `sent`,
    /// `no_stream`, `busy`, `stream_closed` (when sent), `expired` (dropped unanswered
    /// after --challenge-timeout), `answered` (when the echoing report is recorded).
    pub challenges: Family<ResultLabel, Counter>,
    /// Events published (`published`) or refused by the API server (`failed`).
    pub events: Family<ResultLabel, Counter>,
    /// Reconciles that failed, by error kind (they are retried with backoff).
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    /// Reconciles run (decisions made, changed or not).
    pub reconciles: Counter,
    /// The proof of address ownership's probes (registered as `rubber_stamp_proof_*`).
    pub proof: ProofMetrics,
}

// === impl ControllerMetrics ===

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            approval_latency: Histogram::new(LATENCY_BUCKETS),
            attestation_to_approval: Histogram::new(LATENCY_BUCKETS),
            pending_csrs: Gauge::default(),
            pending_csrs_by_reason: Family::default(),
            oldest_pending_csr_age: Gauge::default(),
            attested_nodes: Gauge::default(),
            unattested_nodes: Gauge::default(),
            nodes: Gauge::default(),
            leader: Gauge::default(),
            flood_valve_closed: Gauge::default(),
            flood_valve_bound: Gauge::default(),
            flood_valve_held_nodes: Gauge::default(),
            writes: Family::default(),
            access_reviews: Family::default(),
            challenges: Family::default(),
            events: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Counter::default(),
            proof: ProofMetrics::default(),
        }
    }
}

impl ControllerMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "decisions",
            "Decisions on kubelet-serving CSRs, once per change of a CSR's state",
            m.decisions.clone(),
        );
        registry.register_with_unit(
            "approval_latency",
            "Time from this replica's first sighting of a CSR to its approval, on the replica's own clock",
            Unit::Seconds,
            m.approval_latency.clone(),
        );
        registry.register_with_unit(
            "attestation_to_approval",
            "Time from the arrival of an attestation to the approval of a CSR that waited for it",
            Unit::Seconds,
            m.attestation_to_approval.clone(),
        );
        registry.register(
            "pending_csrs",
            "Kubelet-serving CSRs not yet approved, denied or failed",
            m.pending_csrs.clone(),
        );
        registry.register(
            "pending_csrs_by_reason",
            "Pending kubelet-serving CSRs by the reason of their last decision on this replica",
            m.pending_csrs_by_reason.clone(),
        );
        registry.register_with_unit(
            "oldest_pending_csr_age",
            "Time since this replica first saw the oldest pending kubelet-serving CSR",
            Unit::Seconds,
            m.oldest_pending_csr_age.clone(),
        );
        registry.register(
            "attested_nodes",
            "Nodes with a fresh attestation on this replica",
            m.attested_nodes.clone(),
        );
        registry.register(
            "unattested_nodes",
            "Node objects without a fresh attestation on this replica",
            m.unattested_nodes.clone(),
        );
        registry.register("nodes", "Node objects", m.nodes.clone());
        registry.register(
            "leader",
            "1 while this replica holds the Lease and may act on CSRs",
            m.leader.clone(),
        );
        registry.register(
            "flood_valve_closed",
            "1 while approvals are held back because too many CSRs are pending",
            m.flood_valve_closed.clone(),
        );
        registry.register(
            "flood_valve_bound",
            "Pending CSRs above which the flood valve closes",
            m.flood_valve_bound.clone(),
        );
        registry.register(
            "flood_valve_held_nodes",
            "Nodes whose approvals are held because each has more pending CSRs than the per-node bound",
            m.flood_valve_held_nodes.clone(),
        );
        registry.register(
            "decision_writes",
            "Writes of decisions to the /approval subresource, by decision and result",
            m.writes.clone(),
        );
        registry.register(
            "access_reviews",
            "SubjectAccessReviews of check 14, by result",
            m.access_reviews.clone(),
        );
        registry.register(
            "challenges",
            "Challenges to agents whose facts cannot decide a CSR yet, by result (sent, no_stream, busy, stream_closed, expired, answered)",
            m.challenges.clone(),
        );
        registry.register("events", "Events published, by result", m.events.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and will be retried, by error",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles run, whether or not the decision changed",
            m.reconciles.clone(),
        );
        m
    }

    /// Counts a decision.
    pub fn decide(&self, outcome: &'static str, reason: &'static str, dry_run: bool) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome,
                reason,
                dry_run,
            })
            .inc();
    }

    /// Current count of decisions with these labels.
    pub fn decisions(&self, outcome: &'static str, reason: &'static str, dry_run: bool) -> u64 {
        self.decisions
            .get(&DecisionLabels {
                outcome,
                reason,
                dry_run,
            })
            .map_or(0, |c| c.get())
    }

    /// Counts a write of a decision.
    pub fn write(&self, decision: &'static str, result: &'static str) {
        self.writes
            .get_or_create(&WriteLabels { decision, result })
            .inc();
    }

    /// Current count of writes with these labels.
    pub fn writes(&self, decision: &'static str, result: &'static str) -> u64 {
        self.writes
            .get(&WriteLabels { decision, result })
            .map_or(0, |c| c.get())
    }

    /// Counts a SubjectAccessReview result.
    pub fn access_review(&self, result: &'static str) {
        self.access_reviews
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a challenge result.
    pub fn challenge(&self, result: &'static str) {
        self.challenges.get_or_create(&ResultLabel { result }).inc();
    }

    /// Current count of challenges with this result.
    pub fn challenges(&self, result: &'static str) -> u64 {
        self.challenges
            .get(&ResultLabel { result })
            .map_or(0, |c| c.get())
    }

    /// Counts an Event publication.
    pub fn event(&self, result: &'static str) {
        self.events.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a failed reconcile.
    pub fn reconcile_error(&self, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabel { error })
            .inc();
    }

    /// Current count of failed reconciles of this kind.
    pub fn reconcile_errors(&self, error: &'static str) -> u64 {
        self.reconcile_errors
            .get(&ErrorLabel { error })
            .map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use rubber_stamp_listen::Events as _;

    use super::*;

    #[test]
    fn families_are_exported_with_prefix_and_reason_labels() {
        let metrics = Metrics::new();
        metrics.grpc.refuse_connection("untrusted_certificate");
        metrics.grpc.reports_accepted.inc();
        metrics.grpc.live_streams.set(3);
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(
                "rubber_stamp_attestation_refused_connections_total{reason=\"untrusted_certificate\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("rubber_stamp_attestation_reports_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("rubber_stamp_attestation_live_streams 3"),
            "{text}"
        );
        metrics
            .listeners
            .accept_failed(listener::HEALTH, &std::io::Error::other("EMFILE"));
        metrics
            .listeners
            .shed(listener::ATTESTATION, "evicted_total");
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("rubber_stamp_accept_errors_total{listener=\"health\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "rubber_stamp_shed_connections_total{listener=\"attestation\",reason=\"evicted_total\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn build_info_names_the_binary_and_its_version() {
        let text = Metrics::new().encode().expect("encode");
        let line = format!(
            "rubber_stamp_build_info{{component=\"rubber-stamp-approver\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{text}");
    }
}
