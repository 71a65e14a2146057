//! The `rubber-stamp-approver` binary.

fn main() -> std::process::ExitCode {
    eprintln!("rubber-stamp-approver: no subcommands are built yet");
    std::process::ExitCode::from(64)
}
