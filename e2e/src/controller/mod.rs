//! The approver with its controller, in-process, against the testbed cluster: the cluster
//! with the shipped RBAC loaded, approver replicas running under the approver's
//! ServiceAccount (each optionally behind a relay a test can cut), scripted agents, and
//! kubelet-shaped CSRs created with each node's own identity.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rubber_stamp_e2e::controller::BedError> {
//! use std::net::{IpAddr, Ipv4Addr};
//! use rubber_stamp_e2e::controller::ControllerBed;
//! let bed = ControllerBed::start().await?;
//! let replica = bed.replica(bed.controller_config("approver-0"), false).await?;
//! let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11));
//! bed.add_node("worker-1", &[ip])?;
//! let agent = bed.agent("worker-1", &[&replica], &[ip]).await?;
//! agent.report().await?;
//! let csr = bed.create_csr("worker-1", &[ip]).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`rbac`]: the shipped RBAC and one-rule-less variants.
//! - [`ScriptedAgent`]: the agent's own session with the facts a test sets (the kit's).
//! - [`partition`]: a relay to cut one replica off the API server.

pub mod partition;
pub mod rbac;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ObjectMeta, PostParams};
use rubber_stamp_approver::controller::config::DEFAULT_LEASE_NAME;
use rubber_stamp_approver::controller::{self, ControllerConfig, Leadership, LeaseConfig};
use rubber_stamp_approver::metrics::{ControllerMetrics, Metrics};
use rubber_stamp_approver::proof::ProofConfig;
use rubber_stamp_approver::runtime::{ListenAddrs, Listeners};
use rubber_stamp_approver::store::AttestationStore;
use rubber_stamp_core::Policy;
use rubber_stamp_core::policy::{OwnershipProof, ProofMode};
use rubber_stamp_testkit::agent::SimulatedAgentError;
use tokio::net::TcpListener;

use crate::channel::{ChannelError, ChannelPki, TestApprover, approver_config, http_get, wait_for};
use rubber_stamp_apiserver::{Cluster, ClusterError, ClusterOptions, Credentials, kubeconfig};
use rubber_stamp_kubelet_sim::{KubeletError, NodeIdentity, ServingRequest};
use rubber_stamp_testkit::pki::{Ca, PkiError};

pub use partition::Partition;
pub use rbac::{deploy_rbac_yaml, load_rbac};
pub use rubber_stamp_testkit::agent::ScriptedAgent;

/// The approver's namespace in `deploy/`.
pub const APPROVER_NAMESPACE: &str = "rubber-stamp";
/// The approver's ServiceAccount in `deploy/`.
pub const APPROVER_SERVICE_ACCOUNT: &str = "rubber-stamp-approver";

