//! The in-memory attestation store: accepted reports, live agent streams, challenges and
//! change notifications, all in the core's terms.
//!
//! The gRPC layer writes here (node name from the verified certificate, checked facts, the
//! peer address it saw); the decision reads through [`AttestationLookup`]; the controller
//! subscribes to [`AttestationChange`]s and sends [`challenge`](AttestationStore::challenge)s.
//! None of them sees the others' types: no protobuf and no Kubernetes objects here.
//!
//! Per node the store holds one [`Attestation`] and, while the agent is connected, one
//! `LiveStream` entry (a command sender and the pending challenges). Attestations outlive
//! their stream until [`prune`](AttestationStore::prune) removes those older than the max age.

mod clock;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{broadcast, mpsc};

use rubber_stamp_core::attestation::{MetadataFacts, SourceReport};
use rubber_stamp_core::{
    Attestation, AttestationLookup, AttestationSet, AttestationSnapshot, InterfaceFacts, NodeName,
};

pub use clock::{Clock, SystemClock};

use crate::proof::{ProofBook, ProofConfig};

/// Length of the nonces the store puts in challenges, in bytes.
pub const CHALLENGE_NONCE_BYTES: usize = 16;

/// Limits and timings of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How long an attestation counts as fresh (sent to agents in every Ack); older ones
    /// are removed by [`AttestationStore::prune`].
    pub max_age: Duration,
    /// Capacity of the change channel. A subscriber more than this many changes behind
    /// learns that it lagged and must resynchronise.
    pub change_capacity: usize,
    /// Most challenges outstanding at once for one node.
    pub max_pending_challenges: usize,
    /// The proof of address ownership's port, timings and limits.
    pub proof: ProofConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(5 * 60),
            change_capacity: 1024,
            max_pending_challenges: 4,
            proof: ProofConfig::default(),
        }
    }
}

/// The facts of one accepted report, already checked at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's kernel hostname, in canonical form.
    pub hostname: String,
    /// Interfaces in name order, names unique.
    pub interfaces: Vec<InterfaceFacts>,
    /// `/etc/machine-id`, when the agent could read it.
    pub machine_id: Option<String>,
    /// The kernel boot id, when the agent could read it.
    pub boot_id: Option<String>,
    /// The agent's version, for operators.
    pub agent_version: Option<String>,
    /// The sources of facts the agent read, and how completely.
    pub sources: Vec<SourceReport>,
    /// What metadata sources (a cloud's instance metadata) state about the node.
    pub metadata: Vec<MetadataFacts>,
    /// The port of the agent's proof listener; `None` when it runs none.
    pub proof_port: Option<u16>,
}

/// A challenge nonce: random bytes the agent must echo in its answering report.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nonce(Box<[u8]>);

/// What the store asks a live stream to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamCommand {
    /// Send the agent a challenge with this nonce.
    Challenge(Nonce),
}

/// One change to the attestation set, published to every subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationChange {
    /// The node whose attestation changed.
    pub node: NodeName,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// What happened to a node's attestation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A first report, or one whose facts or peer address differ from the previous one.
    Changed,
    /// A report with the same facts as before: only `receivedAt` moved. A pending CSR can
    /// still become decidable through it (freshness).
    Refreshed,
    /// The attestation aged out and was removed.
    Pruned,
}

/// Why [`ChangeSubscription::recv`] returned no change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell behind and `missed` changes were dropped for it. It must
    /// resynchronise (re-read every attestation it cares about); later changes follow.
    #[error("fell behind; {missed} attestation changes were dropped")]
    Lagged {
        /// How many changes were dropped.
        missed: u64,
    },
    /// The store is gone.
    #[error("the attestation store was dropped")]
    Closed,
}

/// Why a challenge produced no fresh attestation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// The node has no live stream to this replica.
    #[error("node {node} has no live stream")]
    NoStream {
        /// The node challenged.
        node: String,
    },
    /// The node already has the maximum number of challenges outstanding.
    #[error("node {node} already has {pending} challenges outstanding")]
    Busy {
        /// The node challenged.
        node: String,
        /// Challenges outstanding.
        pending: usize,
    },
    /// The stream is closing (or was replaced).
    #[error("the stream of node {node} is closing")]
    StreamClosed {
        /// The node challenged.
        node: String,
    },
}

