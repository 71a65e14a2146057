//! Test inputs: kubelet-shaped CSRs made with rcgen, attestations, Nodes and a small cluster.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rubber_stamp_core::{
    Attestation, AttestationSet, CsrInput, INTERFACES_SOURCE, InterfaceFacts,
    KUBELET_SERVING_SIGNER, NodeAddress, NodeRecord, NodeSet, Observed, Ownership, Policy,
    ServiceAddress, ServiceField, ServiceRange, ServiceRecord, ServiceSet, SourceReport, Verdict,
    decide,
};

/// When the test CSRs are created.
pub(crate) fn t0() -> Timestamp {
    "2026-11-30T00:00:00Z".parse().expect("valid timestamp")
}

/// `t0` plus `secs` seconds (negative: before).
pub(crate) fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs))
        .expect("timestamp in range")
}

/// An IP from text.
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid IP")
}

pub(crate) use rubber_stamp_testkit::csr::{CsrSpec, dns_san, pem_of};

/// A kubelet-serving CSR object for `node`, created at `t0`, by that node.
pub(crate) fn csr_input(node: &str, pem_text: &str) -> CsrInput {
    CsrInput {
        name: format!("csr-{node}"),
        signer_name: KUBELET_SERVING_SIGNER.to_owned(),
        request: pem_text.as_bytes().to_vec(),
        usages: vec!["digital signature".to_owned(), "server auth".to_owned()],
        username: format!("system:node:{node}"),
        uid: "uid-1".to_owned(),
        groups: vec!["system:nodes".to_owned(), "system:authenticated".to_owned()],
        created_at: Some(t0()),
        ..CsrInput::default()
    }
}

/// An attestation: hostname = node name, peer = the first address, received at `received_at`.
pub(crate) fn attestation(
    node: &str,
    ifaces: &[(&str, &[&str])],
    received_at: Timestamp,
) -> Attestation {
    let interfaces: Vec<InterfaceFacts> = ifaces
        .iter()
        .map(|(name, addrs)| InterfaceFacts {
            name: (*name).to_owned(),
            addresses: addrs
                .iter()
                .map(|a| a.parse().expect("address/prefix"))
                .collect(),
        })
        .collect();
    let peer = interfaces
        .iter()
        .find(|i| i.name != "lo")
        .and_then(|i| i.addresses.first())
        .map(|n| n.addr());
    Attestation {
        node_name: node.to_owned(),
        hostname: node.to_owned(),
        interfaces,
        peer_address: peer,
        received_at,
        machine_id: Some(format!("machine-{node}")),
        boot_id: Some(format!("boot-{node}")),
        agent_version: Some("test".to_owned()),
        sources: vec![SourceReport::complete(INTERFACES_SOURCE)],
        metadata: Vec::new(),
        proof_port: None,
    }
}

/// A Node with InternalIPs and a Hostname address, ids matching [`attestation`].
pub(crate) fn node_record(node: &str, ips: &[&str]) -> NodeRecord {
    let mut addresses: Vec<NodeAddress> = ips
        .iter()
        .map(|a| NodeAddress {
            kind: "InternalIP".to_owned(),
            address: (*a).to_owned(),
        })
        .collect();
    addresses.push(NodeAddress {
        kind: "Hostname".to_owned(),
        address: node.to_owned(),
    });
    NodeRecord {
        name: node.to_owned(),
        addresses,
        machine_id: Some(format!("machine-{node}")),
        boot_id: Some(format!("boot-{node}")),
    }
}

/// Two dual-stack workers as their agents and Node objects describe them.
#[derive(Clone, Debug)]
pub(crate) struct World {
    /// The attestations by node.
    pub(crate) attestations: Vec<Attestation>,
    /// The Nodes, or None for "not given".
    pub(crate) nodes: Option<Vec<NodeRecord>>,
    /// The Services and ServiceCIDRs, or None for "not given".
    pub(crate) services: Option<ServiceSet>,
    /// The policy.
    pub(crate) policy: Policy,
    /// The decision time.
    pub(crate) now: Timestamp,
}

