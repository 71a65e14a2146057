//! What a decision says to people: the Event (reason, type, note in plain words listing the
//! failing checks), the state key that decides whether it is new, and the messages of the
//! Approved and Denied conditions.
//!
//! Advice is never in the note's words: every Event and condition whose reason needs a
//! person ends with the operations guide's section for that reason
//! (`docs/operations.md#<reason in lower case>`), which says what to look at first. No note
//! suggests switching a check off.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use super::table::StateKey;
use super::valve::ValveState;
use rubber_stamp_core::{Decision, Outcome as CoreOutcome, Reason, Verdict};

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "rubber-stamp-approver";
/// Longest Event note (events.k8s.io/v1 refuses more than 1 KiB).
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest condition message written to a CSR.
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 4096;
/// The condition reason of approvals.
pub const APPROVED_REASON: &str = "AutoApproved";

/// The Event reasons besides the core's pending and deny reasons.
pub mod reasons {
    /// Approved (Normal).
    pub const APPROVED: &str = "Approved";
    /// Denied (Warning).
    pub const DENIED: &str = "Denied";
    /// Dry run: would have been approved (Normal).
    pub const WOULD_APPROVE: &str = "WouldApprove";
    /// Dry run: would have been denied (Warning).
    pub const WOULD_DENY: &str = "WouldDeny";
    /// Approvable, but the flood valve holds approvals back (Warning).
    pub const APPROVAL_HELD: &str = "ApprovalHeld";
    /// On the Lease: approvals stopped (Warning).
    pub const FLOOD_VALVE_CLOSED: &str = "FloodValveClosed";
    /// On the Lease: approvals resumed (Normal).
    pub const FLOOD_VALVE_OPENED: &str = "FloodValveOpened";
    /// On a Node: its approvals are held, it has too many pending CSRs (Warning).
    pub const NODE_APPROVALS_HELD: &str = "NodeApprovalsHeld";
    /// On a Node: its approvals resumed (Normal).
    pub const NODE_APPROVALS_RESUMED: &str = "NodeApprovalsResumed";
}

/// The operations guide, whose sections are named after the reasons.
pub const OPERATIONS_GUIDE: &str = "docs/operations.md";

/// Where the operations guide explains `reason`: `docs/operations.md#<reason lowercased>`.
pub fn guide_for(reason: &str) -> String {
    format!("{OPERATIONS_GUIDE}#{}", reason.to_ascii_lowercase())
}

/// A flood valve holding an approvable CSR back.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Held<'a> {
    /// The requestor's own bound.
    Node(&'a NodeHold),
    /// The cluster-wide bound.
    Valve(&'a ValveState),
}

/// The per-node flood valve's hold on one requestor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeHold {
    /// `spec.username` of the held CSRs.
    pub(crate) requestor: String,
    /// The node, when the requestor is `system:node:<name>`.
    pub(crate) node: Option<String>,
    /// Its pending kubelet-serving CSRs.
    pub(crate) pending: usize,
    /// `--max-pending-csrs-per-node`.
    pub(crate) bound: usize,
}

/// The note of the `NodeApprovalsHeld` Event.
pub(crate) fn node_hold_note(hold: &NodeHold) -> String {
    let who = hold
        .node
        .as_deref()
        .map_or_else(|| hold.requestor.clone(), |n| format!("node {n}"));
    with_guide(
        format!(
            "Approvals for {who} are held: {} kubelet-serving CSRs from {} are pending, more than the per-node bound of {}. Other nodes are still approved. Delete the unwanted CSRs (kubectl get csr) and find out why the node makes so many",
            hold.pending, hold.requestor, hold.bound
        ),
        reasons::NODE_APPROVALS_HELD,
        MAX_NOTE_BYTES,
    )
}

/// `text`, cut to leave room, then `; see <guide for reason>`.
fn with_guide(text: String, reason: &str, max: usize) -> String {
    let pointer = format!("; see {}", guide_for(reason));
    let mut out = truncate(text, max.saturating_sub(pointer.len()));
    out.push_str(&pointer);
    out
}

