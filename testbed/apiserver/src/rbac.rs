//! Authorisation: the superuser group, the Node authorizer's name-restricted
//! rules, and RBAC evaluated from the ClusterRole/ClusterRoleBinding/Role/RoleBinding
//! objects in the store, with the verb, subresource, resourceName and wildcard
//! matching of kube-apiserver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde::de::DeserializeOwned;

use super::auth::{MASTERS, UserInfo};
use super::resources::ids;
use super::store::Store;

/// What is being done to which resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// Namespace, empty for cluster scope.
    pub namespace: String,
    /// API group.
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, may be empty.
    pub subresource: String,
    /// Object name, empty for list/create/watch without a name.
    pub name: String,
}

/// A request to authorise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// Who.
    pub user: &'a UserInfo,
    /// The verb (`get`, `list`, `approve`, …).
    pub verb: &'a str,
    /// For resource requests.
    pub resource: Option<&'a ResourceAttributes>,
    /// For non-resource requests: the path.
    pub path: &'a str,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// Why (the rule that allowed it).
    pub reason: String,
}

#[derive(Debug)]
enum RoleRef {
    Cluster(String),
    Namespaced(String),
}

#[derive(Debug)]
struct Binding {
    kind: &'static str,
    name: String,
    namespace: String,
    role: RoleRef,
    subjects: Vec<Subject>,
}

#[derive(Debug, Default)]
struct RbacIndex {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Binding>,
    role_bindings: HashMap<String, Vec<Binding>>,
}

/// The authorizer; rebuilds its RBAC index whenever an RBAC object changed.
#[derive(Debug)]
pub struct Authorizer {
    store: Arc<Store>,
    cache: Mutex<(u64, Arc<RbacIndex>)>,
}

fn load<K: DeserializeOwned>(store: &Store, id: usize) -> Vec<K> {
    store
        .list(id, None, None, None, |_, _| true)
        .items
        .iter()
        .filter_map(|o| serde_json::from_slice(&o.json).ok())
        .collect()
}

fn contains_or_star(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

fn resource_matches(rule: &PolicyRule, attrs: &ResourceAttributes) -> bool {
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let Some(resources) = &rule.resources else {
        return false;
    };
    resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
    })
}

/// Whether one policy rule allows a request.
pub fn rule_allows(
    rule: &PolicyRule,
    verb: &str,
    resource: Option<&ResourceAttributes>,
    path: &str,
) -> bool {
    if !contains_or_star(&rule.verbs, verb) {
        return false;
    }
    match resource {
        Some(attrs) => {
            let groups = rule.api_groups.as_deref().unwrap_or_default();
            if !contains_or_star(groups, &attrs.group) || !resource_matches(rule, attrs) {
                return false;
            }
            match rule.resource_names.as_deref() {
                None | Some([]) => true,
                Some(names) => !attrs.name.is_empty() && names.contains(&attrs.name),
            }
        }
        None => rule
            .non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            }),
    }
}

fn subject_matches(s: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.in_group(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn describe_subject(s: &Subject) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => format!(
            "ServiceAccount \"{}/{}\"",
            s.namespace.as_deref().unwrap_or_default(),
            s.name
        ),
        kind => format!("{kind} \"{}\"", s.name),
    }
}

// === impl Authorizer ===

