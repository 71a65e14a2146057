//! The attestation port's PKI settings, checked ([`PkiConfig`], built from the flags in
//! `crate::flags::pki`).

use std::time::Duration;

use super::plan::Schedule;

/// The Secret-kept PKI's settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiConfig {
    /// Namespace of the Secret and the ConfigMap; empty until resolved to the client's
    /// default namespace.
    pub namespace: String,
    /// The TLS Secret.
    pub secret: String,
    /// The CA bundle ConfigMap.
    pub config_map: String,
    /// The headless Service.
    pub service: String,
    /// The Service's namespace: the approver's own (`--namespace`), which the certificate's
    /// names carry whatever namespace holds the Secret; empty until resolved to the
    /// client's default namespace.
    pub service_namespace: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Lifetimes and renewal times.
    pub schedule: Schedule,
    /// How often the Secret is read again.
    pub refresh_interval: Duration,
}

/// Why the PKI flags do not make a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PkiConfigError {
    /// A name is not a DNS-1123 label (or, for the domain, subdomain).
    #[error("--{flag}: {value:?} is not a valid DNS name")]
    Name {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// Two durations are in the wrong order.
    #[error("--{shorter} must be shorter than --{longer}")]
    Order {
        /// The flag that must be shorter.
        shorter: &'static str,
        /// The flag it must be shorter than.
        longer: &'static str,
    },
    /// The propagation delay is too short for the refresh interval.
    #[error("--ca-propagation-delay must be at least twice --tls-refresh-interval")]
    Propagation,
}

// === impl PkiConfig ===

impl PkiConfig {
    /// The DNS names the serving certificate carries, shortest first.
    pub fn dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service, &self.service_namespace);
        vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.{}", self.cluster_domain),
        ]
    }
}
