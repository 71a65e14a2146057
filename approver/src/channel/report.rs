//! Turns an agent's `AgentMessage` into checked [`NodeFacts`] once, at the edge, with a
//! precise reason for every refusal (sent back as `invalid_argument`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rubber_stamp_proto::ids::{is_boot_id, is_machine_id};
use rubber_stamp_proto::limits;
use rubber_stamp_proto::sources::{is_metadata_source, is_source_name};
use rubber_stamp_proto::v1::{
    AgentMessage, FactSource, IpPrefix, MetadataFacts, NetworkInterface, NodeReport, agent_message,
};

use crate::store::{NodeFacts, Nonce};
use rubber_stamp_core::InterfaceFacts;
use rubber_stamp_core::attestation::canonical_name;
use rubber_stamp_core::attestation::{MetadataFacts as CoreMetadataFacts, SourceReport};

/// A report whose every field passed the wire contract's limits and syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidReport {
    /// The facts, normalised (interfaces by name, addresses sorted and deduplicated,
    /// hostname in canonical form).
    pub facts: NodeFacts,
    /// The challenge nonce this report answers, if any.
    pub nonce: Option<Nonce>,
    /// The report's sequence number (at least 1).
    pub sequence: u64,
}

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The message has no `kind`.
    #[error("message carries no report")]
    NoReport,
    /// `sequence` is 0.
    #[error("sequence must be at least 1")]
    SequenceZero,
    /// `sequence` did not increase.
    #[error("sequence {got} is not greater than the previous report's {previous}")]
    SequenceNotIncreasing {
        /// This report's sequence.
        got: u64,
        /// The previous accepted report's sequence.
        previous: u64,
    },
    /// The hostname is empty.
    #[error("hostname is empty")]
    HostnameEmpty,
    /// The hostname is too long.
    #[error("hostname is {0} bytes long; the limit is {max}", max = limits::MAX_HOSTNAME_BYTES)]
    HostnameTooLong(usize),
    /// The hostname is not a valid host name.
    #[error("hostname {hostname:?} is not a valid host name: {reason}")]
    HostnameSyntax {
        /// The hostname as sent.
        hostname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No interfaces at all: every host has at least `lo`, so the agent failed to read
    /// them (e.g. out of descriptors). Taken as proof it would deny the node's CSRs.
    #[error(
        "report has no interfaces; every node has at least a loopback interface, so the agent failed to read them"
    )]
    NoInterfaces,
    /// Too many interfaces.
    #[error("report has {0} interfaces; the limit is {max}", max = limits::MAX_INTERFACES)]
    TooManyInterfaces(usize),
    /// An interface name is empty.
    #[error("interface #{0} has an empty name")]
    InterfaceNameEmpty(usize),
    /// An interface name is too long.
    #[error("interface #{index} has a {len}-byte name; the limit is {max}", max = limits::MAX_INTERFACE_NAME_BYTES)]
    InterfaceNameTooLong {
        /// Position in the report.
        index: usize,
        /// Length in bytes.
        len: usize,
    },
    /// An interface name has a control character (NUL included).
    #[error("interface name {0:?} contains a control character")]
    InterfaceNameControl(String),
    /// Two interfaces have the same name.
    #[error("interface {0:?} is reported more than once")]
    DuplicateInterface(String),
    /// Too many addresses on one interface.
    #[error("interface {name:?} has {count} addresses; the limit is {max}", max = limits::MAX_ADDRESSES_PER_INTERFACE)]
    TooManyAddressesOnInterface {
        /// The interface.
        name: String,
        /// Addresses sent.
        count: usize,
    },
    /// Too many addresses in the report.
    #[error("report has {0} addresses; the limit is {max}", max = limits::MAX_ADDRESSES_PER_REPORT)]
    TooManyAddresses(usize),
    /// An address is neither 4 nor 16 bytes.
    #[error(
        "interface {name:?}: address #{index} is {len} bytes long; IPv4 takes 4 bytes and IPv6 16"
    )]
    AddressLength {
        /// The interface.
        name: String,
        /// Position on the interface.
        index: usize,
        /// Length in bytes.
        len: usize,
    },
    /// A prefix length is out of range for its address family.
    #[error(
        "interface {name:?}: prefix length {prefix} is out of range for {address} (at most {max})"
    )]
    PrefixLength {
        /// The interface.
        name: String,
        /// The address.
        address: IpAddr,
        /// The prefix length sent.
        prefix: u32,
        /// The family's maximum.
        max: u8,
    },
    /// `machine_id` is not 32 lower-case hex digits.
    #[error("machine_id {0:?} is not 32 lower-case hex digits")]
    MachineId(String),
    /// `boot_id` is not a lower-case UUID.
    #[error("boot_id {0:?} is not a lower-case UUID")]
    BootId(String),
    /// `agent_version` is too long or has control characters.
    #[error("agent_version must be at most {max} bytes without control characters", max = limits::MAX_AGENT_VERSION_BYTES)]
    AgentVersion,
    /// The nonce is too long.
    #[error("nonce is {0} bytes long; the limit is {max}", max = limits::MAX_NONCE_BYTES)]
    NonceTooLong(usize),
    /// Too many fact sources.
    #[error("report lists {0} fact sources; the limit is {max}", max = limits::MAX_SOURCES)]
    TooManySources(usize),
    /// A fact source name is not one the contract allows.
    #[error(
        "fact source name {0:?} is not 1..={max} bytes of lower-case letters, digits, ':' and '-'",
        max = limits::MAX_SOURCE_NAME_BYTES
    )]
    SourceName(String),
    /// The same fact source twice.
    #[error("fact source {0:?} is listed more than once")]
    DuplicateSource(String),
    /// Too many metadata entries.
    #[error("report has {0} metadata entries; the limit is {max}", max = limits::MAX_METADATA_SOURCES)]
    TooManyMetadataSources(usize),
    /// A metadata entry's source is not `cloud:<provider>`, appears twice, or is not
    /// listed among the report's fact sources.
    #[error(
        "metadata source {0:?} is not a `cloud:<provider>` source listed once among the report's fact sources"
    )]
    MetadataSource(String),
    /// Too many addresses in one metadata entry.
    #[error("metadata source {source_name:?} states {count} addresses; the limit is {max}", max = limits::MAX_METADATA_ADDRESSES)]
    TooManyMetadataAddresses {
        /// The source.
        source_name: String,
        /// Addresses sent.
        count: usize,
    },
    /// A metadata address is neither 4 nor 16 bytes.
    #[error(
        "metadata source {source_name:?}: address #{index} is {len} bytes long; IPv4 takes 4 bytes and IPv6 16"
    )]
    MetadataAddressLength {
        /// The source.
        source_name: String,
        /// Position.
        index: usize,
        /// Length in bytes.
        len: usize,
    },
    /// Too many DNS names in one metadata entry.
    #[error("metadata source {source_name:?} states {count} DNS names; the limit is {max}", max = limits::MAX_METADATA_DNS_NAMES)]
    TooManyMetadataNames {
        /// The source.
        source_name: String,
        /// Names sent.
        count: usize,
    },
    /// A metadata DNS name is not a host name.
    #[error("metadata source {source_name:?}: {reason}")]
    MetadataName {
        /// The source.
        source_name: String,
        /// What is wrong (the hostname rule's words).
        reason: String,
    },
    /// The proof listener's port is not a TCP port.
    #[error("proof_port {0} is not a TCP port (0..=65535)")]
    ProofPort(u32),
    /// A source's problem text is too long or has control characters.
    #[error(
        "fact source {0:?}: problem must be at most {max} bytes without control characters",
        max = limits::MAX_SOURCE_PROBLEM_BYTES
    )]
    SourceProblem(String),
}

