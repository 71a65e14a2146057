//! Starts a testbed cluster for exploration: writes kubeconfigs for the admin, nodes and the approver's ServiceAccount, and serves until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use rubber_stamp_apiserver::{Cluster, ClusterOptions};

/// Run an in-memory Kubernetes API server for exploration with kubectl.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory for the kubeconfigs and the CA certificate (created if missing).
    #[arg(long, default_value = "testbed-cluster")]
    dir: PathBuf,
    /// Node names to write kubelet kubeconfigs for (`node-<name>.kubeconfig`).
    #[arg(long = "node", default_value = "worker-1")]
    nodes: Vec<String>,
    /// The approver's ServiceAccount, `namespace/name`; its token goes into `approver.kubeconfig`.
    #[arg(long, default_value = "kube-system/rubber-stamp-approver")]
    service_account: String,
    /// RBAC (or any) YAML manifests to load at start; may be repeated.
    #[arg(long = "load")]
    load: Vec<PathBuf>,
    /// Watch events kept per kind before older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let (sa_ns, sa_name) = args
        .service_account
        .split_once('/')
        .context("--service-account must be namespace/name")?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;

    let options = ClusterOptions {
        listen: args.listen,
        history_limit: args.history_limit,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    for path in &args.load {
        let loaded = cluster.load_yaml_file(path)?;
        println!("loaded {} objects from {}", loaded.len(), path.display());
    }
    cluster.load_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {sa_ns}\n"
    ))?;

    let admin = cluster.write_kubeconfig(&cluster.admin()?, &args.dir, "admin")?;
    for node in &args.nodes {
        let path =
            cluster.write_kubeconfig(&cluster.node(node)?, &args.dir, &format!("node-{node}"))?;
        println!("node {node}: {}", path.display());
    }
    let sa = cluster.write_kubeconfig(
        &cluster.service_account(sa_ns, sa_name)?,
        &args.dir,
        "approver",
    )?;
    let ca = cluster.ca().write_cert(&args.dir, "ca")?;
    println!("testbed cluster at {}", cluster.url());
    println!("CA: {}", ca.display());
    println!("approver ({sa_ns}/{sa_name}): {}", sa.display());
    println!(
        "try: kubectl --kubeconfig {} get csr,nodes,leases -A",
        admin.display()
    );
    println!("Ctrl-C stops the cluster");

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cluster.shutdown().await;
    Ok(())
}
