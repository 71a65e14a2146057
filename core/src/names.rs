//! Canonical forms and validity of the names and addresses a CSR may ask for.
//!
//! Everything is compared in canonical form, after these rules refused the
//! look-alikes: DNS names lower case without a trailing dot, valid DNS-1123
//! hostnames (no wildcard, no NUL, ASCII only, not an IP address in disguise);
//! IPs neither IPv4-mapped/compatible IPv6 nor loopback, link-local,
//! multicast, unspecified or broadcast. Names that belong to the cluster's API
//! server or to loopback are never a node's, whatever it attests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest DNS name (RFC 1035, Kubernetes' DNS-1123 subdomain limit).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest DNS label.
pub const MAX_LABEL_BYTES: usize = 63;

/// Why a text is not an acceptable hostname.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostnameError {
    /// Nothing left after removing the trailing dot.
    Empty,
    /// Longer than 253 bytes.
    TooLong,
    /// Contains `*`.
    Wildcard,
    /// Contains a NUL byte.
    Nul,
    /// Contains a byte outside ASCII.
    NotAscii,
    /// Upper-case letters where only the canonical form is allowed.
    UpperCase,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label longer than 63 bytes.
    LabelTooLong,
    /// A character other than `a-z`, `0-9`, `-` and `.`.
    BadCharacter,
    /// A label starting or ending with `-`.
    HyphenAtEdge,
    /// The whole name is an IPv4 address written as a DNS name, in any
    /// spelling `inet_aton` reads as one (`10.0.0.1`, `10.25`, `0x0a.1`, `012.0.0.1`).
    LooksLikeIp,
}

impl fmt::Display for HostnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty",
            Self::TooLong => "longer than 253 bytes",
            Self::Wildcard => "a wildcard",
            Self::Nul => "contains a NUL byte",
            Self::NotAscii => "contains non-ASCII characters",
            Self::UpperCase => "contains upper-case letters",
            Self::EmptyLabel => "has an empty label",
            Self::LabelTooLong => "has a label longer than 63 bytes",
            Self::BadCharacter => "contains a character other than a-z, 0-9, '-' and '.'",
            Self::HyphenAtEdge => "has a label starting or ending with '-'",
            Self::LooksLikeIp => {
                "an IP address written as a DNS name (every label a number, as inet_aton reads it)"
            }
        })
    }
}

impl std::error::Error for HostnameError {}

/// Checks that `name` is a DNS-1123 subdomain exactly as written (lower case,
/// no trailing dot): the rule for Kubernetes node names.
pub fn check_dns1123_subdomain(name: &str) -> Result<(), HostnameError> {
    if name.is_empty() {
        return Err(HostnameError::Empty);
    }
    if name.len() > MAX_HOSTNAME_BYTES {
        return Err(HostnameError::TooLong);
    }
    let bytes = name.as_bytes();
    // The specific reasons first, so that details say what is wrong.
    if bytes.contains(&0) {
        return Err(HostnameError::Nul);
    }
    if bytes.contains(&b'*') {
        return Err(HostnameError::Wildcard);
    }
    if !name.is_ascii() {
        return Err(HostnameError::NotAscii);
    }
    if bytes.iter().any(u8::is_ascii_uppercase) {
        return Err(HostnameError::UpperCase);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostnameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(HostnameError::LabelTooLong);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(HostnameError::BadCharacter);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::HyphenAtEdge);
        }
    }
    Ok(())
}

/// The canonical form of a DNS name from a SAN or a policy: one trailing dot
/// removed, ASCII lower case; refused unless the result is a valid hostname
/// that is not an IPv4 address in disguise.
pub fn canonical_hostname(text: &str) -> Result<String, HostnameError> {
    let bare = text.strip_suffix('.').unwrap_or(text);
    if bare.len() > MAX_HOSTNAME_BYTES {
        return Err(HostnameError::TooLong);
    }
    let lower = bare.to_ascii_lowercase();
    check_dns1123_subdomain(&lower)?;
    if spells_an_ipv4_address(&lower) {
        return Err(HostnameError::LooksLikeIp);
    }
    Ok(lower)
}

