//! The cluster's Service addresses in the core's terms, and the rule check 9 applies to them.
//!
//! A kubelet serving certificate signed by the cluster CA for an address a Service holds
//! lets its holder impersonate that Service to every client that trusts the cluster CA
//! (the `kubernetes` Service at 10.96.0.1 first of all). So, whatever the node's facts, an
//! IP SAN is denied when it lies in one of the cluster's Service ranges (ServiceCIDR
//! objects) or when a Service holds it (`spec.clusterIPs`, `spec.externalIPs`,
//! `status.loadBalancer.ingress[].ip`).
//!
//! One exception keeps honest nodes working: on k3s (ServiceLB) and bare-metal
//! `externalIPs` setups a Service's external or load-balancer IP *is* a node's address. A
//! kubelet asks only for the addresses its own Node object lists, so an external or
//! load-balancer IP that the requesting node's own Node lists in `status.addresses` is not
//! denied by this rule (the detail says so). Cluster IPs and ServiceCIDR ranges are never
//! exempt: no node legitimately holds them.
//!
//! The controller and `check --services/--service-cidrs` convert `k8s_openapi` objects into
//! [`ServiceRecord`]s and [`ServiceRange`]s at the edge; the core never sees Kubernetes
//! types.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use ipnet::IpNet;

use crate::attestation::canonical_ip;
use crate::node::{AddressKey, NodeLookup};
use crate::policy::{Policy, ServiceAddressMode};

/// The field of a Service an address comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceField {
    /// `spec.clusterIPs` (and `spec.clusterIP`): allocated from the Service ranges.
    ClusterIp,
    /// `spec.externalIPs`: set by whoever may edit the Service.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip`: set by the load-balancer controller.
    LoadBalancerIngress,
}

impl ServiceField {
    /// The field as Kubernetes spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "spec.clusterIPs",
            Self::ExternalIp => "spec.externalIPs",
            Self::LoadBalancerIngress => "status.loadBalancer.ingress[].ip",
        }
    }

    /// What the address is to the Service, in words.
    const fn role(self) -> &'static str {
        match self {
            Self::ClusterIp => "a cluster IP",
            Self::ExternalIp => "an external IP",
            Self::LoadBalancerIngress => "a load-balancer ingress IP",
        }
    }

    /// True when a node may legitimately hold this kind of address (its own Node lists
    /// it): external and load-balancer IPs, never cluster IPs.
    pub const fn may_be_a_node_address(self) -> bool {
        !matches!(self, Self::ClusterIp)
    }
}

impl fmt::Display for ServiceField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address a Service holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAddress {
    /// The address, in canonical form.
    pub ip: IpAddr,
    /// Where the Service holds it.
    pub field: ServiceField,
}

/// The parts of a Service that the decision uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Every IP the Service holds, canonical, without duplicates.
    pub addresses: Vec<ServiceAddress>,
}

impl ServiceRecord {
    /// A record; addresses are canonicalised, sorted and deduplicated.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        addresses: impl IntoIterator<Item = ServiceAddress>,
    ) -> Self {
        let mut addresses: Vec<ServiceAddress> = addresses
            .into_iter()
            .map(|a| ServiceAddress {
                ip: canonical_ip(a.ip),
                field: a.field,
            })
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        Self {
            namespace: namespace.into(),
            name: name.into(),
            addresses,
        }
    }

    /// The IPs, each once.
    pub fn ips(&self) -> BTreeSet<IpAddr> {
        self.addresses.iter().map(|a| a.ip).collect()
    }
}

/// A range of Service IPs: a ServiceCIDR object's `spec.cidrs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRange {
    /// `metadata.name` of the ServiceCIDR (`kubernetes` for the default range).
    pub name: String,
    /// `spec.cidrs` (one per IP family), normalised.
    pub cidrs: Vec<IpNet>,
}

impl ServiceRange {
    /// A range; networks are normalised (host bits cleared).
    pub fn new(name: impl Into<String>, cidrs: impl IntoIterator<Item = IpNet>) -> Self {
        let mut cidrs: Vec<IpNet> = cidrs.into_iter().map(|n| n.trunc()).collect();
        cidrs.sort_unstable();
        cidrs.dedup();
        Self {
            name: name.into(),
            cidrs,
        }
    }
}

