//! kubelet-sim: bootstraps a kubelet serving certificate exactly as a kubelet
//! with `serverTLSBootstrap: true` does (CSR, wait, verify, store), then
//! serves HTTPS with it until terminated.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rubber_stamp_kubelet_sim::{
    self as kubelet, ApiServerConfig, CertDir, KubeletError, NodeIdentity, Progress,
    ServingCertificate, ServingRequest, WaitLimits,
};

/// Simulates a kubelet's serving certificate bootstrap (`serverTLSBootstrap:
/// true`): creates a `kubernetes.io/kubelet-serving` CSR with the node's
/// client certificate, waits for it to be approved and issued, checks the
/// certificate, writes it to the cert dir, and serves HTTPS (`/healthz`) with
/// it until SIGTERM/SIGINT.
///
/// Exit codes: 0 stopped by a signal or --print-csr done; 1 error; 2 usage;
/// 3 CSR denied; 4 CSR failed; 5 issued certificate does not match; 6 no
/// certificate within --timeout.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Kubeconfig to reach the API server with (its current context).
    #[arg(long, env = "KUBELET_SIM_KUBECONFIG", conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,

    /// API server URL, e.g. https://198.18.0.1:6443 (instead of --kubeconfig;
    /// needs --ca-file).
    #[arg(long, env = "KUBELET_SIM_SERVER", requires = "ca_file")]
    server: Option<http::Uri>,

    /// CA bundle (PEM) that verifies the API server (with --server).
    #[arg(long, env = "KUBELET_SIM_CA_FILE")]
    ca_file: Option<PathBuf>,

    /// The node's client certificate, PEM; may also hold the key, like the
    /// kubelet's kubelet-client-current.pem (with --server).
    #[arg(
        long,
        env = "KUBELET_SIM_CLIENT_CERT",
        default_value = "/var/lib/kubelet/pki/kubelet-client-current.pem"
    )]
    client_cert: PathBuf,

    /// The client certificate's private key, PEM [default: --client-cert].
    #[arg(long, env = "KUBELET_SIM_CLIENT_KEY")]
    client_key: Option<PathBuf>,

    /// Node name (CN system:node:NAME) [default: the hostname].
    #[arg(long, env = "KUBELET_SIM_NODE_NAME")]
    node_name: Option<String>,

    /// Hostname for the DNS SAN [default: the system hostname, lower case].
    #[arg(long, env = "KUBELET_SIM_HOSTNAME")]
    hostname_override: Option<String>,

    /// A node address for the IP SANs; repeat or comma-separate for several
    /// [default: every non-loopback, non-link-local address of the host].
    #[arg(
        long = "node-ip",
        visible_alias = "ip",
        env = "KUBELET_SIM_NODE_IP",
        value_delimiter = ','
    )]
    node_ips: Vec<IpAddr>,

    /// A further DNS SAN, as a cloud Node's ExternalDNS or InternalDNS address puts one in
    /// a kubelet's CSR; repeat or comma-separate for several [default: none].
    #[arg(long = "dns-name", env = "KUBELET_SIM_DNS_NAME", value_delimiter = ',')]
    dns_names: Vec<String>,

    /// spec.expirationSeconds of the CSR (at least 600) [default: unset].
    #[arg(long, env = "KUBELET_SIM_EXPIRATION_SECONDS",
          value_parser = clap::value_parser!(i32).range(600..))]
    expiration_seconds: Option<i32>,

    /// Directory of the serving certificate (kubelet-server-current.pem); a
    /// still-valid certificate for the same names and addresses found there
    /// is reused, as the kubelet does.
    #[arg(
        long,
        env = "KUBELET_SIM_CERT_DIR",
        default_value = "/var/lib/kubelet/pki"
    )]
    cert_dir: PathBuf,

    /// Address to serve HTTPS on (`::` also accepts IPv4).
    #[arg(long, env = "KUBELET_SIM_ADDRESS", default_value = "::")]
    address: IpAddr,

    /// Port to serve HTTPS on.
    #[arg(long, env = "KUBELET_SIM_PORT", default_value_t = kubelet::DEFAULT_PORT)]
    port: u16,

    /// Seconds between "still pending" lines while waiting.
    #[arg(long, env = "KUBELET_SIM_STATUS_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    status_interval: u64,

    /// Give up (exit 6) after this many seconds without a certificate;
    /// 0 waits forever.
    #[arg(long, env = "KUBELET_SIM_TIMEOUT", default_value_t = 0)]
    timeout: u64,

    /// Print the CSR object this node would create (YAML) and exit, without
    /// contacting the API server.
    #[arg(long)]
    print_csr: bool,
}

/// Prints one status line for whoever watches (the sandbox shows them).
struct Status {
    node: String,
}

