//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the strategic
//! merge patch that kubectl and kube-rs `Patch::Strategic` send.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch types the server accepts, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// From the request's Content-Type; `None` is a 415.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON patch; failures are 422 like the real server.
pub fn json_patch(target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(target, &patch.0).map_err(|e| ApiError {
        code: 422,
        reason: "Invalid",
        message: e.to_string(),
        details: None,
        retry_after: None,
    })
}

/// Applies a JSON merge patch.
pub fn merge_patch(target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}",
        ));
    }
    json_patch::merge(target, &patch);
    Ok(())
}

/// Applies a strategic merge patch. Lists listed in `merge_keys` (JSON pointer
/// of the list, merge key; an empty key merges a list of scalars) are merged
/// by key; other lists are replaced, as for fields without a patch strategy.
pub fn strategic_merge_patch(
    target: &mut Value,
    body: &[u8],
    merge_keys: &[(&str, &str)],
) -> Result<(), ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}",
        ));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    merge_map(target, patch, "", merge_keys)
}

const GENERIC_MERGE_KEYS: &[(&str, &str)] = &[("/metadata/finalizers", "")];

fn merge_key_for<'a>(path: &str, merge_keys: &'a [(&'a str, &'a str)]) -> Option<&'a str> {
    merge_keys
        .iter()
        .chain(GENERIC_MERGE_KEYS)
        .find(|(p, _)| *p == path)
        .map(|(_, k)| *k)
}

fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

fn merge_map(
    target: &mut Value,
    mut patch: Map<String, Value>,
    path: &str,
    merge_keys: &[(&str, &str)],
) -> Result<(), ApiError> {
    match patch.remove("$patch") {
        Some(Value::String(d)) if d == "replace" => {
            *target = strip_directives(Value::Object(patch));
            return Ok(());
        }
        Some(Value::String(d)) if d == "delete" => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other} in map at {path:?}"
            )));
        }
        None => {}
    }
    let retain = match patch.remove("$retainKeys") {
        Some(Value::Array(keys)) => Some(
            keys.into_iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect::<Vec<_>>(),
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "$retainKeys must be a list of strings",
            ));
        }
        None => None,
    };
    let Some(obj) = target.as_object_mut() else {
        *target = strip_directives(Value::Object(patch));
        return Ok(());
    };
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Value::Array(remove)) =
                (obj.get_mut(field), &value)
            {
                existing.retain(|e| !remove.contains(e));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(ApiError::bad_request(format!(
                "unknown strategic merge patch directive {key:?}"
            )));
        }
        let child_path = format!("{path}/{key}");
        match value {
            Value::Null => {
                obj.remove(&key);
            }
            Value::Object(pm) => {
                let slot = obj.entry(key.clone()).or_insert(Value::Object(Map::new()));
                merge_map(slot, pm, &child_path, merge_keys)?;
                if slot.is_null() {
                    obj.remove(&key);
                }
            }
            Value::Array(items) => match merge_key_for(&child_path, merge_keys) {
                Some(mk) => {
                    let slot = obj.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                    merge_list(slot, items, mk, &child_path, merge_keys)?;
                }
                None => {
                    obj.insert(key, strip_directives(Value::Array(items)));
                }
            },
            scalar => {
                obj.insert(key, scalar);
            }
        }
    }
    if let Some(keep) = retain {
        obj.retain(|k, _| keep.iter().any(|r| r == k));
    }
    Ok(())
}

fn merge_list(
    target: &mut Value,
    items: Vec<Value>,
    merge_key: &str,
    path: &str,
    merge_keys: &[(&str, &str)],
) -> Result<(), ApiError> {
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Some(list) = target.as_array_mut() else {
        return Ok(());
    };
    for item in items {
        if merge_key.is_empty() {
            if !list.contains(&item) {
                list.push(item);
            }
            continue;
        }
        let Value::Object(mut m) = item else {
            return Err(ApiError::bad_request(format!(
                "list {path:?} merges by {merge_key:?}; its items must be objects"
            )));
        };
        let directive = m.get("$patch").and_then(Value::as_str).map(str::to_owned);
        let Some(key_value) = m.get(merge_key).cloned() else {
            return Err(ApiError::bad_request(format!(
                "map: {m:?} does not contain declared merge key: {merge_key}"
            )));
        };
        let pos = list
            .iter()
            .position(|e| e.get(merge_key) == Some(&key_value));
        match (directive.as_deref(), pos) {
            (Some("delete"), Some(i)) => {
                list.remove(i);
            }
            (Some("delete"), None) => {}
            (Some("replace"), _) => {
                m.remove("$patch");
                let v = strip_directives(Value::Object(m));
                match pos {
                    Some(i) => list[i] = v,
                    None => list.push(v),
                }
            }
            (_, Some(i)) => merge_map(&mut list[i], m, path, merge_keys)?,
            (_, None) => list.push(strip_directives(Value::Object(m))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_maps_deletes_nulls_and_merges_keyed_lists() {
        let mut node = json!({"metadata": {"name": "n", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PIDPressure", "status": "False"}],
                       "$setElementOrder/conditions": [{"type": "Ready"}]}});
        strategic_merge_patch(
            &mut node,
            patch.to_string().as_bytes(),
            &[("/status/conditions", "type")],
        )
        .expect("patch");
        assert_eq!(node["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(node["metadata"]["finalizers"], json!(["x", "y"]));
        let conds = node["status"]["conditions"].as_array().expect("list");
        assert_eq!(conds.len(), 3);
        assert_eq!(conds[0], json!({"type": "Ready", "status": "True"}));
    }

    #[test]
    fn lists_without_strategy_are_replaced_and_directives_work() {
        let mut obj = json!({"spec": {"usages": ["a", "b"], "x": {"y": 1, "z": 2}}});
        let patch = json!({"spec": {"usages": ["c"], "x": {"$patch": "replace", "w": 3}}});
        strategic_merge_patch(&mut obj, patch.to_string().as_bytes(), &[]).expect("patch");
        assert_eq!(obj, json!({"spec": {"usages": ["c"], "x": {"w": 3}}}));
        let bad = json!({"spec": {"$bogus": 1}});
        assert!(strategic_merge_patch(&mut obj, bad.to_string().as_bytes(), &[]).is_err());
    }

    #[test]
    fn json_and_merge_patches() {
        let mut obj = json!({"a": {"b": 1}});
        merge_patch(&mut obj, br#"{"a": {"b": null, "c": 2}}"#).expect("merge");
        assert_eq!(obj, json!({"a": {"c": 2}}));
        json_patch(&mut obj, br#"[{"op": "add", "path": "/a/d", "value": 3}]"#).expect("json");
        assert_eq!(obj["a"]["d"], 3);
        let err = json_patch(&mut obj, br#"[{"op": "test", "path": "/a/d", "value": 4}]"#)
            .expect_err("test fails");
        assert_eq!(err.code, 422);
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }
}