impl TryFrom<AgentMessage> for ValidReport {
    type Error = ReportError;

    fn try_from(message: AgentMessage) -> Result<Self, Self::Error> {
        match message.kind {
            Some(agent_message::Kind::Report(report)) => Self::try_from(report),
            Some(agent_message::Kind::Receipt(_)) | None => Err(ReportError::NoReport),
        }
    }
}

impl TryFrom<NodeReport> for ValidReport {
    type Error = ReportError;

    fn try_from(report: NodeReport) -> Result<Self, Self::Error> {
        if report.sequence == 0 {
            return Err(ReportError::SequenceZero);
        }
        let hostname = parse_hostname(&report.hostname)?;
        let interfaces = parse_interfaces(report.interfaces)?;
        let machine_id = parse_optional(report.machine_id, is_machine_id, ReportError::MachineId)?;
        let boot_id = parse_optional(report.boot_id, is_boot_id, ReportError::BootId)?;
        let agent_version = if report.agent_version.is_empty() {
            None
        } else if report.agent_version.len() > limits::MAX_AGENT_VERSION_BYTES
            || report.agent_version.chars().any(char::is_control)
        {
            return Err(ReportError::AgentVersion);
        } else {
            Some(report.agent_version)
        };
        let nonce = match report.nonce.len() {
            0 => None,
            n if n > limits::MAX_NONCE_BYTES => return Err(ReportError::NonceTooLong(n)),
            _ => Some(Nonce::from_bytes(report.nonce)),
        };
        let sources = parse_sources(report.sources)?;
        let metadata = parse_metadata(report.metadata, &sources)?;
        let proof_port = match u16::try_from(report.proof_port) {
            Ok(0) => None,
            Ok(port) => Some(port),
            Err(_) => return Err(ReportError::ProofPort(report.proof_port)),
        };
        Ok(Self {
            facts: NodeFacts {
                hostname,
                interfaces,
                machine_id,
                boot_id,
                agent_version,
                sources,
                metadata,
                proof_port,
            },
            nonce,
            sequence: report.sequence,
        })
    }
}

