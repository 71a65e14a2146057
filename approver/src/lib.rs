//! kubelet-rubber-stamp approver: approves kubelet serving certificate
//! signing requests only for the names and addresses each node has attested.
//!
//! # Layout
//!
//! - [`store`]: the in-memory attestation store the gRPC service writes and the
//!   decision reads (through `core::AttestationLookup`).
//! - [`grpc`]: the mutually authenticated attestation service agents stream to.
//! - [`admin`]: admin HTTP server: attestation snapshot and Prometheus metrics.
//! - [`health`]: `grpc.health.v1` on a plaintext port.
//! - [`metrics`]: the Prometheus registry and the metric families.
//! - [`pki`]: the attestation port's serving certificate: kept in a Secret (own CA,
//!   renewed, bundle published for the agents) or brought as files; swapped without
//!   breaking streams.
//! - [`controller`]: the Kubernetes controller: watch CSRs and Nodes, decide, act, explain,
//!   on the Lease holder only.
//! - [`runtime`]: wiring for `run`: flags, servers, shutdown and drain.
//! - [`k8s`]: Kubernetes objects into the core's plain data.
//! - [`cli`]: the command line (`check`, `run`).

pub mod admin;
pub mod cli;
pub mod controller;
pub mod grpc;
pub mod health;
pub mod k8s;
pub mod metrics;
pub mod pki;
pub mod runtime;
pub mod store;
