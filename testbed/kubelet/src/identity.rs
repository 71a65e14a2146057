//! Who the simulated kubelet is: its node name, hostname and addresses, which
//! become the subject and SANs of its serving CSR.

use std::net::IpAddr;

use super::error::KubeletError;

/// The longest DNS-1123 subdomain.
const MAX_SUBDOMAIN: usize = 253;

/// A node's identity as its kubelet puts it in a serving CSR: subject
/// `O=system:nodes, CN=system:node:<node_name>`, DNS SANs = the hostname (and
/// the node name when it differs), IP SANs = the node's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    node_name: String,
    hostname: String,
    ips: Vec<IpAddr>,
    extra_names: Vec<String>,
}

impl NodeIdentity {
    /// Checks the names are DNS-1123 subdomains (lower case, as the kubelet
    /// lowercases its hostname) and drops repeated addresses, keeping order.
    /// Loopback addresses are accepted (the sandbox's loopback mode uses
    /// them); unspecified and multicast ones are not.
    pub fn new(node_name: &str, hostname: &str, ips: &[IpAddr]) -> Result<Self, KubeletError> {
        check_subdomain("node name", node_name)?;
        check_subdomain("hostname", hostname)?;
        let mut unique: Vec<IpAddr> = Vec::with_capacity(ips.len());
        for ip in ips.iter().map(|ip| ip.to_canonical()) {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(KubeletError::Identity {
                    what: "node IP",
                    value: ip.to_string(),
                    reason: "unspecified and multicast addresses cannot be node addresses",
                });
            }
            if !unique.contains(&ip) {
                unique.push(ip);
            }
        }
        Ok(Self {
            node_name: node_name.to_owned(),
            hostname: hostname.to_owned(),
            ips: unique,
            extra_names: Vec::new(),
        })
    }

    /// Adds DNS SANs beyond the hostname and node name: the DNS names a cloud's Node
    /// lists (`ExternalDNS`, `InternalDNS`), which a kubelet puts in its CSR. Each must be
    /// a DNS-1123 subdomain; repeats are dropped.
    pub fn with_dns_names(mut self, names: &[String]) -> Result<Self, KubeletError> {
        for name in names {
            check_subdomain("DNS name", name)?;
            if !self.dns_names().contains(name) {
                self.extra_names.push(name.clone());
            }
        }
        Ok(self)
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The hostname.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The addresses, in the order given.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// `system:node:<node name>`.
    pub fn common_name(&self) -> String {
        format!("system:node:{}", self.node_name)
    }

    /// The DNS SANs: the hostname, then the node name if it differs, then any names
    /// added with [`with_dns_names`](Self::with_dns_names).
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = vec![self.hostname.clone()];
        if self.node_name != self.hostname {
            names.push(self.node_name.clone());
        }
        names.extend(self.extra_names.iter().cloned());
        names
    }
}

fn check_subdomain(what: &'static str, value: &str) -> Result<(), KubeletError> {
    let bad = |reason| {
        Err(KubeletError::Identity {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() || value.len() > MAX_SUBDOMAIN {
        return bad("must be 1 to 253 characters");
    }
    for label in value.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("only lower-case a-z, 0-9, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("labels must not start or end with '-'");
        }
    }
    Ok(())
}

/// The machine's hostname as the kubelet uses it (lower case), read with
/// sysinfo like the agent does.
pub fn system_hostname() -> Option<String> {
    sysinfo::System::host_name()
        .ok()
        .map(|h| h.to_ascii_lowercase())
}

/// The addresses a simulated node has when none are given: every address on
/// every interface (read with sysinfo) except loopback, link-local,
/// unspecified and multicast ones; IPv4 first, then IPv6, each sorted.
pub fn discover_ips() -> Vec<IpAddr> {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = networks
        .values()
        .flat_map(|data| data.ip_networks().iter().map(|n| n.addr.to_canonical()))
        .filter(|ip| usable(*ip))
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

fn usable(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn dns_names_are_the_hostname_then_a_different_node_name() {
        let same = NodeIdentity::new("worker-1", "worker-1", &[]).expect("id");
        assert_eq!(same.dns_names(), ["worker-1"]);
        assert_eq!(same.common_name(), "system:node:worker-1");
        let differs = NodeIdentity::new("worker-1.example", "worker-1", &[]).expect("id");
        assert_eq!(differs.dns_names(), ["worker-1", "worker-1.example"]);
    }

    #[test]
    fn addresses_are_canonical_and_unique_in_order() {
        let id = NodeIdentity::new(
            "n",
            "n",
            &[
                ip("10.0.0.2"),
                ip("::ffff:10.0.0.2"),
                ip("fd00::2"),
                ip("127.0.0.2"),
            ],
        )
        .expect("id");
        assert_eq!(id.ips(), [ip("10.0.0.2"), ip("fd00::2"), ip("127.0.0.2")]);
        assert!(NodeIdentity::new("n", "n", &[ip("0.0.0.0")]).is_err());
        assert!(NodeIdentity::new("n", "n", &[ip("ff02::1")]).is_err());
    }

    #[test]
    fn names_must_be_lower_case_subdomains() {
        for bad in [
            "",
            "Worker",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(NodeIdentity::new(bad, "ok", &[]).is_err(), "{bad:?}");
            assert!(NodeIdentity::new("ok", bad, &[]).is_err(), "{bad:?}");
        }
        assert!(NodeIdentity::new("a.b-c.d1", "x", &[]).is_ok());
    }

    #[test]
    fn discovery_skips_loopback_and_link_local() {
        assert!(!usable(ip("127.0.0.1")));
        assert!(!usable(ip("::1")));
        assert!(!usable(ip("fe80::1")));
        assert!(!usable(ip("169.254.1.1")));
        assert!(usable(ip("198.18.0.2")));
        assert!(usable(ip("fd00::2")));
    }
}
