//! The CSRs as the sandbox shows them: node, requested SANs, condition and the
//! reason (the condition's reason once decided, else the approver's latest
//! Event), and the table in the style of `kubectl get csr`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509CertificationRequest};

use super::SandboxError;

/// The kind an Event about a CSR names in `regarding`.
const CSR_KIND: &str = "CertificateSigningRequest";

/// Where a CSR stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// No final condition.
    Pending,
    /// Approved (issued or not).
    Approved,
    /// Denied.
    Denied,
    /// Approved but the signer refused it.
    Failed,
}

/// One CSR, decoded for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrRow {
    /// `metadata.name`.
    pub name: String,
    /// The node that asked (from `spec.username`, which the API server sets).
    pub node: String,
    /// DNS SANs requested.
    pub dns: Vec<String>,
    /// IP SANs requested.
    pub ips: Vec<IpAddr>,
    /// Where it stands.
    pub condition: Condition,
    /// Whether `status.certificate` is set.
    pub issued: bool,
    /// How many `Approved` conditions it carries (more than one would be a double approval).
    pub approvals: usize,
    /// The condition's reason, or the latest Event's while pending (`-` when none).
    pub reason: String,
    /// The condition's message or the latest Event's note.
    pub message: String,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
}

/// An Event about a CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrEvent {
    /// The CSR's name.
    pub csr: String,
    /// `reason`.
    pub reason: String,
    /// `note`.
    pub note: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// When it was last seen (series, eventTime or creation).
    pub at: Option<Timestamp>,
    /// The Event object's name (with its series count, to tell repeats apart).
    pub key: String,
}

impl CsrEvent {
    /// The CSR Event in an `events.k8s.io/v1` Event, if it is about a CSR.
    pub fn from_event(event: &Event) -> Option<Self> {
        let regarding = event.regarding.as_ref()?;
        if regarding.kind.as_deref() != Some(CSR_KIND) {
            return None;
        }
        let at = event
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0)
            .or_else(|| event.event_time.as_ref().map(|t| t.0))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Some(Self {
            csr: regarding.name.clone()?,
            reason: event.reason.clone().unwrap_or_default(),
            note: event.note.clone().unwrap_or_default(),
            type_: event.type_.clone().unwrap_or_default(),
            at,
            key: format!(
                "{}#{}",
                event.metadata.name.clone().unwrap_or_default(),
                event.series.as_ref().map_or(1, |s| s.count)
            ),
        })
    }
}

impl CsrRow {
    /// Decodes a CSR; `events` are the Events about it, any order.
    pub fn new(csr: &CertificateSigningRequest, events: &[CsrEvent]) -> Self {
        let name = csr.metadata.name.clone().unwrap_or_default();
        let username = csr.spec.username.clone().unwrap_or_default();
        let node = username
            .strip_prefix("system:node:")
            .map_or_else(|| format!("({username})"), ToOwned::to_owned);
        let (dns, ips) = requested_sans(&csr.spec.request.0);
        let status = csr.status.as_ref();
        let conditions = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
        let approvals = conditions.iter().filter(|c| c.type_ == "Approved").count();
        let issued =
            status.is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()));
        let (condition, decided) = if let Some(c) = find("Denied") {
            (Condition::Denied, Some(c))
        } else if let Some(c) = find("Failed") {
            (Condition::Failed, Some(c))
        } else if let Some(c) = find("Approved") {
            (Condition::Approved, Some(c))
        } else {
            (Condition::Pending, None)
        };
        let latest = events.iter().filter(|e| e.csr == name).max_by_key(|e| e.at);
        let (reason, message) = match (decided, latest) {
            (Some(c), _) => (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ),
            (None, Some(e)) => (e.reason.clone(), e.note.clone()),
            (None, None) => ("-".to_owned(), String::new()),
        };
        Self {
            name,
            node,
            dns,
            ips,
            condition,
            issued,
            approvals,
            reason,
            message,
            created: csr.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }

    /// `Approved,Issued`, `Denied`, `Pending`… as `kubectl get csr` writes it.
    pub fn condition_text(&self) -> String {
        match (self.condition, self.issued) {
            (Condition::Pending, _) => "Pending".to_owned(),
            (Condition::Approved, true) => "Approved,Issued".to_owned(),
            (Condition::Approved, false) => "Approved".to_owned(),
            (Condition::Denied, _) => "Denied".to_owned(),
            (Condition::Failed, _) => "Approved,Failed".to_owned(),
        }
    }

    /// The SANs, DNS names first: `worker-1,198.18.0.3,fd00::3`.
    pub fn sans_text(&self) -> String {
        self.dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether it was approved and the signer issued the certificate.
    pub fn approved_and_issued(&self) -> bool {
        self.condition == Condition::Approved && self.issued
    }
}

