//! The node's facts: hostname and every interface with its addresses (from `sysinfo`),
//! plus machine id and boot id when readable; normalised so equal facts compare equal.
//!
//! A read that finds no interface, or no address on any interface, is an error, never
//! facts: every host has `lo`, and `sysinfo` fails silently (out of descriptors it lists
//! nothing). The approver denies a SAN missing from fresh facts, so facts that are
//! incomplete must not be reported at all.
//!
//! Where facts come from is a [`FactSource`]: [`SystemFacts`] on a node; simulated nodes
//! (the sandbox on loopback, the benchmark's fleet, the tests' scripted agents) bring their
//! own and run the same [`session`](crate::session) code.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;
use rubber_stamp_proto::ids::{is_boot_id, is_machine_id};
use rubber_stamp_proto::limits;
use rubber_stamp_proto::sources;

use crate::cloud::{Cloud, CloudFacts};
use rubber_stamp_proto::v1::{self, IpPrefix, NetworkInterface, NodeReport};
use sysinfo::{Networks, System};
use tokio::sync::watch;

/// The agent's version, sent in every report.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What this node says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// Kernel hostname, lower case, no trailing dot.
    pub hostname: String,
    /// Interfaces sorted by name; addresses sorted, unique, in canonical form.
    pub interfaces: Vec<Interface>,
    /// Contents of the machine-id file, if it holds 32 hex digits.
    pub machine_id: Option<String>,
    /// Contents of the boot-id file, if it holds a UUID.
    pub boot_id: Option<String>,
    /// What the interface facts leave out (interfaces or addresses past the wire
    /// contract's limits, names it cannot carry), in plain words; `None` when they
    /// hold everything the kernel listed. Sent with every report, so the approver
    /// never takes a cut list for the whole node.
    pub interfaces_cut: Option<String>,
    /// What the cloud's instance metadata states, when the agent reads one
    /// ([`crate::cloud`]); `None` when it reads none (`--cloud-metadata=off`, or no cloud
    /// was detected).
    pub cloud: Option<CloudFacts>,
}

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The kernel's name for it.
    pub name: String,
    /// Its addresses with prefix lengths.
    pub addresses: Vec<IpNet>,
}

/// Why facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The kernel hostname could not be read or is empty.
    #[error("the node's hostname is unknown")]
    NoHostname,
    /// The network interfaces could not be listed.
    #[error("listing network interfaces: {0}")]
    Networks(String),
    /// No interface was read: every host has `lo`, so listing them failed.
    #[error("no network interface could be read ({cause}); every host has at least `lo`")]
    NoInterfaces {
        /// What opening the interface list ourselves says (e.g. too many open files).
        cause: String,
    },
    /// Interfaces were read but none has an address: reading the addresses failed.
    #[error("none of the {interfaces} network interfaces has an address ({cause})")]
    NoAddresses {
        /// How many interfaces were listed.
        interfaces: usize,
        /// What opening the interface list ourselves says (e.g. too many open files).
        cause: String,
    },
}

/// Where the kernel lists network interfaces; opened to learn why a read came back empty.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// A read of the facts in progress.
pub type FactsRead<'a> = Pin<Box<dyn Future<Output = Result<NodeFacts, FactsError>> + Send + 'a>>;

/// Where a node's facts come from.
pub trait FactSource: Send + 'static {
    /// Reads the facts now. A read that may be incomplete is an error, never facts (see
    /// the module docs): the agent reports nothing rather than too little.
    fn read(&mut self) -> FactsRead<'_>;
}

/// The node's facts as the kernel has them: hostname and interfaces from `sysinfo`, ids
/// from their files.
pub struct SystemFacts {
    machine_id_path: PathBuf,
    boot_id_path: PathBuf,
}

/// The latest facts, shared by every stream; refreshed by the poller and on challenges.
/// Reads are serialised: one at a time from its source.
#[derive(Clone)]
pub struct Facts {
    source: Arc<tokio::sync::Mutex<Box<dyn FactSource>>>,
    tx: watch::Sender<Option<Arc<NodeFacts>>>,
    readable: watch::Sender<bool>,
}

/// A source of facts with the cloud's instance metadata added to every read (after the
/// interfaces, within the metadata timeout).
#[derive(Debug)]
pub struct WithCloud<S> {
    inner: S,
    cloud: Cloud,
}

