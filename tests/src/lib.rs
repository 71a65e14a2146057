//! Testbed for kubelet-rubber-stamp: the pieces tests, the sandbox and the
//! benchmarks share.
//!
//! # Layout
//!
//! - [`apiserver`]: the testbed cluster, an in-memory Kubernetes API server.
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).

pub mod apiserver;
pub mod pki;
