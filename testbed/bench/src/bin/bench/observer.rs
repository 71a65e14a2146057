//! When each CSR was created, approved and issued, as the testbed cluster's store commits
//! the writes: a thread blocked on the store's change channel stamps every change the
//! moment it is committed, so the times include neither HTTP nor any watch delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rubber_stamp_apiserver::Cluster;
use rubber_stamp_apiserver::store::{Change, ChangeType};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::{broadcast, watch};

/// What happened to the CSRs, and when.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Creation commits.
    pub(crate) created: HashMap<String, Instant>,
    /// First commit carrying an `Approved` condition.
    pub(crate) approved: HashMap<String, Instant>,
    /// First commit carrying a `Denied` condition.
    pub(crate) denied: HashMap<String, Instant>,
    /// First commit carrying `status.certificate`.
    pub(crate) issued: HashMap<String, Instant>,
    /// Changes the observer missed (its channel overflowed): the figures are then
    /// incomplete, and the run fails.
    pub(crate) missed: u64,
}

/// Follows every CSR change of a cluster from now on.
#[derive(Debug)]
pub(crate) struct CsrObserver {
    timeline: Arc<Mutex<Timeline>>,
    changes: watch::Receiver<u64>,
}

#[derive(Deserialize)]
struct StatusOnly {
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    conditions: Option<Vec<Condition>>,
    #[serde(default)]
    certificate: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
}

impl CsrObserver {
    /// Starts observing `cluster`'s CSRs on a dedicated thread (it ends with the cluster).
    pub(crate) fn start(cluster: &Cluster) -> anyhow::Result<Self> {
        let rx = cluster.objects().subscribe::<CertificateSigningRequest>()?;
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let (tx, changes) = watch::channel(0u64);
        let shared = Arc::clone(&timeline);
        std::thread::Builder::new()
            .name("csr-observer".to_owned())
            .spawn(move || observe(rx, &shared, &tx))?;
        Ok(Self { timeline, changes })
    }

    /// Reads the timeline.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Timeline) -> T) -> T {
        f(&self.timeline.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until `done` holds for the timeline, at most `within`.
    pub(crate) async fn wait(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&Timeline) -> bool,
    ) -> anyhow::Result<()> {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changes.mark_unchanged();
            if self.with(&done) {
                return Ok(());
            }
            if self.with(|t| t.missed) > 0 {
                bail!("the CSR observer fell behind the store; figures would be wrong");
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                bail!("timed out after {within:?} waiting for {what}");
            }
        }
    }
}

fn observe(
    mut rx: broadcast::Receiver<Arc<Change>>,
    timeline: &Mutex<Timeline>,
    tx: &watch::Sender<u64>,
) {
    loop {
        let change = match rx.blocking_recv() {
            Ok(change) => change,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                timeline
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .missed += missed;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let at = Instant::now();
        let status = serde_json::from_slice::<StatusOnly>(&change.object.json)
            .ok()
            .and_then(|s| s.status);
        let has = |ty: &str| {
            status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty))
        };
        let issued = status.as_ref().is_some_and(|s| s.certificate.is_some());
        {
            let mut t = timeline.lock().unwrap_or_else(PoisonError::into_inner);
            let name = &change.key.name;
            if change.kind == ChangeType::Added {
                t.created.entry(name.clone()).or_insert(at);
            }
            if change.kind != ChangeType::Deleted {
                if has("Approved") {
                    t.approved.entry(name.clone()).or_insert(at);
                }
                if has("Denied") {
                    t.denied.entry(name.clone()).or_insert(at);
                }
                if issued {
                    t.issued.entry(name.clone()).or_insert(at);
                }
            }
        }
        tx.send_modify(|n| *n += 1);
    }
}
