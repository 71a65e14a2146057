//! kubelet-rubber-stamp approver: approves kubelet serving certificate
//! signing requests only for the names and addresses each node has attested.
//!
//! The decision itself is the `rubber-stamp-core` crate; this crate feeds it and acts on
//! its verdicts.
//!
//! # Layout
//!
//! - [`flags`]: every command-line flag, turned into the checked configurations below.
//! - [`channel`]: the mutually authenticated attestation service agents stream to.
//! - [`store`]: the in-memory attestation store the channel writes and the decision
//!   reads (through `rubber_stamp_core::AttestationLookup`).
//! - [`controller`]: the Kubernetes controller: watch CSRs, Nodes and Services, decide,
//!   act, explain, on the Lease holder only.
//! - [`pki`]: the attestation port's serving certificate: kept in a Secret (own CA,
//!   renewed, bundle published for the agents) or brought as files; swapped without
//!   breaking streams.
//! - [`admin`]: admin HTTP server: attestation snapshot and Prometheus metrics.
//! - [`health`]: `grpc.health.v1` on a plaintext port.
//! - [`metrics`]: the Prometheus registry and every metric family.
//! - [`k8s`]: Kubernetes objects into the core's plain data.
//! - [`documents`]: the files `check` and `run` read (CSR objects, Node and Service lists,
//!   attestation snapshots, the policy), size-limited.
//! - [`check`]: the `check` command: one offline verdict.
//! - [`runtime`]: wiring for `run`: servers, tasks, shutdown and drain.

use std::process::ExitCode;

pub mod admin;
pub mod channel;
pub mod check;
pub mod controller;
pub mod documents;
pub mod flags;
pub mod health;
pub mod k8s;
pub mod kubectl;
pub mod metrics;
pub mod pki;
pub mod proof;
pub mod runtime;
pub mod store;

use flags::{Cli, Command};

/// Runs what the command line asked for and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Run(args) => {
            let started = runtime::logging::init(args.log_format, &args.log_filter)
                .map_err(|e| e.to_string())
                .and_then(|()| args.into_parts().map_err(|e| e.to_string()))
                .and_then(|(config, controller)| {
                    runtime::main(config, controller).map_err(|e| format!("{e:#}"))
                });
            match started {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("rubber-stamp-approver: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
