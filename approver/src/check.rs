//! `rubber-stamp-approver check`: the offline verdict on one CSR, with the controller's code.
//! Its report writers ([`write_text`], [`write_json`]) are also `kubectl rubber-stamp
//! explain`'s.

use std::io::{self, Write};

use std::process::ExitCode;

use jiff::Timestamp;
use serde::Serialize;

use crate::documents::{self, InputError};
use crate::flags::EXIT_USAGE;
use crate::flags::check::{CheckArgs, OutputFormat};
use crate::k8s;
use rubber_stamp_core::{
    AttestationSet, CheckStatus, CsrInput, Decision, Listing, NodeSet, Observed, Policy,
    ServiceSet, Verdict, decide,
};

/// Exit code for `approve`.
pub const EXIT_APPROVE: u8 = 0;
/// Exit code for `deny`.
pub const EXIT_DENY: u8 = 1;
/// Exit code for `pending`.
pub const EXIT_PENDING: u8 = 2;
/// Exit code for `ignore`.
pub const EXIT_IGNORE: u8 = 3;

/// What `check -o json` prints: the CSR's name, the verdict, and (for callers that say
/// more, such as `kubectl rubber-stamp explain`) `extra` fields after them.
#[derive(Serialize)]
struct Report<'a, E: Serialize> {
    csr: &'a str,
    #[serde(flatten)]
    verdict: &'a Verdict,
    #[serde(flatten)]
    extra: &'a E,
}

/// No extra fields: `check`'s own report.
#[derive(Serialize)]
struct NoExtra {}

