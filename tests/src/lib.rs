//! Testbed for kubelet-rubber-stamp: the pieces tests, the sandbox and the
//! benchmarks share.
//!
//! # Layout
//!
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).

pub mod pki;
