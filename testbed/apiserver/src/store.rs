//! In-memory object storage: one ordered map per kind, one global resourceVersion
//! counter, a bounded per-kind event history for watches and a broadcast channel
//! that delivers every committed change to live watchers.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::{KINDS, ResourceId, kind};
use super::status::ApiError;
use super::versions::{from_storage, into_storage, storage_of, views_of};

/// Namespace (empty for cluster-scoped kinds) and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// One committed version of an object: its JSON and what selectors need.
#[derive(Debug)]
pub struct StoredObject {
    /// The resourceVersion of this version.
    pub rv: u64,
    /// The object, serialised once.
    pub json: Bytes,
    /// `metadata.labels`.
    pub labels: Box<[(Box<str>, Box<str>)]>,
    /// Values of the kind's selectable fields, in `field_labels` order.
    pub fields: Box<[Box<str>]>,
    /// The kind this form is of.
    id: ResourceId,
    /// The same object as the other kinds sharing its storage serve it (an Event's
    /// `events.k8s.io/v1` form), sealed with it.
    versions: Box<[Arc<StoredObject>]>,
}

impl StoredObject {
    /// Seals an object of kind `id`: stamps `metadata.resourceVersion` and serialises it,
    /// in its storage kind's form and in every other version served from that storage.
    pub fn seal(id: ResourceId, value: Value, rv: u64) -> Self {
        let storage = storage_of(id);
        let stored = if storage == id {
            value
        } else {
            into_storage(id, &value)
        };
        let versions = views_of(storage)
            .map(|view| {
                Arc::new(Self::seal_one(
                    view,
                    from_storage(view, &stored),
                    rv,
                    Box::new([]),
                ))
            })
            .collect();
        Self::seal_one(storage, stored, rv, versions)
    }

    fn seal_one(
        id: ResourceId,
        mut value: Value,
        rv: u64,
        versions: Box<[Arc<StoredObject>]>,
    ) -> Self {
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let labels = value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().unwrap_or("").into()))
                    .collect()
            })
            .unwrap_or_default();
        let fields = (kind(id).field_values)(&value).into_boxed_slice();
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Self {
            rv,
            json,
            labels,
            fields,
            id,
            versions,
        }
    }

    /// This object as kind `id` serves it (itself for kinds with their own storage).
    pub fn version(self: &Arc<Self>, id: ResourceId) -> Arc<Self> {
        if self.id == id {
            return self.clone();
        }
        self.versions
            .iter()
            .find(|v| v.id == id)
            .cloned()
            .unwrap_or_else(|| self.clone())
    }

    /// The object as a JSON value.
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.json)
            .map_err(|e| ApiError::internal(format!("decoding stored object: {e}")))
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