impl Status {
    fn say(&self, line: impl std::fmt::Display) {
        println!("kubelet-sim[{}]: {line}", self.node);
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelet-sim: starting the runtime: {e}");
            return ExitCode::from(kubelet::EXIT_ERROR);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .downcast_ref::<KubeletError>()
                .map_or(kubelet::EXIT_ERROR, KubeletError::exit_code);
            eprintln!("kubelet-sim: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let hostname = match &args.hostname_override {
        Some(h) => h.clone(),
        None => kubelet::system_hostname().context("cannot read the system hostname")?,
    };
    let node_name = args.node_name.clone().unwrap_or_else(|| hostname.clone());
    let ips = if args.node_ips.is_empty() {
        kubelet::discover_ips()
    } else {
        args.node_ips.clone()
    };
    let identity =
        NodeIdentity::new(&node_name, &hostname, &ips)?.with_dns_names(&args.dns_names)?;
    let status = Status {
        node: node_name.clone(),
    };

    if args.print_csr {
        let request = ServingRequest::generate(&identity)?;
        print!(
            "{}",
            serde_yaml::to_string(&request.object(args.expiration_seconds))?
        );
        return Ok(());
    }

    status.say(format_args!(
        "node {} hostname {} addresses [{}]",
        identity.node_name(),
        identity.hostname(),
        join(identity.ips())
    ));
    let cert_dir = CertDir::new(&args.cert_dir);
    let api = api_config(&args)?;
    let certificate = match reusable(&cert_dir, &identity)? {
        Some(cert) => {
            status.say(format_args!(
                "using existing serving certificate {} (serial {}, valid until {})",
                cert_dir.current_path().display(),
                cert.facts().serial,
                time(cert.facts().not_after)
            ));
            cert
        }
        None => bootstrap(&args, &api, &identity, &cert_dir, &status).await?,
    };

    let bind = SocketAddr::new(args.address, args.port);
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        // `::` fails where IPv6 is disabled; the kubelet then serves IPv4.
        Err(_) if args.address == IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) => {
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, args.port))
                .await
                .with_context(|| format!("binding 0.0.0.0:{}", args.port))?
        }
        Err(e) => return Err(e).with_context(|| format!("binding {bind}")),
    };
    status.say(format_args!(
        "serving HTTPS on {} (GET /healthz)",
        listener.local_addr()?
    ));
    kubelet::serve(listener, certificate.tls_config()?, terminated()).await?;
    status.say("stopped");
    Ok(())
}

/// The stored certificate when it can be reused; says why not otherwise.
fn reusable(dir: &CertDir, identity: &NodeIdentity) -> anyhow::Result<Option<ServingCertificate>> {
    let Some(cert) = dir.load_current()? else {
        return Ok(None);
    };
    let now = jiff::Timestamp::now().as_second();
    match cert.reusable_for(identity, now) {
        Ok(()) => Ok(Some(cert)),
        Err(why) => {
            println!(
                "kubelet-sim[{}]: not reusing {}: {why}",
                identity.node_name(),
                dir.current_path().display()
            );
            Ok(None)
        }
    }
}

async fn bootstrap(
    args: &Args,
    api: &ApiServerConfig,
    identity: &NodeIdentity,
    cert_dir: &CertDir,
    status: &Status,
) -> anyhow::Result<ServingCertificate> {
    let client = kubelet::client(api).await?;
    let request = ServingRequest::generate(identity)?;
    let object = request.object(args.expiration_seconds);
    status.say(format_args!(
        "requesting a serving certificate: signer {} usages [{}] DNS [{}] IP [{}]",
        kubelet::KUBELET_SERVING_SIGNER,
        kubelet::ECDSA_SERVING_USAGES.join(", "),
        identity.dns_names().join(", "),
        join(identity.ips())
    ));
    let limits = WaitLimits {
        status_interval: Duration::from_secs(args.status_interval),
        timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
        ..WaitLimits::default()
    };
    let pem = kubelet::request_certificate(client, &object, limits, |p| match p {
        Progress::CreateRetry { error, retry_in } => status.say(format_args!(
            "creating the CSR failed ({error}); retrying in {:.1} s",
            retry_in.as_secs_f64()
        )),
        Progress::Created { name } => status.say(format_args!(
            "created CSR {name}; waiting for approval and issuance"
        )),
        Progress::Approved { name } => {
            status.say(format_args!("CSR {name} approved; waiting for the signer"))
        }
        Progress::StillPending { name, waited } => status.say(format_args!(
            "CSR {name} still pending after {} s",
            waited.as_secs()
        )),
        Progress::WatchError { name, error } => status.say(format_args!(
            "watching CSR {name} failed ({error}); re-watching"
        )),
    })
    .await
    .inspect_err(|e| status.say(format_args!("giving up: {e}")))?;
    let certificate = kubelet::verify_issued(&request, &pem)
        .inspect_err(|e| status.say(format_args!("rejecting the issued certificate: {e}")))?;
    let path = cert_dir.store(&certificate)?;
    status.say(format_args!(
        "certificate issued: serial {} valid until {}; written to {}",
        certificate.facts().serial,
        time(certificate.facts().not_after),
        path.display()
    ));
    Ok(certificate)
}

fn api_config(args: &Args) -> anyhow::Result<ApiServerConfig> {
    match (&args.kubeconfig, &args.server) {
        (Some(path), _) => Ok(ApiServerConfig::Kubeconfig(path.clone())),
        (None, Some(server)) => Ok(ApiServerConfig::Direct {
            server: server.clone(),
            ca_file: args.ca_file.clone().context("--server needs --ca-file")?,
            client_cert: args.client_cert.clone(),
            client_key: args
                .client_key
                .clone()
                .unwrap_or_else(|| args.client_cert.clone()),
        }),
        (None, None) => anyhow::bail!("give --kubeconfig or --server (see --help)"),
    }
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}
