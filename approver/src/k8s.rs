//! Kubernetes objects (`k8s_openapi`) into the core's plain data: a
//! CertificateSigningRequest into a [`CsrInput`], a Node into a [`NodeRecord`], a Service
//! into a [`ServiceRecord`], a ServiceCIDR into a [`ServiceRange`].
//!
//! The controller and `check` share these conversions, so both decide on
//! exactly the same facts.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;

use rubber_stamp_core::{
    CsrInput, NodeAddress, NodeRecord, ServiceAddress, ServiceField, ServiceRange, ServiceRecord,
};

/// The CSR's facts with `spec.request`, for `decide` (offline `check`).
pub fn csr_input(csr: &CertificateSigningRequest) -> CsrInput {
    CsrInput {
        request: csr.spec.request.0.clone(),
        ..csr_facts(csr)
    }
}

/// The CSR's facts without `spec.request` (left empty), for callers that keep the parsed
/// request and call `decide_parsed` (the controller), so no copy of the PEM is made.
pub fn csr_facts(csr: &CertificateSigningRequest) -> CsrInput {
    let spec = &csr.spec;
    CsrInput {
        name: csr.metadata.name.clone().unwrap_or_default(),
        signer_name: spec.signer_name.clone(),
        request: Vec::new(),
        usages: spec.usages.clone().unwrap_or_default(),
        username: spec.username.clone().unwrap_or_default(),
        uid: spec.uid.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
        extra: spec.extra.clone().unwrap_or_default(),
        expiration_seconds: spec.expiration_seconds,
        created_at: csr.metadata.creation_timestamp.as_ref().map(|t| t.0),
        // Only the controller knows when it first saw the CSR; it fills this in.
        seen_at: None,
        conditions: csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| cs.iter().map(|c| c.type_.clone()).collect())
            .unwrap_or_default(),
    }
}

