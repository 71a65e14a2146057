//! kubelet-rubber-stamp approver: approves kubelet serving certificate
//! signing requests only for the names and addresses each node has attested.
//!
//! # Layout
//!
//! - [`core`]: the pure decision core (no I/O): CSR parsing, canonicalisation,
//!   policy, `decide`.

pub mod core;
