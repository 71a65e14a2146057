//! Metrics of the attestation port's certificate (prefix `rubber_stamp_tls_`): when what is
//! served expires, swaps, and failed refreshes — the signals to alert on before agents fail.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::ReasonLabel;

/// The certificate metrics; cheap to clone, clones share values.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    /// End of validity of the serving certificate this replica presents, Unix seconds.
    pub serving_not_after: Gauge,
    /// End of validity of the CA that signed it (Secret mode only), Unix seconds.
    pub ca_not_after: Gauge,
    /// Times a new serving certificate was swapped in.
    pub swaps: Counter,
    /// Refreshes (reading the Secret or the files) that failed, by reason.
    pub refresh_errors: Family<ReasonLabel, Counter>,
}

impl TlsMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "End of validity of the serving certificate on the attestation port, Unix time",
            metrics.serving_not_after.clone(),
        );
        registry.register(
            "ca_expiry_timestamp_seconds",
            "End of validity of the approver CA that signed the serving certificate, Unix time",
            metrics.ca_not_after.clone(),
        );
        registry.register(
            "certificate_swaps",
            "New serving certificates taken into use for new handshakes",
            metrics.swaps.clone(),
        );
        registry.register(
            "refresh_errors",
            "Failed reads or renewals of the serving certificate, by reason",
            metrics.refresh_errors.clone(),
        );
        metrics
    }

    /// Counts a failed refresh.
    pub fn refresh_failed(&self, reason: &'static str) {
        self.refresh_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Current count of failed refreshes for `reason`.
    pub fn refresh_errors(&self, reason: &'static str) -> u64 {
        self.refresh_errors
            .get(&ReasonLabel { reason })
            .map_or(0, |c| c.get())
    }
}