/// A Node's name, addresses and ids.
pub fn node_record(node: &Node) -> NodeRecord {
    let status = node.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
    NodeRecord {
        name: node.metadata.name.clone().unwrap_or_default(),
        addresses: status
            .and_then(|s| s.addresses.as_ref())
            .map(|addrs| {
                addrs
                    .iter()
                    .map(|a| NodeAddress {
                        kind: a.type_.clone(),
                        address: a.address.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        machine_id: info.and_then(|i| non_empty(&i.machine_id)),
        boot_id: info.and_then(|i| non_empty(&i.boot_id)),
    }
}

/// Every IP a Service holds: `spec.clusterIP(s)` (not `None`, the headless marker),
/// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`. The API server validates
/// these fields; an entry that does not parse as an IP (a hand-edited file) is skipped.
pub fn service_record(service: &Service) -> ServiceRecord {
    let spec = service.spec.as_ref();
    let ip = |text: &str| text.trim().parse::<IpAddr>().ok();
    let cluster = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .into_iter()
        .chain(
            spec.and_then(|s| s.cluster_ips.as_deref())
                .into_iter()
                .flatten()
                .map(String::as_str),
        )
        .filter_map(ip)
        .map(|ip| ServiceAddress {
            ip,
            field: ServiceField::ClusterIp,
        });
    let external = spec
        .and_then(|s| s.external_ips.as_deref())
        .into_iter()
        .flatten()
        .filter_map(|t| ip(t))
        .map(|ip| ServiceAddress {
            ip,
            field: ServiceField::ExternalIp,
        });
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(ip))
        .map(|ip| ServiceAddress {
            ip,
            field: ServiceField::LoadBalancerIngress,
        });
    ServiceRecord::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
        cluster.chain(external).chain(ingress),
    )
}

/// A ServiceCIDR's `spec.cidrs` (validated by the API server; an entry that does not
/// parse is skipped).
pub fn service_range(cidr: &ServiceCIDR) -> ServiceRange {
    ServiceRange::new(
        cidr.metadata.name.clone().unwrap_or_default(),
        cidr.spec
            .as_ref()
            .and_then(|s| s.cidrs.as_deref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.trim().parse::<IpNet>().ok()),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use k8s_openapi::api::core::v1::{NodeAddress as K8sNodeAddress, NodeStatus, NodeSystemInfo};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::{ByteString, jiff::Timestamp};

    use super::*;

    #[test]
    fn csr_fields_map_one_to_one() {
        let created = Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let csr = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some("csr-1".into()),
                creation_timestamp: Some(Time(created)),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: "kubernetes.io/kubelet-serving".into(),
                request: ByteString(b"PEM".to_vec()),
                usages: Some(vec!["digital signature".into(), "server auth".into()]),
                username: Some("system:node:w1".into()),
                uid: Some("u-1".into()),
                groups: Some(vec!["system:nodes".into()]),
                extra: Some([("k".to_owned(), vec!["v".to_owned()])].into()),
                expiration_seconds: Some(3600),
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                certificate: None,
            }),
        };
        let input = csr_input(&csr);
        assert_eq!(input.name, "csr-1");
        assert_eq!(input.signer_name, "kubernetes.io/kubelet-serving");
        assert_eq!(input.request, b"PEM");
        assert_eq!(input.usages, ["digital signature", "server auth"]);
        assert_eq!(input.username, "system:node:w1");
        assert_eq!(input.uid, "u-1");
        assert_eq!(input.groups, ["system:nodes"]);
        assert_eq!(input.extra.get("k").map(Vec::len), Some(1));
        assert_eq!(input.expiration_seconds, Some(3600));
        assert_eq!(input.created_at, Some(created));
        assert_eq!(input.conditions, ["Approved"]);
        assert_eq!(input.final_condition(), Some("Approved"));
        assert!(!input.in_scope());
        let facts = csr_facts(&csr);
        assert!(facts.request.is_empty(), "no copy of the request");
        assert_eq!(
            CsrInput {
                request: b"PEM".to_vec(),
                ..facts
            },
            input
        );
    }

    #[test]
    fn service_addresses_come_from_the_three_fields() {
        use k8s_openapi::api::core::v1::{
            LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
        };
        let service = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.20".into()),
                cluster_ips: Some(vec!["10.96.0.20".into(), "fd00:96::20".into()]),
                external_ips: Some(vec!["192.0.2.7".into(), "not an ip".into()]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![
                        LoadBalancerIngress {
                            ip: Some("198.51.100.9".into()),
                            ..Default::default()
                        },
                        LoadBalancerIngress {
                            hostname: Some("lb.example.com".into()),
                            ..Default::default()
                        },
                    ]),
                }),
                ..Default::default()
            }),
        };
        let record = service_record(&service);
        assert_eq!(
            (record.namespace.as_str(), record.name.as_str()),
            ("shop", "web")
        );
        let got: Vec<(String, ServiceField)> = record
            .addresses
            .iter()
            .map(|a| (a.ip.to_string(), a.field))
            .collect();
        assert_eq!(
            got,
            [
                ("10.96.0.20".to_owned(), ServiceField::ClusterIp),
                ("192.0.2.7".to_owned(), ServiceField::ExternalIp),
                ("198.51.100.9".to_owned(), ServiceField::LoadBalancerIngress),
                ("fd00:96::20".to_owned(), ServiceField::ClusterIp),
            ]
        );
        let headless = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                cluster_ips: Some(vec!["None".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(service_record(&headless).addresses.is_empty());
        let cidr: ServiceCIDR = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["10.96.0.1/12", "fd00:96::/108"]}
        }))
        .expect("ServiceCIDR");
        let range = service_range(&cidr);
        assert_eq!(range.name, "kubernetes");
        assert_eq!(
            range
                .cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.96.0.0/12", "fd00:96::/108"]
        );
    }

    #[test]
    fn node_fields_map_one_to_one() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("w1".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![K8sNodeAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.0.11".into(),
                }]),
                node_info: Some(NodeSystemInfo {
                    machine_id: "abc".into(),
                    boot_id: " ".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let record = node_record(&node);
        assert_eq!(record.name, "w1");
        assert_eq!(record.addresses[0].kind, "InternalIP");
        assert_eq!(record.addresses[0].address, "10.0.0.11");
        assert_eq!(record.machine_id.as_deref(), Some("abc"));
        assert_eq!(record.boot_id, None);
    }
}