impl<S: FactSource> WithCloud<S> {
    /// `inner`'s facts with `cloud`'s metadata.
    pub fn new(inner: S, cloud: Cloud) -> Self {
        Self { inner, cloud }
    }
}

impl<S: FactSource> FactSource for WithCloud<S> {
    fn read(&mut self) -> FactsRead<'_> {
        Box::pin(async move {
            let mut facts = self.inner.read().await?;
            facts.cloud = self.cloud.read().await;
            Ok(facts)
        })
    }
}

// === impl SystemFacts ===

impl FactSource for SystemFacts {
    fn read(&mut self) -> FactsRead<'_> {
        Box::pin(std::future::ready(self.gather()))
    }
}

impl SystemFacts {
    /// A source reading the ids from these files (missing files mean "unknown"). Fails
    /// when the node's facts cannot be read at all.
    pub fn new(machine_id_path: PathBuf, boot_id_path: PathBuf) -> Result<Self, FactsError> {
        Networks::new_with_refreshed_list().map_err(|e| FactsError::Networks(e.to_string()))?;
        Ok(Self {
            machine_id_path,
            boot_id_path,
        })
    }

    /// Reads the facts now; an empty read is an error (see the module docs).
    pub fn gather(&self) -> Result<NodeFacts, FactsError> {
        // A fresh list every time: a refreshed `Networks` keeps an interface's previous
        // addresses when the new read finds none (the interface lost its last address, or
        // getifaddrs failed), which would report addresses the node no longer has.
        let networks =
            Networks::new_with_refreshed_list().map_err(|e| FactsError::Networks(e.to_string()))?;
        let hostname = System::host_name().map_err(|_| FactsError::NoHostname)?;
        let interfaces = networks.iter().map(|(name, data)| {
            (
                name.to_string_lossy().into_owned(),
                data.ip_networks()
                    .iter()
                    .map(|n| (n.addr, n.prefix))
                    .collect::<Vec<_>>(),
            )
        });
        let facts = normalise(&hostname, interfaces)?;
        let mut facts = complete(facts, why_unreadable)?;
        facts.machine_id = read_id(&self.machine_id_path, is_machine_id);
        facts.boot_id = read_id(&self.boot_id_path, is_boot_id);
        Ok(facts)
    }
}

/// `facts` if they are a complete read: at least one interface, and an address on at
/// least one. Otherwise the error, with `cause()` saying why the read may have failed.
fn complete(facts: NodeFacts, cause: impl FnOnce() -> String) -> Result<NodeFacts, FactsError> {
    if facts.interfaces.is_empty() {
        return Err(FactsError::NoInterfaces { cause: cause() });
    }
    if facts.interfaces.iter().all(|i| i.addresses.is_empty()) {
        return Err(FactsError::NoAddresses {
            interfaces: facts.interfaces.len(),
            cause: cause(),
        });
    }
    Ok(facts)
}

/// Why reading the interfaces may have failed: `sysinfo` does not say, so open their list
/// ourselves (out of descriptors, this fails the same way).
fn why_unreadable() -> String {
    match std::fs::read_dir(SYS_CLASS_NET) {
        Err(error) => format!("opening {SYS_CLASS_NET}: {error}"),
        Ok(_) => format!("{SYS_CLASS_NET} opens; sysinfo reported no error"),
    }
}

impl std::fmt::Debug for SystemFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemFacts")
            .field("machine_id_path", &self.machine_id_path)
            .field("boot_id_path", &self.boot_id_path)
            .finish_non_exhaustive()
    }
}

