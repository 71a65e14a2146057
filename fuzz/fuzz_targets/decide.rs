//! Fuzzes `decide` with arbitrary CSR objects, attestations, Nodes, Services and policies.
//!
//! Requests are built and signed with rcgen from arbitrary parts drawn from a
//! small vocabulary (so names and addresses collide often), then decided. Besides
//! "never panics", it checks invariants with an independent, naive oracle: an
//! approval must be justified by the facts, a denial for a missing SAN must rest
//! on evidence (fresh, complete, consistent facts received after the CSR, not
//! doubted by the Node), `deny: never` never denies, no approved IP is a
//! Service's cluster IP or in a ServiceCIDR, and `decide` agrees with
//! `decide_parsed`. Attestations may carry a cloud's metadata (complete or not), and the
//! policy may accept any cloud's, none or only one's: the oracle counts an accepted
//! source's addresses and names as the node's, and every source's as a claim.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};
use rubber_stamp_core::policy::{DnsSuffix, ProofMode, SourcePattern};
use rubber_stamp_core::{
    Attestation, AttestationSet, CheckName, CsrInput, Decision, DenyMode, INTERFACES_SOURCE,
    InterfaceFacts, KUBELET_SERVING_SIGNER, Listing, MetadataFacts, NodeAddress, NodeRecord, NodeSet, Observed,
    Policy, Reason, ServiceAddress, ServiceField, ServiceLookup as _, ServiceRange,
    ServiceRecord, ServiceSet, SourceReport, decide, decide_parsed, names, parse_request,
};
use rubber_stamp_core::{Ownership, OwnershipLookup, ProofState};

