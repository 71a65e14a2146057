//! The resource table: every kind the testbed serves, as one entry each.
//!
//! Adding a kind is adding a [`ResourceKind`] to [`KINDS`]: its group, version,
//! names, scope, subresources, the typed k8s-openapi struct that normalises its
//! objects (unknown fields are pruned exactly as decoding does on the real
//! server), its selectable fields, table columns and strategic-merge keys.

use k8s_openapi::api::{
    authentication::v1 as authn, authorization::v1 as authz, certificates::v1 as certs,
    coordination::v1 as coord, core::v1 as core, events::v1 as events, networking::v1 as net,
    rbac::v1 as rbac,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Index of a kind in [`KINDS`].
pub type ResourceId = usize;

/// How a kind's objects behave beyond generic storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Plain storage.
    Generic,
    /// CertificateSigningRequest: identity injection, validation, approval.
    Csr,
    /// Node: NodeRestriction for node identities.
    Node,
    /// Namespace: phase and finalizers.
    Namespace,
    /// Lease: node identities may only touch their own lease.
    Lease,
    /// Create-only review objects (SubjectAccessReview, …), never stored.
    Review,
    /// Service: ClusterIP defaulting, allocation and immutability.
    Service,
    /// ServiceCIDR: validation of `spec.cidrs`.
    ServiceCidr,
    /// Secret: type defaulting and immutability, `stringData`, required TLS keys.
    Secret,
    /// ConfigMap: key names, `immutable`.
    ConfigMap,
    /// Event (core and `events.k8s.io`): `ValidateEventCreate`, `ValidateEventUpdate`.
    Event,
    /// Pod: defaults, the ServiceAccount admission plugin, `ValidatePodCreate` and
    /// `ValidatePodUpdate` (in part).
    Pod,
}

/// Which table columns `kubectl get` receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableStyle {
    /// NAME, AGE.
    Generic,
    /// NAME, AGE, SIGNERNAME, REQUESTOR, REQUESTEDDURATION, CONDITION.
    Csr,
    /// NAME, STATUS, ROLES, AGE, VERSION (+ wide columns).
    Node,
    /// NAME, HOLDER, AGE.
    Lease,
    /// NAME, STATUS, AGE.
    Namespace,
    /// NAME, TYPE, DATA, AGE.
    Secret,
    /// NAME, DATA, AGE.
    ConfigMap,
    /// LAST SEEN, TYPE, REASON, OBJECT, MESSAGE.
    Event,
    /// NAME, CREATED AT.
    Role,
    /// NAME, ROLE, AGE.
    RoleBinding,
    /// NAME, TYPE, CLUSTER-IP, EXTERNAL-IP, PORT(S), AGE (+ SELECTOR wide).
    Service,
    /// NAME, CIDRS, AGE.
    ServiceCidr,
    /// NAME, READY, STATUS, RESTARTS, AGE (+ IP, NODE, NOMINATED NODE, READINESS GATES wide).
    Pod,
    /// NAME, SECRETS, AGE.
    ServiceAccount,
}

/// A subresource a kind serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: get, update, patch of `.status` only.
    Status,
    /// `/approval` (CSRs): update of the Approved/Denied conditions.
    Approval,
    /// `/token` (ServiceAccounts): create of an `authentication.k8s.io/v1` TokenRequest
    /// (`TokenREST`, `crate::tokens`).
    Token,
}

impl Subresource {
    /// The path segment.
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Approval => "approval",
            Self::Token => "token",
        }
    }

    /// Verbs served on it.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Self::Status | Self::Approval => &["get", "patch", "update"],
            Self::Token => &["create"],
        }
    }

    /// The (group, version, kind) it takes and answers, when not its parent's own: a
    /// TokenRequest for `serviceaccounts/token`, as discovery lists it.
    pub fn response_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Self::Status | Self::Approval => None,
            Self::Token => Some(("authentication.k8s.io", "v1", "TokenRequest")),
        }
    }
}

/// One served kind.
pub struct ResourceKind {
    /// API group, empty for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl` short names.
    pub short_names: &'static [&'static str],
    /// Served subresources.
    pub subresources: &'static [Subresource],
    /// Extra behaviour.
    pub behaviour: Behaviour,
    /// Table columns.
    pub table: TableStyle,
    /// Field selector labels beyond `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Extracts the values of `field_labels` (same order) from an object.
    pub field_values: fn(&Value) -> Vec<Box<str>>,
    /// Typed round trip through the k8s-openapi struct.
    pub normalize: fn(Value) -> Result<Value, serde_json::Error>,
    /// Strategic-merge-patch list merge keys: (JSON path of the list, key).
    pub merge_keys: &'static [(&'static str, &'static str)],
}

