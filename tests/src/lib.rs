//! Testbed for kubelet-rubber-stamp: the pieces tests, the sandbox and the
//! benchmarks share.
//!
//! # Layout
//!
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).
//! - [`channel`]: the attested channel in-process: approver and agents on port 0, raw
//!   clients with any certificate.

pub mod channel;
pub mod pki;
