//! The approver's permissions as the project ships them, for the testbed cluster: the RBAC
//! objects of `deploy/` (and the Namespace they live in), and variants with one rule taken
//! out, so a test can show that every rule is needed.
//!
//! [`deploy_rbac_yaml`] is the one place that decides what "the shipped RBAC" is: the
//! kustomize-rendered `deploy/base`, keeping the kinds the testbed serves for authorisation.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_yaml::Value;

use super::BedError;
use rubber_stamp_apiserver::Cluster;

/// Kinds loaded from `deploy/`: authorisation and what it refers to.
pub const LOADED_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// `deploy/base` in this repository.
pub fn deploy_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

/// The shipped RBAC (and Namespace) as one multi-document YAML string: `deploy/base`
/// rendered by `kubectl kustomize` (as an operator applies it), keeping the kinds the
/// testbed serves for authorisation.
pub fn deploy_rbac_yaml() -> Result<String, BedError> {
    let rendered = crate::deploy::rendered_base().map_err(|e| BedError::Rbac(e.to_string()))?;
    let docs = rendered
        .iter()
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|kind| LOADED_KINDS.contains(&kind))
        })
        .map(|o| serde_yaml::to_value(o).map_err(BedError::from))
        .collect::<Result<Vec<Value>, BedError>>()?;
    if docs.is_empty() {
        return Err(BedError::Rbac("deploy/base renders no RBAC".to_owned()));
    }
    join(&docs)
}

/// Loads RBAC YAML into the cluster. Every test loads the approver's permissions through
/// here.
pub fn load_rbac(cluster: &Cluster, yaml: &str) -> Result<(), BedError> {
    cluster.load_yaml(yaml)?;
    Ok(())
}

/// One rule of a Role or ClusterRole in an RBAC document set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// Index of the document.
    pub document: usize,
    /// Index of the rule in `rules`.
    pub index: usize,
    /// `ClusterRole/name` or `Role/namespace/name`.
    pub role: String,
    /// The rule in one line: `group resources [resourceNames] verbs`.
    pub summary: String,
    /// The rule's resources.
    pub resources: Vec<String>,
}

/// Every rule of every Role and ClusterRole in `yaml`, in order.
pub fn rules(yaml: &str) -> Result<Vec<RuleRef>, BedError> {
    let mut out = Vec::new();
    for (document, doc) in documents(yaml)?.iter().enumerate() {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role = match doc
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
        {
            Some(ns) => format!("{kind}/{ns}/{name}"),
            None => format!("{kind}/{name}"),
        };
        let rules = doc
            .get("rules")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for (index, rule) in rules.iter().enumerate() {
            let list = |field: &str| -> Vec<String> {
                rule.get(field)
                    .and_then(Value::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let resources = list("resources");
            let names = list("resourceNames");
            let summary = format!(
                "{} {}{} {}",
                list("apiGroups").join(","),
                resources.join(","),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", names.join(","))
                },
                list("verbs").join(",")
            );
            out.push(RuleRef {
                document,
                index,
                role: role.clone(),
                summary,
                resources,
            });
        }
    }
    Ok(out)
}

/// `yaml` with one rule taken out.
pub fn without_rule(yaml: &str, rule: &RuleRef) -> Result<String, BedError> {
    let mut docs = documents(yaml)?;
    let rules = docs
        .get_mut(rule.document)
        .and_then(|d| d.get_mut("rules"))
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| BedError::Rbac(format!("no rules in document {}", rule.document)))?;
    if rule.index >= rules.len() {
        return Err(BedError::Rbac(format!(
            "no rule {} in {}",
            rule.index, rule.role
        )));
    }
    rules.remove(rule.index);
    join(&docs)
}

fn documents(yaml: &str) -> Result<Vec<Value>, BedError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn join(docs: &[Value]) -> Result<String, BedError> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rbac_has_rules_and_variants_drop_exactly_one() {
        let yaml = deploy_rbac_yaml().expect("deploy/ RBAC");
        let all = rules(&yaml).expect("rules");
        assert!(all.len() >= 5, "{all:?}");
        for rule in &all {
            let variant = without_rule(&yaml, rule).expect("variant");
            let left = rules(&variant).expect("rules");
            assert_eq!(left.len(), all.len() - 1);
            let same = |rs: &[RuleRef]| {
                rs.iter()
                    .filter(|r| r.role == rule.role && r.summary == rule.summary)
                    .count()
            };
            assert_eq!(same(&left), same(&all) - 1, "{} gone", rule.summary);
        }
    }
}
