//! A scripted agent: a raw attestation client per approver replica, with a node
//! certificate from the cluster CA, reporting the facts the test sets and answering every
//! challenge with them. Tests choose each node's addresses, which real agents on one
//! machine cannot (they would all report the same interfaces).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use rubber_stamp_proto::v1::{AgentMessage, agent_message, approver_message};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::BedError;
use crate::channel::ChannelPki;
use crate::channel::raw::{self, RawStream};

#[derive(Debug)]
struct Shared {
    node: String,
    addresses: Mutex<Vec<(IpAddr, u32)>>,
    sequence: AtomicU64,
    challenges: AtomicU64,
}

/// How long [`ScriptedAgent::report`] waits for every replica's Ack.
const ACK_WITHIN: Duration = Duration::from_secs(10);

impl Shared {
    fn report(&self, nonce: Option<Vec<u8>>) -> AgentMessage {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let message = raw::report(sequence, &self.node, &addresses);
        match nonce {
            Some(nonce) => raw::with_nonce(message, nonce),
            None => message,
        }
    }
}

/// A node's scripted agent, connected to one or more replicas.
#[derive(Debug)]
pub struct ScriptedAgent {
    shared: Arc<Shared>,
    senders: Vec<mpsc::Sender<AgentMessage>>,
    readers: Vec<JoinHandle<()>>,
    /// The highest sequence each replica acknowledged.
    acked: Vec<watch::Receiver<u64>>,
}

impl ScriptedAgent {
    /// Opens a stream to every replica at `approvers` as `node` (hostname = node name),
    /// with `addresses` on `eth0` (and `127.0.0.1/8` on `lo`). Nothing is reported yet.
    pub async fn connect(
        pki: &ChannelPki,
        node: &str,
        approvers: &[SocketAddr],
        addresses: &[(IpAddr, u32)],
    ) -> Result<Self, BedError> {
        let leaf = pki.node(node)?;
        let shared = Arc::new(Shared {
            node: node.to_owned(),
            addresses: Mutex::new(addresses.to_vec()),
            sequence: AtomicU64::new(0),
            challenges: AtomicU64::new(0),
        });
        let mut senders = Vec::new();
        let mut readers = Vec::new();
        let mut acked = Vec::new();
        for addr in approvers {
            let RawStream { tx, mut rx } = raw::attest(pki, *addr, Some(&leaf)).await?;
            let reply = tx.clone();
            let shared = Arc::clone(&shared);
            let (ack_tx, ack_rx) = watch::channel(0);
            readers.push(tokio::spawn(async move {
                while let Ok(Some(message)) = rx.message().await {
                    match message.kind {
                        Some(approver_message::Kind::Challenge(challenge)) => {
                            shared.challenges.fetch_add(1, Ordering::SeqCst);
                            if reply
                                .send(shared.report(Some(challenge.nonce)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Some(approver_message::Kind::Ack(ack)) => {
                            ack_tx.send_modify(|last| *last = (*last).max(ack.sequence));
                        }
                        None => {}
                    }
                }
            }));
            senders.push(tx);
            acked.push(ack_rx);
        }
        Ok(Self {
            shared,
            senders,
            readers,
            acked,
        })
    }

    /// Sends a report with the current facts to every replica and returns once every
    /// replica acknowledged it (stored it), so that what a test does next happens after.
    pub async fn report(&self) -> Result<(), BedError> {
        let mut sent = Vec::with_capacity(self.senders.len());
        for tx in &self.senders {
            let message = self.shared.report(None);
            let sequence = match &message.kind {
                Some(agent_message::Kind::Report(report)) => report.sequence,
                None => 0,
            };
            tx.send(message)
                .await
                .map_err(|_| BedError::Closed("an attestation stream"))?;
            sent.push(sequence);
        }
        for (acked, sequence) in self.acked.iter().zip(sent) {
            let mut acked = acked.clone();
            tokio::time::timeout(ACK_WITHIN, acked.wait_for(|last| *last >= sequence))
                .await
                .map_err(|_| BedError::Closed("an Ack within 10 s"))?
                .map_err(|_| BedError::Closed("an attestation stream"))?;
        }
        Ok(())
    }

    /// Changes the facts of later reports and challenge answers.
    pub fn set_addresses(&self, addresses: &[(IpAddr, u32)]) {
        *self
            .shared
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = addresses.to_vec();
    }

    /// How many challenges the agent answered.
    pub fn challenges_answered(&self) -> u64 {
        self.shared.challenges.load(Ordering::SeqCst)
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.shared.node
    }
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}
