//! Simulated hosts: reachability over IPv4 and IPv6, the peer address the
//! root namespace sees, per-host hostnames and interfaces (read with sysinfo
//! by `host-probe`), address changes, and cleanup after drop and panic.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rubber_stamp_hosts::{self as hosts, Host, HostProcess, Network};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const PROBE: &str = env!("CARGO_BIN_EXE_host-probe");
pub(crate) const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub(crate) struct Facts {
    pub(crate) hostname: String,
    pub(crate) interfaces: Vec<Interface>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) addresses: Vec<IpNet>,
}

pub(crate) fn probe(args: &[&str]) -> Command {
    let mut cmd = Command::new(PROBE);
    cmd.args(args);
    cmd
}

/// Runs `host-probe` inside `host` and returns its stdout; fails the test
/// with its stderr when it fails.
pub(crate) async fn run_probe(host: &Host, args: &[&str]) -> String {
    let out = host.run(&probe(args), STEP).await.expect("run probe");
    assert!(
        out.status.success(),
        "host-probe {args:?} in {} failed: {}",
        host.hostname(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

pub(crate) async fn facts(host: &Host) -> Facts {
    serde_json::from_str(&run_probe(host, &["facts"]).await).expect("facts JSON")
}

/// A one-line echo server in the root namespace answering
/// `peer=IP echo=LINE`.
pub(crate) async fn root_echo_server(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind root echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_ok() {
                    let reply = format!("peer={} echo={}", peer.ip().to_canonical(), line.trim());
                    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// Sends one line from the root namespace and returns the reply.
pub(crate) async fn root_echo(addr: SocketAddr, message: &str) -> String {
    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{message}\n").as_bytes())
        .await
        .expect("send");
    let mut line = String::new();
    tokio::time::timeout(STEP, BufReader::new(read).read_line(&mut line))
        .await
        .expect("reply in time")
        .expect("read reply");
    line.trim().to_owned()
}

pub(crate) async fn start_host_echo(host: &Host) -> HostProcess {
    let mut server = host
        .spawn("echo", &probe(&["echo-server", "--listen", "[::]:7000"]))
        .expect("spawn echo server");
    server
        .wait_for_stdout("listening on", STEP)
        .await
        .expect("echo server listening");
    server
}

pub(crate) fn sock(ip: impl Into<IpAddr>, port: u16) -> String {
    SocketAddr::new(ip.into(), port).to_string()
}

#[tokio::test]
async fn hosts_reach_each_other_and_the_root_namespace_over_both_families() {
    if !hosts::available_or_skip("hosts_reach_each_other_and_the_root_namespace") {
        return;
    }
    let _shared = crate::shared().await;
    let (net, hosts) = Network::with_hosts(&["node-a", "node-b"]).expect("network");
    let (a, b) = (&hosts[0], &hosts[1]);

    // Host -> root namespace (a server on the bridge address, like the
    // approver): the root namespace sees the host's own address.
    let root_v4 = root_echo_server(net.gateway_v4().into()).await;
    let root_v6 = root_echo_server(net.gateway_v6().into()).await;
    for host in [a, b] {
        let reply = run_probe(host, &["echo", &root_v4.to_string(), "hi"]).await;
        assert_eq!(reply, format!("peer={} echo=hi", host.ipv4()));
        let reply = run_probe(host, &["echo", &root_v6.to_string(), "hi6"]).await;
        assert_eq!(reply, format!("peer={} echo=hi6", host.ipv6()));
    }

    // Root namespace -> host, and host -> host, both families.
    let _server = start_host_echo(a).await;
    let reply = root_echo(SocketAddr::new(a.ipv4().into(), 7000), "from-root").await;
    assert_eq!(
        reply,
        format!(
            "host=node-a peer={} local={} echo=from-root",
            net.gateway_v4(),
            a.ipv4()
        )
    );
    let reply = root_echo(SocketAddr::new(a.ipv6().into(), 7000), "from-root6").await;
    assert_eq!(
        reply,
        format!(
            "host=node-a peer={} local={} echo=from-root6",
            net.gateway_v6(),
            a.ipv6()
        )
    );
    let reply = run_probe(b, &["echo", &sock(a.ipv4(), 7000), "b2a"]).await;
    assert_eq!(
        reply,
        format!("host=node-a peer={} local={} echo=b2a", b.ipv4(), a.ipv4())
    );
    let reply = run_probe(b, &["echo", &sock(a.ipv6(), 7000), "b2a6"]).await;
    assert_eq!(
        reply,
        format!("host=node-a peer={} local={} echo=b2a6", b.ipv6(), a.ipv6())
    );
}

#[tokio::test]
async fn each_host_has_its_own_hostname_and_sees_only_its_own_interfaces() {
    if !hosts::available_or_skip("each_host_has_its_own_hostname") {
        return;
    }
    let _shared = crate::shared().await;
    let (net, hosts) = Network::with_hosts(&["alpha", "beta"]).expect("network");
    let mut seen_hostnames = BTreeSet::new();
    for host in &hosts {
        let facts = facts(host).await;
        assert_eq!(facts.hostname, host.hostname(), "sysinfo's hostname");
        seen_hostnames.insert(facts.hostname.clone());
        let names: Vec<&str> = facts.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["eth0", "lo"],
            "only the namespace's interfaces (not {} or the root's)",
            net.bridge()
        );
        let eth0 = &facts.interfaces[0];
        let global: BTreeSet<IpNet> = eth0
            .addresses
            .iter()
            .copied()
            .filter(|a| !is_link_local(a.addr()))
            .collect();
        assert_eq!(
            global,
            BTreeSet::from(host.initial_addresses()),
            "eth0 holds exactly the host's addresses"
        );
        // What sysinfo saw agrees with the kernel's list.
        let kernel: BTreeSet<IpNet> = host
            .addresses()
            .expect("addresses")
            .into_iter()
            .filter(|a| a.interface == "eth0")
            .map(|a| a.address)
            .collect();
        let sysinfo: BTreeSet<IpNet> = eth0.addresses.iter().copied().collect();
        assert_eq!(kernel, sysinfo);
    }
    assert_eq!(seen_hostnames.len(), 2, "hostnames differ per host");
    // The root namespace keeps its own hostname.
    let root = String::from_utf8(Command::new("hostname").output().expect("hostname").stdout)
        .expect("utf-8");
    assert!(!seen_hostnames.contains(root.trim()));
}

pub(crate) fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[tokio::test]
async fn addresses_can_be_added_moved_and_put_on_a_dummy_interface() {
    if !hosts::available_or_skip("addresses_can_be_added_moved_and_put_on_a_dummy") {
        return;
    }
    let _shared = crate::shared().await;
    let (net, hosts) = Network::with_hosts(&["mover", "receiver"]).expect("network");
    let (a, b) = (&hosts[0], &hosts[1]);
    let _echo_a = start_host_echo(a).await;
    let _echo_b = start_host_echo(b).await;

    // Add: a second IPv4 address on a's eth0, reachable at once.
    let extra = net.allocate_ipv4().expect("allocate");
    a.add_address(IpNet::V4(extra)).expect("add");
    assert!(a.has_address(extra.addr().into()).expect("list"));
    let reply = root_echo(SocketAddr::new(extra.addr().into(), 7000), "x").await;
    assert!(reply.starts_with("host=mover "), "{reply}");

    // Move: the address leaves a and answers from b.
    a.move_address_to(IpNet::V4(extra), b).expect("move");
    assert!(!a.has_address(extra.addr().into()).expect("list a"));
    assert!(b.has_address(extra.addr().into()).expect("list b"));
    let reply = root_echo(SocketAddr::new(extra.addr().into(), 7000), "y").await;
    assert!(reply.starts_with("host=receiver "), "{reply}");
    let facts_b = facts(b).await;
    let eth0_b = facts_b
        .interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .expect("eth0");
    assert!(eth0_b.addresses.contains(&IpNet::V4(extra)));

    // Dummy: a claims b's IPv6 address on a dummy interface; sysinfo in a
    // reports it there, and b is unaffected.
    let stolen = b.initial_addresses()[1];
    assert!(matches!(stolen, IpNet::V6(_)));
    let kind = a.add_dummy("dummy0", stolen).expect("dummy");
    assert!(["dummy", "ifb"].contains(&kind));
    let facts_a = facts(a).await;
    let dummy = facts_a
        .interfaces
        .iter()
        .find(|i| i.name == "dummy0")
        .expect("dummy0 seen by sysinfo");
    assert!(dummy.addresses.contains(&stolen), "{:?}", dummy.addresses);
    assert!(b.has_address(stolen.addr()).expect("list b"));

    // Removing an address that is not there is an error, not a no-op.
    assert!(a.remove_address(IpNet::V4(extra)).is_err());
}

/// Names of every network namespace and link in the root namespace.
fn system_names() -> (BTreeSet<String>, BTreeSet<String>) {
    #[derive(Deserialize)]
    struct Named {
        #[serde(alias = "ifname")]
        name: String,
    }
    let list = |args: &[&str]| -> BTreeSet<String> {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).expect("utf-8");
        if text.trim().is_empty() {
            return BTreeSet::new();
        }
        serde_json::from_str::<Vec<Named>>(&text)
            .expect("ip JSON")
            .into_iter()
            .map(|n| n.name)
            .collect()
    };
    (
        list(&["-j", "netns", "list"]),
        list(&["-j", "link", "show"]),
    )
}

fn process_gone_within(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    while Instant::now() < deadline {
        // A zombie is gone for our purposes: it runs nothing.
        let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !proc.exists() || zombie {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// What a test made, to look for after it is gone.
#[derive(Debug, Default)]
struct Made {
    bridge: String,
    ports: Vec<String>,
    namespaces: Vec<String>,
    pids: Vec<u32>,
}

#[test]
fn dropping_the_network_removes_everything_even_when_a_test_panics() {
    if !hosts::available_or_skip("dropping_the_network_removes_everything") {
        return;
    }
    let _shared = crate::shared_blocking();
    let mut made = Made::default();
    let mut run_dir = std::path::PathBuf::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (net, hosts) = Network::with_hosts(&["doomed-a", "doomed-b"]).expect("network");
        made.bridge = net.bridge().to_owned();
        run_dir = net.run_dir().to_owned();
        let mut kept = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            made.ports.push(h.bridge_port().to_owned());
            made.namespaces.push(h.netns().to_owned());
            // A process that would outlive the test, with a child of its own.
            let p = h
                .spawn(
                    "sleeper",
                    Command::new("sh").args(["-c", "sleep 600 & sleep 600"]),
                )
                .expect("spawn");
            made.pids.push(p.id());
            if i == 0 {
                // A leaked handle: only the network's own cleanup can kill it.
                std::mem::forget(p);
            } else {
                kept.push(p);
            }
        }
        let (ns, links) = system_names();
        assert!(made.namespaces.iter().all(|n| ns.contains(n)));
        assert!(links.contains(&made.bridge));
        assert!(made.ports.iter().all(|p| links.contains(p)));
        panic!("deliberate panic inside a test using simulated hosts");
    }));
    assert!(outcome.is_err(), "the closure panicked");
    assert_eq!(made.namespaces.len(), 2);
    let (ns, links) = system_names();
    assert!(!links.contains(&made.bridge), "bridge left behind");
    for port in &made.ports {
        assert!(!links.contains(port), "veth {port} left behind");
    }
    for n in &made.namespaces {
        assert!(!ns.contains(n), "namespace {n} left behind");
    }
    for pid in made.pids {
        assert!(
            process_gone_within(pid, Duration::from_secs(5)),
            "process {pid} survived the drop"
        );
    }
    // The logs of a failed test are kept for debugging; this failure was
    // deliberate, so remove them.
    assert!(run_dir.is_dir(), "logs kept after a panic");
    std::fs::remove_dir_all(&run_dir).expect("remove kept logs");
}

#[tokio::test]
async fn dropping_a_process_kills_its_whole_group() {
    if !hosts::available_or_skip("dropping_a_process_kills_its_whole_group") {
        return;
    }
    let _shared = crate::shared().await;
    let (_net, hosts) = Network::with_hosts(&["groupie"]).expect("network");
    let host = &hosts[0];
    let mut p = host
        .spawn(
            "forker",
            Command::new("sh").args(["-c", "sleep 600 & echo started; sleep 600"]),
        )
        .expect("spawn");
    p.wait_for_stdout("started", STEP).await.expect("started");
    let pids_in_ns = || {
        let out = Command::new("ip")
            .args(["netns", "pids", host.netns()])
            .output()
            .expect("ip netns pids");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = pids_in_ns();
    assert!(
        before.len() >= 2,
        "the shell and its background sleep: {before:?}"
    );
    drop(p);
    let deadline = Instant::now() + STEP;
    while !pids_in_ns().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pids_in_ns(),
        Vec::<String>::new(),
        "the background child died too"
    );
}

#[tokio::test]
async fn root_namespace_processes_are_captured_and_killed_on_drop() {
    if !hosts::available_or_skip("root_namespace_processes_are_captured") {
        return;
    }
    let _shared = crate::shared().await;
    let net = Network::new().expect("network");
    let mut p = net
        .spawn_root(
            "approver-like",
            Command::new("sh").args(["-c", "echo up; echo oops >&2; exec sleep 600"]),
        )
        .expect("spawn");
    p.wait_for_stdout("up", STEP)
        .await
        .expect("stdout captured");
    assert!(p.stdout_path().starts_with(net.run_dir()));
    let deadline = Instant::now() + STEP;
    while !p.stderr().expect("stderr").contains("oops") {
        assert!(Instant::now() < deadline, "stderr captured");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.try_wait().expect("try_wait"), None, "still running");
    let pid = p.id();
    drop(p);
    assert!(process_gone_within(pid, STEP), "killed on drop");
}