/// How much of one kind of object a [`ServiceLookup`] knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listing {
    /// Not given (offline `check` without the file): that part of the rule is reported as
    /// not evaluated, never as passed.
    #[default]
    NotGiven,
    /// Not listed yet (the controller's first list is under way): CSRs with IP SANs wait.
    Waiting,
    /// Listed and kept current.
    Listed,
    /// The API server does not serve this kind (ServiceCIDRs before Kubernetes 1.33):
    /// the policy's `deniedCidrs` and the Services' own addresses stand in for the ranges.
    Unserved,
}

/// How the decision reads the cluster's Services and Service ranges.
pub trait ServiceLookup {
    /// How far the Services are known.
    fn services_listing(&self) -> Listing;
    /// How far the ServiceCIDRs are known.
    fn ranges_listing(&self) -> Listing;
    /// Calls `visit` with every Service holding `ip` (canonical) and the field it is held
    /// in, until it breaks.
    fn visit_holders(
        &self,
        ip: IpAddr,
        visit: &mut dyn FnMut(&ServiceRecord, ServiceField) -> ControlFlow<()>,
    );
    /// The first ServiceCIDR (in name order) whose ranges contain `ip`, and that range.
    fn range_containing(&self, ip: IpAddr) -> Option<(String, IpNet)>;
}

/// Services and ServiceCIDRs, indexed by address.
#[derive(Clone, Debug, Default)]
pub struct ServiceSet {
    services_listing: Listing,
    ranges_listing: Listing,
    by_key: BTreeMap<(String, String), Arc<ServiceRecord>>,
    by_ip: HashMap<IpAddr, BTreeSet<(String, String)>>,
    ranges: BTreeMap<String, Arc<ServiceRange>>,
}

// === impl ServiceSet ===

impl ServiceSet {
    /// An empty set that knows nothing (both parts [`Listing::NotGiven`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of these Services and ranges, both parts [`Listing::Listed`].
    pub fn listed(
        services: impl IntoIterator<Item = ServiceRecord>,
        ranges: impl IntoIterator<Item = ServiceRange>,
    ) -> Self {
        let mut set = Self::new();
        for s in services {
            set.insert(Arc::new(s));
        }
        for r in ranges {
            set.insert_range(Arc::new(r));
        }
        set.services_listing = Listing::Listed;
        set.ranges_listing = Listing::Listed;
        set
    }

    /// Sets how far the Services are known.
    pub fn set_services_listing(&mut self, listing: Listing) {
        self.services_listing = listing;
    }

    /// Sets how far the ServiceCIDRs are known.
    pub fn set_ranges_listing(&mut self, listing: Listing) {
        self.ranges_listing = listing;
    }

    /// Adds or replaces a Service; returns the old record.
    pub fn insert(&mut self, service: Arc<ServiceRecord>) -> Option<Arc<ServiceRecord>> {
        let key = (service.namespace.clone(), service.name.clone());
        let old = self.remove(&key.0, &key.1);
        for ip in service.ips() {
            self.by_ip.entry(ip).or_default().insert(key.clone());
        }
        self.by_key.insert(key, service);
        old
    }

    /// Removes and returns a Service.
    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<ServiceRecord>> {
        let key = (namespace.to_owned(), name.to_owned());
        let old = self.by_key.remove(&key)?;
        for ip in old.ips() {
            if let Some(keys) = self.by_ip.get_mut(&ip) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
        Some(old)
    }

    /// Removes every Service.
    pub fn clear_services(&mut self) {
        self.by_key.clear();
        self.by_ip.clear();
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceRecord>> {
        self.by_key.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Services in namespace/name order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceRecord>> + '_ {
        self.by_key.values()
    }

    /// Number of Services.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there are no Services.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Adds or replaces a ServiceCIDR; returns the old one.
    pub fn insert_range(&mut self, range: Arc<ServiceRange>) -> Option<Arc<ServiceRange>> {
        self.ranges.insert(range.name.clone(), range)
    }

    /// Removes and returns a ServiceCIDR.
    pub fn remove_range(&mut self, name: &str) -> Option<Arc<ServiceRange>> {
        self.ranges.remove(name)
    }

    /// Removes every ServiceCIDR.
    pub fn clear_ranges(&mut self) {
        self.ranges.clear();
    }

    /// ServiceCIDRs in name order.
    pub fn ranges(&self) -> impl Iterator<Item = &Arc<ServiceRange>> + '_ {
        self.ranges.values()
    }
}

impl ServiceLookup for ServiceSet {
    fn services_listing(&self) -> Listing {
        self.services_listing
    }

