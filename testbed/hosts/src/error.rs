//! Errors from creating and driving simulated hosts.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why simulated hosts cannot be created on this machine at all: not root,
/// missing capabilities, or `ip`/`unshare`/`sh` not installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("simulated hosts (network namespaces) are unavailable: {reason}")]
pub struct HostsUnavailable {
    /// What is missing, in words a person can act on.
    pub reason: String,
}

/// Errors from creating, configuring or cleaning up simulated hosts.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The machine cannot run simulated hosts at all.
    #[error(transparent)]
    Unavailable(#[from] HostsUnavailable),
    /// A command (`ip …`) ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// A command could not be started.
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command line, for the reader.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command printed something we could not understand.
    #[error("unexpected output from `{command}`: {detail}")]
    Output {
        /// The command line, for the reader.
        command: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A host or interface name that cannot be used.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What kind of name (`hostname`, `interface name`, …).
        what: &'static str,
        /// The name given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A finite pool (subnets, addresses, interface names) ran out.
    #[error("no free {what}")]
    Exhausted {
        /// What ran out.
        what: &'static str,
    },
    /// An address that is not in this network's subnets or not on the host.
    #[error("address {address}: {reason}")]
    Address {
        /// The address.
        address: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Reading or writing a file (logs, lock) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Signalling or waiting for a process failed.
    #[error("process {pid} ({label}): {source}")]
    Process {
        /// The process id.
        pid: u32,
        /// The label it was started with.
        label: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {timeout:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
}

impl HostsError {
    /// The reason, when this error means "hosts cannot run on this machine".
    pub fn unavailable(&self) -> Option<&HostsUnavailable> {
        match self {
            Self::Unavailable(u) => Some(u),
            _ => None,
        }
    }
}
