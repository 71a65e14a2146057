//! Flags of the controller (part of `rubber-stamp-approver run`), each with an environment
//! fallback, turned into a checked [`ControllerConfig`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};
use rubber_stamp_core::{DenyMode, Policy};

use super::parse_duration;
use crate::controller::config::{
    ControllerConfig, ControllerConfigError, DEFAULT_LEASE_NAME, DEFAULT_MAX_PENDING_CSRS_PER_NODE,
    LeaseConfig, MAX_CONCURRENCY,
};
use crate::documents;

/// Flags of the controller.
#[derive(Clone, Debug, Args)]
pub struct ControllerArgs {
    /// Serve attestations only, without the Kubernetes controller: nothing is ever approved.
    /// For trying the attestation channel by hand without a cluster.
    #[arg(long, env = "RUBBER_STAMP_ATTESTATION_ONLY", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub attestation_only: bool,

    /// Kubeconfig file to reach the API server. Default: `KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster ServiceAccount.
    #[arg(long, env = "RUBBER_STAMP_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Policy YAML, the same file `check --policy` takes. Default: the built-in policy. Its
    /// `attestationMaxAge` is also how long attestations are kept and what agents are told
    /// in every Ack.
    #[arg(long, env = "RUBBER_STAMP_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Override the policy's deny mode: `never` leaves would-be denials pending with a
    /// Warning Event instead of denying.
    #[arg(long, env = "RUBBER_STAMP_DENY", value_name = "always|never")]
    pub deny: Option<DenyMode>,

    /// Decide and explain (Events, metrics, logs say "would approve/deny") but never write
    /// a decision to a CSR.
    #[arg(long, env = "RUBBER_STAMP_DRY_RUN", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub dry_run: bool,

    /// The approver's own namespace (the only setting `POD_NAMESPACE` feeds): where its
    /// Events go, and the default of --lease-namespace, --tls-namespace and
    /// --agent-namespace. Default: the kubeconfig's or in-cluster namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Namespace of the Lease. Default: --namespace.
    #[arg(
        long,
        env = "RUBBER_STAMP_LEASE_NAMESPACE",
        value_name = "NAMESPACE",
        visible_alias = "leader-elect-resource-namespace"
    )]
    pub lease_namespace: Option<String>,

    /// Elect one acting replica with a Lease. Without election every replica acts: run
    /// exactly one.
    #[arg(long, env = "RUBBER_STAMP_LEADER_ELECT", num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true", action = ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the Lease.
    #[arg(long, env = "RUBBER_STAMP_LEASE_NAME", default_value = DEFAULT_LEASE_NAME,
          visible_alias = "leader-elect-resource-name")]
    pub lease_name: String,

    /// How long a Lease lasts after its last renewal; a standby takes over at most this long
    /// (plus up to a second) after the leader stops renewing. Whole seconds.
    #[arg(long, env = "RUBBER_STAMP_LEASE_DURATION", default_value = "15s", value_parser = parse_duration,
          visible_alias = "leader-elect-lease-duration")]
    pub lease_duration: Duration,

    /// The leader stops acting this long before its Lease could expire (allowance for clock
    /// skew between replicas and for writes in flight). Whole seconds, at least 1, and at
    /// least 2 less than --lease-duration.
    #[arg(long, env = "RUBBER_STAMP_LEASE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub lease_grace: Duration,

    /// Flood valve: stop approving while more than this many kubelet-serving CSRs are pending.
    /// Default: the number of Node objects + 100.
    #[arg(long, env = "RUBBER_STAMP_MAX_PENDING_CSRS", value_name = "N")]
    pub max_pending_csrs: Option<usize>,

    /// Per-node flood valve: hold every approval for a node (a CSR requestor, from the
    /// CSR's spec.username) while it has more than this many kubelet-serving CSRs pending;
    /// other nodes are still approved. The cluster-wide valve counts at most this many per
    /// node.
    #[arg(long, env = "RUBBER_STAMP_MAX_PENDING_CSRS_PER_NODE", value_name = "N",
          default_value_t = DEFAULT_MAX_PENDING_CSRS_PER_NODE)]
    pub max_pending_csrs_per_node: usize,

    /// Most CSRs decided at once (each decision waits on the API server).
    #[arg(long, env = "RUBBER_STAMP_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_CONCURRENCY)))]
    pub concurrency: u16,

    /// Decide pending CSRs again at least this often, even when nothing they depend on
    /// changed (attestation and Node changes trigger a decision at once).
    #[arg(long, env = "RUBBER_STAMP_PENDING_RESYNC", default_value = "1m", value_parser = parse_duration)]
    pub pending_resync: Duration,

    /// How long to wait for an agent's answer to a challenge.
    #[arg(long, env = "RUBBER_STAMP_CHALLENGE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub challenge_timeout: Duration,

    /// How long a SubjectAccessReview answer is reused for the same requestor.
    #[arg(long, env = "RUBBER_STAMP_ACCESS_REVIEW_TTL", default_value = "30s", value_parser = parse_duration)]
    pub access_review_ttl: Duration,
}

// === impl ControllerArgs ===

impl ControllerArgs {
    /// Reads the policy file (or the default policy) and applies `--deny`.
    pub fn policy(&self) -> Result<Policy, ControllerConfigError> {
        let mut policy = match &self.policy {
            Some(path) => documents::read_policy(path)
                .map_err(|e| ControllerConfigError::Policy(e.to_string()))?,
            None => Policy::default(),
        };
        if let Some(mode) = self.deny {
            policy.deny = mode;
        }
        Ok(policy)
    }

    /// The checked configuration (`None` with `--attestation-only`), for `policy` (read
    /// with [`policy`](Self::policy)) and this replica's name.
    pub fn into_config(
        self,
        policy: Policy,
        replica: String,
    ) -> Result<Option<ControllerConfig>, ControllerConfigError> {
        if self.attestation_only {
            return Ok(None);
        }
        for (d, flag) in [
            (self.pending_resync, "pending-resync"),
            (self.challenge_timeout, "challenge-timeout"),
        ] {
            if d.is_zero() {
                return Err(ControllerConfigError::Zero(flag));
            }
        }
        if self.max_pending_csrs == Some(0) {
            return Err(ControllerConfigError::Zero("max-pending-csrs"));
        }
        if self.max_pending_csrs_per_node == 0 {
            return Err(ControllerConfigError::Zero("max-pending-csrs-per-node"));
        }
        let lease = if self.leader_elect {
            Some(LeaseConfig::new(
                self.lease_name,
                self.lease_duration,
                self.lease_grace,
            )?)
        } else {
            None
        };
        Ok(Some(ControllerConfig {
            kubeconfig: self.kubeconfig,
            policy: Arc::new(policy),
            dry_run: self.dry_run,
            namespace: self.namespace,
            lease_namespace: self.lease_namespace,
            replica,
            lease,
            max_pending_csrs: self.max_pending_csrs,
            max_pending_csrs_per_node: self.max_pending_csrs_per_node,
            concurrency: self.concurrency,
            pending_resync: self.pending_resync,
            challenge_timeout: self.challenge_timeout,
            access_review_ttl: self.access_review_ttl,
        }))
    }
}