    fn ranges_listing(&self) -> Listing {
        self.ranges_listing
    }

    fn visit_holders(
        &self,
        ip: IpAddr,
        visit: &mut dyn FnMut(&ServiceRecord, ServiceField) -> ControlFlow<()>,
    ) {
        let ip = canonical_ip(ip);
        for key in self.by_ip.get(&ip).into_iter().flatten() {
            let Some(service) = self.by_key.get(key) else {
                continue;
            };
            for a in service.addresses.iter().filter(|a| a.ip == ip) {
                if visit(service, a.field).is_break() {
                    return;
                }
            }
        }
    }

    fn range_containing(&self, ip: IpAddr) -> Option<(String, IpNet)> {
        let ip = canonical_ip(ip);
        // A handful of objects (the default one, perhaps one per family or extension).
        self.ranges.values().find_map(|r| {
            r.cidrs
                .iter()
                .find(|n| n.contains(&ip))
                .map(|n| (r.name.clone(), *n))
        })
    }
}

/// What the Service rule says about one IP SAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceJudgement {
    /// No Service range contains it and no Service holds it (as far as is known).
    Clear,
    /// Denied whatever the node's facts: the detail names the Service (and field) or the
    /// ServiceCIDR.
    Denied(String),
    /// A Service's external or load-balancer IP that the node's own Node lists: not
    /// denied by this rule (the detail says so).
    OwnAddress(String),
    /// A Service's external or load-balancer IP, and the node's Node object is not known:
    /// whether it is the node's own address cannot be told yet.
    Undecided(String),
}

/// The Service rule for one request: check 9 asks it about each IP SAN.
pub struct ServiceRule<'a> {
    services: Option<&'a dyn ServiceLookup>,
    nodes: Option<&'a dyn NodeLookup>,
    node: Option<&'a str>,
    mode: ServiceAddressMode,
}

impl fmt::Debug for ServiceRule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRule")
            .field("node", &self.node)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

// === impl ServiceRule ===

impl<'a> ServiceRule<'a> {
    /// The rule for a request of `node` (when the subject names one) under `policy`.
    pub fn new(
        services: Option<&'a dyn ServiceLookup>,
        nodes: Option<&'a dyn NodeLookup>,
        node: Option<&'a str>,
        policy: &Policy,
    ) -> Self {
        Self {
            services,
            nodes,
            node,
            mode: policy.service_addresses,
        }
    }

    /// True when the policy switched the rule off (`serviceAddresses: ignore`).
    pub fn is_off(&self) -> bool {
        self.mode == ServiceAddressMode::Ignore
    }

    /// Why no decision on IP SANs can be made yet (Services or ServiceCIDRs still being
    /// listed), if so.
    pub fn waiting(&self) -> Option<String> {
        if self.is_off() {
            return None;
        }
        let services = self.services?;
        let mut waiting = Vec::with_capacity(2);
        if services.services_listing() == Listing::Waiting {
            waiting.push("the Services");
        }
        if services.ranges_listing() == Listing::Waiting {
            waiting.push("the ServiceCIDRs");
        }
        (!waiting.is_empty()).then(|| {
            format!(
                "{} have not been listed yet; IP SANs are decided once they are",
                waiting.join(" and ")
            )
        })
    }

