//! The private network of one run and the simulated hosts on it (a network + UTS
//! namespace each, on a veth). Two topologies ([`Topology`]): a shared bridge in the
//! root namespace, or a point-to-point link per host with the root namespace as the
//! router that delivers each address only to the host that owns it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

use super::cleanup::{
    self, delete_link, delete_namespace, delete_unreachable_route, kill_namespace_processes,
};
use super::error::HostsError;
use super::names::{self, LinkKind, ROUTE_PROTOCOL, RUN_DIR_PREFIX, etc_dir};
use super::process::HostProcess;
use super::subnet::{self, AddrInfoJson, PickLock};
use super::tool::{Tools, ip, ip_json, tools};

/// The name of a host's interface on the network, inside its namespace.
pub const HOST_INTERFACE: &str = "eth0";
/// Set to `1` to keep the per-run log directory even when nothing failed.
pub const KEEP_LOGS_ENV: &str = "RS_KEEP_HOST_LOGS";

/// Sets the UTS namespace's hostname, then runs the real command. `$0` is the
/// hostname, `"$@"` the command. Writing `/proc/sys/kernel/hostname` sets the
/// hostname of the writer's UTS namespace, like `hostname NAME` does.
const SET_HOSTNAME_THEN_EXEC: &str = r#"printf '%s' "$0" > /proc/sys/kernel/hostname && exec "$@""#;

/// Link types tried, in order, for [`Host::add_dummy`] and the routed topology's
/// address link in the root namespace.
const DUMMY_KINDS: &[&str] = &["dummy", "ifb"];

/// The host part of the first host address (bridge is `.1` / `::1`).
const FIRST_HOST: u32 = 2;
/// The last usable host part in the /24.
const LAST_HOST: u32 = 254;

/// One address on one interface, as `ip addr` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InterfaceAddress {
    /// The interface name (`eth0`, `lo`, `dummy0`, …).
    pub interface: String,
    /// The address with its prefix length.
    pub address: IpNet,
}

/// How the hosts of a [`Network`] are wired to the root namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Topology {
    /// One shared L2 segment: every host's veth is a port of a bridge in the root
    /// namespace, which holds the gateway addresses; hosts have the subnets' prefixes
    /// on `eth0` and reach each other directly. Whoever answers ARP (or neighbour
    /// discovery) for an address receives its traffic.
    #[default]
    Bridge,
    /// A point-to-point veth per host to the root namespace, which is the router: it
    /// routes each host's own addresses (`/32`, `/128`) to that host's link only, as a
    /// cloud VPC delivers an address only to the instance that owns it, and the rest
    /// of the subnets nowhere (`unreachable`: a connection fails at once and nothing
    /// leaves the machine). Hosts hold every address as `/32` or `/128` and reach
    /// the root namespace through the gateway; host to host needs the machine to
    /// forward, which the testbed leaves as it is.
    Routed,
}

impl Topology {
    /// `bridge` or `routed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Routed => "routed",
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Topology {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(Self::Bridge),
            "routed" => Ok(Self::Routed),
            other => Err(format!("unknown topology {other:?} (bridge or routed)")),
        }
    }
}

/// A private network with simulated hosts on it: a bridge in the root namespace
/// ([`Topology::Bridge`]) or one routed link per host ([`Topology::Routed`]). Dropping
/// it kills every process inside its hosts and removes the namespaces, veths, the
/// bridge or address link, and the routes it added (also while a test panics).
#[derive(Debug)]
pub struct Network {
    shared: Arc<Shared>,
}

/// One simulated host. Cheap to clone; it only names things the
/// [`Network`] owns, so it stops working once the network is dropped.
#[derive(Clone, Debug)]
pub struct Host {
    shared: Arc<Shared>,
    hostname: String,
    netns: String,
    veth: String,
    ipv4: Ipv4Net,
    ipv6: Ipv6Net,
}