impl Authorizer {
    /// An authorizer reading RBAC objects from `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            cache: Mutex::new((u64::MAX, Arc::new(RbacIndex::default()))),
        }
    }

    fn generation(&self) -> u64 {
        [
            ids::cluster_roles(),
            ids::cluster_role_bindings(),
            ids::roles(),
            ids::role_bindings(),
        ]
        .iter()
        .map(|&id| self.store.kind_rv(id))
        .max()
        .unwrap_or(0)
    }

    fn index(&self) -> Arc<RbacIndex> {
        let generation = self.generation();
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if cache.0 != generation {
            cache.1 = Arc::new(self.build());
            cache.0 = generation;
        }
        cache.1.clone()
    }

    fn build(&self) -> RbacIndex {
        let mut idx = RbacIndex::default();
        for r in load::<ClusterRole>(&self.store, ids::cluster_roles()) {
            idx.cluster_roles.insert(
                r.metadata.name.unwrap_or_default(),
                r.rules.unwrap_or_default(),
            );
        }
        for r in load::<Role>(&self.store, ids::roles()) {
            idx.roles.insert(
                (
                    r.metadata.namespace.unwrap_or_default(),
                    r.metadata.name.unwrap_or_default(),
                ),
                r.rules.unwrap_or_default(),
            );
        }
        for b in load::<ClusterRoleBinding>(&self.store, ids::cluster_role_bindings()) {
            idx.cluster_bindings.push(Binding {
                kind: "ClusterRoleBinding",
                name: b.metadata.name.unwrap_or_default(),
                namespace: String::new(),
                role: RoleRef::Cluster(b.role_ref.name),
                subjects: b.subjects.unwrap_or_default(),
            });
        }
        for b in load::<RoleBinding>(&self.store, ids::role_bindings()) {
            let ns = b.metadata.namespace.unwrap_or_default();
            let role = if b.role_ref.kind == "ClusterRole" {
                RoleRef::Cluster(b.role_ref.name)
            } else {
                RoleRef::Namespaced(b.role_ref.name)
            };
            idx.role_bindings
                .entry(ns.clone())
                .or_default()
                .push(Binding {
                    kind: "RoleBinding",
                    name: b.metadata.name.unwrap_or_default(),
                    namespace: ns,
                    role,
                    subjects: b.subjects.unwrap_or_default(),
                });
        }
        idx
    }

    /// Authorises a request: superusers, then the Node authorizer, then RBAC.
    pub fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        if attrs.user.in_group(MASTERS) {
            return Decision {
                allowed: true,
                reason: format!("superuser group {MASTERS:?}"),
            };
        }
        if let Some(d) = node_authorizer(&self.store, attrs) {
            return d;
        }
        self.rbac(attrs)
    }

    fn rbac(&self, attrs: &Attributes<'_>) -> Decision {
        let idx = self.index();
        let check = |b: &Binding| -> Option<Decision> {
            let subject = b
                .subjects
                .iter()
                .find(|s| subject_matches(s, attrs.user, &b.namespace))?;
            let (rules, role_kind, role_name) = match &b.role {
                RoleRef::Cluster(n) => (idx.cluster_roles.get(n)?, "ClusterRole", n),
                RoleRef::Namespaced(n) => {
                    (idx.roles.get(&(b.namespace.clone(), n.clone()))?, "Role", n)
                }
            };
            rules
                .iter()
                .any(|r| rule_allows(r, attrs.verb, attrs.resource, attrs.path))
                .then(|| {
                    let binding = if b.namespace.is_empty() {
                        format!("{} {:?}", b.kind, b.name)
                    } else {
                        format!("{} \"{}/{}\"", b.kind, b.namespace, b.name)
                    };
                    Decision {
                        allowed: true,
                        reason: format!(
                            "RBAC: allowed by {binding} of {role_kind} {role_name:?} to {}",
                            describe_subject(subject)
                        ),
                    }
                })
        };
        if let Some(d) = idx.cluster_bindings.iter().find_map(check) {
            return d;
        }
        if let Some(attrs_r) = attrs.resource
            && !attrs_r.namespace.is_empty()
            && let Some(bindings) = idx.role_bindings.get(&attrs_r.namespace)
            && let Some(d) = bindings.iter().find_map(check)
        {
            return d;
        }
        Decision {
            allowed: false,
            reason: String::new(),
        }
    }
}

