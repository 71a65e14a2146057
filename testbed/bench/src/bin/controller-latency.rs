//! `controller-latency`: how fast the controller approves, measured from outside against the
//! testbed cluster (real HTTPS, the shipped RBAC, one approver replica holding the Lease):
//!
//! - `sequential`: CSR creation → approval, one CSR at a time, the node's attestation
//!   already present;
//! - `concurrent`: the same for N CSRs created at once;
//! - `arrival`: attestation arrival → approval of a CSR that was waiting for it, one node
//!   at a time, and `arrival-burst`: N waiting nodes' agents reporting at once.
//!
//! Each latency runs from just before the harness's request (CSR create, agent report) to
//! the moment the harness's own watch sees the Approved condition, so it includes the
//! request and the watch delivery. Prints a table and one JSON line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use futures::StreamExt as _;
use futures::future::try_join_all;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use rubber_stamp_e2e::controller::{ControllerBed, ScriptedAgent, is_approved};
use rubber_stamp_kubelet_sim::{NodeIdentity, ServingRequest};
use serde::Serialize;
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(version, about = "Measures CSR → approval latencies of the controller")]
struct Args {
    /// CSRs created one after the other (attestation present).
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// CSRs created at once (attestation present).
    #[arg(long, default_value_t = 200)]
    concurrent: usize,
    /// Waiting CSRs approved after their agent's report, one node at a time.
    #[arg(long, default_value_t = 100)]
    arrival: usize,
    /// Waiting CSRs whose agents all report at once.
    #[arg(long, default_value_t = 200)]
    arrival_burst: usize,
    /// The controller's --concurrency.
    #[arg(long, default_value_t = 64)]
    concurrency: u16,
    /// Longest wait for any approval.
    #[arg(long, default_value = "60s", value_parser = rubber_stamp_agent::config::parse_duration)]
    timeout: Duration,
}

/// When the harness's watch saw each CSR approved.
#[derive(Debug, Default)]
struct Approvals {
    seen: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

impl Approvals {
    fn at(&self, name: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    async fn wait(&self, name: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(at) = self.at(name) {
                return Ok(at);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("CSR {name} was not approved within {timeout:?}");
            }
        }
    }
}

/// One node: its kube client (the kubelet's identity) and its scripted agent.
struct Node {
    name: String,
    address: IpAddr,
    client: Client,
    agent: ScriptedAgent,
}

#[derive(Debug, Serialize)]
struct Row {
    scenario: &'static str,
    n: usize,
    median_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn row(scenario: &'static str, mut samples: Vec<Duration>) -> Row {
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let pick = |q: f64| {
        let at = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(at).copied().map_or(f64::NAN, ms)
    };
    Row {
        scenario,
        n: samples.len(),
        median_ms: pick(0.5),
        p90_ms: pick(0.9),
        p99_ms: pick(0.99),
        max_ms: samples.last().copied().map_or(f64::NAN, ms),
    }
}

fn address(i: usize) -> anyhow::Result<IpAddr> {
    let i = u32::try_from(i)?;
    Ok(IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i + 1)))
}

