//! The approval policy: every tunable of the decision, with safe defaults, loadable from YAML.
//!
//! The same YAML file is read by `rubber-stamp-approver check --policy` and by
//! `rubber-stamp-approver run`. Every field is optional; unknown fields are an
//! error, so a typo cannot silently fall back to a default. `docs/policy.md`
//! documents each field.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::SignedDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names;

/// Default largest `spec.request` accepted, in bytes (PEM text).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default most subject alternative names in one request.
pub const DEFAULT_MAX_SANS: usize = 100;
/// Default age after which an attestation no longer counts.
pub const DEFAULT_ATTESTATION_MAX_AGE: SignedDuration = SignedDuration::from_secs(5 * 60);

/// Smallest `maxRequestBytes` a policy may set.
pub const MIN_REQUEST_BYTES: usize = 256;
/// Largest `maxRequestBytes` a policy may set (1 MiB; the API server stores
/// objects up to about 1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest `maxSans` a policy may set.
pub const MAX_SANS: usize = 10_000;
/// Largest `attestationMaxAge` a policy may set.
pub const MAX_ATTESTATION_AGE: SignedDuration = SignedDuration::from_secs(24 * 60 * 60);
/// Smallest `maxExpirationSeconds` (the API server refuses shorter requests).
pub const MIN_EXPIRATION_SECONDS: u32 = 600;
/// Default largest `expirationSeconds`: one year, kube-controller-manager's default
/// `--cluster-signing-duration` (8760h). The signer caps durations too, but the
/// approver does not rely on a setting it cannot see.
pub const DEFAULT_MAX_EXPIRATION_SECONDS: u32 = 365 * 24 * 60 * 60;
/// Default bound on how far the API server's clock and the approver's may differ,
/// where the decision must compare a CSR's `creationTimestamp` with an attestation's
/// `receivedAt` (offline `check`; the controller compares on its own clock).
pub const DEFAULT_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);
/// Largest `clockSkew` a policy may set.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(10 * 60);
/// Most entries in any one list of the policy.
pub const MAX_LIST_ENTRIES: usize = 1024;
/// Longest interface pattern (Linux interface names have at most 15 bytes).
pub const MAX_INTERFACE_PATTERN_BYTES: usize = 64;

/// DNS suffixes no kubelet serving certificate may name, by default: the
/// cluster's Service and Pod names (`<svc>.<ns>.svc`, `….svc.cluster.local`,
/// `….pod.cluster.local`). A node's hostname is whatever root on it sets, so
/// without this a node could attest `kubernetes.default.svc` and be approved.
pub const DEFAULT_DENIED_DNS_SUFFIXES: &[&str] = &["svc", "cluster.local"];

/// Interfaces whose addresses never count as a node's own, by default.
///
/// Service IPs (kube-proxy IPVS, node-local DNS), container bridges and the
/// devices of common CNI plugins carry addresses that belong to pods or
/// services, or that every node has.
pub const DEFAULT_EXCLUDED_INTERFACES: &[&str] = &[
    // Loopback and kube-proxy / kube-router / node-local-dns dummy devices.
    "lo",
    "kube-ipvs0",
    "kube-bridge",
    "kube-dummy-if",
    "nodelocaldns",
    // Container engines.
    "docker0",
    "docker_gwbridge",
    "podman*",
    "cni*",
    "veth*",
    // Calico.
    "cali*",
    "tunl*",
    "vxlan*",
    "wireguard.cali",
    "egress.calico",
    // Flannel.
    "flannel*",
    // Cilium (cilium_host, cilium_net, cilium_vxlan, cilium_wg0) and its endpoints.
    "cilium*",
    "lxc*",
    // Weave Net.
    "weave*",
    "datapath",
    // Antrea, OVN-Kubernetes, Kube-OVN, Open vSwitch.
    "antrea-*",
    "genev_sys_*",
    "ovn-k8s-*",
    "ovn0",
    "ovs-system",
    "br-int",
    // Kilo.
    "kilo*",
];

