//! The testbed's shared kit: what the tests of every crate, the testbed, the sandbox and
//! the benchmarks all need, once. It depends on the wire contract and the agent, never on
//! the decision core, the approver or kube, so that those can test with it.
//!
//! # Layout
//!
//! - [`pki`]: test certificate authorities and leaf certificates (rcgen).
//! - [`csr`]: the one builder of certificate requests, kubelet-shaped or hostile.
//! - [`channel`]: the attested channel's PKI on disk and its server name.
//! - [`agent`]: simulated agents running the agent's own session with facts of their own;
//!   the controller tests' scripted agent.
//! - [`raw`]: raw attestation clients for negative tests (any certificate, any bytes, forged
//!   proof receipts); probe frames to any proof listener.
//! - [`command`]: the approver's and the agent's command lines as the testbed runs them.
//! - [`binaries`]: finding (or building) the real binaries.
//! - [`spawned`]: release binaries as child processes; Prometheus text as a map.
//! - [`procfs`]: a process's memory and CPU time from `/proc`.
//! - [`http`]: one HTTP/1.1 `GET`.

pub mod agent;
pub mod binaries;
pub mod channel;
pub mod command;
pub mod csr;
pub mod http;
pub mod pki;
pub mod procfs;
pub mod raw;
pub mod spawned;
