//! Service and ServiceCIDR rules of kube-apiserver: defaulting and validation of a Service's
//! IP fields, ClusterIP allocation from the service range (atomic with the write, as the
//! allocators' transactions make it), the immutable ClusterIP on update, and the two
//! objects kube-apiserver creates at start: the `kubernetes` ServiceCIDR holding the
//! configured ranges and the `default/kubernetes` Service on the range's first address.
//!
//! Each function names the kube-apiserver code it mirrors. Not modelled: NodePort
//! allocation, IPAddress objects, and ServiceCIDRs other than the default one taking part in
//! allocation (they are stored and served, as any object).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::status::Cause;
use super::store::StoredObject;

/// The name of the default ServiceCIDR and of the apiserver's Service
/// (`defaultservicecidr.DefaultServiceCIDRName`, `kubernetesservice.KubernetesServiceName`).
pub const KUBERNETES: &str = "kubernetes";

/// The cluster's Service ranges: `--service-cluster-ip-range`, one or two (one per family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// The ranges, primary first.
    pub ranges: Vec<IpNet>,
}

impl Default for ServiceNetwork {
    /// kubeadm's default `serviceSubnet`, 10.96.0.0/12.
    fn default() -> Self {
        Self {
            ranges: vec![IpNet::from(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 96, 0, 0),
                12,
            ))],
        }
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn net_family(net: &IpNet) -> &'static str {
    family(net.addr())
}

/// The `i`th address of `net` (`utilnet.GetIndexedIP`), if inside it.
fn indexed_ip(net: &IpNet, i: u128) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            let ip = IpAddr::from(std::net::Ipv4Addr::from(
                base.checked_add(u32::try_from(i).ok()?)?,
            ));
            net.contains(&ip).then_some(ip)
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            let ip = IpAddr::from(std::net::Ipv6Addr::from(base.checked_add(i)?));
            net.contains(&ip).then_some(ip)
        }
    }
}

// === impl ServiceNetwork ===

impl ServiceNetwork {
    /// The range of `family`.
    fn range_of(&self, family: &str) -> Option<&IpNet> {
        self.ranges.iter().find(|n| net_family(n) == family)
    }