/// The outcome label of the decisions metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Approve,
    Deny,
    Pending,
    Held,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Pending => "pending",
            Self::Held => "held",
        }
    }
}

/// A decision in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Explanation {
    pub(crate) outcome: Outcome,
    pub(crate) reason: &'static str,
    pub(crate) warning: bool,
    pub(crate) note: String,
    pub(crate) key: StateKey,
}

/// Explains `verdict` (check 14 included). `held` is the flood valve that holds an
/// approvable CSR back, if one does.
pub(crate) fn explain(verdict: &Verdict, held: Option<Held<'_>>, dry_run: bool) -> Explanation {
    let (outcome, reason, warning, note) = match (verdict.decision(), held) {
        (Decision::Approve, Some(Held::Valve(valve))) => (
            Outcome::Held,
            reasons::APPROVAL_HELD,
            true,
            format!(
                "Every check passed, but approvals are paused: {} kubelet-serving CSRs are pending, more than the flood valve's bound of {}",
                valve.pending, valve.bound
            ),
        ),
        (Decision::Approve, Some(Held::Node(hold))) => (
            Outcome::Held,
            reasons::APPROVAL_HELD,
            true,
            format!(
                "Every check passed, but approvals for {} are held: it has {} kubelet-serving CSRs pending, more than the per-node bound of {}",
                hold.node
                    .as_deref()
                    .map_or_else(|| hold.requestor.clone(), |n| format!("node {n}")),
                hold.pending,
                hold.bound
            ),
        ),
        (Decision::Approve, None) if dry_run => (
            Outcome::Approve,
            reasons::WOULD_APPROVE,
            false,
            format!("Dry run, would approve: {}", verdict.summary()),
        ),
        (Decision::Approve, None) => (
            Outcome::Approve,
            reasons::APPROVED,
            false,
            format!("Approved: {}", verdict.summary()),
        ),
        (Decision::Deny, _) if dry_run => (
            Outcome::Deny,
            reasons::WOULD_DENY,
            true,
            format!("Dry run, would deny: {}", verdict.summary()),
        ),
        (Decision::Deny, _) => (
            Outcome::Deny,
            reasons::DENIED,
            true,
            format!("Denied: {}", verdict.summary()),
        ),
        (Decision::Pending | Decision::Ignore, _) => {
            // Name the Event after the first failure that needs a person (a conflict, a
            // would-be denial, …) rather than one that only needs time.
            let failures = || {
                verdict
                    .failed()
                    .filter(|c| c.outcome() == Some(CoreOutcome::Pending))
            };
            let needs_a_person = failures()
                .find(|c| c.would_deny() || !c.reason().is_some_and(waits_for_time))
                .and_then(|c| c.reason());
            let reason = needs_a_person.or_else(|| verdict.reason());
            (
                Outcome::Pending,
                reason.map_or("Pending", Reason::as_str),
                needs_a_person.is_some(),
                format!("Left pending: {}", verdict.summary()),
            )
        }
    };
    // Whatever needs a person points to the guide's section for its reason; a denial to
    // the section of the check's reason (AddressNotAllowed, …), not of `Denied`.
    let note = if warning {
        let section = match verdict.decision() {
            Decision::Deny => verdict.reason().map_or(reason, Reason::as_str),
            _ => reason,
        };
        with_guide(note, section, MAX_NOTE_BYTES)
    } else {
        truncate(note, MAX_NOTE_BYTES)
    };
    Explanation {
        outcome,
        reason,
        warning,
        note,
        key: StateKey {
            reason,
            fingerprint: fingerprint(verdict),
        },
    }
}

/// States logged and counted but not published as an Event: a probe about to be sent or
/// in flight ends within `--proof-timeout` (2 s), and an Event for it would double the
/// Events of every CSR with an IP SAN — in a bootstrap storm the event recorder's cost
/// grows with the square of the Events in its window (docs/performance.md). If the wait
/// lasts (probes put off by their limits), the reason gauge shows it
/// (`rubber_stamp_controller_pending_csrs_by_reason`), and the log line is there.
pub(crate) fn without_event(reason: &str) -> bool {
    reason == Reason::AwaitingOwnershipProof.as_str()
}

