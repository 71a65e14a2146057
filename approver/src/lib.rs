//! kubelet-rubber-stamp approver: approves kubelet serving certificate
//! signing requests only for the names and addresses each node has attested.
//!
//! # Layout
//!
//! - [`core`]: the pure decision core (no I/O): CSR parsing, canonicalisation,
//!   policy, `decide`.
//! - [`k8s`]: Kubernetes objects into the core's plain data.
//! - [`cli`]: the command line (`check`).

pub mod cli;
pub mod core;
pub mod k8s;
