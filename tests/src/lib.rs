//! Testbed for kubelet-rubber-stamp: the pieces tests, the sandbox and the
//! benchmarks share.
//!
//! # Layout
//!
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).
//! - [`hosts`]: simulated hosts in network namespaces.

pub mod hosts;
pub mod pki;
