//! What `explain` and `status` print, as text and JSON, in pure functions. `explain`'s
//! report is `check`'s (the same writers), followed by where its inputs came from and what
//! the approver last did with the CSR: its conditions and the approver's Events about it.

use std::io::{self, Write};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::events::v1::Event;
use rubber_stamp_core::{Decision, Reason, Verdict};
use serde::Serialize;

use crate::check;
use crate::controller::explain::REPORTING_CONTROLLER;

/// Most Events listed per CSR (the newest).
pub const MAX_EVENTS: usize = 50;

/// Which approver answered, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApproverInfo {
    /// The snapshot's URL.
    pub url: String,
    /// `discovered` (from the leader's Pod) or `--approver-url`.
    pub found_by: &'static str,
    /// The leader Lease, `namespace/name`.
    pub lease: String,
    /// Its holder, when it could be read.
    pub leader: Option<String>,
    /// The holder stopped renewing it: nobody acts on CSRs now.
    pub lease_expired: bool,
    /// How many nodes the snapshot holds an attestation of (fresh or not).
    pub attestations: usize,
}

/// One condition of the CSR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionInfo {
    /// `Approved`, `Denied`, `Failed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Its reason (`AutoApproved`, or the check's reason for a denial).
    pub reason: Option<String>,
    /// Its message.
    pub message: Option<String>,
    /// When it was written.
    pub last_update_time: Option<Timestamp>,
}

/// One of the approver's Events about the CSR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventInfo {
    /// When it (last) happened.
    pub time: Option<Timestamp>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The reason: a check's reason, or `Approved`, `Denied`, `WouldApprove`,
    /// `WouldDeny`, `ApprovalHeld`.
    pub reason: String,
    /// The replica that published it.
    pub reporting_instance: Option<String>,
    /// How many times it happened (a series).
    pub count: i32,
    /// What it says.
    pub note: String,
}

/// What `explain` adds to `check`'s report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explained {
    /// Where the attestations came from.
    pub approver: ApproverInfo,
    /// Where the policy came from.
    pub policy: String,
    /// The CSR's conditions.
    pub conditions: Vec<ConditionInfo>,
    /// The approver's Events about it, oldest first (`None`: they could not be read).
    pub events: Option<Vec<EventInfo>>,
    /// Anything that makes this verdict differ from the approver's, or could.
    pub notes: Vec<String>,
}

/// A node without a fresh attestation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnattestedNode {
    /// The Node's name.
    pub name: String,
    /// When its last (stale) attestation arrived, if the approver still holds one.
    pub last_attestation: Option<Timestamp>,
}

/// Nodes and attestations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCoverage {
    /// Node objects.
    pub total: usize,
    /// Node objects with a fresh attestation.
    pub attested: usize,
    /// The others, by name.
    pub unattested: Vec<UnattestedNode>,
}

/// A pending kubelet-serving CSR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingCsr {
    /// Its name.
    pub csr: String,
    /// The node its subject names.
    pub node: Option<String>,
    /// `spec.username`.
    pub requestor: String,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    /// The decision now.
    pub decision: Decision,
    /// Its reason.
    pub reason: Option<Reason>,
    /// The verdict in one line.
    pub summary: String,
    /// The reason of the approver's latest Event about it.
    pub approver_said: Option<String>,
}

/// What `status` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Where the attestations came from.
    pub approver: ApproverInfo,
    /// Where the policy came from.
    pub policy: String,
    /// Nodes without a fresh attestation.
    pub nodes: NodeCoverage,
    /// Pending kubelet-serving CSRs, oldest first.
    pub pending: Vec<PendingCsr>,
    /// Anything that makes these verdicts differ from the approver's, or could.
    pub notes: Vec<String>,
}

/// The CSR's conditions.
pub fn conditions(csr: &CertificateSigningRequest) -> Vec<ConditionInfo> {
    csr.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| ConditionInfo {
            type_: c.type_.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_update_time: c
                .last_update_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
                .map(|t| t.0),
        })
        .collect()
}

