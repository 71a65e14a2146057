//! Simulated hosts: network namespaces on a private bridge (or, in the routed
//! topology, each on its own link to the root namespace as router), each with its own
//! addresses and hostname, where the real agent and the kubelet simulator run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rubber_stamp_hosts::HostsError> {
//! use rubber_stamp_hosts::Network;
//! let (network, hosts) = Network::with_hosts(&["node-a", "node-b"])?;
//! let mut agent = hosts[0].spawn("agent", &std::process::Command::new("rubber-stamp-agent"))?;
//! // … servers in the root namespace listen on network.gateway_v4() …
//! # Ok(()) }
//! ```
//!
//! Everything is removed when the [`Network`] is dropped (also during a
//! panic); [`sweep_stale`] removes what dead runs left, and
//! [`cleanup_on_signal`] makes Ctrl-C clean up. See `docs/testbed-hosts.md`.
//!
//! # Layout
//!
//! - `network`: [`Network`] (bridge or routed links, subnets, addresses), its
//!   [`Topology`], and [`Host`].
//! - `process`: [`HostProcess`], a started process with captured output.
//! - `cleanup`: [`sweep_stale`], [`cleanup_this_process`], [`cleanup_on_signal`].
//! - `subnet`: random non-colliding subnets; `names`: `rs<pid>-…` names and the
//!   run's directories; `tool`: `ip`/`unshare` and [`check_available`].
//!
//! The modules import downwards only: `network` → `process` → `cleanup` → `names`,
//! `tool`, `error`.
//!
//! Binary: `host-probe`, run inside hosts (facts as sysinfo lists them, a TCP echo). Tests:
//! `tests/hosts.rs` (network, sweep).

mod cleanup;
mod error;
mod names;
mod network;
mod process;
mod subnet;
mod tool;

pub use cleanup::{SweepReport, cleanup_on_signal, cleanup_this_process, sweep_stale};
pub use error::{HostsError, HostsUnavailable};
pub use network::{HOST_INTERFACE, Host, InterfaceAddress, KEEP_LOGS_ENV, Network, Topology};
pub use process::HostProcess;
pub use tool::check_available;

/// The variable that lets tests skip, visibly, where hosts cannot run.
pub const SKIP_ENV: &str = "SKIP_NETNS";

/// For tests that need simulated hosts: `true` when they can run here. When
/// they cannot, prints a SKIPPED line and returns `false` if `SKIP_NETNS=1`
/// is set, and otherwise panics with the reason, so such a test never passes
/// silently.
pub fn available_or_skip(test: &str) -> bool {
    match check_available() {
        Ok(()) => true,
        Err(u) if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            // Straight to the stderr handle: the test harness captures
            // `eprintln!` of passing tests, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {} ({SKIP_ENV}=1)",
                u.reason
            );
            false
        }
        Err(u) => panic!(
            "{test}: {u}. These tests need root with CAP_NET_ADMIN and CAP_SYS_ADMIN, \
             `ip` (iproute2) and `unshare` (util-linux). Set {SKIP_ENV}=1 to skip them."
        ),
    }
}
