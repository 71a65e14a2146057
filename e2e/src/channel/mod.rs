//! Helpers for the attested-channel tests and harnesses: the channel's PKI on disk, an
//! approver and agents running in-process on port 0, raw gRPC clients presenting any
//! certificate, floods of idle connections, and polling with a deadline.

pub mod flood;

pub use rubber_stamp_testkit::channel::{
    ChannelPki, SERVER_NAME, install_crypto_provider, kubelet_spec, serial_of,
};
pub use rubber_stamp_testkit::http::http_get;
pub use rubber_stamp_testkit::{procfs, raw};

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rubber_stamp_agent::cloud::{CloudConfig, CloudMode};
use rubber_stamp_agent::config::{AgentConfig, ApproverAddress, IpFamily, Timings};
use rubber_stamp_agent::identity::IdentitySource;
use rubber_stamp_agent::resolve::{Resolution, Resolve};
use rubber_stamp_approver::admin::auth::AdminSecurity;
use rubber_stamp_approver::channel::{GrpcConfig, TlsFiles};
use rubber_stamp_approver::metrics::Metrics;
use rubber_stamp_approver::pki::ServingCertificate;
use rubber_stamp_approver::runtime::{
    ListenAddrs, ListenerLimits, Listeners, RunConfig, Runtime, RuntimeError,
};
use rubber_stamp_approver::store::{AttestationStore, StoreConfig, SystemClock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use rubber_stamp_testkit::channel::SetupError;
use rubber_stamp_testkit::http::HttpError;
use rubber_stamp_testkit::raw::RawError;

use rubber_stamp_testkit::pki::PkiError;

/// Errors of the channel helpers.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Generating or writing certificates failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// File or socket I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The approver runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A gRPC connection failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// A gRPC call failed.
    #[error("gRPC status: {0}")]
    Status(#[from] tonic::Status),
    /// A background task panicked or was cancelled.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] rubber_stamp_agent::runtime::AgentError),
    /// A condition did not hold before its deadline.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// An HTTP exchange went wrong.
    #[error("HTTP: {0}")]
    Http(String),
    /// A certificate did not parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A raw client failed.
    #[error(transparent)]
    Raw(#[from] RawError),
    /// Making the channel's PKI failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// An HTTP `GET` failed.
    #[error(transparent)]
    Get(#[from] HttpError),
}

/// The approver's serving certificate files and client CA.
pub fn tls_files(pki: &ChannelPki) -> TlsFiles {
    TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: Some(pki.cluster_ca.clone()),
    }
}

/// An approver configuration for tests: the channel PKI, fast timings, port-0 addresses.
pub fn approver_config(pki: &ChannelPki) -> RunConfig {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut grpc = GrpcConfig::default();
    grpc.connections.handshake_timeout = Duration::from_secs(5);
    grpc.keepalive_interval = Duration::from_secs(5);
    grpc.keepalive_timeout = Duration::from_secs(2);
    grpc.replica = "approver-test".to_owned();
    // Test agents poll facts every 200 ms and this machine's interfaces change often
    // (other tests create network namespaces), so allow far more reports than agents
    // with production intervals could send.
    grpc.streams.report_burst = 100;
    grpc.streams.report_interval = Duration::from_millis(10);
    RunConfig {
        listen: ListenAddrs {
            grpc: any,
            health: any,
            admin: any,
        },
        listeners: ListenerLimits::default(),
        // The channel tests read the admin port and are not about its security
        // (`tests/controller/admin_auth.rs` is).
        admin: AdminSecurity::Open,
        tls: tls_files(pki).into(),
        store: StoreConfig::default(),
        grpc,
        prune_interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(5),
    }
}

/// An approver runtime running in this process.
#[derive(Debug)]
pub struct TestApprover {
    /// Where its servers listen.
    pub addrs: ListenAddrs,
    store: AttestationStore,
    metrics: Arc<Metrics>,
    serving: Arc<ServingCertificate>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RuntimeError>>,
}

impl TestApprover {
    /// Starts an approver with `config` on fresh loopback ports.
    pub async fn start(config: RunConfig) -> Result<Self, ChannelError> {
        let listeners = Listeners::bind(&config.listen).await?;
        Self::start_on(config, listeners, |_| {}).await
    }

    /// Starts an approver on the given listeners; `plug` may add tasks to the runtime
    /// before it runs (as the controller will).
    pub async fn start_on(
        config: RunConfig,
        listeners: Listeners,
        plug: impl FnOnce(&mut Runtime),
    ) -> Result<Self, ChannelError> {
        Self::start_with(config, listeners, None, plug).await
    }

    /// Starts an approver on fresh loopback ports with a Kubernetes client, as the TLS
    /// Secret needs (`TlsSource::Secret`).
    pub async fn start_with_kube(
        config: RunConfig,
        kube: kube::Client,
    ) -> Result<Self, ChannelError> {
        let listeners = Listeners::bind(&config.listen).await?;
        Self::start_with(config, listeners, Some(kube), |_| {}).await
    }

    /// The general form: listeners, an optional Kubernetes client, and `plug` to add tasks.
    pub async fn start_with(
        config: RunConfig,
        listeners: Listeners,
        kube: Option<kube::Client>,
        plug: impl FnOnce(&mut Runtime),
    ) -> Result<Self, ChannelError> {
        Self::start_with_clock(config, listeners, kube, Arc::new(SystemClock), plug).await
    }

    /// Like [`start_with`](Self::start_with), with the approver's clock (the store's
    /// receive times, and the expiry of agents' tokens) given.
    pub async fn start_with_clock(
        config: RunConfig,
        listeners: Listeners,
        kube: Option<kube::Client>,
        clock: Arc<dyn rubber_stamp_approver::store::Clock>,
        plug: impl FnOnce(&mut Runtime),
    ) -> Result<Self, ChannelError> {
        let addrs = listeners.local_addrs()?;
        let mut runtime = Runtime::with_kube(config, clock, kube).await?;
        plug(&mut runtime);
        let store = runtime.store().clone();
        let metrics = Arc::clone(runtime.metrics());
        let serving = Arc::clone(runtime.serving());
        let stop = CancellationToken::new();
        let task = tokio::spawn(runtime.run(listeners, stop.clone().cancelled_owned()));
        let approver = Self {
            addrs,
            store,
            metrics,
            serving,
            stop,
            task,
        };
        approver.wait_ready().await?;
        Ok(approver)
    }

    /// The approver's store.
    pub fn store(&self) -> &AttestationStore {
        &self.store
    }

    /// The approver's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The certificate its attestation server presents.
    pub fn serving(&self) -> &Arc<ServingCertificate> {
        &self.serving
    }

    /// Requests shutdown without waiting for it.
    pub fn request_stop(&self) {
        self.stop.cancel();
    }

    /// Stops the approver and waits for it to drain.
    pub async fn stop(self) -> Result<(), ChannelError> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }

    async fn wait_ready(&self) -> Result<(), ChannelError> {
        let health = self.addrs.health;
        wait_for(
            "approver readiness",
            Duration::from_secs(10),
            || async move {
                health_status(health, rubber_stamp_approver::health::READINESS_SERVICE)
                    .await
                    .ok()
                    == Some(ServingStatus::Serving)
            },
        )
        .await
    }
}

/// Agent timings for tests: everything fast.
pub fn fast_timings() -> Timings {
    Timings {
        poll_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(500),
        resolve_interval: Duration::from_millis(200),
        identity_poll_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        keepalive_interval: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(2),
    }
}

/// An agent configuration pointing at `approver` with the given identity.
pub fn agent_config(
    pki: &ChannelPki,
    approver: SocketAddr,
    identity: IdentitySource,
) -> AgentConfig {
    AgentConfig {
        approver: ApproverAddress {
            host: approver.ip().to_string(),
            port: approver.port(),
        },
        server_name: SERVER_NAME.to_owned(),
        ip_family: IpFamily::Auto,
        approver_ca: pki.serving_ca.clone(),
        identity,
        timings: fast_timings(),
        machine_id_path: "/etc/machine-id".into(),
        boot_id_path: "/proc/sys/kernel/random/boot_id".into(),
        health: AgentConfig::DEFAULT_HEALTH,
        metrics: None,
        reserved_descriptors: 64,
        // No cloud here: a test that wants metadata points the agent at its own service.
        cloud: CloudConfig {
            mode: CloudMode::Off,
            ..CloudConfig::default()
        },
    }
}

/// A stand-in for the cluster DNS: the approver name resolves to whatever set the test
/// puts here (there is no DNS server for a headless Service on a development machine).
#[derive(Debug, Default)]
pub struct FixedResolver {
    endpoints: Mutex<BTreeSet<SocketAddr>>,
}

impl FixedResolver {
    /// Resolves to `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            endpoints: Mutex::new(endpoints.into_iter().collect()),
        })
    }

    /// From now on resolves to `endpoints`.
    pub fn set(&self, endpoints: impl IntoIterator<Item = SocketAddr>) {
        *self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = endpoints.into_iter().collect();
    }
}

