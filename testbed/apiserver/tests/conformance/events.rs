//! Events through both versions, as kube-apiserver serves them: `events.k8s.io/v1` and core
//! `v1` are one store (pkg/apis/events/v1/conversion.go), validated by
//! `ValidateEventCreate`/`ValidateEventUpdate` (pkg/apis/core/validation/events.go).
//! The Events are published with kube-rs's `Recorder`, the approver's own code path.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as Publish, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use rubber_stamp_apiserver::{Cluster, ClusterOptions};
use serde_json::json;

use super::api::csr;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn cluster() -> Result<Cluster, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Cluster::start(ClusterOptions::default()).await?)
}

fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// What the approver's `Recorder` writes through `events.k8s.io/v1` is the core `v1` Event
/// `kubectl describe` reads — same name, uid and resourceVersion, `regarding` as
/// `involvedObject`, `note` as `message` — and a repeat becomes a series patch that core
/// watchers see as MODIFIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_seen_through_both_versions() -> TestResult {
    let c = cluster().await?;
    let client = c.client(&c.admin()?).await?;
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        Api::all(client.clone());
    let made = csrs
        .create(
            &PostParams::default(),
            &csr(
                "csr-ev",
                "w1",
                "kubernetes.io/kubelet-serving",
                &["server auth", "digital signature"],
            )?,
        )
        .await?;
    let reference = made.object_ref(&());

    let core_all: Api<CoreEvent> = Api::all(client.clone());
    let selector = format!(
        "involvedObject.kind=CertificateSigningRequest,involvedObject.name=csr-ev,involvedObject.namespace=,involvedObject.uid={}",
        made.uid().unwrap_or_default()
    );
    let watch_from = core_all
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rubber-stamp-approver".into(),
            instance: Some("approver-0".into()),
        },
    );
    let event = Publish {
        type_: EventType::Normal,
        reason: "Approved".into(),
        note: Some("every SAN attested".into()),
        action: "Approve".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await?;

    // A cluster-scoped object's Events live in "default" (legacyValidateEvent).
    let v1: Api<Event> = Api::namespaced(client.clone(), "default");
    let listed = v1.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    let created = &listed.items[0];

    let core = core_all
        .list(&ListParams::default().fields(&selector))
        .await?;
    assert_eq!(
        core.items.len(),
        1,
        "the core view finds the Event as kubectl describe asks"
    );
    let seen = &core.items[0];
    assert_eq!(seen.metadata.name, created.metadata.name);
    assert_eq!(seen.metadata.uid, created.metadata.uid);
    assert_eq!(
        seen.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(seen.message.as_deref(), Some("every SAN attested"));
    assert_eq!(seen.reason.as_deref(), Some("Approved"));
    assert_eq!(
        seen.reporting_component.as_deref(),
        Some("rubber-stamp-approver")
    );
    assert_eq!(seen.involved_object.name.as_deref(), Some("csr-ev"));
    assert_eq!(seen.metadata.namespace.as_deref(), Some("default"));

    // The Recorder's second publish patches the series through events.k8s.io/v1.
    recorder.publish(&event, &reference).await?;
    let name = created.name_any();
    let repeated = Api::<CoreEvent>::namespaced(client.clone(), "default")
        .get(&name)
        .await?;
    assert_eq!(repeated.series.as_ref().map(|s| s.count), Some(Some(2)));

    let mut changes = core_all
        .watch(
            &WatchParams::default().fields(&selector),
            watch_from.as_deref().unwrap_or("0"),
        )
        .await?
        .boxed();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        // Bounded, so a missing event fails the test instead of hanging it.
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), changes.try_next())
            .await
            .map_err(|_| "no watch event within 30 s")?;
        match next? {
            Some(WatchEvent::Added(e)) => kinds.push(("ADDED", e.message)),
            Some(WatchEvent::Modified(e)) => kinds.push(("MODIFIED", e.message)),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected watch event {other:?}"),
        }
    }
    let note = Some("every SAN attested".to_owned());
    assert_eq!(kinds, [("ADDED", note.clone()), ("MODIFIED", note)]);
    c.shutdown().await;
    Ok(())
}