/// What every node may do, compiled into the Node authorizer as kube-apiserver compiles
/// `bootstrappolicy.NodeRules()` into it (plugin/pkg/auth/authorizer/node): the kinds the
/// testbed serves, with the same verbs. The `system:node` ClusterRole carries the same
/// rules, but its binding has no subjects since Kubernetes 1.8 — nodes get these rules
/// from the authorizer, never from RBAC, and nothing else (not
/// `certificatesigningrequests/selfnodeserver`) without a binding of the operator's.
macro_rules! node_rules_yaml {
    () => {
        r#"
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews", "localsubjectaccessreviews"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["create", "get", "list", "watch"]
- apiGroups: [""]
  resources: ["nodes/status"]
  verbs: ["update", "patch"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["update", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "update", "patch"]
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests"]
  verbs: ["create", "get", "list", "watch"]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update", "patch", "delete"]
"#
    };
}

/// [`node_rules_yaml`], parsed once.
fn node_rules() -> &'static [PolicyRule] {
    static RULES: std::sync::LazyLock<Vec<PolicyRule>> = std::sync::LazyLock::new(|| {
        serde_yaml::from_str(node_rules_yaml!())
            .unwrap_or_else(|e| unreachable!("the compiled-in node rules are valid YAML: {e}"))
    });
    &RULES
}

/// Whether a pod in `namespace` scheduled on `node` runs as ServiceAccount `name`: the edge
/// of the Node authorizer's graph from a node to a ServiceAccount (`hasPathFrom`).
fn node_runs_service_account(store: &Store, node: &str, namespace: &str, name: &str) -> bool {
    store
        .list(ids::pods(), Some(namespace), None, None, |_, _| true)
        .items
        .iter()
        .filter_map(|o| o.value().ok())
        .any(|p| {
            p.pointer("/spec/nodeName")
                .and_then(serde_json::Value::as_str)
                == Some(node)
                && p.pointer("/spec/serviceAccountName")
                    .and_then(serde_json::Value::as_str)
                    == Some(name)
        })
}

/// The Node authorizer (`NodeAuthorizer.Authorize`): for a node identity, its own Node
/// (and its status) and its own Lease in `kube-node-lease` may be written; a token of a
/// ServiceAccount only when a pod scheduled on the node runs as it (`authorizeCreateToken`;
/// NodeRestriction then wants the token bound to that pod, `tokens.rs`); secrets and
/// config maps only as the graph of pods' volumes allows — not modelled, so none;
/// anything else the node rules allow is allowed; the rest has no opinion and goes to RBAC.
fn node_authorizer(store: &Store, attrs: &Attributes<'_>) -> Option<Decision> {
    let node = attrs.user.node_name()?;
    let r = attrs.resource?;
    let own = r.name.is_empty() || r.name == node;
    let allow = |reason: String| {
        Some(Decision {
            allowed: true,
            reason,
        })
    };
    match (
        r.group.as_str(),
        r.resource.as_str(),
        r.subresource.as_str(),
    ) {
        // `authorizeNode` with AuthorizeNodeWithSelectors (on by default since 1.32): a node
        // reads only its own Node (list/watch need a `metadata.name` field selector, which
        // the testbed's attributes do not carry: no opinion); it may write any Node, and
        // the NodeRestriction admission plugin then refuses another node's (rest.rs).
        ("", "nodes", "" | "status") => match attrs.verb {
            "get" if own && !r.name.is_empty() => {
                allow(format!("node {node:?} may read its own Node"))
            }
            "create" | "update" | "patch" => allow(String::new()),
            _ => None,
        },
        ("coordination.k8s.io", "leases", "") => {
            let allowed = r.namespace == "kube-node-lease"
                && own
                && !(attrs.verb != "create" && r.name.is_empty());
            allowed.then(|| Decision {
                allowed: true,
                reason: format!("node {node:?} may modify its own lease"),
            })
        }
        ("", "secrets" | "configmaps", "") => None,
        ("", "serviceaccounts", sub) => {
            let token = attrs.verb == "create" && sub == "token" && !r.name.is_empty();
            (token && node_runs_service_account(store, node, &r.namespace, &r.name)).then(|| {
                Decision {
                    allowed: true,
                    reason: format!("a pod on node {node:?} runs as this ServiceAccount"),
                }
            })
        }
        _ if node_rules()
            .iter()
            .any(|rule| rule_allows(rule, attrs.verb, Some(r), attrs.path)) =>
        {
            allow(String::new())
        }
        _ => None,
    }
}