    /// What part of the rule cannot be evaluated at all (inputs not given), if any.
    pub fn not_evaluated(&self) -> Option<String> {
        if self.is_off() {
            return None;
        }
        let Some(services) = self.services else {
            return Some("Services and ServiceCIDRs not given".to_owned());
        };
        match (
            services.services_listing() == Listing::NotGiven,
            services.ranges_listing() == Listing::NotGiven,
        ) {
            (true, true) => Some("Services and ServiceCIDRs not given".to_owned()),
            (true, false) => Some("Services not given".to_owned()),
            (false, true) => Some("ServiceCIDRs not given".to_owned()),
            (false, false) => None,
        }
    }

    /// A note for a passing check when ServiceCIDRs are not served by the API server.
    pub fn fallback_note(&self) -> Option<&'static str> {
        (!self.is_off()
            && self
                .services
                .is_some_and(|s| s.ranges_listing() == Listing::Unserved))
        .then_some(
            "the API server serves no ServiceCIDRs, so only the Services' own addresses and the policy's deniedCidrs stand for the Service range",
        )
    }

    /// The rule's judgement on one IP SAN (canonical).
    pub fn judge(&self, ip: IpAddr) -> ServiceJudgement {
        if self.is_off() {
            return ServiceJudgement::Clear;
        }
        let Some(services) = self.services else {
            return ServiceJudgement::Clear;
        };
        // The Service holding it names the problem best; then the range.
        let mut cluster_ip = None;
        let mut other = None;
        if services.services_listing() == Listing::Listed {
            services.visit_holders(ip, &mut |service, field| {
                let held = format!(
                    "{ip} is {} of Service {}/{} ({field})",
                    field.role(),
                    service.namespace,
                    service.name
                );
                if field.may_be_a_node_address() {
                    other.get_or_insert(held);
                    ControlFlow::Continue(())
                } else {
                    cluster_ip = Some(held);
                    ControlFlow::Break(())
                }
            });
        }
        if let Some(held) = cluster_ip {
            return ServiceJudgement::Denied(held);
        }
        if services.ranges_listing() == Listing::Listed
            && let Some((name, net)) = services.range_containing(ip)
        {
            let also = other.map(|o| format!(" ({o})")).unwrap_or_default();
            return ServiceJudgement::Denied(format!(
                "{ip} is in the cluster's Service range {net} (ServiceCIDR {name}){also}"
            ));
        }
        let Some(held) = other else {
            return ServiceJudgement::Clear;
        };
        let (Some(nodes), Some(node)) = (self.nodes, self.node) else {
            return ServiceJudgement::Undecided(format!(
                "{held}; whether it is the node's own address needs Node objects"
            ));
        };
        let Some(record) = nodes.node(node) else {
            return ServiceJudgement::Undecided(format!(
                "{held}; there is no Node {node} yet to show whether it is {node}'s own address"
            ));
        };
        let key = AddressKey::Ip(ip);
        if record
            .addresses
            .iter()
            .any(|a| AddressKey::parse(&a.address) == key)
        {
            ServiceJudgement::OwnAddress(format!(
                "{held}, allowed because Node {node} lists it in status.addresses"
            ))
        } else {
            ServiceJudgement::Denied(format!(
                "{held}, and Node {node} does not list it in status.addresses"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeAddress, NodeRecord, NodeSet};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn svc(ns: &str, name: &str, addrs: &[(&str, ServiceField)]) -> ServiceRecord {
        ServiceRecord::new(
            ns,
            name,
            addrs.iter().map(|(a, field)| ServiceAddress {
                ip: ip(a),
                field: *field,
            }),
        )
    }

    #[test]
    fn the_index_follows_inserts_and_removals() {
        let mut set = ServiceSet::listed(
            [svc(
                "default",
                "kubernetes",
                &[("10.96.0.1", ServiceField::ClusterIp)],
            )],
            [],
        );
        let holders = |set: &ServiceSet, a: &str| {
            let mut out = Vec::new();
            set.visit_holders(ip(a), &mut |s, f| {
                out.push(format!("{}/{} {f}", s.namespace, s.name));
                ControlFlow::Continue(())
            });
            out
        };
        assert_eq!(
            holders(&set, "10.96.0.1"),
            ["default/kubernetes spec.clusterIPs"]
        );
        // Replaced: the old address is no longer indexed.
        set.insert(Arc::new(svc(
            "default",
            "kubernetes",
            &[("10.96.0.2", ServiceField::ClusterIp)],
        )));
        assert!(holders(&set, "10.96.0.1").is_empty());
        // An IPv4-mapped IPv6 form finds the IPv4 holder.
        assert_eq!(holders(&set, "::ffff:10.96.0.2").len(), 1);
        assert!(set.remove("default", "kubernetes").is_some());
        assert!(holders(&set, "10.96.0.2").is_empty() && set.is_empty());
    }

    #[test]
    fn cluster_ips_and_ranges_are_never_exempt_external_ips_of_the_own_node_are() {
        let set = ServiceSet::listed(
            [
                svc(
                    "default",
                    "kubernetes",
                    &[("10.96.0.1", ServiceField::ClusterIp)],
                ),
                svc(
                    "web",
                    "lb",
                    &[
                        ("192.0.2.10", ServiceField::LoadBalancerIngress),
                        ("10.0.0.11", ServiceField::ExternalIp),
                    ],
                ),
            ],
            [ServiceRange::new(
                "kubernetes",
                ["10.96.0.0/12".parse().expect("net")],
            )],
        );
        let nodes: NodeSet = [NodeRecord {
            name: "worker-1".to_owned(),
            addresses: vec![NodeAddress {
                kind: "InternalIP".to_owned(),
                address: "10.0.0.11".to_owned(),
            }],
            ..NodeRecord::default()
        }]
        .into_iter()
        .collect();
        let policy = Policy::default();
        let rule = ServiceRule::new(Some(&set), Some(&nodes), Some("worker-1"), &policy);
        assert!(
            matches!(rule.judge(ip("10.96.0.1")), ServiceJudgement::Denied(d) if d.contains("Service default/kubernetes (spec.clusterIPs)"))
        );
        assert!(
            matches!(rule.judge(ip("10.96.0.99")), ServiceJudgement::Denied(d) if d.contains("ServiceCIDR kubernetes"))
        );
        assert!(
            matches!(rule.judge(ip("10.0.0.11")), ServiceJudgement::OwnAddress(d) if d.contains("web/lb (spec.externalIPs)"))
        );
        assert!(
            matches!(rule.judge(ip("192.0.2.10")), ServiceJudgement::Denied(d) if d.contains("does not list it"))
        );
        assert_eq!(rule.judge(ip("10.0.0.12")), ServiceJudgement::Clear);
        assert_eq!(rule.waiting(), None);
        assert_eq!(rule.not_evaluated(), None);
        let offline = ServiceRule::new(Some(&set), None, Some("worker-1"), &policy);
        assert!(matches!(
            offline.judge(ip("10.0.0.11")),
            ServiceJudgement::Undecided(_)
        ));
        let off = Policy {
            service_addresses: ServiceAddressMode::Ignore,
            ..Policy::default()
        };
        let rule = ServiceRule::new(Some(&set), Some(&nodes), Some("worker-1"), &off);
        assert_eq!(rule.judge(ip("10.96.0.1")), ServiceJudgement::Clear);
        let none = ServiceRule::new(None, Some(&nodes), Some("worker-1"), &policy);
        assert_eq!(
            none.not_evaluated().as_deref(),
            Some("Services and ServiceCIDRs not given")
        );
    }

    #[test]
    fn listing_states_say_what_waits_and_what_is_not_evaluated() {
        let mut set = ServiceSet::new();
        set.set_services_listing(Listing::Waiting);
        set.set_ranges_listing(Listing::Unserved);
        let policy = Policy::default();
        let rule = ServiceRule::new(Some(&set), None, None, &policy);
        assert!(
            rule.waiting()
                .is_some_and(|w| w.starts_with("the Services have"))
        );
        assert!(rule.fallback_note().is_some());
        set.set_services_listing(Listing::Listed);
        set.set_ranges_listing(Listing::NotGiven);
        let rule = ServiceRule::new(Some(&set), None, None, &policy);
        assert_eq!(rule.waiting(), None);
        assert_eq!(
            rule.not_evaluated().as_deref(),
            Some("ServiceCIDRs not given")
        );
    }
}