impl std::fmt::Debug for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceKind")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("plural", &self.plural)
            .finish_non_exhaustive()
    }
}

// === impl ResourceKind ===

impl ResourceKind {
    /// `apiVersion` of objects of this kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Kind.group` (or `Kind` in the core group), as in 422 messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether `sub` is served.
    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.behaviour == Behaviour::Review {
            &["create"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// Whether this kind is stored (reviews are not).
    pub fn stored(&self) -> bool {
        self.behaviour != Behaviour::Review
    }

    /// Whether `label` may be used in a field selector on this kind.
    pub fn supports_field(&self, label: &str) -> bool {
        label == "metadata.name"
            || (self.namespaced && label == "metadata.namespace")
            || self.field_labels.contains(&label)
    }
}

pub(crate) fn typed<K: DeserializeOwned + Serialize>(v: Value) -> Result<Value, serde_json::Error> {
    let k: K = serde_json::from_value(v)?;
    serde_json::to_value(k)
}

fn none(_: &Value) -> Vec<Box<str>> {
    Vec::new()
}

fn str_at(v: &Value, pointer: &str) -> Box<str> {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.as_str().into(),
        Some(Value::Bool(b)) => b.to_string().into(),
        Some(Value::Number(n)) => n.to_string().into(),
        _ => "".into(),
    }
}

fn csr_fields(v: &Value) -> Vec<Box<str>> {
    vec![str_at(v, "/spec/signerName")]
}

fn node_fields(v: &Value) -> Vec<Box<str>> {
    let unsched = v
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![unsched.to_string().into()]
}

fn service_fields(v: &Value) -> Vec<Box<str>> {
    vec![str_at(v, "/spec/clusterIP"), str_at(v, "/spec/type")]
}

fn namespace_fields(v: &Value) -> Vec<Box<str>> {
    vec![str_at(v, "/status/phase")]
}

fn secret_fields(v: &Value) -> Vec<Box<str>> {
    vec![str_at(v, "/type")]
}

/// pkg/registry/core/pod: `ToSelectableFields` (the fields `kubectl get pods
/// --field-selector` and the kubelet's `spec.nodeName` watch use).
const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

fn pod_fields(v: &Value) -> Vec<Box<str>> {
    let host_network = v
        .pointer("/spec/hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // The first of `status.podIPs`, as ToSelectableFields reads it.
    let pod_ip = match v.pointer("/status/podIPs/0/ip") {
        Some(Value::String(ip)) => ip.as_str().into(),
        _ => str_at(v, "/status/podIP"),
    };
    vec![
        str_at(v, "/spec/nodeName"),
        str_at(v, "/spec/restartPolicy"),
        str_at(v, "/spec/schedulerName"),
        str_at(v, "/spec/serviceAccountName"),
        host_network.to_string().into(),
        str_at(v, "/status/phase"),
        pod_ip,
        str_at(v, "/status/nominatedNodeName"),
    ]
}

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

fn core_event_fields(v: &Value) -> Vec<Box<str>> {
    let source = {
        let c = str_at(v, "/source/component");
        if c.is_empty() {
            str_at(v, "/reportingComponent")
        } else {
            c
        }
    };
    vec![
        str_at(v, "/involvedObject/kind"),
        str_at(v, "/involvedObject/namespace"),
        str_at(v, "/involvedObject/name"),
        str_at(v, "/involvedObject/uid"),
        str_at(v, "/involvedObject/apiVersion"),
        str_at(v, "/involvedObject/resourceVersion"),
        str_at(v, "/involvedObject/fieldPath"),
        str_at(v, "/reason"),
        str_at(v, "/reportingComponent"),
        source,
        str_at(v, "/type"),
    ]
}

const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "reportingController",
    "type",
];

fn events_v1_fields(v: &Value) -> Vec<Box<str>> {
    vec![
        str_at(v, "/regarding/kind"),
        str_at(v, "/regarding/namespace"),
        str_at(v, "/regarding/name"),
        str_at(v, "/regarding/uid"),
        str_at(v, "/reason"),
        str_at(v, "/reportingController"),
        str_at(v, "/type"),
    ]
}

const OBJECT_META_MERGE_KEYS: &[(&str, &str)] = &[("/metadata/ownerReferences", "uid")];

const SERVICE_MERGE_KEYS: &[(&str, &str)] = &[
    ("/metadata/ownerReferences", "uid"),
    ("/spec/ports", "port"),
];

/// The `patchMergeKey`s of `k8s.io/api/core/v1.Pod` for the lists it declares them on (items
/// of a keyed list share the list's path, so a container's `env` is `/spec/containers/env`).
const POD_MERGE_KEYS: &[(&str, &str)] = &[
    ("/metadata/ownerReferences", "uid"),
    ("/spec/containers", "name"),
    ("/spec/containers/env", "name"),
    ("/spec/containers/ports", "containerPort"),
    ("/spec/containers/volumeMounts", "mountPath"),
    ("/spec/initContainers", "name"),
    ("/spec/initContainers/env", "name"),
    ("/spec/initContainers/volumeMounts", "mountPath"),
    ("/spec/volumes", "name"),
    ("/spec/imagePullSecrets", "name"),
    ("/status/conditions", "type"),
];

const NODE_MERGE_KEYS: &[(&str, &str)] = &[
    ("/metadata/ownerReferences", "uid"),
    ("/status/conditions", "type"),
    ("/status/addresses", "type"),
    ("/spec/taints", "key"),
    ("/status/images", "names"),
];

/// Every kind the testbed serves.
pub static KINDS: &[ResourceKind] = &[
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &[Subresource::Status],
        behaviour: Behaviour::Namespace,
        table: TableStyle::Namespace,
        field_labels: &["status.phase"],
        field_values: namespace_fields,
        normalize: typed::<core::Namespace>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        subresources: &[Subresource::Status],
        behaviour: Behaviour::Node,
        table: TableStyle::Node,
        field_labels: &["spec.unschedulable"],
        field_values: node_fields,
        normalize: typed::<core::Node>,
        merge_keys: NODE_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Secret,
        table: TableStyle::Secret,
        field_labels: &["type"],
        field_values: secret_fields,
        normalize: typed::<core::Secret>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        subresources: &[],
        behaviour: Behaviour::ConfigMap,
        table: TableStyle::ConfigMap,
        field_labels: &[],
        field_values: none,
        normalize: typed::<core::ConfigMap>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        subresources: &[Subresource::Token],
        behaviour: Behaviour::Generic,
        table: TableStyle::ServiceAccount,
        field_labels: &[],
        field_values: none,
        normalize: typed::<core::ServiceAccount>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &[Subresource::Status],
        behaviour: Behaviour::Pod,
        table: TableStyle::Pod,
        field_labels: POD_FIELDS,
        field_values: pod_fields,
        normalize: typed::<core::Pod>,
        merge_keys: POD_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        subresources: &[Subresource::Status],
        behaviour: Behaviour::Service,
        table: TableStyle::Service,
        // pkg/registry/core/service: ServiceToSelectableFields (1.30+).
        field_labels: &["spec.clusterIP", "spec.type"],
        field_values: service_fields,
        normalize: typed::<core::Service>,
        merge_keys: SERVICE_MERGE_KEYS,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        behaviour: Behaviour::Event,
        table: TableStyle::Event,
        field_labels: CORE_EVENT_FIELDS,
        field_values: core_event_fields,
        normalize: typed::<core::Event>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "certificates.k8s.io",
        version: "v1",
        kind: "CertificateSigningRequest",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        namespaced: false,
        short_names: &["csr"],
        subresources: &[Subresource::Approval, Subresource::Status],
        behaviour: Behaviour::Csr,
        table: TableStyle::Csr,
        field_labels: &["spec.signerName"],
        field_values: csr_fields,
        normalize: typed::<certs::CertificateSigningRequest>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Lease,
        table: TableStyle::Lease,
        field_labels: &[],
        field_values: none,
        normalize: typed::<coord::Lease>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        behaviour: Behaviour::Event,
        table: TableStyle::Event,
        field_labels: EVENTS_V1_FIELDS,
        field_values: events_v1_fields,
        normalize: typed::<events::Event>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "networking.k8s.io",
        version: "v1",
        kind: "ServiceCIDR",
        plural: "servicecidrs",
        singular: "servicecidr",
        namespaced: false,
        short_names: &[],
        subresources: &[Subresource::Status],
        behaviour: Behaviour::ServiceCidr,
        table: TableStyle::ServiceCidr,
        field_labels: &[],
        field_values: none,
        normalize: typed::<net::ServiceCIDR>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Generic,
        table: TableStyle::Role,
        field_labels: &[],
        field_values: none,
        normalize: typed::<rbac::ClusterRole>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Generic,
        table: TableStyle::RoleBinding,
        field_labels: &[],
        field_values: none,
        normalize: typed::<rbac::ClusterRoleBinding>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Generic,
        table: TableStyle::Role,
        field_labels: &[],
        field_values: none,
        normalize: typed::<rbac::Role>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Generic,
        table: TableStyle::RoleBinding,
        field_labels: &[],
        field_values: none,
        normalize: typed::<rbac::RoleBinding>,
        merge_keys: OBJECT_META_MERGE_KEYS,
    },
    ResourceKind {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Review,
        table: TableStyle::Generic,
        field_labels: &[],
        field_values: none,
        normalize: typed::<authz::SubjectAccessReview>,
        merge_keys: &[],
    },
    ResourceKind {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Review,
        table: TableStyle::Generic,
        field_labels: &[],
        field_values: none,
        normalize: typed::<authz::SelfSubjectAccessReview>,
        merge_keys: &[],
    },
    ResourceKind {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Review,
        table: TableStyle::Generic,
        field_labels: &[],
        field_values: none,
        normalize: typed::<authn::SelfSubjectReview>,
        merge_keys: &[],
    },
    ResourceKind {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "TokenReview",
        plural: "tokenreviews",
        singular: "tokenreview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        behaviour: Behaviour::Review,
        table: TableStyle::Generic,
        field_labels: &[],
        field_values: none,
        normalize: typed::<authn::TokenReview>,
        merge_keys: &[],
    },
];

