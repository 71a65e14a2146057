//! The end-to-end tests' harness: the product's binaries and libraries wired together
//! against the testbed, as each area of tests needs them.
//!
//! # Layout
//!
//! - [`channel`]: the attested channel in-process: approver and agents on port 0, raw
//!   clients with any certificate, connection floods.
//! - [`controller`]: approver replicas with their controller against the testbed cluster,
//!   under the shipped RBAC; scripted agents; kubelet-shaped CSRs.
//! - [`deploy`]: the `deploy/` manifests rendered with kubectl; the rendered RBAC loaded
//!   into a testbed cluster ([`deploy::load_rendered_rbac`]).
//!
//! The testbed's parts are crates of their own under `testbed/`: the API server
//! (`rubber-stamp-apiserver`), simulated hosts (`rubber-stamp-hosts`), the kubelet
//! simulator (`rubber-stamp-kubelet-sim`), the sandbox (`rubber-stamp-sandbox`), the
//! shared kit (`rubber-stamp-testkit`) and the benchmarks (`rubber-stamp-bench`).

pub mod channel;
pub mod controller;
pub mod deploy;
