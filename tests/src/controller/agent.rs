//! A scripted agent: a raw attestation client per approver replica, with a node
//! certificate from the cluster CA, reporting the facts the test sets and answering every
//! challenge with them. Tests choose each node's addresses, which real agents on one
//! machine cannot (they would all report the same interfaces).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rubber_stamp_proto::v1::{AgentMessage, approver_message};
use tokio::sync::mpsc;
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
        for addr in approvers {
            let RawStream { tx, mut rx } = raw::attest(pki, *addr, Some(&leaf)).await?;
            let reply = tx.clone();
            let shared = Arc::clone(&shared);
            readers.push(tokio::spawn(async move {
                while let Ok(Some(message)) = rx.message().await {
                    if let Some(approver_message::Kind::Challenge(challenge)) = message.kind {
                        shared.challenges.fetch_add(1, Ordering::SeqCst);
                        if reply
                            .send(shared.report(Some(challenge.nonce)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }));
            senders.push(tx);
        }
        Ok(Self {
            shared,
            senders,
            readers,
        })
    }

    /// Sends a report with the current facts to every replica.
    pub async fn report(&self) -> Result<(), BedError> {
        for tx in &self.senders {
            tx.send(self.shared.report(None))
                .await
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
