//! Testbed for kubelet-rubber-stamp: the pieces tests, the sandbox and the
//! benchmarks share.
//!
//! # Layout
//!
//! - [`apiserver`]: the testbed cluster, an in-memory Kubernetes API server.
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).
//! - [`hosts`]: simulated hosts in network namespaces.
//! - [`kubelet`]: the kubelet simulator (serving CSR bootstrap, HTTPS).

pub mod apiserver;
pub mod hosts;
pub mod kubelet;
pub mod pki;