/// Errors in a policy document.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The YAML did not parse or did not match the policy's fields.
    #[error("invalid policy: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A field parsed but its value is out of range.
    #[error("invalid policy: {field}: {message}")]
    Invalid {
        /// The policy field, as spelled in YAML.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// What the approver does with a request that fails a check whose outcome is `deny`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DenyMode {
    /// Deny the CSR (a denial cannot be undone).
    #[default]
    Always,
    /// Leave it pending and say in the verdict that it would have been denied.
    Never,
}

impl std::str::FromStr for DenyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!("expected `always` or `never`, got {other:?}")),
        }
    }
}

impl fmt::Display for DenyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Never => "never",
        })
    }
}

/// What check 9 does with an IP SAN that a Service holds or a Service range contains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ServiceAddressMode {
    /// Deny it, whatever the node attests (an external or load-balancer IP that the
    /// node's own Node lists excepted; see `core::services`).
    #[default]
    Deny,
    /// Do not look at the cluster's Services (exotic setups; docs/policy.md says when).
    Ignore,
}

/// How the network must confirm that an IP SAN reaches the requesting node (check 15,
/// `ip-sans-owned`; docs/policy.md `ownershipProof`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProofMode {
    /// Hold the SAN until the requesting node's agent receives a probe sent to it.
    Required,
    /// Probe; a receipt by another node (or a refusal) holds the SAN, but a probe no one
    /// answers lets it pass on the attestation, with a Warning.
    #[default]
    Preferred,
    /// Never probe (addresses the approver cannot reach: a public IP behind NAT).
    Off,
}

impl ProofMode {
    /// `required`, `preferred` or `off`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Preferred => "preferred",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for ProofMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ownershipProof`: a mode for every IP SAN, by the most specific network that contains it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OwnershipProof {
    /// The mode of addresses in none of [`cidrs`](Self::cidrs). Default `preferred`.
    pub default: ProofMode,
    /// Modes per network; the longest prefix containing an address wins.
    pub cidrs: std::collections::BTreeMap<IpNet, ProofMode>,
}

impl OwnershipProof {
    /// The mode for `ip`, and the network that set it (`None`: the default).
    pub fn mode_for(&self, ip: IpAddr) -> (ProofMode, Option<&IpNet>) {
        self.cidrs
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or((self.default, None), |(net, mode)| (*mode, Some(net)))
    }

    /// True when no address is ever probed.
    pub fn is_off(&self) -> bool {
        self.default == ProofMode::Off && self.cidrs.values().all(|m| *m == ProofMode::Off)
    }
}

/// An interface name pattern: an exact name, or a prefix followed by one `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfacePattern {
    text: String,
    prefix_len: Option<usize>,
}

// === impl InterfacePattern ===

impl InterfacePattern {
    /// Parses `lo`, `cali*`, …; a `*` is allowed only at the end.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an interface pattern is empty".to_owned());
        }
        if text.len() > MAX_INTERFACE_PATTERN_BYTES {
            return Err(format!(
                "interface pattern {text:?} is longer than {MAX_INTERFACE_PATTERN_BYTES} bytes"
            ));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(format!(
                "interface pattern {text:?} contains whitespace, a control character or '/'"
            ));
        }
        let star = text.find('*');
        let prefix_len = match star {
            None => None,
            Some(i) if i + 1 == text.len() => Some(i),
            Some(_) => {
                return Err(format!(
                    "interface pattern {text:?}: `*` is allowed only once, at the end (as in `cali*`)"
                ));
            }
        };
        Ok(Self {
            text: text.to_owned(),
            prefix_len,
        })
    }

    /// True when `name` is matched by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self.prefix_len {
            None => self.text == name,
            Some(n) => name.as_bytes().starts_with(&self.text.as_bytes()[..n]),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Serialize for InterfacePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for InterfacePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A DNS suffix that may follow the node name or hostname in a DNS SAN,
/// stored canonically with a leading dot (`.nodes.example.com`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSuffix(String);

// === impl DnsSuffix ===

impl DnsSuffix {
    /// Parses `nodes.example.com` or `.nodes.example.com` (case and one
    /// trailing dot do not matter).
    pub fn new(text: &str) -> Result<Self, String> {
        let bare = text.strip_prefix('.').unwrap_or(text);
        let canonical = names::canonical_hostname(bare)
            .map_err(|e| format!("DNS suffix {text:?} is not a valid domain: {e}"))?;
        Ok(Self(format!(".{canonical}")))
    }

