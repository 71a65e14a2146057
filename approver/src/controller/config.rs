//! The controller's checked configuration ([`ControllerConfig`], built from the flags in
//! `crate::flags::controller`), its Lease timings, and the Kubernetes client it names.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use rubber_stamp_core::Policy;

/// The Lease every replica competes for, by default.
pub const DEFAULT_LEASE_NAME: &str = "rubber-stamp-approver";
/// Pending CSRs allowed above the number of Nodes before the flood valve closes, by default.
pub const DEFAULT_FLOOD_HEADROOM: usize = 100;
/// Pending CSRs one node (one requestor) may have before its approvals are held, by
/// default. An honest kubelet has one serving CSR pending at a time; it makes another
/// after a restart, an address change, or when the last one was not signed within 15
/// minutes (client-go's certificate manager). Ten covers a few restarts plus two hours
/// of unanswered requests; a node beyond it is broken or hostile, and a person should
/// look (docs/operations.md#nodeapprovalsheld).
pub const DEFAULT_MAX_PENDING_CSRS_PER_NODE: usize = 10;
/// Largest `--concurrency`.
pub const MAX_CONCURRENCY: u16 = 1024;

/// How the Lease is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// `leaseDurationSeconds`.
    pub duration: Duration,
    /// The leader stops acting this long before the Lease could expire.
    pub grace: Duration,
}

/// Everything the controller needs, checked.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Kubeconfig file; `None` infers (KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The policy, with `--deny` applied.
    pub policy: Arc<Policy>,
    /// Write nothing to CSRs.
    pub dry_run: bool,
    /// The approver's own namespace: its Events, and the Lease's unless
    /// [`lease_namespace`](Self::lease_namespace) is set; `None`: the client's default.
    pub namespace: Option<String>,
    /// Namespace of the Lease; `None`: [`namespace`](Self::namespace).
    pub lease_namespace: Option<String>,
    /// This replica's name: the Lease identity and the Events' reporting instance.
    pub replica: String,
    /// Leader election; `None`: this replica always acts.
    pub lease: Option<LeaseConfig>,
    /// The flood valve's bound; `None`: Nodes + [`DEFAULT_FLOOD_HEADROOM`].
    pub max_pending_csrs: Option<usize>,
    /// The per-node flood valve's bound.
    pub max_pending_csrs_per_node: usize,
    /// Most concurrent reconciles.
    pub concurrency: u16,
    /// Longest time between two decisions on a pending CSR.
    pub pending_resync: Duration,
    /// How long a challenge may wait for its answer.
    pub challenge_timeout: Duration,
    /// How long a SubjectAccessReview answer is reused.
    pub access_review_ttl: Duration,
}

/// Why the controller's flags do not make a configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerConfigError {
    /// The policy file is unusable.
    #[error("--policy: {0}")]
    Policy(String),
    /// The lease timings do not fit together.
    #[error(
        "--lease-duration ({duration:?}) and --lease-grace ({grace:?}) must be whole seconds, grace at least 1s and at least 2s less than the duration"
    )]
    Lease {
        /// The duration.
        duration: Duration,
        /// The grace.
        grace: Duration,
    },
    /// A setting that must be positive is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
}

// === impl LeaseConfig ===

impl LeaseConfig {
    /// Checks that the timings are whole seconds, grace ≥ 1 s and duration ≥ grace + 2 s.
    pub fn new(
        name: impl Into<String>,
        duration: Duration,
        grace: Duration,
    ) -> Result<Self, ControllerConfigError> {
        let whole = |d: Duration| d.subsec_nanos() == 0;
        let ok = whole(duration)
            && whole(grace)
            && grace >= Duration::from_secs(1)
            && duration >= grace + Duration::from_secs(2);
        if !ok {
            return Err(ControllerConfigError::Lease { duration, grace });
        }
        Ok(Self {
            name: name.into(),
            duration,
            grace,
        })
    }

    /// How long after a renewal the leader may act: the duration minus the grace.
    pub fn acting_window(&self) -> Duration {
        self.duration.saturating_sub(self.grace)
    }