fn v1_event(name: &str, namespace: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reporting_controller: Some("rubber-stamp-approver".into()),
        reporting_instance: Some("approver-0".into()),
        action: Some("Approve".into()),
        reason: Some("Approved".into()),
        type_: Some("Normal".into()),
        note: Some("ok".into()),
        regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("certificates.k8s.io/v1".into()),
            kind: Some("CertificateSigningRequest".into()),
            name: Some("csr-x".into()),
            ..Default::default()
        }),
        ..Event::default()
    }
}

/// `ValidateEventCreate`: the strict rules apply to `events.k8s.io` requests (eventTime
/// required, deprecated fields unset); the legacy ones to both (the namespace of an Event
/// about a cluster-scoped object, reportingInstance ≤ 128, note ≤ 1 KiB).
/// `ValidateEventUpdate`: through `events.k8s.io` only the series may change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_validated_as_kube_apiserver_does() -> TestResult {
    let c = cluster().await?;
    let client = c.client(&c.admin()?).await?;
    let pp = PostParams::default();
    let v1: Api<Event> = Api::namespaced(client.clone(), "default");

    let mut no_time = v1_event("no-time", "default");
    no_time.event_time = None;
    let (code, message) = api_error(v1.create(&pp, &no_time).await);
    assert_eq!(code, 422);
    assert!(message.contains("eventTime: Required value"), "{message}");
    // The same Event through core v1 is a legacy Event, accepted.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let legacy: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "no-time"},
        "involvedObject": {"kind": "CertificateSigningRequest", "name": "csr-x"},
        "reason": "Approved", "message": "ok", "type": "Normal", "count": 1,
    }))?;
    core.create(&pp, &legacy).await?;

    let kube_public: Api<Event> = Api::namespaced(client.clone(), "kube-public");
    let (code, message) = api_error(
        kube_public
            .create(&pp, &v1_event("elsewhere", "kube-public"))
            .await,
    );
    assert_eq!(code, 422);
    assert!(message.contains("involvedObject.namespace"), "{message}");

    let mut long = v1_event("long", "default");
    long.reporting_instance = Some("i".repeat(129));
    long.note = Some("n".repeat(1025));
    let (code, message) = api_error(v1.create(&pp, &long).await);
    assert_eq!(code, 422);
    assert!(
        message.contains("reportingInstance: Invalid value")
            && message.contains("message: Invalid value"),
        "{message}"
    );
    let mut at_limit = v1_event("at-limit", "default");
    at_limit.reporting_instance = Some("i".repeat(128));
    at_limit.note = Some("n".repeat(1024));
    v1.create(&pp, &at_limit).await?;

    let patch = |body| Patch::Merge(body);
    let changed = v1
        .patch(
            "at-limit",
            &PatchParams::default(),
            &patch(json!({"note": "rewritten"})),
        )
        .await;
    let (code, message) = api_error(changed);
    assert_eq!(code, 422);
    assert!(message.contains("field is immutable"), "{message}");
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-12-05T06:00:00.000000Z"}});
    v1.patch("at-limit", &PatchParams::default(), &patch(series))
        .await?;
    c.shutdown().await;
    Ok(())
}

/// Deleting through one version removes the Event from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_through_one_version_is_seen_through_the_other() -> TestResult {
    let c = cluster().await?;
    let client = c.client(&c.admin()?).await?;
    let v1: Api<Event> = Api::namespaced(client.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    v1.create(&PostParams::default(), &v1_event("gone", "default"))
        .await?;
    assert!(core.get_opt("gone").await?.is_some());
    core.delete("gone", &Default::default()).await?;
    assert!(v1.get_opt("gone").await?.is_none());
    c.shutdown().await;
    Ok(())
}
