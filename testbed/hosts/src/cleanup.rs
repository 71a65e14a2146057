//! Cleaning up after runs: this process's own hosts on SIGINT/SIGTERM, and
//! the leftovers of runs that died without cleaning up (SIGKILL, a crash).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Pid, Signal};
use serde::Deserialize;

use super::error::HostsError;
use super::names::{ROUTE_PROTOCOL, RUN_DIR_PREFIX, etc_dir, owner_pid, route_owner};
use super::tool::{ip, ip_json, is_not_found};

/// How many times the processes inside a namespace are listed and killed
/// before giving up (a process may fork while we kill).
const KILL_ROUNDS: usize = 20;

/// Log directories of dead runs older than this are removed by a sweep
/// (younger ones are kept: they may explain a failure that just happened).
const KEEP_DEAD_LOGS: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Process groups started by this process and not yet reaped.
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

pub(crate) fn register_group(pgid: u32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pgid);
}

pub(crate) fn unregister_group(pgid: u32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&pgid);
}

/// What a sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Network namespaces deleted.
    pub namespaces: Vec<String>,
    /// Links (bridges, routed address links, veths) deleted.
    pub links: Vec<String>,
    /// Routes deleted: the routed topology's `unreachable` routes for a run's
    /// subnets, as `ip route` writes them.
    pub routes: Vec<String>,
    /// Processes killed inside those namespaces or in our process groups.
    pub processes_killed: usize,
    /// Log directories of dead runs removed (older than a day).
    pub log_dirs: Vec<std::path::PathBuf>,
}

impl SweepReport {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.routes.is_empty()
            && self.processes_killed == 0
            && self.log_dirs.is_empty()
    }
}

/// Removes namespaces and links left by runs whose process is gone (named
/// `rs<pid>-…` with no `/proc/<pid>`), killing any process still inside those
/// namespaces, and their `unreachable` routes (protocol 77, the PID as metric). `Network::new` calls it, so an interrupted run is cleaned up by
/// the next one. Limitation: a leftover whose PID has been reused by an
/// unrelated process stays until that process ends.
pub fn sweep_stale() -> Result<SweepReport, HostsError> {
    let mut report = sweep(|pid| !pid_alive(pid))?;
    report.log_dirs = sweep_old_log_dirs();
    Ok(report)
}