    /// How often the holder renews: twice per acting window, so one renewal may fail (or
    /// be seen late) without a gap in acting.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_secs((self.acting_window().as_secs() / 2).max(1))
    }

    /// The `grace` kube-lease-manager is given: it renews this long before expiry.
    pub fn renew_ahead_secs(&self) -> u64 {
        self.duration
            .as_secs()
            .saturating_sub(self.renew_interval().as_secs())
    }

    /// How often the leader reads the Lease back to confirm its renewals.
    pub fn confirm_interval(&self) -> Duration {
        (self.renew_interval() / 2).max(Duration::from_millis(100))
    }
}

// === impl ControllerConfig ===

impl ControllerConfig {
    /// The defaults of every flag, for `policy` and `replica`.
    pub fn new(policy: Policy, replica: impl Into<String>) -> Self {
        Self {
            kubeconfig: None,
            policy: Arc::new(policy),
            dry_run: false,
            namespace: None,
            lease_namespace: None,
            replica: replica.into(),
            lease: Some(LeaseConfig {
                name: DEFAULT_LEASE_NAME.to_owned(),
                duration: Duration::from_secs(15),
                grace: Duration::from_secs(5),
            }),
            max_pending_csrs: None,
            max_pending_csrs_per_node: DEFAULT_MAX_PENDING_CSRS_PER_NODE,
            concurrency: 64,
            pending_resync: Duration::from_secs(60),
            challenge_timeout: Duration::from_secs(5),
            access_review_ttl: Duration::from_secs(30),
        }
    }

    /// How long attestations count as fresh: the policy's `attestationMaxAge`, the one
    /// source of truth for freshness, Acks and pruning.
    pub fn attestation_max_age(&self) -> Duration {
        max_age_of(&self.policy)
    }

    /// A client from `--kubeconfig`, else inferred (KUBECONFIG, ~/.kube/config, in-cluster).
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| ClientError::Kubeconfig {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| ClientError::Kubeconfig {
                        path: path.clone(),
                        message: e.to_string(),
                    })?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| ClientError::Infer(e.to_string()))?,
        };
        kube::Client::try_from(config).map_err(|e| ClientError::Build(e.to_string()))
    }
}

/// The policy's attestation max age as a std duration.
pub fn max_age_of(policy: &Policy) -> Duration {
    Duration::try_from(policy.attestation_max_age.get()).unwrap_or(Duration::from_secs(300))
}

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file is unusable.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No kubeconfig and no in-cluster configuration.
    #[error(
        "no Kubernetes configuration: {0} (set --kubeconfig, or run in a cluster, or use --attestation-only)"
    )]
    Infer(String),
    /// The client could not be built from the configuration.
    #[error("building the Kubernetes client: {0}")]
    Build(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_timings_derive_renewal_and_confirmation() {
        let lease =
            LeaseConfig::new("l", Duration::from_secs(15), Duration::from_secs(5)).expect("valid");
        assert_eq!(lease.acting_window(), Duration::from_secs(10));
        assert_eq!(lease.renew_interval(), Duration::from_secs(5));
        assert_eq!(lease.renew_ahead_secs(), 10);
        assert_eq!(lease.confirm_interval(), Duration::from_millis(2500));
        let short =
            LeaseConfig::new("l", Duration::from_secs(3), Duration::from_secs(1)).expect("valid");
        assert_eq!(short.renew_interval(), Duration::from_secs(1));
        assert_eq!(short.renew_ahead_secs(), 2);
        assert_eq!(short.confirm_interval(), Duration::from_millis(500));
        for (d, g) in [(3, 2), (2, 1), (5, 0)] {
            assert!(
                LeaseConfig::new("l", Duration::from_secs(d), Duration::from_secs(g)).is_err(),
                "{d}s/{g}s"
            );
        }
        assert!(
            LeaseConfig::new("l", Duration::from_millis(3500), Duration::from_secs(1)).is_err()
        );
    }
}
