//! What makes the controller decide again besides a CSR's own watch events: attestation
//! changes (that node's pending CSRs, at once), Node changes, Service and ServiceCIDR
//! changes (the CSRs asking for the addresses concerned), a node's CSRs back within the
//! per-node bound, and "everything" (a lagging attestation subscription, a new leader, the
//! flood valve reopening, the first list of Nodes, Services or ServiceCIDRs).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::table::CsrTable;
use crate::store::{ChangeKind, ChangeSubscription, SubscriptionError};

/// Reconcile requests waiting for the controller's scheduler; a full buffer makes the
/// senders wait (the attestation subscription then lags and asks for everything).
pub(crate) const TRIGGER_BUFFER: usize = 4096;

/// The senders of the controller's extra triggers.
#[derive(Clone, Debug)]
pub(crate) struct Triggers {
    one: mpsc::Sender<ObjectRef<CertificateSigningRequest>>,
    all: mpsc::Sender<()>,
    table: Arc<CsrTable>,
}

/// The receiving ends, for `Controller::reconcile_on` and `reconcile_all_on`.
#[derive(Debug)]
pub(crate) struct TriggerStreams {
    pub(crate) one: mpsc::Receiver<ObjectRef<CertificateSigningRequest>>,
    pub(crate) all: mpsc::Receiver<()>,
}

// === impl Triggers ===

impl Triggers {
    /// Senders and receivers sharing `table`'s node index.
    pub(crate) fn new(table: Arc<CsrTable>) -> (Self, TriggerStreams) {
        let (one_tx, one_rx) = mpsc::channel(TRIGGER_BUFFER);
        // One outstanding "everything" covers any later request.
        let (all_tx, all_rx) = mpsc::channel(1);
        (
            Self {
                one: one_tx,
                all: all_tx,
                table,
            },
            TriggerStreams {
                one: one_rx,
                all: all_rx,
            },
        )
    }

    /// Decide again on every undecided CSR of `node`.
    pub(crate) async fn node(&self, node: &str) {
        for name in self.table.csrs_of(node) {
            self.csr(&name).await;
        }
    }

    /// Decide again on every CSR last explained as an address conflict.
    pub(crate) async fn conflicted(&self) {
        for name in self.table.conflicted() {
            self.csr(&name).await;
        }
    }

    /// Decide again on every undecided CSR asking for one of `ips`.
    pub(crate) async fn csrs_asking_for(&self, ips: &HashSet<IpAddr>) {
        for name in self.table.csrs_asking_for(ips) {
            self.csr(&name).await;
        }
    }

    /// Decide again on every undecided CSR asking for an IP that `matches`.
    pub(crate) async fn csrs_asking_for_any(&self, matches: impl Fn(IpAddr) -> bool) {
        for name in self.table.csrs_asking_for_any(matches) {
            self.csr(&name).await;
        }
    }

    /// Decide again on every undecided CSR `requestor` created.
    pub(crate) async fn requestor(&self, requestor: &str) {
        for name in self.table.csrs_by(requestor) {
            self.csr(&name).await;
        }
    }

    /// Decide again on one CSR.
    pub(crate) async fn csr(&self, name: &str) {
        // A closed channel means the controller is shutting down.
        let _ = self.one.send(ObjectRef::new(name)).await;
    }

    /// Decide again on every CSR.
    pub(crate) fn everything(&self) {
        // Full: a request for everything is already waiting, which covers this one.
        let _ = self.all.try_send(());
    }
}

/// Follows the attestation store until `stop`: a node's new or refreshed attestation
/// triggers that node's undecided CSRs (found through the table's index, not a scan);
/// a changed or pruned one also triggers the CSRs waiting on an address conflict; a lag
/// (changes were dropped) triggers everything.
pub(crate) async fn follow_attestations(
    mut changes: ChangeSubscription,
    triggers: Triggers,
    stop: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            () = stop.cancelled() => return,
            change = changes.recv() => change,
        };
        let sent = async {
            match change {
                Ok(change) => {
                    triggers.node(change.node.as_str()).await;
                    if change.kind != ChangeKind::Refreshed {
                        triggers.conflicted().await;
                    }
                    true
                }
                Err(SubscriptionError::Lagged { missed }) => {
                    tracing::warn!(
                        missed,
                        "fell behind the attestation changes; deciding on every CSR again"
                    );
                    triggers.everything();
                    true
                }
                Err(SubscriptionError::Closed) => false,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            more = sent => if !more { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use kube::api::ObjectMeta;
    use rubber_stamp_testkit::csr::CsrSpec;

    use super::*;
    use crate::store::{AttestationStore, NodeFacts, StoreConfig, SystemClock};
    use rubber_stamp_core::{
        INTERFACES_SOURCE, InterfaceFacts, KUBELET_SERVING_SIGNER, Policy, SourceReport,
    };

    fn mk_facts() -> NodeFacts {
        NodeFacts {
            hostname: "h".to_owned(),
            interfaces: vec![InterfaceFacts {
                name: "eth0".to_owned(),
                addresses: vec!["10.0.0.1/24".parse().expect("net")],
            }],
            machine_id: None,
            boot_id: None,
            agent_version: None,
            sources: vec![SourceReport::complete(INTERFACES_SOURCE)],
            metadata: Vec::new(),
            proof_port: None,
        }
    }

    fn mk_pending_csr(table: &CsrTable, name: &str, node: &str) {
        let pem = CsrSpec::kubelet(node, &[node], &[]).pem();
        let csr = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: KUBELET_SERVING_SIGNER.to_owned(),
                request: ByteString(pem.into_bytes()),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        };
        table.parsed(&csr, &Policy::default());
    }

    #[tokio::test]
    async fn a_report_triggers_its_nodes_csrs_and_a_lag_triggers_everything() {
        let store = AttestationStore::new(
            StoreConfig {
                change_capacity: 2,
                ..StoreConfig::default()
            },
            Arc::new(SystemClock),
        );
        let table = Arc::new(CsrTable::default());
        mk_pending_csr(&table, "csr-1", "w1");
        mk_pending_csr(&table, "csr-2", "w2");
        let (triggers, mut streams) = Triggers::new(Arc::clone(&table));
        let stop = CancellationToken::new();
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let w1 = store.open_stream("w1".parse().expect("name"), peer, "01".into());

        // Subscribed before the reports, but reading only after five: it lagged.
        let changes = store.subscribe();
        for _ in 0..5 {
            store.record(&w1, mk_facts(), None).expect("recorded");
        }
        let follower = tokio::spawn(follow_attestations(changes, triggers, stop.clone()));
        let all = tokio::time::timeout(Duration::from_secs(5), streams.all.recv()).await;
        assert_eq!(all.ok().flatten(), Some(()), "a lag asks for everything");
        // The changes kept after the lag, and later ones, trigger w1's CSR only.
        store.record(&w1, mk_facts(), None).expect("recorded");
        let mut triggered = Vec::new();
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(200), streams.one.recv()).await
        {
            triggered.push(r.name);
        }
        assert!(!triggered.is_empty());
        assert!(
            triggered.iter().all(|n| n == "csr-1"),
            "only w1's CSR: {triggered:?}"
        );
        stop.cancel();
        follower.await.expect("follower");
    }
}
