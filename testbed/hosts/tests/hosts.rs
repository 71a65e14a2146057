//! Simulated hosts against the real kernel (root, `ip`, `unshare`; `SKIP_NETNS=1` skips).
//!
//! - `network`: reachability, hostnames, interfaces, address changes, cleanup on drop.
//! - `sweep`: what interrupted runs leave behind, and its removal.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[path = "hosts/network.rs"]
mod network;
#[path = "hosts/sweep.rs"]
mod sweep;

/// Every `Network::new` sweeps dead runs' leftovers, so the sweep tests, which make
/// leftovers on purpose and then look at them, run alone; the others share.
static NETWORKS: RwLock<()> = RwLock::new(());

/// For a test that may start networks alongside others.
fn shared() -> RwLockReadGuard<'static, ()> {
    NETWORKS.read().unwrap_or_else(PoisonError::into_inner)
}

/// For a test that no other test may start a network during.
fn alone() -> RwLockWriteGuard<'static, ()> {
    NETWORKS.write().unwrap_or_else(PoisonError::into_inner)
}
