//! The routed topology: every host on its own link to the root namespace, which
//! delivers each address only to the host that owns it (a squatter's copy on a dummy
//! interface receives nothing), fails at once for addresses nobody owns, follows an
//! address that moves, and leaves nothing behind.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use rubber_stamp_hosts::{self as hosts, Network, Topology};
use tokio::net::TcpStream;

use crate::network::{
    facts, is_link_local, root_echo, root_echo_server, run_probe, start_host_echo,
};

/// How long a connection to an address nobody owns may take to fail: a route
/// lookup, not a SYN retransmission (the first of which comes after 1 s).
const FAIL_FAST: Duration = Duration::from_millis(900);

/// The port `start_host_echo` listens on.
const ECHO_PORT: u16 = 7000;

/// Connects from the root namespace and returns how the attempt ended, or panics
/// if it neither connected nor failed within [`FAIL_FAST`].
async fn connect_outcome(addr: SocketAddr) -> std::io::Result<TcpStream> {
    tokio::time::timeout(FAIL_FAST, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| {
            panic!("connecting to {addr} neither failed nor succeeded in {FAIL_FAST:?}: it hangs")
        })
}

/// Asserts that a connection to `addr` fails at once because nothing routes it.
async fn assert_unreachable(addr: SocketAddr) {
    match connect_outcome(addr).await {
        Ok(_) => panic!("{addr} was reached"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable
            ),
            "{addr}: {e} ({:?}), expected no route",
            e.kind()
        ),
    }
}

/// Every route of the main table inside `prefix` (both families), as `ip` prints them.
fn routes_within(prefix: IpNet) -> Vec<String> {
    let family = if prefix.addr().is_ipv4() { "-4" } else { "-6" };
    let out = Command::new("ip")
        .args([family, "route", "show", "table", "main", "root"])
        .arg(prefix.to_string())
        .output()
        .expect("ip route");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .expect("ip link")
        .status
        .success()
}

#[tokio::test]
async fn routed_delivers_an_address_only_to_its_owner_even_when_another_host_claims_it() {
    if !hosts::available_or_skip("routed_delivers_an_address_only_to_its_owner") {
        return;
    }
    let _shared = crate::shared().await;
    let (net, hosts) =
        Network::with_hosts_on(Topology::Routed, &["owner", "squatter"]).expect("network");
    assert_eq!(net.topology(), Topology::Routed);
    let (owner, squatter) = (&hosts[0], &hosts[1]);

    // The squatter puts both of the owner's addresses on a dummy interface, as the
    // sandbox's squatter does; it holds them (its agent would attest them)…
    let stolen = owner.initial_addresses();
    let kind = squatter.add_dummy("dummy0", stolen[0]).expect("dummy v4");
    assert!(["dummy", "ifb"].contains(&kind));
    squatter.add_dummy("dummy1", stolen[1]).expect("dummy v6");
    for a in stolen {
        assert!(squatter.has_address(a.addr()).expect("list"), "{a}");
    }
    let _echo_owner = start_host_echo(owner).await;
    let _echo_squatter = start_host_echo(squatter).await;

    // … but the root namespace, the router, delivers them to the owner only.
    for a in stolen {
        let reply = root_echo(SocketAddr::new(a.addr(), ECHO_PORT), "probe").await;
        let gateway: IpAddr = match a {
            IpNet::V4(_) => net.gateway_v4().into(),
            IpNet::V6(_) => net.gateway_v6().into(),
        };
        assert_eq!(
            reply,
            format!("host=owner peer={gateway} local={} echo=probe", a.addr()),
            "{a} reached its owner, from the gateway"
        );
    }
    // The squatter's own addresses reach the squatter.
    for a in squatter.initial_addresses() {
        let reply = root_echo(SocketAddr::new(a.addr(), ECHO_PORT), "own").await;
        assert!(reply.starts_with("host=squatter "), "{reply}");
    }

    // Hosts reach the root namespace at the gateway and at a second root address,
    // which sees each host's own address (peer binding depends on it).
    let second = net.add_root_address().expect("root address");
    assert_eq!(second.prefix_len(), 32, "routed root addresses are single");
    let servers = [
        root_echo_server(net.gateway_v4().into()).await,
        root_echo_server(net.gateway_v6().into()).await,
        root_echo_server(second.addr().into()).await,
    ];
    for host in [owner, squatter] {
        for server in servers {
            let own = if server.is_ipv4() {
                IpAddr::V4(host.ipv4())
            } else {
                IpAddr::V6(host.ipv6())
            };
            let reply = run_probe(host, &["echo", &server.to_string(), "up"]).await;
            assert_eq!(
                reply,
                format!("peer={own} echo=up"),
                "{} to {server}",
                host.hostname()
            );
        }
    }

    // A routed host holds each address alone (/32, /128) on eth0, as sysinfo reads it.
    let facts = facts(owner).await;
    let names: Vec<&str> = facts.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0", "lo"]);
    let global: BTreeSet<IpNet> = facts.interfaces[0]
        .addresses
        .iter()
        .copied()
        .filter(|a| !is_link_local(a.addr()))
        .collect();
    assert_eq!(global, BTreeSet::from(owner.initial_addresses()));
    assert!(
        global.iter().all(|a| a.prefix_len() == a.max_prefix_len()),
        "{global:?}"
    );
}