/// When an Event last happened.
fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The approver's Events among `events` about the CSR with `uid` (when known; a CSR of the
/// same name made before has another), oldest first, at most [`MAX_EVENTS`] (the newest),
/// and how many older ones were left out.
pub fn approver_events(events: &[Event], uid: Option<&str>) -> (Vec<EventInfo>, usize) {
    let mut mine: Vec<EventInfo> = events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(REPORTING_CONTROLLER))
        .filter(
            |e| match (uid, e.regarding.as_ref().and_then(|r| r.uid.as_deref())) {
                (Some(uid), Some(regarding)) => uid == regarding,
                _ => true,
            },
        )
        .map(|e| EventInfo {
            time: event_time(e),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            reporting_instance: e.reporting_instance.clone(),
            count: e
                .series
                .as_ref()
                .map(|s| s.count)
                .or(e.deprecated_count)
                .unwrap_or(1)
                .max(1),
            note: e.note.clone().unwrap_or_default(),
        })
        .collect();
    mine.sort_by_key(|e| e.time);
    let dropped = mine.len().saturating_sub(MAX_EVENTS);
    mine.drain(..dropped);
    (mine, dropped)
}

/// `explain`'s text: `check`'s report, then the approver, the policy, the notes, the
/// conditions and the Events.
pub fn write_explain_text(
    out: &mut impl Write,
    csr: &str,
    verdict: &Verdict,
    explained: &Explained,
) -> io::Result<()> {
    check::write_text(out, csr, verdict)?;
    writeln!(out)?;
    write_sources(out, &explained.approver, &explained.policy)?;
    for note in &explained.notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out)?;
    if explained.conditions.is_empty() {
        writeln!(out, "conditions: none")?;
    } else {
        writeln!(out, "conditions:")?;
        for c in &explained.conditions {
            writeln!(
                out,
                "  {}  {}  {}  {}",
                c.type_,
                c.reason.as_deref().unwrap_or("-"),
                c.last_update_time
                    .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                one_line(c.message.as_deref().unwrap_or_default())
            )?;
        }
    }
    match &explained.events {
        None => writeln!(out, "events: could not be read (see the notes)")?,
        Some(events) if events.is_empty() => {
            writeln!(out, "events by {REPORTING_CONTROLLER}: none")?;
        }
        Some(events) => {
            writeln!(out, "events by {REPORTING_CONTROLLER}, oldest first:")?;
            for e in events {
                let count = if e.count > 1 {
                    format!(" (x{})", e.count)
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "  {}  {:<7}  {}  {}{count}  {}",
                    e.time.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                    e.type_,
                    e.reason,
                    e.reporting_instance.as_deref().unwrap_or("-"),
                    one_line(&e.note)
                )?;
            }
        }
    }
    Ok(())
}

/// `explain -o json`: `check -o json`'s object with `explained`'s fields after the
/// verdict's.
pub fn write_explain_json(
    out: &mut impl Write,
    csr: &str,
    verdict: &Verdict,
    explained: &Explained,
) -> io::Result<()> {
    check::write_json_with(out, csr, verdict, explained)
}

fn write_sources(out: &mut impl Write, approver: &ApproverInfo, policy: &str) -> io::Result<()> {
    let leader = match (&approver.leader, approver.lease_expired) {
        (Some(holder), false) => format!("{holder} holds Lease {}", approver.lease),
        (Some(holder), true) => format!(
            "{holder} held Lease {} but stopped renewing it",
            approver.lease
        ),
        (None, _) => format!("Lease {} not read", approver.lease),
    };
    writeln!(
        out,
        "approver: {leader}; attestations of {} nodes from {} ({})",
        approver.attestations, approver.url, approver.found_by
    )?;
    writeln!(out, "policy: {policy}")
}

/// `status`'s text.
pub fn write_status_text(
    out: &mut impl Write,
    status: &StatusReport,
    now: Timestamp,
) -> io::Result<()> {
    write_sources(out, &status.approver, &status.policy)?;
    for note in &status.notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out)?;
    let nodes = &status.nodes;
    if nodes.unattested.is_empty() {
        writeln!(
            out,
            "nodes: {} of {} with a fresh attestation",
            nodes.attested, nodes.total
        )?;
    } else {
        writeln!(
            out,
            "nodes: {} of {} with a fresh attestation; without one:",
            nodes.attested, nodes.total
        )?;
        let rows: Vec<Vec<String>> = nodes
            .unattested
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.last_attestation.map_or_else(
                        || "never".to_owned(),
                        |t| format!("{t} ({} ago, stale)", age(now.duration_since(t))),
                    ),
                ]
            })
            .collect();
        write_table(out, &["NODE", "LAST ATTESTATION"], &rows)?;
    }
    writeln!(out)?;
    if status.pending.is_empty() {
        return writeln!(out, "pending kubelet-serving CSRs: none");
    }
    writeln!(
        out,
        "pending kubelet-serving CSRs: {}",
        status.pending.len()
    )?;
    let rows: Vec<Vec<String>> = status
        .pending
        .iter()
        .map(|p| {
            vec![
                p.csr.clone(),
                p.node.clone().unwrap_or_else(|| "-".to_owned()),
                p.created_at
                    .map_or_else(|| "-".to_owned(), |t| age(now.duration_since(t))),
                p.decision.as_str().to_owned(),
                p.reason.map_or_else(|| "-".to_owned(), |r| r.to_string()),
                p.approver_said.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    write_table(
        out,
        &["NAME", "NODE", "AGE", "DECISION", "REASON", "APPROVER SAID"],
        &rows,
    )
}

/// `status -o json`.
pub fn write_status_json(out: &mut impl Write, status: &StatusReport) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, status).map_err(io::Error::other)?;
    writeln!(out)
}