/// Builds normalised facts from raw interface data, within the wire contract's limits:
/// names sorted, addresses canonical (IPv4-mapped IPv6 becomes IPv4), sorted and unique.
/// Interfaces whose name the contract cannot carry are skipped, and interfaces and
/// addresses past the contract's limits are dropped (routable ones kept first); all of
/// it is logged and said in [`NodeFacts::interfaces_cut`], so the report says it is cut.
pub fn normalise(
    hostname: &str,
    interfaces: impl IntoIterator<Item = (String, Vec<(IpAddr, u8)>)>,
) -> Result<NodeFacts, FactsError> {
    let hostname = hostname.trim();
    let hostname = hostname
        .strip_suffix('.')
        .unwrap_or(hostname)
        .to_ascii_lowercase();
    if hostname.is_empty() {
        return Err(FactsError::NoHostname);
    }
    let mut by_name: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
    let mut cut = Cut::default();
    for (name, addresses) in interfaces {
        if name.is_empty()
            || name.len() > limits::MAX_INTERFACE_NAME_BYTES
            || name.chars().any(char::is_control)
        {
            tracing::warn!(name = ?name, "skipping an interface whose name cannot be reported");
            cut.unnamed += 1;
            continue;
        }
        let nets = by_name.entry(name).or_default();
        for (addr, prefix) in addresses {
            let addr = addr.to_canonical();
            // An IPv4-mapped address carries an IPv6 prefix length.
            let prefix = match addr {
                IpAddr::V4(_) if prefix > 32 => prefix.saturating_sub(96),
                _ => prefix,
            };
            if let Ok(net) = IpNet::new(addr, prefix) {
                nets.insert(net);
            }
        }
    }
    if by_name.len() > limits::MAX_INTERFACES {
        tracing::warn!(
            count = by_name.len(),
            limit = limits::MAX_INTERFACES,
            "too many interfaces; reporting those with routable addresses first"
        );
        cut.interfaces = by_name.len() - limits::MAX_INTERFACES;
    }
    // Past the limits, what a serving certificate can name goes first: a busy node has
    // hundreds of pod devices (`cali…`, `lxc…`, `veth…`) that sort before `eth0` and
    // carry at most link-local addresses.
    // A stable sort keeps the map's name order within each rank.
    let mut ranked: Vec<(String, BTreeSet<IpNet>)> = by_name.into_iter().collect();
    ranked.sort_by_key(|(_, nets)| !nets.iter().any(|n| is_routable(n.addr())));
    let mut budget = limits::MAX_ADDRESSES_PER_REPORT;
    let mut interfaces: Vec<Interface> = ranked
        .into_iter()
        .take(limits::MAX_INTERFACES)
        .map(|(name, nets)| {
            let keep = nets.len().min(limits::MAX_ADDRESSES_PER_INTERFACE).min(budget);
            if keep < nets.len() {
                tracing::warn!(interface = %name, addresses = nets.len(), reported = keep, "too many addresses on an interface; reporting the routable ones first");
                cut.addresses += nets.len() - keep;
            }
            budget -= keep;
            let mut nets: Vec<IpNet> = nets.into_iter().collect();
            nets.sort_by_key(|n| !is_routable(n.addr()));
            nets.truncate(keep);
            nets.sort();
            Interface {
                name,
                addresses: nets,
            }
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(NodeFacts {
        hostname,
        interfaces,
        machine_id: None,
        boot_id: None,
        interfaces_cut: cut.describe(),
        cloud: None,
    })
}

/// What [`normalise`] left out.
#[derive(Debug, Default)]
struct Cut {
    /// Interfaces whose name the contract cannot carry.
    unnamed: usize,
    /// Interfaces past the per-report limit.
    interfaces: usize,
    /// Addresses past the per-interface or per-report limit.
    addresses: usize,
}

impl Cut {
    fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.unnamed > 0 {
            parts.push(format!(
                "{} interfaces whose names the report cannot carry",
                self.unnamed
            ));
        }
        if self.interfaces > 0 {
            parts.push(format!(
                "{} interfaces past the limit of {}",
                self.interfaces,
                limits::MAX_INTERFACES
            ));
        }
        if self.addresses > 0 {
            parts.push(format!(
                "{} addresses past the limits of {} per interface and {} per report",
                self.addresses,
                limits::MAX_ADDRESSES_PER_INTERFACE,
                limits::MAX_ADDRESSES_PER_REPORT
            ));
        }
        (!parts.is_empty()).then(|| format!("left out {}", parts.join(", ")))
    }
}

/// An address a serving certificate could name: not loopback, link-local, multicast or
/// unspecified.
fn is_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.is_multicast()
                || v6.is_unspecified())
        }
    }
}

fn read_id(path: &Path, valid: fn(&str) -> bool) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.trim().to_ascii_lowercase();
    if valid(&id) {
        Some(id)
    } else {
        tracing::debug!(path = %path.display(), "ignoring an id file with unexpected content");
        None
    }
}

// === impl NodeFacts ===

