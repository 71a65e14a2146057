//! The external tools simulated hosts are built with (`ip`, `unshare`, `sh`),
//! the check that they can work here, and running `ip` with JSON output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use super::error::{HostsError, HostsUnavailable};

/// `CAP_NET_ADMIN`: create links, namespaces' interfaces, addresses, routes.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: `setns`, `unshare --uts`, the mounts `ip netns` makes.
const CAP_SYS_ADMIN: u32 = 21;

/// Where the tools are looked for when they are not on `PATH` (root's usual
/// directories, which a non-login `PATH` may lack).
const FALLBACK_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Absolute paths of the tools, found once.
#[derive(Debug)]
pub(crate) struct Tools {
    /// iproute2 `ip`.
    pub(crate) ip: PathBuf,
    /// util-linux `unshare`.
    pub(crate) unshare: PathBuf,
    /// A POSIX shell.
    pub(crate) sh: PathBuf,
}

static TOOLS: OnceLock<Result<Tools, HostsUnavailable>> = OnceLock::new();

/// Checks, once per process, that simulated hosts can be created here:
/// Linux, effective root with `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`, and `ip`
/// (iproute2 with JSON output and `netns`), `unshare` and `sh` installed.
///
/// The sandbox calls this to choose between namespace and loopback mode.
pub fn check_available() -> Result<(), HostsUnavailable> {
    tools().map(|_| ())
}

pub(crate) fn tools() -> Result<&'static Tools, HostsUnavailable> {
    TOOLS.get_or_init(probe).as_ref().map_err(Clone::clone)
}

fn probe() -> Result<Tools, HostsUnavailable> {
    let unavailable = |reason: String| HostsUnavailable { reason };
    if !cfg!(target_os = "linux") {
        return Err(unavailable("network namespaces need Linux".into()));
    }
    if !rustix::process::geteuid().is_root() {
        return Err(unavailable(format!(
            "not running as root (effective uid {})",
            rustix::process::geteuid().as_raw()
        )));
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| unavailable(format!("cannot read /proc/self/status: {e}")))?;
    let caps = effective_caps(&status).ok_or_else(|| {
        unavailable("no CapEff line in /proc/self/status; cannot tell capabilities".into())
    })?;
    for (bit, name) in [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ] {
        if caps & (1 << bit) == 0 {
            return Err(unavailable(format!(
                "root but without {name} (a restricted container?)"
            )));
        }
    }
    let tools = Tools {
        ip: find("ip").ok_or_else(|| unavailable("`ip` (iproute2) is not installed".into()))?,
        unshare: find("unshare")
            .ok_or_else(|| unavailable("`unshare` (util-linux) is not installed".into()))?,
        sh: find("sh").ok_or_else(|| unavailable("no `sh` found".into()))?,
    };
    // JSON output and the netns subcommand are what we rely on.
    let out = Command::new(&tools.ip)
        .args(["-j", "netns", "list"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable(format!("running {}: {e}", tools.ip.display())))?;
    if !out.status.success() {
        return Err(unavailable(format!(
            "`ip -j netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(tools)
}

/// The `CapEff:` bit mask of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command line as text, for error messages.
pub(crate) fn display_command(program: &Path, args: &[impl AsRef<OsStr>]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs `ip <args>` and returns its stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String, HostsError> {
    let tools = tools()?;
    let command = display_command(&tools.ip, args);
    let out = Command::new(&tools.ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(HostsError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| HostsError::Output {
        command,
        detail: "not UTF-8".into(),
    })
}

/// Runs `ip -j <args>` and parses its JSON; empty output (what `ip netns
/// list` prints when there is nothing) is an empty list.
pub(crate) fn ip_json<T: DeserializeOwned + Default>(args: &[&str]) -> Result<T, HostsError> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ip(&full)?;
    if out.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(&out).map_err(|e| HostsError::Output {
        command: format!("ip {}", full.join(" ")),
        detail: e.to_string(),
    })
}

/// Whether an `ip` failure only says the thing is already gone.
pub(crate) fn is_not_found(err: &HostsError) -> bool {
    match err {
        HostsError::Command { stderr, .. } => {
            stderr.contains("Cannot find device")
                || stderr.contains("No such file or directory")
                || stderr.contains("does not exist")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_caps_reads_the_hex_mask() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = effective_caps(status).expect("caps");
        assert_ne!(caps & (1 << CAP_NET_ADMIN), 0);
        assert_ne!(caps & (1 << CAP_SYS_ADMIN), 0);
        let unprivileged = "CapEff:\t0000000000000000\n";
        assert_eq!(effective_caps(unprivileged), Some(0));
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }
}
