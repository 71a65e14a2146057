//! Prometheus metrics of the agent (prefix `rubber_stamp_agent_`), served in plain HTTP at
//! `GET /metrics` on `--metrics-listen` when it is set: what a PodMonitor scrapes to see,
//! node by node, whether the agent is attested and why its streams fail.
//!
//! They say nothing a neighbour on the node could not learn otherwise: counts, reasons and
//! the readiness the health port already serves — never an address, a name or a
//! credential (the proof listener's counts neither: no source, no nonce). The listener is
//! bounded like the health port (`rubber-stamp-listen`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rubber_stamp_listen::PlaintextLimits;
use rubber_stamp_proto::v1::Ack;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::facts::NodeFacts;
use crate::proof::{FrameOutcome, ProofEvents};
use crate::readiness::Readiness;
use crate::session::{ReceiptDrop, SessionError, SessionEvents};

/// The content type of [`AgentMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The listener's name in logs.
const LISTENER: &str = "metrics";

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// A `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// `rubber_stamp_agent_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfo {
    component: &'static str,
    version: &'static str,
}

/// The agent's metrics, and the [`SessionEvents`] that count them (passing every Ack on to
/// the agent's [`Readiness`]); cheap to clone, clones share values.
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    readiness: Readiness,
    attested: Gauge,
    reports: Counter,
    acks: Counter,
    challenges: Counter,
    stream_errors: Family<ReasonLabel, Counter>,
    proof_frames: Family<ResultLabel, Counter>,
    receipts_sent: Counter,
    receipts_dropped: Family<ReasonLabel, Counter>,
}

impl fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Every family registered; Acks also go to `readiness`.
    pub fn new(readiness: Readiness) -> Self {
        let mut registry = Registry::with_prefix("rubber_stamp_agent");
        let build_info = Family::<BuildInfo, Gauge>::default();
        build_info
            .get_or_create(&BuildInfo {
                component: "rubber-stamp-agent",
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1: the running binary's name and version as labels",
            build_info,
        );
        let attested = Gauge::default();
        let reports = Counter::default();
        let acks = Counter::default();
        let challenges = Counter::default();
        let stream_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "attested",
            "1 while an approver replica acknowledged a report within its max age and the node's facts are readable (the readiness the health port serves)",
            attested.clone(),
        );
        registry.register(
            "reports",
            "Reports handed to a stream, on every replica's stream",
            reports.clone(),
        );
        registry.register(
            "acks",
            "Reports acknowledged by an approver replica",
            acks.clone(),
        );
        registry.register(
            "challenges",
            "Challenges from an approver replica, each answered with freshly read facts",
            challenges.clone(),
        );
        registry.register(
            "stream_errors",
            "Connection attempts and streams to a replica that failed, by reason; each is retried after a backoff",
            stream_errors.clone(),
        );
        let proof_frames = Family::<ResultLabel, Counter>::default();
        // Every result from the start, so that a rate of any of them is defined at once.
        for outcome in FrameOutcome::ALL {
            let _ = proof_frames.get_or_create(&ResultLabel {
                result: outcome.label(),
            });
        }
        let receipts_sent = Counter::default();
        let receipts_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "proof_frames",
            "Connections to the proof port (--proof-listen) by result: received (a probe frame, passed on as a receipt), malformed (a wrong frame, or closed before a whole one), timeout (no whole frame in time), rate_limited (a probe frame past the agent's receipt rate, dropped)",
            proof_frames.clone(),
        );
        registry.register(
            "proof_receipts_sent",
            "Proof receipts handed to a stream, on every replica's stream",
            receipts_sent.clone(),
        );
        registry.register(
            "proof_receipts_dropped",
            "Proof receipts a stream did not send, by reason: not_accepted (the replica's last Ack did not accept receipts: an approver before 0.4, or none yet), lagged (the stream fell behind)",
            receipts_dropped.clone(),
        );
        Self {
            registry: Arc::new(registry),
            readiness,
            attested,
            reports,
            acks,
            challenges,
            stream_errors,
            proof_frames,
            receipts_sent,
            receipts_dropped,
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        self.attested.set(i64::from(self.readiness.is_ready()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Failed attempts and streams so far for `reason`.
    pub fn stream_errors(&self, reason: &'static str) -> u64 {
        self.stream_errors
            .get(&ReasonLabel { reason })
            .map_or(0, |c| c.get())
    }

    /// Connections to the proof port so far that ended with `outcome`.
    pub fn proof_frames(&self, outcome: FrameOutcome) -> u64 {
        self.proof_frames
            .get(&ResultLabel {
                result: outcome.label(),
            })
            .map_or(0, |c| c.get())
    }
}

impl ProofEvents for AgentMetrics {
    fn frame(&self, outcome: FrameOutcome) {
        self.proof_frames
            .get_or_create(&ResultLabel {
                result: outcome.label(),
            })
            .inc();
    }
}

impl SessionEvents for AgentMetrics {
    fn acknowledged(&self, endpoint: SocketAddr, ack: &Ack) {
        self.acks.inc();
        self.readiness.acknowledged(endpoint, ack);
    }

    fn reported(&self, _endpoint: SocketAddr, _sequence: u64, _facts: &NodeFacts) {
        self.reports.inc();
    }

    fn challenged(&self, _endpoint: SocketAddr) {
        self.challenges.inc();
    }

    fn receipt_sent(&self, _endpoint: SocketAddr) {
        self.receipts_sent.inc();
    }

    fn receipts_dropped(&self, _endpoint: SocketAddr, reason: ReceiptDrop, count: u64) {
        self.receipts_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc_by(count);
    }

    fn ended(&self, _endpoint: SocketAddr, error: Option<&SessionError>) {
        if let Some(error) = error {
            self.stream_errors
                .get_or_create(&ReasonLabel {
                    reason: error.metric_label(),
                })
                .inc();
        }
    }
}

/// Serves `GET /metrics` on `listener` within `limits` until `stop`; anything else is 404
/// (405 for another method on `/metrics`).
pub async fn serve(
    listener: TcpListener,
    limits: PlaintextLimits,
    metrics: AgentMetrics,
    stop: CancellationToken,
) {
    let mut incoming =
        rubber_stamp_listen::plaintext(listener, LISTENER, limits, Arc::new(()), stop.clone());
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let connection = tokio::select! {
            () = stop.cancelled() => return,
            next = incoming.next_admitted() => match next {
                Some(connection) => connection,
                None => return,
            },
        };
        let metrics = metrics.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &request)) }
            });
            let served = builder.serve_connection(TokioIo::new(connection), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = served => {}
            }
        });
    }
}

