//! `metadata-sim`: a cloud instance metadata service for one instance, e.g. in a
//! simulated host's network namespace at 169.254.169.254:80 (the sandbox's cloud node).

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use rubber_stamp_metadata_sim::{Instance, MetadataService, Provider};

/// Serves one instance's metadata in a provider's protocol until SIGTERM or Ctrl-C.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "169.254.169.254:80")]
    listen: SocketAddr,
    /// Which provider's protocol.
    #[arg(long, value_enum)]
    provider: Provider,
    /// A private address (repeatable).
    #[arg(long = "private-ip")]
    private: Vec<IpAddr>,
    /// A public address (repeatable).
    #[arg(long = "public-ip")]
    public: Vec<IpAddr>,
    /// The private DNS name.
    #[arg(long)]
    private_name: Option<String>,
    /// The public DNS name.
    #[arg(long)]
    public_name: Option<String>,
    /// A file to create once the service listens (for whoever waits to start a client).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let service = MetadataService::start(
        listener,
        args.provider,
        Instance {
            private: args.private,
            public: args.public,
            private_name: args.private_name,
            public_name: args.public_name,
        },
    )?;
    tracing::info!(addr = %service.addr(), provider = ?args.provider, "serving instance metadata");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, service.addr().to_string())?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
