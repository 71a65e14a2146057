//! Every flag of `rubber-stamp-approver`, parsed with clap and turned into the checked
//! configurations the other modules take; usage errors exit 64.
//!
//! Nothing else in the approver declares flags, and nothing here runs anything: `main`
//! parses with [`Cli::parse_args`] and hands the result to [`crate::run`].
//!
//! - [`run`]: `run`'s flags → `RunConfig` (and the controller's, the PKI's).
//! - [`controller`]: the controller's flags → `ControllerConfig`.
//! - [`pki`]: the attestation port's PKI flags → `PkiConfig`.
//! - [`check`]: `check`'s flags.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

pub mod check;
pub mod controller;
pub mod pki;
pub mod run;

/// Exit code for bad usage or unreadable input (`EX_USAGE`). clap's own
/// default (2) would collide with `check`'s "pending".
pub const EXIT_USAGE: u8 = 64;

/// `rubber-stamp-approver`: approves kubelet serving CSRs only for attested names and addresses.
#[derive(Debug, Parser)]
#[command(name = "rubber-stamp-approver", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decide offline on one CSR, with the same code as the controller.
    ///
    /// Exit code: 0 approve, 1 deny, 2 pending, 3 ignore, 64 unreadable input or bad usage.
    Check(check::CheckArgs),
    /// Run the approver: the attestation gRPC API, health and admin endpoints.
    Run(Box<run::RunArgs>),
}

/// Parses `args` into `P`: `--help` and `--version` print and return exit code 0; any
/// usage error prints and returns [`EXIT_USAGE`] (64). The binaries' and the kubectl
/// plugin's parsers.
pub fn parse_or_exit<P, I, T>(args: I) -> Result<P, ExitCode>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    P::try_parse_from(args).map_err(|e| {
        // Printing can fail only if stdout/stderr are gone; nothing to add then.
        let _ = e.print();
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
            _ => ExitCode::from(EXIT_USAGE),
        }
    })
}

// === impl Cli ===

impl Cli {
    /// Parses arguments ([`parse_or_exit`]).
    pub fn parse_args<I, T>(args: I) -> Result<Self, ExitCode>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        parse_or_exit(args)
    }
}
/// Parses a duration such as `10s`, `5m`, `1h30m` or `PT5M`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{s:?} is negative"))
}
