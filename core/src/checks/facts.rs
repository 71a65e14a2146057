//! What the node's own attestation allows checks 8 and 9 to conclude: whether the facts are
//! evidence enough to deny a SAN they lack.

use super::*;

/// What the node's own attestation allows the SAN checks to conclude.
///
/// A denial cannot be undone, so a SAN missing from the facts is a definite
/// violation only when the facts are evidence that the node lacks it: fresh,
/// received after the CSR (judged on one clock), complete by the agent's own
/// account, consistent (they contain the address the report's connection came
/// from: the host's own view of itself), and not doubted by the Node object
/// (machine-id and boot-id). Anything less leaves the CSR pending and says why.
pub(crate) struct Facts {
    pub(crate) attestation: Option<Arc<Attestation>>,
    pub(crate) fresh: bool,
    /// Why these facts cannot show that the node lacks a SAN; empty when they can.
    pub(crate) doubts: Vec<String>,
}

impl Facts {
    pub(crate) fn new(
        csr: &CsrInput,
        attestation: Option<Arc<Attestation>>,
        node: Option<&NodeRecord>,
        policy: &Policy,
        now: Timestamp,
    ) -> Self {
        let Some(a) = attestation else {
            return Self {
                attestation: None,
                fresh: false,
                doubts: vec!["there is no attestation".to_owned()],
            };
        };
        let fresh = is_fresh(a.received_at, now, policy);
        let mut doubts = Vec::new();
        if !fresh {
            doubts.push("the attestation is stale".to_owned());
        }
        if a.received_at > now {
            doubts.push(format!(
                "the attestation's receive time {} lies ahead of the approver's clock ({now})",
                a.received_at
            ));
        }
        if let Some(doubt) = Self::predates(csr, &a, policy) {
            doubts.push(doubt);
        }
        if let Err(incomplete) = a.completeness() {
            doubts.push(incomplete);
        }
        match a.peer_address.map(canonical_ip) {
            None => doubts.push(
                "the approver recorded no source address for the report, so it cannot be tied to the host that sent it"
                    .to_owned(),
            ),
            Some(peer) if !a.addresses().any(|(_, ip)| ip == peer) => doubts.push(format!(
                "the report does not contain {peer}, the address its connection came from, so it may not describe the host that sent it"
            )),
            Some(_) => {}
        }
        if let Some(node) = node {
            let mismatched: Vec<&str> = id_comparisons(&a, node)
                .filter(|c| !c.matches)
                .map(|c| c.what)
                .collect();
            if !mismatched.is_empty() {
                doubts.push(format!(
                    "the agent's {} differs from Node {}'s, so the facts may come from another machine",
                    mismatched.join(" and "),
                    node.name
                ));
            }
        }
        Self {
            attestation: Some(a),
            fresh,
            doubts,
        }
    }

    /// Why the attestation may predate the CSR, if it may. On the deciding approver's
    /// own clock when it knows when it first saw the CSR; otherwise against the CSR's
    /// `creationTimestamp` (the API server's clock) with the policy's skew bound.
    pub(crate) fn predates(csr: &CsrInput, a: &Attestation, policy: &Policy) -> Option<String> {
        match (csr.seen_at, csr.created_at) {
            (Some(seen), _) if a.received_at <= seen => Some(format!(
                "the attestation (received {}) is not newer than this approver's first sighting of the CSR ({seen})",
                a.received_at
            )),
            (Some(_), _) => None,
            (None, None) => {
                Some("the CSR's creation time is unknown, so the facts may predate it".to_owned())
            }
            (None, Some(created)) => {
                let margin = CREATION_RESOLUTION + policy.clock_skew.get();
                (a.received_at.duration_since(created) < margin).then(|| {
                    format!(
                        "the attestation (received {}) is not clearly newer than the CSR (created {created}; allowing {} for the creation time's resolution and clock skew)",
                        a.received_at,
                        HumanDuration::new(margin)
                    )
                })
            }
        }
    }

    /// True when a SAN missing from these facts is a definite violation.
    pub(crate) fn conclusive(&self) -> bool {
        self.doubts.is_empty()
    }

    /// The outcome and reason for a SAN missing from these facts.
    pub(crate) fn missing(&self, deny_reason: Reason) -> (Outcome, Reason) {
        if self.conclusive() {
            (Outcome::Deny, deny_reason)
        } else {
            (Outcome::Pending, Reason::UnattestedAddress)
        }
    }

    pub(crate) fn explain(&self, detail: String) -> String {
        if self.conclusive() {
            detail
        } else {
            format!(
                "{detail}; waiting for a fresh, complete report from the node's agent instead of denying, because {}",
                self.doubts.join("; ")
            )
        }
    }
}

/// One identifier known to both the agent and the Node object.
pub(crate) struct IdComparison {
    pub(crate) what: &'static str,
    pub(crate) field: &'static str,
    pub(crate) ours: String,
    pub(crate) theirs: String,
    pub(crate) matches: bool,
}

/// The machine-id and boot-id that both the attestation and the Node state.
pub(crate) fn id_comparisons<'a>(
    a: &'a Attestation,
    node: &'a NodeRecord,
) -> impl Iterator<Item = IdComparison> + 'a {
    [
        (
            "machine-id",
            "machineID",
            a.machine_id.as_deref(),
            node.machine_id.as_deref(),
        ),
        (
            "boot-id",
            "bootID",
            a.boot_id.as_deref(),
            node.boot_id.as_deref(),
        ),
    ]
    .into_iter()
    .filter_map(|(what, field, ours, theirs)| {
        let ours = ours.map(str::trim).filter(|s| !s.is_empty())?;
        let theirs = theirs.map(str::trim).filter(|s| !s.is_empty())?;
        Some(IdComparison {
            what,
            field,
            matches: ours.eq_ignore_ascii_case(theirs),
            ours: ours.to_owned(),
            theirs: theirs.to_owned(),
        })
    })
}
