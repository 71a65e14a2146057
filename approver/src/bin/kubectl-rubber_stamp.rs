//! The `kubectl-rubber_stamp` binary: `kubectl rubber-stamp explain CSR` and `kubectl
//! rubber-stamp status` once it is on `PATH` (kubectl runs `kubectl-<name>` for an unknown
//! command, with `-` in the name read as `_`).

use std::process::ExitCode;

fn main() -> ExitCode {
    // ring, as for the API client and the approver's own servers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    rubber_stamp_approver::kubectl::main(std::env::args_os())
}
