//! Kinds served from another kind's storage in a different version, as kube-apiserver
//! keeps one store per resource and converts on the way in and out: `events.k8s.io/v1`
//! Events are core `v1` Events in storage.

use serde_json::Value;

use crate::events;
use crate::resources::{KINDS, ResourceId, find, kind};

/// A kind served as another kind's objects in a different version: kube-apiserver keeps
/// one store per resource and converts on the way in and out (`events.k8s.io/v1` Events
/// are core `v1` Events in storage).
#[derive(Debug)]
pub struct SharedStorage {
    /// The served version (group, plural; version v1).
    pub view: (&'static str, &'static str),
    /// The kind whose table holds the objects (group, plural; version v1).
    pub storage: (&'static str, &'static str),
    /// The served form to the stored form.
    pub to_storage: fn(&Value) -> Value,
    /// The stored form to the served form.
    pub from_storage: fn(&Value) -> Value,
}

/// Every kind stored as another kind.
pub static SHARED_STORAGE: &[SharedStorage] = &[SharedStorage {
    view: ("events.k8s.io", "events"),
    storage: ("", "events"),
    to_storage: events::to_core,
    from_storage: events::from_core,
}];

fn shared(id: ResourceId) -> Option<(&'static SharedStorage, ResourceId)> {
    let k = kind(id);
    SHARED_STORAGE
        .iter()
        .find(|s| s.view == (k.group, k.plural))
        .and_then(|s| find(s.storage.0, "v1", s.storage.1).map(|storage| (s, storage)))
}

/// The kind whose table holds this kind's objects (itself, unless it is a view).
pub fn storage_of(id: ResourceId) -> ResourceId {
    shared(id).map_or(id, |(_, storage)| storage)
}

/// The kinds served from this storage kind's table besides itself.
pub fn views_of(storage: ResourceId) -> impl Iterator<Item = ResourceId> {
    (0..KINDS.len()).filter(move |&id| id != storage && storage_of(id) == storage)
}

/// An object of kind `id` in its storage kind's form.
pub fn into_storage(id: ResourceId, value: &Value) -> Value {
    shared(id).map_or_else(|| value.clone(), |(s, _)| (s.to_storage)(value))
}

/// An object in its storage form as kind `id` serves it.
pub fn from_storage(id: ResourceId, value: &Value) -> Value {
    shared(id).map_or_else(|| value.clone(), |(s, _)| (s.from_storage)(value))
}