/// True when every label of `name` is a number as C's `inet_aton` (and so glibc's
/// resolver, `ping`, and the URL standard's IPv4 parser) reads one: decimal digits,
/// octal with a leading `0`, or hex after `0x`. Such a name is an IPv4 address to
/// those readers (`10.25` is 10.0.0.25, `012.0.0.1` is 10.0.0.1, `0xa.1` is
/// 10.0.0.1), so a certificate naming it would name an address the IP checks never
/// saw. Refused whatever the count or range of the labels: no host is named that way.
pub fn spells_an_ipv4_address(name: &str) -> bool {
    fn is_number(label: &str) -> bool {
        match label.strip_prefix("0x") {
            // `0x` alone is 0 to inet_aton.
            Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
        }
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name
            .split('.')
            .all(|label| is_number(&label.to_ascii_lowercase()))
}

/// Names that belong to the cluster's API server or to loopback: never a node's,
/// whatever it attests. `kubernetes`, `kubernetes.default` and
/// `kubernetes.default.svc` are in kube-apiserver's own serving certificate and
/// resolve to it in every pod through the search path; `localhost` and its
/// relatives are loopback on every machine (RFC 6761), so a client that trusts the
/// cluster CA for them would trust any node. Names under the cluster domain are the
/// policy's `deniedDnsSuffixes`.
pub const RESERVED_NAMES: &[&str] = &[
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "localhost",
    "localhost.localdomain",
];

/// Suffixes (with their leading dot) under which every name is reserved: RFC 6761's
/// `.localhost`.
pub const RESERVED_SUFFIXES: &[&str] = &[".localhost"];

/// Why a canonical DNS name is reserved for the cluster or loopback, if it is.
pub fn reserved_name(name: &str) -> Option<&'static str> {
    if RESERVED_NAMES.contains(&name) {
        Some(if name.starts_with("kubernetes") {
            "a name of the cluster's API server"
        } else {
            "a loopback name"
        })
    } else if RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        Some("under .localhost, a loopback domain")
    } else {
        None
    }
}

/// True when `a` and `b` are the same DNS name once canonical (case and one
/// trailing dot ignored); compares without allocating.
pub fn same_name(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

/// True when a self-reported `hostname` may stand for the node `node`: it is
/// the node name or the node name's first label (`ip-10-0-0-1` for node
/// `ip-10-0-0-1.ec2.internal`), either of them followed by nothing or by one of
/// `suffixes` (each with its leading dot, as the policy keeps allowed DNS
/// suffixes). Anything else — `worker-1.evil.example` for node `worker-1` — is a
/// name the node chose for itself outside the domains the operator allowed, and
/// supports no DNS SAN. Case and one trailing dot do not matter.
pub fn hostname_matches_node<'s>(
    hostname: &str,
    node: &str,
    suffixes: impl IntoIterator<Item = &'s str>,
) -> bool {
    let hostname = hostname.strip_suffix('.').unwrap_or(hostname);
    let node = node.strip_suffix('.').unwrap_or(node);
    let first = node.split('.').next().unwrap_or_default();
    let is_base =
        |base: &str| !base.is_empty() && (same_name(base, node) || same_name(base, first));
    if is_base(hostname) {
        return true;
    }
    suffixes.into_iter().any(|suffix| {
        hostname.len() > suffix.len()
            && hostname.is_char_boundary(hostname.len() - suffix.len())
            && hostname[hostname.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            && is_base(&hostname[..hostname.len() - suffix.len()])
    })
}

/// Why an IP address may not appear in a serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpProblem {
    /// `::ffff:a.b.c.d`: an IPv4 address spelled as IPv6.
    Ipv4Mapped,
    /// `::a.b.c.d`: the deprecated IPv4-compatible spelling.
    Ipv4Compatible,
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// The SAN's octet string is neither 4 nor 16 bytes.
    BadLength,
}

impl fmt::Display for IpProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4Mapped => "an IPv4-mapped IPv6 address",
            Self::Ipv4Compatible => "an IPv4-compatible IPv6 address",
            Self::Unspecified => "the unspecified address",
            Self::Loopback => "a loopback address",
            Self::LinkLocal => "a link-local address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::BadLength => "neither 4 nor 16 bytes long",
        })
    }
}

