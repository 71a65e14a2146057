//! The decision core: pure functions from plain data to a verdict.
//!
//! Nothing in this module does I/O or knows about Kubernetes, gRPC or tokio.
//! The controller, the offline `check` command, the fuzzer and the benches all
//! call it the same way:
//!
//! - [`parse_request`] turns `spec.request` into a small owned
//!   [`ParsedRequest`] (or a [`RequestError`]) once per CSR;
//! - [`decide`] (parses inside) and [`decide_parsed`] (takes the parsed
//!   result) run checks 1–13 of DESIGN.md against what was [`Observed`] (an
//!   [`AttestationLookup`], an optional [`NodeLookup`] and an optional
//!   [`ServiceLookup`]), a [`Policy`] and the current time, and return a
//!   [`Verdict`].

pub mod attestation;
pub mod decide;
pub mod der;
pub mod input;
pub mod names;
pub mod node;
pub mod node_name;
pub mod policy;
pub mod request;
pub mod services;
pub mod verdict;

pub use attestation::{
    Attestation, AttestationLookup, AttestationSet, AttestationSnapshot, INTERFACES_SOURCE,
    InterfaceFacts, SourceReport,
};
pub use decide::{AccessReview, Observed, decide, decide_parsed, is_fresh};
pub use input::{CsrInput, KUBELET_SERVING_SIGNER};
pub use node::{AddressKey, NodeAddress, NodeLookup, NodeRecord, NodeSet};
pub use node_name::{MAX_NODE_NAME_BYTES, NODE_CN_PREFIX, NODES_GROUP, NodeName, NodeNameError};
pub use policy::{DenyMode, Policy, PolicyError, ServiceAddressMode};
pub use request::{ParsedRequest, RequestError, parse_request};
pub use services::{
    Listing, ServiceAddress, ServiceField, ServiceLookup, ServiceRange, ServiceRecord, ServiceSet,
};
pub use verdict::{
    CheckName, CheckReport, CheckStatus, Decision, Outcome, Reason, SupportingAttestation, Verdict,
};
