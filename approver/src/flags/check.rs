//! Flags of `rubber-stamp-approver check`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use rubber_stamp_core::DenyMode;

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The CSR as `kubectl get csr NAME -o yaml` or `-o json` prints it; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The approver's attestation snapshot (`{"attestations": [...]}`). Without
    /// it, no node has attested and the verdict is at best pending.
    #[arg(long, value_name = "FILE")]
    pub attestations: Option<PathBuf>,
    /// `kubectl get nodes -o json` output. Without it, the Node half of check 11
    /// and check 12 are reported as skipped.
    #[arg(long, value_name = "FILE")]
    pub nodes: Option<PathBuf>,
    /// `kubectl get services -A -o json` output. Without it (and without
    /// `--service-cidrs`), check 9 does not compare IP SANs with the cluster's Service
    /// addresses and reports that it was not evaluated.
    #[arg(long, value_name = "FILE")]
    pub services: Option<PathBuf>,
    /// `kubectl get servicecidrs -o json` output (Kubernetes 1.33+). Without it, the
    /// Service ranges are not evaluated.
    #[arg(long = "service-cidrs", value_name = "FILE")]
    pub service_cidrs: Option<PathBuf>,
    /// Policy YAML, the same file `run` takes. Default: the built-in policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Decide as of this instant (RFC 3339, e.g. 2026-11-30T00:01:00Z). Default: now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
    pub now: Option<Timestamp>,
    /// Override the policy's deny mode: `never` reports would-be denials as pending.
    #[arg(long, value_name = "always|never")]
    pub deny: Option<DenyMode>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// How `check` prints its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Text,
    /// `{"decision": …, "checks": [{"name", "passed", "detail", …}]}`.
    Json,
}

fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>()
        .map_err(|e| format!("not an RFC 3339 timestamp such as 2026-11-30T00:00:00Z: {e}"))
}