impl Resolve for FixedResolver {
    fn resolve(&self, _: &ApproverAddress) -> Resolution {
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(endpoints) })
    }
}

/// An agent running in this process.
#[derive(Debug)]
pub struct TestAgent {
    /// Where its health server listens.
    pub health: SocketAddr,
    /// Where its metrics server listens (`--metrics-listen`).
    pub metrics: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), rubber_stamp_agent::runtime::AgentError>>,
}

impl TestAgent {
    /// Starts an agent with `config`, resolving the approver through `resolver`.
    pub async fn start(
        config: AgentConfig,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, ChannelError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let health = listener.local_addr()?;
        let metrics_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let metrics = metrics_listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(rubber_stamp_agent::runtime::run_with_metrics(
            config,
            listener,
            Some(metrics_listener),
            resolver,
            stop.clone(),
        ));
        Ok(Self {
            health,
            metrics,
            stop,
            task,
        })
    }

    /// Its metrics text (`GET /metrics`).
    pub async fn metrics_text(&self) -> Result<String, ChannelError> {
        let (status, body) = http_get(self.metrics, "/metrics").await?;
        if status != 200 {
            return Err(ChannelError::Http(format!("agent /metrics: HTTP {status}")));
        }
        Ok(body)
    }

    /// The readiness service's status (`attested`).
    pub async fn readiness(&self) -> Result<ServingStatus, ChannelError> {
        health_status(self.health, rubber_stamp_agent::health::READINESS_SERVICE).await
    }

    /// Stops the agent and waits for it.
    pub async fn stop(self) -> Result<(), ChannelError> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Asks a `grpc.health.v1` server for `service`'s status with tonic-health's client.
pub async fn health_status(addr: SocketAddr, service: &str) -> Result<ServingStatus, ChannelError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Polls `condition` every 20 ms until it holds or `within` passes.
pub async fn wait_for<F, Fut>(
    what: &str,
    within: Duration,
    mut condition: F,
) -> Result<(), ChannelError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ChannelError::Timeout(what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