impl World {
    /// worker-1 (10.0.0.11, fd00::11, plus service/CNI addresses on excluded
    /// interfaces) and worker-2 (10.0.0.12, fd00::12), both attested 30 s
    /// after the CSR; decided 60 s after the CSR. Services and ServiceCIDRs are
    /// listed and there are none ([`World::with_cluster_services`] adds some).
    pub(crate) fn two_workers() -> Self {
        let w1: &[(&str, &[&str])] = &[
            ("lo", &["127.0.0.1/8", "::1/128"]),
            ("eth0", &["10.0.0.11/24", "fd00::11/64"]),
            ("kube-ipvs0", &["10.96.0.1/32", "10.96.0.10/32"]),
            ("cni0", &["10.244.1.1/24"]),
            ("cali12345", &["10.244.1.7/32"]),
        ];
        let w2: &[(&str, &[&str])] = &[
            ("lo", &["127.0.0.1/8"]),
            ("eth0", &["10.0.0.12/24", "fd00::12/64"]),
            ("kube-ipvs0", &["10.96.0.1/32", "10.96.0.10/32"]),
        ];
        Self {
            attestations: vec![
                attestation("worker-1", w1, at(30)),
                attestation("worker-2", w2, at(30)),
            ],
            nodes: Some(vec![
                node_record("worker-1", &["10.0.0.11", "fd00::11"]),
                node_record("worker-2", &["10.0.0.12", "fd00::12"]),
            ]),
            services: Some(ServiceSet::listed([], [])),
            policy: Policy::default(),
            now: at(60),
        }
    }

    /// The attestation of `node`, to change it.
    pub(crate) fn attestation_mut(&mut self, node: &str) -> &mut Attestation {
        self.attestations
            .iter_mut()
            .find(|a| a.node_name == node)
            .expect("node has an attestation")
    }

    /// The Node `node`, to change it.
    pub(crate) fn node_mut(&mut self, node: &str) -> &mut NodeRecord {
        self.nodes
            .as_mut()
            .and_then(|ns| ns.iter_mut().find(|n| n.name == node))
            .expect("node exists")
    }

    /// The cluster's Services as kubeadm and kind make them: `default/kubernetes` at
    /// 10.96.0.1 and fd00:10:96::1, `kube-system/kube-dns` at 10.96.0.10, and the
    /// ServiceCIDR `kubernetes` with 10.96.0.0/12 and fd00:10:96::/112.
    pub(crate) fn with_cluster_services(mut self) -> Self {
        self.services = Some(ServiceSet::listed(
            [
                service(
                    "default",
                    "kubernetes",
                    &[
                        ("10.96.0.1", ServiceField::ClusterIp),
                        ("fd00:10:96::1", ServiceField::ClusterIp),
                    ],
                ),
                service(
                    "kube-system",
                    "kube-dns",
                    &[("10.96.0.10", ServiceField::ClusterIp)],
                ),
            ],
            [ServiceRange::new(
                "kubernetes",
                [
                    "10.96.0.0/12".parse().expect("net"),
                    "fd00:10:96::/112".parse().expect("net"),
                ],
            )],
        ));
        self
    }

    /// The Services, to change them (they must be given).
    pub(crate) fn services_mut(&mut self) -> &mut ServiceSet {
        self.services.as_mut().expect("Services are given")
    }

    /// Decides on `csr` in this world, as the controller does with check 15's probes.
    pub(crate) fn decide_with(&self, csr: &CsrInput, ownership: Ownership<'_>) -> Verdict {
        self.decide_observing(csr, Some(ownership))
    }

    /// Decides on `csr` in this world.
    pub(crate) fn decide(&self, csr: &CsrInput) -> Verdict {
        self.decide_observing(csr, None)
    }

    fn decide_observing(&self, csr: &CsrInput, ownership: Option<Ownership<'_>>) -> Verdict {
        let set: AttestationSet = self.attestations.iter().cloned().collect();
        let nodes: Option<NodeSet> = self.nodes.as_ref().map(|ns| ns.iter().cloned().collect());
        let observed = Observed {
            attestations: &set,
            nodes: nodes.as_ref().map(|n| n as _),
            services: self.services.as_ref().map(|s| s as _),
            access_review: None,
            ownership,
        };
        decide(csr, observed, &self.policy, self.now)
    }
}

/// A Service holding these addresses.
pub(crate) fn service(namespace: &str, name: &str, ips: &[(&str, ServiceField)]) -> ServiceRecord {
    ServiceRecord::new(
        namespace,
        name,
        ips.iter().map(|(a, field)| ServiceAddress {
            ip: ip(a),
            field: *field,
        }),
    )
}
