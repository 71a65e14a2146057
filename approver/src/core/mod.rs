//! The decision core: pure functions from plain data to a verdict.
//!
//! Nothing in this module does I/O or knows about Kubernetes, gRPC or tokio.
//! The controller, the offline `check` command, the fuzzer and the benches all
//! call it the same way.

pub mod attestation;
pub mod node;

pub use attestation::{
    Attestation, AttestationLookup, AttestationSet, AttestationSnapshot, InterfaceFacts,
};
pub use node::{AddressKey, NodeAddress, NodeLookup, NodeRecord, NodeSet};
