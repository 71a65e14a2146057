//! A simulated node: a host (a network namespace, or loopback addresses in
//! loopback mode) with the kubelet's client credentials, its Node object, the
//! real `rubber-stamp-agent` (or, in loopback mode, the in-process attester)
//! and the `kubelet-sim` binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus, NodeSystemInfo};
use kube::api::{Api, Patch, PatchParams, PostParams};

use rubber_stamp_agent::cloud::CloudFacts;
use rubber_stamp_testkit::command::AgentCommand;

use super::attester::{AttesterConfig, LoopbackAttester, ReportedFacts};
use super::binaries::Binaries;
use super::control::NodeCredentials;
use super::{SandboxError, Timings};
use rubber_stamp_hosts::{Host, HostProcess};

/// The agent's health port inside a host (with hostNetwork, on the node).
pub const AGENT_HEALTH_PORT: u16 = 10271;
/// The agent's proof listener inside a host (`[::]`, both families): the port the
/// approver probes to prove an IP SAN's ownership.
pub const AGENT_PROOF_PORT: u16 = rubber_stamp_proto::proof::DEFAULT_PORT;
/// The kubelet's port inside a host.
pub const KUBELET_PORT: u16 = 10250;
/// What `kubelet-sim` prints once it serves with its certificate.
const SERVING_LINE: &str = "serving HTTPS on ";

/// What every node needs to know about the rest of the sandbox.
#[derive(Clone, Debug)]
pub struct NodeContext {
    /// The real binaries.
    pub binaries: Binaries,
    /// The approver serving CA file (agents' `--approver-ca`).
    pub approver_ca: PathBuf,
    /// The same, PEM (the loopback attester).
    pub approver_ca_pem: String,
    /// The approver Service as agents dial it (`name:port`).
    pub approver_service: String,
    /// The name the approver's certificate carries.
    pub approver_server_name: String,
    /// Every replica's attestation address (the loopback attester dials them directly).
    pub replicas: Vec<SocketAddr>,
    /// Intervals.
    pub timings: Timings,
}

/// Where a node lives.
#[derive(Clone, Debug)]
pub enum Placement {
    /// A simulated host (network namespace on the sandbox's bridge).
    Host(Host),
    /// Loopback mode: the node connects from `source` and calls
    /// `node_v4`/`node_v6` (documentation ranges) its addresses.
    Loopback {
        /// The node's own loopback address (connections come from it, the
        /// kubelet serves on it).
        source: Ipv4Addr,
        /// The node's "node IP" (192.0.2.0/24).
        node_v4: Ipv4Addr,
        /// The node's IPv6 "node IP" (2001:db8::/64).
        node_v6: Ipv6Addr,
    },
}

/// What a cloud states about a node: the sandbox's cloud nodes have a metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInstance {
    /// The public address the cloud maps to the node by 1:1 NAT (on no interface).
    pub public: IpAddr,
    /// The cloud's DNS name for it (a Node's `ExternalDNS`), if any.
    pub external_dns: Option<String>,
    /// Whether the node's Node lists them (as the cloud controller manager writes an honest
    /// instance's addresses; a rogue's metadata states what its Node does not).
    pub in_node_status: bool,
}

/// Where every cloud serves instance metadata; the sandbox puts it on a cloud host's `lo`.
pub const METADATA_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

/// The running agent of a node.
#[derive(Debug)]
enum Agent {
    /// `rubber-stamp-agent` inside the host.
    Process(HostProcess),
    /// Loopback mode's in-process attester.
    Loopback(LoopbackAttester),
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    name: String,
    /// The UTS hostname its processes see (the node name unless changed).
    hostname: String,
    dir: PathBuf,
    credentials: NodeCredentials,
    machine_id: String,
    boot_id: String,
    placement: Placement,
    /// The node's own addresses (what its kubelet registers and asks for).
    addresses: Vec<IpNet>,
    /// Loopback mode: interfaces reported besides `eth0` and `lo`.
    extra_interfaces: Vec<(String, Vec<IpNet>)>,
    /// Addresses it claimed with [`claim_address`](Self::claim_address), in order.
    claimed: Vec<IpNet>,
    agent: Option<Agent>,
    agent_starts: u32,
    kubelet: Option<HostProcess>,
    /// What its cloud states (cloud nodes only).
    cloud: Option<CloudInstance>,
    /// Namespace mode: the cloud node's metadata service.
    metadata: Option<HostProcess>,
    /// The ServiceAccount token its agent presents (`--identity token`), in `dir/token`.
    token: Option<String>,
}

