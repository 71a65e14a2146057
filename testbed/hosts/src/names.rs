//! Names of the namespaces and links a run creates: `rs<pid>-…`, so that a
//! later run can tell whose leftovers they are and whether that run is dead.
//!
//! - bridge: `rs<pid>-b<seq>`; the routed topology's address link (the gateway's
//!   addresses in the root namespace): `rs<pid>-r<seq>`; root end of a host's veth:
//!   `rs<pid>-v<seq>` (all within IFNAMSIZ: 15 bytes);
//! - network namespace: `rs<pid>-<seq>-<hostname>` (a file name, no such limit).
//!
//! `<seq>` counts up per process, so parallel tests in one process never clash.
//!
//! Routes carry no name: the routed topology's `unreachable` routes for a run's subnets
//! are marked with protocol [`ROUTE_PROTOCOL`] and carry the owner's PID as their metric
//! (a tiebreaker among routes of the same prefix, of which there are no others).
//!
//! On disk: the per-run log directory `rubber-stamp-hosts-<pid>-…` in the temp dir, and
//! `/etc/netns/<netns>` for the files `ip netns exec` mounts over `/etc`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;

use super::error::HostsError;

const PREFIX: &str = "rs";
/// Linux's IFNAMSIZ (16) minus the terminating NUL.
pub(crate) const MAX_IFNAME: usize = 15;
/// A hostname here is one DNS label.
const MAX_HOSTNAME: usize = 63;

/// Start of the per-run log directory's name in the temp dir; the PID follows.
pub(crate) const RUN_DIR_PREFIX: &str = "rubber-stamp-hosts-";

/// Where `ip netns exec` finds files to bind-mount over `/etc` for a
/// namespace (iproute2's `NETNS_ETC_DIR`).
const NETNS_ETC_DIR: &str = "/etc/netns";

/// `/etc/netns/<netns>`: the files `ip netns exec` mounts over `/etc`.
pub(crate) fn etc_dir(netns: &str) -> PathBuf {
    Path::new(NETNS_ETC_DIR).join(netns)
}

static SEQ: AtomicU32 = AtomicU32::new(1);

/// The next per-process sequence number.
pub(crate) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// What a link is for; its letter in the name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LinkKind {
    Bridge,
    Router,
    Veth,
}

/// `rs<pid>-b<seq>`, `rs<pid>-r<seq>` or `rs<pid>-v<seq>`, refused when longer than
/// IFNAMSIZ.
pub(crate) fn link_name(kind: LinkKind, pid: u32, seq: u32) -> Result<String, HostsError> {
    let letter = match kind {
        LinkKind::Bridge => 'b',
        LinkKind::Router => 'r',
        LinkKind::Veth => 'v',
    };
    let name = format!("{PREFIX}{pid}-{letter}{seq}");
    if name.len() > MAX_IFNAME {
        return Err(HostsError::Exhausted {
            what: "interface names for this process (IFNAMSIZ)",
        });
    }
    Ok(name)
}

/// `rs<pid>-<seq>-<hostname>`.
pub(crate) fn netns_name(pid: u32, seq: u32, hostname: &str) -> String {
    format!("{PREFIX}{pid}-{seq}-{hostname}")
}

/// The routing protocol number (`ip route … proto 77`) marking the routes a run
/// adds that no link of its own carries away: the routed topology's `unreachable`
/// routes for its subnets. Assigned to nothing in iproute2's `rt_protos`.
pub(crate) const ROUTE_PROTOCOL: u8 = 77;

/// The ranges a run's subnets come from (`subnet`): 198.18.0.0/15 and fd00::/8.
const RUN_RANGES: [&str; 2] = ["198.18.0.0/15", "fd00::/8"];

