//! Cleanup of interrupted runs: a run killed with SIGKILL leaves its hosts
//! behind and `sweep_stale` (which every new `Network` runs) removes them;
//! a run with `cleanup_on_signal` cleans up after itself on SIGINT. Both also for the
//! routed topology, whose `unreachable` routes belong to no link.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rubber_stamp_hosts::{self as hosts, Network, Topology};

/// The helper's name in this test binary.
const HELPER: &str = "sweep::helper_holds_a_network_until_killed";

/// The tests here run one at a time and alone: every `Network::new` sweeps dead runs'
/// leftovers, so a test starting a network could sweep what another test's
/// killed helper left before that test looks. (They also assume no other
/// testbed process starts meanwhile, as under `cargo test`.)
fn serial() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    crate::alone()
}
const HELPER_ENV: &str = "RS_HOSTS_SWEEP_HELPER";

/// Not a test: the process the tests below interrupt. Does nothing unless
/// started by them (with `RS_HOSTS_SWEEP_HELPER` set).
#[test]
#[ignore = "helper process for the other tests in this file"]
fn helper_holds_a_network_until_killed() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        if mode.starts_with("signal") {
            hosts::cleanup_on_signal().expect("install handler");
        }
        let topology = if mode.ends_with("-routed") {
            Topology::Routed
        } else {
            Topology::Bridge
        };
        let (net, hosts) = Network::with_hosts_on(topology, &["orphan"]).expect("network");
        let sleeper = hosts[0]
            .spawn("sleeper", Command::new("sleep").arg("600"))
            .expect("spawn");
        println!(
            "READY {} {} {} {} {} {} {}",
            net.run_dir().display(),
            net.bridge(),
            hosts[0].bridge_port(),
            hosts[0].netns(),
            sleeper.id(),
            net.ipv4_subnet(),
            net.ipv6_subnet()
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop((sleeper, net));
    });
}

/// What the helper made.
#[derive(Debug)]
struct Leftovers {
    run_dir: std::path::PathBuf,
    bridge: String,
    port: String,
    netns: String,
    sleeper: u32,
    subnets: [String; 2],
}

fn start_helper(mode: &str) -> (Child, Leftovers) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            HELPER,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start helper");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test NAME ... " on the same line first.
            if let Some((_, rest)) = line.split_once("READY ") {
                let _ = tx.send(rest.to_owned());
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("helper reports READY");
    let parts: Vec<&str> = line.split(' ').collect();
    let [run_dir, bridge, port, netns, sleeper, v4, v6] = parts[..] else {
        panic!("unexpected READY line {line:?}");
    };
    let leftovers = Leftovers {
        run_dir: run_dir.into(),
        bridge: bridge.to_owned(),
        port: port.to_owned(),
        netns: netns.to_owned(),
        sleeper: sleeper.parse().expect("pid"),
        subnets: [v4.to_owned(), v6.to_owned()],
    };
    (child, leftovers)
}

fn exists(kind: &str, name: &str) -> bool {
    let out = match kind {
        "netns" => Command::new("ip").args(["netns", "list"]).output(),
        _ => Command::new("ip").args(["-o", "link", "show"]).output(),
    }
    .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ':' || c == '@')
        .any(|w| w == name)
}

