//! The checks of the decision, one file each, in the order `decide` runs them. Each is a
//! method of [`Ctx`], the decision's read-only view of one CSR and what was observed.

mod attestation_fresh;
mod authorization;
mod dns_sans;
mod expiration;
mod facts;
mod ip_sans;
mod ip_sans_owned;
mod node_object;
mod peer_binding;
mod requestor;
mod san_shape;
mod subject;
mod uniqueness;
mod usages;

pub(crate) use std::fmt::{self, Display, Write as _};
pub(crate) use std::net::IpAddr;
pub(crate) use std::ops::ControlFlow;
pub(crate) use std::sync::Arc;

pub(crate) use jiff::{SignedDuration, Timestamp};

pub(crate) use crate::attestation::{Attestation, AttestationLookup, canonical_ip, is_fresh};
pub(crate) use crate::input::{AccessReview, CsrInput};
pub(crate) use crate::names::{hostname_matches_node, quoted, reserved_name, same_name};
pub(crate) use crate::node::{AddressKey, NodeLookup, NodeRecord};
pub(crate) use crate::node_name::{NODE_CN_PREFIX, NODES_GROUP};
pub(crate) use crate::policy::{HumanDuration, Policy};
pub(crate) use crate::request::{MAX_PROBLEMS_KEPT, ParsedRequest};
pub(crate) use crate::services::{ServiceJudgement, ServiceLookup, ServiceRule};
pub(crate) use crate::verdict::{CheckName, CheckReport, Outcome, Reason};

pub(crate) use authorization::authorization;
pub(crate) use facts::{Facts, id_comparisons};
pub use usages::{USAGE_DIGITAL_SIGNATURE, USAGE_KEY_ENCIPHERMENT, USAGE_SERVER_AUTH};

/// The creation timestamp has one-second resolution: an attestation counts as
/// "received after the CSR" by that timestamp only when it is at least this much
/// later (plus the policy's clock skew, since the two come from different clocks).
pub(crate) const CREATION_RESOLUTION: SignedDuration = SignedDuration::from_secs(1);

pub(crate) struct Ctx<'a> {
    pub(crate) csr: &'a CsrInput,
    pub(crate) req: &'a ParsedRequest,
    pub(crate) node: Option<&'a str>,
    pub(crate) facts: &'a Facts,
    pub(crate) attestations: &'a dyn AttestationLookup,
    pub(crate) nodes: Option<&'a dyn NodeLookup>,
    pub(crate) services: Option<&'a dyn ServiceLookup>,
    pub(crate) policy: &'a Policy,
    pub(crate) now: Timestamp,
}

/// A list for a detail: the first few items, then "and N more".
pub(crate) struct Listed<'a, T>(&'a [T], usize);

impl<T: Display> Display for Listed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().take(MAX_PROBLEMS_KEPT).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        let shown = self.0.len().min(MAX_PROBLEMS_KEPT);
        if self.1 > shown {
            write!(f, " and {} more", self.1 - shown)?;
        }
        Ok(())
    }
}

/// Problems found by one check, kept bounded.
#[derive(Default)]
pub(crate) struct Problems {
    items: Vec<String>,
    count: usize,
}

impl Problems {
    pub(crate) fn push(&mut self, problem: impl FnOnce() -> String) {
        self.count += 1;
        if self.items.len() < MAX_PROBLEMS_KEPT {
            self.items.push(problem());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn joined(&self) -> String {
        let mut s = self.items.join("; ");
        if self.count > self.items.len() {
            let _ = write!(s, "; and {} more", self.count - self.items.len());
        }
        s
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// The node name, or the skipped report for a check that needs it.
    pub(crate) fn need_node(&self, name: CheckName) -> Result<&str, CheckReport> {
        self.node.ok_or_else(|| {
            CheckReport::skipped(name, "not evaluated: the subject names no valid node")
        })
    }

    pub(crate) fn is_fresh(&self, a: &Attestation) -> bool {
        is_fresh(a.received_at, self.now, self.policy)
    }

    /// Whether something observed at `at` is still within the policy's attestationMaxAge.
    pub(crate) fn is_fresh_at(&self, at: Timestamp) -> bool {
        is_fresh(at, self.now, self.policy)
    }
}

/// Where an address appears in an attestation.
pub(crate) enum Placement<'a> {
    /// On a counted interface, or stated by a metadata source the policy accepts for IP
    /// SANs (the interface's or the source's name).
    Counted(&'a str),
    /// Only on excluded interfaces (the first one named).
    ExcludedOnly(&'a str),
    /// Only stated by metadata sources the policy does not accept for IP SANs (the first).
    NotAccepted(&'a str),
    /// Nowhere.
    Absent,
}