/// Removes `rubber-stamp-hosts-<pid>-…` directories in the temp dir whose
/// run is dead and that were last changed more than a day ago.
fn sweep_old_log_dirs() -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_DEAD_LOGS);
        if old && !pid_alive(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Kills every process group this process started through the testbed and
/// removes every namespace and link it created. For signal handlers and
/// emergency exits; normal code relies on `Drop`.
pub fn cleanup_this_process() -> Result<SweepReport, HostsError> {
    let groups: Vec<u32> = LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .collect();
    let mut killed = 0;
    for pgid in groups {
        if let Some(pid) = Pid::from_raw(pgid as i32)
            && rustix::process::kill_process_group(pid, Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    let me = std::process::id();
    let mut report = sweep(|pid| pid == me)?;
    report.processes_killed += killed;
    Ok(report)
}

/// Installs a SIGINT/SIGTERM handler (a task on the current tokio runtime)
/// that runs [`cleanup_this_process`], says so on stderr, and exits with
/// 128 + the signal number. Idempotent. Must be called inside a runtime.
pub fn cleanup_on_signal() -> Result<(), HostsError> {
    use tokio::signal::unix::{SignalKind, signal};

    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let io = |source| HostsError::Io {
        path: "signal handler".into(),
        source,
    };
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        eprintln!("interrupted: removing simulated hosts and their processes");
        match cleanup_this_process() {
            Ok(r) => eprintln!(
                "cleaned up {} namespaces, {} links, {} process groups",
                r.namespaces.len(),
                r.links.len(),
                r.processes_killed
            ),
            Err(e) => eprintln!("cleanup failed: {e}"),
        }
        std::process::exit(code);
    });
    Ok(())
}

#[derive(Debug, Deserialize)]
struct NetnsJson {
    name: String,
}

#[derive(Debug, Deserialize)]
struct LinkJson {
    ifname: String,
}

#[derive(Debug, Deserialize)]
struct RouteJson {
    dst: String,
    /// Absent for unicast routes.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
}

fn sweep(remove_owner: impl Fn(u32) -> bool) -> Result<SweepReport, HostsError> {
    let mut report = SweepReport::default();
    let namespaces: Vec<NetnsJson> = ip_json(&["netns", "list"])?;
    for ns in namespaces {
        if owner_pid(&ns.name).is_some_and(&remove_owner) {
            report.processes_killed += kill_namespace_processes(&ns.name)?;
            delete_namespace(&ns.name)?;
            report.namespaces.push(ns.name);
        }
    }
    let links: Vec<LinkJson> = ip_json(&["link", "show"])?;
    // Veths first, then bridges: the names sort that way ('b' < 'v' reversed).
    let mut ours: Vec<String> = links
        .into_iter()
        .map(|l| l.ifname)
        .filter(|n| owner_pid(n).is_some_and(&remove_owner))
        .collect();
    ours.sort_by(|a, b| b.cmp(a));
    for link in ours {
        delete_link(&link)?;
        report.links.push(link);
    }
    let proto = ROUTE_PROTOCOL.to_string();
    for family in ["-4", "-6"] {
        let routes: Vec<RouteJson> =
            ip_json(&[family, "route", "show", "table", "main", "proto", &proto])?;
        for route in routes {
            let kind = route.kind.as_deref().unwrap_or("unicast");
            let Some(pid) = route_owner(kind, &route.dst, route.metric) else {
                continue;
            };
            if remove_owner(pid) {
                delete_unreachable_route(family, &route.dst, pid)?;
                report.routes.push(format!(
                    "unreachable {} proto {proto} metric {pid}",
                    route.dst
                ));
            }
        }
    }
    Ok(report)
}

/// Deletes the `unreachable` route for `dst` (an IPv4 or IPv6 prefix) that the run
/// `pid` added (`family` is `-4` or `-6`); a route already gone is no error.
pub(crate) fn delete_unreachable_route(
    family: &str,
    dst: &str,
    pid: u32,
) -> Result<(), HostsError> {
    let proto = ROUTE_PROTOCOL.to_string();
    let metric = pid.to_string();
    let args = [
        family,
        "route",
        "del",
        "unreachable",
        dst,
        "proto",
        &proto,
        "metric",
        &metric,
    ];
    match ip(&args) {
        Err(e) if !is_not_found(&e) && !is_no_such_route(&e) => Err(e),
        _ => Ok(()),
    }
}

/// `ip route del` of a route that is not there.
fn is_no_such_route(e: &HostsError) -> bool {
    matches!(e, HostsError::Command { stderr, .. } if stderr.contains("No such process"))
}

/// SIGKILLs every process in a namespace until none is left; returns how
/// many were killed.
pub(crate) fn kill_namespace_processes(netns: &str) -> Result<usize, HostsError> {
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let pids = match ip(&["netns", "pids", netns]) {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(killed),
            Err(e) => return Err(e),
        };
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return Ok(killed);
        }
        for pid in pids.into_iter().filter_map(Pid::from_raw) {
            if rustix::process::kill_process(pid, Signal::KILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(killed)
}

pub(crate) fn delete_namespace(netns: &str) -> Result<(), HostsError> {
    match ip(&["netns", "delete", netns]) {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => remove_etc_dir(netns),
    }
}

/// Removes `/etc/netns/<netns>` (the per-host files `ip netns exec` mounts
/// over `/etc`, written by `Host::set_hosts_file`) if it exists.
fn remove_etc_dir(netns: &str) -> Result<(), HostsError> {
    let dir = etc_dir(netns);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HostsError::Io {
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

pub(crate) fn delete_link(link: &str) -> Result<(), HostsError> {
    match ip(&["link", "delete", link]) {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}