/// Columns padded to their widest cell, indented by two, as `kubectl get` prints them.
fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// A duration as kubectl prints ages: `45s`, `3m12s`, `5h4m`, `3d2h`.
pub fn age(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..600 => format!("{}m{}s", s / 60, s % 60),
        600..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Text on one line: control characters (an Event note is any text) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use rubber_stamp_core::{AttestationSet, CsrInput, Observed, Policy, decide};

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn event(reason: &str, at: &str, controller: &str, uid: &str) -> Event {
        Event {
            reason: Some(reason.to_owned()),
            type_: Some("Normal".to_owned()),
            note: Some(format!("{reason}\nsecond line")),
            event_time: Some(MicroTime(ts(at))),
            reporting_controller: Some(controller.to_owned()),
            reporting_instance: Some("approver-0".to_owned()),
            regarding: Some(ObjectReference {
                uid: Some(uid.to_owned()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        }
    }

    fn info() -> ApproverInfo {
        ApproverInfo {
            url: "https://10.0.3.7:9090/attestations".to_owned(),
            found_by: "discovered",
            lease: "rubber-stamp/rubber-stamp-approver".to_owned(),
            leader: Some("approver-0".to_owned()),
            lease_expired: false,
            attestations: 2,
        }
    }

    fn pending_verdict() -> Verdict {
        let csr = CsrInput {
            name: "csr-1".to_owned(),
            signer_name: rubber_stamp_core::KUBELET_SERVING_SIGNER.to_owned(),
            ..CsrInput::default()
        };
        decide(
            &csr,
            Observed::attestations(&AttestationSet::new()),
            &Policy::default(),
            ts("2026-01-01T00:00:00Z"),
        )
    }

    #[test]
    fn only_the_approvers_events_about_this_csr_oldest_first() {
        let events = vec![
            event("Denied", "2026-01-01T00:00:05Z", REPORTING_CONTROLLER, "u1"),
            event(
                "AddressConflict",
                "2026-01-01T00:00:01Z",
                REPORTING_CONTROLLER,
                "u1",
            ),
            event(
                "Something",
                "2026-01-01T00:00:02Z",
                "kube-controller-manager",
                "u1",
            ),
            event(
                "AwaitingAttestation",
                "2025-01-01T00:00:00Z",
                REPORTING_CONTROLLER,
                "old",
            ),
        ];
        let (mine, dropped) = approver_events(&events, Some("u1"));
        let reasons: Vec<&str> = mine.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["AddressConflict", "Denied"]);
        assert_eq!(dropped, 0);
        let many: Vec<Event> = (0..60)
            .map(|i| {
                event(
                    &format!("R{i}"),
                    &format!("2026-01-01T00:{i:02}:00Z"),
                    REPORTING_CONTROLLER,
                    "u",
                )
            })
            .collect();
        let (kept, dropped) = approver_events(&many, None);
        assert_eq!((kept.len(), dropped), (MAX_EVENTS, 10));
        assert_eq!(kept[0].reason, "R10", "the newest are kept");
    }

    #[test]
    fn explain_text_is_checks_report_then_sources_conditions_and_events() {
        let verdict = pending_verdict();
        let (events, _) = approver_events(
            &[event(
                "AwaitingAttestation",
                "2026-01-01T00:00:01Z",
                REPORTING_CONTROLLER,
                "u",
            )],
            None,
        );
        let explained = Explained {
            approver: info(),
            policy: "built-in default".to_owned(),
            conditions: Vec::new(),
            events: Some(events),
            notes: vec!["a note".to_owned()],
        };
        let mut check_text = Vec::new();
        check::write_text(&mut check_text, "csr-1", &verdict).expect("write");
        let mut text = Vec::new();
        write_explain_text(&mut text, "csr-1", &verdict, &explained).expect("write");
        let text = String::from_utf8(text).expect("UTF-8");
        let check_text = String::from_utf8(check_text).expect("UTF-8");
        assert!(text.starts_with(&check_text), "{text}");
        for line in [
            "approver: approver-0 holds Lease rubber-stamp/rubber-stamp-approver; attestations of 2 nodes from https://10.0.3.7:9090/attestations (discovered)",
            "policy: built-in default",
            "note: a note",
            "conditions: none",
            "events by rubber-stamp-approver, oldest first:",
            "  2026-01-01T00:00:01Z  Normal   AwaitingAttestation  approver-0  AwaitingAttestation second line",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn explain_json_is_checks_object_with_more_fields() {
        let verdict = pending_verdict();
        let explained = Explained {
            approver: info(),
            policy: "built-in default".to_owned(),
            conditions: vec![ConditionInfo {
                type_: "Denied".to_owned(),
                reason: Some("AddressNotAllowed".to_owned()),
                message: Some("m".to_owned()),
                last_update_time: None,
            }],
            events: None,
            notes: Vec::new(),
        };
        let mut check_json = Vec::new();
        check::write_json(&mut check_json, "csr-1", &verdict).expect("write");
        let check_json: serde_json::Value = serde_json::from_slice(&check_json).expect("JSON");
        let mut json = Vec::new();
        write_explain_json(&mut json, "csr-1", &verdict, &explained).expect("write");
        let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        let (Some(check_fields), Some(fields)) = (check_json.as_object(), json.as_object()) else {
            panic!("objects");
        };
        for (key, value) in check_fields {
            assert_eq!(fields.get(key), Some(value), "{key}");
        }
        assert_eq!(json["approver"]["leader"], "approver-0");
        assert_eq!(json["conditions"][0]["type"], "Denied");
        assert_eq!(json["events"], serde_json::Value::Null);
        assert_eq!(json["decision"], verdict.decision().as_str());
    }

    #[test]
    fn status_text_lists_unattested_nodes_and_pending_csrs() {
        let now = ts("2026-01-01T01:00:00Z");
        let status = StatusReport {
            approver: info(),
            policy: "built-in default".to_owned(),
            nodes: NodeCoverage {
                total: 3,
                attested: 1,
                unattested: vec![
                    UnattestedNode {
                        name: "no-agent".to_owned(),
                        last_attestation: None,
                    },
                    UnattestedNode {
                        name: "stale".to_owned(),
                        last_attestation: Some(ts("2026-01-01T00:50:00Z")),
                    },
                ],
            },
            pending: vec![PendingCsr {
                csr: "csr-1".to_owned(),
                node: Some("no-agent".to_owned()),
                requestor: "system:node:no-agent".to_owned(),
                created_at: Some(ts("2026-01-01T00:58:30Z")),
                decision: Decision::Pending,
                reason: Some(Reason::AwaitingAttestation),
                summary: String::new(),
                approver_said: Some("AwaitingAttestation".to_owned()),
            }],
            notes: Vec::new(),
        };
        let mut text = Vec::new();
        write_status_text(&mut text, &status, now).expect("write");
        let text = String::from_utf8(text).expect("UTF-8");
        for line in [
            "nodes: 1 of 3 with a fresh attestation; without one:",
            "  NODE       LAST ATTESTATION",
            "  no-agent   never",
            "  stale      2026-01-01T00:50:00Z (10m ago, stale)",
            "pending kubelet-serving CSRs: 1",
            "  NAME    NODE       AGE     DECISION   REASON                APPROVER SAID",
            "  csr-1   no-agent   1m30s   pending    AwaitingAttestation   AwaitingAttestation",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        let mut json = Vec::new();
        write_status_json(&mut json, &status).expect("write");
        let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(json["nodes"]["unattested"][0]["name"], "no-agent");
        assert_eq!(json["pending"][0]["reason"], "AwaitingAttestation");
        assert_eq!(json["pending"][0]["decision"], "pending");
    }

    #[test]
    fn ages_read_like_kubectls() {
        let s = SignedDuration::from_secs;
        assert_eq!(age(s(45)), "45s");
        assert_eq!(age(s(192)), "3m12s");
        assert_eq!(age(s(1800)), "30m");
        assert_eq!(age(s(18_240)), "5h4m");
        assert_eq!(age(s(266_400)), "3d2h");
        assert_eq!(age(s(-5)), "0s");
    }
}