    /// The address of the `kubernetes` Service: the first of the primary range
    /// (`ServiceIPRange`: `GetIndexedIP(&serviceClusterIPRange, 1)`).
    pub fn apiserver_service_ip(&self) -> Option<IpAddr> {
        self.ranges.first().and_then(|n| indexed_ip(n, 1))
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn go_strings(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Defaults and validates a new Service's type, IP fields and ports (`defaults.go`
/// `SetDefaults_Service`, `Allocators.initIPFamilyFields` and
/// `validation.ValidateServiceClusterIPsRelatedFields`); ClusterIPs are allocated later,
/// under the store's lock ([`allocate`]).
pub fn prepare_create(obj: &mut Value, network: &ServiceNetwork) -> Vec<Cause> {
    let mut causes = Vec::new();
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    // The strategy's PrepareForCreate: a new Service has an empty status.
    obj["status"] = json!({"loadBalancer": {}});
    let spec = &mut obj["spec"];
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !TYPES.contains(&ty.as_str()) {
        causes.push(Cause::unsupported("spec.type", &format!("{ty:?}"), &TYPES));
        return causes;
    }
    spec["type"] = json!(ty);
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    if ty == "ExternalName" {
        for f in ["clusterIP", "clusterIPs"] {
            if !strings(spec.get(f)).is_empty() || spec.get(f).and_then(Value::as_str).is_some() {
                causes.push(Cause::forbidden(
                    format!("spec.{f}"),
                    "may not be set for ExternalName services",
                ));
            }
        }
        return causes;
    }
    if spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if ty != "ClusterIP" && spec.get("externalTrafficPolicy").is_none() {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    // clusterIP and clusterIPs[0] name the same address (the conversion keeps them so).
    let single = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut ips = strings(spec.get("clusterIPs"));
    match (single.is_empty(), ips.is_empty()) {
        (false, true) => ips = vec![single.clone()],
        (false, false) if ips[0] != single => causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &format!("{:?}", ips[0]),
            "must match `clusterIP` when both are specified",
        )),
        _ => {}
    }
    let headless = ips.first().is_some_and(|ip| ip == "None");
    if headless && ips.len() > 1 {
        causes.push(Cause::invalid(
            "spec.clusterIPs[1]",
            &format!("{:?}", ips[1]),
            "must be empty when the first element is 'None'",
        ));
    }
    let mut families: Vec<String> = strings(spec.get("ipFamilies"));
    if !headless {
        for (i, text) in ips.iter().enumerate() {
            match text.parse::<IpAddr>() {
                Err(_) => causes.push(Cause::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    &format!("{text:?}"),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )),
                Ok(ip) => {
                    let fam = family(ip);
                    match network.range_of(fam) {
                        None => causes.push(Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            &go_strings(&ips),
                            &format!("{fam} is not configured on this cluster"),
                        )),
                        Some(range) if !range.contains(&ip) => causes.push(Cause::invalid(
                            "spec.clusterIPs",
                            &go_strings(&ips),
                            &format!(
                                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                            ),
                        )),
                        Some(_) => {}
                    }
                    if i >= families.len() {
                        families.push(fam.to_owned());
                    }
                }
            }
        }
    }
    for (i, ip) in strings(spec.get("externalIPs")).iter().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            causes.push(Cause::invalid(
                format!("spec.externalIPs[{i}]"),
                &format!("{ip:?}"),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if ports == 0 && !headless {
        causes.push(Cause::required("spec.ports", ""));
    }
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("SingleStack")
        .to_owned();
    if families.is_empty()
        && let Some(primary) = network.ranges.first()
    {
        families.push(net_family(primary).to_owned());
    }
    if policy != "SingleStack" && families.len() == 1 && network.ranges.len() == 2 {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.to_owned());
    }
    if policy == "RequireDualStack" && network.ranges.len() < 2 {
        causes.push(Cause::invalid(
            "spec.ipFamilyPolicy",
            "\"RequireDualStack\"",
            "this cluster is not configured for dual-stack services",
        ));
    }
    if !causes.is_empty() {
        return causes;
    }
    spec["ipFamilyPolicy"] = json!(policy);
    spec["ipFamilies"] = json!(families);
    if headless {
        spec["clusterIP"] = json!("None");
        spec["clusterIPs"] = json!(["None"]);
    } else if ips.is_empty() {
        if let Some(m) = spec.as_object_mut() {
            m.remove("clusterIP");
            m.remove("clusterIPs");
        }
    } else {
        spec["clusterIPs"] = json!(ips);
    }
    causes
}

/// Every ClusterIP the stored Services hold.
fn allocated(existing: &mut dyn Iterator<Item = &StoredObject>) -> HashSet<IpAddr> {
    existing
        .filter_map(|o| serde_json::from_slice::<Value>(&o.json).ok())
        .flat_map(|v| strings(v.pointer("/spec/clusterIPs")))
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Allocates the missing ClusterIPs of a new Service (one per entry of `ipFamilies`) and
/// reserves the requested ones, against `existing` Services (`Allocators.allocClusterIPs`:
/// `AllocateNext` for an empty entry, `Allocate` for a given one). The real allocator picks
/// at random from the upper part of the range; this takes the lowest free address, which
/// keeps tests deterministic.
pub fn allocate(
    obj: &mut Value,
    existing: &mut dyn Iterator<Item = &StoredObject>,
    network: &ServiceNetwork,
) -> Result<(), Cause> {
    let spec = &obj["spec"];
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return Ok(());
    }
    let mut ips = strings(spec.get("clusterIPs"));
    if ips.first().is_some_and(|ip| ip == "None") {
        return Ok(());
    }
    let families = strings(spec.get("ipFamilies"));
    let used = allocated(existing);
    for (i, fam) in families.iter().enumerate() {
        if let Some(given) = ips.get(i) {
            if given.parse::<IpAddr>().is_ok_and(|ip| used.contains(&ip)) {
                return Err(Cause::invalid(
                    "spec.clusterIPs",
                    &go_strings(&ips),
                    &format!("failed to allocate IP {given}: provided IP is already allocated"),
                ));
            }
            continue;
        }
        let Some(range) = network.range_of(fam) else {
            continue;
        };
        // Index 0 is the network address; IPv4's last address is its broadcast.
        let size: u128 = match range {
            IpNet::V4(n) => 1u128 << (32 - n.prefix_len()),
            IpNet::V6(n) => 1u128
                .checked_shl(u32::from(128 - n.prefix_len()))
                .unwrap_or(u128::MAX),
        };
        let last = if range.addr().is_ipv4() {
            size.saturating_sub(1)
        } else {
            size
        };
        let free = (1..last.min(1 << 20))
            .filter_map(|k| indexed_ip(range, k))
            .find(|ip| !used.contains(ip));
        match free {
            Some(ip) => ips.push(ip.to_string()),
            None => {
                return Err(Cause::invalid(
                    "spec.clusterIPs",
                    &go_strings(&ips),
                    "failed to allocate a serviceIP: range is full",
                ));
            }
        }
    }
    if let Some(first) = ips.first() {
        obj["spec"]["clusterIP"] = json!(first);
        obj["spec"]["clusterIPs"] = json!(ips);
    }
    Ok(())
}

/// An update keeps the allocated ClusterIPs: left out, they are carried over (the REST
/// layer's `patchAllocatedValues`); changed, the update is refused
/// (`ValidateServiceUpdate`: "may not change once set").
pub fn prepare_update(new: &mut Value, old: &Value) -> Vec<Cause> {
    let old_ips = strings(old.pointer("/spec/clusterIPs"));
    if old_ips.is_empty() {
        return Vec::new();
    }
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    let spec = &mut new["spec"];
    let single = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
    let ips = strings(spec.get("clusterIPs"));
    if single.is_empty() && ips.is_empty() {
        spec["clusterIP"] = json!(old_ips[0]);
        spec["clusterIPs"] = json!(old_ips);
        for f in ["ipFamilies", "ipFamilyPolicy"] {
            if spec.get(f).is_none()
                && let Some(v) = old.pointer(&format!("/spec/{f}"))
            {
                spec[f] = v.clone();
            }
        }
        return Vec::new();
    }
    let first = if ips.is_empty() {
        single.to_owned()
    } else {
        ips[0].clone()
    };
    if first != old_ips[0] {
        return vec![Cause::invalid(
            "spec.clusterIPs[0]",
            &format!("{first:?}"),
            "may not change once set",
        )];
    }
    if ips.is_empty() {
        spec["clusterIPs"] = json!(old_ips);
    }
    Vec::new()
}

/// Validates a ServiceCIDR (`ValidateServiceCIDR`): one or two CIDRs, at most one per
/// family, in canonical form.
pub fn validate_service_cidr(obj: &Value) -> Vec<Cause> {
    let cidrs = strings(obj.pointer("/spec/cidrs"));
    if cidrs.is_empty() {
        return vec![Cause::required("spec.cidrs", "at least one CIDR required")];
    }
    let mut causes = Vec::new();
    if cidrs.len() > 2 {
        causes.push(Cause::invalid(
            "spec.cidrs",
            &go_strings(&cidrs),
            "may only hold up to 2 values",
        ));
    }
    let mut seen = Vec::new();
    for (i, text) in cidrs.iter().enumerate() {
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => {
                let fam = net_family(&net);
                if seen.contains(&fam) {
                    causes.push(Cause::invalid(
                        "spec.cidrs",
                        &go_strings(&cidrs),
                        "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
                    ));
                }
                seen.push(fam);
            }
            Ok(net) => causes.push(Cause::invalid(
                format!("spec.cidrs[{i}]"),
                &format!("{text:?}"),
                &format!("must be in canonical form (\"{}\")", net.trunc()),
            )),
            Err(_) => causes.push(Cause::invalid(
                format!("spec.cidrs[{i}]"),
                &format!("{text:?}"),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    causes
}

/// The default ServiceCIDR, as kube-apiserver's default ServiceCIDR controller creates it
/// (`defaultservicecidr.Controller.sync`, then `syncStatus` sets Ready).
pub fn default_service_cidr(network: &ServiceNetwork, now: &str) -> Value {
    let cidrs: Vec<String> = network.ranges.iter().map(ToString::to_string).collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": KUBERNETES},
        "spec": {"cidrs": cidrs},
        "status": {"conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "",
            "message": "Kubernetes default Service CIDR is ready",
            "lastTransitionTime": now,
        }]},
    })
}

