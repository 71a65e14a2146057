//! Testbed for kubelet-rubber-stamp: the pieces tests, the sandbox and the
//! benchmarks share.
//!
//! # Layout
//!
//! - [`channel`]: the attested channel in-process: approver and agents on port 0, raw
//!   clients with any certificate.
//! - [`deploy`]: the `deploy/` manifests rendered with kubectl; the rendered RBAC loaded
//!   into a testbed cluster ([`deploy::load_rendered_rbac`]).
//! - [`controller`]: approver replicas with their controller against the testbed cluster,
//!   under the shipped RBAC; scripted agents; kubelet-shaped CSRs.
//! - [`kubelet`]: the kubelet simulator (serving CSR bootstrap, HTTPS).
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).
//! - [`sandbox`]: the whole system on one machine (the `sandbox` binary, end-to-end tests).

pub mod channel;
pub mod controller;
pub mod deploy;
pub mod kubelet;
pub mod sandbox;

pub use rubber_stamp_testkit::{pki, spawned};
