//! The proof of address ownership's book-keeping (docs/design.md, "Proof of address
//! ownership"): the nonces in flight, what came of each probe, and the limits on probing.
//!
//! The controller sends the probes (`controller::ownership`); the attestation service
//! hands in the receipts agents report on their streams. A receipt counts only for the
//! node of the stream it arrived on — the node is never taken from the message — and
//! only while its probe waits: each nonce is random, bound to one CSR, one requesting node
//! and one SAN, used once, and forgotten after its deadline (a late or repeated receipt
//! changes nothing). The book is synchronous and never blocks: every call takes one short
//! lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rubber_stamp_core::{OwnershipLookup, ProofState};
use rubber_stamp_proto::proof::{DEFAULT_PORT, NONCE_BYTES};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// One probe nonce.
pub type ProofNonce = [u8; NONCE_BYTES];

/// Limits and timings of the proof.
#[derive(Clone, Debug)]
pub struct ProofConfig {
    /// The agents' proof port: every probe goes to this port of the SAN (never to a port a
    /// node names).
    pub port: u16,
    /// How long one probe may take, connecting included, before it counts as unanswered.
    pub timeout: Duration,
    /// Most probes in flight at once, over every node.
    pub max_in_flight: usize,
    /// Most probes in flight at once for the CSRs of one node.
    pub max_per_node: usize,
    /// The first wait before probing a SAN again after a probe that did not prove it;
    /// doubled after every such probe, up to [`retry_max`](Self::retry_max).
    pub retry_min: Duration,
    /// The longest wait between two probes of one SAN.
    pub retry_max: Duration,
    /// How long a result is kept after it was last written or probed again (a CSR decided
    /// or deleted is forgotten at once or at the next prune).
    pub keep: Duration,
}

impl Default for ProofConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            timeout: Duration::from_secs(2),
            max_in_flight: 64,
            max_per_node: 4,
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            keep: Duration::from_secs(15 * 60),
        }
    }
}

/// The first bytes of every nonce a book sends: random per book (per process), so that a
/// receipt for another replica's probe — agents report every receipt to every replica —
/// is told from a made-up one. The rest, 24 bytes, is random per probe.
const TAG_BYTES: usize = 8;

/// Most nonces remembered after their probe ended, to tell a replayed or late receipt from
/// a made-up one (in logs and metrics only: neither changes anything).
const MAX_SPENT: usize = 4096;
/// Most results kept; beyond it the least recently touched go first.
const MAX_RESULTS: usize = 65_536;

/// One SAN of one CSR of one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    /// The CSR's name.
    pub csr: String,
    /// The node that requested it (from the CSR's verified subject and requestor).
    pub node: String,
    /// The IP SAN probed.
    pub san: IpAddr,
}

/// The probe of one SAN that [`ProofBook::start`] opened; hand it back to
/// [`ProofBook::finish`] whatever happens.
#[derive(Debug)]
pub struct Ticket {
    /// What is probed.
    pub key: ProbeKey,
    /// The nonce to send.
    pub nonce: ProofNonce,
    /// Fires when an agent reports the nonce (the book has then recorded the result).
    pub receipt: oneshot::Receiver<Receipt>,
}

/// A receipt the book accepted for a waiting probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The node whose stream it came on.
    pub node: String,
    /// The local address the probe arrived on, as that node's agent reported it.
    pub local: IpAddr,
}

/// What [`ProofBook::start`] did.
#[derive(Debug)]
pub enum Start {
    /// A probe is opened: send it.
    Probe(Ticket),
    /// A probe of this SAN is already in flight.
    InFlight,
    /// The SAN was probed recently; probe again at this instant.
    NotDue(Instant),
    /// A limit is reached (`node` or `overall`); try again shortly.
    Limited(&'static str),
}

/// How a probe ended without a receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// An agent reported the nonce (the result is already recorded).
    Received,
    /// The address refused the connection while the requester's agent kept listening.
    Refused,
    /// Nothing came of it; in plain words why, and whether something at the address took
    /// the nonce (a connection accepted and the frame written) without an agent reporting it.
    Unanswered {
        /// What happened.
        what: String,
        /// The nonce was delivered.
        delivered: bool,
    },
}