const NODES: [&str; 3] = ["worker-1", "worker-2", "worker-3"];
const IPS: [&str; 8] = [
    "10.0.0.11",
    "10.0.0.12",
    "10.0.0.13",
    "fd00::11",
    "fd00::12",
    "10.96.0.10",
    "127.0.0.1",
    "169.254.1.1",
];
const IFACES: [&str; 7] = [
    "eth0",
    "ens3",
    "lo",
    "kube-ipvs0",
    "cni0",
    "cali12",
    "br-ex",
];
const USAGES: [&str; 5] = [
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
    "cert sign",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Node(u8),
    Upper(u8),
    Dot(u8),
    Suffixed(u8),
    /// The node's name under another domain (a hostname sharing its first label).
    Lan(u8),
    /// A cluster Service name (always denied by default).
    Service(u8),
    /// A name of the API server or of loopback (always denied).
    Reserved(u8),
    /// An IPv4 address in one of inet_aton's spellings.
    Numeric(u32),
    /// A name in a cloud's instance domains (what metadata states).
    CloudName(u8),
    Raw(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Self::Node(i) => NODES[*i as usize % 3].to_owned(),
            Self::Upper(i) => NODES[*i as usize % 3].to_ascii_uppercase(),
            Self::Dot(i) => format!("{}.", NODES[*i as usize % 3]),
            Self::Suffixed(i) => format!("{}.nodes.example.com", NODES[*i as usize % 3]),
            Self::Lan(i) => format!("{}.lan", NODES[*i as usize % 3]),
            Self::Service(i) => format!("{}.default.svc.cluster.local", NODES[*i as usize % 3]),
            Self::Reserved(i) => ["kubernetes", "kubernetes.default", "localhost", "a.localhost"]
                [*i as usize % 4]
                .to_owned(),
            Self::Numeric(n) => match n % 3 {
                0 => format!("10.{}", n >> 8),
                1 => format!("0x{:x}.0.0.{}", n >> 24, n & 0xff),
                _ => format!("0{:o}.0.0.1", (n >> 8) & 0xff),
            },
            Self::CloudName(i) => [
                "ip-10-0-0-11.ec2.internal",
                "worker-2.c.proj.internal",
                "ec2-203-0-113-7.compute-1.amazonaws.com",
            ][*i as usize % 3]
                .to_owned(),
            Self::Raw(s) => s.chars().take(80).collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Ip {
    Known(u8),
    Mapped(u8),
    V4(u32),
    V6(u128),
}

impl Ip {
    fn addr(&self) -> IpAddr {
        let known = |i: &u8| -> IpAddr {
            IPS[*i as usize % IPS.len()]
                .parse()
                .unwrap_or(IpAddr::from([10, 0, 0, 1]))
        };
        match self {
            Self::Known(i) => known(i),
            Self::Mapped(i) => match known(i) {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            },
            Self::V4(n) => IpAddr::from(n.to_be_bytes()),
            Self::V6(n) => IpAddr::from(n.to_be_bytes()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum San {
    Dns(Name),
    Ip(Ip),
    Email,
    Uri,
}

#[derive(Arbitrary, Debug)]
struct Iface {
    kind: u8,
    addrs: Vec<(Ip, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Att {
    node: u8,
    hostname: Name,
    ifaces: Vec<Iface>,
    peer: Option<Ip>,
    received: i16,
    machine: Option<u8>,
    boot: Option<u8>,
    /// None: the agent says nothing about completeness (an old agent);
    /// Some(false): it says the interfaces were cut.
    complete: Option<bool>,
    /// What a cloud's metadata states, when the agent read one.
    cloud: Option<Cloud>,
}

#[derive(Arbitrary, Debug)]
struct Cloud {
    /// Even: `cloud:aws`, odd: `cloud:gcp`.
    provider: u8,
    ips: Vec<Ip>,
    names: Vec<Name>,
    complete: bool,
}

/// The metadata source names the fuzzer uses.
const CLOUDS: [&str; 2] = ["cloud:aws", "cloud:gcp"];

#[derive(Arbitrary, Debug)]
struct NodeRec {
    node: u8,
    ips: Vec<Ip>,
    names: Vec<Name>,
    machine: Option<u8>,
    boot: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Svc {
    /// 0: cluster IP, 1: external IP, else load-balancer ingress.
    field: u8,
    ip: Ip,
}

#[derive(Arbitrary, Debug)]
struct Services {
    services: Vec<Vec<Svc>>,
    range: Option<(Ip, u8)>,
    /// 0: listed, 1: waiting, 2: unserved, else not given (for the ranges).
    ranges_listing: u8,
    services_waiting: bool,
}

#[derive(Arbitrary, Debug)]
struct Knobs {
    max_sans: u8,
    max_age_secs: u16,
    peer_binding: bool,
    deny_never: bool,
    suffix: bool,
    denied: Option<(Ip, u8)>,
    allowed: Option<(Ip, u8)>,
    max_expiration: Option<u32>,
    clock_skew: u8,
    overlapping_suffixes: bool,
    /// metadataSources.ipSans and .dnsSans: 0 any cloud (the default), 1 none, else
    /// `cloud:aws` only.
    meta_ip: u8,
    meta_dns: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    requester: u8,
    cn: Option<Name>,
    cn_prefix: bool,
    org_ok: bool,
    sans: Vec<San>,
    ca: bool,
    username_matches: bool,
    groups_ok: bool,
    usages: u8,
    expiration: Option<i32>,
    created: Option<i16>,
    /// When the approver first saw the CSR (None: offline).
    seen: Option<i16>,
    condition: Option<u8>,
    signer_ok: bool,
    attestations: Vec<Att>,
    nodes: Option<Vec<NodeRec>>,
    services: Option<Services>,
    ignore_services: bool,
    knobs: Knobs,
    now: i16,
    /// Check 15: one byte per (node, SAN) picks a probe result; `proof_mode` the policy's
    /// modes; `listener` the agents' proof port (None: no listener).
    proofs: Vec<u8>,
    proof_mode: u8,
    listener: Option<u8>,
}

/// Probe results drawn from the fuzzer's bytes.
struct FuzzedProofs<'a>(&'a [u8]);

impl OwnershipLookup for FuzzedProofs<'_> {
    fn proof(&self, _csr: &str, node: &str, san: IpAddr) -> Option<ProofState> {
        if self.0.is_empty() {
            return None;
        }
        let key = node.bytes().chain(san.to_string().into_bytes()).fold(7usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let b = self.0[key % self.0.len()];
        Some(match b % 6 {
            0 => ProofState::Probing { since: t(0) },
            1 => ProofState::Proven { at: t(1), local: san },
            2 => ProofState::ReceivedByOther {
                node: NODES[usize::from(b / 6) % 3].to_owned(),
                local: san,
                at: t(1),
            },
            3 => ProofState::Refused { at: t(1) },
            4 => return None,
            _ => ProofState::Unanswered {
                at: t(1),
                attempts: u32::from(b),
                delivered: u32::from(b % 4),
                what: "fuzzed".to_owned(),
            },
        })
    }
}

fn key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate().expect("ECDSA P-256 key"))
}

fn t(offset: i16) -> Timestamp {
    Timestamp::UNIX_EPOCH
        .checked_add(SignedDuration::from_secs(1_800_000_000 + i64::from(offset)))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn net(ip: &Ip, prefix: u8) -> Option<ipnet::IpNet> {
    let addr = ip.addr();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    ipnet::IpNet::new(addr, prefix % (max + 1)).ok()
}

fn build_request(input: &Input, node: &str) -> Option<String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        if input.org_ok {
            "system:nodes"
        } else {
            "system:masters"
        },
    );
    let cn = match &input.cn {
        None => node.to_owned(),
        Some(name) => name.text(),
    };
    let cn = if input.cn_prefix {
        format!("system:node:{cn}")
    } else {
        cn
    };
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    for san in input.sans.iter().take(24) {
        params.subject_alt_names.push(match san {
            San::Dns(name) => SanType::DnsName(name.text().try_into().ok()?),
            San::Ip(ip) => SanType::IpAddress(ip.addr()),
            San::Email => SanType::Rfc822Name("root@example.com".try_into().ok()?),
            San::Uri => SanType::URI("https://example.com".try_into().ok()?),
        });
    }
    if input.ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params.serialize_request(key()).ok()?.pem().ok()
}

fn policy(k: &Knobs) -> Policy {
    let mut p = Policy {
        max_sans: usize::from(k.max_sans % 8).max(1),
        peer_binding: k.peer_binding,
        deny: if k.deny_never {
            DenyMode::Never
        } else {
            DenyMode::Always
        },
        max_expiration_seconds: k
            .max_expiration
            .map_or(Policy::default().max_expiration_seconds, |m| {
                m.clamp(600, i32::MAX as u32)
            }),
        clock_skew: rubber_stamp_core::policy::HumanDuration::new(
            SignedDuration::from_secs(i64::from(k.clock_skew % 30)),
        ),
        ..Policy::default()
    };
    p.attestation_max_age = rubber_stamp_core::policy::HumanDuration::new(
        SignedDuration::from_secs(i64::from(k.max_age_secs).max(1)),
    );
    if k.suffix {
        p.allowed_dns_suffixes = DnsSuffix::new("nodes.example.com").into_iter().collect();
        if k.overlapping_suffixes {
            p.allowed_dns_suffixes
                .extend(DnsSuffix::new("example.com").into_iter());
        }
    }
    let sources = |choice: u8| -> Vec<SourcePattern> {
        match choice % 3 {
            0 => SourcePattern::new("cloud:*").into_iter().collect(),
            1 => Vec::new(),
            _ => SourcePattern::new("cloud:aws").into_iter().collect(),
        }
    };
    p.metadata_sources.ip_sans = sources(k.meta_ip);
    p.metadata_sources.dns_sans = sources(k.meta_dns);
    p.denied_cidrs = k.denied.iter().filter_map(|(ip, n)| net(ip, *n)).collect();
    p.allowed_cidrs = k.allowed.iter().filter_map(|(ip, n)| net(ip, *n)).collect();
    p.validated().unwrap_or_default()
}

fuzz_target!(|input: Input| {
    let node = NODES[input.requester as usize % 3];
    let Some(pem_text) = build_request(&input, node) else {
        return;
    };
    let policy = policy(&input.knobs);
    let now = t(input.now);
    let csr = CsrInput {
        name: "csr-fuzz".to_owned(),
        signer_name: if input.signer_ok {
            KUBELET_SERVING_SIGNER.to_owned()
        } else {
            "example.com/other".to_owned()
        },
        request: pem_text.into_bytes(),
        usages: (0..5)
            .filter(|b| input.usages & (1 << b) != 0)
            .map(|b| USAGES[b].to_owned())
            .collect(),
        username: if input.username_matches {
            format!("system:node:{node}")
        } else {
            "system:node:worker-9".to_owned()
        },
        groups: if input.groups_ok {
            vec!["system:nodes".to_owned()]
        } else {
            vec!["system:authenticated".to_owned()]
        },
        expiration_seconds: input.expiration,
        created_at: input.created.map(t),
        seen_at: input.seen.map(t),
        conditions: input
            .condition
            .map(|c| ["Approved", "Denied", "Failed", "Other"][c as usize % 4].to_owned())
            .into_iter()
            .collect(),
        ..CsrInput::default()
    };
    let attestations: Vec<Attestation> = input
        .attestations
        .iter()
        .take(8)
        .map(|a| Attestation {
            node_name: NODES[a.node as usize % 3].to_owned(),
            hostname: a.hostname.text(),
            interfaces: a
                .ifaces
                .iter()
                .take(6)
                .map(|i| InterfaceFacts {
                    name: IFACES[i.kind as usize % IFACES.len()].to_owned(),
                    addresses: i
                        .addrs
                        .iter()
                        .take(6)
                        .filter_map(|(ip, n)| net(ip, *n))
                        .collect(),
                })
                .collect(),
            peer_address: a.peer.as_ref().map(Ip::addr),
            received_at: t(a.received),
            machine_id: a.machine.map(|m| format!("m{}", m % 3)),
            boot_id: a.boot.map(|b| format!("b{}", b % 3)),
            agent_version: None,
            sources: match a.complete {
                None => Vec::new(),
                Some(true) => vec![SourceReport::complete(INTERFACES_SOURCE)],
                Some(false) => vec![SourceReport::incomplete(INTERFACES_SOURCE, "cut")],
            }
            .into_iter()
            .chain(a.cloud.iter().map(|c| {
                let source = CLOUDS[c.provider as usize % 2];
                if c.complete {
                    SourceReport::complete(source)
                } else {
                    SourceReport::incomplete(source, "timed out")
                }
            }))
            .collect(),
            metadata: a
                .cloud
                .iter()
                .map(|c| MetadataFacts {
                    source: CLOUDS[c.provider as usize % 2].to_owned(),
                    addresses: c.ips.iter().take(4).map(Ip::addr).collect(),
                    dns_names: c.names.iter().take(3).map(Name::text).collect(),
                })
                .collect(),
            proof_port: None,
        })
        .collect();
    let set: AttestationSet = attestations.iter().cloned().collect();
    let node_records: Option<Vec<NodeRecord>> = input.nodes.as_ref().map(|ns| {
        ns.iter()
            .take(6)
            .map(|n| NodeRecord {
                name: NODES[n.node as usize % 3].to_owned(),
                addresses: n
                    .ips
                    .iter()
                    .take(4)
                    .map(|ip| NodeAddress {
                        kind: "InternalIP".to_owned(),
                        address: ip.addr().to_string(),
                    })
                    .chain(n.names.iter().take(2).map(|name| NodeAddress {
                        kind: "Hostname".to_owned(),
                        address: name.text(),
                    }))
                    .collect(),
                machine_id: n.machine.map(|m| format!("m{}", m % 3)),
                boot_id: n.boot.map(|b| format!("b{}", b % 3)),
            })
            .collect()
    });
    let nodes: Option<NodeSet> = node_records.clone().map(|ns| ns.into_iter().collect());
    let services: Option<ServiceSet> = input.services.as_ref().map(|s| {
        let records = s.services.iter().take(6).enumerate().map(|(i, addrs)| {
            ServiceRecord::new(
                "default",
                format!("svc-{i}"),
                addrs.iter().take(4).map(|a| ServiceAddress {
                    ip: a.ip.addr(),
                    field: match a.field % 3 {
                        0 => ServiceField::ClusterIp,
                        1 => ServiceField::ExternalIp,
                        _ => ServiceField::LoadBalancerIngress,
                    },
                }),
            )
        });
        let ranges = s
            .range
            .iter()
            .filter_map(|(ip, n)| net(ip, *n))
            .map(|n| ServiceRange::new("kubernetes", [n]));
        let mut set = ServiceSet::listed(records, ranges);
        if s.services_waiting {
            set.set_services_listing(Listing::Waiting);
        }
        set.set_ranges_listing(match s.ranges_listing % 4 {
            0 => Listing::Listed,
            1 => Listing::Waiting,
            2 => Listing::Unserved,
            _ => Listing::NotGiven,
        });
        set
    });
    let policy = if input.ignore_services {
        Policy {
            service_addresses: rubber_stamp_core::ServiceAddressMode::Ignore,
            ..policy
        }
    } else {
        policy
    };
    let observed = Observed {
        attestations: &set,
        nodes: nodes.as_ref().map(|n| n as _),
        services: services.as_ref().map(|s| s as _),
        access_review: None,
        ownership: None,
    };

    let verdict = decide(&csr, observed, &policy, now);
    let parsed = parse_request(&csr.request, &policy);
    let again = decide_parsed(&csr, parsed.as_ref(), observed, &policy, now);
    assert_eq!(verdict, again, "decide and decide_parsed disagree");
    let names_in_order: Vec<CheckName> = verdict.checks().iter().map(|c| c.name()).collect();
    assert_eq!(names_in_order, CheckName::DECIDED);

    // Check 15 with arbitrary probe results and modes: it never denies, never turns a
    // denial or a wait into an approval, and wants probes only for a CSR nothing denies
    // whose IP SANs check 9 accepted.
    {
        let mut owned_policy = policy.clone();
        owned_policy.ownership_proof.default = match input.proof_mode % 3 {
            0 => ProofMode::Required,
            1 => ProofMode::Preferred,
            _ => ProofMode::Off,
        };
        if input.proof_mode & 4 != 0
            && let Ok(net) = "10.0.0.0/24".parse()
        {
            owned_policy.ownership_proof.cidrs.insert(net, ProofMode::Off);
        }
        let owned_set: AttestationSet = attestations
            .iter()
            .cloned()
            .map(|mut a| {
                a.proof_port = input
                    .listener
                    .map(|p| if p % 4 == 0 { 4000 } else { 10273 });
                a
            })
            .collect();
        let lookup = FuzzedProofs(&input.proofs);
        let base = Observed {
            attestations: &owned_set,
            nodes: nodes.as_ref().map(|n| n as _),
            services: services.as_ref().map(|s| s as _),
            access_review: None,
            ownership: None,
        };
        let without = decide(&csr, base, &owned_policy, now);
        let with = decide(
            &csr,
            Observed {
                ownership: Some(Ownership {
                    lookup: &lookup,
                    port: 10273,
                }),
                ..base
            },
            &owned_policy,
            now,
        );
        assert_eq!(
            with.decision() == Decision::Deny,
            without.decision() == Decision::Deny,
            "check 15 changed a denial"
        );
        if with.decision() == Decision::Approve {
            assert_eq!(without.decision(), Decision::Approve, "check 15 approved a wait");
        }
        if !with.probes_wanted().is_empty() {
            assert_ne!(without.decision(), Decision::Deny);
            let attested = with.check(CheckName::IpSansAttested).map(|c| c.status());
            assert_eq!(attested, Some(rubber_stamp_core::CheckStatus::Passed));
        }
        for ip in with.unproven_allowed() {
            assert_eq!(owned_policy.ownership_proof.mode_for(*ip).0, ProofMode::Preferred);
        }
        if let Some(c) = with.check(CheckName::IpSansOwned) {
            assert_ne!(c.outcome(), Some(rubber_stamp_core::Outcome::Deny));
        }
    }
    let _ = verdict.summary();

    if policy.deny == DenyMode::Never {
        assert_ne!(verdict.decision(), Decision::Deny, "deny: never denied");
    }

    // The latest attestation per node, as the set keeps it.
    let latest = |n: &str| set.iter().find(|a| a.node_name == n).cloned();
    let fresh =
        |a: &Attestation| now.duration_since(a.received_at) <= policy.attestation_max_age.get();

    // A denial for a SAN missing from the facts rests on evidence: fresh facts,
    // received after the CSR (after the approver's own sighting, else a second
    // plus the skew bound after its creation), not from the future, complete by
    // the agent's account, containing the connection's source address, and with
    // no machine-id or boot-id the Node contradicts.
    for c in verdict.failed() {
        if matches!(
            c.reason(),
            Some(Reason::NameNotAttested | Reason::AddressNotAttested)
        ) && c.outcome() == Some(rubber_stamp_core::Outcome::Deny)
        {
            let named = verdict
                .node()
                .expect("a denial for an unattested SAN names a node");
            let a = latest(named).expect("a denial for an unattested SAN needs facts");
            assert!(fresh(&a) && a.received_at <= now);
            match csr.seen_at {
                Some(seen) => assert!(a.received_at > seen),
                None => {
                    let created = csr.created_at.expect("and a known creation time");
                    assert!(
                        a.received_at.duration_since(created)
                            >= SignedDuration::from_secs(1) + policy.clock_skew.get()
                    );
                }
            }
            assert!(a.sources.iter().any(|s| s.source == INTERFACES_SOURCE));
            assert!(a.sources.iter().all(|s| s.complete), "denied on a cut report");
            let peer = a.peer_address.expect("denied without a source address");
            assert!(
                a.addresses().any(|(_, ip)| ip == peer.to_canonical()),
                "denied on a report without its own source address"
            );
            for n in node_records.iter().flatten().filter(|n| n.name == named) {
                for (ours, theirs) in [(&a.machine_id, &n.machine_id), (&a.boot_id, &n.boot_id)] {
                    if let (Some(o), Some(t)) = (ours, theirs) {
                        assert_eq!(o, t, "denied on facts the Node doubts");
                    }
                }
            }
        }
    }

    if verdict.decision() != Decision::Approve {
        return;
    }
    // The naive oracle: everything an approval claims, checked from scratch.
    let req = parsed.as_ref().expect("an approved request parsed");
    assert!(csr.in_scope());
    assert_eq!(req.node_name(), Some(node));
    assert_eq!(csr.username, format!("system:node:{node}"));
    assert!(input.org_ok && !input.ca && input.groups_ok);
    assert!(csr.usages.iter().all(|u| ["digital signature", "key encipherment", "server auth"].contains(&u.as_str())));
    assert!(csr.usages.iter().any(|u| u == "server auth"));
    let sans = req.sans();
    assert!(sans.total >= 1 && sans.total <= policy.max_sans && sans.problems.is_empty());
    let own = latest(node).expect("approved without an attestation");
    assert!(fresh(&own), "approved on stale facts");
    let counted = |a: &Attestation, ip: IpAddr| {
        a.interfaces.iter().any(|i| {
            !policy.is_excluded_interface(&i.name)
                && i.addresses.iter().any(|n| n.addr().to_canonical() == ip)
        })
    };
    // What the node's metadata states, from sources the policy accepts.
    let stated_ip = |ip: IpAddr| {
        own.metadata.iter().any(|m| {
            policy.metadata_sources.backs_ip_sans(&m.source)
                && m.addresses.iter().any(|a| a.to_canonical() == ip)
        })
    };
    for ip in &sans.ips {
        assert!(names::ip_problem(*ip).is_none());
        assert!(
            counted(&own, *ip) || stated_ip(*ip),
            "{ip} approved but neither attested on a counted interface nor stated by accepted metadata"
        );
        assert!(policy.denied_network_of(*ip).is_none() && policy.is_allowed_address(*ip));
        // Approved only with the Service rule evaluated (or off), and never for a
        // Service's cluster IP or an address in a ServiceCIDR.
        if let Some(s) = services.as_ref().filter(|_| !input.ignore_services) {
            assert_eq!(s.services_listing(), Listing::Listed, "approved while Services wait");
            assert!(matches!(s.ranges_listing(), Listing::Listed | Listing::Unserved | Listing::NotGiven));
            if s.ranges_listing() == Listing::Listed {
                assert!(s.range_containing(*ip).is_none(), "{ip} approved in a ServiceCIDR");
            }
            s.visit_holders(*ip, &mut |svc, field| {
                assert_ne!(field, ServiceField::ClusterIp, "{ip} approved: cluster IP of {}", svc.name);
                std::ops::ControlFlow::Continue(())
            });
        }
        for other in set.iter() {
            // On any interface of the other node, excluded ones included.
            if other.node_name != node && fresh(other) {
                assert!(
                    !other.addresses().any(|(_, a)| a == *ip)
                        && !other.metadata_addresses().any(|(_, a)| a == *ip),
                    "{ip} approved while {} attests it",
                    other.node_name
                );
            }
        }
        for n in node_records.iter().flatten() {
            if n.name != node {
                assert!(
                    !n.addresses.iter().any(|a| a
                        .address
                        .parse::<IpAddr>()
                        .ok()
                        .map(|x| x.to_canonical())
                        == Some(*ip)),
                    "{ip} approved while Node {} lists it",
                    n.name
                );
            }
        }
    }
    for dns in &sans.dns {
        assert!(
            policy.denied_suffix_of(dns).is_none(),
            "{dns} approved in a denied domain"
        );
        assert!(names::reserved_name(dns).is_none(), "{dns} approved, a reserved name");
        assert!(!names::spells_an_ipv4_address(dns), "{dns} approved, an IPv4 spelling");
        // Every reading: the name, and the name without each allowed suffix it ends in.
        let readings: Vec<&str> = std::iter::once(dns.as_str())
            .chain(policy.allowed_dns_suffixes.iter().filter_map(|s| {
                dns.strip_suffix(s.as_str())
                    .filter(|b| !b.is_empty() && !b.ends_with('.'))
            }))
            .collect();
        let hostname_counts = !policy.hostname_must_match_node_name
            || names::hostname_matches_node(
                &own.hostname,
                node,
                policy.allowed_dns_suffixes.iter().map(DnsSuffix::as_str),
            );
        let mine = |n: &str| {
            names::same_name(n, node) || (hostname_counts && names::same_name(n, &own.hostname))
        };
        let stated_name = own.metadata.iter().any(|m| {
            m.dns_names.iter().any(|n| {
                names::same_name(n, dns)
                    && policy.metadata_sources.backs_dns_name(&m.source, dns)
            })
        });
        assert!(
            readings.iter().any(|r| mine(r)) || stated_name,
            "{dns} approved but neither node name nor hostname nor stated by accepted metadata"
        );
        for other in set.iter() {
            if other.node_name != node && fresh(other) {
                for r in &readings {
                    assert!(
                        !names::same_name(r, &other.node_name)
                            && !names::same_name(r, &other.hostname)
                            && !other
                                .metadata
                                .iter()
                                .flat_map(|m| &m.dns_names)
                                .any(|n| names::same_name(r, n)),
                        "{dns} approved although {} is also {}",
                        r,
                        other.node_name
                    );
                }
            }
        }
    }
    if policy.peer_binding {
        let peer = own
            .peer_address
            .expect("peer binding passed without a peer")
            .to_canonical();
        assert!(own.addresses().any(|(_, a)| a == peer));
    }
    if let Some(secs) = csr.expiration_seconds {
        assert!(i64::from(secs) <= i64::from(policy.max_expiration_seconds));
    }
});
