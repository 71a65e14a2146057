//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Ownership is tracked per leaf field: maps are walked key by key, lists are
//! atomic (owned as a whole). That covers what kube-lease-manager and kube-rs
//! apply (scalar fields of a Lease spec, labels, annotations) with the real
//! semantics: a conflict is a field whose applied value differs from the live
//! value while another manager owns it; `force` takes ownership; fields a
//! manager stops applying are removed unless someone else owns them.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::resources::ResourceKind;
use super::status::ApiError;

type Path = Vec<String>;

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedEntry {
    /// Field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion of the object the fields refer to.
    pub api_version: String,
    /// Subresource (`status`, …) or empty.
    pub subresource: String,
    /// When.
    pub time: String,
    fields: BTreeSet<Path>,
}

const EXCLUDED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

fn leaf_paths(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if prefix.is_empty() && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if prefix.len() == 1
                    && prefix[0] == "metadata"
                    && EXCLUDED_META.contains(&k.as_str())
                {
                    continue;
                }
                if child.is_null() {
                    continue;
                }
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        // An empty map owns nothing (it only says the map exists).
        Value::Object(_) => {}
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

fn paths_of(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaf_paths(v, &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k.as_str()))
}

fn set_at(v: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        if !cur.get(k.as_str()).is_some_and(Value::is_object)
            && let Some(m) = cur.as_object_mut()
        {
            m.insert(k.clone(), Value::Object(Map::new()));
        }
        match cur.get_mut(k.as_str()) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.insert(last.clone(), value);
    }
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k.as_str()) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn fields_to_json(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in fields {
        let mut cur = &mut root;
        for k in p {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            match entry.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

fn fields_from_json(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else {
        return;
    };
    let mut leaf = true;
    for (k, child) in m {
        if let Some(name) = k.strip_prefix("f:") {
            leaf = false;
            prefix.push(name.to_owned());
            fields_from_json(child, prefix, out);
            prefix.pop();
        }
    }
    if leaf && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

fn display_path(p: &Path) -> String {
    p.iter().map(|k| format!(".{k}")).collect()
}

/// Reads `metadata.managedFields`.
pub fn read_entries(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                fields_from_json(f, &mut Vec::new(), &mut fields);
            }
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                subresource: s("subresource"),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

/// Writes `metadata.managedFields` (dropping entries that own nothing).
pub fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_to_json(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Records an `Update` by `manager`: it takes the fields it changed, and
/// nobody keeps fields that no longer exist.
pub fn track_update(
    kind: &ResourceKind,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    now: &str,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_paths = paths_of(new);
    let changed: BTreeSet<Path> = new_paths
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    for e in &mut entries {
        e.fields
            .retain(|p| value_at(new, p).is_some() && !changed.contains(p));
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_owned();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version: kind.api_version(),
                subresource: subresource.to_owned(),
                time: now.to_owned(),
                fields: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

/// Server-side apply of `applied` by `manager` onto `live` (an empty object
/// when creating). Returns the merged object with updated managedFields, or a
/// 409 Conflict naming every conflicting field and its manager.
pub fn apply(
    kind: &ResourceKind,
    name: &str,
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let mut entries = read_entries(live);
    let applied_paths = paths_of(applied);
    let is_me = |e: &ManagedEntry| {
        e.manager == manager && e.operation == "Apply" && e.subresource.is_empty()
    };

    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for p in &applied_paths {
        let current = value_at(live, p);
        if current.is_none() || current == value_at(applied, p) {
            continue;
        }
        for e in entries.iter().filter(|e| !is_me(e)) {
            if e.fields.contains(p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let mut message = format!(
            "Apply failed with {n} conflict{}: ",
            if n == 1 { "" } else { "s" }
        );
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, v, p)| {
                json!({"reason": "FieldManagerConflict",
                       "message": format!("conflict with {m:?} using {v}"),
                       "field": display_path(p)})
            })
            .collect();
        let detail: Vec<String> = conflicts
            .iter()
            .map(|(m, v, p)| format!("conflict with {m:?} using {v}: {}", display_path(p)))
            .collect();
        message.push_str(&detail.join("\n"));
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message,
            details: Some(
                json!({"name": name, "group": kind.group, "kind": kind.plural, "causes": causes}),
            ),
            retry_after: None,
        });
    }

    let mut merged = live.clone();
    if !merged.is_object() {
        merged = Value::Object(Map::new());
    }
    let previously: BTreeSet<Path> = entries
        .iter()
        .filter(|e| is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in previously.difference(&applied_paths) {
        let owned_elsewhere = entries.iter().any(|e| !is_me(e) && e.fields.contains(p));
        if !owned_elsewhere {
            remove_at(&mut merged, p);
        }
    }
    for p in &applied_paths {
        if let Some(v) = value_at(applied, p) {
            set_at(&mut merged, p, v.clone());
        }
    }
    for (k, v) in [
        ("apiVersion", kind.api_version()),
        ("kind", kind.kind.to_owned()),
    ] {
        if let Some(m) = merged.as_object_mut() {
            m.insert(k.into(), Value::String(v));
        }
    }

    let conflicting: BTreeSet<&Path> = conflicts.iter().map(|(_, _, p)| p).collect();
    for e in entries.iter_mut().filter(|e| !is_me(e)) {
        e.fields.retain(|p| !conflicting.contains(p));
    }
    entries.retain(|e| !is_me(e));
    entries.push(ManagedEntry {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version: kind.api_version(),
        subresource: String::new(),
        time: now.to_owned(),
        fields: applied_paths,
    });
    for e in &mut entries {
        e.fields.retain(|p| value_at(&merged, p).is_some());
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, kind};

    fn lease_kind() -> &'static ResourceKind {
        kind(find("coordination.k8s.io", "v1", "leases").expect("leases"))
    }

    fn applied(holder: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10}})
    }

    #[test]
    fn a_second_manager_conflicts_unless_values_agree_or_it_forces() {
        let k = lease_kind();
        let live = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "metadata": {"name": "l"}, "spec": {}});
        let a = apply(k, "l", &live, &applied("a"), "mgr-a", false, "t").expect("a applies");
        assert_eq!(a["spec"]["holderIdentity"], "a");
        let err = apply(k, "l", &a, &applied("b"), "mgr-b", false, "t").expect_err("b conflicts");
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert!(err.message.contains("mgr-a"), "{}", err.message);
        assert!(
            err.message.contains(".spec.holderIdentity"),
            "{}",
            err.message
        );
        // same values: shared ownership, no conflict
        apply(k, "l", &a, &applied("a"), "mgr-b", false, "t").expect("agreeing apply");
        let forced = apply(k, "l", &a, &applied("b"), "mgr-b", true, "t").expect("force");
        assert_eq!(forced["spec"]["holderIdentity"], "b");
        let entries = read_entries(&forced);
        let a_entry = entries.iter().find(|e| e.manager == "mgr-a");
        assert!(a_entry.is_none_or(|e| {
            !e.fields
                .contains(&vec!["spec".to_owned(), "holderIdentity".to_owned()])
        }));
    }

    #[test]
    fn updates_take_ownership_and_removed_fields_free_it() {
        let k = lease_kind();
        let live = json!({"metadata": {"name": "l"}, "spec": {}});
        let a = apply(k, "l", &live, &applied("a"), "mgr-a", false, "t").expect("a");
        // mgr-a releases by an update that removes the holder
        let mut released = a.clone();
        remove_at(&mut released, &["spec".into(), "holderIdentity".into()]);
        track_update(k, Some(&a), &mut released, "mgr-a", "", "t");
        let b = apply(k, "l", &released, &applied("b"), "mgr-b", false, "t").expect("b acquires");
        assert_eq!(b["spec"]["holderIdentity"], "b");
        // an Update manager's fields also conflict
        let mut updated = b.clone();
        set_at(
            &mut updated,
            &["spec".into(), "holderIdentity".into()],
            json!("c"),
        );
        track_update(k, Some(&b), &mut updated, "mgr-c", "", "t");
        assert!(apply(k, "l", &updated, &applied("b"), "mgr-b", false, "t").is_err());
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let k = lease_kind();
        let live = json!({"metadata": {"name": "l"}});
        let a = apply(k, "l", &live, &applied("a"), "m", false, "t").expect("a");
        let only_holder = json!({"spec": {"holderIdentity": "a"}});
        let b = apply(k, "l", &a, &only_holder, "m", false, "t").expect("again");
        assert!(b["spec"].get("leaseDurationSeconds").is_none());
        assert_eq!(
            b["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:holderIdentity": {}}})
        );
    }
}
