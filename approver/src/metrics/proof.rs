//! The proof of address ownership's metrics (`rubber_stamp_proof_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ResultLabel;

/// Probes, receipts and what they led to. Cheap to clone; clones share the families.
#[derive(Clone, Debug, Default)]
pub struct ProofMetrics {
    /// Probes that ended, by result: `proven`, `other_node` (another node's agent
    /// received it), `refused` (the address refused while the requester listened),
    /// `unanswered`.
    pub probes: Family<ResultLabel, Counter>,
    /// Probes not sent because a limit was reached, by `result` = `node` or `overall`.
    pub probes_limited: Family<ResultLabel, Counter>,
    /// Probes in flight.
    pub probes_in_flight: Gauge,
    /// Receipts agents reported, by result: `proven`, `other_node`, `spent` (its probe
    /// already ended: a replay or a late one), `other_replica` (another replica's probe:
    /// agents report to every replica), `unknown` (this replica's tag, never sent),
    /// `invalid`, `rate_limited` (over the stream's receipt budget; dropped).
    pub receipts: Family<ResultLabel, Counter>,
    /// CSRs approved with an IP SAN unproven because the policy `preferred` proof for it.
    pub unproven_approvals: Counter,
}

impl ProofMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "probes",
            "Ownership probes that ended, by result (proven, other_node, refused, unanswered)",
            m.probes.clone(),
        );
        registry.register(
            "probes_limited",
            "Ownership probes put off because a limit was reached (node, overall)",
            m.probes_limited.clone(),
        );
        registry.register(
            "probes_in_flight",
            "Ownership probes in flight",
            m.probes_in_flight.clone(),
        );
        registry.register(
            "receipts",
            "Probe receipts agents reported, by result (proven, other_node, spent, other_replica, unknown, invalid, rate_limited)",
            m.receipts.clone(),
        );
        registry.register(
            "unproven_approvals",
            "CSRs approved with an IP SAN the network did not prove, under ownershipProof: preferred",
            m.unproven_approvals.clone(),
        );
        m
    }
}
