//! The approver's Prometheus registry and metric families, served at `/metrics`.
//!
//! Every family lives in a per-component struct ([`GrpcMetrics`], …) that registers itself
//! under its own prefix in [`Metrics::new`]. To add a component's metrics (the controller's,
//! say): write a `ControllerMetrics` with a `register(&mut Registry) -> Self`, add a field
//! here and one line to [`Metrics::new`]. All names start with `rubber_stamp_`.

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric the approver exports.
pub struct Metrics {
    registry: Registry,
    /// The attestation gRPC service.
    pub grpc: GrpcMetrics,
    /// The attestation port's serving certificate.
    pub tls: crate::pki::TlsMetrics,
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
}

// === impl Metrics ===

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rubber_stamp");
        let grpc = GrpcMetrics::register(registry.sub_registry_with_prefix("attestation"));
        let tls = crate::pki::TlsMetrics::register(registry.sub_registry_with_prefix("tls"));
        Self {
            registry,
            grpc,
            tls,
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

#[cfg(test)]
mod tests {
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
        assert!(text.ends_with("# EOF\n"));
    }
}