/// The `default/kubernetes` Service, as kube-apiserver's kubernetesservice controller
/// creates it (`Controller.CreateOrUpdateMasterServiceIfNeeded`): ClusterIP, single
/// stack, the range's first address, port 443 to the serving port.
pub fn kubernetes_service(network: &ServiceNetwork, port: u16) -> Option<Value> {
    let ip = network.apiserver_service_ip()?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": KUBERNETES,
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(),
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn service_ip_range_puts_the_apiserver_on_the_first_address() {
        let v4 = ServiceNetwork::default();
        assert_eq!(
            v4.apiserver_service_ip(),
            Some("10.96.0.1".parse().expect("ip"))
        );
        let v6 = ServiceNetwork {
            ranges: vec![net("fd00:10:96::/112"), net("10.96.0.0/16")],
        };
        assert_eq!(
            v6.apiserver_service_ip(),
            Some("fd00:10:96::1".parse().expect("ip"))
        );
    }

    #[test]
    fn alloc_cluster_ips_takes_the_lowest_free_and_refuses_a_taken_or_foreign_one() {
        let network = ServiceNetwork::default();
        let mut kubernetes = kubernetes_service(&network, 6443).expect("service");
        assert!(prepare_create(&mut kubernetes, &network).is_empty());
        allocate(&mut kubernetes, &mut std::iter::empty(), &network).expect("allocated");
        assert_eq!(kubernetes["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(kubernetes["spec"]["ipFamilies"], json!(["IPv4"]));
        let stored = StoredObject::seal(0, kubernetes, 2);
        let mut web = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        assert!(prepare_create(&mut web, &network).is_empty());
        allocate(&mut web, &mut std::iter::once(&stored), &network).expect("allocated");
        assert_eq!(web["spec"]["clusterIP"], "10.96.0.2");
        let mut taken = json!({"spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}});
        assert!(prepare_create(&mut taken, &network).is_empty());
        let e = allocate(&mut taken, &mut std::iter::once(&stored), &network);
        assert!(e.is_err_and(|c| c.message.ends_with("provided IP is already allocated")),);
        let mut foreign = json!({"spec": {"clusterIP": "192.0.2.1", "ports": [{"port": 80}]}});
        let causes = prepare_create(&mut foreign, &network);
        assert!(
            causes[0].message.contains("is not in the valid range"),
            "{causes:?}"
        );
        let mut no_ports = json!({"spec": {}});
        assert_eq!(
            prepare_create(&mut no_ports, &network)[0].field,
            "spec.ports"
        );
    }

    #[test]
    fn an_update_keeps_the_cluster_ip() {
        let old = json!({"spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}});
        let mut new = json!({"spec": {"externalIPs": ["192.0.2.7"]}});
        assert!(prepare_update(&mut new, &old).is_empty());
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.7"]));
        let mut moved = json!({"spec": {"clusterIP": "10.96.0.8"}});
        assert_eq!(
            prepare_update(&mut moved, &old)[0].message,
            "Invalid value: \"10.96.0.8\": may not change once set"
        );
    }

    #[test]
    fn service_cidrs_are_validated() {
        let ok = default_service_cidr(&ServiceNetwork::default(), "2026-01-01T00:00:00Z");
        assert!(validate_service_cidr(&ok).is_empty());
        for (cidrs, needle) in [
            (json!([]), "Required"),
            (json!(["10.96.0.1/12"]), "canonical form"),
            (
                json!(["10.96.0.0/12", "10.0.0.0/8"]),
                "one IP for each IP family",
            ),
            (json!(["nope"]), "valid CIDR"),
        ] {
            let causes = validate_service_cidr(&json!({"spec": {"cidrs": cidrs}}));
            assert!(
                causes.iter().any(|c| c.message.contains(needle)),
                "{causes:?}"
            );
        }
    }
}