async fn create(node: &Node) -> anyhow::Result<(String, Instant)> {
    let identity = NodeIdentity::new(&node.name, &node.name, &[node.address])?;
    let request = ServingRequest::generate(&identity)?.object(None);
    let api: Api<CertificateSigningRequest> = Api::all(node.client.clone());
    let started = Instant::now();
    let csr = api.create(&PostParams::default(), &request).await?;
    Ok((csr.name_any(), started))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bed = ControllerBed::start().await?;
    let mut config = bed.controller_config("approver-0");
    config.concurrency = args.concurrency;
    let replica = bed.replica(config, false).await?;
    replica.wait_acting(Duration::from_secs(10)).await?;

    // The harness's own watch, as an observer would see approvals.
    let approvals = Arc::new(Approvals::default());
    let admin = bed.cluster.client(&bed.cluster.admin()?).await?;
    let watch = {
        let approvals = Arc::clone(&approvals);
        let api: Api<CertificateSigningRequest> = Api::all(admin);
        tokio::spawn(async move {
            let mut events = std::pin::pin!(
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(event) = events.next().await {
                if let Ok(csr) = event
                    && is_approved(&csr)
                {
                    let now = Instant::now();
                    approvals
                        .seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(csr.name_any())
                        .or_insert(now);
                    approvals.changed.notify_waiters();
                }
            }
        })
    };

    let total = args.sequential + args.concurrent + args.arrival + args.arrival_burst;
    eprintln!("setting up {total} nodes (Node objects, kubelet clients, agents)…");
    let mut nodes = Vec::with_capacity(total);
    for i in 0..total {
        let name = format!("lat-{i:05}");
        let address = address(i)?;
        bed.add_node(&name, &[address])?;
        let client = bed.cluster.client(&bed.cluster.node(&name)?).await?;
        // Warm the kubelet's connection so the measurement holds no TLS handshake.
        Api::<CertificateSigningRequest>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await?;
        let agent = bed.agent(&name, &[&replica], &[address]).await?;
        nodes.push(Node {
            name,
            address,
            client,
            agent,
        });
    }
    let (present, waiting) = nodes.split_at(args.sequential + args.concurrent);
    let (sequential, concurrent) = present.split_at(args.sequential);
    let (arrival, burst) = waiting.split_at(args.arrival);
    for node in present {
        node.agent.report().await?;
    }
    let store = replica.store().clone();
    let deadline = Instant::now() + args.timeout;
    while present
        .iter()
        .any(|n| rubber_stamp_core::AttestationLookup::attestation(&store, &n.name).is_none())
    {
        if Instant::now() > deadline {
            bail!("attestations did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut rows = Vec::new();
    // 1. One at a time, attestation present.
    let mut samples = Vec::with_capacity(sequential.len());
    for node in sequential {
        let (name, started) = create(node).await?;
        let approved = approvals.wait(&name, args.timeout).await?;
        samples.push(approved.duration_since(started));
    }
    rows.push(row("create→approve, sequential", samples));

    // 2. All at once, attestation present.
    let created = try_join_all(concurrent.iter().map(create)).await?;
    let mut samples = Vec::with_capacity(created.len());
    for (name, started) in &created {
        let approved = approvals.wait(name, args.timeout).await?;
        samples.push(approved.duration_since(*started));
    }
    rows.push(row("create→approve, concurrent", samples));

    // 3. Waiting CSRs: created before their agents report; wait until the controller has
    // explained each as awaiting its attestation.
    let metrics = replica.controller_metrics();
    let before = metrics.decisions("pending", "AwaitingAttestation", false);
    let mut waiting_names = HashMap::new();
    for node in waiting {
        let (name, _) = create(node).await?;
        waiting_names.insert(node.name.clone(), name);
    }
    let want = before + u64::try_from(waiting.len())?;
    let deadline = Instant::now() + args.timeout;
    while metrics.decisions("pending", "AwaitingAttestation", false) < want {
        if Instant::now() > deadline {
            bail!("the waiting CSRs were not all decided pending");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let name_of = |node: &Node| {
        waiting_names
            .get(&node.name)
            .cloned()
            .ok_or_else(|| anyhow!("no CSR for {}", node.name))
    };
    let mut samples = Vec::with_capacity(arrival.len());
    for node in arrival {
        let name = name_of(node)?;
        let started = Instant::now();
        node.agent.report().await?;
        let approved = approvals.wait(&name, args.timeout).await?;
        samples.push(approved.duration_since(started));
    }
    rows.push(row("report→approve, one at a time", samples));

    let started = Instant::now();
    try_join_all(burst.iter().map(|n| n.agent.report())).await?;
    let mut samples = Vec::with_capacity(burst.len());
    for node in burst {
        let approved = approvals
            .wait(&name_of(node)?, args.timeout)
            .await
            .context("burst")?;
        samples.push(approved.duration_since(started));
    }
    rows.push(row("report→approve, burst", samples));

    // The watch can see an approval before the approver has read its write's response:
    // let the controller's own counters settle before reading them.
    let approved_here = u64::try_from(total)?;
    let deadline = Instant::now() + args.timeout;
    while metrics.writes("approve", "ok") < approved_here && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = replica.metrics_text().await?;
    watch.abort();
    replica.stop().await?;

    println!(
        "{:<32} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "scenario", "n", "median ms", "p90 ms", "p99 ms", "max ms"
    );
    for r in &rows {
        println!(
            "{:<32} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            r.scenario, r.n, r.median_ms, r.p90_ms, r.p99_ms, r.max_ms
        );
    }
    let controller_side: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("rubber_stamp_controller_approval_latency_seconds_count")
                || l.starts_with("rubber_stamp_controller_approval_latency_seconds_sum")
                || l.starts_with("rubber_stamp_controller_attestation_to_approval_seconds_count")
                || l.starts_with("rubber_stamp_controller_attestation_to_approval_seconds_sum")
        })
        .collect();
    eprintln!("controller-side: {controller_side:?}");
    println!(
        "{}",
        serde_json::json!({ "controllerConcurrency": args.concurrency, "results": rows })
    );
    Ok(())
}
