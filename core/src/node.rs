//! What the cluster's Node objects say about each node, in the core's own terms.
//!
//! The controller and `check --nodes` convert `k8s_openapi` Nodes into
//! [`NodeRecord`]s at the edge; the core never sees Kubernetes types.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::attestation::{canonical_ip, canonical_name};

/// One entry of a Node's `status.addresses`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, `InternalDNS` or `ExternalDNS`.
    pub kind: String,
    /// The address as the Node lists it.
    pub address: String,
}

/// The parts of a Node object that the decision uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// `metadata.name`.
    pub name: String,
    /// `status.addresses`.
    pub addresses: Vec<NodeAddress>,
    /// `status.nodeInfo.machineID`, when set.
    pub machine_id: Option<String>,
    /// `status.nodeInfo.bootID`, when set.
    pub boot_id: Option<String>,
}

/// A key that a Node's address is indexed under: an IP in canonical form or a
/// name in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name or hostname.
    Name(String),
}

impl AddressKey {
    /// Parses an address as a Node lists it: an IP if it parses as one, else a name.
    pub fn parse(address: &str) -> Self {
        match address.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(canonical_ip(ip)),
            Err(_) => Self::Name(canonical_name(address)),
        }
    }
}

/// How the decision reads Node objects.
pub trait NodeLookup {
    /// The Node named `name`, if it exists.
    fn node(&self, name: &str) -> Option<Arc<NodeRecord>>;
    /// Names of every Node whose `status.addresses` (or name) contains `key`.
    fn nodes_listing(&self, key: &AddressKey) -> Vec<String>;

    /// Calls `visit` with each name [`nodes_listing`](Self::nodes_listing)
    /// would return, until it breaks. The decision uses this; indexed stores
    /// override it so that a lookup allocates nothing.
    fn visit_nodes_listing(
        &self,
        key: &AddressKey,
        visit: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) {
        for name in self.nodes_listing(key) {
            if visit(&name).is_break() {
                return;
            }
        }
    }
}

/// An indexed set of Node records.
#[derive(Clone, Debug, Default)]
pub struct NodeSet {
    by_name: BTreeMap<String, Arc<NodeRecord>>,
    by_address: HashMap<AddressKey, BTreeSet<String>>,
}

// === impl NodeSet ===

impl NodeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Node; returns the old record.
    pub fn insert(&mut self, node: Arc<NodeRecord>) -> Option<Arc<NodeRecord>> {
        let old = self.remove(&node.name.clone());
        for key in Self::keys_of(&node) {
            self.by_address
                .entry(key)
                .or_default()
                .insert(node.name.clone());
        }
        self.by_name.insert(node.name.clone(), node);
        old
    }

    /// Removes and returns a Node.
    pub fn remove(&mut self, name: &str) -> Option<Arc<NodeRecord>> {
        let old = self.by_name.remove(name)?;
        for key in Self::keys_of(&old) {
            if let Some(names) = self.by_address.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.by_address.remove(&key);
                }
            }
        }
        Some(old)
    }

    /// Number of Nodes.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are no Nodes.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Nodes in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<NodeRecord>> + '_ {
        self.by_name.values()
    }

    fn keys_of(node: &NodeRecord) -> BTreeSet<AddressKey> {
        node.addresses
            .iter()
            .map(|a| AddressKey::parse(&a.address))
            .chain(std::iter::once(AddressKey::Name(canonical_name(
                &node.name,
            ))))
            .collect()
    }
}

impl FromIterator<NodeRecord> for NodeSet {
    fn from_iter<I: IntoIterator<Item = NodeRecord>>(iter: I) -> Self {
        let mut set = Self::new();
        for n in iter {
            set.insert(Arc::new(n));
        }
        set
    }
}

impl NodeLookup for NodeSet {
    fn node(&self, name: &str) -> Option<Arc<NodeRecord>> {
        self.by_name.get(name).cloned()
    }

    fn nodes_listing(&self, key: &AddressKey) -> Vec<String> {
        self.by_address
            .get(key)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn visit_nodes_listing(
        &self,
        key: &AddressKey,
        visit: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) {
        for name in self.by_address.get(key).into_iter().flatten() {
            if visit(name).is_break() {
                return;
            }
        }
    }
}