#[derive(Debug)]
struct Shared {
    tools: &'static Tools,
    topology: Topology,
    /// The root namespace's link holding the gateway addresses: the bridge, or the
    /// routed topology's address link.
    root_link: String,
    subnets: subnet::Subnets,
    run_dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// (netns, root-side veth) of every host, for cleanup.
    hosts: Vec<(String, String)>,
    hostnames: BTreeSet<String>,
    used_v4: BTreeSet<u32>,
    used_v6: BTreeSet<u32>,
    root_link_created: bool,
    /// Routed: the `unreachable` routes added for the subnets, as (family, prefix).
    unreachable: Vec<(&'static str, String)>,
    /// Routed: each address the root namespace routes to a host, and that host's
    /// root-side veth.
    routed: BTreeMap<IpAddr, String>,
    cleaned: bool,
}

// === impl Network ===

impl Network {
    /// Creates the bridge with a fresh random IPv4 /24 and IPv6 /64 (first
    /// sweeping leftovers of dead runs). Fails with
    /// [`HostsError::Unavailable`] when the machine cannot do it at all.
    pub fn new() -> Result<Self, HostsError> {
        Self::with_topology(Topology::Bridge)
    }

    /// Creates a network of `topology` with a fresh random IPv4 /24 and IPv6 /64:
    /// the bridge, or the routed topology's address link (holding the gateway
    /// addresses) and the `unreachable` routes for both subnets.
    pub fn with_topology(topology: Topology) -> Result<Self, HostsError> {
        let tools = tools()?;
        if let Err(e) = cleanup::sweep_stale() {
            eprintln!("simulated hosts: sweeping leftovers of dead runs failed: {e}");
        }
        let pid = std::process::id();
        let seq = names::next_seq();
        let kind = match topology {
            Topology::Bridge => LinkKind::Bridge,
            Topology::Routed => LinkKind::Router,
        };
        let root_link = names::link_name(kind, pid, seq)?;
        let run_dir = tempfile::Builder::new()
            .prefix(&format!("{RUN_DIR_PREFIX}{pid}-{seq}-"))
            .tempdir()
            .map_err(|source| HostsError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        let lock = PickLock::acquire()?;
        let taken = subnet::taken_prefixes()?;
        let subnets = subnet::pick(&mut rand::rng(), &taken).ok_or(HostsError::Exhausted {
            what: "subnet in 198.18.0.0/15 or fd00::/8",
        })?;
        let network = Self {
            shared: Arc::new(Shared {
                tools,
                topology,
                root_link,
                subnets,
                run_dir,
                state: Mutex::default(),
            }),
        };
        match topology {
            Topology::Bridge => network.create_bridge()?,
            Topology::Routed => network.create_router()?,
        }
        drop(lock);
        Ok(network)
    }

    /// A bridge network with one host per name, in order.
    pub fn with_hosts(hostnames: &[&str]) -> Result<(Self, Vec<Host>), HostsError> {
        Self::with_hosts_on(Topology::Bridge, hostnames)
    }

    /// A network of `topology` with one host per name, in order.
    pub fn with_hosts_on(
        topology: Topology,
        hostnames: &[&str],
    ) -> Result<(Self, Vec<Host>), HostsError> {
        let network = Self::with_topology(topology)?;
        let hosts = hostnames
            .iter()
            .map(|h| network.add_host(h))
            .collect::<Result<_, _>>()?;
        Ok((network, hosts))
    }

    fn create_bridge(&self) -> Result<(), HostsError> {
        let s = &self.shared;
        let br = s.root_link.as_str();
        s.state().root_link_created = true;
        // Bridged traffic between hosts skips the root namespace's firewall.
        ip(&[
            "link",
            "add",
            br,
            "type",
            "bridge",
            "nf_call_iptables",
            "0",
            "nf_call_ip6tables",
            "0",
            "nf_call_arptables",
            "0",
        ])?;
        // A bridge without an address of its own takes the lowest MAC of its
        // ports, so adding a host could change it, and hosts that cached the
        // old one would lose the root namespace's addresses until their ARP
        // entries expire. A fixed, locally administered address never moves.
        ip(&["link", "set", br, "address", &bridge_mac()])?;
        add_gateway_addresses(br, &self.gateway_v4_net(), &self.gateway_v6_net())?;
        ip(&["link", "set", br, "up"])?;
        Ok(())
    }

    /// The routed topology's root side before any host: a link-less link holding the
    /// gateway addresses as `/32` and `/128` (so servers can listen on them before a
    /// host exists, and every host's link gets them too), and `unreachable` routes for
    /// both subnets, marked as ours (protocol 77, our PID as metric) so a sweep finds
    /// them after a SIGKILL. More specific `/32` and `/128` routes to each host's link
    /// override them for the addresses hosts own.
    fn create_router(&self) -> Result<(), HostsError> {
        let s = &self.shared;
        let link = s.root_link.as_str();
        s.state().root_link_created = true;
        add_linkless(None, link)?;
        ip(&["link", "set", link, "up"])?;
        add_gateway_addresses(link, &self.gateway_v4(), &self.gateway_v6())?;
        let proto = ROUTE_PROTOCOL.to_string();
        let metric = std::process::id().to_string();
        for (family, subnet) in [
            ("-4", IpNet::V4(s.subnets.v4)),
            ("-6", IpNet::V6(s.subnets.v6)),
        ] {
            let dst = subnet.to_string();
            s.state().unreachable.push((family, dst.clone()));
            ip(&[
                family,
                "route",
                "add",
                "unreachable",
                &dst,
                "proto",
                &proto,
                "metric",
                &metric,
            ])?;
        }
        Ok(())
    }

    /// Adds a host: a network namespace `rs<pid>-<seq>-<hostname>` with `lo`
    /// up and `eth0` (a veth whose other end is on the bridge, or in the routed
    /// topology the host's own link to the root namespace) holding the next free
    /// IPv4 and IPv6 address, default routes via the gateway, and `hostname` as
    /// the hostname of everything started in it.
    ///
    /// Routed: the root end of the veth gets the gateway addresses too (`/32`,
    /// `/128`: the host's neighbour on its link), the host gets its addresses as
    /// `/32` and `/128` with a link route to the gateway, and the root namespace
    /// routes the host's addresses to this link.
    pub fn add_host(&self, hostname: &str) -> Result<Host, HostsError> {
        names::check_hostname(hostname)?;
        let s = &self.shared;
        let pid = std::process::id();
        let seq = names::next_seq();
        let netns = names::netns_name(pid, seq, hostname);
        let veth = names::link_name(LinkKind::Veth, pid, seq)?;
        {
            let mut state = s.state();
            if state.cleaned {
                return Err(HostsError::Address {
                    address: hostname.to_owned(),
                    reason: "the network has been removed".into(),
                });
            }
            if !state.hostnames.insert(hostname.to_owned()) {
                return Err(HostsError::InvalidName {
                    what: "hostname",
                    value: hostname.to_owned(),
                    reason: "already used by another host on this network",
                });
            }
            state.hosts.push((netns.clone(), veth.clone()));
        }
        let ipv4 = self.allocate_ipv4()?;
        let ipv6 = self.allocate_ipv6()?;
        let ns = netns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            HOST_INTERFACE,
            "netns",
            ns,
        ])?;
        match s.topology {
            Topology::Bridge => {
                ip(&["link", "set", &veth, "master", &s.root_link, "up"])?;
            }
            Topology::Routed => {
                ip(&["link", "set", &veth, "up"])?;
                add_gateway_addresses(&veth, &self.gateway_v4(), &self.gateway_v6())?;
            }
        };
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "set", HOST_INTERFACE, "up"])?;
        let host = Host {
            shared: Arc::clone(s),
            hostname: hostname.to_owned(),
            netns: netns.clone(),
            veth: veth.clone(),
            ipv4,
            ipv6,
        };
        host.add_address(IpNet::V4(ipv4))?;
        host.add_address(IpNet::V6(ipv6))?;
        let gateways = [
            ("-4", self.gateway_v4().to_string()),
            ("-6", self.gateway_v6().to_string()),
        ];
        for (family, gateway) in &gateways {
            if s.topology == Topology::Routed {
                // No prefix on eth0 covers the gateway: say it is on this link.
                ip(&[
                    "-n",
                    ns,
                    family,
                    "route",
                    "add",
                    gateway,
                    "dev",
                    HOST_INTERFACE,
                    "scope",
                    "link",
                ])?;
            }
            ip(&[
                "-n",
                ns,
                family,
                "route",
                "add",
                "default",
                "via",
                gateway,
                "dev",
                HOST_INTERFACE,
            ])?;
        }
        Ok(host)
    }

    /// How the hosts are wired.
    pub fn topology(&self) -> Topology {
        self.shared.topology
    }

    /// The root namespace's link that holds the gateway addresses: the bridge
    /// ([`Topology::Bridge`]) or the routed topology's address link, a link-less
    /// `dummy` (or `ifb`) named `rs<pid>-r<n>`. The same as [`gateway_link`](Self::gateway_link).
    pub fn bridge(&self) -> &str {
        &self.shared.root_link
    }

    /// The root namespace's link that holds the gateway addresses (see [`bridge`](Self::bridge)).
    pub fn gateway_link(&self) -> &str {
        &self.shared.root_link
    }

    /// The run's IPv4 subnet (a /24 in 198.18.0.0/15).
    pub fn ipv4_subnet(&self) -> Ipv4Net {
        self.shared.subnets.v4
    }

    /// The run's IPv6 subnet (a ULA /64).
    pub fn ipv6_subnet(&self) -> Ipv6Net {
        self.shared.subnets.v6
    }

    /// The gateway's IPv4 address (`.1`, on the bridge or, routed, on the address
    /// link and every host's link): the hosts' default gateway, where servers in the
    /// root namespace listen for hosts.
    pub fn gateway_v4(&self) -> Ipv4Addr {
        self.shared.v4_at(1)
    }

    /// The gateway's IPv6 address (`::1`).
    pub fn gateway_v6(&self) -> Ipv6Addr {
        self.shared.v6_at(1)
    }

    fn gateway_v4_net(&self) -> Ipv4Net {
        Ipv4Net::new_assert(self.gateway_v4(), self.shared.subnets.v4.prefix_len())
    }

    fn gateway_v6_net(&self) -> Ipv6Net {
        Ipv6Net::new_assert(self.gateway_v6(), self.shared.subnets.v6.prefix_len())
    }

    /// Reserves the next unused IPv4 address of the subnet (for a host's new
    /// address in an IP-change scenario), with the prefix length a host holds it
    /// with: the subnet's (bridge) or `/32` (routed).
    pub fn allocate_ipv4(&self) -> Result<Ipv4Net, HostsError> {
        let n = allocate(&mut self.shared.state().used_v4)?;
        Ok(Ipv4Net::new_assert(
            self.shared.v4_at(n),
            self.shared.host_prefix(IpNet::V4(self.shared.subnets.v4)),
        ))
    }

    /// Reserves the next unused IPv6 address of the subnet, with the subnet's
    /// prefix length (bridge) or `/128` (routed).
    pub fn allocate_ipv6(&self) -> Result<Ipv6Net, HostsError> {
        let n = allocate(&mut self.shared.state().used_v6)?;
        Ok(Ipv6Net::new_assert(
            self.shared.v6_at(n),
            self.shared.host_prefix(IpNet::V6(self.shared.subnets.v6)),
        ))
    }

    /// Adds another address of the run's IPv4 subnet to the root namespace's
    /// gateway link (the bridge, or routed the address link, as `/32`), for a
    /// second server in the root namespace that hosts must reach at an
    /// address of its own (e.g. a second approver replica on the same port).
    /// Removed with that link.
    pub fn add_root_address(&self) -> Result<Ipv4Net, HostsError> {
        let address = self.allocate_ipv4()?;
        ip(&[
            "addr",
            "add",
            &address.to_string(),
            "dev",
            &self.shared.root_link,
        ])?;
        Ok(address)
    }

    /// The directory holding every process's stdout/stderr. Removed on drop
    /// unless a panic is unwinding or `RS_KEEP_HOST_LOGS=1`.
    pub fn run_dir(&self) -> &Path {
        &self.shared.run_dir
    }

    /// Starts a process in the root namespace with the same care as
    /// [`Host::spawn`] (own process group, output in [`run_dir`](Self::run_dir),
    /// killed on drop): for the approver and the API server.
    pub fn spawn_root(&self, label: &str, cmd: &Command) -> Result<HostProcess, HostsError> {
        let mut copy = Command::new(cmd.get_program());
        copy.args(cmd.get_args());
        carry_over(cmd, &mut copy);
        HostProcess::spawn(label, copy, &self.shared.run_dir)
    }

    /// Removes everything now and reports the first error (`Drop` does the
    /// same but can only print errors).
    pub fn close(self) -> Result<(), HostsError> {
        self.shared.cleanup()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = self.shared.cleanup() {
            eprintln!("simulated hosts: cleanup failed: {e}");
        }
    }
}