fn answer(metrics: &AgentMetrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_owned(),
        );
    }
    match metrics.encode() {
        Ok(text) => respond(StatusCode::OK, CONTENT_TYPE, text),
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding the metrics failed\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_sessions_report_and_mirrors_readiness() {
        let readiness = Readiness::new();
        let metrics = AgentMetrics::new(readiness.clone());
        let endpoint = SocketAddr::from(([127, 0, 0, 1], 8443));
        let text = metrics.encode().expect("encode");
        assert!(text.contains("rubber_stamp_agent_attested 0"), "{text}");
        assert!(
            text.contains(&format!(
                "rubber_stamp_agent_build_info{{component=\"rubber-stamp-agent\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        let facts = NodeFacts {
            hostname: "worker-1".to_owned(),
            interfaces: Vec::new(),
            machine_id: None,
            boot_id: None,
            interfaces_cut: None,
            cloud: None,
        };
        metrics.reported(endpoint, 1, &facts);
        metrics.acknowledged(
            endpoint,
            &Ack {
                max_age_seconds: 300,
                ..Ack::default()
            },
        );
        metrics.challenged(endpoint);
        metrics.ended(endpoint, Some(&SessionError::Closed));
        metrics.ended(endpoint, None);
        metrics.frame(FrameOutcome::Received);
        metrics.frame(FrameOutcome::Malformed);
        metrics.frame(FrameOutcome::Malformed);
        metrics.receipt_sent(endpoint);
        metrics.receipts_dropped(endpoint, ReceiptDrop::Lagged, 3);
        // The Ack reached readiness (ready once the facts are readable too).
        readiness.facts_readable(true);
        assert!(readiness.is_ready());
        let text = metrics.encode().expect("encode");
        for line in [
            "rubber_stamp_agent_attested 1",
            "rubber_stamp_agent_reports_total 1",
            "rubber_stamp_agent_acks_total 1",
            "rubber_stamp_agent_challenges_total 1",
            "rubber_stamp_agent_stream_errors_total{reason=\"closed\"} 1",
            "rubber_stamp_agent_proof_frames_total{result=\"received\"} 1",
            "rubber_stamp_agent_proof_frames_total{result=\"malformed\"} 2",
            "rubber_stamp_agent_proof_frames_total{result=\"timeout\"} 0",
            "rubber_stamp_agent_proof_frames_total{result=\"rate_limited\"} 0",
            "rubber_stamp_agent_proof_receipts_sent_total 1",
            "rubber_stamp_agent_proof_receipts_dropped_total{reason=\"lagged\"} 3",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(metrics.stream_errors("closed"), 1);
        assert_eq!(metrics.proof_frames(FrameOutcome::Malformed), 2);
    }
}
