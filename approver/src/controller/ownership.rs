//! Check 15's probes (docs/design.md, "Proof of address ownership"): for each IP SAN the
//! verdict wants proven, open a TCP connection to the SAN on the agents' proof port and
//! write the probe frame with a fresh nonce; the agent that receives it reports the nonce
//! on its own stream ([`crate::proof::ProofBook::receipt`]). Then decide on the CSR again.
//!
//! Only the acting replica probes, only SANs the verdict names (allowed by the policy and
//! attested by the requesting node), each at most once in flight, with backoff between
//! attempts and limits per node and overall ([`crate::proof::ProofConfig`]).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rubber_stamp_proto::proof::encode;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use rubber_stamp_core::{AttestationLookup as _, Verdict};

use super::context::{Context, Observation};
use crate::metrics::ResultLabel;
use crate::proof::{Ending, ProbeKey, Start, Ticket};

/// When a limit puts a probe off, decide on the CSR again after this long.
const LIMITED_RETRY: Duration = Duration::from_millis(500);

/// How long after a refused probe the requester's stream must still be the same one for
/// the refusal to count: an agent stopping closes its streams before its proof listener,
/// and the approver sees a closed stream within this.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

impl Context {
    /// Probes each IP SAN `verdict` wants proven for `observation`'s CSR that is due and
    /// within the limits. Returns when to decide again for SANs that had to wait (a probe
    /// that runs triggers the decision itself when it ends).
    pub(crate) fn probe(
        self: &Arc<Self>,
        observation: &Observation,
        verdict: &Verdict,
    ) -> Option<Duration> {
        let node = verdict.node()?;
        let sans = verdict.probes_wanted();
        if sans.is_empty() {
            return None;
        }
        let book = self.state.store.proofs();
        let now = Instant::now();
        let at = self.state.store.now();
        let mut wait: Option<Duration> = None;
        let mut sooner = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        for san in sans {
            let key = ProbeKey {
                csr: observation.input.name.clone(),
                node: node.to_owned(),
                san: *san,
            };
            match book.start(&key, now, at) {
                Start::Probe(ticket) => {
                    let ctx = Arc::clone(self);
                    tokio::spawn(async move { ctx.run_probe(ticket).await });
                }
                Start::InFlight => {}
                Start::NotDue(when) => sooner(when.saturating_duration_since(now)),
                Start::Limited(scope) => {
                    self.metrics
                        .proof
                        .probes_limited
                        .get_or_create(&ResultLabel { result: scope })
                        .inc();
                    sooner(LIMITED_RETRY);
                }
            }
        }
        wait
    }

    /// Sends one probe and waits for its receipt until the deadline; records how it ended
    /// and decides on the CSR again.
    async fn run_probe(self: Arc<Self>, mut ticket: Ticket) {
        let book = self.state.store.proofs();
        let config = book.config();
        let metrics = &self.metrics.proof;
        metrics.probes_in_flight.inc();
        let target = SocketAddr::new(ticket.key.san, config.port);
        let deadline = Instant::now() + config.timeout;
        // The requester's live stream before the probe: a refusal says something only if
        // the same stream (so the same agent process, listening on every address of its
        // node) is still open well after it.
        let stream_before = self.state.store.live_stream(&ticket.key.node).map(|s| s.id);
        let frame = encode(&ticket.nonce);
        let connected = tokio::time::timeout_at(deadline, async {
            let mut conn = TcpStream::connect(target).await?;
            conn.write_all(&frame).await?;
            Ok::<_, std::io::Error>(conn)
        })
        .await;
        let unanswered = |what: String, delivered: bool| Ending::Unanswered { what, delivered };
        let mut receipt = None;
        let ending = match connected {
            Err(_) => unanswered(
                format!("no connection to {target} within {:?}", config.timeout),
                false,
            ),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                self.refusal(&ticket, target, stream_before).await
            }
            Ok(Err(e)) => unanswered(format!("connecting to {target}: {e}"), false),
            Ok(Ok(conn)) => {
                let received = tokio::time::timeout_at(deadline, &mut ticket.receipt).await;
                drop(conn);
                match received {
                    Ok(Ok(r)) => {
                        receipt = Some(r);
                        Ending::Received
                    }
                    _ => unanswered(
                        format!(
                            "the nonce was delivered to {target}, but no agent reported it within {:?}",
                            config.timeout
                        ),
                        true,
                    ),
                }
            }
        };
        // A receipt that raced the deadline still counts; the label comes from the receipt.
        let receipt = receipt.or_else(|| ticket.receipt.try_recv().ok());
        let result = match (&receipt, &ending) {
            (Some(r), _) if r.node == ticket.key.node => "proven",
            (Some(_), _) => "other_node",
            (None, Ending::Received) => "proven",
            (None, Ending::Refused) => "refused",
            (None, Ending::Unanswered { .. }) => "unanswered",
        };
        let ending = if receipt.is_some() {
            Ending::Received
        } else {
            ending
        };
        tracing::debug!(csr = %ticket.key.csr, node = %ticket.key.node, san = %ticket.key.san, result, ?ending, "ownership probe ended");
        book.finish(&ticket, &ending, Instant::now(), self.state.store.now());
        metrics.probes_in_flight.dec();
        metrics.probes.get_or_create(&ResultLabel { result }).inc();
        // Decide again with the result. While the controller's queue is full
        // (`TRIGGER_BUFFER`) this waits, holding no probe slot.
        self.state.triggers.csr(&ticket.key.csr).await;
    }

    /// What a refused connection to `target` shows. It is evidence that another host holds
    /// the address only if the requester's agent listens on every address of its node on
    /// the probed port (its report says so) and its stream — the same agent process — was
    /// open before the probe and is still open [`REFUSAL_GRACE`] after the refusal: an
    /// agent that was stopping could have refused the probe itself.
    async fn refusal(
        &self,
        ticket: &Ticket,
        target: SocketAddr,
        stream_before: Option<u64>,
    ) -> Ending {
        let node = &ticket.key.node;
        let port = self.state.store.proofs().config().port;
        let listens = |store: &crate::store::AttestationStore| {
            store
                .read()
                .attestation(node)
                .is_some_and(|a| a.proof_port == Some(port))
        };
        if !listens(&self.state.store) {
            return Ending::Unanswered {
                what: format!(
                    "{target} refused the connection, and {node}'s agent does not report a proof listener on every address of the node on port {port}"
                ),
                delivered: false,
            };
        }
        tokio::time::sleep(REFUSAL_GRACE).await;
        let stream_after = self.state.store.live_stream(node).map(|s| s.id);
        if stream_before.is_some() && stream_before == stream_after && listens(&self.state.store) {
            Ending::Refused
        } else {
            Ending::Unanswered {
                what: format!(
                    "{target} refused the connection, but {node}'s agent was not connected throughout, so the refusal may have been its own"
                ),
                delivered: false,
            }
        }
    }
}
