//! Server-side `meta.k8s.io/v1` Table output for `kubectl get`, with the
//! columns kube-apiserver's printers use for the kinds we serve.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::resources::{ResourceKind, TableStyle};

/// A column: name, type, description, priority (0 normal, 1 wide).
type Column = (&'static str, &'static str, &'static str, u8);

fn columns(style: TableStyle) -> Vec<Column> {
    let name = (
        "Name",
        "string",
        "Name must be unique within a namespace.",
        0,
    );
    let age = (
        "Age",
        "string",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
    match style {
        TableStyle::Generic => vec![name, age],
        TableStyle::Csr => vec![
            name,
            age,
            (
                "SignerName",
                "string",
                "Only use certificates with the signer name",
                0,
            ),
            (
                "Requestor",
                "string",
                "Name of user that requested the certificate",
                0,
            ),
            (
                "RequestedDuration",
                "string",
                "Requested duration of the issued certificate",
                0,
            ),
            (
                "Condition",
                "string",
                "Conditions applied to the request",
                0,
            ),
        ],
        TableStyle::Node => vec![
            name,
            ("Status", "string", "The status of the node", 0),
            ("Roles", "string", "The roles of the node", 0),
            age,
            (
                "Version",
                "string",
                "Kubelet Version reported by the node.",
                0,
            ),
            (
                "Internal-IP",
                "string",
                "List of addresses reachable to the node.",
                1,
            ),
            (
                "External-IP",
                "string",
                "List of addresses reachable to the node.",
                1,
            ),
            (
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release.",
                1,
            ),
            (
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node.",
                1,
            ),
            (
                "Container-Runtime",
                "string",
                "Container Runtime Version reported by the node.",
                1,
            ),
        ],
        TableStyle::Lease => vec![
            name,
            ("Holder", "string", "Name of the Lease holder", 0),
            age,
        ],
        TableStyle::Namespace => vec![
            name,
            ("Status", "string", "The status of the namespace", 0),
            age,
        ],
        TableStyle::Secret => vec![
            name,
            ("Type", "string", "The type of the secret", 0),
            ("Data", "string", "The number of entries in the secret", 0),
            age,
        ],
        TableStyle::ConfigMap => vec![
            name,
            ("Data", "string", "Number of entries in the ConfigMap", 0),
            age,
        ],
        TableStyle::Event => vec![
            (
                "Last Seen",
                "string",
                "Time since the event was last seen",
                0,
            ),
            ("Type", "string", "Type of this event (Normal, Warning)", 0),
            ("Reason", "string", "Why the action was taken", 0),
            ("Object", "string", "The object this event is about", 0),
            (
                "Message",
                "string",
                "A human-readable description of the status",
                0,
            ),
        ],
        TableStyle::Role => vec![
            name,
            (
                "Created At",
                "date",
                "Time at which the role was created",
                0,
            ),
        ],
        TableStyle::RoleBinding => vec![
            name,
            ("Role", "string", "Role referenced by this binding", 0),
            age,
        ],
        // pkg/printers/internalversion: serviceColumnDefinitions.
        TableStyle::Service => vec![
            name,
            (
                "Type",
                "string",
                "The type of the service, e.g. ClusterIP, NodePort, LoadBalancer or ExternalName.",
                0,
            ),
            (
                "Cluster-IP",
                "string",
                "The IP address of the service inside the cluster.",
                0,
            ),
            (
                "External-IP",
                "string",
                "The external IP addresses of the service.",
                0,
            ),
            ("Port(s)", "string", "The ports the service exposes.", 0),
            age,
            (
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
                1,
            ),
        ],
        // pkg/printers/internalversion: serviceCIDRColumnDefinitions.
        TableStyle::ServiceCidr => vec![
            name,
            (
                "CIDRs",
                "string",
                "CIDRs defines the IP blocks in CIDR notation for the ServiceCIDR.",
                0,
            ),
            age,
        ],
        // pkg/printers/internalversion: podColumnDefinitions.
        TableStyle::Pod => vec![
            name,
            (
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            (
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            (
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age,
            (
                "IP",
                "string",
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            (
                "Node",
                "string",
                "NodeName indicates in which node this pod is scheduled.",
                1,
            ),
            (
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
                1,
            ),
            (
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                1,
            ),
        ],
        // pkg/printers/internalversion: serviceAccountColumnDefinitions.
        TableStyle::ServiceAccount => vec![
            name,
            (
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                0,
            ),
            age,
        ],
    }
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".to_owned();
    }
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let years = days / 365;
    if secs < 60 * 2 {
        format!("{secs}s")
    } else if minutes < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if years < 8 {
        let d = days % 365;
        if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        }
    } else {
        format!("{years}y")
    }
}

fn age_of(v: &Value, pointer: &str, now: Timestamp) -> String {
    match v
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
    {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".to_owned(),
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".to_owned()
    } else {
        x.to_owned()
    }
}

/// The CONDITION column of a CSR, as kubectl prints it.
pub fn csr_condition(v: &Value) -> String {
    let conds = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let mut out = if has("Denied") {
        "Denied".to_owned()
    } else if has("Approved") {
        "Approved".to_owned()
    } else {
        "Pending".to_owned()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !s(v, "/status/certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

fn node_status(v: &Value) -> String {
    let conds = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut out = match ready {
        Some("True") => "Ready".to_owned(),
        Some("False") => "NotReady".to_owned(),
        _ => "Unknown".to_owned(),
    };
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        out.push_str(",SchedulingDisabled");
    }
    out
}

fn node_roles(v: &Value) -> String {
    let mut roles: Vec<&str> = v
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, val)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .filter(|r| !r.is_empty())
                        .or_else(|| (k == "kubernetes.io/role").then(|| val.as_str().unwrap_or("")))
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    }
}

fn node_address(v: &Value, ty: &str) -> String {
    v.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some(ty))
                .and_then(|x| x.get("address").and_then(Value::as_str))
        })
        .map_or_else(|| "<none>".to_owned(), str::to_owned)
}

fn map_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

fn string_list(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// EXTERNAL-IP as `printService` writes it: the load balancer's ingress (or `<pending>`),
/// then `spec.externalIPs`, or `<none>`.
fn service_external_ip(v: &Value) -> String {
    let ty = s(v, "/spec/type");
    let mut ips: Vec<String> = Vec::new();
    if ty == "LoadBalancer" {
        for i in v
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = s(i, "/ip");
            let host = s(i, "/hostname");
            if !ip.is_empty() {
                ips.push(ip.to_owned());
            } else if !host.is_empty() {
                ips.push(host.to_owned());
            }
        }
    }
    ips.extend(string_list(v, "/spec/externalIPs"));
    match (ty, ips.is_empty()) {
        ("ExternalName", _) => s(v, "/spec/externalName").to_owned(),
        ("LoadBalancer", true) => "<pending>".to_owned(),
        (_, true) => "<none>".to_owned(),
        (_, false) => ips.join(","),
    }
}

/// PORT(S) as `makePortString` writes it: `port[:nodePort]/protocol`, comma-separated.
fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = v
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node_port) if node_port > 0 => format!("{port}:{node_port}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    }
}