/// What became of a receipt an agent sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// It answered a waiting probe; the CSR to decide on again, and whether the receipt
    /// came from the requesting node (proven) or another (not owned).
    Accepted {
        /// The CSR.
        csr: String,
        /// True when the requesting node's agent received it.
        proven: bool,
    },
    /// Its nonce belongs to a probe that already ended (answered, or past its deadline).
    Spent,
    /// Its nonce is another replica's (agents report every receipt to every replica).
    OtherReplica,
    /// Its nonce carries this replica's tag but was never sent (or is long forgotten).
    Unknown,
    /// It is not a receipt: a nonce or address of the wrong length.
    Invalid,
}

impl ReceiptOutcome {
    /// The metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Accepted { proven: true, .. } => "proven",
            Self::Accepted { proven: false, .. } => "other_node",
            Self::Spent => "spent",
            Self::OtherReplica => "other_replica",
            Self::Unknown => "unknown",
            Self::Invalid => "invalid",
        }
    }
}

/// The nonces in flight and the results of probes. Shared by the attestation service
/// (receipts) and the controller (probes, decisions).
#[derive(Debug)]
pub struct ProofBook {
    config: ProofConfig,
    tag: [u8; TAG_BYTES],
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<ProofNonce, Waiting>,
    spent: HashMap<ProofNonce, Instant>,
    results: HashMap<ProbeKey, Entry>,
    per_node: HashMap<String, usize>,
    in_flight: usize,
}

#[derive(Debug)]
struct Waiting {
    key: ProbeKey,
    done: Option<oneshot::Sender<Receipt>>,
}

#[derive(Clone, Debug)]
struct Entry {
    /// The latest conclusive result; kept while the SAN is probed again, so that a CSR
    /// held by it does not flap to "awaiting a probe" every time.
    state: Option<ProofState>,
    /// When the probe in flight was sent, if one is.
    probing: Option<Timestamp>,
    attempts: u32,
    /// When the SAN may be probed again.
    next: Instant,
    touched: Instant,
}

// === impl ProofBook ===

impl ProofBook {
    /// An empty book.
    pub fn new(config: ProofConfig) -> Self {
        Self {
            config,
            tag: rand::random(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Its limits and timings.
    pub fn config(&self) -> &ProofConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a probe of `key`'s SAN when one is due and the limits allow it.
    pub fn start(&self, key: &ProbeKey, now: Instant, at: Timestamp) -> Start {
        let mut inner = self.lock();
        if let Some(entry) = inner.results.get_mut(key) {
            entry.touched = now;
            if entry.probing.is_some() {
                return Start::InFlight;
            }
            if entry.next > now {
                return Start::NotDue(entry.next);
            }
        }
        if inner.in_flight >= self.config.max_in_flight {
            return Start::Limited("overall");
        }
        if inner.per_node.get(&key.node).copied().unwrap_or(0) >= self.config.max_per_node {
            return Start::Limited("node");
        }
        if inner.results.len() >= MAX_RESULTS {
            evict_oldest(&mut inner.results);
        }
        let mut nonce: ProofNonce = rand::random();
        nonce[..TAG_BYTES].copy_from_slice(&self.tag);
        let (tx, rx) = oneshot::channel();
        inner.in_flight += 1;
        *inner.per_node.entry(key.node.clone()).or_default() += 1;
        inner.waiting.insert(
            nonce,
            Waiting {
                key: key.clone(),
                done: Some(tx),
            },
        );
        let entry = inner.results.entry(key.clone()).or_insert_with(|| Entry {
            state: None,
            probing: None,
            attempts: 0,
            next: now,
            touched: now,
        });
        entry.probing = Some(at);
        entry.touched = now;
        Start::Probe(Ticket {
            key: key.clone(),
            nonce,
            receipt: rx,
        })
    }

    /// Takes a receipt that arrived on the stream of `from`: `nonce` as received,
    /// `local` the address it arrived on.
    pub fn receipt(
        &self,
        from: &str,
        nonce: &[u8],
        local: IpAddr,
        now: Instant,
        at: Timestamp,
    ) -> ReceiptOutcome {
        let Ok(nonce) = ProofNonce::try_from(nonce) else {
            return ReceiptOutcome::Invalid;
        };
        if nonce[..TAG_BYTES] != self.tag {
            return ReceiptOutcome::OtherReplica;
        }
        let mut inner = self.lock();
        let Some(mut waiting) = inner.waiting.remove(&nonce) else {
            return if inner.spent.contains_key(&nonce) {
                ReceiptOutcome::Spent
            } else {
                ReceiptOutcome::Unknown
            };
        };
        remember_spent(&mut inner.spent, nonce, now);
        let proven = waiting.key.node == from;
        let state = if proven {
            ProofState::Proven { at, local }
        } else {
            ProofState::ReceivedByOther {
                node: from.to_owned(),
                local,
                at,
            }
        };
        let retry = self.retry_after(inner.results.get(&waiting.key).map_or(0, |e| e.attempts));
        // A CSR decided or deleted meanwhile (its results forgotten) gets none back.
        if let Some(entry) = inner.results.get_mut(&waiting.key) {
            entry.state = Some(state);
            entry.probing = None;
            entry.attempts += 1;
            entry.next = if proven { now } else { now + retry };
            entry.touched = now;
        }
        if let Some(done) = waiting.done.take() {
            let _ = done.send(Receipt {
                node: from.to_owned(),
                local,
            });
        }
        ReceiptOutcome::Accepted {
            csr: waiting.key.csr,
            proven,
        }
    }

    /// Closes `ticket`'s probe: frees its slots, forgets its nonce, and records `ending`
    /// unless a receipt already did.
    pub fn finish(&self, ticket: &Ticket, ending: &Ending, now: Instant, at: Timestamp) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        if let Some(count) = inner.per_node.get_mut(&ticket.key.node) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.per_node.remove(&ticket.key.node);
            }
        }
        let answered = inner.waiting.remove(&ticket.nonce).is_none();
        remember_spent(&mut inner.spent, ticket.nonce, now);
        // A CSR decided or deleted meanwhile (its results forgotten) gets none back.
        let Some(entry) = inner.results.get_mut(&ticket.key) else {
            return;
        };
        entry.probing = None;
        if answered || *ending == Ending::Received {
            return;
        }
        let attempts = entry.attempts + 1;
        let state = match ending {
            Ending::Refused => ProofState::Refused { at },
            Ending::Unanswered { what, delivered } => ProofState::Unanswered {
                at,
                attempts,
                // Consecutive deliveries without a receipt.
                delivered: match (&entry.state, delivered) {
                    (_, false) => 0,
                    (Some(ProofState::Unanswered { delivered: n, .. }), true) => n + 1,
                    (_, true) => 1,
                },
                what: what.clone(),
            },
            Ending::Received => return,
        };
        entry.state = Some(state);
        entry.attempts = attempts;
        entry.next = now + self.retry_after(attempts - 1);
        entry.touched = now;
    }

