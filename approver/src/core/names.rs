//! Canonical forms and validity of the names and addresses a CSR may ask for.
//!
//! Everything is compared in canonical form, after these rules refused the
//! look-alikes: DNS names lower case without a trailing dot, valid DNS-1123
//! hostnames (no wildcard, no NUL, ASCII only, not an IP address in disguise);
//! IPs neither IPv4-mapped/compatible IPv6 nor loopback, link-local,
//! multicast, unspecified or broadcast.

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
    /// The whole name is an IPv4 address written as a DNS name.
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
            Self::LooksLikeIp => "an IP address written as a DNS name",
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
    if lower.parse::<Ipv4Addr>().is_ok() {
        return Err(HostnameError::LooksLikeIp);
    }
    Ok(lower)
}

/// True when `a` and `b` are the same DNS name once canonical (case and one
/// trailing dot ignored); compares without allocating.
pub fn same_name(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

/// True when a self-reported `hostname` may stand for the node `node`: it is
/// the node name, or its first label is the node name's first label
/// (`worker-1` and `worker-1.example.com`, `ip-10-0-0-1.ec2.internal` and
/// `ip-10-0-0-1`). Case and one trailing dot do not matter.
pub fn hostname_matches_node(hostname: &str, node: &str) -> bool {
    let first = |n: &str| {
        let n = n.strip_suffix('.').unwrap_or(n);
        n.split('.').next().unwrap_or_default().to_owned()
    };
    same_name(hostname, node) || {
        let (h, n) = (first(hostname), first(node));
        !h.is_empty() && h.eq_ignore_ascii_case(&n)
    }
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
    fn hostname_matches_node_by_name_or_first_label() {
        assert!(hostname_matches_node("worker-1", "worker-1"));
        assert!(hostname_matches_node("Worker-1.example.com.", "worker-1"));
        assert!(hostname_matches_node(
            "ip-10-0-0-1",
            "ip-10-0-0-1.ec2.internal"
        ));
        assert!(!hostname_matches_node("worker-2", "worker-1"));
        assert!(!hostname_matches_node("worker-12.example.com", "worker-1"));
        assert!(!hostname_matches_node("kubernetes.default.svc", "worker-1"));
        assert!(!hostname_matches_node("", "worker-1"));
        assert!(!hostname_matches_node(".worker-1", "worker-1"));
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