/// A recorded report.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The attestation made from it.
    pub attestation: Arc<Attestation>,
    /// It echoed the nonce of a challenge of this stream that was still pending.
    pub answered_challenge: bool,
}

/// A challenge sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Challenges of the node that expired unanswered and were dropped first.
    pub expired: usize,
}

/// Why a report was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A newer stream of the same node replaced this one.
    #[error("stream {stream} of node {node} was replaced by a newer stream")]
    Superseded {
        /// The node.
        node: NodeName,
        /// The stale stream's id.
        stream: u64,
    },
}

/// What the store knows about a node's live stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveStreamInfo {
    /// The node, from the client certificate.
    pub node: NodeName,
    /// Store-wide unique id of the stream.
    pub id: u64,
    /// TCP source address of the connection.
    pub peer_address: IpAddr,
    /// Serial number of the client certificate, lower-case hex.
    pub certificate_serial: String,
    /// When the stream opened.
    pub opened_at: Timestamp,
}

/// The attestation store of one approver replica. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct AttestationStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    attestations: RwLock<AttestationSet>,
    streams: Mutex<Streams>,
    changes: broadcast::Sender<AttestationChange>,
    proofs: ProofBook,
}

#[derive(Default)]
struct Streams {
    by_node: HashMap<NodeName, LiveStream>,
    next_id: u64,
}

struct LiveStream {
    info: LiveStreamInfo,
    commands: mpsc::Sender<StreamCommand>,
    challenges: Vec<PendingChallenge>,
}

struct PendingChallenge {
    nonce: Nonce,
    /// When it was sent (monotonic): it expires `valid_for` later.
    sent: tokio::time::Instant,
}

/// A node's registration as the live stream of this replica; returned by
/// [`AttestationStore::open_stream`]. Dropping it ends the registration (unless a newer
/// stream already replaced it).
pub struct StreamLease {
    store: AttestationStore,
    info: LiveStreamInfo,
    commands: mpsc::Receiver<StreamCommand>,
}

/// A subscription to attestation changes; see [`AttestationStore::subscribe`].
#[derive(Debug)]
pub struct ChangeSubscription {
    rx: broadcast::Receiver<AttestationChange>,
}

/// A consistent read view of every attestation; holds a read lock, so keep it short and
/// never across an `.await`.
pub type AttestationView<'a> = RwLockReadGuard<'a, AttestationSet>;

// === impl AttestationStore ===