impl NodeFacts {
    /// The wire report for these facts, numbered `sequence`, answering the challenge of
    /// `nonce` (empty: none), from an agent whose proof listener is on `proof_port` (0: it
    /// runs none).
    pub fn to_report(&self, sequence: u64, nonce: Vec<u8>, proof_port: u16) -> NodeReport {
        NodeReport {
            hostname: self.hostname.clone(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| NetworkInterface {
                    name: i.name.clone(),
                    addresses: i
                        .addresses
                        .iter()
                        .map(|net| IpPrefix::new(net.addr(), net.prefix_len()))
                        .collect(),
                })
                .collect(),
            machine_id: self.machine_id.clone().unwrap_or_default(),
            boot_id: self.boot_id.clone().unwrap_or_default(),
            agent_version: AGENT_VERSION.to_owned(),
            nonce,
            proof_port: u32::from(proof_port),
            sequence,
            sources: std::iter::once(v1::FactSource::new(
                sources::INTERFACES,
                self.interfaces_cut.clone(),
            ))
            .chain(
                self.cloud
                    .iter()
                    .map(|c| v1::FactSource::new(&c.source, c.problem.clone())),
            )
            .collect(),
            metadata: self
                .cloud
                .iter()
                .filter(|c| sources::is_metadata_source(&c.source))
                .map(|c| v1::MetadataFacts::new(&c.source, &c.addresses, &c.dns_names))
                .collect(),
        }
    }
}

// === impl Facts ===

impl Facts {
    /// Shared facts read from `source` (nothing read yet).
    pub fn new(source: impl FactSource) -> Self {
        Self {
            source: Arc::new(tokio::sync::Mutex::new(Box::new(source))),
            tx: watch::channel(None).0,
            readable: watch::channel(false).0,
        }
    }

    /// Reads the facts now; subscribers are notified if they changed. Every read of the
    /// agent goes through here: a failed one publishes nothing and turns
    /// [`readable`](Self::readable) off until a read succeeds.
    pub async fn refresh(&self) -> Result<Arc<NodeFacts>, FactsError> {
        self.read_and_publish(false).await
    }

    /// Reads the facts now and has every stream report them, changed or not (a
    /// simulated node reporting when its script says so). A failed read is handled as
    /// by [`refresh`](Self::refresh): nothing is reported.
    pub async fn report_now(&self) -> Result<Arc<NodeFacts>, FactsError> {
        self.read_and_publish(true).await
    }

    async fn read_and_publish(&self, always_notify: bool) -> Result<Arc<NodeFacts>, FactsError> {
        let gathered = {
            let mut source = self.source.lock().await;
            source.read().await
        };
        let ok = gathered.is_ok();
        let was_ok = self.readable.send_replace(ok);
        let facts = match gathered {
            Ok(facts) => {
                if !was_ok {
                    tracing::info!("the node's facts are readable");
                }
                facts
            }
            // Callers log it with their context (poll, connect, heartbeat, challenge).
            Err(error) => return Err(error),
        };
        let mut latest = None;
        self.tx.send_if_modified(|current| {
            if let Some(current) = current
                && **current == facts
            {
                latest = Some(Arc::clone(current));
                return always_notify;
            }
            tracing::info!(hostname = %facts.hostname, interfaces = facts.interfaces.len(), "node facts changed");
            let fresh = Arc::new(facts.clone());
            latest = Some(Arc::clone(&fresh));
            *current = Some(fresh);
            true
        });
        Ok(latest.unwrap_or_else(|| Arc::new(facts)))
    }

    /// The latest facts, reading them if none were read yet.
    pub async fn current(&self) -> Result<Arc<NodeFacts>, FactsError> {
        let latest = self.tx.borrow().clone();
        match latest {
            Some(facts) => Ok(facts),
            None => self.refresh().await,
        }
    }