fn selector(v: &Value) -> String {
    let mut pairs: Vec<String> = v
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, val)| format!("{k}={}", val.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort_unstable();
    if pairs.is_empty() {
        "<none>".to_owned()
    } else {
        pairs.join(",")
    }
}

fn array_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The READY, STATUS and RESTARTS cells of a pod, as `printPod` computes them from its
/// container statuses (without the last restart's age and the init-container details).
fn pod_state(v: &Value) -> (String, String, i64) {
    let statuses = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts = statuses
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut reason = match s(v, "/status/reason") {
        "" => s(v, "/status/phase").to_owned(),
        r => r.to_owned(),
    };
    for c in statuses.iter().rev() {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if !terminated.is_empty() {
            reason = terminated.to_owned();
        }
    }
    if v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        reason = "Terminating".to_owned();
    }
    (
        format!("{ready}/{}", array_len(v, "/spec/containers")),
        reason,
        restarts,
    )
}

fn cells(style: TableStyle, v: &Value, now: Timestamp) -> Vec<Value> {
    let name = json!(s(v, "/metadata/name"));
    let age = json!(age_of(v, "/metadata/creationTimestamp", now));
    match style {
        TableStyle::Generic => vec![name, age],
        TableStyle::Csr => {
            let duration = v
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or_else(|| "<none>".to_owned(), human_duration);
            vec![
                name,
                age,
                json!(s(v, "/spec/signerName")),
                json!(s(v, "/spec/username")),
                json!(duration),
                json!(csr_condition(v)),
            ]
        }
        TableStyle::Node => vec![
            name,
            json!(node_status(v)),
            json!(node_roles(v)),
            age,
            json!(s(v, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(v, "InternalIP")),
            json!(node_address(v, "ExternalIP")),
            json!(or_none(s(v, "/status/nodeInfo/osImage"))),
            json!(or_none(s(v, "/status/nodeInfo/kernelVersion"))),
            json!(or_none(s(v, "/status/nodeInfo/containerRuntimeVersion"))),
        ],
        TableStyle::Lease => vec![name, json!(s(v, "/spec/holderIdentity")), age],
        TableStyle::Namespace => vec![name, json!(s(v, "/status/phase")), age],
        TableStyle::Secret => vec![
            name,
            json!(s(v, "/type")),
            json!(map_len(v, "/data") + map_len(v, "/stringData")),
            age,
        ],
        TableStyle::ConfigMap => vec![
            name,
            json!(map_len(v, "/data") + map_len(v, "/binaryData")),
            age,
        ],
        TableStyle::Event => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/deprecatedLastTimestamp",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find(|p| !s(v, p).is_empty())
            .map_or_else(|| "<unknown>".to_owned(), |p| age_of(v, p, now));
            let (okind, oname) = if v.get("regarding").is_some() {
                (s(v, "/regarding/kind"), s(v, "/regarding/name"))
            } else {
                (s(v, "/involvedObject/kind"), s(v, "/involvedObject/name"))
            };
            let message = if v.get("note").is_some() {
                s(v, "/note")
            } else {
                s(v, "/message")
            };
            vec![
                json!(last),
                json!(s(v, "/type")),
                json!(s(v, "/reason")),
                json!(format!("{}/{oname}", okind.to_lowercase())),
                json!(message),
            ]
        }
        TableStyle::Role => vec![name, json!(s(v, "/metadata/creationTimestamp"))],
        TableStyle::RoleBinding => vec![
            name,
            json!(format!(
                "{}/{}",
                s(v, "/roleRef/kind"),
                s(v, "/roleRef/name")
            )),
            age,
        ],
        TableStyle::Service => {
            vec![
                name,
                json!(s(v, "/spec/type")),
                json!(or_none(s(v, "/spec/clusterIP"))),
                json!(service_external_ip(v)),
                json!(service_ports(v)),
                age,
                json!(selector(v)),
            ]
        }
        TableStyle::ServiceCidr => vec![name, json!(string_list(v, "/spec/cidrs").join(",")), age],
        TableStyle::Pod => {
            let (ready, status, restarts) = pod_state(v);
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts.to_string()),
                age,
                json!(or_none(s(v, "/status/podIP"))),
                json!(or_none(s(v, "/spec/nodeName"))),
                json!(or_none(s(v, "/status/nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        TableStyle::ServiceAccount => vec![name, json!(array_len(v, "/secrets")), age],
    }
}

fn partial_metadata(v: &Value) -> Value {
    let mut meta = v.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// How much of each object a row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// A Table for some objects of a kind.
pub fn table(
    kind: &ResourceKind,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let now = Timestamp::now();
    let defs: Vec<Value> = if with_columns {
        columns(kind.table)
            .into_iter()
            .map(|(name, ty, desc, priority)| {
                json!({"name": name, "type": ty, "format": if name == "Name" {"name"} else {""},
                       "description": desc, "priority": priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind.table, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
           "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (365 * 86400 * 3, "3y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_columns() {
        let pending = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                             "status": {"phase": "Pending"}});
        assert_eq!(
            pod_state(&pending),
            ("0/2".to_owned(), "Pending".to_owned(), 0)
        );
        let crashing = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            pod_state(&crashing),
            ("1/2".to_owned(), "CrashLoopBackOff".to_owned(), 3)
        );
        let mut deleting = pending.clone();
        deleting["metadata"] = json!({"deletionTimestamp": "2025-01-01T00:00:00Z"});
        assert_eq!(pod_state(&deleting).1, "Terminating");
    }

    #[test]
    fn csr_condition_column() {
        let pending = json!({"status": {}});
        assert_eq!(csr_condition(&pending), "Pending");
        let issued = json!({"status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "eA=="}});
        assert_eq!(csr_condition(&issued), "Approved,Issued");
        let failed = json!({"status": {"conditions": [{"type": "Approved"}, {"type": "Failed"}]}});
        assert_eq!(csr_condition(&failed), "Approved,Failed");
        let denied = json!({"status": {"conditions": [{"type": "Denied"}]}});
        assert_eq!(csr_condition(&denied), "Denied");
    }
}