impl SimNode {
    /// A node with its directory, credentials and placement (nothing runs yet).
    pub(crate) fn new(
        name: &str,
        dir: PathBuf,
        credentials: NodeCredentials,
        placement: Placement,
    ) -> Result<Self, SandboxError> {
        let machine_id = hex(&rand::random::<[u8; 16]>());
        let boot_id = uuid(rand::random::<[u8; 16]>());
        let write = |file: &str, text: &str| {
            let path = dir.join(file);
            std::fs::write(&path, format!("{text}\n"))
                .map_err(|source| SandboxError::Io { path, source })
        };
        write("machine-id", &machine_id)?;
        write("boot_id", &boot_id)?;
        let addresses = match &placement {
            Placement::Host(host) => host.initial_addresses().to_vec(),
            Placement::Loopback {
                node_v4, node_v6, ..
            } => vec![
                IpNet::new_assert(IpAddr::V4(*node_v4), 24),
                IpNet::new_assert(IpAddr::V6(*node_v6), 64),
            ],
        };
        Ok(Self {
            name: name.to_owned(),
            hostname: name.to_owned(),
            dir,
            credentials,
            machine_id,
            boot_id,
            placement,
            addresses,
            extra_interfaces: Vec::new(),
            claimed: Vec::new(),
            agent: None,
            agent_starts: 0,
            kubelet: None,
            cloud: None,
            metadata: None,
            token: None,
        })
    }

    /// Makes the agent attest with `token` (written to the node's `token` file, as the
    /// kubelet writes a projected token) instead of the kubelet's certificate. Call before
    /// starting the agent.
    pub fn set_token(&mut self, token: &str) -> Result<(), SandboxError> {
        crate::control::write_private(&self.token_path(), token)?;
        self.token = Some(token.to_owned());
        Ok(())
    }

    /// The agent's token file.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The token the agent attests with, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Makes the node a cloud instance: its cloud states `instance` (through a metadata
    /// service in namespace mode; in the attester's report in loopback mode), its kubelet
    /// asks for the public address and DNS name as a cloud kubelet does, and, when
    /// `in_node_status`, its Node lists them. Call before registering and starting.
    pub fn set_cloud(&mut self, instance: CloudInstance) {
        self.cloud = Some(instance);
    }

    /// What the node's cloud states, if it is a cloud instance.
    pub fn cloud(&self) -> Option<&CloudInstance> {
        self.cloud.as_ref()
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hostname its agent and kubelet see: the node name unless
    /// [`set_hostname`](Self::set_hostname) changed it.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// What root on the node does with `hostname NAME`: processes started
    /// afterwards (agent, kubelet) see `hostname`. The node name stays.
    pub fn set_hostname(&mut self, hostname: &str) {
        hostname.clone_into(&mut self.hostname);
    }

    /// Where it lives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Its simulated host, in namespace mode.
    pub fn host(&self) -> Option<&Host> {
        match &self.placement {
            Placement::Host(h) => Some(h),
            Placement::Loopback { .. } => None,
        }
    }

    /// The node's own addresses (IPv4 first), as its kubelet registers them.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(IpNet::addr).collect()
    }

    /// The addresses it claimed on link-less interfaces
    /// ([`claim_address`](Self::claim_address)), not its own.
    pub fn claimed_addresses(&self) -> Vec<IpAddr> {
        self.claimed.iter().map(IpNet::addr).collect()
    }

    /// Its first IPv4 address.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|n| match n.addr() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// Its kubelet credentials.
    pub fn credentials(&self) -> &NodeCredentials {
        &self.credentials
    }

