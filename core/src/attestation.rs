//! What an agent attested about its node, and the index the decision reads it through.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// One interface of a node as its agent reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterfaceFacts {
    /// The kernel's name for the interface (`eth0`, `kube-ipvs0`, …).
    pub name: String,
    /// Addresses with prefix length, as configured on the interface.
    pub addresses: Vec<IpNet>,
}

/// The facts one agent attested for its node, as the approver received them.
///
/// `node_name` comes from the agent's verified client certificate, never from
/// the report; `peer_address` and `received_at` are what the approver saw.
/// This is also one element of the attestation snapshot JSON of docs/design.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attestation {
    /// Node name from the client certificate's `CN=system:node:<name>`.
    pub node_name: String,
    /// The node's kernel hostname.
    pub hostname: String,
    /// Every interface the agent reported, in name order.
    pub interfaces: Vec<InterfaceFacts>,
    /// TCP source address of the agent's connection, as the approver saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<IpAddr>,
    /// When the approver accepted the report (approver's clock).
    pub received_at: Timestamp,
    /// `/etc/machine-id`, when the agent could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// The kernel boot id, when the agent could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The agent's version, for operators only; never used in decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Each source of facts the agent read for this report, and whether it read it
    /// completely. A report that does not list [`INTERFACES_SOURCE`] as complete
    /// (an agent older than this field says nothing) never supports a denial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceReport>,
    /// What sources other than the kernel state about the node: a cloud's instance
    /// metadata (its private and public addresses, its DNS names), one entry per source
    /// the agent read. Whether each was read completely is in [`sources`](Self::sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataFacts>,
    /// The port of the agent's proof listener, which listens on every address of the
    /// node; `None` when it runs none (agents before 0.4, or one bound to a single
    /// address). The node's word: it never decides whether an address is probed (the
    /// approver probes its own configured port, whatever this says). It decides only
    /// whether a refused probe is evidence against the node (only a wildcard listener
    /// on the probed port makes the node's own kernel answer, not refuse), and explains
    /// unanswered probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_port: Option<u16>,
}

/// What one metadata source (`cloud:aws`, …) states about the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataFacts {
    /// The source, as named in [`SourceReport::source`].
    pub source: String,
    /// Addresses it states for the node (canonical form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// DNS names it states for the node (canonical form: lower case, no trailing dot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
}

/// The source of the interface facts: the kernel's interfaces and addresses, with the
/// hostname.
pub const INTERFACES_SOURCE: &str = "interfaces";

/// One source of an agent's facts, as the agent described its reading of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceReport {
    /// Which source (`interfaces`, …).
    pub source: String,
    /// The agent read it without error and reported everything it read.
    pub complete: bool,
    /// When not complete: what is missing, in the agent's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl SourceReport {
    /// A source the agent read completely.
    pub fn complete(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            complete: true,
            problem: None,
        }
    }

    /// A source whose reading left `problem` out.
    pub fn incomplete(source: &str, problem: impl Into<String>) -> Self {
        Self {
            source: source.to_owned(),
            complete: false,
            problem: Some(problem.into()),
        }
    }
}

impl Attestation {
    /// `Ok` when the agent says it read every source of facts completely, with the
    /// interfaces among them; otherwise what is missing, in plain words. Only a
    /// complete report can show that a SAN is *not* the node's.
    pub fn completeness(&self) -> Result<(), String> {
        if !self.sources.iter().any(|s| s.source == INTERFACES_SOURCE) {
            return Err(
                "the agent does not say that it read its interfaces completely (agents before 0.2 do not)"
                    .to_owned(),
            );
        }
        match self.sources.iter().find(|s| !s.complete) {
            None => Ok(()),
            Some(s) => Err(format!(
                "the agent says its {} facts are incomplete: {}",
                s.source,
                s.problem.as_deref().unwrap_or("no reason given")
            )),
        }
    }

    /// Every address a metadata source states, with the source.
    pub fn metadata_addresses(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.metadata.iter().flat_map(|m| {
            m.addresses
                .iter()
                .map(move |ip| (m.source.as_str(), canonical_ip(*ip)))
        })
    }

