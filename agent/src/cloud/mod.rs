//! The cloud's instance metadata, a second source of facts (`--cloud-metadata`).
//!
//! On a cloud, a kubelet puts every address of its Node into its serving CSR — the
//! public address the cloud maps to the instance (on no interface), and the DNS names the
//! cloud gives it. The instance metadata service states them; the agent reads it, labels
//! what it read with its source (`cloud:aws`, `cloud:gcp`, `cloud:azure`,
//! `cloud:openstack`) and reports it beside the interfaces. The approver's policy says
//! which sources may back which SANs.
//!
//! Rules that keep it from ever costing a node its certificate:
//! - Detection (`auto`) runs in the background: until it ends, reports list a `cloud`
//!   source as incomplete, so no denial rests on them, and the interface facts go out at
//!   once. No metadata service found is not a problem: the reports then carry no cloud
//!   source at all.
//! - Every read is bounded by `--cloud-metadata-timeout`, every answer by
//!   [`http::MAX_BODY_BYTES`]; redirects are refused. A read that fails, times out or
//!   meets garbage reports the source as incomplete with the reason (and none of what it
//!   read), so the approver waits rather than denies; a read cut at a limit of the wire
//!   contract keeps what it read and is incomplete too.
//! - Detection settles on "no cloud" only when nothing at all answers at the endpoint
//!   (no connection); a service that answers but matches no provider, or does not answer
//!   in time, keeps the `cloud` source incomplete and is probed again, for at most
//!   [`DETECTION_PATIENCE`].
//! - Every report re-reads the metadata, so a challenge's answer carries facts read
//!   after the challenge.

pub mod http;
pub mod providers;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rubber_stamp_proto::limits;
use rubber_stamp_proto::sources;
use tokio::sync::watch;

use self::http::{MetadataClient, MetadataError};

/// Where every cloud serves its instance metadata.
pub const METADATA_ENDPOINT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// How often `auto` probes again while no metadata service answered.
pub const REDETECT_INTERVAL: Duration = Duration::from_secs(60);

/// How often `auto` probes again while something answers but matches no provider.
pub const AMBIGUOUS_REDETECT_INTERVAL: Duration = Duration::from_secs(10);

/// How long an ambiguous endpoint keeps the cloud source incomplete before `auto` settles
/// on "no cloud".
pub const DETECTION_PATIENCE: Duration = Duration::from_secs(300);

/// The default bound on one read (detection or facts).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which metadata service to read (`--cloud-metadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudMode {
    /// Detect the cloud in the background; read its metadata if one answers.
    Auto,
    /// AWS EC2 (IMDSv2).
    Aws,
    /// Google Compute Engine.
    Gcp,
    /// Azure.
    Azure,
    /// OpenStack Nova.
    Openstack,
    /// Read no metadata.
    Off,
}

/// A cloud whose metadata the agent can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// AWS EC2 (IMDSv2).
    Aws,
    /// Google Compute Engine.
    Gcp,
    /// Azure.
    Azure,
    /// OpenStack Nova.
    OpenStack,
}

impl Provider {
    /// In detection order: the services with a distinctive protocol first (OpenStack also
    /// serves AWS's paths).
    pub const ALL: [Self; 4] = [Self::Gcp, Self::Azure, Self::OpenStack, Self::Aws];

    /// The fact source's name.
    pub fn source(self) -> &'static str {
        match self {
            Self::Aws => "cloud:aws",
            Self::Gcp => "cloud:gcp",
            Self::Azure => "cloud:azure",
            Self::OpenStack => "cloud:openstack",
        }
    }

    async fn read(self, client: &MetadataClient) -> Result<Stated, MetadataError> {
        match self {
            Self::Aws => providers::aws::read(client).await,
            Self::Gcp => providers::gcp::read(client).await,
            Self::Azure => providers::azure::read(client).await,
            Self::OpenStack => providers::openstack::read(client).await,
        }
    }

    /// Whether this provider's service answers at all (cheap, one or two requests).
    async fn probe(self, client: &MetadataClient) -> Result<(), MetadataError> {
        match self {
            Self::Aws => providers::aws::token(client).await.map(drop),
            Self::Gcp => providers::gcp::probe(client).await,
            Self::Azure => providers::azure::probe(client).await,
            Self::OpenStack => providers::openstack::probe(client).await,
        }
    }
}

impl From<CloudMode> for Option<Provider> {
    fn from(mode: CloudMode) -> Self {
        match mode {
            CloudMode::Aws => Some(Provider::Aws),
            CloudMode::Gcp => Some(Provider::Gcp),
            CloudMode::Azure => Some(Provider::Azure),
            CloudMode::Openstack => Some(Provider::OpenStack),
            CloudMode::Auto | CloudMode::Off => None,
        }
    }
}