/// Decodes an IP SAN's octet string and refuses addresses that must not be
/// certified; returns the address otherwise.
pub fn san_ip(octets: &[u8]) -> Result<IpAddr, (Option<IpAddr>, IpProblem)> {
    let ip = match octets.len() {
        4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(octets);
            IpAddr::V4(Ipv4Addr::from(b))
        }
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(octets);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err((None, IpProblem::BadLength)),
    };
    match ip_problem(ip) {
        Some(p) => Err((Some(ip), p)),
        None => Ok(ip),
    }
}

/// What is wrong with `ip` as a SAN, if anything.
pub fn ip_problem(ip: IpAddr) -> Option<IpProblem> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some(IpProblem::Unspecified)
            } else if v4.is_loopback() {
                Some(IpProblem::Loopback)
            } else if v4.is_link_local() {
                Some(IpProblem::LinkLocal)
            } else if v4.is_multicast() {
                Some(IpProblem::Multicast)
            } else if v4.is_broadcast() {
                Some(IpProblem::Broadcast)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() {
                Some(IpProblem::Unspecified)
            } else if v6.is_loopback() {
                Some(IpProblem::Loopback)
            } else if v6.to_ipv4_mapped().is_some() {
                Some(IpProblem::Ipv4Mapped)
            } else if seg[..6] == [0; 6] {
                // ::a.b.c.d (`::` and `::1` were handled above).
                Some(IpProblem::Ipv4Compatible)
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some(IpProblem::LinkLocal)
            } else if v6.is_multicast() {
                Some(IpProblem::Multicast)
            } else {
                None
            }
        }
    }
}

