//! The `rubber-stamp-agent` binary.

fn main() -> std::process::ExitCode {
    eprintln!("rubber-stamp-agent: not built yet");
    std::process::ExitCode::from(64)
}
