//! The command line: a `Command` per mode, parsed with clap; usage errors exit 64.
//!
//! `main` installs the crypto provider, calls [`Cli::parse_args`] and
//! [`Cli::run`]. Each subcommand lives in its own module.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

pub mod check;
pub mod input;

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
    Run(Box<crate::runtime::RunArgs>),
}

// === impl Cli ===

impl Cli {
    /// Parses arguments. `--help` and `--version` print and return exit code
    /// 0; any usage error prints and returns 64.
    pub fn parse_args<I, T>(args: I) -> Result<Self, ExitCode>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        match Self::try_parse_from(args) {
            Ok(cli) => Ok(cli),
            Err(e) => {
                // Printing can fail only if stdout/stderr are gone; nothing to add then.
                let _ = e.print();
                match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Err(ExitCode::SUCCESS),
                    _ => Err(ExitCode::from(EXIT_USAGE)),
                }
            }
        }
    }

    /// Runs the chosen subcommand and returns its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Check(args) => check::run(&args),
            Command::Run(args) => match crate::runtime::main(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("rubber-stamp-approver: {error:#}");
                    ExitCode::FAILURE
                }
            },
        }
    }
}