/// Reasons that resolve themselves when the agent reports or a probe ends (Normal
/// Events); every other reason for leaving a CSR pending is a Warning.
fn waits_for_time(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::AwaitingAttestation
            | Reason::UnattestedAddress
            | Reason::AwaitingServices
            | Reason::AwaitingOwnershipProof
    )
}

/// The failing checks' names, reasons and would-deny flags, hashed.
fn fingerprint(verdict: &Verdict) -> u64 {
    let mut h = DefaultHasher::new();
    verdict.decision().hash(&mut h);
    for c in verdict.failed() {
        c.name().hash(&mut h);
        c.reason().hash(&mut h);
        c.would_deny().hash(&mut h);
    }
    h.finish()
}

/// The message of the Approved condition: who approved, on which attestation.
pub(crate) fn approval_message(verdict: &Verdict, replica: &str) -> String {
    let basis = match verdict.supporting_attestation() {
        Some(s) => format!(
            "every check passed against node {}'s attestation received at {}{}",
            s.node,
            s.received_at,
            s.peer_address
                .map(|p| format!(" from {p}"))
                .unwrap_or_default()
        ),
        None => "every check passed".to_owned(),
    };
    truncate(
        format!("Approved by {REPORTING_CONTROLLER} ({replica}): {basis}"),
        MAX_CONDITION_MESSAGE_BYTES,
    )
}

/// The reason and message of the Denied condition: the failing checks.
pub(crate) fn denial(verdict: &Verdict, replica: &str) -> (String, String) {
    let reason = verdict
        .reason()
        .map_or_else(|| reasons::DENIED.to_owned(), |r| r.as_str().to_owned());
    let message = with_guide(
        format!(
            "Denied by {REPORTING_CONTROLLER} ({replica}): {}",
            verdict.summary()
        ),
        &reason,
        MAX_CONDITION_MESSAGE_BYTES,
    );
    (reason, message)
}

/// At most `max` bytes, cut at a character boundary with an ellipsis.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let ellipsis = "…";
    let mut cut = max.saturating_sub(ellipsis.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(ellipsis);
    text
}

/// Longest `reportingInstance` the API server accepts on an Event (128 bytes,
/// `ValidateEventCreate`).
pub const MAX_REPORTING_INSTANCE_BYTES: usize = 128;