/// The fact sources in report order, each name once, within the contract's limits.
fn parse_sources(sources: Vec<FactSource>) -> Result<Vec<SourceReport>, ReportError> {
    if sources.len() > limits::MAX_SOURCES {
        return Err(ReportError::TooManySources(sources.len()));
    }
    let mut parsed: Vec<SourceReport> = Vec::with_capacity(sources.len());
    for source in sources {
        if !is_source_name(&source.name) {
            return Err(ReportError::SourceName(source.name));
        }
        if parsed.iter().any(|s| s.source == source.name) {
            return Err(ReportError::DuplicateSource(source.name));
        }
        if source.problem.len() > limits::MAX_SOURCE_PROBLEM_BYTES
            || source.problem.chars().any(char::is_control)
        {
            return Err(ReportError::SourceProblem(source.name));
        }
        parsed.push(SourceReport {
            source: source.name,
            complete: source.complete,
            problem: (!source.problem.is_empty()).then_some(source.problem),
        });
    }
    Ok(parsed)
}

/// The metadata entries: each a `cloud:<provider>` source listed once among the fact
/// sources, its addresses 4 or 16 bytes (canonical, sorted, unique) and its DNS names host
/// names (canonical, sorted, unique), within the contract's limits.
fn parse_metadata(
    metadata: Vec<MetadataFacts>,
    sources: &[SourceReport],
) -> Result<Vec<CoreMetadataFacts>, ReportError> {
    if metadata.len() > limits::MAX_METADATA_SOURCES {
        return Err(ReportError::TooManyMetadataSources(metadata.len()));
    }
    let mut parsed: Vec<CoreMetadataFacts> = Vec::with_capacity(metadata.len());
    for entry in metadata {
        let source = entry.source;
        if !is_metadata_source(&source)
            || !sources.iter().any(|s| s.source == source)
            || parsed.iter().any(|p| p.source == source)
        {
            return Err(ReportError::MetadataSource(source));
        }
        if entry.addresses.len() > limits::MAX_METADATA_ADDRESSES {
            return Err(ReportError::TooManyMetadataAddresses {
                source_name: source,
                count: entry.addresses.len(),
            });
        }
        if entry.dns_names.len() > limits::MAX_METADATA_DNS_NAMES {
            return Err(ReportError::TooManyMetadataNames {
                source_name: source,
                count: entry.dns_names.len(),
            });
        }
        let mut addresses = BTreeSet::new();
        for (index, bytes) in entry.addresses.iter().enumerate() {
            let ip = match bytes.len() {
                4 => IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(&bytes[..]).unwrap_or_default(),
                )),
                16 => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&bytes[..]).unwrap_or_default(),
                )),
                len => {
                    return Err(ReportError::MetadataAddressLength {
                        source_name: source,
                        index,
                        len,
                    });
                }
            };
            addresses.insert(ip.to_canonical());
        }
        let mut dns_names = BTreeSet::new();
        for name in &entry.dns_names {
            let name = parse_hostname(name).map_err(|e| ReportError::MetadataName {
                source_name: source.clone(),
                reason: e.to_string().replacen("hostname", "DNS name", 1),
            })?;
            dns_names.insert(name);
        }
        parsed.push(CoreMetadataFacts {
            source,
            addresses: addresses.into_iter().collect(),
            dns_names: dns_names.into_iter().collect(),
        });
    }
    Ok(parsed)
}

