//! What an operator installs: `deploy/` as rendered, its RBAC live in the testbed
//! cluster, and the gRPC port's PKI bootstrapped through it.
//!
//! - `manifests`: the rendered manifests against the binaries' real flags and ports, and
//!   the generated configuration reference.
//! - `helm`: the Helm chart, rendered by Helm, against the same manifests and checks.
//! - `pki`: the attestation port's CA and certificates in a Secret, as the approver's
//!   ServiceAccount.

#[path = "deploy/helm.rs"]
mod helm;
#[path = "deploy/manifests.rs"]
mod manifests;
#[path = "deploy/monitoring.rs"]
mod monitoring;
#[path = "deploy/pki.rs"]
mod pki;
