//! The `rubberstamp.v1` wire contract, generated at build time from
//! `rubberstamp/v1/attestation.proto`.
//!
//! Generated code lives only here; the approver's decision core never sees it.

pub mod codec;

/// Limits the approver enforces on every message; documented in the `.proto`.
pub mod limits {
    /// Largest encoded message accepted or sent, in bytes.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// Longest hostname, in bytes (DNS limit).
    pub const MAX_HOSTNAME_BYTES: usize = 253;
    /// Most interfaces in one report.
    pub const MAX_INTERFACES: usize = 256;
    /// Longest interface name, in bytes.
    pub const MAX_INTERFACE_NAME_BYTES: usize = 64;
    /// Most addresses on one interface.
    pub const MAX_ADDRESSES_PER_INTERFACE: usize = 64;
    /// Most addresses in one report, over all interfaces.
    pub const MAX_ADDRESSES_PER_REPORT: usize = 1024;
    /// Longest machine-id or boot-id, in bytes.
    pub const MAX_ID_BYTES: usize = 64;
    /// Longest agent version string, in bytes.
    pub const MAX_AGENT_VERSION_BYTES: usize = 64;
    /// Longest challenge nonce, in bytes.
    pub const MAX_NONCE_BYTES: usize = 64;
    /// Shortest challenge nonce the approver sends, in bytes.
    pub const MIN_NONCE_BYTES: usize = 16;
    /// Most fact sources in one report.
    pub const MAX_SOURCES: usize = 8;
    /// Longest fact source name, in bytes.
    pub const MAX_SOURCE_NAME_BYTES: usize = 32;
    /// Longest description of what a source is missing, in bytes.
    pub const MAX_SOURCE_PROBLEM_BYTES: usize = 256;
    /// Most metadata entries in one report (one per metadata source).
    pub const MAX_METADATA_SOURCES: usize = 4;
    /// Most addresses one metadata source states.
    pub const MAX_METADATA_ADDRESSES: usize = 64;
    /// Most DNS names one metadata source states.
    pub const MAX_METADATA_DNS_NAMES: usize = 16;
    /// Largest ServiceAccount token an agent presents (`authorization: Bearer`), in bytes; a
    /// projected token is about 1 KiB. The approver's HTTP/2 header list limit (16 KiB) holds it.
    pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
}

/// The probe frame of the proof of address ownership: what the approver writes to an
/// agent's proof listener (`rubberstamp.v1`, "Proof of address ownership").
pub mod proof {
    /// The frame's first bytes: the protocol and its version.
    pub const MAGIC: &[u8; 8] = b"RSPROOF1";
    /// The nonce's length, in bytes.
    pub const NONCE_BYTES: usize = 32;
    /// The whole frame's length, in bytes.
    pub const FRAME_BYTES: usize = MAGIC.len() + NONCE_BYTES;
    /// The agents' proof port when neither side configures another.
    pub const DEFAULT_PORT: u16 = 10273;

    /// The frame carrying `nonce`.
    pub fn encode(nonce: &[u8; NONCE_BYTES]) -> [u8; FRAME_BYTES] {
        let mut frame = [0; FRAME_BYTES];
        frame[..MAGIC.len()].copy_from_slice(MAGIC);
        frame[MAGIC.len()..].copy_from_slice(nonce);
        frame
    }

    /// The nonce of a frame, or `None` when it does not start with [`MAGIC`].
    pub fn decode(frame: &[u8; FRAME_BYTES]) -> Option<[u8; NONCE_BYTES]> {
        let (magic, nonce) = frame.split_at(MAGIC.len());
        (magic == MAGIC).then(|| nonce.try_into().ok()).flatten()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_frame_round_trips_and_a_foreign_one_is_refused() {
            let nonce = [7; NONCE_BYTES];
            let frame = encode(&nonce);
            assert_eq!(decode(&frame), Some(nonce));
            let mut foreign = frame;
            foreign[0] = b'G';
            assert_eq!(decode(&foreign), None);
        }
    }
}

/// The names of the sources of facts an agent reports.
pub mod sources {
    /// The kernel's network interfaces and their addresses, with the hostname.
    pub const INTERFACES: &str = "interfaces";

    /// Listed (incomplete) while the agent is still detecting which cloud's metadata
    /// service, if any, it can read.
    pub const CLOUD_DETECTING: &str = "cloud";

    /// The prefix of every metadata source: `cloud:aws`, `cloud:gcp`, …
    pub const CLOUD_PREFIX: &str = "cloud:";

    /// True when `name` names a metadata source: `cloud:` and a provider name.
    pub fn is_metadata_source(name: &str) -> bool {
        is_source_name(name)
            && name
                .strip_prefix(CLOUD_PREFIX)
                .is_some_and(|provider| !provider.is_empty() && !provider.contains(':'))
    }

    /// True when `name` can name a source: 1..=32 bytes of lower-case letters,
    /// digits, `:` and `-` (`interfaces`, `cloud:aws`).
    pub fn is_source_name(name: &str) -> bool {
        (1..=super::limits::MAX_SOURCE_NAME_BYTES).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
    }
}

/// The identifiers' formats, as the agent reads them and the approver accepts them.
pub mod ids {
    fn is_lower_hex(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// systemd's machine-id format: 32 lower-case hex digits.
    pub fn is_machine_id(s: &str) -> bool {
        s.len() == 32 && is_lower_hex(s)
    }

    /// The kernel's boot id format: a lower-case 8-4-4-4-12 UUID.
    pub fn is_boot_id(s: &str) -> bool {
        let groups: Vec<&str> = s.split('-').collect();
        groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups.iter().all(|g| is_lower_hex(g))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn formats() {
            assert!(is_machine_id("0123456789abcdef0123456789abcdef"));
            assert!(!is_machine_id("0123456789ABCDEF0123456789abcdef"));
            assert!(!is_machine_id("0123456789abcdef"));
            assert!(is_boot_id("01234567-89ab-cdef-0123-456789abcdef"));
            assert!(!is_boot_id("0123456789abcdef0123456789abcdef"));
            assert!(!is_boot_id("01234567-89ab-cdef-0123-456789abcdeg"));
        }
    }
}

/// Generated messages and service stubs for `rubberstamp.v1`.
pub mod v1 {
    #![allow(
        missing_docs,
        unreachable_pub,
        unused_qualifications,
        missing_debug_implementations,
        clippy::all,
        reason = "generated by tonic-prost-build"
    )]
    tonic::include_proto!("rubberstamp.v1");
}

impl v1::FactSource {
    /// A source read completely, or (with a problem) what its reading left out.
    pub fn new(name: &str, problem: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            complete: problem.is_none(),
            problem: problem.unwrap_or_default(),
        }
    }
}

impl v1::MetadataFacts {
    /// What `source` states: addresses in wire form (4 or 16 bytes) and DNS names.
    pub fn new(source: &str, addresses: &[std::net::IpAddr], dns_names: &[String]) -> Self {
        Self {
            source: source.to_owned(),
            addresses: addresses
                .iter()
                .map(|a| match a {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                })
                .collect(),
            dns_names: dns_names.to_vec(),
        }
    }
}

impl v1::IpPrefix {
    /// `address/prefix_length` in wire form (4 or 16 address bytes).
    pub fn new(address: std::net::IpAddr, prefix_length: u8) -> Self {
        Self {
            address: match address {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            },
            prefix_length: u32::from(prefix_length),
        }
    }
}