/// What a metadata service states, validated: canonical addresses and lower-case DNS
/// names, each once, within the wire contract's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stated {
    /// Addresses, sorted.
    pub addresses: BTreeSet<IpAddr>,
    /// DNS names, sorted.
    pub dns_names: BTreeSet<String>,
    /// What was left out at a limit of the wire contract, if anything.
    pub cut: Option<String>,
}

impl Stated {
    fn address(&mut self, path: &str, text: &str) -> Result<(), MetadataError> {
        let ip = providers::parse_ip(path, text)?;
        if self.addresses.len() >= limits::MAX_METADATA_ADDRESSES && !self.addresses.contains(&ip) {
            self.cut.get_or_insert_with(|| {
                format!(
                    "more than {} addresses; the rest is not reported",
                    limits::MAX_METADATA_ADDRESSES
                )
            });
            return Ok(());
        }
        self.addresses.insert(ip);
        Ok(())
    }

    fn addresses_from_lines(&mut self, path: &str, text: &str) -> Result<(), MetadataError> {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.address(path, line)?;
        }
        Ok(())
    }

    /// Whitespace-separated DNS names (AWS lists several in `local-hostname` when a VPC
    /// has custom DHCP options).
    fn names_from_words(&mut self, path: &str, text: &str) -> Result<(), MetadataError> {
        for word in text.split_whitespace() {
            let name = word.strip_suffix('.').unwrap_or(word).to_ascii_lowercase();
            if !is_dns_name(&name) {
                return Err(MetadataError::Malformed {
                    path: path.to_owned(),
                    problem: format!("{word:?} is not a DNS name"),
                });
            }
            if self.dns_names.len() >= limits::MAX_METADATA_DNS_NAMES
                && !self.dns_names.contains(&name)
            {
                self.cut.get_or_insert_with(|| {
                    format!(
                        "more than {} DNS names; the rest is not reported",
                        limits::MAX_METADATA_DNS_NAMES
                    )
                });
                continue;
            }
            self.dns_names.insert(name);
        }
        Ok(())
    }
}

/// An RFC 1123 host name of at most 253 bytes (lower case, no trailing dot).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::MAX_HOSTNAME_BYTES
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The metadata facts of one report: the source, what it stated, and what is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudFacts {
    /// `cloud:<provider>`, or `cloud` while detecting.
    pub source: String,
    /// Addresses the source stated (fewer than it has when a limit cut the reading;
    /// none when the reading failed).
    pub addresses: Vec<IpAddr>,
    /// DNS names the source stated.
    pub dns_names: Vec<String>,
    /// Why the reading is incomplete; `None` when it is complete.
    pub problem: Option<String>,
}

impl CloudFacts {
    fn detecting() -> Self {
        Self {
            source: sources::CLOUD_DETECTING.to_owned(),
            addresses: Vec::new(),
            dns_names: Vec::new(),
            problem: Some("detecting which cloud's metadata service answers".to_owned()),
        }
    }
}

/// Where detection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// Still probing.
    Detecting,
    /// No metadata service answered (or `off`).
    None,
    /// This provider's.
    Found(Provider),
}

/// How the agent reads its cloud's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    /// Which service.
    pub mode: CloudMode,
    /// Its address (169.254.169.254:80 everywhere; the sandbox's own in tests).
    pub endpoint: SocketAddr,
    /// Bound on one read.
    pub timeout: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            mode: CloudMode::Auto,
            endpoint: METADATA_ENDPOINT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The agent's view of its cloud: detection state and bounded reads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cloud {
    config: CloudConfig,
    client: MetadataClient,
    detection: watch::Sender<Detection>,
    /// The last problem logged, so a persistent one is logged once.
    logged: Arc<Mutex<Option<String>>>,
    /// When detection first met an endpoint that answered but matched no provider.
    first_ambiguous: Arc<Mutex<Option<std::time::Instant>>>,
}