/// Errors of the controller test bed.
#[derive(Debug, thiserror::Error)]
pub enum BedError {
    /// The testbed cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The attested channel helpers failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Generating certificates failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A scripted agent could not start or report.
    #[error(transparent)]
    Agent(#[from] SimulatedAgentError),
    /// Building a kubelet-shaped request failed.
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A gRPC call failed.
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    /// The controller could not be plugged in.
    #[error(transparent)]
    Controller(#[from] controller::ControllerError),
    /// The approver runtime failed.
    #[error(transparent)]
    Runtime(#[from] rubber_stamp_approver::runtime::RuntimeError),
    /// YAML could not be read or written.
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
    /// Socket I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The RBAC documents are not as expected.
    #[error("RBAC: {0}")]
    Rbac(String),
    /// Something closed early.
    #[error("{0} closed")]
    Closed(&'static str),
}

/// The testbed cluster (with the shipped RBAC), the attested channel's PKI (whose cluster
/// CA is the cluster's, so kubelet and agent certificates are the same kind), and the
/// approver's ServiceAccount credentials.
#[derive(Debug)]
pub struct ControllerBed {
    /// The cluster.
    pub cluster: Cluster,
    /// The channel's certificates.
    pub pki: ChannelPki,
    /// The approver's ServiceAccount token.
    pub approver: Credentials,
    /// The replicas started on this bed that reach the API server directly and still run:
    /// their Node counts, so a CSR is created only once they see every Node.
    watchers: Mutex<Vec<(ControllerMetrics, Arc<AtomicBool>)>>,
}

impl ControllerBed {
    /// A cluster with the RBAC of `deploy/`.
    pub async fn start() -> Result<Self, BedError> {
        Self::start_with_rbac(&deploy_rbac_yaml()?).await
    }

    /// A cluster with the given RBAC documents instead.
    pub async fn start_with_rbac(rbac: &str) -> Result<Self, BedError> {
        Self::start_with(rbac, ClusterOptions::default()).await
    }

    /// A cluster with the given RBAC and options.
    pub async fn start_with(rbac: &str, options: ClusterOptions) -> Result<Self, BedError> {
        let pki = ChannelPki::new().map_err(ChannelError::from)?;
        let listener = TcpListener::bind(options.listen).await?;
        let ca = Ca::from_pem(pki.cluster.cert_pem(), &pki.cluster.key_pem())?;
        let options = ClusterOptions {
            bookmark_interval: Duration::from_secs(1),
            ..options
        };
        let cluster = Cluster::start_with(listener, ca, options)?;
        load_rbac(&cluster, rbac)?;
        let approver = cluster.service_account(APPROVER_NAMESPACE, APPROVER_SERVICE_ACCOUNT)?;
        Ok(Self {
            cluster,
            pki,
            approver,
            watchers: Mutex::default(),
        })
    }

    /// The controller configuration tests start from: the default policy with the ownership
    /// proof off, the `deploy/` namespace, a 3 s Lease with 1 s grace, and a one-minute
    /// resync (so a prompt decision can only come from a trigger). The proof is off because
    /// the bed's agents attest addresses the machine does not have, which a probe would
    /// wait on; `e2e/tests/controller/ownership.rs` tests the proof under every mode.
    pub fn controller_config(&self, replica: &str) -> ControllerConfig {
        let policy = Policy {
            ownership_proof: OwnershipProof {
                default: ProofMode::Off,
                ..OwnershipProof::default()
            },
            ..Policy::default()
        };
        let mut config = ControllerConfig::new(policy, replica);
        config.namespace = Some(APPROVER_NAMESPACE.to_owned());
        config.lease = Some(LeaseConfig {
            name: DEFAULT_LEASE_NAME.to_owned(),
            duration: Duration::from_secs(3),
            grace: Duration::from_secs(1),
        });
        config.pending_resync = Duration::from_secs(60);
        config.challenge_timeout = Duration::from_secs(2);
        config
    }

    /// Starts an approver replica with its controller; `partitionable` puts its API server
    /// traffic through a [`Partition`].
    pub async fn replica(
        &self,
        config: ControllerConfig,
        partitionable: bool,
    ) -> Result<Replica, BedError> {
        Replica::start(self, config, partitionable, None).await
    }

    /// Starts an approver replica (not partitionable) whose ownership probes (check 15) go
    /// by `proof`: its port, timeout, limits and backoff instead of the defaults.
    pub async fn replica_with_proof(
        &self,
        config: ControllerConfig,
        proof: ProofConfig,
    ) -> Result<Replica, BedError> {
        Replica::start(self, config, false, Some(proof)).await
    }

    /// A kube client of the approver's ServiceAccount, to `server` (default: the cluster).
    pub async fn approver_client(&self, server: Option<&str>) -> Result<kube::Client, BedError> {
        let url = server.unwrap_or(self.cluster.url());
        Ok(kubeconfig::client(url, self.cluster.ca_pem(), &self.approver).await?)
    }

    /// Creates Node `name` with these InternalIPs and its name as Hostname.
    pub fn add_node(&self, name: &str, ips: &[IpAddr]) -> Result<Node, BedError> {
        let mut addresses: Vec<NodeAddress> = ips
            .iter()
            .map(|ip| NodeAddress {
                type_: "InternalIP".to_owned(),
                address: ip.to_string(),
            })
            .collect();
        addresses.push(NodeAddress {
            type_: "Hostname".to_owned(),
            address: name.to_owned(),
        });
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(addresses),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        Ok(self.cluster.objects().create(&node)?)
    }

    /// A scripted agent for `node` with `addresses` (each /24 or /64) on `eth0`,
    /// connected to every replica in `replicas`.
    pub async fn agent(
        &self,
        node: &str,
        replicas: &[&Replica],
        addresses: &[IpAddr],
    ) -> Result<ScriptedAgent, BedError> {
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addrs().grpc).collect();
        let prefixed: Vec<(IpAddr, u32)> = addresses
            .iter()
            .map(|ip| (*ip, if ip.is_ipv4() { 24 } else { 64 }))
            .collect();
        Ok(ScriptedAgent::connect(&self.pki, node, &addrs, &prefixed).await?)
    }

    /// Creates a kubelet-shaped serving CSR for `node` (DNS SAN: the node name; IP SANs:
    /// `ips`) with the node's own client certificate, over HTTPS, as a kubelet does — once
    /// every running replica (not behind a partition) sees every Node of the cluster, as a
    /// kubelet registers its Node before it asks. What a test then observes does not
    /// depend on which watch a busy machine delivered first.
    pub async fn create_csr(
        &self,
        node: &str,
        ips: &[IpAddr],
    ) -> Result<CertificateSigningRequest, BedError> {
        let nodes = self.cluster.objects().list::<Node>(None)?.len();
        eventually(
            "the replicas to see every Node",
            Duration::from_secs(10),
            || {
                self.watchers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .filter(|(_, running)| running.load(Ordering::SeqCst))
                    .all(|(metrics, _)| usize::try_from(metrics.nodes.get()) == Ok(nodes))
            },
        )
        .await?;
        let identity = NodeIdentity::new(node, node, ips)?;
        let request = ServingRequest::generate(&identity)?;
        let client = self.cluster.client(&self.cluster.node(node)?).await?;
        let api: Api<CertificateSigningRequest> = Api::all(client);
        Ok(api
            .create(&PostParams::default(), &request.object(None))
            .await?)
    }

    /// The CSR as stored now.
    pub fn csr(&self, name: &str) -> Result<Option<CertificateSigningRequest>, BedError> {
        Ok(self.cluster.objects().get("", name)?)
    }

    /// `events.k8s.io/v1` Events regarding an object named `name`, oldest first.
    pub fn events_about(&self, name: &str) -> Result<Vec<Event>, BedError> {
        let mut events: Vec<Event> = self
            .cluster
            .objects()
            .list::<Event>(None)?
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        Ok(events)
    }

    /// Reasons of the Events regarding `name`, oldest first.
    pub fn event_reasons(&self, name: &str) -> Result<Vec<String>, BedError> {
        Ok(self
            .events_about(name)?
            .into_iter()
            .filter_map(|e| e.reason)
            .collect())
    }
}

/// The type of the condition on a CSR: `Approved`, `Denied`, `Failed`, …
pub fn conditions(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(|c| c.type_.clone()).collect())
        .unwrap_or_default()
}

/// True when the CSR carries an `Approved` condition.
pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    conditions(csr).iter().any(|c| c == "Approved")
}

/// True when the signer issued the certificate.
pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// One approver replica (attestation servers and controller) running in this process.
#[derive(Debug)]
pub struct Replica {
    name: String,
    approver: TestApprover,
    leadership: Leadership,
    partition: Option<Partition>,
    running: Running,
}

/// Marks a replica as no longer running when it is stopped or dropped.
#[derive(Debug)]
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Replica {
    async fn start(
        bed: &ControllerBed,
        config: ControllerConfig,
        partitionable: bool,
        proof: Option<ProofConfig>,
    ) -> Result<Self, BedError> {
        let partition = if partitionable {
            Some(Partition::start(bed.cluster.addr()).await?)
        } else {
            None
        };
        let server = partition.as_ref().map(|p| format!("https://{}", p.addr()));
        let client = bed.approver_client(server.as_deref()).await?;
        let name = config.replica.clone();
        let mut run = approver_config(&bed.pki);
        run.store.max_age = config.attestation_max_age();
        if let Some(proof) = proof {
            run.store.proof = proof;
        }
        run.grpc.replica.clone_from(&name);
        let listeners = Listeners::bind(&run.listen).await?;
        let mut plugged = None;
        let approver = TestApprover::start_on(run, listeners, |runtime| {
            plugged = Some(runtime.plug_controller(client, config));
        })
        .await?;
        let leadership = match plugged {
            Some(Ok(leadership)) => leadership,
            Some(Err(error)) => {
                approver.stop().await?;
                return Err(error.into());
            }
            None => {
                approver.stop().await?;
                return Err(BedError::Closed("the controller plug"));
            }
        };
        let running = Arc::new(AtomicBool::new(true));
        if partition.is_none() {
            bed.watchers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((approver.metrics().controller.clone(), Arc::clone(&running)));
        }
        Ok(Self {
            name,
            approver,
            leadership,
            partition,
            running: Running(running),
        })
    }

    /// The replica's name (its Lease identity).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its servers listen.
    pub fn addrs(&self) -> ListenAddrs {
        self.approver.addrs
    }

    /// Its attestation store.
    pub fn store(&self) -> &AttestationStore {
        self.approver.store()
    }

    /// All its metrics.
    pub fn metrics(&self) -> &Metrics {
        self.approver.metrics()
    }

    /// Its controller's metrics.
    pub fn controller_metrics(&self) -> &ControllerMetrics {
        &self.approver.metrics().controller
    }

    /// Whether it acts.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// `GET /metrics` on its admin port.
    pub async fn metrics_text(&self) -> Result<String, BedError> {
        let (_, body) = http_get(self.approver.addrs.admin, "/metrics")
            .await
            .map_err(ChannelError::from)?;
        Ok(body)
    }

    /// Cuts it off the API server (see [`Partition`]); no-op when not partitionable.
    pub fn cut(&self) {
        if let Some(p) = &self.partition {
            p.cut();
        }
    }

    /// Reconnects it to the API server.
    pub fn heal(&self) {
        if let Some(p) = &self.partition {
            p.heal();
        }
    }

    /// Waits until it acts (holds the Lease and confirmed it).
    pub async fn wait_acting(&self, within: Duration) -> Result<(), BedError> {
        let leadership = self.leadership.clone();
        Ok(wait_for("the replica to act", within, || {
            let acting = leadership.may_act();
            async move { acting }
        })
        .await?)
    }

    /// Stops it as SIGTERM would: stop acting, release the Lease, drain.
    pub async fn stop(self) -> Result<(), BedError> {
        self.running.0.store(false, Ordering::SeqCst);
        self.approver.stop().await?;
        Ok(())
    }
}

/// Polls `condition` every 20 ms until it holds, for at most `within`.
pub async fn eventually<F>(what: &str, within: Duration, mut condition: F) -> Result<(), BedError>
where
    F: FnMut() -> bool,
{
    Ok(wait_for(what, within, || {
        let holds = condition();
        async move { holds }
    })
    .await?)
}

/// Waits until the CSR satisfies `condition`; returns it.
pub async fn wait_for_csr(
    bed: &ControllerBed,
    name: &str,
    within: Duration,
    condition: impl Fn(&CertificateSigningRequest) -> bool,
) -> Result<CertificateSigningRequest, BedError> {
    let mut found = None;
    eventually(&format!("CSR {name}"), within, || {
        found = bed.csr(name).ok().flatten().filter(|c| condition(c));
        found.is_some()
    })
    .await?;
    found.ok_or(BedError::Closed("the CSR"))
}