/// Shortens attacker-controlled text for a human detail and escapes it
/// (quotes, control characters and NUL shown as escapes).
pub fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hostnames() {
        assert_eq!(canonical_hostname("Worker-1.").as_deref(), Ok("worker-1"));
        assert_eq!(
            canonical_hostname("a.B.example.COM").as_deref(),
            Ok("a.b.example.com")
        );
        for (text, err) in [
            ("", HostnameError::Empty),
            (".", HostnameError::Empty),
            ("worker-1..", HostnameError::EmptyLabel),
            ("*.worker-1", HostnameError::Wildcard),
            ("worker\0-1", HostnameError::Nul),
            ("wörker", HostnameError::NotAscii),
            ("-worker", HostnameError::HyphenAtEdge),
            ("worker_1", HostnameError::BadCharacter),
            ("10.0.0.1", HostnameError::LooksLikeIp),
            ("10.0.0.1.", HostnameError::LooksLikeIp),
            // inet_aton's other spellings of IPv4 addresses.
            ("10.0.0.031", HostnameError::LooksLikeIp),
            ("10.25", HostnameError::LooksLikeIp),
            ("167772161", HostnameError::LooksLikeIp),
            ("0x0a.0.0.1", HostnameError::LooksLikeIp),
            ("0XA.1", HostnameError::LooksLikeIp),
            ("0x.0x", HostnameError::LooksLikeIp),
            ("1.2.3.4.5", HostnameError::LooksLikeIp),
        ] {
            assert_eq!(canonical_hostname(text), Err(err), "{text:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(
            canonical_hostname(&long_label),
            Err(HostnameError::LabelTooLong)
        );
        let long = ["a"; 130].join(".");
        assert_eq!(canonical_hostname(&long), Err(HostnameError::TooLong));
    }

    #[test]
    fn node_names_must_already_be_canonical() {
        assert_eq!(check_dns1123_subdomain("worker-1"), Ok(()));
        assert_eq!(
            check_dns1123_subdomain("Worker-1"),
            Err(HostnameError::UpperCase)
        );
        assert_eq!(
            check_dns1123_subdomain("worker-1."),
            Err(HostnameError::EmptyLabel)
        );
    }

    #[test]
    fn names_with_a_letter_in_some_label_are_hosts() {
        for name in [
            "worker-1",
            "10-0-0-1",
            "ip-10-0-0-1.ec2.internal",
            "cn-hangzhou.192.168.0.1",
            "1.2.3.a",
            "0xg.1",
            "1e3",
        ] {
            assert!(!spells_an_ipv4_address(name), "{name}");
            assert!(canonical_hostname(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn reserved_names() {
        for name in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "localhost",
            "localhost.localdomain",
            "a.localhost",
            "worker-1.localhost",
        ] {
            assert!(reserved_name(name).is_some(), "{name}");
        }
        for name in [
            "kubernetes-1",
            "worker-1",
            "localhost-1",
            "mylocalhost",
            "kubernetes.io",
        ] {
            assert!(reserved_name(name).is_none(), "{name}");
        }
    }

    #[test]
    fn hostname_matches_node_by_name_or_first_label_under_allowed_suffixes_only() {
        let none: [&str; 0] = [];
        assert!(hostname_matches_node("worker-1", "worker-1", none));
        assert!(hostname_matches_node("Worker-1.", "worker-1", none));
        assert!(hostname_matches_node(
            "ip-10-0-0-1",
            "ip-10-0-0-1.ec2.internal",
            none
        ));
        // A first label followed by a domain the operator did not allow names an
        // outside domain: not the node's.
        assert!(!hostname_matches_node(
            "worker-1.example.com",
            "worker-1",
            none
        ));
        assert!(!hostname_matches_node("fl-1.evil.example", "fl-1", none));
        assert!(hostname_matches_node(
            "Worker-1.Example.com.",
            "worker-1",
            [".example.com"]
        ));
        assert!(hostname_matches_node(
            "ip-10-0-0-1.nodes.lan",
            "ip-10-0-0-1.ec2.internal",
            [".nodes.lan"]
        ));
        assert!(!hostname_matches_node(
            "fl-1.evil.example",
            "fl-1",
            [".example"]
        ));
        assert!(!hostname_matches_node("worker-2", "worker-1", none));
        assert!(!hostname_matches_node(
            "worker-12.example.com",
            "worker-1",
            [".example.com"]
        ));
        assert!(!hostname_matches_node(
            "kubernetes.default.svc",
            "worker-1",
            none
        ));
        assert!(!hostname_matches_node("", "worker-1", none));
        assert!(!hostname_matches_node(".worker-1", "worker-1", none));
        assert!(!hostname_matches_node(
            ".example.com",
            "worker-1",
            [".example.com"]
        ));
    }

    #[test]
    fn same_name_ignores_case_and_trailing_dot() {
        assert!(same_name("Worker-1.", "worker-1"));
        assert!(!same_name("worker-1", "worker-12"));
        assert!(!same_name(".", ""));
    }

    #[test]
    fn san_ips() {
        let ok = |s: &str| -> IpAddr {
            match s.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(e) => panic!("{s}: {e}"),
            }
        };
        let octets = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        for good in ["10.0.0.11", "192.0.2.1", "fd00::11", "2001:db8::1"] {
            assert_eq!(san_ip(&octets(ok(good))), Ok(ok(good)));
        }
        for (bad, problem) in [
            ("::ffff:10.0.0.11", IpProblem::Ipv4Mapped),
            ("::10.0.0.11", IpProblem::Ipv4Compatible),
            ("0.0.0.0", IpProblem::Unspecified),
            ("::", IpProblem::Unspecified),
            ("127.0.0.2", IpProblem::Loopback),
            ("::1", IpProblem::Loopback),
            ("169.254.1.1", IpProblem::LinkLocal),
            ("fe80::1", IpProblem::LinkLocal),
            ("febf::1", IpProblem::LinkLocal),
            ("224.0.0.1", IpProblem::Multicast),
            ("ff02::1", IpProblem::Multicast),
            ("255.255.255.255", IpProblem::Broadcast),
        ] {
            assert_eq!(
                san_ip(&octets(ok(bad))),
                Err((Some(ok(bad)), problem)),
                "{bad}"
            );
        }
        assert_eq!(san_ip(&[1, 2, 3]), Err((None, IpProblem::BadLength)));
    }

    #[test]
    fn quoting_escapes_and_truncates() {
        assert_eq!(quoted("a\0b"), "\"a\\0b\"");
        let long = "x".repeat(200);
        assert!(quoted(&long).len() < 90);
    }
}
