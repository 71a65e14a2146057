//! The `rubber-stamp-approver` binary: installs the crypto provider, parses, dispatches.

use std::process::ExitCode;

use rubber_stamp_approver::flags::Cli;

fn main() -> ExitCode {
    // Another provider may already be installed only in tests; either way ring is in use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => rubber_stamp_approver::run(cli),
        Err(code) => code,
    }
}