    /// The suffix with its leading dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for DnsSuffix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DnsSuffix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A metadata source a policy names: `cloud:<provider>` (`cloud:aws`, `cloud:gcp`,
/// `cloud:azure`, `cloud:openstack`, …) or `cloud:*` for any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePattern(String);

/// The metadata-source pattern that matches every cloud.
pub const ANY_CLOUD: &str = "cloud:*";

// === impl SourcePattern ===

impl SourcePattern {
    /// Parses `cloud:aws`, `cloud:*`, …
    pub fn new(text: &str) -> Result<Self, String> {
        let provider = text.strip_prefix("cloud:").ok_or_else(|| {
            format!("metadata source {text:?} does not start with `cloud:` (as in `cloud:aws` or `cloud:*`)")
        })?;
        let valid = provider == "*"
            || (!provider.is_empty()
                && text.len() <= 32
                && provider
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "metadata source {text:?}: the provider is `*` or lower-case letters, digits and `-`"
            ))
        }
    }

    /// Whether a source of this name is the one named (or any, for `cloud:*`).
    pub fn matches(&self, source: &str) -> bool {
        self.0 == source
            || (self.0 == ANY_CLOUD && source.strip_prefix("cloud:").is_some_and(|p| !p.is_empty()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for SourcePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SourcePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Which metadata sources may back SANs, besides the node's interfaces (IP SANs) and its
/// name and hostname (DNS SANs), which always may.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetadataSources {
    /// Sources whose stated addresses support IP SANs. Default `[cloud:*]`.
    pub ip_sans: Vec<SourcePattern>,
    /// Sources whose stated DNS names support DNS SANs, exactly as stated, when the name
    /// is in the cloud's own instance domains ([`in_cloud_instance_domain`]) or under
    /// `dnsSuffixes`. Default `[cloud:*]`.
    pub dns_sans: Vec<SourcePattern>,
    /// Further domains whose names a metadata source may back (a VPC's own DHCP domain,
    /// OpenStack's `dhcp_domain`). Default: none.
    pub dns_suffixes: Vec<DnsSuffix>,
}

impl Default for MetadataSources {
    fn default() -> Self {
        let any = || vec![SourcePattern(ANY_CLOUD.to_owned())];
        Self {
            ip_sans: any(),
            dns_sans: any(),
            dns_suffixes: Vec::new(),
        }
    }
}

impl MetadataSources {
    /// Whether `source`'s addresses may support IP SANs.
    pub fn backs_ip_sans(&self, source: &str) -> bool {
        self.ip_sans.iter().any(|p| p.matches(source))
    }

    /// Whether `source` may support DNS SANs at all.
    pub fn backs_dns_sans(&self, source: &str) -> bool {
        self.dns_sans.iter().any(|p| p.matches(source))
    }

    /// Whether `source`'s stated DNS name `name` (canonical) may support a DNS SAN: the
    /// source is accepted for DNS SANs, and the name is one of the cloud's own instance
    /// names or under `dnsSuffixes`. Root on a node controls what its agent reads, so a
    /// stated name outside those domains — the API server's external name, a company's
    /// service — never backs a SAN.
    pub fn backs_dns_name(&self, source: &str, name: &str) -> bool {
        self.backs_dns_sans(source)
            && (in_cloud_instance_domain(source, name)
                || self.dns_suffixes.iter().any(|s| name.ends_with(s.as_str())))
    }
}

/// Whether `name` (canonical) has the shape of the instance names `source`'s cloud gives:
/// AWS `ip-10-0-0-1.ec2.internal`, `ip-10-0-0-1.<region>.compute.internal`,
/// `ec2-203-0-113-7.compute-1.amazonaws.com`, `ec2-….<region>.compute.amazonaws.com`;
/// GCE `<instance>[.<zone>].c.<project>.internal`; OpenStack `<host>.novalocal`. Azure's
/// metadata states only a computer name (one label), which is the node name where it
/// matters, so no Azure name is in a cloud domain.
pub fn in_cloud_instance_domain(source: &str, name: &str) -> bool {
    let under = |suffix: &str| {
        name.strip_suffix(suffix)
            .is_some_and(|host| !host.is_empty() && !host.ends_with('.'))
    };
    match source {
        "cloud:aws" => [
            ".ec2.internal",
            ".compute.internal",
            ".compute-1.amazonaws.com",
            ".compute.amazonaws.com",
        ]
        .iter()
        .any(|s| under(s)),
        "cloud:gcp" => {
            let labels: Vec<&str> = name.split('.').collect();
            labels.len() >= 4
                && labels[labels.len() - 1] == "internal"
                && labels[labels.len() - 3] == "c"
                && labels.iter().all(|l| !l.is_empty())
        }
        "cloud:openstack" => under(".novalocal"),
        _ => false,
    }
}

/// A positive duration written for humans (`5m`, `90s`, `1h30m`, or ISO 8601 `PT5M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(SignedDuration);

// === impl HumanDuration ===

impl HumanDuration {
    /// Wraps a duration.
    pub const fn new(d: SignedDuration) -> Self {
        Self(d)
    }

    /// The duration.
    pub const fn get(self) -> SignedDuration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff's "friendly" format: `5m`, `1h 30m`, `90s` prints as `1m 30s`.
        write!(f, "{:#}", self.0)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed: SignedDuration = text.trim().parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration (write e.g. `5m`, `90s` or `1h30m`): {e}"
            ))
        })?;
        Ok(Self(parsed))
    }
}