impl AttestationStore {
    /// An empty store stamping reports with `clock`.
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        let (changes, _) = broadcast::channel(config.change_capacity.max(1));
        let proofs = ProofBook::new(config.proof.clone());
        Self {
            inner: Arc::new(Inner {
                proofs,
                config,
                clock,
                attestations: RwLock::new(AttestationSet::new()),
                streams: Mutex::new(Streams::default()),
                changes,
            }),
        }
    }

    /// The proof of address ownership's nonces and results, shared by the attestation
    /// service (receipts) and the controller (probes).
    pub fn proofs(&self) -> &ProofBook {
        &self.inner.proofs
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The clock that stamps `receivedAt`: other parts that compare their own times
    /// with it (the controller's first sighting of a CSR) read this same clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.inner.clock)
    }

    /// The store's current time: the clock `receivedAt` is stamped with.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Registers `node`'s new stream as its live stream on this replica. A previous live
    /// stream of the same node is replaced: its lease's [`StreamLease::next_command`]
    /// returns `None` and its outstanding challenges fail with
    /// [`ChallengeError::StreamClosed`].
    pub fn open_stream(
        &self,
        node: NodeName,
        peer_address: IpAddr,
        certificate_serial: String,
    ) -> StreamLease {
        let (tx, rx) = mpsc::channel(self.inner.config.max_pending_challenges.max(1));
        let opened_at = self.now();
        let (info, replaced) = {
            let mut streams = lock(&self.inner.streams);
            streams.next_id += 1;
            let info = LiveStreamInfo {
                node: node.clone(),
                id: streams.next_id,
                peer_address,
                certificate_serial,
                opened_at,
            };
            let replaced = streams.by_node.insert(
                node,
                LiveStream {
                    info: info.clone(),
                    commands: tx,
                    challenges: Vec::new(),
                },
            );
            (info, replaced)
        };
        // Dropping the old entry (outside the lock) closes its command channel and
        // fails its pending challenges.
        drop(replaced);
        StreamLease {
            store: self.clone(),
            info,
            commands: rx,
        }
    }

    /// Records an accepted report from `lease`'s stream and answers the challenge that
    /// `nonce` echoes, if any. Fails only if a newer stream of the same node replaced
    /// `lease`.
    pub fn record(
        &self,
        lease: &StreamLease,
        facts: NodeFacts,
        nonce: Option<&Nonce>,
    ) -> Result<Recorded, RecordError> {
        let node = &lease.info.node;
        if !self.is_live(lease) {
            return Err(RecordError::Superseded {
                node: node.clone(),
                stream: lease.info.id,
            });
        }
        let attestation = Arc::new(Attestation {
            node_name: node.to_string(),
            hostname: facts.hostname,
            interfaces: facts.interfaces,
            peer_address: Some(lease.info.peer_address),
            received_at: self.now(),
            machine_id: facts.machine_id,
            boot_id: facts.boot_id,
            agent_version: facts.agent_version,
            sources: facts.sources,
            metadata: facts.metadata,
            proof_port: facts.proof_port,
        });
        let kind = {
            let old = write(&self.inner.attestations).insert(Arc::clone(&attestation));
            match old {
                Some(old) if same_facts(&old, &attestation) => ChangeKind::Refreshed,
                _ => ChangeKind::Changed,
            }
        };
        let mut answered = false;
        if let Some(nonce) = nonce {
            let mut streams = lock(&self.inner.streams);
            if let Some(live) = streams.by_node.get_mut(node.as_str())
                && live.info.id == lease.info.id
                && let Some(at) = live.challenges.iter().position(|c| c.nonce == *nonce)
            {
                live.challenges.swap_remove(at);
                answered = true;
            }
        }
        // No subscriber is not an error; a lagging one learns it on its next recv.
        let _ = self.inner.changes.send(AttestationChange {
            node: node.clone(),
            kind,
        });
        Ok(Recorded {
            attestation,
            answered_challenge: answered,
        })
    }

    /// Sends `node`'s agent a challenge over its live stream and returns at once: the
    /// answer is a report echoing the nonce, recorded like any other (its attestation change
    /// triggers whoever waits on the node, and [`record`](Self::record) says it answered).
    /// Challenges unanswered after `valid_for` are dropped first, and counted in
    /// [`Sent::expired`].
    pub fn challenge(&self, node: &str, valid_for: Duration) -> Result<Sent, ChallengeError> {
        let nonce = Nonce::random();
        let now = tokio::time::Instant::now();
        let mut streams = lock(&self.inner.streams);
        let Some(live) = streams.by_node.get_mut(node) else {
            return Err(ChallengeError::NoStream {
                node: node.to_owned(),
            });
        };
        let before = live.challenges.len();
        live.challenges
            .retain(|c| now.duration_since(c.sent) < valid_for);
        let expired = before - live.challenges.len();
        let pending = live.challenges.len();
        if pending >= self.inner.config.max_pending_challenges {
            return Err(ChallengeError::Busy {
                node: node.to_owned(),
                pending,
            });
        }
        match live
            .commands
            .try_send(StreamCommand::Challenge(nonce.clone()))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ChallengeError::Busy {
                    node: node.to_owned(),
                    pending,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ChallengeError::StreamClosed {
                    node: node.to_owned(),
                });
            }
        }
        live.challenges.push(PendingChallenge { nonce, sent: now });
        Ok(Sent { expired })
    }

    /// Subscribes to attestation changes from now on.
    pub fn subscribe(&self) -> ChangeSubscription {
        ChangeSubscription {
            rx: self.inner.changes.subscribe(),
        }
    }

    /// Removes every attestation received longer than the max age ago (whether or not its
    /// node still has a live stream) and publishes a [`ChangeKind::Pruned`] for each.
    /// Returns the nodes removed.
    pub fn prune(&self) -> Vec<NodeName> {
        let now = self.now();
        let max_age =
            SignedDuration::try_from(self.inner.config.max_age).unwrap_or(SignedDuration::MAX);
        let cutoff = now.checked_sub(max_age).unwrap_or(Timestamp::MIN);
        let removed = write(&self.inner.attestations).remove_received_before(cutoff);
        let removed: Vec<NodeName> = removed
            .into_iter()
            .filter_map(|node| node.parse().ok())
            .collect();
        for node in &removed {
            let _ = self.inner.changes.send(AttestationChange {
                node: node.clone(),
                kind: ChangeKind::Pruned,
            });
        }
        removed
    }

    /// A consistent read view of every attestation, for one decision.
    pub fn read(&self) -> AttestationView<'_> {
        self.inner
            .attestations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The attestation snapshot document (the admin endpoint's JSON).
    pub fn snapshot(&self) -> AttestationSnapshot {
        self.read().snapshot()
    }

    /// Number of nodes with an attestation.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no node has an attestation.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The live stream of `node`, if it has one.
    pub fn live_stream(&self, node: &str) -> Option<LiveStreamInfo> {
        lock(&self.inner.streams)
            .by_node
            .get(node)
            .map(|s| s.info.clone())
    }

    /// Every live stream, in node-name order.
    pub fn live_streams(&self) -> Vec<LiveStreamInfo> {
        let mut all: Vec<_> = lock(&self.inner.streams)
            .by_node
            .values()
            .map(|s| s.info.clone())
            .collect();
        all.sort_by(|a, b| a.node.cmp(&b.node));
        all
    }

    fn is_live(&self, lease: &StreamLease) -> bool {
        lock(&self.inner.streams)
            .by_node
            .get(lease.info.node.as_str())
            .is_some_and(|s| s.info.id == lease.info.id)
    }

    fn close_stream(&self, info: &LiveStreamInfo) {
        let mut streams = lock(&self.inner.streams);
        if streams
            .by_node
            .get(info.node.as_str())
            .is_some_and(|s| s.info.id == info.id)
        {
            streams.by_node.remove(info.node.as_str());
        }
    }
}