/// Copies environment changes and the working directory of `from` to `to`.
fn carry_over(from: &Command, to: &mut Command) {
    for (key, value) in from.get_envs() {
        match value {
            Some(v) => to.env(key, v),
            None => to.env_remove(key),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

/// Adds a link-less link `name` (in `netns`, or the root namespace): `dummy`
/// where the kernel has that driver, else `ifb`; returns the type used.
/// Puts the gateway addresses on a root-namespace link: `v4`, and `v6` without duplicate
/// address detection (the same gateway address stands on every link of a routed network).
fn add_gateway_addresses(
    dev: &str,
    v4: &dyn std::fmt::Display,
    v6: &dyn std::fmt::Display,
) -> Result<(), HostsError> {
    ip(&["addr", "add", &v4.to_string(), "dev", dev])?;
    ip(&["addr", "add", &v6.to_string(), "dev", dev, "nodad"])?;
    Ok(())
}

fn add_linkless(netns: Option<&str>, name: &str) -> Result<&'static str, HostsError> {
    for (i, kind) in DUMMY_KINDS.iter().enumerate() {
        let mut args = Vec::new();
        if let Some(ns) = netns {
            args.extend(["-n", ns]);
        }
        args.extend(["link", "add", name, "type", kind]);
        match ip(&args) {
            Ok(_) => return Ok(kind),
            Err(HostsError::Command { ref stderr, .. })
                if stderr.contains("Unknown device type") && i + 1 < DUMMY_KINDS.len() => {}
            Err(e) => return Err(e),
        }
    }
    Err(HostsError::Exhausted {
        what: "link-less link types (dummy, ifb)",
    })
}

/// A random locally administered unicast MAC address.
fn bridge_mac() -> String {
    let mut b: [u8; 6] = rand::random();
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn allocate(used: &mut BTreeSet<u32>) -> Result<u32, HostsError> {
    let n = (FIRST_HOST..=LAST_HOST)
        .find(|n| !used.contains(n))
        .ok_or(HostsError::Exhausted {
            what: "host address in the run's subnet",
        })?;
    used.insert(n);
    Ok(n)
}

// === impl Shared ===

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes `addr` from the neighbour caches of the root namespace (on the
    /// bridge; routed: on every link) and of every host.
    fn forget_neighbour(&self, addr: IpAddr) -> Result<(), HostsError> {
        let addr = addr.to_string();
        match self.topology {
            Topology::Bridge => ip(&["neigh", "flush", "to", &addr, "dev", &self.root_link])?,
            Topology::Routed => ip(&["neigh", "flush", "to", &addr])?,
        };
        let namespaces: Vec<String> = self
            .state()
            .hosts
            .iter()
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in namespaces {
            ip(&["-n", &ns, "neigh", "flush", "to", &addr])?;
        }
        Ok(())
    }

    /// The prefix length a host holds an address of `subnet`'s family with: the
    /// subnet's on the bridge, a single address (`/32`, `/128`) when routed.
    fn host_prefix(&self, subnet: IpNet) -> u8 {
        match self.topology {
            Topology::Bridge => subnet.prefix_len(),
            Topology::Routed => subnet.max_prefix_len(),
        }
    }

    /// `address` as a host holds it: unchanged on the bridge; routed, alone
    /// (`/32`, `/128`), since a routed host has no subnet prefix on any interface.
    fn host_net(&self, address: IpNet) -> IpNet {
        match self.topology {
            Topology::Bridge => address,
            Topology::Routed => IpNet::from(address.addr()),
        }
    }

    /// Routed: makes the root namespace deliver `addr` to the host behind `veth`
    /// (replacing any route to another host).
    fn route_to(&self, addr: IpAddr, veth: &str) -> Result<(), HostsError> {
        let dst = IpNet::from(addr).to_string();
        ip(&["route", "replace", &dst, "dev", veth])?;
        self.state().routed.insert(addr, veth.to_owned());
        Ok(())
    }

    /// Routed: stops delivering `addr` to the host behind `veth`, if it was.
    fn unroute(&self, addr: IpAddr, veth: &str) -> Result<(), HostsError> {
        {
            let mut state = self.state();
            if state.routed.get(&addr).map(String::as_str) != Some(veth) {
                return Ok(());
            }
            state.routed.remove(&addr);
        }
        let dst = IpNet::from(addr).to_string();
        ip(&["route", "del", &dst, "dev", veth]).map(|_| ())
    }

    fn v4_at(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnets.v4.network()) | n)
    }

    fn v6_at(&self, n: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnets.v6.network()) | u128::from(n))
    }

    /// Kills what runs in the hosts, deletes namespaces, veths (with them the
    /// routes to hosts), the `unreachable` routes and the bridge or address link,
    /// then removes or keeps the log directory. Runs once; keeps going past
    /// errors and returns the first.
    fn cleanup(&self) -> Result<(), HostsError> {
        let (hosts, unreachable, root_link_created) = {
            let mut state = self.state();
            if state.cleaned {
                return Ok(());
            }
            state.cleaned = true;
            state.routed.clear();
            (
                std::mem::take(&mut state.hosts),
                std::mem::take(&mut state.unreachable),
                state.root_link_created,
            )
        };
        let mut results = Vec::new();
        for (netns, veth) in &hosts {
            results.push(kill_namespace_processes(netns).map(|_| ()));
            results.push(delete_namespace(netns));
            // Deleting the root end removes the pair at once, without waiting
            // for the kernel to tear the namespace down.
            results.push(delete_link(veth));
        }
        let pid = std::process::id();
        for (family, dst) in &unreachable {
            results.push(delete_unreachable_route(family, dst, pid));
        }
        if root_link_created {
            results.push(delete_link(&self.root_link));
        }
        let mut first_error = results.into_iter().find_map(Result::err);
        let keep = std::thread::panicking()
            || std::env::var(KEEP_LOGS_ENV).is_ok_and(|v| v == "1")
            || first_error.is_some();
        if keep {
            eprintln!("simulated hosts: logs kept in {}", self.run_dir.display());
        } else if let Err(source) = std::fs::remove_dir_all(&self.run_dir) {
            first_error = Some(HostsError::Io {
                path: self.run_dir.clone(),
                source,
            });
        }
        first_error.map_or(Ok(()), Err)
    }
}

