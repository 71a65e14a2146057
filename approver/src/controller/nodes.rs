//! Node objects in the core's terms: a watch on Nodes folded into one indexed
//! [`NodeSet`], updated in place (no copy of the world per decision), and a trigger for the
//! CSRs a Node change can affect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::triggers::Triggers;
use crate::k8s;
use rubber_stamp_core::{NodeLookup as _, NodeRecord, NodeSet};

/// Every Node the watch shows, as [`NodeRecord`]s.
#[derive(Debug, Default)]
pub(crate) struct NodeIndex {
    set: RwLock<NodeSet>,
    ready: AtomicBool,
}

/// A consistent read view of the Nodes; a read lock, so never held across an `.await`.
/// Lock order: take the attestation store's view first, then this one.
pub(crate) type NodeView<'a> = RwLockReadGuard<'a, NodeSet>;

// === impl NodeIndex ===

impl NodeIndex {
    /// The Nodes, for one decision.
    pub(crate) fn read(&self) -> NodeView<'_> {
        self.set.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the first list of Nodes is complete: decisions wait for it, so a
    /// half-known cluster never explains a CSR as "no such Node".
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Number of Nodes.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// Replaces everything (after a list); returns the names whose record changed.
    fn replace(&self, new: NodeSet) -> Vec<String> {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *set, new);
        let mut changed: Vec<String> = set
            .iter()
            .filter(|n| old.node(&n.name).as_deref() != Some(&**n))
            .map(|n| n.name.clone())
            .collect();
        changed.extend(
            old.iter()
                .filter(|n| set.node(&n.name).is_none())
                .map(|n| n.name.clone()),
        );
        changed
    }

    /// Inserts or updates one Node; true when its record changed.
    fn upsert(&self, record: NodeRecord) -> bool {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        if set.node(&record.name).as_deref() == Some(&record) {
            return false;
        }
        set.insert(Arc::new(record));
        true
    }

    /// Removes one Node; true when it was known.
    fn remove(&self, name: &str) -> bool {
        self.set
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some()
    }
}

/// Follows the Nodes until `stop`: keeps `index` current and triggers the CSRs of every
/// Node whose record (addresses, machine-id, boot-id) changed, plus the CSRs waiting on an
/// address conflict. Only record changes count: status heartbeats trigger nothing.
pub(crate) async fn watch_nodes(
    api: Api<Node>,
    index: Arc<NodeIndex>,
    triggers: Triggers,
    gauge: Gauge,
    stop: CancellationToken,
) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Option<NodeSet> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let changed: Vec<String> = match event {
            Err(error) => {
                tracing::warn!(%error, "watching Nodes");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listing = Some(NodeSet::new());
                continue;
            }
            Ok(watcher::Event::InitApply(node)) => {
                listing
                    .get_or_insert_with(NodeSet::new)
                    .insert(Arc::new(k8s::node_record(&node)));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let changed = index.replace(listing.take().unwrap_or_default());
                gauge.set(i64::try_from(index.len()).unwrap_or(i64::MAX));
                if !index.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(nodes = index.len(), "Nodes listed; deciding");
                    triggers.everything();
                    continue;
                }
                changed
            }
            Ok(watcher::Event::Apply(node)) => {
                let record = k8s::node_record(&node);
                let name = record.name.clone();
                if index.upsert(record) {
                    vec![name]
                } else {
                    continue;
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                let name = node.metadata.name.unwrap_or_default();
                if index.remove(&name) {
                    vec![name]
                } else {
                    continue;
                }
            }
        };
        gauge.set(i64::try_from(index.len()).unwrap_or(i64::MAX));
        if changed.is_empty() {
            continue;
        }
        let sent = async {
            for name in &changed {
                triggers.node(name).await;
            }
            triggers.conflicted().await;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = sent => {}
        }
    }
}
