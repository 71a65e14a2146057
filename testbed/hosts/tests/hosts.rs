//! Simulated hosts against the real kernel (root, `ip`, `unshare`; `SKIP_NETNS=1` skips).
//!
//! - `network`: reachability, hostnames, interfaces, address changes, cleanup on drop.
//! - `routed`: the routed topology: delivery to the owner only, unowned addresses, cleanup.
//! - `sweep`: what interrupted runs leave behind, and its removal.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[path = "hosts/network.rs"]
mod network;
#[path = "hosts/routed.rs"]
mod routed;
#[path = "hosts/sweep.rs"]
mod sweep;

/// Every `Network::new` sweeps dead runs' leftovers, so the sweep tests, which make
/// leftovers on purpose and then look at them, run alone; the others share.
static NETWORKS: RwLock<()> = RwLock::const_new(());

/// For a test that may start networks alongside others.
async fn shared() -> RwLockReadGuard<'static, ()> {
    NETWORKS.read().await
}

/// [`shared`], for a synchronous test.
fn shared_blocking() -> RwLockReadGuard<'static, ()> {
    NETWORKS.blocking_read()
}

/// For a test that no other test may start a network during.
/// (Blocking: the sweep tests are synchronous.)
fn alone() -> RwLockWriteGuard<'static, ()> {
    NETWORKS.blocking_write()
}