/// The PID of the run that added a route, if it is one of ours: an `unreachable` route
/// of protocol [`ROUTE_PROTOCOL`] for a prefix inside the runs' ranges, whose metric
/// is the PID. `None` for every other route.
pub(crate) fn route_owner(kind: &str, dst: &str, metric: Option<u32>) -> Option<u32> {
    let dst: IpNet = dst.parse().ok()?;
    let inside = RUN_RANGES
        .iter()
        .filter_map(|r| r.parse::<IpNet>().ok())
        .any(|range| range.contains(&dst));
    (kind == "unreachable" && inside)
        .then_some(metric)
        .flatten()
        .filter(|pid| *pid > 0)
}

/// The PID of the run that made a namespace or link, if the name is one of
/// ours (exactly the shapes above); `None` for every other name.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let pid = digits(pid)?;
    let ours = if let Some(seq) = rest.strip_prefix(['b', 'r', 'v']) {
        digits(seq).is_some()
    } else {
        rest.split_once('-')
            .is_some_and(|(seq, host)| digits(seq).is_some() && check_hostname(host).is_ok())
    };
    ours.then_some(pid)
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A hostname is one lower-case DNS label: 1–63 of `[a-z0-9-]`, not starting
/// or ending with `-`. Strict, because it ends up in file and command names.
pub(crate) fn check_hostname(name: &str) -> Result<(), HostsError> {
    let bad = |reason| {
        Err(HostsError::InvalidName {
            what: "hostname",
            value: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_HOSTNAME {
        return bad("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("must not start or end with '-'");
    }
    Ok(())
}

/// An interface name the kernel accepts: 1–15 bytes, no `/`, `:`, whitespace,
/// not `.` or `..`.
pub(crate) fn check_ifname(name: &str) -> Result<(), HostsError> {
    let bad = |reason| {
        Err(HostsError::InvalidName {
            what: "interface name",
            value: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_IFNAME {
        return bad("must be 1 to 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("no '/', ':' or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_their_owner() {
        let pid = 4_194_304; // the largest pid_max
        let bridge = link_name(LinkKind::Bridge, pid, 9999).expect("fits");
        assert_eq!(bridge, "rs4194304-b9999");
        assert!(bridge.len() <= MAX_IFNAME);
        assert_eq!(owner_pid(&bridge), Some(pid));
        let veth = link_name(LinkKind::Veth, 42, 7).expect("fits");
        assert_eq!(owner_pid(&veth), Some(42));
        let router = link_name(LinkKind::Router, 42, 8).expect("fits");
        assert_eq!(router, "rs42-r8");
        assert_eq!(owner_pid(&router), Some(42));
        assert_eq!(owner_pid(&netns_name(42, 3, "node-a")), Some(42));
    }

    #[test]
    fn only_marked_unreachable_routes_in_our_ranges_have_an_owner() {
        assert_eq!(
            route_owner("unreachable", "198.19.7.0/24", Some(4242)),
            Some(4242)
        );
        assert_eq!(
            route_owner("unreachable", "fd12:3456:789a:1::/64", Some(7)),
            Some(7)
        );
        assert_eq!(route_owner("unicast", "198.19.7.0/24", Some(4242)), None);
        assert_eq!(route_owner("unreachable", "10.0.0.0/24", Some(4242)), None);
        assert_eq!(
            route_owner("unreachable", "2001:db8::/64", Some(4242)),
            None
        );
        assert_eq!(route_owner("unreachable", "198.19.7.0/24", None), None);
        assert_eq!(route_owner("unreachable", "198.19.7.0/24", Some(0)), None);
        assert_eq!(route_owner("unreachable", "default", Some(4242)), None);
    }

    #[test]
    fn too_long_link_names_are_refused() {
        assert!(link_name(LinkKind::Veth, 4_194_304, 10_000).is_err());
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "eth0",
            "rs",
            "rs-b1",
            "rs12",
            "rs12-",
            "rs12-x1",
            "rs12-b",
            "rs12-r",
            "rs12-rx",
            "rs12-bx",
            "rsa-b1",
            "rs12-3",
            "rs12-3-",
            "rs12-3-Node",
            "rsync-b1",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }

    #[test]
    fn hostnames_are_single_lowercase_labels() {
        assert!(check_hostname("node-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", "a b", "a;b", &"x".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(check_ifname("dummy0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
