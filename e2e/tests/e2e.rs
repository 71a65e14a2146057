//! End to end: the release binaries on simulated hosts (network namespaces), the testbed
//! cluster, kubelet simulators — the whole system as the sandbox runs it.
//!
//! - `agent_restart`, `ip_change`, `leader_failover`, `rollout`, `scenario`, `stolen_token`.
//!
//! Each test starts a whole system (approver replicas, agents, kubelets as processes):
//! they run one at a time, as their own binaries did, so that each measures the product
//! and not two systems sharing two cores.

use tokio::sync::{Mutex, MutexGuard};

#[path = "e2e/agent_restart.rs"]
mod agent_restart;
#[path = "e2e/ip_change.rs"]
mod ip_change;
#[path = "e2e/leader_failover.rs"]
mod leader_failover;
#[path = "e2e/rollout.rs"]
mod rollout;
#[path = "e2e/scenario.rs"]
mod scenario;
#[path = "e2e/stolen_token.rs"]
mod stolen_token;

static SYSTEMS: Mutex<()> = Mutex::const_new(());

/// Held for the whole of a test that runs a system.
async fn one_system_at_a_time() -> MutexGuard<'static, ()> {
    SYSTEMS.lock().await
}
