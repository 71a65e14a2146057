//! The `rubber-stamp-approver` binary: installs the rustls crypto provider, parses the
//! command line and hands over to the subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rubber_stamp_approver::runtime;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Approves kubelet serving CSRs only for addresses each node has attested"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the attestation gRPC API, health and admin endpoints.
    Run(Box<runtime::RunArgs>),
}

fn main() -> ExitCode {
    // Fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Run(args) => match runtime::main(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("rubber-stamp-approver: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