#[tokio::test]
async fn routed_unowned_addresses_fail_fast_and_a_moved_address_follows_its_host() {
    if !hosts::available_or_skip("routed_unowned_addresses_fail_fast") {
        return;
    }
    let _shared = crate::shared().await;
    let (net, hosts) =
        Network::with_hosts_on(Topology::Routed, &["first", "second"]).expect("network");
    let (a, b) = (&hosts[0], &hosts[1]);
    let _echo_a = start_host_echo(a).await;
    let _echo_b = start_host_echo(b).await;

    // Addresses of the node subnets that nobody owns: no route, at once, and
    // nothing leaves the machine (the subnets' routes are `unreachable`).
    let free_v4 = net.allocate_ipv4().expect("allocate v4");
    let free_v6 = net.allocate_ipv6().expect("allocate v6");
    assert_eq!((free_v4.prefix_len(), free_v6.prefix_len()), (32, 128));
    for ip in [IpAddr::V4(free_v4.addr()), IpAddr::V6(free_v6.addr())] {
        assert_unreachable(SocketAddr::new(ip, ECHO_PORT)).await;
    }

    // Owned, it is reached at its owner; moved, at its new owner; removed, nowhere.
    let extra = IpNet::V4(free_v4);
    a.add_address(extra).expect("add");
    let at = SocketAddr::new(extra.addr(), ECHO_PORT);
    assert!(root_echo(at, "1").await.starts_with("host=first "));
    a.move_address_to(extra, b).expect("move");
    assert!(!a.has_address(extra.addr()).expect("list a"));
    assert!(root_echo(at, "2").await.starts_with("host=second "));
    b.remove_address(extra).expect("remove");
    assert_unreachable(at).await;
    // Given with the subnet's prefix, an address is still held alone.
    let with_prefix = IpNet::new(free_v6.addr().into(), 64).expect("net");
    b.add_address(with_prefix).expect("add /64");
    assert!(
        b.addresses()
            .expect("addresses")
            .iter()
            .any(|i| i.interface == "eth0" && i.address == IpNet::V6(free_v6)),
        "held as /128"
    );
    let reply = root_echo(SocketAddr::new(free_v6.addr().into(), ECHO_PORT), "3").await;
    assert!(reply.starts_with("host=second "), "{reply}");
    b.remove_address(with_prefix).expect("remove /64 as given");
}

#[test]
fn dropping_a_routed_network_removes_its_links_namespaces_and_routes() {
    if !hosts::available_or_skip("dropping_a_routed_network_removes_everything") {
        return;
    }
    let _shared = crate::shared_blocking();
    let (net, hosts) = Network::with_hosts_on(Topology::Routed, &["gone"]).expect("network");
    let link = net.gateway_link().to_owned();
    let veth = hosts[0].bridge_port().to_owned();
    let netns = hosts[0].netns().to_owned();
    let subnets = [IpNet::V4(net.ipv4_subnet()), IpNet::V6(net.ipv6_subnet())];
    assert!(link_exists(&link) && link_exists(&veth));
    for subnet in subnets {
        let routes = routes_within(subnet);
        assert!(
            routes
                .iter()
                .any(|r| r.starts_with(&format!("unreachable {subnet}"))),
            "{subnet}: {routes:?}"
        );
        assert!(
            routes.iter().any(|r| r.contains(&format!("dev {veth}"))),
            "a route to the host: {routes:?}"
        );
    }
    drop(hosts);
    net.close().expect("clean up");
    assert!(!link_exists(&link), "address link {link} left");
    assert!(!link_exists(&veth), "veth {veth} left");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&netns));
    for subnet in subnets {
        assert_eq!(routes_within(subnet), Vec::<String>::new(), "{subnet}");
    }
}
