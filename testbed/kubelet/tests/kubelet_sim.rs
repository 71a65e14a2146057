//! The kubelet simulator, library and binary.
//!
//! - `csr`: its serving CSR is exactly a kubelet's (from the library, the binary, and
//!   the binary inside a simulated host).
//! - `serve`: certificate handling, the certificate directory and the HTTPS port.
//! - `hosts`: the binary inside a simulated host, serving on the host's own addresses.

#[path = "kubelet_sim/csr.rs"]
mod csr;
#[path = "kubelet_sim/hosts.rs"]
mod hosts;
#[path = "kubelet_sim/serve.rs"]
mod serve;

/// The `kubelet-sim` binary of this crate.
const KUBELET_SIM: &str = env!("CARGO_BIN_EXE_kubelet-sim");