/// The routes of the main table inside `prefix`, as `ip` prints them.
fn routes_within(prefix: &str) -> Vec<String> {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args([family, "route", "show", "table", "main", "root", prefix])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Gone, or a zombie waiting for init to reap it.
    !stat.is_empty()
        && !stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_all_gone(l: &Leftovers) {
    assert!(!exists("netns", &l.netns), "namespace {} left", l.netns);
    assert!(!exists("link", &l.bridge), "bridge {} left", l.bridge);
    assert!(!exists("link", &l.port), "veth {} left", l.port);
    eventually("the sleeper inside the host to die", || !running(l.sleeper));
    for subnet in &l.subnets {
        assert_eq!(routes_within(subnet), Vec::<String>::new(), "{subnet}");
    }
    // An interrupted run keeps its logs (a sweep removes them after a day);
    // these interruptions were deliberate.
    assert!(l.run_dir.is_dir(), "logs of the interrupted run are kept");
    std::fs::remove_dir_all(&l.run_dir).expect("remove logs");
}

#[test]
fn sweep_stale_removes_what_a_sigkilled_run_left_behind() {
    if !hosts::available_or_skip("sweep_stale_removes_what_a_sigkilled_run_left") {
        return;
    }
    let _serial = serial();
    let (mut child, left) = start_helper("kill");
    child.kill().expect("SIGKILL the helper");
    child.wait().expect("reap helper");
    // SIGKILL runs no destructor: everything is still there, and the process
    // inside the host (its own process group) survived its parent.
    assert!(exists("netns", &left.netns));
    assert!(exists("link", &left.bridge));
    assert!(exists("link", &left.port));
    assert!(running(left.sleeper), "the orphan still runs");

    let report = hosts::sweep_stale().expect("sweep");
    assert!(report.namespaces.contains(&left.netns), "{report:?}");
    assert!(report.links.contains(&left.bridge), "{report:?}");
    assert!(report.processes_killed >= 1, "{report:?}");
    assert_all_gone(&left);
}

#[test]
fn sweep_stale_leaves_live_runs_alone() {
    if !hosts::available_or_skip("sweep_stale_leaves_live_runs_alone") {
        return;
    }
    let _serial = serial();
    let (net, hosts) = Network::with_hosts(&["alive"]).expect("network");
    let (routed, _routed_hosts) =
        Network::with_hosts_on(Topology::Routed, &["alive-routed"]).expect("routed network");
    let report = hosts::sweep_stale().expect("sweep");
    assert!(!report.namespaces.contains(&hosts[0].netns().to_owned()));
    assert!(!report.links.contains(&net.bridge().to_owned()));
    assert!(!report.links.contains(&routed.bridge().to_owned()));
    assert!(exists("netns", hosts[0].netns()));
    assert!(exists("link", net.bridge()));
    assert!(exists("link", routed.bridge()));
    for subnet in [
        routed.ipv4_subnet().to_string(),
        routed.ipv6_subnet().to_string(),
    ] {
        assert!(
            !report.routes.iter().any(|r| r.contains(&subnet)),
            "{report:?}"
        );
        assert!(
            routes_within(&subnet)
                .iter()
                .any(|r| r.starts_with(&format!("unreachable {subnet}"))),
            "the live run's route stays"
        );
    }
}

#[test]
fn cleanup_on_signal_removes_everything_on_sigint() {
    if !hosts::available_or_skip("cleanup_on_signal_removes_everything_on_sigint") {
        return;
    }
    let _serial = serial();
    let (mut child, left) = start_helper("signal");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let status = child.wait().expect("reap helper");
    assert_eq!(status.code(), Some(130), "exit code 128 + SIGINT");
    // No sweep here: the helper cleaned up after itself.
    assert_all_gone(&left);
}

#[test]
fn sweep_stale_removes_the_routes_and_links_of_a_sigkilled_routed_run() {
    if !hosts::available_or_skip("sweep_stale_removes_a_sigkilled_routed_run") {
        return;
    }
    let _serial = serial();
    let (mut child, left) = start_helper("kill-routed");
    child.kill().expect("SIGKILL the helper");
    child.wait().expect("reap helper");
    // The unreachable routes name no link: only their marks say whose they are.
    for subnet in &left.subnets {
        let routes = routes_within(subnet);
        assert!(
            routes
                .iter()
                .any(|r| r.starts_with(&format!("unreachable {subnet}"))),
            "{subnet}: {routes:?}"
        );
    }
    assert!(exists("link", &left.bridge), "the address link");

    let report = hosts::sweep_stale().expect("sweep");
    // (The veth may already be gone with its namespace: `assert_all_gone` checks it.)
    assert!(report.links.contains(&left.bridge), "{report:?}");
    for subnet in &left.subnets {
        assert!(
            report.routes.iter().any(|r| r.contains(subnet.as_str())),
            "{subnet}: {report:?}"
        );
    }
    assert_all_gone(&left);
}

#[test]
fn cleanup_on_signal_removes_a_routed_network_on_sigterm() {
    if !hosts::available_or_skip("cleanup_on_signal_removes_a_routed_network") {
        return;
    }
    let _serial = serial();
    let (mut child, left) = start_helper("signal-routed");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = child.wait().expect("reap helper");
    assert_eq!(status.code(), Some(143), "exit code 128 + SIGTERM");
    assert_all_gone(&left);
}