impl AttestationLookup for AttestationStore {
    fn attestation(&self, node: &str) -> Option<Arc<Attestation>> {
        self.read().attestation(node)
    }

    fn claimants_of_ip(&self, ip: IpAddr) -> Vec<Arc<Attestation>> {
        self.read().claimants_of_ip(ip)
    }

    fn claimants_of_name(&self, name: &str) -> Vec<Arc<Attestation>> {
        self.read().claimants_of_name(name)
    }
}

impl fmt::Debug for AttestationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestationStore")
            .field("config", &self.inner.config)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Two attestations say the same thing if everything but `receivedAt` is equal.
fn same_facts(a: &Attestation, b: &Attestation) -> bool {
    Attestation {
        received_at: b.received_at,
        ..a.clone()
    } == *b
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

// === impl StreamLease ===

impl StreamLease {
    /// The live stream this lease registered.
    pub fn info(&self) -> &LiveStreamInfo {
        &self.info
    }

    /// The node the stream belongs to.
    pub fn node(&self) -> &NodeName {
        &self.info.node
    }

    /// The next command for this stream; `None` once a newer stream of the same node
    /// replaced it (the stream should then end).
    pub async fn next_command(&mut self) -> Option<StreamCommand> {
        self.commands.recv().await
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.store.close_stream(&self.info);
    }
}

impl fmt::Debug for StreamLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamLease")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

// === impl ChangeSubscription ===

impl ChangeSubscription {
    /// The next change. After [`SubscriptionError::Lagged`] the subscriber has missed
    /// changes and must resynchronise; the following call returns newer changes.
    pub async fn recv(&mut self) -> Result<AttestationChange, SubscriptionError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => SubscriptionError::Lagged { missed },
            broadcast::error::RecvError::Closed => SubscriptionError::Closed,
        })
    }
}

// === impl Nonce ===

impl Nonce {
    /// A fresh random nonce of [`CHALLENGE_NONCE_BYTES`] bytes.
    pub fn random() -> Self {
        Self(Box::new(rand::random::<[u8; CHALLENGE_NONCE_BYTES]>()))
    }

    /// A nonce with these bytes (as echoed by an agent; the edge bounds its length).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes.into_boxed_slice())
    }

    /// The nonce's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