/// Everything the decision can be tuned with. See `docs/policy.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Policy {
    /// Largest `spec.request` (PEM text) accepted, in bytes. Default 64 KiB.
    pub max_request_bytes: usize,
    /// Most subject alternative names in one request. Default 100.
    pub max_sans: usize,
    /// How old an attestation may be and still count. Default `5m`.
    pub attestation_max_age: HumanDuration,
    /// Interfaces whose addresses never count as the node's own (exact names
    /// or `prefix*`). Setting this replaces the default list.
    pub excluded_interfaces: Vec<InterfacePattern>,
    /// When non-empty, every IP SAN (and the agent's peer address) must lie in
    /// one of these networks. Default: empty (any).
    pub allowed_cidrs: Vec<IpNet>,
    /// IP SANs in these networks are denied (service and pod CIDRs). Default: empty.
    pub denied_cidrs: Vec<IpNet>,
    /// DNS suffixes that may follow the node name or hostname in a DNS SAN.
    /// Default: empty (only the bare node name and hostname).
    pub allowed_dns_suffixes: Vec<DnsSuffix>,
    /// DNS SANs ending in one of these suffixes are denied whatever the node
    /// attests (the cluster's Service and Pod domains). Setting this replaces
    /// the default list. Default: `svc`, `cluster.local`.
    pub denied_dns_suffixes: Vec<DnsSuffix>,
    /// The attested hostname supports a DNS SAN only when it is the node name
    /// or shares the node name's first label (`worker-1` and
    /// `worker-1.example.com`): the hostname is self-reported, the node name is
    /// proven by the kubelet's certificate. Default: true.
    pub hostname_must_match_node_name: bool,
    /// Require the agent's connection to come from one of the node's own
    /// addresses (check 10). Switch off behind NAT. Default: true.
    pub peer_binding: bool,
    /// Largest `spec.expirationSeconds` accepted. Default: one year (8760h),
    /// kube-controller-manager's default signing duration.
    pub max_expiration_seconds: u32,
    /// How far apart the API server's clock and the approver's may be. Used only
    /// where the decision must compare a CSR's `creationTimestamp` (API server's
    /// clock) with an attestation's `receivedAt` (approver's clock) — offline
    /// `check` — to tell whether facts were received after the CSR. Default `5s`.
    pub clock_skew: HumanDuration,
    /// IP SANs that a Service holds or a ServiceCIDR contains: `deny` (default) or
    /// `ignore`.
    pub service_addresses: ServiceAddressMode,
    /// What a failed `deny` check does: `always` denies, `never` leaves the
    /// CSR pending. Default: `always`. The controller's `--deny` flag overrides it.
    pub deny: DenyMode,
    /// Which metadata sources (a cloud's instance metadata, as the agent read it) may
    /// back IP and DNS SANs. Default: any cloud's, for both — what a cloud's kubelet puts
    /// in its CSR (its public address, its DNS names) is what that cloud's metadata
    /// states.
    pub metadata_sources: MetadataSources,
    /// Whether IP SANs must be proven by the network (check 15): `required`, `preferred`
    /// or `off`, by default and per network. Default: `preferred` everywhere.
    pub ownership_proof: OwnershipProof,
}