    /// The metadata sources that state `name` (compared in canonical form, exactly as
    /// stated: no suffix is added or removed).
    pub fn metadata_sources_naming<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.metadata
            .iter()
            .filter(move |m| {
                m.dns_names
                    .iter()
                    .any(|n| canonical_name(n) == canonical_name(name))
            })
            .map(|m| m.source.as_str())
    }

    /// Every address on every interface, with the interface it is on.
    pub fn addresses(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.interfaces.iter().flat_map(|iface| {
            iface
                .addresses
                .iter()
                .map(move |net| (iface.name.as_str(), canonical_ip(net.addr())))
        })
    }
}

/// The attestation snapshot document (`{"attestations": [...]}`) that the
/// approver serves at its admin endpoint and `check --attestations` reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationSnapshot {
    /// One entry per node, in node-name order.
    pub attestations: Vec<Attestation>,
}

/// True when an attestation received at `received_at` still counts at `now`.
pub fn is_fresh(received_at: Timestamp, now: Timestamp, policy: &Policy) -> bool {
    now.duration_since(received_at) <= policy.attestation_max_age.get()
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) become plain IPv4 so that
/// both spellings of one address compare equal.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Lower case, without one trailing dot: the form names are compared in.
pub fn canonical_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// How the decision reads attestations. Owned by the core so that the gRPC
/// store and the offline `check` command can both feed `decide`.
pub trait AttestationLookup {
    /// The latest attestation held for `node`, fresh or not.
    fn attestation(&self, node: &str) -> Option<Arc<Attestation>>;
    /// Every held attestation (any node, any age) that reports `ip` on any
    /// interface or in any metadata source. `ip` is compared in canonical form.
    fn claimants_of_ip(&self, ip: IpAddr) -> Vec<Arc<Attestation>>;
    /// Every held attestation (any node, any age) whose node name, hostname or a
    /// metadata-stated DNS name equals `name` in canonical form.
    fn claimants_of_name(&self, name: &str) -> Vec<Arc<Attestation>>;

    /// Calls `visit` with each attestation [`claimants_of_ip`](Self::claimants_of_ip)
    /// would return, until it breaks. The decision uses this; indexed stores
    /// override it so that a lookup allocates nothing.
    fn visit_claimants_of_ip(
        &self,
        ip: IpAddr,
        visit: &mut dyn FnMut(&Attestation) -> ControlFlow<()>,
    ) {
        for a in self.claimants_of_ip(ip) {
            if visit(&a).is_break() {
                return;
            }
        }
    }

    /// Calls `visit` with each attestation [`claimants_of_name`](Self::claimants_of_name)
    /// would return, until it breaks.
    fn visit_claimants_of_name(
        &self,
        name: &str,
        visit: &mut dyn FnMut(&Attestation) -> ControlFlow<()>,
    ) {
        for a in self.claimants_of_name(name) {
            if visit(&a).is_break() {
                return;
            }
        }
    }
}

/// An indexed set of attestations, at most one per node.
///
/// Lookups by IP and by name are O(claimants), not O(nodes), so a bootstrap
/// storm of N CSRs costs O(N) rather than O(N²).
#[derive(Clone, Debug, Default)]
pub struct AttestationSet {
    by_node: BTreeMap<String, Arc<Attestation>>,
    by_ip: HashMap<IpAddr, BTreeSet<String>>,
    by_name: HashMap<String, BTreeSet<String>>,
}

// === impl AttestationSet ===