/// The replica's name as the Events' `reportingInstance`: cut to what the API server
/// accepts (pod names may be longer).
pub(crate) fn reporting_instance(replica: &str) -> String {
    let mut end = replica.len().min(MAX_REPORTING_INSTANCE_BYTES);
    while !replica.is_char_boundary(end) {
        end -= 1;
    }
    replica[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use rubber_stamp_core::{
        CheckName, CheckReport, DenyMode, Outcome as O, SupportingAttestation,
    };

    use super::*;

    fn mk_verdict(failures: &[(CheckName, O, Reason, &str)], deny: DenyMode) -> Verdict {
        let mut checks: Vec<CheckReport> = failures
            .iter()
            .map(|(n, o, r, d)| CheckReport::failed(*n, *o, *r, *d))
            .collect();
        checks.push(CheckReport::passed(CheckName::Scope, "ok"));
        let supporting = Some(SupportingAttestation {
            node: "w1".to_owned(),
            received_at: jiff::Timestamp::UNIX_EPOCH,
            peer_address: Some("10.0.0.1".parse().expect("ip")),
        });
        Verdict::new(Some("w1".to_owned()), checks, supporting, deny)
    }

    #[test]
    fn waiting_is_normal_and_conflicts_name_the_event() {
        let waiting = mk_verdict(
            &[(
                CheckName::AttestationFresh,
                O::Pending,
                Reason::AwaitingAttestation,
                "no attestation",
            )],
            DenyMode::Always,
        );
        let e = explain(&waiting, None, false);
        assert_eq!(
            (e.outcome, e.reason, e.warning),
            (Outcome::Pending, "AwaitingAttestation", false)
        );
        assert!(
            e.note
                .starts_with("Left pending: attestation-fresh: no attestation")
        );

        let conflict = mk_verdict(
            &[
                (
                    CheckName::IpSansAttested,
                    O::Pending,
                    Reason::UnattestedAddress,
                    "10.0.0.2 missing",
                ),
                (
                    CheckName::UniqueAmongAttestations,
                    O::Pending,
                    Reason::AddressConflict,
                    "10.0.0.2 is node-b's",
                ),
            ],
            DenyMode::Always,
        );
        let e = explain(&conflict, None, false);
        assert_eq!((e.reason, e.warning), ("AddressConflict", true));
        assert!(e.note.contains("10.0.0.2 missing") && e.note.contains("node-b"));
    }

    #[test]
    fn would_be_denials_warn_and_dry_run_says_would() {
        let denied = |mode| {
            mk_verdict(
                &[(
                    CheckName::IpSansAttested,
                    O::Deny,
                    Reason::AddressNotAttested,
                    "10.0.0.9 not attested",
                )],
                mode,
            )
        };
        let e = explain(&denied(DenyMode::Never), None, false);
        assert_eq!(
            (e.outcome, e.reason, e.warning),
            (Outcome::Pending, "AddressNotAttested", true)
        );
        assert!(e.note.contains("would be denied"), "{}", e.note);
        let e = explain(&denied(DenyMode::Always), None, true);
        assert_eq!((e.outcome, e.reason), (Outcome::Deny, "WouldDeny"));
        let (reason, message) = denial(&denied(DenyMode::Always), "r-1");
        assert_eq!(reason, "AddressNotAttested");
        assert!(
            message
                .starts_with("Denied by rubber-stamp-approver (r-1): ip-sans-attested: 10.0.0.9")
        );
    }

    #[test]
    fn the_state_key_ignores_wording_but_not_failures() {
        let at = |detail: &str| {
            mk_verdict(
                &[(
                    CheckName::AttestationFresh,
                    O::Pending,
                    Reason::AttestationStale,
                    detail,
                )],
                DenyMode::Always,
            )
        };
        let a = explain(&at("received at 10:00"), None, false);
        let b = explain(&at("received at 10:01"), None, false);
        assert_eq!(a.key, b.key);
        let other = mk_verdict(
            &[
                (
                    CheckName::AttestationFresh,
                    O::Pending,
                    Reason::AttestationStale,
                    "x",
                ),
                (
                    CheckName::PeerBinding,
                    O::Pending,
                    Reason::PeerMismatch,
                    "y",
                ),
            ],
            DenyMode::Always,
        );
        assert_ne!(explain(&other, None, false).key, a.key);
    }

    #[test]
    fn approvals_name_the_attestation_and_held_ones_the_valve() {
        let ok = mk_verdict(&[], DenyMode::Always);
        let message = approval_message(&ok, "r-1");
        assert!(
            message.contains("(r-1)")
                && message.contains(
                    "node w1's attestation received at 1970-01-01T00:00:00Z from 10.0.0.1"
                ),
            "{message}"
        );
        let valve = ValveState {
            closed: true,
            pending: 7,
            bound: 5,
            change: None,
        };
        let e = explain(&ok, Some(Held::Valve(&valve)), false);
        assert_eq!(
            (e.outcome, e.reason, e.warning),
            (Outcome::Held, "ApprovalHeld", true)
        );
        assert!(e.note.contains(
            "7 kubelet-serving CSRs are pending, more than the flood valve's bound of 5"
        ));
        assert_eq!(explain(&ok, None, true).reason, "WouldApprove");
        assert_eq!(explain(&ok, None, false).reason, "Approved");
    }

    #[test]
    fn what_needs_a_person_points_to_its_section_of_the_guide_and_never_to_a_switch() {
        let peer = mk_verdict(
            &[(
                CheckName::PeerBinding,
                O::Pending,
                Reason::PeerMismatch,
                "w1's agent connected from 192.0.2.1, which is not one of the addresses it reported",
            )],
            DenyMode::Always,
        );
        let e = explain(&peer, None, false);
        assert_eq!((e.reason, e.warning), ("PeerMismatch", true));
        assert!(
            e.note.ends_with("; see docs/operations.md#peermismatch"),
            "{}",
            e.note
        );
        for switch in ["peerBinding", "false", "switch", "disable"] {
            assert!(!e.note.contains(switch), "{}", e.note);
        }
        // A long note is cut before the pointer, never the pointer.
        let long = mk_verdict(
            &[(
                CheckName::UniqueAmongAttestations,
                O::Pending,
                Reason::AddressConflict,
                &"10.0.0.2 is also attested by w2; ".repeat(80),
            )],
            DenyMode::Always,
        );
        let e = explain(&long, None, false);
        assert!(e.note.len() <= MAX_NOTE_BYTES);
        assert!(e.note.ends_with("#addressconflict"), "{}", e.note);
        // Denials too, Event and condition.
        let denied = mk_verdict(
            &[(
                CheckName::IpSansAttested,
                O::Deny,
                Reason::AddressNotAllowed,
                "10.96.0.1 is a cluster IP of Service default/kubernetes (spec.clusterIPs)",
            )],
            DenyMode::Always,
        );
        assert!(
            explain(&denied, None, false)
                .note
                .ends_with("#addressnotallowed")
        );
        assert!(
            denial(&denied, "r-1")
                .1
                .ends_with("docs/operations.md#addressnotallowed")
        );
        // Waiting needs no person: a Normal Event without a pointer.
        let waiting = mk_verdict(
            &[(
                CheckName::IpSansAttested,
                O::Pending,
                Reason::AwaitingServices,
                "the Services have not been listed yet",
            )],
            DenyMode::Always,
        );
        let e = explain(&waiting, None, false);
        assert_eq!((e.reason, e.warning), ("AwaitingServices", false));
        assert!(!e.note.contains("docs/"));
    }

    #[test]
    fn the_operations_guide_has_a_section_for_every_reason_an_event_can_point_to() {
        let guide = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
        )
        .expect("docs/operations.md");
        let headings: Vec<&str> = guide
            .lines()
            .filter_map(|l| l.strip_prefix("### `"))
            .filter_map(|l| l.strip_suffix('`'))
            .collect();
        let pointed_to = Reason::ALL
            .iter()
            .filter(|r| **r != Reason::OutOfScope)
            .map(|r| r.as_str())
            .chain([
                reasons::APPROVAL_HELD,
                reasons::NODE_APPROVALS_HELD,
                reasons::FLOOD_VALVE_CLOSED,
            ]);
        for reason in pointed_to {
            assert!(
                headings.contains(&reason),
                "docs/operations.md has no `### `{reason}`` section for {}",
                guide_for(reason)
            );
        }
    }

    #[test]
    fn a_node_held_by_its_own_bound_is_named() {
        let ok = mk_verdict(&[], DenyMode::Always);
        let hold = NodeHold {
            requestor: "system:node:w1".to_owned(),
            node: Some("w1".to_owned()),
            pending: 12,
            bound: 10,
        };
        let e = explain(&ok, Some(Held::Node(&hold)), false);
        assert_eq!(
            (e.outcome, e.reason, e.warning),
            (Outcome::Held, "ApprovalHeld", true)
        );
        assert!(
            e.note
                .contains("approvals for node w1 are held: it has 12 kubelet-serving CSRs pending, more than the per-node bound of 10"),
            "{}",
            e.note
        );
        assert!(e.note.ends_with("#approvalheld"));
        let note = node_hold_note(&hold);
        assert!(note.starts_with(
            "Approvals for node w1 are held: 12 kubelet-serving CSRs from system:node:w1"
        ));
        assert!(note.ends_with("docs/operations.md#nodeapprovalsheld"));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short".to_owned(), 10), "short");
        let long = "é".repeat(700);
        let cut = truncate(long, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
    }
}