/// The message of a 403 for a denied request, worded like kube-apiserver's.
pub fn forbidden_message(attrs: &Attributes<'_>) -> String {
    match attrs.resource {
        Some(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                attrs.user.name, attrs.verb, r.group
            )
        }
        None => format!(
            "User {:?} cannot {} path {:?}",
            attrs.user.name, attrs.verb, attrs.path
        ),
    }
}

/// The built-in RBAC objects every cluster starts with, as YAML (the `system:node`
/// binding without subjects, as kube-apiserver's bootstrap policy has it since 1.8).
pub const BOOTSTRAP_RBAC: &str = concat!(
    r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: cluster-admin
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: ["*"]
- nonResourceURLs: ["*"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: cluster-admin
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:masters"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:discovery
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
rules:
- nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:discovery
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:discovery"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:basic-user
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
rules:
- apiGroups: ["authorization.k8s.io"]
  resources: ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
  verbs: ["create"]
- apiGroups: ["authentication.k8s.io"]
  resources: ["selfsubjectreviews"]
  verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:basic-user
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:basic-user"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:auth-delegator
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
rules:
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:node
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
rules:"#,
    node_rules_yaml!(),
    r#"---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:node
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
"#
);

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            verbs: v(verbs),
            resource_names: (!names.is_empty()).then(|| v(names)),
            non_resource_urls: None,
        }
    }

    fn attrs(group: &str, resource: &str, sub: &str, name: &str) -> ResourceAttributes {
        ResourceAttributes {
            namespace: String::new(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
        }
    }

    #[test]
    fn subresources_wildcards_and_resource_names() {
        let approval = attrs(
            "certificates.k8s.io",
            "certificatesigningrequests",
            "approval",
            "x",
        );
        let r = rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests/approval"],
            &["update"],
            &[],
        );
        assert!(rule_allows(&r, "update", Some(&approval), ""));
        assert!(!rule_allows(&r, "patch", Some(&approval), ""));
        let main = attrs("certificates.k8s.io", "certificatesigningrequests", "", "x");
        assert!(
            !rule_allows(&r, "update", Some(&main), ""),
            "subresource grant is not the main resource"
        );
        let plain = rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["update"],
            &[],
        );
        assert!(
            !rule_allows(&plain, "update", Some(&approval), ""),
            "main grant is not the subresource"
        );
        let star_sub = rule(&["*"], &["*/approval"], &["*"], &[]);
        assert!(rule_allows(&star_sub, "update", Some(&approval), ""));
        let signer = attrs(
            "certificates.k8s.io",
            "signers",
            "",
            "kubernetes.io/kubelet-serving",
        );
        let named = rule(
            &["certificates.k8s.io"],
            &["signers"],
            &["approve"],
            &["kubernetes.io/kubelet-serving"],
        );
        assert!(rule_allows(&named, "approve", Some(&signer), ""));
        let other = attrs(
            "certificates.k8s.io",
            "signers",
            "",
            "kubernetes.io/kube-apiserver-client",
        );
        assert!(!rule_allows(&named, "approve", Some(&other), ""));
        let unnamed_list = attrs("certificates.k8s.io", "signers", "", "");
        assert!(
            !rule_allows(&named, "approve", Some(&unnamed_list), ""),
            "resourceNames never match an empty name"
        );
    }

    #[test]
    fn non_resource_urls_match_exact_and_prefix() {
        let r = PolicyRule {
            non_resource_urls: Some(vec!["/apis/*".into(), "/version".into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        };
        assert!(rule_allows(&r, "get", None, "/apis/certificates.k8s.io/v1"));
        assert!(rule_allows(&r, "get", None, "/version"));
        assert!(!rule_allows(&r, "get", None, "/api"));
        assert!(!rule_allows(&r, "post", None, "/version"));
    }
}