    /// The wait before the next probe after `attempts` that did not prove the SAN.
    fn retry_after(&self, attempts: u32) -> Duration {
        let doubled = self.config.retry_min.saturating_mul(1 << attempts.min(16));
        doubled.min(self.config.retry_max)
    }

    /// Forgets every result of `csr` (decided or deleted).
    pub fn forget_csr(&self, csr: &str) {
        self.lock().results.retain(|k, _| k.csr != csr);
    }

    /// Forgets results not touched within [`ProofConfig::keep`]; returns how many are left.
    pub fn prune(&self, now: Instant) -> usize {
        let keep = self.config.keep;
        let mut inner = self.lock();
        inner
            .results
            .retain(|_, e| now.saturating_duration_since(e.touched) < keep);
        let spent_keep = self.config.timeout.saturating_mul(30).max(keep);
        inner
            .spent
            .retain(|_, t| now.saturating_duration_since(*t) < spent_keep);
        inner.results.len()
    }

    /// Probes in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

impl OwnershipLookup for ProofBook {
    fn proof(&self, csr: &str, node: &str, san: IpAddr) -> Option<ProofState> {
        let key = ProbeKey {
            csr: csr.to_owned(),
            node: node.to_owned(),
            san,
        };
        let inner = self.lock();
        let entry = inner.results.get(&key)?;
        match (&entry.state, entry.probing) {
            (Some(state), _) => Some(state.clone()),
            (None, Some(since)) => Some(ProofState::Probing { since }),
            (None, None) => None,
        }
    }
}

fn remember_spent(spent: &mut HashMap<ProofNonce, Instant>, nonce: ProofNonce, now: Instant) {
    if spent.len() >= MAX_SPENT
        && let Some(oldest) = spent.iter().min_by_key(|(_, t)| **t).map(|(n, _)| *n)
    {
        spent.remove(&oldest);
    }
    spent.insert(nonce, now);
}

fn evict_oldest(results: &mut HashMap<ProbeKey, Entry>) {
    let oldest = results
        .iter()
        .filter(|(_, e)| e.probing.is_none())
        .min_by_key(|(_, e)| e.touched)
        .map(|(k, _)| k.clone());
    if let Some(key) = oldest {
        results.remove(&key);
    }
}

#[cfg(test)]
mod tests;
