//! Wiring of `run`: one store, one metrics registry and one health state shared by the
//! attestation, admin and health servers and by any task plugged in next to them (the
//! controller); `select` on shutdown, then drain.
//!
//! Shutdown order: readiness goes `NOT_SERVING`, every server and task is told to stop
//! (streams end with `UNAVAILABLE` so agents move to another replica), the runtime waits
//! up to the drain timeout, and the health server stops last so liveness keeps answering
//! during the drain.
//!
//! To add a component, build it from [`Runtime::store`] and [`Runtime::metrics`] and hand
//! it over with [`Runtime::spawn`] before [`Runtime::run`], as the controller does:
//!
//! ```ignore
//! let mut runtime = Runtime::new(config, Arc::new(SystemClock)).await?;
//! let leadership = runtime.plug_controller(client, controller_config)?;
//! runtime.run(listeners, termination()).await
//! ```

pub mod config;
pub mod logging;

pub use rubber_stamp_listen::termination;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::auth::{AdminAuth, AdminSecurity};
use crate::admin::{self, AdminServing};
use crate::channel::{self, AgentCredentials, TlsError, TokenVerifier};
use crate::controller::{ClientError, Controller, ControllerConfig, ControllerError, Leadership};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pki::{CertificateFiles, PkiError, SecretPki, ServingCertificate};
use crate::store::{AttestationStore, Clock, SystemClock};

pub use config::{ListenAddrs, ListenerLimits, LogFormat, RunConfig, TlsSource};