    /// Notified whenever the facts change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<NodeFacts>>> {
        self.tx.subscribe()
    }

    /// Whether the last read succeeded (false before the first).
    pub fn readable(&self) -> watch::Receiver<bool> {
        self.readable.subscribe()
    }
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("latest", &*self.tx.borrow())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn normalisation_makes_equal_facts_equal_whatever_the_order() {
        let a = normalise(
            "Worker-1.",
            [
                (
                    "eth0".to_owned(),
                    vec![(ip("fd00::11"), 64), (ip("10.0.0.11"), 24)],
                ),
                (
                    "lo".to_owned(),
                    vec![(ip("127.0.0.1"), 8), (ip("::1"), 128)],
                ),
            ],
        )
        .expect("facts");
        let b = normalise(
            "worker-1",
            [
                (
                    "lo".to_owned(),
                    vec![(ip("::1"), 128), (ip("127.0.0.1"), 8)],
                ),
                (
                    "eth0".to_owned(),
                    vec![
                        (ip("10.0.0.11"), 24),
                        (ip("::ffff:10.0.0.11"), 120),
                        (ip("fd00::11"), 64),
                    ],
                ),
            ],
        )
        .expect("facts");
        assert_eq!(a, b);
        assert_eq!(a.hostname, "worker-1");
        let names: Vec<_> = a.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "lo"]);
        let eth0: Vec<_> = a.interfaces[0]
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(eth0, ["10.0.0.11/24", "fd00::11/64"]);
    }

    #[test]
    fn limits_of_the_wire_contract_are_respected() {
        let many: Vec<_> = (0..100u8)
            .map(|i| (IpAddr::from([10, 96, 0, i]), 32))
            .collect();
        let facts = normalise(
            "n",
            [
                ("kube-ipvs0".to_owned(), many),
                ("bad\u{1}name".to_owned(), vec![(ip("10.0.0.1"), 24)]),
                (String::new(), vec![]),
            ],
        )
        .expect("facts");
        assert_eq!(facts.interfaces.len(), 1, "unreportable names skipped");
        assert_eq!(
            facts.interfaces[0].addresses.len(),
            limits::MAX_ADDRESSES_PER_INTERFACE
        );
        assert!(normalise(" ", Vec::new()).is_err());
        // What was left out is said, and travels with the report: a cut list never
        // passes for the whole node.
        let cut = facts.interfaces_cut.as_deref().expect("the cut is said");
        assert!(cut.contains("2 interfaces whose names"), "{cut}");
        assert!(cut.contains("36 addresses past the limits"), "{cut}");
        let source = &facts.to_report(1, Vec::new(), 0).sources[0];
        assert_eq!(
            (source.name.as_str(), source.complete),
            ("interfaces", false)
        );
        assert!(source.problem.len() <= limits::MAX_SOURCE_PROBLEM_BYTES);
        assert_eq!(source.problem, cut);
    }

    #[test]
    fn past_the_interface_limit_routable_interfaces_are_kept_first() {
        // 300 pod devices that sort before eth0 and have only link-local addresses.
        let mut interfaces: Vec<(String, Vec<(IpAddr, u8)>)> = (0..300u16)
            .map(|i| {
                let link_local = IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, i + 1]);
                (format!("cali{i:04}"), vec![(link_local, 64)])
            })
            .collect();
        interfaces.push((
            "eth0".to_owned(),
            vec![(ip("fe80::1"), 64), (ip("10.0.0.11"), 24)],
        ));
        interfaces.push(("lo".to_owned(), vec![(ip("127.0.0.1"), 8)]));
        let facts = normalise("n", interfaces).expect("facts");
        assert_eq!(facts.interfaces.len(), limits::MAX_INTERFACES);
        assert!(
            facts
                .interfaces_cut
                .as_deref()
                .is_some_and(|c| c.contains("46 interfaces past the limit of 256")),
            "{:?}",
            facts.interfaces_cut
        );
        let names: Vec<&str> = facts.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert!(names.contains(&"eth0"), "eth0 dropped");
        assert!(names.is_sorted(), "reported in name order");
        // Within an interface, routable addresses survive the per-interface limit.
        let many: Vec<(IpAddr, u8)> = (0..100u16)
            .map(|i| (IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, i + 1]), 64))
            .chain([(ip("10.0.0.11"), 24)])
            .collect();
        let facts = normalise("n", [("eth0".to_owned(), many)]).expect("facts");
        let eth0 = &facts.interfaces[0].addresses;
        assert_eq!(eth0.len(), limits::MAX_ADDRESSES_PER_INTERFACE);
        assert!(eth0.contains(&"10.0.0.11/24".parse().expect("net")));
        assert!(eth0.is_sorted());
    }

    #[test]
    fn the_report_carries_every_fact_in_wire_form() {
        let mut facts = normalise(
            "n",
            [(
                "eth0".to_owned(),
                vec![(ip("10.0.0.11"), 24), (ip("fd00::1"), 64)],
            )],
        )
        .expect("facts");
        facts.machine_id = Some("0".repeat(32));
        let report = facts.to_report(7, vec![1, 2], 10273);
        assert_eq!(report.sequence, 7);
        assert_eq!(report.proof_port, 10273);
        assert_eq!(
            facts.to_report(7, Vec::new(), 0).proof_port,
            0,
            "no listener"
        );
        assert_eq!(report.nonce, [1, 2]);
        assert_eq!(report.machine_id, "0".repeat(32));
        assert_eq!(report.boot_id, "");
        let addrs = &report.interfaces[0].addresses;
        assert_eq!(addrs[0].address, [10, 0, 0, 11]);
        assert_eq!(addrs[0].prefix_length, 24);
        assert_eq!(addrs[1].address.len(), 16);
        // Nothing was left out: the interfaces source is complete.
        assert_eq!(facts.interfaces_cut, None);
        assert_eq!(report.sources.len(), 1);
        assert_eq!(report.sources[0].name, "interfaces");
        assert!(report.sources[0].complete && report.sources[0].problem.is_empty());
    }

    #[test]
    fn ids_are_read_when_well_formed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine = dir.path().join("machine-id");
        std::fs::write(&machine, "0123456789ABCDEF0123456789abcdef\n").expect("write");
        assert_eq!(
            read_id(&machine, is_machine_id).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        std::fs::write(&machine, "garbage\n").expect("write");
        assert_eq!(read_id(&machine, is_machine_id), None);
        assert_eq!(read_id(&dir.path().join("missing"), is_boot_id), None);
        let boot = dir.path().join("boot_id");
        std::fs::write(&boot, "01234567-89ab-cdef-0123-456789abcdef\n").expect("write");
        assert!(read_id(&boot, is_boot_id).is_some());
    }

    #[test]
    fn an_empty_read_is_an_error_never_facts() {
        let cause = || "too many open files".to_owned();
        let empty = normalise("n", Vec::new()).expect("normalised");
        let error = complete(empty, cause).expect_err("no interfaces");
        assert!(
            matches!(error, FactsError::NoInterfaces { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "no network interface could be read (too many open files); every host has at least `lo`"
        );
        // Interfaces listed but their addresses not read (getifaddrs failed).
        let bare = normalise(
            "n",
            [("lo".to_owned(), vec![]), ("eth0".to_owned(), vec![])],
        )
        .expect("normalised");
        let error = complete(bare, cause).expect_err("no addresses");
        assert!(
            matches!(error, FactsError::NoAddresses { interfaces: 2, .. }),
            "{error:?}"
        );
        let whole =
            normalise("n", [("lo".to_owned(), vec![(ip("127.0.0.1"), 8)])]).expect("normalised");
        assert_eq!(complete(whole.clone(), cause).expect("complete"), whole);
    }

    /// A source that always reads the same facts.
    struct Fixed(NodeFacts);

    impl FactSource for Fixed {
        fn read(&mut self) -> FactsRead<'_> {
            Box::pin(std::future::ready(Ok(self.0.clone())))
        }
    }

    #[tokio::test]
    async fn only_changes_are_published_unless_a_report_is_asked_for() {
        let lo = normalise("n", [("lo".to_owned(), vec![(ip("127.0.0.1"), 8)])]).expect("facts");
        let facts = Facts::new(Fixed(lo.clone()));
        let mut changes = facts.subscribe();
        assert_eq!(*facts.refresh().await.expect("read"), lo);
        assert!(
            changes.has_changed().expect("open"),
            "the first read is a change"
        );
        changes.mark_unchanged();
        facts.refresh().await.expect("read");
        assert!(
            !changes.has_changed().expect("open"),
            "the same facts again"
        );
        assert_eq!(*facts.report_now().await.expect("read"), lo);
        assert!(
            changes.has_changed().expect("open"),
            "a report asked for is announced to every stream"
        );
        assert!(*facts.readable().borrow());
    }

    #[test]
    fn this_machine_has_facts() {
        let source = SystemFacts::new(
            "/etc/machine-id".into(),
            "/proc/sys/kernel/random/boot_id".into(),
        )
        .expect("sysinfo works here");
        let facts = source.gather().expect("facts");
        assert!(!facts.hostname.is_empty());
        assert!(facts.interfaces.iter().any(|i| i.name == "lo"), "{facts:?}");
        assert!(facts.boot_id.is_some(), "the kernel always has a boot id");
    }
}
