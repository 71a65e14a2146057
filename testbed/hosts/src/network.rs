//! The private network of one run (a bridge in the root namespace) and the
//! simulated hosts on it (a network + UTS namespace each, on a veth).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

use super::cleanup::{self, delete_link, delete_namespace, kill_namespace_processes};
use super::error::HostsError;
use super::names::{self, LinkKind, RUN_DIR_PREFIX, etc_dir};
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

/// Link types tried, in order, for [`Host::add_dummy`].
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

/// A private network with a bridge in the root namespace and simulated hosts
/// on it. Dropping it kills every process inside its hosts and removes the
/// namespaces, veths and the bridge (also while a test panics).
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
    bridge: String,
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
    bridge_created: bool,
    cleaned: bool,
}

// === impl Network ===

impl Network {
    /// Creates the bridge with a fresh random IPv4 /24 and IPv6 /64 (first
    /// sweeping leftovers of dead runs). Fails with
    /// [`HostsError::Unavailable`] when the machine cannot do it at all.
    pub fn new() -> Result<Self, HostsError> {
        let tools = tools()?;
        if let Err(e) = cleanup::sweep_stale() {
            eprintln!("simulated hosts: sweeping leftovers of dead runs failed: {e}");
        }
        let pid = std::process::id();
        let seq = names::next_seq();
        let bridge = names::link_name(LinkKind::Bridge, pid, seq)?;
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
                bridge,
                subnets,
                run_dir,
                state: Mutex::default(),
            }),
        };
        network.create_bridge()?;
        drop(lock);
        Ok(network)
    }

    /// A network with one host per name, in order.
    pub fn with_hosts(hostnames: &[&str]) -> Result<(Self, Vec<Host>), HostsError> {
        let network = Self::new()?;
        let hosts = hostnames
            .iter()
            .map(|h| network.add_host(h))
            .collect::<Result<_, _>>()?;
        Ok((network, hosts))
    }

    fn create_bridge(&self) -> Result<(), HostsError> {
        let s = &self.shared;
        let br = s.bridge.as_str();
        s.state().bridge_created = true;
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
        ip(&["addr", "add", &self.gateway_v4_net().to_string(), "dev", br])?;
        ip(&[
            "addr",
            "add",
            &self.gateway_v6_net().to_string(),
            "dev",
            br,
            "nodad",
        ])?;
        ip(&["link", "set", br, "up"])?;
        Ok(())
    }

    /// Adds a host: a network namespace `rs<pid>-<seq>-<hostname>` with `lo`
    /// up and `eth0` (a veth whose other end is on the bridge) holding the
    /// next free IPv4 and IPv6 address, default routes via the bridge, and
    /// `hostname` as the hostname of everything started in it.
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
        ip(&["link", "set", &veth, "master", &s.bridge, "up"])?;
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
        ip(&[
            "-n",
            ns,
            "-4",
            "route",
            "add",
            "default",
            "via",
            &self.gateway_v4().to_string(),
        ])?;
        ip(&[
            "-n",
            ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &self.gateway_v6().to_string(),
        ])?;
        Ok(host)
    }

    /// The bridge's name in the root namespace.
    pub fn bridge(&self) -> &str {
        &self.shared.bridge
    }

    /// The run's IPv4 subnet (a /24 in 198.18.0.0/15).
    pub fn ipv4_subnet(&self) -> Ipv4Net {
        self.shared.subnets.v4
    }

    /// The run's IPv6 subnet (a ULA /64).
    pub fn ipv6_subnet(&self) -> Ipv6Net {
        self.shared.subnets.v6
    }

    /// The bridge's IPv4 address (`.1`): the hosts' default gateway, where
    /// servers in the root namespace listen for hosts.
    pub fn gateway_v4(&self) -> Ipv4Addr {
        self.shared.v4_at(1)
    }

    /// The bridge's IPv6 address (`::1`).
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
    /// address in an IP-change scenario), with the subnet's prefix length.
    pub fn allocate_ipv4(&self) -> Result<Ipv4Net, HostsError> {
        let n = allocate(&mut self.shared.state().used_v4)?;
        Ok(Ipv4Net::new_assert(
            self.shared.v4_at(n),
            self.shared.subnets.v4.prefix_len(),
        ))
    }

    /// Reserves the next unused IPv6 address of the subnet.
    pub fn allocate_ipv6(&self) -> Result<Ipv6Net, HostsError> {
        let n = allocate(&mut self.shared.state().used_v6)?;
        Ok(Ipv6Net::new_assert(
            self.shared.v6_at(n),
            self.shared.subnets.v6.prefix_len(),
        ))
    }

    /// Adds another address of the run's IPv4 subnet to the bridge, for a
    /// second server in the root namespace that hosts must reach at an
    /// address of its own (e.g. a second approver replica on the same port).
    /// Removed with the bridge.
    pub fn add_root_address(&self) -> Result<Ipv4Net, HostsError> {
        let address = self.allocate_ipv4()?;
        ip(&[
            "addr",
            "add",
            &address.to_string(),
            "dev",
            &self.shared.bridge,
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
    /// bridge) and of every host.
    fn forget_neighbour(&self, addr: IpAddr) -> Result<(), HostsError> {
        let addr = addr.to_string();
        ip(&["neigh", "flush", "to", &addr, "dev", &self.bridge])?;
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

    fn v4_at(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnets.v4.network()) | n)
    }

    fn v6_at(&self, n: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnets.v6.network()) | u128::from(n))
    }

    /// Kills what runs in the hosts, deletes namespaces, veths and bridge,
    /// then removes or keeps the log directory. Runs once; keeps going past
    /// errors and returns the first.
    fn cleanup(&self) -> Result<(), HostsError> {
        let (hosts, bridge_created) = {
            let mut state = self.state();
            if state.cleaned {
                return Ok(());
            }
            state.cleaned = true;
            (std::mem::take(&mut state.hosts), state.bridge_created)
        };
        let mut results = Vec::new();
        for (netns, veth) in &hosts {
            results.push(kill_namespace_processes(netns).map(|_| ()));
            results.push(delete_namespace(netns));
            // Deleting the root end removes the pair at once, without waiting
            // for the kernel to tear the namespace down.
            results.push(delete_link(veth));
        }
        if bridge_created {
            results.push(delete_link(&self.bridge));
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

    /// The root-namespace end of the host's veth (a port of the bridge).
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
    pub fn add_address(&self, address: IpNet) -> Result<(), HostsError> {
        self.add_address_on(HOST_INTERFACE, address)?;
        self.shared.forget_neighbour(address.addr())
    }

    /// Removes an address from whichever interface of the host has it.
    pub fn remove_address(&self, address: IpNet) -> Result<(), HostsError> {
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
        ])
        .map(|_| ())
    }

    /// Adds a virtual interface named `name`, up, holding `address`: how root
    /// on a node would claim an address that is not really its own. The link
    /// type is `dummy` where the kernel has that driver, else `ifb` (another
    /// link-less device; some VM kernels ship without `dummy`); returns the
    /// type used.
    pub fn add_dummy(&self, name: &str, address: IpNet) -> Result<&'static str, HostsError> {
        names::check_ifname(name)?;
        let mut kind = DUMMY_KINDS[0];
        for (i, k) in DUMMY_KINDS.iter().enumerate() {
            kind = k;
            match ip(&["-n", &self.netns, "link", "add", name, "type", k]) {
                Ok(_) => break,
                Err(HostsError::Command { ref stderr, .. })
                    if stderr.contains("Unknown device type") && i + 1 < DUMMY_KINDS.len() => {}
                Err(e) => return Err(e),
            }
        }
        ip(&["-n", &self.netns, "link", "set", name, "up"])?;
        self.add_address_on(name, address)?;
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
