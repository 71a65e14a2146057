//! The flood valve: while more kubelet-serving CSRs are pending than the bound (by default
//! the number of Nodes + 100), approvals stop; decisions, Events and metrics go on. A burst
//! of CSRs far beyond the cluster's size is an attack or a broken kubelet, and a human
//! should look before anything more is signed.

use std::sync::atomic::{AtomicBool, Ordering};

use super::config::DEFAULT_FLOOD_HEADROOM;

/// The valve's state; shared by the reconciles and the status loop.
#[derive(Debug, Default)]
pub(crate) struct FloodValve {
    explicit_bound: Option<usize>,
    closed: AtomicBool,
}

/// A change of the valve's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValveChange {
    /// Approvals stop.
    Closed,
    /// Approvals resume.
    Opened,
}

/// The valve's state after an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValveState {
    /// Approvals are held back.
    pub(crate) closed: bool,
    /// Pending CSRs counted.
    pub(crate) pending: usize,
    /// The bound they were compared with.
    pub(crate) bound: usize,
    /// Whether this update changed the state.
    pub(crate) change: Option<ValveChange>,
}

// === impl FloodValve ===

impl FloodValve {
    /// A valve with a fixed bound, or (`None`) Nodes + [`DEFAULT_FLOOD_HEADROOM`].
    pub(crate) fn new(explicit_bound: Option<usize>) -> Self {
        Self {
            explicit_bound,
            closed: AtomicBool::new(false),
        }
    }

    /// The bound for a cluster of `nodes` Nodes.
    pub(crate) fn bound(&self, nodes: usize) -> usize {
        self.explicit_bound
            .unwrap_or_else(|| nodes.saturating_add(DEFAULT_FLOOD_HEADROOM))
    }

    /// Compares `pending` with the bound and records the result.
    pub(crate) fn update(&self, pending: usize, nodes: usize) -> ValveState {
        let bound = self.bound(nodes);
        let closed = pending > bound;
        let was = self.closed.swap(closed, Ordering::AcqRel);
        let change = match (was, closed) {
            (false, true) => Some(ValveChange::Closed),
            (true, false) => Some(ValveChange::Opened),
            _ => None,
        };
        ValveState {
            closed,
            pending,
            bound,
            change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_above_the_bound_and_reopens_at_it() {
        let valve = FloodValve::new(None);
        assert_eq!(valve.bound(10), 110);
        let s = valve.update(110, 10);
        assert!(!s.closed);
        assert_eq!(s.change, None);
        let s = valve.update(111, 10);
        assert!(s.closed);
        assert_eq!(s.change, Some(ValveChange::Closed));
        assert_eq!(valve.update(200, 10).change, None);
        let s = valve.update(110, 10);
        assert_eq!((s.closed, s.change), (false, Some(ValveChange::Opened)));
        let fixed = FloodValve::new(Some(2));
        assert!(fixed.update(3, 1000).closed);
    }
}