// === impl Host ===

#[derive(Debug, Deserialize)]
struct AddrLinkJson {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfoJson>,
}

impl Host {
    /// The hostname processes in this host see.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The network namespace's name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The root-namespace end of the host's veth (a port of the bridge; routed, the
    /// router's link to this host).
    pub fn bridge_port(&self) -> &str {
        &self.veth
    }

    /// The IPv4 address the host was created with.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4.addr()
    }

    /// The IPv6 address the host was created with.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6.addr()
    }

    /// Both addresses the host was created with, with prefix lengths.
    pub fn initial_addresses(&self) -> [IpNet; 2] {
        [IpNet::V4(self.ipv4), IpNet::V6(self.ipv6)]
    }

    /// Every address on every interface of the host, as the kernel has them
    /// now (including `lo` and IPv6 link-local), sorted.
    pub fn addresses(&self) -> Result<Vec<InterfaceAddress>, HostsError> {
        let links: Vec<AddrLinkJson> = ip_json(&["-n", &self.netns, "addr", "show"])?;
        let mut out: Vec<InterfaceAddress> = links
            .into_iter()
            .flat_map(|l| {
                let name = l.ifname;
                l.addr_info.into_iter().filter_map(move |a| {
                    let net = IpNet::new(a.local?, a.prefixlen?).ok()?;
                    Some(InterfaceAddress {
                        interface: name.clone(),
                        address: net,
                    })
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Adds an address (with prefix length) to `eth0`; IPv6 addresses skip
    /// duplicate address detection so they are usable at once. Neighbour
    /// caches on the network forget the address (what a gratuitous ARP would
    /// do), so an address that moved here is reached here at once.
    ///
    /// Routed: the host holds it as `/32` or `/128` whatever the prefix given, and
    /// the root namespace routes it to this host's link (from whichever host it was
    /// routed to before): this is what makes an address this host's.
    pub fn add_address(&self, address: IpNet) -> Result<(), HostsError> {
        let address = self.shared.host_net(address);
        self.add_address_on(HOST_INTERFACE, address)?;
        if self.shared.topology == Topology::Routed {
            self.shared.route_to(address.addr(), &self.veth)?;
        }
        self.shared.forget_neighbour(address.addr())
    }

    /// Removes an address from whichever interface of the host has it (routed:
    /// compared as `/32` or `/128`, and no longer routed to this host).
    pub fn remove_address(&self, address: IpNet) -> Result<(), HostsError> {
        let address = self.shared.host_net(address);
        let iface = self
            .addresses()?
            .into_iter()
            .find(|a| a.address == address)
            .map(|a| a.interface)
            .ok_or_else(|| HostsError::Address {
                address: address.to_string(),
                reason: format!("not on host {}", self.hostname),
            })?;
        ip(&[
            "-n",
            &self.netns,
            "addr",
            "del",
            &address.to_string(),
            "dev",
            &iface,
        ])?;
        if self.shared.topology == Topology::Routed && iface == HOST_INTERFACE {
            self.shared.unroute(address.addr(), &self.veth)?;
        }
        Ok(())
    }

    /// Adds a virtual interface named `name`, up, holding `address`: how root
    /// on a node would claim an address that is not really its own. The link
    /// type is `dummy` where the kernel has that driver, else `ifb` (another
    /// link-less device; some VM kernels ship without `dummy`); returns the
    /// type used.
    ///
    /// Routed: the address is held as `/32` or `/128` (no subnet route that would
    /// swallow the host's traffic to the root namespace), and nothing routes it
    /// here: the root namespace keeps delivering it to its owner, or nowhere.
    pub fn add_dummy(&self, name: &str, address: IpNet) -> Result<&'static str, HostsError> {
        names::check_ifname(name)?;
        let kind = add_linkless(Some(&self.netns), name)?;
        ip(&["-n", &self.netns, "link", "set", name, "up"])?;
        self.add_address_on(name, self.shared.host_net(address))?;
        Ok(kind)
    }

    /// Adds `address` to the host's loopback interface: where a simulated host serves
    /// something only it reaches, such as a cloud's instance metadata service at
    /// 169.254.169.254.
    pub fn add_loopback_address(&self, address: IpNet) -> Result<(), HostsError> {
        self.add_address_on("lo", address)
    }

    /// Moves `address` from this host to `to` (onto its `eth0`): an IP that
    /// changes machines.
    pub fn move_address_to(&self, address: IpNet, to: &Host) -> Result<(), HostsError> {
        self.remove_address(address)?;
        to.add_address(address)
    }

    fn add_address_on(&self, iface: &str, address: IpNet) -> Result<(), HostsError> {
        let addr = address.to_string();
        let mut args = vec!["-n", &self.netns, "addr", "add", &addr, "dev", iface];
        if matches!(address, IpNet::V6(_)) {
            args.push("nodad");
        }
        ip(&args).map(|_| ())
    }

    /// The command that runs `cmd` inside this host: in its network
    /// namespace (through `ip netns exec`, which also mounts a `/sys` showing
    /// only this namespace's interfaces, which sysinfo reads) and in a new UTS
    /// namespace carrying the host's hostname. Program, arguments,
    /// environment changes and working directory carry over; stdio does not.
    pub fn command(&self, cmd: &Command) -> Command {
        self.command_as(cmd, &self.hostname)
    }

    /// [`command`](Self::command), with `hostname` as the UTS hostname the command
    /// sees instead of the host's own: what root on a node gets by renaming it.
    pub fn command_as(&self, cmd: &Command, hostname: &str) -> Command {
        let t = self.shared.tools;
        let mut wrapped = Command::new(&t.ip);
        wrapped
            .arg("netns")
            .arg("exec")
            .arg(&self.netns)
            .arg(&t.unshare)
            .arg("--uts")
            .arg("--")
            .arg(&t.sh)
            .arg("-c")
            .arg(SET_HOSTNAME_THEN_EXEC)
            .arg(hostname)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        carry_over(cmd, &mut wrapped);
        wrapped
    }

    /// Starts `cmd` inside the host (see [`command`](Self::command)) in its
    /// own process group, output captured under the network's run directory,
    /// killed with its group when the handle is dropped.
    pub fn spawn(&self, label: &str, cmd: &Command) -> Result<HostProcess, HostsError> {
        self.spawn_as(label, cmd, &self.hostname)
    }

    /// [`spawn`](Self::spawn) with `hostname` as the process's UTS hostname
    /// (see [`command_as`](Self::command_as)).
    pub fn spawn_as(
        &self,
        label: &str,
        cmd: &Command,
        hostname: &str,
    ) -> Result<HostProcess, HostsError> {
        let label = format!("{}-{label}", self.hostname);
        HostProcess::spawn(&label, self.command_as(cmd, hostname), &self.shared.run_dir)
    }

    /// Runs `cmd` inside the host to completion (at most `timeout`, then it
    /// is killed) and returns its status and output.
    pub async fn run(&self, cmd: &Command, timeout: Duration) -> Result<Output, HostsError> {
        let mut process = self.spawn("run", cmd)?;
        let status = process.wait(timeout).await?;
        Ok(Output {
            status,
            stdout: std::fs::read(process.stdout_path()).map_err(|source| HostsError::Io {
                path: process.stdout_path().to_owned(),
                source,
            })?,
            stderr: std::fs::read(process.stderr_path()).map_err(|source| HostsError::Io {
                path: process.stderr_path().to_owned(),
                source,
            })?,
        })
    }

    /// Gives the host its own `/etc/hosts`: `localhost` plus `entries`
    /// (address, names). Written to `/etc/netns/<netns>/hosts`, which `ip
    /// netns exec` bind-mounts over `/etc/hosts` for every process started
    /// afterwards (so name resolution through `getaddrinfo` sees it, as a
    /// cluster DNS name would resolve on a real node). Removed with the
    /// namespace, also by [`sweep_stale`](super::sweep_stale).
    pub fn set_hosts_file(&self, entries: &[(IpAddr, &str)]) -> Result<PathBuf, HostsError> {
        let dir = etc_dir(&self.netns);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| HostsError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut text = format!(
            "127.0.0.1\tlocalhost {0}\n::1\tlocalhost {0}\n",
            self.hostname
        );
        for (address, names) in entries {
            text.push_str(&format!("{address}\t{names}\n"));
        }
        let path = dir.join("hosts");
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(path)
    }

    /// Sets a sysctl of the host's network namespace, `key` as a path under
    /// `/proc/sys` (e.g. `net/ipv4/conf/all/arp_ignore`).
    pub async fn set_sysctl(&self, key: &str, value: &str) -> Result<(), HostsError> {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|part| part.is_empty() || part == "..")
        {
            return Err(HostsError::InvalidName {
                what: "sysctl key",
                value: key.to_owned(),
                reason: "must be a relative path under /proc/sys without `..`",
            });
        }
        let mut write = Command::new(&self.shared.tools.sh);
        write
            .arg("-c")
            .arg(r#"printf '%s' "$1" > "/proc/sys/$0""#)
            .arg(key)
            .arg(value);
        let output = self.run(&write, Duration::from_secs(5)).await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(HostsError::Command {
                command: format!("sysctl {key}={value} in {}", self.netns),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Whether `ip` is on any interface of this host right now.
    pub fn has_address(&self, ip: IpAddr) -> Result<bool, HostsError> {
        Ok(self.addresses()?.iter().any(|a| a.address.addr() == ip))
    }
}
