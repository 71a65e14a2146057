//! Narrates what happens to CSRs as it happens: a kube-rs watcher on the
//! CertificateSigningRequests and one on the Events about them (admin
//! identity), each change said in one line.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::task::JoinHandle;

use super::csr::{Condition, CsrEvent, CsrRow};
use super::narrate::Narrator;

/// Longest message or note shown in one line.
const MAX_NOTE: usize = 400;

/// What a watched object became.
enum Change {
    Csr(Box<CertificateSigningRequest>),
    Event(Box<Event>),
}

/// A running narration; stops when dropped.
#[derive(Debug)]
pub struct CsrNarration {
    task: JoinHandle<()>,
}

impl Drop for CsrNarration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CsrNarration {
    /// Starts watching with `client` and saying changes through `narrator`.
    pub fn start(client: kube::Client, narrator: Arc<Narrator>) -> Self {
        let csrs = watcher(
            Api::<CertificateSigningRequest>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .map(|r| r.map(|c| Change::Csr(Box::new(c))));
        let events = watcher(Api::<Event>::all(client), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .map(|r| r.map(|e| Change::Event(Box::new(e))));
        let mut changes = Box::pin(futures::stream::select(csrs, events));
        let task = tokio::spawn(async move {
            let mut known: HashMap<String, CsrRow> = HashMap::new();
            let mut seen_events: HashSet<String> = HashSet::new();
            while let Some(change) = changes.next().await {
                match change {
                    Ok(Change::Csr(csr)) => {
                        let row = CsrRow::new(&csr, &[]);
                        say_csr(&narrator, known.get(&row.name), &row);
                        known.insert(row.name.clone(), row);
                    }
                    Ok(Change::Event(event)) => {
                        // Approved and Denied are said with the condition.
                        if let Some(e) = CsrEvent::from_event(&event)
                            && !matches!(e.reason.as_str(), "Approved" | "Denied")
                            && seen_events.insert(e.key.clone())
                        {
                            let node = known.get(&e.csr).map_or("", |r| r.node.as_str());
                            narrator.say(
                                "approver",
                                format!(
                                    "{} ({node}): event {} {}: {}",
                                    e.csr,
                                    e.type_,
                                    e.reason,
                                    short(&e.note)
                                ),
                            );
                        }
                    }
                    // The watcher retries with backoff by itself.
                    Err(error) => tracing::debug!(%error, "sandbox CSR watch"),
                }
            }
        });
        Self { task }
    }
}

fn say_csr(narrator: &Narrator, before: Option<&CsrRow>, now: &CsrRow) {
    if before.is_none() {
        narrator.say(
            &now.node,
            format!(
                "{} created: a serving certificate for {}",
                now.name,
                now.sans_text().replace(',', ", ")
            ),
        );
    }
    let was = before.map_or(Condition::Pending, |b| b.condition);
    if now.condition != was {
        let what = match now.condition {
            Condition::Approved => "Approved",
            Condition::Denied => "Denied",
            Condition::Failed => "Failed",
            Condition::Pending => "Pending",
        };
        narrator.say(
            "approver",
            format!(
                "{} ({}): {what} ({}): {}",
                now.name,
                now.node,
                now.reason,
                short(&now.message)
            ),
        );
    }
    if now.issued && !before.is_some_and(|b| b.issued) {
        narrator.say(
            "signer",
            format!(
                "{} ({}): certificate issued from the cluster CA",
                now.name, now.node
            ),
        );
    }
}

fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX_NOTE {
        let cut: String = one_line.chars().take(MAX_NOTE).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}
