//! kubelet-rubber-stamp node agent: attests its node's hostname and addresses to every
//! approver replica over mutually authenticated gRPC, identified by the kubelet's own
//! client certificate.
//!
//! # Layout
//!
//! - [`config`]: flags with environment fallbacks → [`config::AgentConfig`].
//! - [`facts`]: hostname, interfaces and addresses (`sysinfo`), machine and boot ids.
//! - [`cloud`]: the cloud's instance metadata (AWS, GCE, Azure, OpenStack), a second source.
//! - [`identity`]: the client certificate and key, re-read to follow rotation.
//! - [`resolve`]: the approver Service name → replica endpoints.
//! - [`session`]: one stream per endpoint: report, answer challenges, pass on proof
//!   receipts, reconnect.
//! - [`proof`]: the proof listener: probe frames from the approver become receipts.
//! - [`readiness`]: ready while a replica acknowledged a report within its max age.
//! - [`health`]: `grpc.health.v1` (liveness `""`, readiness `attested`).
//! - [`runtime`]: wiring and shutdown.

pub mod cloud;
pub mod config;
pub mod facts;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod proof;
pub mod readiness;
pub mod resolve;
pub mod runtime;
pub mod session;
