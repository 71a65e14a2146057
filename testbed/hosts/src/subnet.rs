//! Choosing a run's private subnets: a random IPv4 /24 from the benchmarking
//! range 198.18.0.0/15 (RFC 2544, never routed on the internet) and a random
//! IPv6 ULA /64 (RFC 4193), both checked against every route and address on
//! the machine so concurrent runs and real networks do not collide.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng, RngExt};
use serde::Deserialize;

use super::error::HostsError;
use super::tool::ip_json;

/// Random IPv6 candidates tried before giving up (the space is 2^56).
const V6_ATTEMPTS: usize = 64;
/// IPv4 /24s in 198.18.0.0/15.
const V4_SUBNETS: u16 = 512;

/// The two subnets of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Subnets {
    pub(crate) v4: Ipv4Net,
    pub(crate) v6: Ipv6Net,
}

/// A random pair that overlaps none of `taken`. IPv4: every /24 of the
/// range is tried, from a random one on, so a free one is always found.
pub(crate) fn pick(rng: &mut impl Rng, taken: &[IpNet]) -> Option<Subnets> {
    let start: u16 = rng.random_range(0..V4_SUBNETS);
    let v4 = (0..V4_SUBNETS)
        .map(|i| v4_subnet((start + i) % V4_SUBNETS))
        .find(|c| !taken.iter().any(|t| overlaps(&IpNet::V4(*c), t)))?;
    let v6 = (0..V6_ATTEMPTS)
        .map(|_| v6_candidate(rng))
        .find(|c| !taken.iter().any(|t| overlaps(&IpNet::V6(*c), t)))?;
    Some(Subnets { v4, v6 })
}

/// The `n`th /24 of 198.18.0.0/15 (`n` < 512).
fn v4_subnet(n: u16) -> Ipv4Net {
    let [hi, lo] = n.to_be_bytes();
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18 + (hi & 1), lo, 0), 24)
}

fn v6_candidate(rng: &mut impl Rng) -> Ipv6Net {
    // fd00::/8, a 40-bit global id and a 16-bit subnet id, then the /64.
    let mut bits: u128 = rng.random::<u64>().into();
    bits &= (1 << 56) - 1;
    let addr = Ipv6Addr::from((0xfd_u128 << 120) | (bits << 64));
    Ipv6Net::new_assert(addr, 64)
}

/// Whether two prefixes share any address (one contains the other).
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[derive(Debug, Deserialize)]
struct RouteJson {
    dst: String,
}

#[derive(Debug, Deserialize)]
struct AddrLinkJson {
    #[serde(default)]
    addr_info: Vec<AddrInfoJson>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AddrInfoJson {
    pub(crate) local: Option<IpAddr>,
    pub(crate) prefixlen: Option<u8>,
}

/// Every prefix the root namespace routes or has an address in (all tables,
/// both families). Default routes are left out: they cover everything.
pub(crate) fn taken_prefixes() -> Result<Vec<IpNet>, HostsError> {
    let mut taken = Vec::new();
    for family in ["-4", "-6"] {
        let routes: Vec<RouteJson> = ip_json(&[family, "route", "show", "table", "all"])?;
        taken.extend(routes.iter().filter_map(|r| parse_dst(&r.dst)));
    }
    let links: Vec<AddrLinkJson> = ip_json(&["addr", "show"])?;
    for info in links.iter().flat_map(|l| &l.addr_info) {
        if let (Some(addr), Some(len)) = (info.local, info.prefixlen)
            && let Ok(net) = IpNet::new(addr, len)
        {
            taken.push(net.trunc());
        }
    }
    Ok(taken)
}

/// A route's `dst` as `ip -j` prints it: `default`, `a.b.c.d/len`, or a
/// bare address for a host route.
fn parse_dst(dst: &str) -> Option<IpNet> {
    if dst == "default" {
        return None;
    }
    dst.parse::<IpNet>()
        .ok()
        .or_else(|| dst.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A machine-wide lock held while a run picks its subnets and puts them on
/// its bridge, so two runs starting at once cannot pick the same ones.
#[derive(Debug)]
pub(crate) struct PickLock {
    _file: File,
}

impl PickLock {
    pub(crate) fn acquire() -> Result<Self, HostsError> {
        let dir = if std::path::Path::new("/run").is_dir() {
            PathBuf::from("/run")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join("rubber-stamp-hosts.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| HostsError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock()
            .map_err(|source| HostsError::Io { path, source })?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn picks_are_inside_the_test_ranges() {
        let mut rng = rng();
        let bench: Ipv4Net = "198.18.0.0/15".parse().expect("net");
        let ula: Ipv6Net = "fd00::/8".parse().expect("net");
        for _ in 0..1000 {
            let s = pick(&mut rng, &[]).expect("pick");
            assert!(bench.contains(&s.v4), "{}", s.v4);
            assert_eq!(s.v4.prefix_len(), 24);
            assert!(ula.contains(&s.v6), "{}", s.v6);
            assert_eq!(s.v6.prefix_len(), 64);
            assert_eq!(s.v6, s.v6.trunc());
        }
    }

    #[test]
    fn picks_avoid_taken_prefixes() {
        // Everything but 198.19.255.0/24 is taken for IPv4 …
        let mut taken: Vec<IpNet> = vec!["198.18.0.0/16".parse().expect("net")];
        taken.extend(
            (0..255).map(|i| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(198, 19, i, 0), 24))),
        );
        // … and a host route inside a /24 blocks that /24 too.
        taken.push("198.19.255.7/32".parse().expect("net"));
        let mut rng = rng();
        assert_eq!(pick(&mut rng, &taken), None, "no IPv4 subnet is left");
        taken.pop();
        let s = pick(&mut rng, &taken).expect("the one free /24");
        assert_eq!(s.v4, "198.19.255.0/24".parse::<Ipv4Net>().expect("net"));
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let a: IpNet = "198.18.5.0/24".parse().expect("net");
        assert!(overlaps(&a, &"198.18.0.0/16".parse().expect("net")));
        assert!(overlaps(&a, &"198.18.5.9/32".parse().expect("net")));
        assert!(!overlaps(&a, &"198.18.6.0/24".parse().expect("net")));
        assert!(!overlaps(&a, &"fd00::/8".parse().expect("net")));
    }

    #[test]
    fn route_destinations_parse_like_ip_prints_them() {
        assert_eq!(parse_dst("default"), None);
        assert_eq!(
            parse_dst("192.0.2.0/24"),
            Some("192.0.2.0/24".parse().expect("net"))
        );
        assert_eq!(
            parse_dst("fd00::2"),
            Some("fd00::2/128".parse().expect("net"))
        );
    }
}
