//! Integration tests of the decision core.
//!
//! One test binary (faster to build and link than one per file):
//! - `support`: rcgen-made kubelet-shaped CSRs, attestations, Nodes, a test world;
//! - `decide_table`: every check, both outcomes, every look-alike;
//! - `metadata`: a cloud's instance metadata backing SANs, by policy;
//! - `ownership`: check 15, what the probes of IP SANs found, by policy;
//! - `fixtures`: CSRs made by OpenSSL, Python `cryptography` and Go, and Go's verdicts
//!   on framing.

mod decide_table;
mod fixtures;
mod metadata;
mod ownership;
mod support;