// === impl Policy ===

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_sans: DEFAULT_MAX_SANS,
            attestation_max_age: HumanDuration(DEFAULT_ATTESTATION_MAX_AGE),
            excluded_interfaces: DEFAULT_EXCLUDED_INTERFACES
                .iter()
                .filter_map(|p| InterfacePattern::new(p).ok())
                .collect(),
            allowed_cidrs: Vec::new(),
            denied_cidrs: Vec::new(),
            allowed_dns_suffixes: Vec::new(),
            denied_dns_suffixes: DEFAULT_DENIED_DNS_SUFFIXES
                .iter()
                .filter_map(|s| DnsSuffix::new(s).ok())
                .collect(),
            hostname_must_match_node_name: true,
            peer_binding: true,
            max_expiration_seconds: DEFAULT_MAX_EXPIRATION_SECONDS,
            clock_skew: HumanDuration(DEFAULT_CLOCK_SKEW),
            service_addresses: ServiceAddressMode::Deny,
            deny: DenyMode::Always,
            metadata_sources: MetadataSources::default(),
            ownership_proof: OwnershipProof::default(),
        }
    }
}

impl Policy {
    /// Parses a policy document (YAML or JSON); an empty document is the default policy.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let has_content = text
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with('#') && l != "---");
        let policy: Self = if has_content {
            serde_yaml::from_str(text)?
        } else {
            Self::default()
        };
        policy.validated()
    }

    /// Checks ranges and normalises networks; returns the policy or the first problem.
    pub fn validated(mut self) -> Result<Self, PolicyError> {
        let invalid = |field, message: String| PolicyError::Invalid { field, message };
        if !(MIN_REQUEST_BYTES..=MAX_REQUEST_BYTES).contains(&self.max_request_bytes) {
            return Err(invalid(
                "maxRequestBytes",
                format!(
                    "{} is outside {MIN_REQUEST_BYTES}..={MAX_REQUEST_BYTES}",
                    self.max_request_bytes
                ),
            ));
        }
        if !(1..=MAX_SANS).contains(&self.max_sans) {
            return Err(invalid(
                "maxSans",
                format!("{} is outside 1..={MAX_SANS}", self.max_sans),
            ));
        }
        let age = self.attestation_max_age.get();
        if age <= SignedDuration::ZERO || age > MAX_ATTESTATION_AGE {
            return Err(invalid(
                "attestationMaxAge",
                format!(
                    "{} is not between 1s and {}",
                    self.attestation_max_age,
                    HumanDuration(MAX_ATTESTATION_AGE)
                ),
            ));
        }
        let max = self.max_expiration_seconds;
        if max < MIN_EXPIRATION_SECONDS || i32::try_from(max).is_err() {
            return Err(invalid(
                "maxExpirationSeconds",
                format!(
                    "{max} is outside {MIN_EXPIRATION_SECONDS} (the shortest duration Kubernetes accepts)..={}",
                    i32::MAX
                ),
            ));
        }
        let skew = self.clock_skew.get();
        if skew < SignedDuration::ZERO || skew > MAX_CLOCK_SKEW {
            return Err(invalid(
                "clockSkew",
                format!(
                    "{} is not between 0s and {}",
                    self.clock_skew,
                    HumanDuration(MAX_CLOCK_SKEW)
                ),
            ));
        }
        for (field, len) in [
            ("excludedInterfaces", self.excluded_interfaces.len()),
            ("allowedCidrs", self.allowed_cidrs.len()),
            ("deniedCidrs", self.denied_cidrs.len()),
            ("allowedDnsSuffixes", self.allowed_dns_suffixes.len()),
            ("deniedDnsSuffixes", self.denied_dns_suffixes.len()),
            (
                "metadataSources.ipSans",
                self.metadata_sources.ip_sans.len(),
            ),
            (
                "metadataSources.dnsSans",
                self.metadata_sources.dns_sans.len(),
            ),
            ("ownershipProof.cidrs", self.ownership_proof.cidrs.len()),
        ] {
            if len > MAX_LIST_ENTRIES {
                return Err(invalid(
                    field,
                    format!("{len} entries, more than {MAX_LIST_ENTRIES}"),
                ));
            }
        }
        for allowed in &self.allowed_dns_suffixes {
            if let Some(denied) = self.denied_suffix_of(allowed.as_str().trim_start_matches('.')) {
                return Err(invalid(
                    "allowedDnsSuffixes",
                    format!(
                        "{} is inside the denied suffix {}; remove it from deniedDnsSuffixes first if you mean it",
                        allowed.as_str(),
                        denied.as_str()
                    ),
                ));
            }
        }
        for (field, nets) in [
            ("allowedCidrs", &mut self.allowed_cidrs),
            ("deniedCidrs", &mut self.denied_cidrs),
        ] {
            for net in nets.iter_mut() {
                if let IpNet::V6(v6) = net
                    && v6.addr().to_ipv4_mapped().is_some()
                {
                    return Err(invalid(
                        field,
                        format!("{net} is an IPv4-mapped IPv6 network; write it as IPv4"),
                    ));
                }
                *net = net.trunc();
            }
        }
        let mut cidrs = std::collections::BTreeMap::new();
        for (net, mode) in std::mem::take(&mut self.ownership_proof.cidrs) {
            if let IpNet::V6(v6) = net
                && v6.addr().to_ipv4_mapped().is_some()
            {
                return Err(invalid(
                    "ownershipProof.cidrs",
                    format!("{net} is an IPv4-mapped IPv6 network; write it as IPv4"),
                ));
            }
            if let Some(earlier) = cidrs.insert(net.trunc(), mode)
                && earlier != mode
            {
                return Err(invalid(
                    "ownershipProof.cidrs",
                    format!(
                        "{} is listed twice (as {net}, too), once `{earlier}` and once `{mode}`",
                        net.trunc()
                    ),
                ));
            }
        }
        self.ownership_proof.cidrs = cidrs;
        Ok(self)
    }

    /// True when an interface of this name is excluded.
    pub fn is_excluded_interface(&self, name: &str) -> bool {
        self.excluded_interfaces.iter().any(|p| p.matches(name))
    }

    /// The first denied network containing `ip`.
    pub fn denied_network_of(&self, ip: IpAddr) -> Option<&IpNet> {
        self.denied_cidrs.iter().find(|n| n.contains(&ip))
    }

    /// True when `ip` is inside the allowed networks (or none are configured).
    pub fn is_allowed_address(&self, ip: IpAddr) -> bool {
        self.allowed_cidrs.is_empty() || self.allowed_cidrs.iter().any(|n| n.contains(&ip))
    }

    /// The first denied DNS suffix `san` ends with (or is, without its dot).
    pub fn denied_suffix_of(&self, san: &str) -> Option<&DnsSuffix> {
        self.denied_dns_suffixes
            .iter()
            .find(|s| san.ends_with(s.as_str()) || s.as_str().strip_prefix('.') == Some(san))
    }

    /// True when neither allowed nor denied networks constrain IP SANs: then
    /// any address a node attests on a counted interface can be approved,
    /// Service IPs put on a dummy interface included (see docs/threat-model.md).
    pub fn is_address_unconstrained(&self) -> bool {
        self.allowed_cidrs.is_empty() && self.denied_cidrs.is_empty()
    }

    /// Every reading of a canonical DNS SAN: the name itself, then `base` for each
    /// allowed suffix such that `san` is `<base><suffix>`. With overlapping suffixes
    /// (`example.com` and `nodes.example.com`) a name has several readings, and every
    /// one of them counts — for ownership and for uniqueness — whatever the order of
    /// the list.
    pub fn readings<'a>(&'a self, san: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::once(san).chain(self.allowed_dns_suffixes.iter().filter_map(move |s| {
            san.strip_suffix(s.as_str())
                .filter(|base| !base.is_empty() && !base.ends_with('.'))
        }))
    }

    /// The allowed DNS suffixes, each with its leading dot.
    pub fn allowed_suffixes(&self) -> impl Iterator<Item = &str> + '_ {
        self.allowed_dns_suffixes.iter().map(DnsSuffix::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let p = Policy::default();
        assert_eq!(p.max_request_bytes, 65536);
        assert_eq!(p.max_sans, 100);
        assert_eq!(p.attestation_max_age.get(), SignedDuration::from_secs(300));
        assert!(p.peer_binding);
        assert!(p.hostname_must_match_node_name);
        assert!(p.is_address_unconstrained());
        for name in [
            "a.default.svc",
            "a.b.svc.cluster.local",
            "svc",
            "cluster.local",
        ] {
            assert!(p.denied_suffix_of(name).is_some(), "{name}");
        }
        for name in ["worker-1", "mysvc", "worker-1.local", "svc.example.com"] {
            assert!(p.denied_suffix_of(name).is_none(), "{name}");
        }
        assert_eq!(p.deny, DenyMode::Always);
        assert_eq!(p.service_addresses, ServiceAddressMode::Deny);
        assert_eq!(p.max_expiration_seconds, 31_536_000);
        assert_eq!(p.clock_skew.get(), SignedDuration::from_secs(5));
        for name in [
            "lo",
            "kube-ipvs0",
            "docker0",
            "cni0",
            "cali1234",
            "flannel.1",
        ] {
            assert!(p.is_excluded_interface(name), "{name} should be excluded");
        }
        for name in ["eth0", "ens3", "bond0", "br-ex", "eno1", "wlan0"] {
            assert!(!p.is_excluded_interface(name), "{name} should count");
        }
        assert_eq!(p.clone().validated().ok(), Some(p));
    }

    #[test]
    fn overlapping_suffixes_give_every_reading_whatever_the_order() {
        for yaml in [
            "allowedDnsSuffixes: [example.com, nodes.example.com]",
            "allowedDnsSuffixes: [nodes.example.com, example.com]",
        ] {
            let p = Policy::from_yaml(yaml).expect("valid policy");
            let mut readings: Vec<&str> = p.readings("web-1.nodes.example.com").collect();
            readings.sort_unstable();
            assert_eq!(
                readings,
                ["web-1", "web-1.nodes", "web-1.nodes.example.com"],
                "{yaml}"
            );
        }
    }

    #[test]
    fn empty_document_is_default() {
        assert_eq!(Policy::from_yaml("").ok(), Some(Policy::default()));
        assert_eq!(
            Policy::from_yaml("# nothing\n---\n").ok(),
            Some(Policy::default())
        );
    }

    #[test]
    fn parses_every_field() {
        let yaml = r#"
maxRequestBytes: 32768
maxSans: 10
attestationMaxAge: 90s
excludedInterfaces: [lo, "eth9*"]
allowedCidrs: [10.0.0.0/8, "fd00::/8"]
deniedCidrs: [10.96.0.1/12]
allowedDnsSuffixes: [nodes.Example.com., .lan]
peerBinding: false
maxExpirationSeconds: 86400
serviceAddresses: ignore
deny: never
ownershipProof:
  default: required
  cidrs:
    10.1.2.3/16: off
    10.1.128.0/17: preferred
    "fd00::/8": required
"#;
        let p = Policy::from_yaml(yaml).map_err(|e| e.to_string());
        let p = match p {
            Ok(p) => p,
            Err(e) => panic!("policy should parse: {e}"),
        };
        assert_eq!(p.max_request_bytes, 32768);
        assert_eq!(p.max_sans, 10);
        assert_eq!(p.attestation_max_age.get(), SignedDuration::from_secs(90));
        assert!(p.is_excluded_interface("eth99"));
        assert!(!p.is_excluded_interface("eth0"));
        assert_eq!(p.denied_cidrs[0].to_string(), "10.96.0.0/12");
        assert_eq!(p.allowed_dns_suffixes[0].as_str(), ".nodes.example.com");
        assert_eq!(p.allowed_dns_suffixes[1].as_str(), ".lan");
        assert!(!p.peer_binding);
        assert_eq!(p.max_expiration_seconds, 86400);
        assert_eq!(p.deny, DenyMode::Never);
        assert_eq!(p.service_addresses, ServiceAddressMode::Ignore);
        assert_eq!(
            p.readings("worker-1.nodes.example.com").collect::<Vec<_>>(),
            ["worker-1.nodes.example.com", "worker-1"]
        );
        assert_eq!(p.readings(".lan").collect::<Vec<_>>(), [".lan"]);
        assert_eq!(p.readings("worker-1").collect::<Vec<_>>(), ["worker-1"]);
        let mode = |ip: &str| p.ownership_proof.mode_for(ip.parse().expect("address")).0;
        assert_eq!(
            mode("10.1.2.3"),
            ProofMode::Off,
            "10.1.0.0/16 after normalising"
        );
        assert_eq!(
            mode("10.1.200.1"),
            ProofMode::Preferred,
            "the longest prefix wins"
        );
        assert_eq!(mode("192.0.2.1"), ProofMode::Required, "the default");
        assert_eq!(mode("fd00::1"), ProofMode::Required);
    }

    #[test]
    fn ownership_proof_is_preferred_by_default_and_refuses_ambiguous_networks() {
        let p = Policy::default();
        assert_eq!(
            p.ownership_proof
                .mode_for("10.0.0.1".parse().expect("address")),
            (ProofMode::Preferred, None)
        );
        for (yaml, needle) in [
            (
                "ownershipProof: {cidrs: {10.0.0.0/8: off, 10.0.0.1/8: required}}",
                "listed twice",
            ),
            (
                "ownershipProof: {cidrs: {\"::ffff:10.0.0.0/104\": off}}",
                "IPv4-mapped",
            ),
            ("ownershipProof: {default: sometimes}", "sometimes"),
            ("ownershipProof: {defualt: off}", "defualt"),
            (
                "ownershipProof: {cidrs: {10.0.0.0: off}}",
                "ownershipProof.cidrs",
            ),
        ] {
            let Err(err) = Policy::from_yaml(yaml) else {
                panic!("{yaml} should be refused");
            };
            let err = err.to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn invalid_policies_name_the_field() {
        for (yaml, needle) in [
            ("maxSans: 0", "maxSans"),
            ("maxRequestBytes: 10", "maxRequestBytes"),
            ("attestationMaxAge: 0s", "attestationMaxAge"),
            ("attestationMaxAge: 25h", "attestationMaxAge"),
            ("attestationMaxAge: 2d", "not a duration"),
            ("attestationMaxAge: soon", "not a duration"),
            ("maxExpirationSeconds: 60", "maxExpirationSeconds"),
            ("maxExpirationSeconds: 4000000000", "maxExpirationSeconds"),
            ("clockSkew: 1h", "clockSkew"),
            ("excludedInterfaces: ['c*ni']", "only once, at the end"),
            ("excludedInterfaces: ['']", "empty"),
            (
                "allowedDnsSuffixes: ['*.example.com']",
                "not a valid domain",
            ),
            ("deniedCidrs: ['::ffff:10.0.0.0/104']", "IPv4-mapped"),
            (
                "allowedDnsSuffixes: [default.svc]",
                "inside the denied suffix .svc",
            ),
            (
                "allowedDnsSuffixes: [Cluster.Local.]",
                "inside the denied suffix",
            ),
            ("deniedCidrs: [10.0.0.0/33]", "invalid"),
            ("deny: sometimes", "sometimes"),
            ("serviceAddresses: allow", "allow"),
            ("peerBnding: true", "unknown field"),
            ("- a list", "invalid"),
        ] {
            match Policy::from_yaml(yaml) {
                Ok(p) => panic!("{yaml:?} should be refused, got {p:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(needle), "{yaml:?}: {msg:?} lacks {needle:?}");
                }
            }
        }
    }
}