/// Runs `check`; returns the exit code for the decision, or 64 for unusable input.
pub fn run(args: &CheckArgs) -> ExitCode {
    match evaluate(args) {
        Ok((csr, verdict)) => {
            let mut out = io::stdout().lock();
            let written = match args.output {
                OutputFormat::Json => write_json(&mut out, &csr.name, &verdict),
                OutputFormat::Text => write_text(&mut out, &csr.name, &verdict),
            };
            if let Err(e) = written.and_then(|()| out.flush()) {
                let _ = writeln!(
                    io::stderr(),
                    "rubber-stamp-approver check: cannot write the verdict: {e}"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            ExitCode::from(exit_code(verdict.decision()))
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "rubber-stamp-approver check: error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The exit code for a decision.
pub fn exit_code(decision: Decision) -> u8 {
    match decision {
        Decision::Approve => EXIT_APPROVE,
        Decision::Deny => EXIT_DENY,
        Decision::Pending => EXIT_PENDING,
        Decision::Ignore => EXIT_IGNORE,
    }
}

/// Reads every input and decides.
pub fn evaluate(args: &CheckArgs) -> Result<(CsrInput, Verdict), InputError> {
    let mut policy = match &args.policy {
        Some(path) => documents::read_policy(path)?,
        None => Policy::default(),
    };
    if let Some(mode) = args.deny {
        policy.deny = mode;
    }
    let csr = documents::read_document(
        &args.file,
        "CertificateSigningRequest",
        documents::MAX_CSR_DOCUMENT_BYTES,
        documents::csr_document,
    )?;
    let attestations: AttestationSet = match &args.attestations {
        Some(path) => documents::read_document(
            path,
            "attestation snapshot",
            documents::MAX_ATTESTATIONS_DOCUMENT_BYTES,
            documents::attestations_document,
        )?
        .into(),
        None => AttestationSet::new(),
    };
    let nodes: Option<NodeSet> = match &args.nodes {
        Some(path) => {
            let nodes = documents::read_document(
                path,
                "Node list",
                documents::MAX_NODES_DOCUMENT_BYTES,
                documents::nodes_document,
            )?;
            Some(nodes.iter().map(k8s::node_record).collect())
        }
        None => None,
    };
    let services = read_services(args)?;
    let input = k8s::csr_input(&csr);
    let now = args.now.unwrap_or_else(Timestamp::now);
    let observed = Observed {
        attestations: &attestations,
        nodes: nodes.as_ref().map(|n| n as _),
        services: services.as_ref().map(|s| s as _),
        access_review: None,
        ownership: None,
    };
    let verdict = decide(&input, observed, &policy, now);
    Ok((input, verdict))
}

/// The Services and ServiceCIDRs given, or `None` when neither file was.
fn read_services(args: &CheckArgs) -> Result<Option<ServiceSet>, InputError> {
    if args.services.is_none() && args.service_cidrs.is_none() {
        return Ok(None);
    }
    let mut set = ServiceSet::new();
    if let Some(path) = &args.services {
        let services = documents::read_document(
            path,
            "Service list",
            documents::MAX_SERVICES_DOCUMENT_BYTES,
            documents::services_document,
        )?;
        for service in &services {
            set.insert(std::sync::Arc::new(k8s::service_record(service)));
        }
        set.set_services_listing(Listing::Listed);
    }
    if let Some(path) = &args.service_cidrs {
        let cidrs = documents::read_document(
            path,
            "ServiceCIDR list",
            documents::MAX_SERVICES_DOCUMENT_BYTES,
            documents::service_cidrs_document,
        )?;
        for cidr in &cidrs {
            set.insert_range(std::sync::Arc::new(k8s::service_range(cidr)));
        }
        set.set_ranges_listing(Listing::Listed);
    }
    Ok(Some(set))
}

/// Writes `check -o json`'s report on the CSR named `csr`.
pub fn write_json(out: &mut impl Write, csr: &str, verdict: &Verdict) -> io::Result<()> {
    write_json_with(out, csr, verdict, &NoExtra {})
}

/// Writes `check -o json`'s report with the fields of `extra` after the verdict's (one
/// JSON object: `extra` must serialize as a struct or map with names of its own).
pub fn write_json_with(
    out: &mut impl Write,
    csr: &str,
    verdict: &Verdict,
    extra: &impl Serialize,
) -> io::Result<()> {
    let report = Report {
        csr,
        verdict,
        extra,
    };
    serde_json::to_writer_pretty(&mut *out, &report).map_err(io::Error::other)?;
    writeln!(out)
}

/// Writes `check`'s text report on the CSR named `csr`: the decision, one line per check,
/// the summary and the attestation the verdict rests on.
pub fn write_text(out: &mut impl Write, csr: &str, verdict: &Verdict) -> io::Result<()> {
    let name = if csr.is_empty() { "(unnamed)" } else { csr };
    let decision = verdict.decision().as_str().to_ascii_uppercase();
    match (verdict.node(), verdict.reason()) {
        (Some(node), Some(reason)) => {
            writeln!(out, "CSR {name} for node {node}: {decision} ({reason})")?
        }
        (Some(node), None) => writeln!(out, "CSR {name} for node {node}: {decision}")?,
        (None, Some(reason)) => writeln!(out, "CSR {name}: {decision} ({reason})")?,
        (None, None) => writeln!(out, "CSR {name}: {decision}")?,
    }
    writeln!(out)?;
    for c in verdict.checks() {
        let status = match (c.status(), c.outcome()) {
            (CheckStatus::Passed, _) => "pass".to_owned(),
            (CheckStatus::Skipped, _) => "skip".to_owned(),
            (CheckStatus::Failed, Some(o)) => format!("FAIL {}", o.as_str().to_ascii_uppercase()),
            (CheckStatus::Failed, None) => "FAIL".to_owned(),
        };
        let reason = c.reason().map(|r| format!("{r}: ")).unwrap_or_default();
        writeln!(
            out,
            "{:>3}  {:<26} {:<13} {reason}{}",
            c.name().number(),
            c.name().as_str(),
            status,
            c.detail()
        )?;
    }
    writeln!(out)?;
    writeln!(out, "summary: {}", verdict.summary())?;
    if let Some(s) = verdict.supporting_attestation() {
        writeln!(
            out,
            "attestation: {} received at {}{}",
            s.node,
            s.received_at,
            s.peer_address
                .map(|p| format!(" from {p}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}