/// The DNS and IP SANs a PEM CSR asks for; empty when it does not parse.
pub fn requested_sans(pem: &[u8]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return (dns, ips);
    };
    let Ok((_, request)) = X509CertificationRequest::from_der(&pem.contents) else {
        return (dns, ips);
    };
    let Some(extensions) = request.requested_extensions() else {
        return (dns, ips);
    };
    for extension in extensions {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ips.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ips.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    (dns, ips)
}

/// Every CSR Event in the cluster (`events.k8s.io/v1`, all namespaces).
pub async fn list_events(client: &kube::Client) -> Result<Vec<CsrEvent>, SandboxError> {
    let events: Api<Event> = Api::all(client.clone());
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(CsrEvent::from_event)
        .collect())
}

/// Every CSR with its reason, oldest first.
pub async fn list_rows(client: &kube::Client) -> Result<Vec<CsrRow>, SandboxError> {
    let events = list_events(client).await?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut rows: Vec<CsrRow> = csrs
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|c| CsrRow::new(c, &events))
        .collect();
    rows.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(rows)
}

/// The rows as a `kubectl get csr`-style table: NAME, NODE, SANS, CONDITION, REASON.
pub fn render_table(rows: &[CsrRow]) -> String {
    let header = ["NAME", "NODE", "SANS", "CONDITION", "REASON"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.node.clone(),
                r.sans_text(),
                r.condition_text(),
                r.reason.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header);
    out.push('\n');
    for row in &cells {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
        out.push('\n');
    }
    out
}

/// The rows grouped by node.
pub fn by_node(rows: &[CsrRow]) -> BTreeMap<&str, Vec<&CsrRow>> {
    let mut map: BTreeMap<&str, Vec<&CsrRow>> = BTreeMap::new();
    for r in rows {
        map.entry(r.node.as_str()).or_default().push(r);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubber_stamp_kubelet_sim::{NodeIdentity, ServingRequest};

    #[test]
    fn sans_come_out_of_a_kubelet_request() {
        let identity = NodeIdentity::new(
            "worker-1",
            "worker-1",
            &[
                "198.18.0.3".parse().expect("ip"),
                "fd00::3".parse().expect("ip"),
            ],
        )
        .expect("identity");
        let request = ServingRequest::generate(&identity).expect("request");
        let (dns, ips) = requested_sans(request.csr_pem().as_bytes());
        assert_eq!(dns, ["worker-1"]);
        assert_eq!(ips, identity.ips());
        assert_eq!(requested_sans(b"not a pem"), (Vec::new(), Vec::new()));
    }

    #[test]
    fn the_table_lines_up_like_kubectl() {
        let row = |name: &str, condition, issued, reason: &str| CsrRow {
            name: name.to_owned(),
            node: "worker-1".to_owned(),
            dns: vec!["worker-1".to_owned()],
            ips: vec!["198.18.0.3".parse().expect("ip")],
            condition,
            issued,
            approvals: 1,
            reason: reason.to_owned(),
            message: String::new(),
            created: None,
        };
        let table = render_table(&[
            row("csr-abc", Condition::Approved, true, "AutoApproved"),
            row("csr-defgh", Condition::Pending, false, "AddressConflict"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "NAME        NODE       SANS                  CONDITION         REASON"
        );
        assert_eq!(
            lines[1],
            "csr-abc     worker-1   worker-1,198.18.0.3   Approved,Issued   AutoApproved"
        );
        assert_eq!(
            lines[2],
            "csr-defgh   worker-1   worker-1,198.18.0.3   Pending           AddressConflict"
        );
    }
}