/// Finds a kind by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Finds a kind by `apiVersion` and `kind`.
pub fn find_by_kind(api_version: &str, kind: &str) -> Option<ResourceId> {
    KINDS
        .iter()
        .position(|k| k.kind == kind && k.api_version() == api_version)
}

/// The kind with this id.
pub fn kind(id: ResourceId) -> &'static ResourceKind {
    &KINDS[id]
}

/// Served API groups with their versions, in discovery order (core excluded).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in KINDS {
        if !k.group.is_empty() && !out.iter().any(|(g, v)| *g == k.group && *v == k.version) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// Ids of the kinds in a group/version.
pub fn in_group_version(group: &str, version: &str) -> Vec<ResourceId> {
    (0..KINDS.len())
        .filter(|&i| KINDS[i].group == group && KINDS[i].version == version)
        .collect()
}

/// Ids of well-known kinds the server itself needs.
pub mod ids {
    use super::{ResourceId, find};

    fn must(group: &str, plural: &str) -> ResourceId {
        match find(group, "v1", plural) {
            Some(id) => id,
            None => unreachable!("{plural} is in the KINDS table"),
        }
    }

    /// namespaces
    pub fn namespaces() -> ResourceId {
        must("", "namespaces")
    }
    /// nodes
    pub fn nodes() -> ResourceId {
        must("", "nodes")
    }
    /// services
    pub fn services() -> ResourceId {
        must("", "services")
    }
    /// pods
    pub fn pods() -> ResourceId {
        must("", "pods")
    }
    /// serviceaccounts
    pub fn service_accounts() -> ResourceId {
        must("", "serviceaccounts")
    }
    /// secrets
    pub fn secrets() -> ResourceId {
        must("", "secrets")
    }
    /// servicecidrs
    pub fn service_cidrs() -> ResourceId {
        must("networking.k8s.io", "servicecidrs")
    }
    /// certificatesigningrequests
    pub fn csrs() -> ResourceId {
        must("certificates.k8s.io", "certificatesigningrequests")
    }
    /// clusterroles
    pub fn cluster_roles() -> ResourceId {
        must("rbac.authorization.k8s.io", "clusterroles")
    }
    /// clusterrolebindings
    pub fn cluster_role_bindings() -> ResourceId {
        must("rbac.authorization.k8s.io", "clusterrolebindings")
    }
    /// roles
    pub fn roles() -> ResourceId {
        must("rbac.authorization.k8s.io", "roles")
    }
    /// rolebindings
    pub fn role_bindings() -> ResourceId {
        must("rbac.authorization.k8s.io", "rolebindings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_unique_and_normalises_a_minimal_object() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(find(k.group, k.version, k.plural), Some(i), "{k:?}");
            assert_eq!(k.field_labels.len(), (k.field_values)(&Value::Null).len());
            let obj = serde_json::json!({"apiVersion": k.api_version(), "kind": k.kind,
                "metadata": {"name": "x"}});
            let out = (k.normalize)(obj).unwrap_or_else(|e| panic!("{}: {e}", k.plural));
            assert_eq!(out["metadata"]["name"], "x");
        }
    }

    #[test]
    fn normalising_prunes_unknown_fields() {
        let k = kind(ids::nodes());
        let out = (k.normalize)(serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n"}, "spec": {"bogus": 1, "unschedulable": true}}))
        .expect("node");
        assert_eq!(out["spec"], serde_json::json!({"unschedulable": true}));
    }
}