impl ChangeType {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watchers receive it: its objects are in the storage kind's
/// form ([`StoredObject::version`] gives the form a view serves).
#[derive(Debug)]
pub struct Change {
    /// What happened.
    pub kind: ChangeType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (for deletions: the last state, stamped
    /// with the deletion's resourceVersion).
    pub object: Arc<StoredObject>,
    /// The object before the change, for selector transitions.
    pub prev: Option<Arc<StoredObject>>,
}

/// What a storage write can fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No such object.
    NotFound,
    /// An object with that key exists.
    AlreadyExists,
    /// The object's resourceVersion is not the expected one.
    Conflict,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Arc<StoredObject>>,
    /// The store's resourceVersion when listed.
    pub rv: u64,
    /// Key of the last item if more items match.
    pub next: Option<ObjectKey>,
    /// How many matching items follow.
    pub remaining: usize,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic ADDED events for every current object, then changes.
    Current,
    /// Every change after this resourceVersion.
    After(u64),
}

/// The start of a watch: what to send first and the live receiver.
#[derive(Debug)]
pub struct WatchStart {
    /// Current objects (for [`WatchFrom::Current`]).
    pub initial: Vec<(ObjectKey, Arc<StoredObject>)>,
    /// Retained changes after the requested resourceVersion.
    pub replay: Vec<Arc<Change>>,
    /// Live changes.
    pub rx: broadcast::Receiver<Arc<Change>>,
    /// The store's resourceVersion at the start.
    pub rv: u64,
}

struct Table {
    objects: BTreeMap<ObjectKey, Arc<StoredObject>>,
    history: VecDeque<Arc<Change>>,
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

struct Inner {
    rv: u64,
    tables: Vec<Table>,
}

/// The object store.
pub struct Store {
    inner: Mutex<Inner>,
    rv: AtomicU64,
    table_rv: Vec<AtomicU64>,
    history_limit: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("rv", &self.rv.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// === impl Store ===

impl Store {
    /// An empty store keeping `history_limit` events per kind for watches and
    /// `channel_capacity` undelivered events per kind for live watchers.
    pub fn new(history_limit: usize, channel_capacity: usize) -> Self {
        let tables = KINDS
            .iter()
            .map(|_| Table {
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                tx: broadcast::channel(channel_capacity.max(1)).0,
            })
            .collect();
        Self {
            inner: Mutex::new(Inner { rv: 1, tables }),
            rv: AtomicU64::new(1),
            table_rv: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            history_limit: history_limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv.load(Ordering::Acquire)
    }

    /// The resourceVersion of the last change to a kind (0 if none).
    pub fn kind_rv(&self, id: ResourceId) -> u64 {
        self.table_rv[storage_of(id)].load(Ordering::Acquire)
    }

    /// Number of objects of a kind.
    pub fn count(&self, id: ResourceId) -> usize {
        self.lock().tables[storage_of(id)].objects.len()
    }

    /// One object.
    pub fn get(&self, id: ResourceId, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        self.lock().tables[storage_of(id)]
            .objects
            .get(key)
            .map(|o| o.version(id))
    }

    /// Lists objects in key order, starting after `after`, restricted to a
    /// namespace, filtered by `pred`, at most `limit`.
    pub fn list(
        &self,
        id: ResourceId,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: Option<usize>,
        pred: impl Fn(&ObjectKey, &StoredObject) -> bool,
    ) -> ListPage {
        let g = self.lock();
        let table = &g.tables[storage_of(id)];
        let start = match (after, namespace) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included(ObjectKey::new(ns, "")),
            (None, None) => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut last_key: Option<&ObjectKey> = None;
        let mut remaining = 0;
        for (k, o) in table.objects.range((start, Bound::Unbounded)) {
            if let Some(ns) = namespace
                && k.namespace != ns
            {
                break;
            }
            let o = o.version(id);
            if !pred(k, &o) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
                continue;
            }
            items.push(o);
            last_key = Some(k);
        }
        let next = if remaining > 0 {
            last_key.cloned()
        } else {
            None
        };
        ListPage {
            items,
            rv: g.rv,
            next,
            remaining,
        }
    }

    fn commit(&self, g: &mut Inner, id: ResourceId, change: Change) -> Arc<Change> {
        let change = Arc::new(change);
        let rv = change.object.rv;
        let table = &mut g.tables[id];
        table.history.push_back(change.clone());
        while table.history.len() > self.history_limit {
            if let Some(old) = table.history.pop_front() {
                table.compacted = old.object.rv;
            }
        }
        // No receivers is fine: nobody watches this kind right now.
        let _ = table.tx.send(change.clone());
        self.table_rv[id].store(rv, Ordering::Release);
        self.rv.store(rv, Ordering::Release);
        change
    }

    /// Creates an object; `value` must carry its final metadata except resourceVersion.
    pub fn create(
        &self,
        id: ResourceId,
        key: ObjectKey,
        value: Value,
    ) -> Result<Arc<StoredObject>, StoreError> {
        let t = storage_of(id);
        let mut g = self.lock();
        if g.tables[t].objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        g.rv += 1;
        let obj = Arc::new(StoredObject::seal(id, value, g.rv));
        g.tables[t].objects.insert(key.clone(), obj.clone());
        self.commit(
            &mut g,
            t,
            Change {
                kind: ChangeType::Added,
                key,
                object: obj.clone(),
                prev: None,
            },
        );
        Ok(obj.version(id))
    }

    /// Creates an object after `finish` has completed it under the store's lock, seeing
    /// every stored object of the kind: how kube-apiserver's allocators reserve a value
    /// atomically with the write (a Service's ClusterIP). `finish`'s error is returned as
    /// is; nothing is stored then.
    pub fn create_finishing(
        &self,
        id: ResourceId,
        key: ObjectKey,
        mut value: Value,
        finish: impl FnOnce(&mut Value, &mut dyn Iterator<Item = &StoredObject>) -> Result<(), ApiError>,
    ) -> Result<Result<Arc<StoredObject>, StoreError>, ApiError> {
        let t = storage_of(id);
        let mut g = self.lock();
        if g.tables[t].objects.contains_key(&key) {
            return Ok(Err(StoreError::AlreadyExists));
        }
        finish(&mut value, &mut g.tables[t].objects.values().map(|o| &**o))?;
        g.rv += 1;
        let obj = Arc::new(StoredObject::seal(id, value, g.rv));
        g.tables[t].objects.insert(key.clone(), obj.clone());
        self.commit(
            &mut g,
            t,
            Change {
                kind: ChangeType::Added,
                key,
                object: obj.clone(),
                prev: None,
            },
        );
        Ok(Ok(obj.version(id)))
    }

    /// Replaces an object if its resourceVersion is still `expected_rv`.
    pub fn update(
        &self,
        id: ResourceId,
        key: &ObjectKey,
        expected_rv: u64,
        value: Value,
    ) -> Result<Arc<StoredObject>, StoreError> {
        let t = storage_of(id);
        let mut g = self.lock();
        let prev = match g.tables[t].objects.get(key) {
            None => return Err(StoreError::NotFound),
            Some(p) if p.rv != expected_rv => return Err(StoreError::Conflict),
            Some(p) => p.clone(),
        };
        g.rv += 1;
        let obj = Arc::new(StoredObject::seal(id, value, g.rv));
        g.tables[t].objects.insert(key.clone(), obj.clone());
        self.commit(
            &mut g,
            t,
            Change {
                kind: ChangeType::Modified,
                key: key.clone(),
                object: obj.clone(),
                prev: Some(prev),
            },
        );
        Ok(obj.version(id))
    }

    /// Deletes an object (if its resourceVersion is `expected_rv`, when given);
    /// returns its last state stamped with the deletion's resourceVersion.
    pub fn delete(
        &self,
        id: ResourceId,
        key: &ObjectKey,
        expected_rv: Option<u64>,
    ) -> Result<Arc<StoredObject>, StoreError> {
        let t = storage_of(id);
        let mut g = self.lock();
        let prev = match g.tables[t].objects.get(key) {
            None => return Err(StoreError::NotFound),
            Some(p) if expected_rv.is_some_and(|rv| rv != p.rv) => {
                return Err(StoreError::Conflict);
            }
            Some(p) => p.clone(),
        };
        let value = serde_json::from_slice::<Value>(&prev.json).unwrap_or(Value::Null);
        g.tables[t].objects.remove(key);
        g.rv += 1;
        let obj = Arc::new(StoredObject::seal(t, value, g.rv));
        self.commit(
            &mut g,
            t,
            Change {
                kind: ChangeType::Deleted,
                key: key.clone(),
                object: obj.clone(),
                prev: Some(prev),
            },
        );
        Ok(obj.version(id))
    }

    /// Starts a watch on a kind; `Err` is `410 Expired` for a compacted resourceVersion.
    pub fn watch(&self, id: ResourceId, from: WatchFrom) -> Result<WatchStart, ApiError> {
        let g = self.lock();
        let table = &g.tables[storage_of(id)];
        let rx = table.tx.subscribe();
        match from {
            WatchFrom::Current => Ok(WatchStart {
                initial: table
                    .objects
                    .iter()
                    .map(|(k, o)| (k.clone(), o.version(id)))
                    .collect(),
                replay: Vec::new(),
                rx,
                rv: g.rv,
            }),
            WatchFrom::After(rv) => {
                if rv < table.compacted {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        table.compacted
                    )));
                }
                if rv > g.rv {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {rv}, current: {}",
                        g.rv
                    )));
                }
                let from = table.history.partition_point(|c| c.object.rv <= rv);
                Ok(WatchStart {
                    initial: Vec::new(),
                    replay: table.history.range(from..).cloned().collect(),
                    rx,
                    rv: g.rv,
                })
            }
        }
    }

    /// Subscribes to live changes of a kind (for in-cluster controllers).
    pub fn subscribe(&self, id: ResourceId) -> broadcast::Receiver<Arc<Change>> {
        self.lock().tables[storage_of(id)].tx.subscribe()
    }

    /// The oldest resourceVersion a watch of this kind may still start from.
    pub fn compacted(&self, id: ResourceId) -> u64 {
        self.lock().tables[storage_of(id)].compacted
    }

    /// Drops all retained history: watches from any older resourceVersion get 410.
    pub fn compact(&self) {
        let mut g = self.lock();
        let rv = g.rv;
        for t in &mut g.tables {
            t.history.clear();
            t.compacted = rv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ids;
    use serde_json::json;

    fn node(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"a": "b"}}})
    }

    #[test]
    fn writes_bump_one_global_counter_and_enforce_preconditions() {
        let s = Store::new(10, 16);
        let n = ids::nodes();
        let a = s
            .create(n, ObjectKey::new("", "a"), node("a"))
            .expect("create");
        assert_eq!(
            s.create(n, ObjectKey::new("", "a"), node("a")).err(),
            Some(StoreError::AlreadyExists)
        );
        let b = s
            .update(n, &ObjectKey::new("", "a"), a.rv, node("a"))
            .expect("update");
        assert!(b.rv > a.rv);
        assert_eq!(
            s.update(n, &ObjectKey::new("", "a"), a.rv, node("a")).err(),
            Some(StoreError::Conflict)
        );
        assert_eq!(
            b.value().expect("json")["metadata"]["resourceVersion"],
            b.rv.to_string()
        );
        assert_eq!(&*b.labels, &[("a".into(), "b".into())]);
    }

    #[test]
    fn list_pages_in_key_order() {
        let s = Store::new(10, 16);
        let n = ids::nodes();
        for i in 0..5 {
            s.create(
                n,
                ObjectKey::new("", &format!("n{i}")),
                node(&format!("n{i}")),
            )
            .expect("create");
        }
        let p = s.list(n, None, None, Some(2), |_, _| true);
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.remaining, 3);
        let next = p.next.expect("more");
        assert_eq!(next.name, "n1");
        let p2 = s.list(n, None, Some(&next), Some(10), |_, _| true);
        assert_eq!(p2.items.len(), 3);
        assert!(p2.next.is_none());
    }

    #[test]
    fn watch_replays_history_and_expires_compacted_versions() {
        let s = Store::new(2, 16);
        let n = ids::nodes();
        let first = s.create(n, ObjectKey::new("", "a"), node("a")).expect("a");
        s.create(n, ObjectKey::new("", "b"), node("b")).expect("b");
        s.create(n, ObjectKey::new("", "c"), node("c")).expect("c");
        // history holds b and c; a's version is compacted
        let w = s.watch(n, WatchFrom::After(first.rv)).expect("from a");
        assert_eq!(w.replay.len(), 2);
        assert_eq!(
            s.watch(n, WatchFrom::After(first.rv - 1))
                .err()
                .map(|e| e.code),
            Some(410)
        );
    }
}
