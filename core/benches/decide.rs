//! Criterion bench: the cost of `decide` beside the cost of parsing and
//! verifying the request alone, for a typical kubelet CSR (ECDSA P-256,
//! 3 SANs) and a 64-SAN one, against 10,000 attested nodes and Node objects and
//! 10,000 Services (each with a cluster IP, every tenth with an external IP) in the
//! default ServiceCIDR.
//!
//! `cargo bench -p rubber-stamp-approver --bench decide`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rubber_stamp_core::policy::DnsSuffix;
use rubber_stamp_core::{
    Attestation, AttestationSet, CsrInput, Decision, INTERFACES_SOURCE, InterfaceFacts,
    KUBELET_SERVING_SIGNER, NodeAddress, NodeRecord, NodeSet, Observed, Policy, ServiceAddress,
    ServiceField, ServiceRange, ServiceRecord, ServiceSet, SourceReport, decide, decide_parsed,
    parse_request,
};

const NODES: u32 = 10_000;

fn node_name(i: u32) -> String {
    format!("worker-{i}")
}

/// Node i's primary IPv4 address: 10.x.y.z, distinct per node.
fn node_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 0x100 + i))
}

fn t0() -> Timestamp {
    Timestamp::UNIX_EPOCH
        .checked_add(SignedDuration::from_secs(1_800_000_000))
        .expect("in range")
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs))
        .expect("in range")
}

/// 10,000 attested nodes with an IPv4 and IPv6 address on eth0 and the usual
/// excluded interfaces; node 0 also has `extra` addresses on eth0.
fn attestations(extra: &[IpAddr]) -> AttestationSet {
    (0..NODES)
        .map(|i| {
            let mut eth0: Vec<ipnet::IpNet> = vec![
                ipnet::IpNet::new(node_ip(i), 8).expect("net"),
                format!("fd00::{i:x}/64").parse().expect("net"),
            ];
            if i == 0 {
                eth0.extend(
                    extra
                        .iter()
                        .map(|ip| ipnet::IpNet::new(*ip, 32).expect("net")),
                );
            }
            Attestation {
                node_name: node_name(i),
                hostname: node_name(i),
                interfaces: vec![
                    InterfaceFacts {
                        name: "lo".to_owned(),
                        addresses: vec!["127.0.0.1/8".parse().expect("net")],
                    },
                    InterfaceFacts {
                        name: "eth0".to_owned(),
                        addresses: eth0,
                    },
                    InterfaceFacts {
                        name: "kube-ipvs0".to_owned(),
                        addresses: vec!["10.96.0.1/32".parse().expect("net")],
                    },
                ],
                peer_address: Some(node_ip(i)),
                received_at: at(30),
                machine_id: Some(format!("machine-{i}")),
                boot_id: Some(format!("boot-{i}")),
                agent_version: None,
                sources: vec![SourceReport::complete(INTERFACES_SOURCE)],
                metadata: Vec::new(),
                proof_port: None,
            }
        })
        .collect()
}

fn nodes() -> NodeSet {
    (0..NODES)
        .map(|i| NodeRecord {
            name: node_name(i),
            addresses: vec![
                NodeAddress {
                    kind: "InternalIP".to_owned(),
                    address: node_ip(i).to_string(),
                },
                NodeAddress {
                    kind: "Hostname".to_owned(),
                    address: node_name(i),
                },
            ],
            machine_id: Some(format!("machine-{i}")),
            boot_id: Some(format!("boot-{i}")),
        })
        .collect()
}

fn request(dns: &[String], ips: &[IpAddr]) -> String {
    let key = KeyPair::generate().expect("ECDSA P-256");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{}", node_name(0)));
    params.distinguished_name = dn;
    params.subject_alt_names = dns
        .iter()
        .map(|d| SanType::DnsName(d.as_str().try_into().expect("ascii")))
        .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
        .collect();
    params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM")
}

fn csr(pem_text: String) -> CsrInput {
    CsrInput {
        name: "csr-bench".to_owned(),
        signer_name: KUBELET_SERVING_SIGNER.to_owned(),
        request: pem_text.into_bytes(),
        usages: vec!["digital signature".to_owned(), "server auth".to_owned()],
        username: format!("system:node:{}", node_name(0)),
        groups: vec!["system:nodes".to_owned()],
        created_at: Some(t0()),
        ..CsrInput::default()
    }
}

/// 10,000 Services with cluster IPs in 10.96.0.0/12 (every tenth also with an external
/// IP in 192.0.2.0/24 or 198.51.100.0/24) and the `kubernetes` ServiceCIDR.
fn services() -> ServiceSet {
    let records = (0..NODES).map(|i| {
        let mut addresses = vec![ServiceAddress {
            ip: IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + 1 + i)),
            field: ServiceField::ClusterIp,
        }];
        if i % 10 == 0 {
            addresses.push(ServiceAddress {
                ip: IpAddr::V4(Ipv4Addr::from(0xc000_0200 + (i / 10))),
                field: ServiceField::ExternalIp,
            });
        }
        ServiceRecord::new("default", format!("svc-{i}"), addresses)
    });
    let range = ServiceRange::new("kubernetes", ["10.96.0.0/12".parse().expect("net")]);
    ServiceSet::listed(records, [range])
}

fn bench(c: &mut Criterion) {
    let policy = Policy {
        allowed_dns_suffixes: vec![DnsSuffix::new("nodes.example.com").expect("suffix")],
        ..Policy::default()
    };
    let now = at(60);
    let nodes = nodes();
    let services = services();

    // Typical: node name, IPv4, IPv6.
    let typical = csr(request(
        &[node_name(0)],
        &[node_ip(0), "fd00::0".parse().expect("ip")],
    ));
    // 64 SANs: name, FQDN and 62 IPv4 addresses all on eth0.
    let extra: Vec<IpAddr> = (0..61u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + i)))
        .collect();
    let mut ips = vec![node_ip(0)];
    ips.extend(&extra);
    let wide = csr(request(
        &[node_name(0), format!("{}.nodes.example.com", node_name(0))],
        &ips,
    ));
    let set = attestations(&extra);

    for (label, input, sans) in [("kubelet_3_sans", &typical, 3), ("wide_64_sans", &wide, 64)] {
        let parsed = parse_request(&input.request, &policy);
        let p = parsed.as_ref().expect("parses");
        assert_eq!(p.sans().total, sans);
        let observed = Observed {
            attestations: &set,
            nodes: Some(&nodes),
            services: Some(&services),
            access_review: None,
            ownership: None,
        };
        let verdict = decide(input, observed, &policy, now);
        assert_eq!(
            verdict.decision(),
            Decision::Approve,
            "{}",
            verdict.summary()
        );

        let mut group = c.benchmark_group(label);
        group.bench_function("parse_and_verify", |b| {
            b.iter(|| parse_request(black_box(&input.request), &policy))
        });
        group.bench_function("decide_full", |b| {
            b.iter(|| decide(black_box(input), observed, &policy, now))
        });
        group.bench_function("decide_parsed", |b| {
            b.iter(|| decide_parsed(black_box(input), parsed.as_ref(), observed, &policy, now))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