    /// The machine id its agent reports (and its Node's `nodeInfo.machineID`).
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// The directory of its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers the Node object as the kubelet does, with the node's own
    /// credentials: create, then `status` (addresses, nodeInfo ids).
    pub async fn register(&self, client: kube::Client) -> Result<(), SandboxError> {
        let nodes: Api<Node> = Api::all(client);
        let mut node = Node::default();
        node.metadata.name = Some(self.name.clone());
        node.metadata.labels = Some(
            [
                ("kubernetes.io/hostname".to_owned(), self.name.clone()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ]
            .into(),
        );
        nodes.create(&PostParams::default(), &node).await?;
        self.update_status(&nodes).await
    }

    /// Writes the Node's `status` from the node's current addresses (as the
    /// kubelet does after an address change).
    pub async fn update_node_addresses(&self, client: kube::Client) -> Result<(), SandboxError> {
        self.update_status(&Api::all(client)).await
    }

    async fn update_status(&self, nodes: &Api<Node>) -> Result<(), SandboxError> {
        let mut addresses: Vec<NodeAddress> = self
            .addresses
            .iter()
            .map(|n| NodeAddress {
                type_: "InternalIP".to_owned(),
                address: n.addr().to_string(),
            })
            .collect();
        addresses.push(NodeAddress {
            type_: "Hostname".to_owned(),
            address: self.name.clone(),
        });
        if let Some(cloud) = self.cloud.as_ref().filter(|c| c.in_node_status) {
            addresses.push(NodeAddress {
                type_: "ExternalIP".to_owned(),
                address: cloud.public.to_string(),
            });
            if let Some(dns) = &cloud.external_dns {
                addresses.push(NodeAddress {
                    type_: "ExternalDNS".to_owned(),
                    address: dns.clone(),
                });
            }
        }
        let status = NodeStatus {
            addresses: Some(addresses),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.to_owned(),
                boot_id: self.boot_id.clone(),
                container_runtime_version: "sandbox://0".to_owned(),
                kernel_version: String::new(),
                kube_proxy_version: String::new(),
                kubelet_version: "v1.33.0-sandbox".to_owned(),
                machine_id: self.machine_id.clone(),
                operating_system: "linux".to_owned(),
                os_image: "rubber-stamp sandbox".to_owned(),
                system_uuid: uuid(rand::random::<[u8; 16]>()),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        };
        let patch = serde_json::json!({ "status": status });
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Makes the node claim `address` on a link-less interface `iface`, as
    /// root on a node could: in namespace mode a `dummy` (or `ifb`)
    /// interface, so the real agent attests it; in loopback mode one more
    /// interface in the attester's report. Call before starting the agent.
    ///
    /// In namespace mode the host also stops answering ARP for addresses
    /// that are not on the asking interface (`arp_ignore=1`): the claim is
    /// about what the agent attests, and the real owner must stay reachable.
    pub async fn claim_address(
        &mut self,
        iface: &str,
        address: IpNet,
    ) -> Result<String, SandboxError> {
        let on = match &self.placement {
            Placement::Host(host) => {
                host.set_sysctl("net/ipv4/conf/all/arp_ignore", "1").await?;
                let kind = host.add_dummy(iface, address)?;
                format!("{iface} ({kind} interface)")
            }
            Placement::Loopback { .. } => {
                self.extra_interfaces
                    .push((iface.to_owned(), vec![address]));
                format!("{iface} (in the reported facts)")
            }
        };
        self.claimed.push(address);
        Ok(on)
    }

    /// Replaces one of the node's addresses by another on its `eth0` (an IP
    /// change): the new one is added, then the old one removed. Namespace
    /// mode only.
    ///
    /// Linux removes every secondary address of a subnet with its primary
    /// unless `promote_secondaries` is set, so it is set first: the new
    /// address becomes the primary and the default route stays.
    pub async fn change_address(&mut self, old: IpNet, new: IpNet) -> Result<(), SandboxError> {
        let Placement::Host(host) = &self.placement else {
            return Err(SandboxError::Setup(
                "address changes need namespace mode".into(),
            ));
        };
        for iface in ["all", rubber_stamp_hosts::HOST_INTERFACE] {
            host.set_sysctl(&format!("net/ipv4/conf/{iface}/promote_secondaries"), "1")
                .await?;
        }
        host.add_address(new)?;
        host.remove_address(old)?;
        for a in &mut self.addresses {
            if *a == old {
                *a = new;
            }
        }
        Ok(())
    }

    /// Starts the node's agent: the real binary inside the host, or the
    /// in-process attester in loopback mode.
    pub fn start_agent(&mut self, ctx: &NodeContext) -> Result<(), SandboxError> {
        if self.agent.is_some() {
            return Err(SandboxError::Setup(format!(
                "{}: the agent is already running",
                self.name
            )));
        }
        self.agent_starts += 1;
        if let Placement::Host(host) = &self.placement
            && self.cloud.is_some()
            && self.metadata.is_none()
        {
            self.metadata = Some(self.start_metadata(ctx, host)?);
        }
        self.agent = Some(match &self.placement {
            Placement::Host(host) => {
                let t = &ctx.timings;
                let mut cmd = Command::new(&ctx.binaries.agent);
                let mut agent = AgentCommand::new(
                    &ctx.approver_service,
                    &ctx.approver_ca,
                    &self.credentials.client_pem,
                );
                if self.token.is_some() {
                    agent = agent.token_file(self.token_path());
                }
                cmd.args(
                    agent
                        .health_listen(format!("0.0.0.0:{AGENT_HEALTH_PORT}"))
                        // The agent's own default, on every address of the host: where the
                        // approver's proof of address ownership probes (the testkit's default
                        // is loopback, for agents sharing one machine).
                        .proof_listen(SocketAddr::new(
                            Ipv6Addr::UNSPECIFIED.into(),
                            AGENT_PROOF_PORT,
                        ))
                        .duration("poll-interval", t.agent_poll)
                        .duration("heartbeat-interval", t.agent_heartbeat)
                        .duration("resolve-interval", t.agent_resolve)
                        .duration("backoff-min", Duration::from_millis(100))
                        .duration("backoff-max", t.agent_backoff_max)
                        .duration("keepalive-interval", t.agent_keepalive)
                        .duration("keepalive-timeout", t.agent_keepalive / 2)
                        .flag("machine-id-path", self.dir.join("machine-id"))
                        .flag("boot-id-path", self.dir.join("boot_id"))
                        // A cloud node detects its cloud (`auto`, the default); the others are
                        // bare metal, whatever the machine running the sandbox can reach.
                        .flag(
                            "cloud-metadata",
                            if self.cloud.is_some() { "auto" } else { "off" },
                        )
                        .log_filter("info")
                        .args(),
                );
                Agent::Process(host.spawn_as(
                    &format!("agent{}", self.agent_starts),
                    &cmd,
                    &self.hostname,
                )?)
            }
            Placement::Loopback {
                source,
                node_v4,
                node_v6,
            } => {
                let mut interfaces = vec![
                    (
                        "eth0".to_owned(),
                        vec![
                            IpNet::new_assert(IpAddr::V4(*node_v4), 24),
                            IpNet::new_assert(IpAddr::V6(*node_v6), 64),
                        ],
                    ),
                    (
                        "lo".to_owned(),
                        vec![IpNet::new_assert(IpAddr::V4(*source), 8)],
                    ),
                ];
                interfaces.extend(self.extra_interfaces.iter().cloned());
                interfaces.sort();
                Agent::Loopback(
                    LoopbackAttester::start(
                        AttesterConfig {
                            endpoints: ctx.replicas.clone(),
                            server_name: ctx.approver_server_name.clone(),
                            approver_ca_pem: ctx.approver_ca_pem.clone(),
                            cert_pem: self.credentials.cert_pem.clone(),
                            key_pem: self.credentials.key_pem.clone(),
                            token: self.token.clone(),
                            source: IpAddr::V4(*source),
                            heartbeat: ctx.timings.agent_heartbeat,
                            backoff_max: ctx.timings.agent_backoff_max,
                            keepalive: ctx.timings.agent_keepalive,
                        },
                        ReportedFacts {
                            hostname: self.hostname.clone(),
                            interfaces,
                            machine_id: self.machine_id.clone(),
                            boot_id: self.boot_id.clone(),
                            cloud: self.cloud.as_ref().map(|c| self.cloud_facts(c)),
                        },
                    )
                    .map_err(|e| {
                        SandboxError::Setup(format!("{}: the loopback attester: {e}", self.name))
                    })?,
                )
            }
        });
        Ok(())
    }

    /// Loopback mode: what the AWS metadata service would state, as the agent reports it.
    fn cloud_facts(&self, cloud: &CloudInstance) -> CloudFacts {
        let mut addresses: Vec<IpAddr> = self
            .addresses
            .iter()
            .map(IpNet::addr)
            .filter(IpAddr::is_ipv4)
            .chain([cloud.public])
            .collect();
        addresses.sort();
        addresses.dedup();
        CloudFacts {
            source: "cloud:aws".to_owned(),
            addresses,
            dns_names: cloud.external_dns.iter().cloned().collect(),
            problem: None,
        }
    }

    /// Namespace mode: starts the cloud node's metadata service (AWS's protocol, the
    /// project's own `metadata-sim`) at 169.254.169.254:80 on the host's `lo`, and waits
    /// until it listens.
    fn start_metadata(&self, ctx: &NodeContext, host: &Host) -> Result<HostProcess, SandboxError> {
        let Some(cloud) = &self.cloud else {
            return Err(SandboxError::Setup(format!(
                "{} is not a cloud node",
                self.name
            )));
        };
        if !host.has_address(METADATA_ADDRESS)? {
            host.add_loopback_address(IpNet::new_assert(METADATA_ADDRESS, 32))?;
        }
        let ready = self.dir.join("metadata.ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(&ctx.binaries.metadata_sim);
        cmd.arg("--listen")
            .arg(SocketAddr::new(METADATA_ADDRESS, 80).to_string())
            .args(["--provider", "aws"])
            .arg("--public-ip")
            .arg(cloud.public.to_string())
            .arg("--ready-file")
            .arg(&ready);
        for ip in self
            .addresses
            .iter()
            .map(IpNet::addr)
            .filter(IpAddr::is_ipv4)
        {
            cmd.arg("--private-ip").arg(ip.to_string());
        }
        if let Some(dns) = &cloud.external_dns {
            cmd.arg("--public-name").arg(dns);
        }
        let process = host.spawn("metadata-sim", &cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if Instant::now() > deadline {
                return Err(SandboxError::Setup(format!(
                    "{}: metadata-sim did not listen within 10 s",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    /// Whether an agent (or attester) is running.
    pub fn agent_running(&self) -> bool {
        self.agent.is_some()
    }

    /// Stops the agent gracefully (SIGTERM, as a DaemonSet rollout does).
    pub async fn stop_agent(&mut self) -> Result<(), SandboxError> {
        match self.agent.take() {
            Some(Agent::Process(mut p)) => {
                p.stop(Duration::from_secs(5)).await?;
            }
            Some(Agent::Loopback(a)) => a.stop().await,
            None => {}
        }
        Ok(())
    }

    /// Kills the agent (SIGKILL): it leaves without a word.
    pub async fn kill_agent(&mut self) -> Result<(), SandboxError> {
        match self.agent.take() {
            Some(Agent::Process(mut p)) => {
                p.kill()?;
                p.wait(Duration::from_secs(5)).await?;
            }
            Some(Agent::Loopback(a)) => a.stop().await,
            None => {}
        }
        Ok(())
    }

    /// Where the agent's `grpc.health.v1` answers from the root namespace.
    pub fn agent_health(&self) -> Option<SocketAddr> {
        self.host()
            .map(|h| SocketAddr::from((h.ipv4(), AGENT_HEALTH_PORT)))
    }

    /// The agent's log (stderr), namespace mode.
    pub fn agent_log(&self) -> String {
        match &self.agent {
            Some(Agent::Process(p)) => p.stderr().unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Starts `kubelet-sim`, which creates the serving CSR (or reuses a
    /// stored certificate that still fits) and serves with the result.
    /// `ips`: the addresses to ask for (`None`: every address of the host,
    /// as the kubelet discovers them: in namespace mode kubelet-sim finds
    /// them itself; in loopback mode they are the node's own addresses and
    /// any it claimed with [`claim_address`](Self::claim_address)).
    pub fn start_kubelet(
        &mut self,
        ctx: &NodeContext,
        ips: Option<&[IpAddr]>,
    ) -> Result<(), SandboxError> {
        if self.kubelet.is_some() {
            return Err(SandboxError::Setup(format!(
                "{}: kubelet-sim is already running",
                self.name
            )));
        }
        let mut cmd = Command::new(&ctx.binaries.kubelet_sim);
        cmd.arg("--kubeconfig")
            .arg(&self.credentials.kubeconfig)
            .args(["--node-name", &self.name])
            .arg("--cert-dir")
            .arg(self.dir.join("pki"))
            .args(["--status-interval", "5"]);
        let join = |ips: &[IpAddr]| {
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        // A cloud kubelet asks for every address of its Node: the public one and the
        // cloud's DNS name too.
        let cloud_ips: Option<Vec<IpAddr>> = self.cloud.as_ref().map(|c| {
            let mut all = ips.map_or_else(|| self.addresses(), <[IpAddr]>::to_vec);
            all.push(c.public);
            all
        });
        let ips = cloud_ips.as_deref().or(ips);
        if let Some(dns) = self.cloud.as_ref().and_then(|c| c.external_dns.as_ref()) {
            cmd.arg("--dns-name").arg(dns);
        }
        let process = match &self.placement {
            Placement::Host(host) => {
                cmd.args(["--port", &KUBELET_PORT.to_string()]);
                if let Some(ips) = ips {
                    cmd.arg("--node-ip").arg(join(ips));
                }
                host.spawn_as("kubelet-sim", &cmd, &self.hostname)?
            }
            Placement::Loopback { source, .. } => {
                // What discovery finds on a host: its own addresses and any
                // it claims on other interfaces.
                let mut all = self.addresses();
                all.extend(
                    self.extra_interfaces
                        .iter()
                        .flat_map(|(_, nets)| nets.iter().map(IpNet::addr)),
                );
                cmd.args(["--hostname-override", &self.hostname])
                    .arg("--node-ip")
                    .arg(join(ips.unwrap_or(&all)))
                    .arg("--address")
                    .arg(source.to_string())
                    .args(["--port", "0"]);
                HostProcess::spawn(&format!("{}-kubelet-sim", self.name), cmd, &self.dir)?
            }
        };
        self.kubelet = Some(process);
        Ok(())
    }

    /// Stops `kubelet-sim` (SIGTERM).
    pub async fn stop_kubelet(&mut self) -> Result<(), SandboxError> {
        if let Some(mut p) = self.kubelet.take() {
            p.stop(Duration::from_secs(5)).await?;
        }
        Ok(())
    }

    /// What `kubelet-sim` printed so far (its status lines).
    pub fn kubelet_output(&self) -> String {
        self.kubelet
            .as_ref()
            .and_then(|p| p.stdout().ok())
            .unwrap_or_default()
    }

    /// Whether `kubelet-sim` has exited, and how.
    pub fn kubelet_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.kubelet
            .as_mut()
            .and_then(|p| p.try_wait().ok().flatten())
    }

    /// Where `kubelet-sim` serves HTTPS once it has its certificate: the
    /// node's IPv4 in namespace mode; the loopback address it reported in
    /// loopback mode. `None` while it does not serve.
    pub fn kubelet_serving(&self) -> Option<SocketAddr> {
        let out = self.kubelet_output();
        let line = out.lines().rev().find_map(|l| {
            l.split_once(SERVING_LINE)
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""))
        })?;
        let listening: SocketAddr = line.parse().ok()?;
        match &self.placement {
            Placement::Host(_) => self
                .ipv4()
                .map(|ip| SocketAddr::from((ip, listening.port()))),
            Placement::Loopback { .. } => Some(listening),
        }
    }

    /// Waits until `kubelet-sim` serves, for at most `within`.
    pub async fn wait_kubelet_serving(
        &mut self,
        within: Duration,
    ) -> Result<SocketAddr, SandboxError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = self.kubelet_serving() {
                return Ok(addr);
            }
            if let Some(status) = self.kubelet_exit() {
                return Err(SandboxError::Process(format!(
                    "{}: kubelet-sim exited ({status}): {}",
                    self.name,
                    self.kubelet_output()
                )));
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout(format!(
                    "{}'s kubelet-sim to serve within {within:?}; it said:\n{}",
                    self.name,
                    self.kubelet_output()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Placement as people read it: `198.18.7.3, fd12::3` or `loopback 127.0.1.10 as 192.0.2.10`.
    pub fn describe(&self) -> String {
        let own = self
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match &self.placement {
            Placement::Host(h) => format!("host {} ({own})", h.netns()),
            Placement::Loopback { source, .. } => format!("{own}, connecting from {source}"),
        }
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random (version 4) UUID in lower case.
fn uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_shapes_the_agent_accepts() {
        let id = uuid(rand::random());
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }
}
