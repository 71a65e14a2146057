//! The controller against the testbed cluster: approver replicas in-process, scripted
//! agents, kubelet-shaped CSRs, the shipped RBAC.
//!
//! - `admin_auth`: the secure admin port: 401, 403 and who reads what.
//! - `decisions`: approve, deny, wait, and the Events and metrics that say why.
//! - `failover`: one Lease, two replicas, the testbed's faults.
//! - `ownership`: check 15, the proof of address ownership: probes, receipts (forged,
//!   replayed, late, flooded), limits, and agents without a proof listener.
//! - `rbac`: the shipped RBAC is enough, and each rule of it is needed.
//! - `tokens`: agents identified by ServiceAccount tokens, and the rules that path needs.

#[path = "controller/admin_auth.rs"]
mod admin_auth;
#[path = "controller/decisions.rs"]
mod decisions;
#[path = "controller/failover.rs"]
mod failover;
#[path = "controller/kubectl_plugin.rs"]
mod kubectl_plugin;
#[path = "controller/ownership.rs"]
mod ownership;
#[path = "controller/rbac.rs"]
mod rbac;
#[path = "controller/tokens.rs"]
mod tokens;
