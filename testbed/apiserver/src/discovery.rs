//! Discovery documents: `/version`, legacy `/api`, `/apis`, group and
//! group-version resource lists, and the aggregated `apidiscovery.k8s.io/v2`
//! documents kubectl 1.32 asks for first. All are generated from the resource table.

use serde_json::{Value, json};

use super::resources::{self, KINDS, ResourceKind};

/// The version the testbed reports.
pub const MAJOR: &str = "1";
/// Minor version.
pub const MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": "v1.33.0-rubber-stamp-testbed",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api` (legacy).
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis` (legacy).
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|(g, v)| group_json(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn api_group(group: &str) -> Option<Value> {
    resources::groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(g, v)| {
            let mut doc = group_json(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let ids = resources::in_group_version(group, version);
    if ids.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for id in ids {
        let k = resources::kind(id);
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs(),
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        list.push(r);
        for sub in k.subresources {
            let mut r = json!({
                "name": format!("{}/{}", k.plural, sub.name()),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": sub.verbs(),
            });
            // A subresource of another kind names its group and version, as
            // `serviceaccounts/token` (TokenRequest, authentication.k8s.io/v1) does.
            if let Some((g, v, kd)) = sub.response_kind() {
                r["group"] = json!(g);
                r["version"] = json!(v);
                r["kind"] = json!(kd);
            }
            list.push(r);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

fn discovery_resource(k: &ResourceKind) -> Value {
    let rk = json!({"group": k.group, "version": k.version, "kind": k.kind});
    let mut r = json!({
        "resource": k.plural,
        "responseKind": rk,
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": k.verbs(),
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.subresources.is_empty() {
        r["subresources"] = k
            .subresources
            .iter()
            .map(|s| {
                let kind = s.response_kind().map_or_else(
                    || rk.clone(),
                    |(g, v, kd)| json!({"group": g, "version": v, "kind": kd}),
                );
                json!({"subresource": s.name(), "responseKind": kind, "verbs": s.verbs()})
            })
            .collect();
    }
    r
}

fn discovery_group(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(discovery_resource)
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

/// The aggregated discovery document for `/api` (`legacy == true`) or `/apis`.
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = if legacy {
        vec![discovery_group("", "v1")]
    } else {
        resources::groups()
            .into_iter()
            .map(|(g, v)| discovery_group(g, v))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
           "metadata": {}, "items": items})
}

/// A discovery document without the kinds in `unserved` (a server that does not have
/// them compiled in): their resources are dropped, and a group-version or group left
/// without resources with them. `None` when the document itself is about nothing else.
pub fn without(mut doc: Value, unserved: &[resources::ResourceId]) -> Option<Value> {
    if unserved.is_empty() {
        return Some(doc);
    }
    let hidden: Vec<&ResourceKind> = unserved.iter().map(|id| resources::kind(*id)).collect();
    let is_hidden_resource = |name: &str| {
        let base = name.split('/').next().unwrap_or(name);
        hidden.iter().any(|k| k.plural == base)
    };
    let group_version_empty = |group: &str, version: &str| {
        resources::in_group_version(group, version)
            .iter()
            .all(|id| unserved.contains(id))
    };
    // APIResourceList.
    if let Some(list) = doc.get_mut("resources").and_then(Value::as_array_mut) {
        list.retain(|r| !r["name"].as_str().is_some_and(is_hidden_resource));
        return (!list.is_empty()).then_some(doc);
    }
    // APIGroupList, APIGroup.
    let served_group = |g: &Value| {
        let name = g["name"].as_str().unwrap_or("");
        !g["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|v| group_version_empty(name, v["version"].as_str().unwrap_or("")))
    };
    if let Some(groups) = doc.get_mut("groups").and_then(Value::as_array_mut) {
        groups.retain(served_group);
        return Some(doc);
    }
    if doc["kind"] == "APIGroup" {
        return served_group(&doc).then_some(doc);
    }
    // APIGroupDiscoveryList.
    if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            for version in item["versions"].as_array_mut().into_iter().flatten() {
                if let Some(rs) = version["resources"].as_array_mut() {
                    rs.retain(|r| !r["resource"].as_str().is_some_and(is_hidden_resource));
                }
            }
            if let Some(versions) = item["versions"].as_array_mut() {
                versions.retain(|v| v["resources"].as_array().is_some_and(|r| !r.is_empty()));
            }
        }
        items.retain(|i| i["versions"].as_array().is_some_and(|v| !v.is_empty()));
    }
    Some(doc)
}

/// The Content-Type of aggregated discovery responses.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(resources::groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=testbed-{MAJOR}-{MINOR}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv path>`: a minimal OpenAPI v3 document. It declares, for
/// each kind, the PATCH operation and its query parameters, which is what
/// kubectl checks to use server-side field validation. It carries no schemas
/// (so `kubectl explain` and client-side apply are not supported).
pub fn openapi_v3_group(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let ids = resources::in_group_version(group, version);
    if ids.is_empty() {
        return None;
    }
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
        .collect();
    let mut paths = serde_json::Map::new();
    for id in ids {
        let k = resources::kind(id);
        if !k.stored() {
            continue;
        }
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let base = if k.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                k.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), k.plural)
        };
        let op = |action: &str| {
            json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": action,
                   "parameters": params, "responses": {"200": {"description": "OK"}}})
        };
        paths.insert(format!("{base}/{{name}}"), json!({"patch": op("patch")}));
        for sub in k
            .subresources
            .iter()
            .filter(|s| s.verbs().contains(&"patch"))
        {
            paths.insert(
                format!("{base}/{{name}}/{}", sub.name()),
                json!({"patch": op("patch")}),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_list_every_kind_and_subresource() {
        let core = api_resource_list("", "v1").expect("core");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"nodes") && names.contains(&"nodes/status"));
        assert!(names.contains(&"pods") && names.contains(&"pods/status"));
        let token = core["resources"]
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["name"] == "serviceaccounts/token")
            .expect("serviceaccounts/token");
        assert_eq!(
            (
                &token["group"],
                &token["version"],
                &token["kind"],
                &token["verbs"]
            ),
            (
                &json!("authentication.k8s.io"),
                &json!("v1"),
                &json!("TokenRequest"),
                &json!(["create"])
            )
        );
        let legacy = aggregated(true);
        let sa = legacy["items"][0]["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "serviceaccounts")
            .expect("serviceaccounts");
        assert_eq!(
            sa["subresources"],
            json!([{"subresource": "token", "verbs": ["create"],
                    "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}}])
        );
        let certs = api_resource_list("certificates.k8s.io", "v1").expect("certs");
        assert_eq!(certs["resources"].as_array().map(Vec::len), Some(3));
        assert!(api_resource_list("apps", "v1").is_none());
        let agg = aggregated(false);
        let csr = agg["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["metadata"]["name"] == "certificates.k8s.io")
            .expect("certificates group");
        assert_eq!(
            csr["versions"][0]["resources"][0]["shortNames"],
            json!(["csr"])
        );
        assert_eq!(
            api_group_list()["groups"].as_array().map(Vec::len),
            Some(resources::groups().len())
        );
    }
}