/// An RFC 1123 host name: dot-separated labels of 1–63 letters, digits and `-`, not
/// starting or ending with `-`, at most 253 bytes; one trailing dot allowed. Returned in
/// canonical form (lower case, no trailing dot).
fn parse_hostname(hostname: &str) -> Result<String, ReportError> {
    let syntax = |reason| ReportError::HostnameSyntax {
        hostname: hostname.to_owned(),
        reason,
    };
    if hostname.is_empty() {
        return Err(ReportError::HostnameEmpty);
    }
    if hostname.len() > limits::MAX_HOSTNAME_BYTES {
        return Err(ReportError::HostnameTooLong(hostname.len()));
    }
    let bare = hostname.strip_suffix('.').unwrap_or(hostname);
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(syntax("empty label"));
        }
        if label.len() > 63 {
            return Err(syntax("label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(syntax("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(syntax("a label starts or ends with '-'"));
        }
    }
    Ok(canonical_name(hostname))
}

fn parse_interfaces(interfaces: Vec<NetworkInterface>) -> Result<Vec<InterfaceFacts>, ReportError> {
    if interfaces.is_empty() {
        return Err(ReportError::NoInterfaces);
    }
    if interfaces.len() > limits::MAX_INTERFACES {
        return Err(ReportError::TooManyInterfaces(interfaces.len()));
    }
    let total: usize = interfaces.iter().map(|i| i.addresses.len()).sum();
    if total > limits::MAX_ADDRESSES_PER_REPORT {
        return Err(ReportError::TooManyAddresses(total));
    }
    let mut names = BTreeSet::new();
    let mut parsed = Vec::with_capacity(interfaces.len());
    for (index, iface) in interfaces.into_iter().enumerate() {
        let name = iface.name;
        if name.is_empty() {
            return Err(ReportError::InterfaceNameEmpty(index));
        }
        if name.len() > limits::MAX_INTERFACE_NAME_BYTES {
            return Err(ReportError::InterfaceNameTooLong {
                index,
                len: name.len(),
            });
        }
        if name.chars().any(char::is_control) {
            return Err(ReportError::InterfaceNameControl(name));
        }
        if !names.insert(name.clone()) {
            return Err(ReportError::DuplicateInterface(name));
        }
        if iface.addresses.len() > limits::MAX_ADDRESSES_PER_INTERFACE {
            return Err(ReportError::TooManyAddressesOnInterface {
                count: iface.addresses.len(),
                name,
            });
        }
        let addresses = iface
            .addresses
            .iter()
            .enumerate()
            .map(|(index, prefix)| parse_prefix(&name, index, prefix))
            .collect::<Result<BTreeSet<_>, _>>()?;
        parsed.push(InterfaceFacts {
            name,
            addresses: addresses.into_iter().collect(),
        });
    }
    parsed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(parsed)
}

