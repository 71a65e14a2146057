//! Real kube-rs machinery against the testbed: the watcher across dropped streams and 410 re-lists, a Controller, the events Recorder, and two kube-lease-manager instances competing for one Lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_lease_manager::LeaseManagerBuilder;
use rubber_stamp_apiserver::{Cluster, ClusterOptions};
use serde_json::json;
use tokio::sync::mpsc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn cluster(bookmark: Duration) -> Result<Cluster, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Cluster::start(ClusterOptions {
        bookmark_interval: bookmark,
        ..ClusterOptions::default()
    })
    .await?)
}

fn cm(name: &str, v: u32) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("v".to_owned(), v.to_string())].into()),
        ..ConfigMap::default()
    }
}

fn v_of(c: &ConfigMap) -> u32 {
    c.data
        .as_ref()
        .and_then(|d| d.get("v"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitDone,
    Apply(String, u32),
    Delete(String),
}

/// Folds watcher events into the state a reflector would hold.
#[derive(Debug, Default)]
struct Mirror {
    state: BTreeMap<String, u32>,
    buffer: BTreeMap<String, u32>,
    log: Vec<Seen>,
}

impl Mirror {
    fn apply(&mut self, e: watcher::Event<ConfigMap>) {
        let name = |c: &ConfigMap| c.metadata.name.clone().unwrap_or_default();
        match e {
            watcher::Event::Init => {
                self.buffer.clear();
                self.log.push(Seen::Init);
            }
            watcher::Event::InitApply(c) => {
                self.buffer.insert(name(&c), v_of(&c));
            }
            watcher::Event::InitDone => {
                self.state = std::mem::take(&mut self.buffer);
                self.log.push(Seen::InitDone);
            }
            watcher::Event::Apply(c) => {
                self.state.insert(name(&c), v_of(&c));
                self.log.push(Seen::Apply(name(&c), v_of(&c)));
            }
            watcher::Event::Delete(c) => {
                self.state.remove(&name(&c));
                self.log.push(Seen::Delete(name(&c)));
            }
        }
    }
}

async fn until(
    mirror: &mut Mirror,
    rx: &mut mpsc::UnboundedReceiver<watcher::Event<ConfigMap>>,
    cond: impl Fn(&Mirror) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond(mirror) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => mirror.apply(e),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn watcher_resumes_after_dropped_streams_and_relists_after_410_without_losing_events()
-> TestResult {
    let c = cluster(Duration::from_millis(200)).await?;
    let client = c.client(&c.admin()?).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("pre-{i}"), 0))
            .await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stream = watcher(cms.clone(), watcher::Config::default().page_size(2)).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(e) = stream.next().await {
            if let Ok(e) = e
                && tx.send(e).is_err()
            {
                return;
            }
        }
    });
    let mut m = Mirror::default();
    assert!(
        until(&mut m, &mut rx, |m| m.log.contains(&Seen::InitDone)).await,
        "initial paged list"
    );
    assert_eq!(m.state.len(), 3);

    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("cm-{i}"), 0))
            .await?;
    }
    assert!(
        until(&mut m, &mut rx, |m| m.state.len() == 8).await,
        "adds seen: {:?}",
        m.log
    );

    // A dropped stream resumes from the last resourceVersion: history replays, no re-list.
    c.faults().drop_watches();
    for i in 0..5 {
        cms.patch(
            &format!("cm-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "1"}})),
        )
        .await?;
    }
    cms.create(&PostParams::default(), &cm("cm-5", 1)).await?;
    let mark = m.log.len();
    assert!(
        until(&mut m, &mut rx, |m| (0..6)
            .all(|i| m.state.get(&format!("cm-{i}")) == Some(&1)))
        .await,
        "modifications after a drop: {:?}",
        m.log
    );
    assert!(
        !m.log[mark..].contains(&Seen::Init),
        "resumed without a re-list: {:?}",
        &m.log[mark..]
    );
    for i in 0..6 {
        assert!(
            m.log[mark..].contains(&Seen::Apply(format!("cm-{i}"), 1)),
            "every modification delivered"
        );
    }

    // A 410 on the next watch forces a re-list; changes made meanwhile are not lost.
    c.faults().expire_next_watch();
    c.faults().drop_watches();
    for i in 1..6 {
        cms.patch(
            &format!("cm-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await?;
    }
    cms.delete("cm-0", &DeleteParams::default()).await?;
    let mark = m.log.len();
    let want: BTreeMap<String, u32> = (1..6)
        .map(|i| (format!("cm-{i}"), 2))
        .chain((0..3).map(|i| (format!("pre-{i}"), 0)))
        .collect();
    assert!(
        until(&mut m, &mut rx, |m| m.state == want).await,
        "state after 410: {:?} log {:?}",
        m.state,
        m.log
    );
    assert!(
        m.log[mark..].contains(&Seen::Init),
        "a 410 re-lists: {:?}",
        &m.log[mark..]
    );
    assert!(c.faults().injected() >= 1);
    task.abort();
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn compacted_history_answers_410_and_watch_streams_bookmarks() -> TestResult {
    let c = cluster(Duration::from_millis(100)).await?;
    let client = c.client(&c.admin()?).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms.create(&PostParams::default(), &cm("a", 0)).await?;
    let old_rv = first.metadata.resource_version.clone().ok_or("rv")?;
    cms.create(&PostParams::default(), &cm("b", 0)).await?;
    let wp = kube::api::WatchParams::default().timeout(5);
    // Before compaction, a watch from an old resourceVersion replays what followed it.
    let mut s = cms.watch(&wp, &old_rv).await?.boxed();
    match s.next().await {
        Some(Ok(kube::api::WatchEvent::Added(o))) => {
            assert_eq!(o.metadata.name.as_deref(), Some("b"))
        }
        other => return Err(format!("expected ADDED b, got {other:?}").into()),
    }
    let mut bookmark = false;
    while let Some(Ok(e)) = s.next().await {
        if let kube::api::WatchEvent::Bookmark(b) = e {
            assert!(b.metadata.resource_version.parse::<u64>()? > old_rv.parse::<u64>()?);
            bookmark = true;
            break;
        }
    }
    assert!(bookmark, "bookmarks are sent");
    c.objects().compact();
    let mut s = cms.watch(&wp, &old_rv).await?.boxed();
    match s.next().await {
        Some(Ok(kube::api::WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
        }
        other => return Err(format!("expected 410, got {other:?}").into()),
    }
    c.shutdown().await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile: {0}")]
struct ReconcileError(#[from] kube::Error);

#[tokio::test]
async fn a_kube_runtime_controller_reconciles_every_object() -> TestResult {
    let c = cluster(Duration::from_secs(1)).await?;
    let client = c.client(&c.admin()?).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    async fn reconcile(
        obj: Arc<ConfigMap>,
        api: Arc<Api<ConfigMap>>,
    ) -> Result<Action, ReconcileError> {
        let v = v_of(&obj).to_string();
        let done = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("reconciled"))
            == Some(&v);
        if !done {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let patch = Patch::Merge(json!({"metadata": {"annotations": {"reconciled": v}}}));
            api.patch(&name, &PatchParams::default(), &patch).await?;
        }
        Ok(Action::await_change())
    }
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(100)),
            Arc::new(cms.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("c-{i}"), i))
            .await?;
    }
    for i in 0..5 {
        cms.patch(
            &format!("c-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "99"}})),
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let all: Vec<ConfigMap> = c.objects().list(Some("default"))?;
        let ok = all.len() == 10
            && all.iter().all(|o| {
                o.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("reconciled"))
                    == Some(&v_of(o).to_string())
            });
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "controller did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_events_recorder_publishes_events() -> TestResult {
    let c = cluster(Duration::from_secs(1)).await?;
    let client = c.client(&c.admin()?).await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tester".into(),
            instance: Some("t-1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("certificates.k8s.io/v1".into()),
        kind: Some("CertificateSigningRequest".into()),
        name: Some("csr-1".into()),
        ..ObjectReference::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "AddressConflict".into(),
        note: Some("10.0.0.7 is attested by another node".into()),
        action: "Approve".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await?;
    recorder.publish(&ev, &reference).await?;
    let events: Vec<EventV1> = c.objects().list(Some("default"))?;
    assert_eq!(events.len(), 1, "the repeat is a series on the same Event");
    let e = &events[0];
    assert_eq!(e.reason.as_deref(), Some("AddressConflict"));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("csr-1")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn two_lease_managers_never_hold_the_lease_at_once() -> TestResult {
    let c = cluster(Duration::from_secs(1)).await?;
    let mut managers = Vec::new();
    for id in ["alpha", "beta"] {
        let client = c.client(&c.admin()?).await?;
        let m = LeaseManagerBuilder::new(client, "leader")
            .with_namespace("kube-system")
            .with_identity(id)
            .with_duration(3)
            .with_grace(1)
            .build()
            .await?;
        managers.push(m.watch().await);
    }
    let (mut a_rx, a_task) = managers.remove(0);
    let (b_rx, b_task) = managers.remove(0);
    let holder = || -> Result<Option<String>, Box<dyn std::error::Error>> {
        let lease: Option<Lease> = c.objects().get("kube-system", "leader")?;
        Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    };
    // Both race for the lease; sample for a while: never two leaders, and the
    // server-side holder is the one that thinks it leads.
    let mut leader_seen = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let (a, b) = (*a_rx.borrow(), *b_rx.borrow());
        assert!(!(a && b), "both managers hold the lease");
        if a || b {
            let who = if a { "alpha" } else { "beta" };
            if let Some(prev) = &leader_seen {
                assert_eq!(prev, who, "leadership flapped while the holder was alive");
            }
            leader_seen = Some(who.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = leader_seen.ok_or("nobody acquired the lease")?;
    assert_eq!(holder()?.as_deref(), Some(first.as_str()));
    // The leader steps down (releases); the other takes over.
    let (mut follower_rx, leader_task, follower) = if first == "alpha" {
        drop(a_rx);
        (b_rx, a_task, "beta")
    } else {
        let b = b_rx;
        drop(b);
        a_rx.mark_changed();
        (a_rx, b_task, "alpha")
    };
    leader_task.await??;
    assert_eq!(holder()?, None, "the leader released the lease");
    tokio::time::timeout(Duration::from_secs(10), follower_rx.wait_for(|held| *held)).await??;
    assert_eq!(holder()?.as_deref(), Some(follower));
    drop(follower_rx);
    c.shutdown().await;
    Ok(())
}