/// The error type of a task run next to the servers.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// How long the health server gets to stop after the drain.
const HEALTH_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No Kubernetes client for the controller.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The controller could not be set up.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The attestation port's TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The serving certificate could not be loaded or bootstrapped.
    #[error("attestation port certificate: {0}")]
    Pki(#[from] PkiError),
    /// The TLS Secret needs the Kubernetes API but no client was given.
    #[error(
        "no Kubernetes client to keep the TLS Secret with, to review agents' tokens or to authorize admin requests (give --tls-cert and --tls-key, --agent-identity kubelet-cert and --admin-secure=false)"
    )]
    NoKubeClient,
    /// The admin port's TLS configuration could not be built.
    #[error("admin port TLS: {0}")]
    AdminTls(#[source] rustls::Error),
    /// The Kubernetes client could not be configured (kubeconfig or in-cluster).
    #[error("Kubernetes client: {0}")]
    Kube(#[source] kube::Error),
    /// A listen address could not be bound.
    #[error("binding the {server} server to {address}: {source}")]
    Bind {
        /// Which server.
        server: &'static str,
        /// The address.
        address: std::net::SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// A server or task failed.
    #[error("{task}: {source}")]
    Task {
        /// The task's name.
        task: &'static str,
        /// Its error.
        source: TaskError,
    },
    /// A server or task returned although no shutdown was requested.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
    /// A server or task panicked.
    #[error("a task panicked: {0}")]
    Panicked(String),
    /// Logging could not be set up.
    #[error("logging: {0}")]
    Logging(String),
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Io(io::Error),
}

/// The three listening sockets, bound before anything else starts.
#[derive(Debug)]
pub struct Listeners {
    /// mTLS attestation gRPC.
    pub grpc: TcpListener,
    /// Plaintext `grpc.health.v1`.
    pub health: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

/// The approver's long-running parts, assembled but not yet running.
pub struct Runtime {
    config: RunConfig,
    tls: Arc<rustls::ServerConfig>,
    credentials: AgentCredentials,
    admin: AdminServing,
    serving: Arc<ServingCertificate>,
    store: AttestationStore,
    metrics: Arc<Metrics>,
    health: Health,
    stop: CancellationToken,
    tasks: Vec<(&'static str, TaskFuture)>,
}

// === impl Listeners ===

impl Listeners {
    /// Binds every address of `addrs`.
    pub async fn bind(addrs: &ListenAddrs) -> Result<Self, RuntimeError> {
        async fn bind(
            server: &'static str,
            address: std::net::SocketAddr,
        ) -> Result<TcpListener, RuntimeError> {
            rubber_stamp_listen::bind(address).map_err(|source| RuntimeError::Bind {
                server,
                address,
                source,
            })
        }
        Ok(Self {
            grpc: bind("attestation", addrs.grpc).await?,
            health: bind("health", addrs.health).await?,
            admin: bind("admin", addrs.admin).await?,
        })
    }

    /// The addresses actually bound (for port 0).
    pub fn local_addrs(&self) -> io::Result<ListenAddrs> {
        Ok(ListenAddrs {
            grpc: self.grpc.local_addr()?,
            health: self.health.local_addr()?,
            admin: self.admin.local_addr()?,
        })
    }
}

// === impl Runtime ===

impl Runtime {
    /// Loads the TLS files and builds the shared store, metrics and health state. A
    /// configuration that keeps its certificate in a Secret needs [`Runtime::with_kube`].
    pub async fn new(config: RunConfig, clock: Arc<dyn Clock>) -> Result<Self, RuntimeError> {
        Self::with_kube(config, clock, None).await
    }

    /// Like [`Runtime::new`]; with [`TlsSource::Secret`] it first gets or creates the TLS
    /// Secret through `kube` (retrying transient API errors for about a minute) and renews
    /// from it while running. The certificate files or the Secret are read again every
    /// refresh interval and a new certificate is used for new handshakes.
    pub async fn with_kube(
        mut config: RunConfig,
        clock: Arc<dyn Clock>,
        kube: Option<kube::Client>,
    ) -> Result<Self, RuntimeError> {
        if let Some(client) = &kube {
            config.resolve_namespaces(client.default_namespace());
        }
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let mut tasks: Vec<(&'static str, TaskFuture)> = Vec::new();
        let serving = match &config.tls {
            TlsSource::Files {
                files,
                reload_interval,
            } => {
                let source = CertificateFiles::load(&files.cert, &files.key, metrics.tls.clone())?;
                let serving = Arc::clone(source.serving());
                tasks.push((
                    "certificate files",
                    Box::pin(never_fails(
                        source.run(*reload_interval, stop.child_token()),
                    )),
                ));
                serving
            }
            TlsSource::Secret { pki, .. } => {
                let client = kube.clone().ok_or(RuntimeError::NoKubeClient)?;
                let pki = bootstrap_pki(client, pki, &clock, &metrics).await?;
                let serving = Arc::clone(pki.serving());
                tasks.push((
                    "tls secret",
                    Box::pin(never_fails(pki.run(stop.child_token()))),
                ));
                serving
            }
        };
        let tls = channel::tls::server_config_with(
            config.tls.client_ca(),
            config.grpc.client_auth(),
            serving.clone(),
        )?;
        let credentials = AgentCredentials {
            kubelet_cert: config.grpc.kubelet_cert,
            token: match &config.grpc.token {
                Some(token) => Some(TokenVerifier::new(
                    kube.clone().ok_or(RuntimeError::NoKubeClient)?,
                    token.clone(),
                    metrics.grpc.token_reviews.clone(),
                    Arc::clone(&clock),
                )),
                None => None,
            },
        };
        let admin = match &config.admin {
            AdminSecurity::Open => AdminServing::Open,
            AdminSecurity::Kubernetes(auth) => AdminServing::Secure {
                tls: admin::tls_config(serving.clone()).map_err(RuntimeError::AdminTls)?,
                auth: AdminAuth::new(
                    kube.clone().ok_or(RuntimeError::NoKubeClient)?,
                    auth.clone(),
                    metrics.admin_requests.clone(),
                    metrics.admin_reviews.clone(),
                ),
            },
        };
        Ok(Self {
            credentials,
            admin,
            store: AttestationStore::new(config.store.clone(), clock),
            metrics,
            health: Health::new().await,
            stop,
            tasks,
            tls,
            serving,
            config,
        })
    }

    /// The certificate the attestation server presents (swapped on renewal).
    pub fn serving(&self) -> &Arc<ServingCertificate> {
        &self.serving
    }

    /// The attestation store every server and task shares.
    pub fn store(&self) -> &AttestationStore {
        &self.store
    }

    /// The metrics registry every server and task shares.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The health statuses.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Builds the controller from this runtime's store and metrics and runs it next to the
    /// servers. Returns the replica's [`Leadership`], to observe when it acts.
    pub fn plug_controller(
        &mut self,
        client: kube::Client,
        config: ControllerConfig,
    ) -> Result<Leadership, ControllerError> {
        let controller = Controller::new(client, self.store.clone(), &self.metrics, config)?;
        let leadership = controller.leadership();
        self.spawn("controller", move |stop| async move {
            controller.run(stop).await.map_err(Into::into)
        });
        Ok(leadership)
    }

    /// Runs `task` next to the servers once [`run`](Self::run) starts. It is given a token
    /// that is cancelled at shutdown and must return soon after. A task that returns
    /// earlier (with or without an error) stops the whole approver.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.tasks
            .push((name, Box::pin(task(self.stop.child_token()))));
    }

    /// Serves on `listeners` until `shutdown` completes or a server or task stops, then
    /// drains. Returns the first failure, if any.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        let Self {
            config,
            tls,
            credentials,
            admin,
            serving: _,
            store,
            metrics,
            health,
            stop,
            tasks,
        } = self;
        let events: Arc<dyn rubber_stamp_listen::Events> = Arc::new(metrics.listeners.clone());
        let health_stop = CancellationToken::new();
        let mut health_server = tokio::spawn({
            let health = health.clone();
            let limits = config.listeners.health;
            let events = Arc::clone(&events);
            let health_stop = health_stop.clone();
            async move {
                health
                    .serve(listeners.health, limits, events, health_stop)
                    .await
            }
        });

        let mut set: JoinSet<(&'static str, Result<(), TaskError>)> = JoinSet::new();
        set.spawn(named("admin server", {
            let serve = admin::serve(
                listeners.admin,
                config.listeners.admin,
                admin,
                store.clone(),
                Arc::clone(&metrics),
                stop.clone(),
            );
            async move { serve.await.map_err(Into::into) }
        }));
        set.spawn(named("attestation server", {
            let health = health.clone();
            let serve = channel::serve(
                listeners.grpc,
                channel::AgentAuth { tls, credentials },
                store.clone(),
                metrics.grpc.clone(),
                events,
                config.grpc.clone(),
                stop.clone(),
            );
            async move {
                health.set_ready(true).await;
                let served = serve.await;
                health.set_ready(false).await;
                served.map_err(Into::into)
            }
        }));
        set.spawn(named(
            "pruner",
            prune(store.clone(), config.prune_interval, stop.clone()),
        ));
        for (name, task) in tasks {
            set.spawn(named(name, task));
        }

        let mut failure = None;
        tokio::select! {
            () = shutdown => tracing::info!("shutdown requested"),
            joined = set.join_next() => if let Some(joined) = joined {
                failure = Some(early_exit(joined));
            },
            joined = &mut health_server => {
                failure = Some(match joined {
                    Ok(Ok(())) => RuntimeError::Stopped("health server"),
                    Ok(Err(e)) => RuntimeError::Task { task: "health server", source: e.into() },
                    Err(e) => RuntimeError::Panicked(e.to_string()),
                });
            },
        }
        if let Some(error) = &failure {
            tracing::error!(%error, "shutting down after a failure");
        }

        health.set_ready(false).await;
        stop.cancel();
        let drain = async {
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok((_, Ok(()))) => {}
                    Ok((task, Err(source))) => {
                        tracing::error!(task, error = %source, "failed while draining");
                        failure.get_or_insert(RuntimeError::Task { task, source });
                    }
                    Err(e) => {
                        failure.get_or_insert(RuntimeError::Panicked(e.to_string()));
                    }
                }
            }
        };
        if tokio::time::timeout(config.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?config.drain_timeout, "drain timed out; stopping the rest");
            set.abort_all();
        }
        health_stop.cancel();
        if tokio::time::timeout(HEALTH_STOP_TIMEOUT, &mut health_server)
            .await
            .is_err()
        {
            health_server.abort();
        }
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("store", &self.store)
            .field(
                "tasks",
                &self.tasks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A task that handles its own errors (logs and counts them) as one that never fails.
async fn never_fails(task: impl Future<Output = ()>) -> Result<(), TaskError> {
    task.await;
    Ok(())
}

async fn named(
    name: &'static str,
    task: impl Future<Output = Result<(), TaskError>>,
) -> (&'static str, Result<(), TaskError>) {
    (name, task.await)
}

fn early_exit(
    joined: Result<(&'static str, Result<(), TaskError>), tokio::task::JoinError>,
) -> RuntimeError {
    match joined {
        Ok((task, Ok(()))) => RuntimeError::Stopped(task),
        Ok((task, Err(source))) => RuntimeError::Task { task, source },
        Err(e) => RuntimeError::Panicked(e.to_string()),
    }
}

/// Removes aged-out attestations every `interval` until `stop`.
async fn prune(
    store: AttestationStore,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), TaskError> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {
                let removed = store.prune();
                if !removed.is_empty() {
                    tracing::info!(count = removed.len(), nodes = ?removed, "attestations aged out");
                }
                // Probe results of CSRs no decision has read for a while (deleted CSRs).
                store.proofs().prune(tokio::time::Instant::now());
            }
        }
    }
}

/// Gets or creates the TLS Secret, retrying transient API errors with capped exponential
/// backoff (about a minute in all: long enough for RBAC applied together with the Deployment
/// to take effect, short enough that a real misconfiguration shows as a crash loop).
async fn bootstrap_pki(
    client: kube::Client,
    config: &crate::pki::PkiConfig,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
) -> Result<SecretPki, RuntimeError> {
    use backon::{ExponentialBuilder, Retryable as _};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(10)
        .with_jitter();
    let attempt = || {
        SecretPki::bootstrap(
            client.clone(),
            config.clone(),
            Arc::clone(clock),
            metrics.tls.clone(),
        )
    };
    let (pki, _) = attempt
        .retry(backoff)
        .when(PkiError::is_transient)
        .notify(|error, delay| {
            metrics.tls.refresh_failed(error.metric_label());
            tracing::warn!(%error, retry_in = ?delay, "getting the TLS Secret failed; retrying");
        })
        .await?;
    Ok(pki)
}

/// Raises the open-file limit to the hard limit and lowers the connection limits that it
/// cannot hold, logging both.
fn fit_descriptors(config: &mut RunConfig) {
    let nofile = rubber_stamp_listen::raise_nofile_limit_logged();
    for clamp in config.fit_descriptors(nofile) {
        clamp.log();
    }
}

/// Warns at start about what the policy leaves open that the operator most likely meant to
/// close: pod addresses (and, with the Service rule off, Service addresses) when no CIDR
/// constrains IP SANs, and a cluster domain outside `deniedDnsSuffixes`.
fn warn_about_policy_gaps(policy: &rubber_stamp_core::Policy, tls: &TlsSource) {
    use rubber_stamp_core::policy::ServiceAddressMode;
    if policy.is_address_unconstrained() {
        let what = match policy.service_addresses {
            ServiceAddressMode::Deny => "a pod IP",
            ServiceAddressMode::Ignore => "a Service or pod IP (the Service rule is off)",
        };
        tracing::warn!(
            "the policy sets neither allowedCidrs nor deniedCidrs: {what} that no node attests can be approved for a node that puts it on a counted interface; set deniedCidrs to the pod CIDRs, or allowedCidrs to the node network (docs/policy.md)"
        );
    }
    if let TlsSource::Secret { pki, .. } = tls
        && policy.denied_suffix_of(&pki.cluster_domain).is_none()
    {
        tracing::warn!(
            cluster_domain = %pki.cluster_domain,
            "the cluster domain (--cluster-domain) is not under the policy's deniedDnsSuffixes: a node could be approved for names of the cluster's Services and Pods under it; add it to deniedDnsSuffixes (docs/policy.md)"
        );
    }
}

/// Entry point of `rubber-stamp-approver run`: logging, the async runtime, listeners, the
/// controller (unless `--attestation-only`), then [`Runtime::run`] until SIGTERM/SIGINT.
pub fn main(
    mut config: RunConfig,
    controller_config: Option<ControllerConfig>,
) -> Result<(), RuntimeError> {
    fit_descriptors(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError::Io)?;
    runtime.block_on(async {
        let listeners = Listeners::bind(&config.listen).await?;
        let addrs = listeners.local_addrs().map_err(RuntimeError::Io)?;
        tracing::info!(grpc = %addrs.grpc, health = %addrs.health, admin = %addrs.admin, "listening");
        // One API client for the controller and the TLS Secret: the controller's
        // --kubeconfig (else $KUBECONFIG, ~/.kube/config, in-cluster). With
        // --attestation-only the Secret mode still needs one: the default lookup.
        let kube = match (&controller_config, &config.tls) {
            (Some(controller_config), _) => Some(controller_config.client().await?),
            (None, TlsSource::Secret { .. }) => Some(
                kube::Client::try_default()
                    .await
                    .map_err(RuntimeError::Kube)?,
            ),
            (None, TlsSource::Files { .. })
                if config.grpc.token.is_none() && config.admin == AdminSecurity::Open =>
            {
                None
            }
            (None, TlsSource::Files { .. }) => Some(
                kube::Client::try_default()
                    .await
                    .map_err(RuntimeError::Kube)?,
            ),
        };
        if let Some(controller_config) = &controller_config {
            warn_about_policy_gaps(&controller_config.policy, &config.tls);
        }
        let mut approver = Runtime::with_kube(config, Arc::new(SystemClock), kube.clone()).await?;
        match (controller_config, kube) {
            (Some(controller_config), Some(client)) => {
                approver.plug_controller(client, controller_config)?;
            }
            _ => tracing::warn!("--attestation-only: serving attestations, never approving"),
        }
        approver.run(listeners, termination()).await
    })
}
