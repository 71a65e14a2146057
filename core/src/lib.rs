//! The decision core of kubelet-rubber-stamp: pure functions from plain data to a verdict.
//!
//! Nothing in this crate does I/O or knows about Kubernetes, gRPC or tokio — its
//! `Cargo.toml` has none of them. The controller, the offline `check` command, the fuzzer
//! and the benches all call it the same way:
//!
//! - [`parse_request`] turns `spec.request` into a small owned [`ParsedRequest`] (or a
//!   [`RequestError`]) once per CSR;
//! - [`decide()`] (parses inside) and [`decide_parsed`] (takes the parsed result) run the
//!   checks of docs/design.md against what was [`Observed`] (an [`AttestationLookup`], an
//!   optional [`NodeLookup`], an optional [`ServiceLookup`] and check 14's
//!   [`AccessReview`]), a [`Policy`] and the current time, and return a [`Verdict`].
//!
//! # Layout
//!
//! - [`mod@decide`]: the order of the checks; `checks` (private): one file per check.
//! - [`request`] and [`der`]: `spec.request` parsed once, framed as strictly as Go reads it.
//! - [`names`]: canonical DNS names and IPs, reserved names, look-alikes.
//! - [`node_name`]: [`NodeName`], the one node-name rule, and a kubelet's CN and group.
//! - [`policy`]: every tunable, from YAML.
//! - [`attestation`], [`node`], [`services`]: what agents, Node objects and Services say,
//!   indexed for lookups.
//! - [`input`]: the CSR's facts the decision reads.
//! - [`ownership`]: check 15's input, what came of probing each IP SAN.
//! - [`verdict`]: the decision and every check's result.

pub mod attestation;
mod checks;
pub mod decide;
pub mod der;
pub mod input;
pub mod names;
pub mod node;
pub mod node_name;
pub mod ownership;
pub mod policy;
pub mod request;
pub mod services;
pub mod verdict;

pub use attestation::{
    Attestation, AttestationLookup, AttestationSet, AttestationSnapshot, INTERFACES_SOURCE,
    InterfaceFacts, MetadataFacts, SourceReport, is_fresh,
};
pub use checks::{USAGE_DIGITAL_SIGNATURE, USAGE_KEY_ENCIPHERMENT, USAGE_SERVER_AUTH};
pub use decide::{Observed, decide, decide_parsed};
pub use input::{AccessReview, CsrInput, KUBELET_SERVING_SIGNER};
pub use node::{AddressKey, NodeAddress, NodeLookup, NodeRecord, NodeSet};
pub use node_name::{MAX_NODE_NAME_BYTES, NODE_CN_PREFIX, NODES_GROUP, NodeName, NodeNameError};
pub use ownership::{NoProofs, Ownership, OwnershipLookup, ProofState};
pub use policy::{
    DenyMode, MetadataSources, OwnershipProof, Policy, PolicyError, ProofMode, ServiceAddressMode,
    SourcePattern,
};
pub use request::{ParsedRequest, RequestError, parse_request};
pub use services::{
    Listing, ServiceAddress, ServiceField, ServiceLookup, ServiceRange, ServiceRecord, ServiceSet,
};
pub use verdict::{
    CheckName, CheckReport, CheckStatus, Decision, Outcome, Reason, SupportingAttestation, Verdict,
};