impl Cloud {
    /// A cloud reader; with `auto`, [`detect`](Self::detect) settles which provider.
    pub fn new(config: CloudConfig) -> Self {
        let detection = match config.mode {
            CloudMode::Off => Detection::None,
            CloudMode::Auto => Detection::Detecting,
            mode => Option::<Provider>::from(mode).map_or(Detection::None, Detection::Found),
        };
        Self {
            config,
            client: MetadataClient::new(config.endpoint, config.timeout / 2),
            detection: watch::channel(detection).0,
            logged: Arc::new(Mutex::new(None)),
            first_ambiguous: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether this reader detects its cloud (`auto`).
    pub fn detects(&self) -> bool {
        self.config.mode == CloudMode::Auto
    }

    /// Where detection stands, notified when it ends.
    pub fn detection(&self) -> watch::Receiver<Detection> {
        self.detection.subscribe()
    }

    /// Probes every provider at once, within the timeout, and settles on the first (in
    /// [`Provider::ALL`] order) whose service answers as it should; returns whether one
    /// did. Does nothing (and says whether a provider is known) unless the mode is `auto`
    /// and no provider was found yet: the runtime probes again every
    /// [`REDETECT_INTERVAL`] while none answered, so a service that was unreachable when
    /// the agent started is found later.
    pub async fn detect(&self) -> bool {
        match *self.detection.borrow() {
            Detection::Found(_) => return true,
            Detection::None if self.config.mode != CloudMode::Auto => return false,
            Detection::Detecting | Detection::None => {}
        }
        let timeout = self.config.timeout;
        let probes = Provider::ALL.map(|p| {
            let client = self.client;
            async move {
                let outcome = match tokio::time::timeout(timeout, p.probe(&client)).await {
                    Ok(result) => result,
                    Err(_) => Err(MetadataError::Timeout(timeout)),
                };
                (p, outcome)
            }
        });
        let results = futures::future::join_all(probes).await;
        let found = Provider::ALL
            .into_iter()
            .find(|p| results.iter().any(|(q, result)| q == p && result.is_ok()));
        // Nothing connected at all: no metadata service here (bare metal). Anything else
        // without a match — an answer no provider's protocol explains, a timeout — is
        // ambiguous: the source stays incomplete while the patience lasts.
        let nothing_there = results
            .iter()
            .all(|(_, r)| matches!(r, Err(MetadataError::Unreachable(_))));
        let mut first_ambiguous = self
            .first_ambiguous
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let detection = match found {
            Some(p) => Detection::Found(p),
            None if nothing_there => Detection::None,
            None => {
                let since = *first_ambiguous.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < DETECTION_PATIENCE {
                    let reasons: Vec<String> = results
                        .iter()
                        .filter_map(|(p, r)| {
                            r.as_ref().err().map(|e| format!("{}: {e}", p.source()))
                        })
                        .collect();
                    tracing::warn!(endpoint = %self.config.endpoint, answers = %reasons.join("; "), "something answers at the metadata endpoint but no provider's protocol matched: probing again; until then no CSR of this node is denied on its reports");
                    Detection::Detecting
                } else {
                    tracing::warn!(endpoint = %self.config.endpoint, "no provider's protocol matched the metadata endpoint for {DETECTION_PATIENCE:?}: reporting the interfaces only (name the provider with --cloud-metadata if this is a cloud)");
                    Detection::None
                }
            }
        };
        if found.is_some() {
            *first_ambiguous = None;
        }
        drop(first_ambiguous);
        let previous = self.detection.send_replace(detection);
        match found {
            Some(p) => tracing::info!(source = p.source(), "cloud metadata service detected"),
            None if detection == Detection::None && previous == Detection::Detecting => {
                tracing::info!(
                    endpoint = %self.config.endpoint,
                    "no cloud metadata service answered: reporting the interfaces only (probing again every {REDETECT_INTERVAL:?}; name the provider with --cloud-metadata to have an unreadable service reported as incomplete instead)"
                );
            }
            None => {}
        }
        found.is_some()
    }

    /// How long to wait before probing again: sooner while detection is ambiguous.
    pub fn redetect_after(&self) -> Duration {
        if *self.detection.borrow() == Detection::Detecting {
            AMBIGUOUS_REDETECT_INTERVAL
        } else {
            REDETECT_INTERVAL
        }
    }

    /// Reads the metadata now, within the timeout: `None` when there is none to read.
    pub async fn read(&self) -> Option<CloudFacts> {
        let provider = match *self.detection.borrow() {
            Detection::Detecting => return Some(CloudFacts::detecting()),
            Detection::None => return None,
            Detection::Found(p) => p,
        };
        let read = tokio::time::timeout(self.config.timeout, provider.read(&self.client)).await;
        let (stated, problem) = match read {
            Ok(Ok(mut stated)) => {
                let cut = stated.cut.take();
                (stated, cut)
            }
            Ok(Err(e)) => (Stated::default(), Some(e.to_string())),
            Err(_) => (
                Stated::default(),
                Some(MetadataError::Timeout(self.config.timeout).to_string()),
            ),
        };
        self.log_problem(provider, problem.as_deref());
        Some(CloudFacts {
            source: provider.source().to_owned(),
            addresses: stated.addresses.into_iter().collect(),
            dns_names: stated.dns_names.into_iter().collect(),
            problem: problem.map(|p| clip(&p, limits::MAX_SOURCE_PROBLEM_BYTES)),
        })
    }

    fn log_problem(&self, provider: Provider, problem: Option<&str>) {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.as_deref() == problem {
            return;
        }
        match problem {
            Some(p) => tracing::warn!(
                source = provider.source(),
                problem = p,
                "reading the cloud metadata failed: reports mark it incomplete, so no CSR of this node is denied on them"
            ),
            None => tracing::info!(
                source = provider.source(),
                "reading the cloud metadata works"
            ),
        }
        *logged = problem.map(str::to_owned);
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().filter(|c| !c.is_control()).collect()
}