fn parse_prefix(name: &str, index: usize, prefix: &IpPrefix) -> Result<IpNet, ReportError> {
    let address = match prefix.address.len() {
        4 => {
            let mut octets = [0; 4];
            octets.copy_from_slice(&prefix.address);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        16 => {
            let mut octets = [0; 16];
            octets.copy_from_slice(&prefix.address);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        len => {
            return Err(ReportError::AddressLength {
                name: name.to_owned(),
                index,
                len,
            });
        }
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let out_of_range = || ReportError::PrefixLength {
        name: name.to_owned(),
        address,
        prefix: prefix.prefix_length,
        max,
    };
    let length = u8::try_from(prefix.prefix_length)
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(out_of_range)?;
    IpNet::new(address, length).map_err(|_| out_of_range())
}

fn parse_optional(
    value: String,
    valid: fn(&str) -> bool,
    error: fn(String) -> ReportError,
) -> Result<Option<String>, ReportError> {
    if value.is_empty() {
        Ok(None)
    } else if value.len() <= limits::MAX_ID_BYTES && valid(&value) {
        Ok(Some(value))
    } else {
        Err(error(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_prefix(address: &[u8], prefix_length: u32) -> IpPrefix {
        IpPrefix {
            address: address.to_vec(),
            prefix_length,
        }
    }

    fn mk_iface(name: &str, addresses: Vec<IpPrefix>) -> NetworkInterface {
        NetworkInterface {
            name: name.to_owned(),
            addresses,
        }
    }

    fn mk_report() -> NodeReport {
        NodeReport {
            hostname: "Worker-1.Example.".to_owned(),
            interfaces: vec![
                mk_iface("lo", vec![mk_prefix(&[127, 0, 0, 1], 8)]),
                mk_iface(
                    "eth0",
                    vec![
                        mk_prefix(&[10, 0, 0, 11], 24),
                        mk_prefix(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11], 64),
                        mk_prefix(&[10, 0, 0, 11], 24),
                    ],
                ),
            ],
            machine_id: "0123456789abcdef0123456789abcdef".to_owned(),
            boot_id: "01234567-89ab-cdef-0123-456789abcdef".to_owned(),
            agent_version: "0.1.0".to_owned(),
            nonce: vec![7; 16],
            sequence: 1,
            sources: vec![FactSource::new("interfaces", None)],
            metadata: Vec::new(),
            proof_port: 0,
        }
    }

    fn refused(report: NodeReport) -> String {
        ValidReport::try_from(report)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_good_report_is_normalised() {
        let valid = ValidReport::try_from(mk_report()).expect("valid");
        assert_eq!(valid.facts.hostname, "worker-1.example");
        let names: Vec<_> = valid
            .facts
            .interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["eth0", "lo"]);
        let eth0: Vec<String> = valid.facts.interfaces[0]
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            eth0,
            ["10.0.0.11/24", "fd00::11/64"],
            "sorted and deduplicated"
        );
        assert_eq!(valid.nonce, Some(Nonce::from_bytes(vec![7; 16])));
        assert_eq!(valid.facts.agent_version.as_deref(), Some("0.1.0"));
        assert_eq!(valid.sequence, 1);
        assert_eq!(valid.facts.sources, [SourceReport::complete("interfaces")]);
    }

    #[test]
    fn the_wire_and_the_core_name_the_interface_source_alike() {
        assert_eq!(
            rubber_stamp_proto::sources::INTERFACES,
            rubber_stamp_core::INTERFACES_SOURCE
        );
    }

    #[test]
    fn sources_say_what_is_missing_and_an_old_agent_says_nothing() {
        let report = NodeReport {
            sources: vec![FactSource::new(
                "interfaces",
                Some("left out 3 addresses".to_owned()),
            )],
            ..mk_report()
        };
        let valid = ValidReport::try_from(report).expect("valid");
        assert_eq!(
            valid.facts.sources,
            [SourceReport::incomplete(
                "interfaces",
                "left out 3 addresses"
            )]
        );
        let old = NodeReport {
            sources: Vec::new(),
            ..mk_report()
        };
        assert!(
            ValidReport::try_from(old)
                .expect("valid")
                .facts
                .sources
                .is_empty()
        );
    }

    #[test]
    fn empty_optional_fields_mean_unknown() {
        let report = NodeReport {
            machine_id: String::new(),
            boot_id: String::new(),
            agent_version: String::new(),
            nonce: Vec::new(),
            ..mk_report()
        };
        let valid = ValidReport::try_from(report).expect("valid");
        assert_eq!(valid.facts.machine_id, None);
        assert_eq!(valid.facts.boot_id, None);
        assert_eq!(valid.facts.agent_version, None);
        assert_eq!(valid.nonce, None);
    }

    #[test]
    fn every_limit_and_syntax_rule_has_a_precise_refusal() {
        let r = mk_report;
        let cases: Vec<(NodeReport, &str)> = vec![
            (
                NodeReport { sequence: 0, ..r() },
                "sequence must be at least 1",
            ),
            (
                NodeReport {
                    hostname: String::new(),
                    ..r()
                },
                "hostname is empty",
            ),
            (
                NodeReport {
                    hostname: "a".repeat(254),
                    ..r()
                },
                "254 bytes long",
            ),
            (
                NodeReport {
                    hostname: "bad_host".into(),
                    ..r()
                },
                "only letters, digits",
            ),
            (
                NodeReport {
                    hostname: "a..b".into(),
                    ..r()
                },
                "empty label",
            ),
            (
                NodeReport {
                    hostname: "-a".into(),
                    ..r()
                },
                "starts or ends with '-'",
            ),
            (
                NodeReport {
                    hostname: "a".repeat(64),
                    ..r()
                },
                "longer than 63",
            ),
            (
                NodeReport {
                    hostname: "ünï".into(),
                    ..r()
                },
                "only letters, digits",
            ),
            (
                NodeReport {
                    interfaces: Vec::new(),
                    ..r()
                },
                "report has no interfaces; every node has at least a loopback interface",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("x", vec![]); 257],
                    ..r()
                },
                "257 interfaces; the limit is 256",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("", vec![])],
                    ..r()
                },
                "#0 has an empty name",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface(&"e".repeat(65), vec![])],
                    ..r()
                },
                "65-byte name",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("eth\0", vec![])],
                    ..r()
                },
                "control character",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("a", vec![]), mk_iface("a", vec![])],
                    ..r()
                },
                "\"a\" is reported more than once",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("a", vec![mk_prefix(&[1, 2, 3, 4], 32); 65])],
                    ..r()
                },
                "65 addresses; the limit is 64",
            ),
            (
                NodeReport {
                    interfaces: (0..17)
                        .map(|i| {
                            mk_iface(&format!("if{i}"), vec![mk_prefix(&[1, 2, 3, 4], 32); 64])
                        })
                        .collect(),
                    ..r()
                },
                "1088 addresses; the limit is 1024",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("a", vec![mk_prefix(&[1, 2, 3, 4, 5], 8)])],
                    ..r()
                },
                "address #0 is 5 bytes long",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("a", vec![mk_prefix(&[1, 2, 3, 4], 33)])],
                    ..r()
                },
                "prefix length 33 is out of range for 1.2.3.4 (at most 32)",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("a", vec![mk_prefix(&[0; 16], 129)])],
                    ..r()
                },
                "prefix length 129 is out of range for :: (at most 128)",
            ),
            (
                NodeReport {
                    interfaces: vec![mk_iface("a", vec![mk_prefix(&[0; 16], u32::MAX)])],
                    ..r()
                },
                "prefix length 4294967295",
            ),
            (
                NodeReport {
                    machine_id: "ABC".into(),
                    ..r()
                },
                "machine_id \"ABC\"",
            ),
            (
                NodeReport {
                    sources: vec![FactSource::new("interfaces", None); 9],
                    ..r()
                },
                "9 fact sources; the limit is 8",
            ),
            (
                NodeReport {
                    sources: vec![FactSource::new("Interfaces", None)],
                    ..r()
                },
                "fact source name \"Interfaces\"",
            ),
            (
                NodeReport {
                    sources: vec![FactSource::new(&"a".repeat(33), None)],
                    ..r()
                },
                "is not 1..=32 bytes",
            ),
            (
                NodeReport {
                    sources: vec![FactSource::new("interfaces", None); 2],
                    ..r()
                },
                "\"interfaces\" is listed more than once",
            ),
            (
                NodeReport {
                    sources: vec![FactSource::new("interfaces", Some("x".repeat(257)))],
                    ..r()
                },
                "at most 256 bytes",
            ),
            (
                NodeReport {
                    sources: vec![FactSource::new("interfaces", Some("a\nb".to_owned()))],
                    ..r()
                },
                "without control characters",
            ),
            (
                NodeReport {
                    machine_id: "0".repeat(33),
                    ..r()
                },
                "machine_id",
            ),
            (
                NodeReport {
                    boot_id: "not-a-uuid".into(),
                    ..r()
                },
                "boot_id \"not-a-uuid\"",
            ),
            (
                NodeReport {
                    agent_version: "v\n1".into(),
                    ..r()
                },
                "agent_version",
            ),
            (
                NodeReport {
                    nonce: vec![0; 65],
                    ..r()
                },
                "nonce is 65 bytes long; the limit is 64",
            ),
        ];
        for (report, expected) in cases {
            let got = refused(report);
            assert!(
                got.contains(expected),
                "{got:?} should mention {expected:?}"
            );
        }
        assert_eq!(
            ValidReport::try_from(AgentMessage { kind: None }),
            Err(ReportError::NoReport)
        );
    }

    fn with_metadata(mut report: NodeReport) -> NodeReport {
        report.sources.push(FactSource::new("cloud:aws", None));
        report.metadata.push(MetadataFacts {
            source: "cloud:aws".to_owned(),
            addresses: vec![
                vec![203, 0, 113, 7],
                vec![10, 0, 0, 11],
                vec![203, 0, 113, 7],
            ],
            dns_names: vec!["EC2-203-0-113-7.compute-1.amazonaws.com.".to_owned()],
        });
        report
    }

    #[test]
    fn metadata_facts_are_checked_and_canonicalised() {
        let valid = ValidReport::try_from(with_metadata(mk_report())).expect("valid");
        assert_eq!(
            valid.facts.metadata,
            [CoreMetadataFacts {
                source: "cloud:aws".to_owned(),
                addresses: vec![
                    "10.0.0.11".parse().expect("ip"),
                    "203.0.113.7".parse().expect("ip")
                ],
                dns_names: vec!["ec2-203-0-113-7.compute-1.amazonaws.com".to_owned()],
            }]
        );
        let refused = |edit: fn(&mut NodeReport)| {
            let mut report = with_metadata(mk_report());
            edit(&mut report);
            ValidReport::try_from(report)
                .expect_err("refused")
                .to_string()
        };
        assert!(
            refused(|r| {
                r.sources.pop();
            })
            .contains("listed once among the report's fact sources")
        );
        assert!(
            refused(|r| r.metadata[0].source = "interfaces".to_owned())
                .contains("is not a `cloud:<provider>` source")
        );
        assert!(refused(|r| r.metadata.push(r.metadata[0].clone())).contains("cloud:aws"));
        assert!(
            refused(|r| r.metadata[0].addresses.push(vec![1, 2, 3]))
                .contains("address #3 is 3 bytes long")
        );
        assert!(
            refused(|r| r.metadata[0].dns_names.push("not a name".to_owned())).contains("DNS name")
        );
        assert!(
            refused(|r| r.metadata[0].addresses =
                vec![vec![10, 0, 0, 1]; limits::MAX_METADATA_ADDRESSES + 1])
            .contains("the limit is 64")
        );
        assert!(
            refused(|r| r.metadata[0].dns_names =
                vec!["a.example".to_owned(); limits::MAX_METADATA_DNS_NAMES + 1])
            .contains("the limit is 16")
        );
    }

    /// The 0.2 contract's NodeReport (fields 1–8), as an agent or approver of that
    /// version encodes and decodes it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct NodeReportV02 {
        #[prost(string, tag = "1")]
        hostname: String,
        #[prost(message, repeated, tag = "2")]
        interfaces: Vec<NetworkInterface>,
        #[prost(string, tag = "3")]
        machine_id: String,
        #[prost(string, tag = "4")]
        boot_id: String,
        #[prost(string, tag = "5")]
        agent_version: String,
        #[prost(bytes = "vec", tag = "6")]
        nonce: Vec<u8>,
        #[prost(uint64, tag = "7")]
        sequence: u64,
        #[prost(message, repeated, tag = "8")]
        sources: Vec<FactSource>,
    }

    #[test]
    fn agents_and_approvers_of_the_previous_contract_interoperate_both_ways() {
        use prost::Message as _;
        // A new agent's report (with metadata) reaches an approver of 0.2: it decodes,
        // the unknown field 9 skipped, and its interface facts are intact.
        let new = with_metadata(mk_report());
        let old_view =
            NodeReportV02::decode(new.encode_to_vec().as_slice()).expect("0.2 decodes it");
        assert_eq!(old_view.hostname, new.hostname);
        assert_eq!(old_view.interfaces, new.interfaces);
        assert_eq!(old_view.sources, new.sources);
        // What that approver validates is the report without the metadata, which passes
        // (the `cloud:aws` source is listed, complete, and constrains nothing there).
        let as_old_approver_sees_it =
            NodeReport::decode(old_view.encode_to_vec().as_slice()).expect("round trip");
        assert!(as_old_approver_sees_it.metadata.is_empty());
        assert!(ValidReport::try_from(as_old_approver_sees_it).is_ok());

        // A 0.2 agent's report reaches a new approver: valid, no metadata.
        let old = NodeReportV02 {
            hostname: "worker-1".to_owned(),
            interfaces: mk_report().interfaces,
            machine_id: String::new(),
            boot_id: String::new(),
            agent_version: "0.2.0".to_owned(),
            nonce: Vec::new(),
            sequence: 3,
            sources: vec![FactSource::new("interfaces", None)],
        };
        let decoded = NodeReport::decode(old.encode_to_vec().as_slice()).expect("decodes");
        let valid = ValidReport::try_from(decoded).expect("valid");
        assert!(valid.facts.metadata.is_empty());
        assert_eq!(valid.sequence, 3);
    }
}