impl AttestationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the node's attestation (if any) with `attestation`; returns the old one.
    pub fn insert(&mut self, attestation: Arc<Attestation>) -> Option<Arc<Attestation>> {
        let node = attestation.node_name.clone();
        let old = self.remove(&node);
        for (_, ip) in attestation
            .addresses()
            .chain(attestation.metadata_addresses())
        {
            self.by_ip.entry(ip).or_default().insert(node.clone());
        }
        for name in Self::names_of(&attestation) {
            self.by_name.entry(name).or_default().insert(node.clone());
        }
        self.by_node.insert(node, attestation);
        old
    }

    /// Removes and returns the node's attestation.
    pub fn remove(&mut self, node: &str) -> Option<Arc<Attestation>> {
        let old = self.by_node.remove(node)?;
        for (_, ip) in old.addresses().chain(old.metadata_addresses()) {
            if let Some(nodes) = self.by_ip.get_mut(&ip) {
                nodes.remove(node);
                if nodes.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
        for name in Self::names_of(&old) {
            if let Some(nodes) = self.by_name.get_mut(&name) {
                nodes.remove(node);
                if nodes.is_empty() {
                    self.by_name.remove(&name);
                }
            }
        }
        Some(old)
    }

    /// Removes every attestation received before `cutoff`; returns the nodes removed.
    pub fn remove_received_before(&mut self, cutoff: Timestamp) -> Vec<String> {
        let stale: Vec<String> = self
            .by_node
            .values()
            .filter(|a| a.received_at < cutoff)
            .map(|a| a.node_name.clone())
            .collect();
        for node in &stale {
            self.remove(node);
        }
        stale
    }

    /// Number of nodes with an attestation.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// True when no node has an attestation.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// Attestations in node-name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Attestation>> + '_ {
        self.by_node.values()
    }

    /// The snapshot document for this set.
    pub fn snapshot(&self) -> AttestationSnapshot {
        AttestationSnapshot {
            attestations: self.by_node.values().map(|a| (**a).clone()).collect(),
        }
    }

    fn names_of(attestation: &Attestation) -> BTreeSet<String> {
        [
            canonical_name(&attestation.node_name),
            canonical_name(&attestation.hostname),
        ]
        .into_iter()
        .chain(
            attestation
                .metadata
                .iter()
                .flat_map(|m| m.dns_names.iter().map(|n| canonical_name(n))),
        )
        .filter(|n| !n.is_empty())
        .collect()
    }

    fn visit(
        &self,
        nodes: Option<&BTreeSet<String>>,
        visit: &mut dyn FnMut(&Attestation) -> ControlFlow<()>,
    ) {
        for node in nodes.into_iter().flatten() {
            if let Some(a) = self.by_node.get(node)
                && visit(a).is_break()
            {
                return;
            }
        }
    }

    fn lookup(&self, nodes: Option<&BTreeSet<String>>) -> Vec<Arc<Attestation>> {
        nodes
            .into_iter()
            .flatten()
            .filter_map(|n| self.by_node.get(n).cloned())
            .collect()
    }
}

impl FromIterator<Attestation> for AttestationSet {
    fn from_iter<I: IntoIterator<Item = Attestation>>(iter: I) -> Self {
        let mut set = Self::new();
        for a in iter {
            set.insert(Arc::new(a));
        }
        set
    }
}

impl From<AttestationSnapshot> for AttestationSet {
    fn from(snapshot: AttestationSnapshot) -> Self {
        snapshot.attestations.into_iter().collect()
    }
}

impl AttestationLookup for AttestationSet {
    fn attestation(&self, node: &str) -> Option<Arc<Attestation>> {
        self.by_node.get(node).cloned()
    }

    fn claimants_of_ip(&self, ip: IpAddr) -> Vec<Arc<Attestation>> {
        self.lookup(self.by_ip.get(&canonical_ip(ip)))
    }

    fn claimants_of_name(&self, name: &str) -> Vec<Arc<Attestation>> {
        self.lookup(self.by_name.get(&canonical_name(name)))
    }

    fn visit_claimants_of_ip(
        &self,
        ip: IpAddr,
        visit: &mut dyn FnMut(&Attestation) -> ControlFlow<()>,
    ) {
        self.visit(self.by_ip.get(&canonical_ip(ip)), visit);
    }

    fn visit_claimants_of_name(
        &self,
        name: &str,
        visit: &mut dyn FnMut(&Attestation) -> ControlFlow<()>,
    ) {
        // Names from a parsed request are already canonical: look them up
        // without building a new string.
        let is_canonical = !name.ends_with('.') && !name.bytes().any(|b| b.is_ascii_uppercase());
        let nodes = if is_canonical {
            self.by_name.get(name)
        } else {
            self.by_name.get(&canonical_name(name))
        };
        self.visit(nodes, visit);
    }
}
