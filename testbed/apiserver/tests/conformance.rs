//! The testbed cluster's conformance: what unmodified clients see of it.
//!
//! - `api`: its semantics through kube-rs (authentication, RBAC, SubjectAccessReview, CSR
//!   rules, the signer, concurrency, pagination, selectors, faults).
//! - `clients`: kube-rs machinery and kube-lease-manager against it.
//! - `events`: Events through `events.k8s.io/v1` and core `v1`, and their validation.
//! - `kubectl`: `/usr/bin/kubectl` against it.
//! - `tokens`: bound ServiceAccount tokens — TokenRequest, TokenReview, bearer use — and pods.

#[path = "conformance/api.rs"]
mod api;
#[path = "conformance/clients.rs"]
mod clients;
#[path = "conformance/events.rs"]
mod events;
#[path = "conformance/kubectl.rs"]
mod kubectl;
#[path = "conformance/tokens.rs"]
mod tokens;
