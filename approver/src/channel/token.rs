//! A node's identity from a projected ServiceAccount token, vouched for by the API server:
//! a TokenReview (signature, audience, expiry, and that the bound Pod still exists), then
//! the binding to a node — the agent's ServiceAccount, the review's node claim
//! (`authentication.kubernetes.io/node-name`, Kubernetes 1.30+), and the bound Pod, which
//! must be a live Pod of the agent DaemonSet on that node with the uid the token names.
//!
//! Nothing in the token is trusted before the review: the agent's bytes are only read
//! unverified to refuse early what the review would refuse too (an expired token, another
//! audience), which saves API calls and gives those refusals their own labels. The expiry a
//! reviewed token carries bounds how long its identity is cached and how long a stream
//! opened with it may live.
//!
//! - [`precheck`] and [`bind`] are pure: the token's unverified claims, and a review plus
//!   the bound Pod → [`TokenIdentity`] or a [`TokenRefusal`].
//! - [`TokenVerifier`] does the API calls, bounded in concurrency and time, and caches
//!   outcomes by a digest of the token.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use rubber_stamp_core::NodeName;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::store::Clock;

/// The review's extra key naming the node the bound Pod runs on (Kubernetes 1.30+,
/// `ServiceAccountTokenPodNodeInfo`).
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The review's extra key naming the bound Pod.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The review's extra key carrying the bound Pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// The review's extra key identifying the token (`JTI=<id>`).
pub const CREDENTIAL_ID_EXTRA: &str = "authentication.kubernetes.io/credential-id";

/// Largest token accepted, in bytes (a projected token is about 1 KiB; the limit matches
/// the agent's).
pub const MAX_TOKEN_BYTES: usize = rubber_stamp_proto::limits::MAX_TOKEN_BYTES;

/// Who the agent must be, and how tokens are checked.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// Audience the agents' tokens are issued for (and the only one accepted).
    pub audience: String,
    /// Namespace of the agent's ServiceAccount and Pods; empty until resolved to the
    /// client's default namespace.
    pub namespace: String,
    /// The agent's ServiceAccount.
    pub service_account: String,
    /// The DaemonSet that must control the bound Pod.
    pub daemonset: String,
    /// Most TokenReviews (with their Pod read) in flight at once.
    pub max_concurrent_reviews: usize,
    /// Longest a stream waits for a review slot and the review itself.
    pub review_timeout: Duration,
    /// Most tokens whose outcome is cached; past it the entry expiring soonest goes.
    pub cache_entries: usize,
    /// How long a refusal is remembered, so a client repeating a bad token does not cost a
    /// review each time (an accepted token is remembered until it expires).
    pub refusal_ttl: Duration,
    /// Longest a token may still be valid for: one whose `exp` is further away is refused
    /// before any review (a projected token lives 10 minutes to a day; this bounds how
    /// long an accepted token is cached and a stream opened with it lives).
    pub max_lifetime: Duration,
    /// Reviews (cache misses) one source address may cause at once (IPv6: one /64).
    pub source_burst: u32,
    /// After the burst, one more review per source per this interval.
    pub source_interval: Duration,
}

impl TokenConfig {
    /// The username the agent's ServiceAccount authenticates as.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// The node a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The node, from the review's node claim, matching the bound Pod's `spec.nodeName`.
    pub node: NodeName,
    /// The bound Pod.
    pub pod: String,
    /// The token's credential id (`JTI=…`), or the Pod's uid when the review has none.
    pub credential: String,
    /// When the token expires; a stream opened with it is closed then.
    pub expires_at: SystemTime,
}

/// Why a token does not identify a node. Each has its own metric label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// The stream carries no `authorization: Bearer` token (and no client certificate).
    #[error(
        "no credential: present a kubelet client certificate or a ServiceAccount token (authorization: Bearer)"
    )]
    Missing,
    /// The authorization header is not a bearer token, or the token is not a JWT.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// The token is larger than any ServiceAccount token.
    #[error("the bearer token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// The token's `exp` is past (read before the review; the review would refuse it too).
    #[error(
        "the token expired at {0} (Unix seconds); the kubelet rotates projected tokens: mount one with expirationSeconds"
    )]
    Expired(u64),
    /// The token claims to be valid for longer than `--token-max-lifetime`.
    #[error("the token's exp {exp} is more than {max:?} away; projected tokens live at most a day")]
    TooLong {
        /// Its `exp`, Unix seconds.
        exp: u64,
        /// The limit.
        max: Duration,
    },
    /// The source address caused more reviews than its rate allows; retry later.
    #[error("too many token reviews for this source address; retry later")]
    RateLimited,
    /// The token is not for this approver's audience.
    #[error("the token's audiences {found:?} do not include {expected:?}")]
    Audience {
        /// The token's audiences.
        found: Vec<String>,
        /// Ours.
        expected: String,
    },
    /// The API server did not authenticate the token.
    #[error("the API server did not authenticate the token: {0}")]
    Unauthenticated(String),
    /// The token belongs to another ServiceAccount.
    #[error("the token is {found:?}'s, not the agent ServiceAccount {expected:?}")]
    ServiceAccount {
        /// The review's username.
        found: String,
        /// The agent's.
        expected: String,
    },
    /// The token is not bound to a Pod (a plain or Secret-bound token).
    #[error("the token is not bound to a Pod (mount a projected ServiceAccount token)")]
    NotPodBound,
    /// The review carries no node claim (Kubernetes before 1.30, or the feature gate
    /// `ServiceAccountTokenPodNodeInfo` off).
    #[error(
        "the token review carries no node claim ({NODE_NAME_EXTRA}); the cluster needs Kubernetes 1.30+ or --identity kubelet-cert"
    )]
    NoNodeClaim,
    /// The node claim is not one valid node name.
    #[error("the token's node claim {0:?} is not one valid node name")]
    BadNodeClaim(Vec<String>),
    /// The bound Pod does not exist.
    #[error("the token's Pod {0} does not exist")]
    PodNotFound(String),
    /// A Pod of that name exists but is another one (recreated).
    #[error("the token's Pod {pod} has uid {found}, not the bound uid {expected}")]
    PodReplaced {
        /// The Pod.
        pod: String,
        /// Its uid now.
        found: String,
        /// The token's.
        expected: String,
    },
    /// The bound Pod is being deleted.
    #[error("the token's Pod {0} is being deleted")]
    PodTerminating(String),
    /// The bound Pod runs on another node than the token's node claim says.
    #[error("the token's Pod {pod} runs on node {found:?}, not on {claimed}")]
    PodOnOtherNode {
        /// The Pod.
        pod: String,
        /// Its `spec.nodeName`.
        found: Option<String>,
        /// The review's node claim.
        claimed: String,
    },
    /// The bound Pod is not controlled by the agent DaemonSet.
    #[error("the token's Pod {pod} is not controlled by DaemonSet {daemonset}")]
    NotAgentPod {
        /// The Pod.
        pod: String,
        /// The agent's DaemonSet.
        daemonset: String,
    },
    /// The review or the Pod read failed, or waited too long for a slot; retry.
    #[error("the token could not be reviewed now: {0}")]
    ReviewFailed(String),
}

impl TokenRefusal {
    /// A short label for the `reason` of the refused-streams metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed(_) => "token_malformed",
            Self::TooLarge => "token_too_large",
            Self::Expired(_) => "token_expired",
            Self::TooLong { .. } => "token_lifetime",
            Self::RateLimited => "token_review_rate_limited",
            Self::Audience { .. } => "token_audience",
            Self::Unauthenticated(_) => "token_unauthenticated",
            Self::ServiceAccount { .. } => "token_service_account",
            Self::NotPodBound => "token_not_pod_bound",
            Self::NoNodeClaim => "token_no_node_claim",
            Self::BadNodeClaim(_) => "token_bad_node_claim",
            Self::PodNotFound(_) => "token_pod_not_found",
            Self::PodReplaced { .. } => "token_pod_replaced",
            Self::PodTerminating(_) => "token_pod_terminating",
            Self::PodOnOtherNode { .. } => "token_pod_on_other_node",
            Self::NotAgentPod { .. } => "token_not_agent_pod",
            Self::ReviewFailed(_) => "token_review_failed",
        }
    }

    /// The gRPC status the agent gets: `unavailable` for what a retry may fix,
    /// `unauthenticated` for a token that is not valid, `permission_denied` for a valid
    /// token that does not make an agent of a node.
    pub fn status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            Self::ReviewFailed(_) | Self::RateLimited => tonic::Status::unavailable(message),
            Self::Missing
            | Self::Malformed(_)
            | Self::TooLarge
            | Self::Expired(_)
            | Self::TooLong { .. }
            | Self::Audience { .. }
            | Self::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            _ => tonic::Status::permission_denied(message),
        }
    }

    /// Whether the outcome may be remembered: what the token and the cluster's objects
    /// settle, not a failed review, a rate limit, or the API server's refusal (which may be
    /// a passing authenticator error; a forged token costs a review each time, which the
    /// per-source rate bounds).
    fn cacheable(&self) -> bool {
        !matches!(
            self,
            Self::ReviewFailed(_) | Self::RateLimited | Self::Unauthenticated(_)
        )
    }
}

/// What the token says about itself, unverified.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UnverifiedClaims {
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Audiences (a JWT allows one string or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many,
    })
}

/// The bearer token of an `authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, TokenRefusal> {
    let header = header.ok_or(TokenRefusal::Missing)?;
    let (scheme, token) = header
        .split_once(' ')
        .ok_or_else(|| TokenRefusal::Malformed("not \"Bearer <token>\"".to_owned()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenRefusal::Malformed(format!(
            "the scheme is {scheme:?}, not Bearer"
        )));
    }
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenRefusal::TooLarge);
    }
    if token.is_empty() {
        return Err(TokenRefusal::Missing);
    }
    Ok(token)
}

/// Reads the token's claims without verifying them and refuses what no review would
/// accept — not a JWT, expired at `now`, not for `audience` — and what this approver does
/// not accept: valid for longer than `max_lifetime`.
pub fn precheck(
    token: &str,
    audience: &str,
    now: SystemTime,
    max_lifetime: Duration,
) -> Result<UnverifiedClaims, TokenRefusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenRefusal::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRefusal::Malformed(
            "not a JWT (three dot-separated parts)".to_owned(),
        ));
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| TokenRefusal::Malformed(format!("payload is not base64url: {e}")))?;
    let claims: UnverifiedClaims = serde_json::from_slice(&json)
        .map_err(|e| TokenRefusal::Malformed(format!("payload is not JWT claims: {e}")))?;
    let Some(exp) = claims.exp else {
        return Err(TokenRefusal::Malformed(
            "no exp claim: only expiring (projected) tokens are accepted".to_owned(),
        ));
    };
    if exp <= unix_seconds(now) {
        return Err(TokenRefusal::Expired(exp));
    }
    if exp > unix_seconds(now).saturating_add(max_lifetime.as_secs()) {
        return Err(TokenRefusal::TooLong {
            exp,
            max: max_lifetime,
        });
    }
    if !claims.aud.iter().any(|a| a == audience) {
        return Err(TokenRefusal::Audience {
            found: claims.aud,
            expected: audience.to_owned(),
        });
    }
    Ok(claims)
}

/// Binds a review's answer and the bound Pod (as read after the review) to a node.
/// `pod` is `None` when the Pod does not exist.
pub fn bind(
    config: &TokenConfig,
    status: &TokenReviewStatus,
    pod: Option<&Pod>,
    expires_at: SystemTime,
) -> Result<TokenIdentity, TokenRefusal> {
    if status.authenticated != Some(true) {
        return Err(TokenRefusal::Unauthenticated(
            status
                .error
                .clone()
                .unwrap_or_else(|| "not authenticated".to_owned()),
        ));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.contains(&config.audience))
    {
        return Err(TokenRefusal::Audience {
            found: status.audiences.clone().unwrap_or_default(),
            expected: config.audience.clone(),
        });
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let expected = config.username();
    if username != expected {
        return Err(TokenRefusal::ServiceAccount {
            found: username,
            expected,
        });
    }
    let extra = user.extra.unwrap_or_default();
    let single = |key: &str| match extra.get(key).map(Vec::as_slice) {
        Some([one]) => Some(one.clone()),
        _ => None,
    };
    let (Some(pod_name), Some(pod_uid)) = (single(POD_NAME_EXTRA), single(POD_UID_EXTRA)) else {
        return Err(TokenRefusal::NotPodBound);
    };
    let node = match extra.get(NODE_NAME_EXTRA).map(Vec::as_slice) {
        None | Some([]) => return Err(TokenRefusal::NoNodeClaim),
        Some([one]) => one
            .parse::<NodeName>()
            .map_err(|_| TokenRefusal::BadNodeClaim(vec![one.clone()]))?,
        Some(many) => return Err(TokenRefusal::BadNodeClaim(many.to_vec())),
    };
    let qualified = format!("{}/{pod_name}", config.namespace);
    let pod = pod.ok_or_else(|| TokenRefusal::PodNotFound(qualified.clone()))?;
    let found_uid = pod.metadata.uid.clone().unwrap_or_default();
    if found_uid != pod_uid {
        return Err(TokenRefusal::PodReplaced {
            pod: qualified,
            found: found_uid,
            expected: pod_uid,
        });
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(TokenRefusal::PodTerminating(qualified));
    }
    let runs_on = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    if runs_on.as_deref() != Some(node.as_str()) {
        return Err(TokenRefusal::PodOnOtherNode {
            pod: qualified,
            found: runs_on,
            claimed: node.to_string(),
        });
    }
    let controlled = pod.metadata.owner_references.iter().flatten().any(|owner| {
        owner.controller == Some(true)
            && owner.kind == "DaemonSet"
            && owner.api_version == "apps/v1"
            && owner.name == config.daemonset
    });
    if !controlled {
        return Err(TokenRefusal::NotAgentPod {
            pod: qualified,
            daemonset: config.daemonset.clone(),
        });
    }
    Ok(TokenIdentity {
        node,
        pod: pod_name,
        credential: single(CREDENTIAL_ID_EXTRA).unwrap_or(pod_uid),
        expires_at,
    })
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Verifies tokens through the API server: bounded concurrency, a timeout, and a cache of
/// outcomes keyed by the token's SHA-256. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    client: kube::Client,
    config: TokenConfig,
    clock: Arc<dyn Clock>,
    permits: Semaphore,
    /// Accepted tokens, until they expire.
    accepted: Mutex<HashMap<[u8; 32], Cached>>,
    /// Refused tokens, for `refusal_ttl` (a separate, smaller map that strangers can fill
    /// without touching the agents' entries).
    refused: Mutex<HashMap<[u8; 32], Cached>>,
    sources: Mutex<SourceBuckets>,
    reviews: prometheus_client::metrics::counter::Counter,
}

/// Most refused tokens remembered.
const MAX_REFUSED_ENTRIES: usize = 4096;
/// Most source addresses whose review rate is tracked; past it a new source's first review
/// waits until an idle one's bucket is full again and is forgotten.
const MAX_SOURCES: usize = 65_536;

/// Token buckets of reviews per source address (IPv6 per /64).
#[derive(Debug, Default)]
struct SourceBuckets {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl SourceBuckets {
    fn allow(&mut self, source: IpAddr, burst: u32, interval: Duration, now: Instant) -> bool {
        let key = match source {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            IpAddr::V4(_) => source,
        };
        let burst = f64::from(burst.max(1));
        let per_second = 1.0 / interval.as_secs_f64().max(f64::EPSILON);
        let refill = |(tokens, last): (f64, Instant)| {
            (tokens + now.saturating_duration_since(last).as_secs_f64() * per_second).min(burst)
        };
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_SOURCES {
            self.buckets.retain(|_, bucket| refill(*bucket) < burst);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let bucket = self.buckets.entry(key).or_insert((burst, now));
        let tokens = refill(*bucket);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

#[derive(Clone, Debug)]
struct Cached {
    outcome: Result<TokenIdentity, TokenRefusal>,
    until: SystemTime,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier calling the API server through `client`; `reviews` counts the
    /// TokenReviews it sends; `clock` (the approver's) judges expiry.
    pub fn new(
        client: kube::Client,
        config: TokenConfig,
        reviews: prometheus_client::metrics::counter::Counter,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(VerifierInner {
                client,
                clock,
                permits: Semaphore::new(config.max_concurrent_reviews.max(1)),
                config,
                accepted: Mutex::default(),
                refused: Mutex::default(),
                sources: Mutex::default(),
                reviews,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TokenConfig {
        &self.inner.config
    }

    /// The approver's clock, as the expiry of tokens is judged.
    pub fn now(&self) -> SystemTime {
        SystemTime::from(self.inner.clock.now())
    }

    /// The node `token`, presented from `source`, speaks for: from the cache or a review.
    pub async fn verify(&self, token: &str, source: IpAddr) -> Result<TokenIdentity, TokenRefusal> {
        let config = &self.inner.config;
        let now = self.now();
        let claims = precheck(token, &config.audience, now, config.max_lifetime)?;
        let key = digest(token);
        if let Some(cached) = self.cached(&key, now) {
            return cached;
        }
        let allowed = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(
                source,
                config.source_burst,
                config.source_interval,
                Instant::now(),
            );
        if !allowed {
            return Err(TokenRefusal::RateLimited);
        }
        // Bounded by the precheck: at most `max_lifetime` from now.
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp.unwrap_or_default()))
            .ok_or_else(|| TokenRefusal::Malformed("exp is out of range".to_owned()))?;
        let review = async {
            let _permit = self
                .inner
                .permits
                .acquire()
                .await
                .map_err(|_| TokenRefusal::ReviewFailed("shutting down".to_owned()))?;
            // Another stream may have reviewed the same token while this one waited.
            if let Some(cached) = self.cached(&key, self.now()) {
                return cached;
            }
            self.review(token, expires_at).await
        };
        let outcome = tokio::time::timeout(config.review_timeout, review)
            .await
            .unwrap_or_else(|_| {
                Err(TokenRefusal::ReviewFailed(format!(
                    "no answer within {:?}",
                    config.review_timeout
                )))
            });
        self.remember(key, &outcome, expires_at);
        outcome
    }

    async fn review(
        &self,
        token: &str,
        expires_at: SystemTime,
    ) -> Result<TokenIdentity, TokenRefusal> {
        let config = &self.inner.config;
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![config.audience.clone()]),
            },
            ..TokenReview::default()
        };
        self.inner.reviews.inc();
        let reviewed = Api::<TokenReview>::all(self.inner.client.clone())
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| TokenRefusal::ReviewFailed(format!("TokenReview: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        // The Pod is read only for a token the API server authenticated as the agent's, so
        // that a stranger's token costs one call, not two.
        let pod_name = status
            .user
            .as_ref()
            .and_then(|u| u.extra.as_ref())
            .and_then(|extra| extra.get(POD_NAME_EXTRA))
            .and_then(|names| names.first())
            .filter(|_| {
                status.authenticated == Some(true)
                    && status.user.as_ref().and_then(|u| u.username.as_deref())
                        == Some(config.username().as_str())
            })
            .cloned();
        let pod = match pod_name {
            Some(name) => Api::<Pod>::namespaced(self.inner.client.clone(), &config.namespace)
                .get_opt(&name)
                .await
                .map_err(|e| TokenRefusal::ReviewFailed(format!("reading Pod {name}: {e}")))?,
            None => None,
        };
        bind(config, &status, pod.as_ref(), expires_at)
    }

    fn cached(
        &self,
        key: &[u8; 32],
        now: SystemTime,
    ) -> Option<Result<TokenIdentity, TokenRefusal>> {
        for map in [&self.inner.accepted, &self.inner.refused] {
            let map = map.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(cached) = map.get(key).filter(|cached| cached.until > now) {
                return Some(cached.outcome.clone());
            }
        }
        None
    }

    fn remember(
        &self,
        key: [u8; 32],
        outcome: &Result<TokenIdentity, TokenRefusal>,
        expires_at: SystemTime,
    ) {
        let now = self.now();
        let (map, until, capacity) = match outcome {
            Ok(_) => (
                &self.inner.accepted,
                expires_at,
                self.inner.config.cache_entries,
            ),
            Err(refusal) if refusal.cacheable() => (
                &self.inner.refused,
                (now + self.inner.config.refusal_ttl).min(expires_at),
                MAX_REFUSED_ENTRIES,
            ),
            Err(_) => return,
        };
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        // Full: drop what expired, then (rarely: more live tokens than entries) the entry
        // that would expire first.
        if map.len() >= capacity {
            map.retain(|_, cached| cached.until > now);
        }
        while map.len() >= capacity.max(1) {
            let Some(soonest) = map
                .iter()
                .min_by_key(|(_, cached)| cached.until)
                .map(|(key, _)| *key)
            else {
                break;
            };
            map.remove(&soonest);
        }
        map.insert(
            key,
            Cached {
                outcome: outcome.clone(),
                until,
            },
        );
    }
}

fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    use super::*;

    fn config() -> TokenConfig {
        TokenConfig {
            audience: "rubber-stamp".to_owned(),
            namespace: "rubber-stamp".to_owned(),
            service_account: "rubber-stamp-agent".to_owned(),
            daemonset: "rubber-stamp-agent".to_owned(),
            max_concurrent_reviews: 4,
            review_timeout: Duration::from_secs(1),
            cache_entries: 8,
            refusal_ttl: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(86_400),
            source_burst: 2,
            source_interval: Duration::from_secs(1),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn jwt(payload: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"ES256","kid":"k"}"#),
            b64(payload.to_string().as_bytes()),
            b64(b"sig")
        )
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn review(extra: &[(&str, &[&str])]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec!["rubber-stamp".to_owned()]),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:rubber-stamp:rubber-stamp-agent".to_owned()),
                uid: Some("sa-uid".to_owned()),
                groups: Some(vec!["system:serviceaccounts".to_owned()]),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| {
                            ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect())
                        })
                        .collect::<BTreeMap<_, _>>(),
                ),
            }),
            error: None,
        }
    }

    fn honest_review() -> TokenReviewStatus {
        review(&[
            (POD_NAME_EXTRA, &["agent-abc"]),
            (POD_UID_EXTRA, &["pod-uid"]),
            (NODE_NAME_EXTRA, &["worker-1"]),
            (CREDENTIAL_ID_EXTRA, &["JTI=1234"]),
        ])
    }

    fn agent_pod(node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("agent-abc".to_owned()),
                namespace: Some("rubber-stamp".to_owned()),
                uid: Some("pod-uid".to_owned()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "DaemonSet".to_owned(),
                    name: "rubber-stamp-agent".to_owned(),
                    uid: "ds-uid".to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(TokenRefusal::Missing));
        assert_eq!(bearer(Some("Bearer ")), Err(TokenRefusal::Missing));
        assert!(matches!(
            bearer(Some("Basic dXNlcg==")),
            Err(TokenRefusal::Malformed(_))
        ));
        assert!(matches!(
            bearer(Some("abc")),
            Err(TokenRefusal::Malformed(_))
        ));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer(Some(&long)), Err(TokenRefusal::TooLarge));
    }

    #[test]
    fn the_precheck_refuses_what_no_review_would_accept() {
        let now = at(1_000);
        let good = jwt(&serde_json::json!({"exp": 2_000, "aud": ["rubber-stamp", "x"]}));
        assert_eq!(
            precheck(&good, "rubber-stamp", now, DAY).map(|c| c.exp),
            Ok(Some(2_000))
        );
        let single = jwt(&serde_json::json!({"exp": 2_000, "aud": "rubber-stamp"}));
        assert!(
            precheck(&single, "rubber-stamp", now, DAY).is_ok(),
            "aud may be one string"
        );
        let expired = jwt(&serde_json::json!({"exp": 1_000, "aud": ["rubber-stamp"]}));
        assert_eq!(
            precheck(&expired, "rubber-stamp", now, DAY).map(|_| ()),
            Err(TokenRefusal::Expired(1_000))
        );
        let api = jwt(
            &serde_json::json!({"exp": 2_000, "aud": ["https://kubernetes.default.svc.cluster.local"]}),
        );
        assert!(matches!(
            precheck(&api, "rubber-stamp", now, DAY),
            Err(TokenRefusal::Audience { .. })
        ));
        let forever = jwt(&serde_json::json!({"aud": ["rubber-stamp"]}));
        assert!(matches!(
            precheck(&forever, "rubber-stamp", now, DAY),
            Err(TokenRefusal::Malformed(m)) if m.contains("exp")
        ));
        // A forged exp far in the future is refused before anything adds to it.
        for exp in [u64::MAX, 1_000 + 86_401] {
            let far = jwt(&serde_json::json!({"exp": exp, "aud": ["rubber-stamp"]}));
            assert!(matches!(
                precheck(&far, "rubber-stamp", now, DAY),
                Err(TokenRefusal::TooLong { .. })
            ));
        }
        let day = jwt(&serde_json::json!({"exp": 1_000 + 86_400, "aud": ["rubber-stamp"]}));
        assert!(precheck(&day, "rubber-stamp", now, DAY).is_ok());
        for bad in ["abc", "a.b", "a.b.c.d", "a.!!!.c", "a.e30K.c"] {
            assert!(
                matches!(
                    precheck(bad, "rubber-stamp", now, DAY),
                    Err(TokenRefusal::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_honest_review_binds_the_token_to_its_pods_node() {
        let expires = at(5_000);
        let identity = bind(
            &config(),
            &honest_review(),
            Some(&agent_pod("worker-1")),
            expires,
        )
        .expect("bound");
        assert_eq!(identity.node.as_str(), "worker-1");
        assert_eq!(identity.pod, "agent-abc");
        assert_eq!(identity.credential, "JTI=1234");
        assert_eq!(identity.expires_at, expires);
    }

    #[test]
    fn every_refusal_has_its_own_label() {
        let c = config();
        let pod = agent_pod("worker-1");
        let expires = at(5_000);
        let refused = |status: &TokenReviewStatus, pod: Option<&Pod>| {
            bind(&c, status, pod, expires).expect_err("refused")
        };

        let mut unauthenticated = honest_review();
        unauthenticated.authenticated = None;
        unauthenticated.error = Some("pod \"agent-abc\" not found".to_owned());
        assert_eq!(
            refused(&unauthenticated, Some(&pod)).metric_label(),
            "token_unauthenticated"
        );

        let mut audience = honest_review();
        audience.audiences = Some(vec!["other".to_owned()]);
        assert_eq!(
            refused(&audience, Some(&pod)).metric_label(),
            "token_audience"
        );

        let mut other_sa = honest_review();
        if let Some(user) = other_sa.user.as_mut() {
            user.username = Some("system:serviceaccount:rubber-stamp:default".to_owned());
        }
        assert_eq!(
            refused(&other_sa, Some(&pod)).metric_label(),
            "token_service_account"
        );

        let unbound = review(&[(NODE_NAME_EXTRA, &["worker-1"])]);
        assert_eq!(
            refused(&unbound, Some(&pod)).metric_label(),
            "token_not_pod_bound"
        );

        let no_node = review(&[
            (POD_NAME_EXTRA, &["agent-abc"]),
            (POD_UID_EXTRA, &["pod-uid"]),
        ]);
        assert_eq!(
            refused(&no_node, Some(&pod)).metric_label(),
            "token_no_node_claim"
        );
        let two_nodes = review(&[
            (POD_NAME_EXTRA, &["agent-abc"]),
            (POD_UID_EXTRA, &["pod-uid"]),
            (NODE_NAME_EXTRA, &["worker-1", "worker-2"]),
        ]);
        assert_eq!(
            refused(&two_nodes, Some(&pod)).metric_label(),
            "token_bad_node_claim"
        );
        let bad_node = review(&[
            (POD_NAME_EXTRA, &["agent-abc"]),
            (POD_UID_EXTRA, &["pod-uid"]),
            (NODE_NAME_EXTRA, &["Not_A_Node"]),
        ]);
        assert_eq!(
            refused(&bad_node, Some(&pod)).metric_label(),
            "token_bad_node_claim"
        );

        assert_eq!(
            refused(&honest_review(), None).metric_label(),
            "token_pod_not_found"
        );
        let mut replaced = pod.clone();
        replaced.metadata.uid = Some("new-uid".to_owned());
        assert_eq!(
            refused(&honest_review(), Some(&replaced)).metric_label(),
            "token_pod_replaced"
        );
        let mut terminating = pod.clone();
        terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            refused(&honest_review(), Some(&terminating)).metric_label(),
            "token_pod_terminating"
        );
        assert_eq!(
            refused(&honest_review(), Some(&agent_pod("worker-2"))).metric_label(),
            "token_pod_on_other_node"
        );
        let mut stray = pod.clone();
        stray.metadata.owner_references = None;
        assert_eq!(
            refused(&honest_review(), Some(&stray)).metric_label(),
            "token_not_agent_pod"
        );
        let mut impostor = pod;
        if let Some(owner) = impostor
            .metadata
            .owner_references
            .as_mut()
            .and_then(|o| o.first_mut())
        {
            owner.name = "something-else".to_owned();
        }
        assert_eq!(
            refused(&honest_review(), Some(&impostor)).metric_label(),
            "token_not_agent_pod"
        );
    }

    #[test]
    fn reviews_per_source_are_rate_limited_with_ipv6_per_64() {
        let mut buckets = SourceBuckets::default();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(buckets.allow(a, 2, second, start));
        assert!(buckets.allow(a, 2, second, start));
        assert!(!buckets.allow(a, 2, second, start), "the burst is spent");
        assert!(buckets.allow("10.0.0.2".parse().expect("ip"), 2, second, start));
        assert!(buckets.allow(a, 2, second, start + second), "refilled one");
        assert!(!buckets.allow(a, 2, second, start + second));
        // One /64 is one source; the mapped form of an IPv4 address is that address.
        let v6 = |s: &str| -> IpAddr { s.parse().expect("ip") };
        assert!(buckets.allow(v6("2001:db8::1"), 2, second, start));
        assert!(buckets.allow(v6("2001:db8::ffff:1"), 2, second, start));
        assert!(!buckets.allow(v6("2001:db8::2:3"), 2, second, start));
        assert!(buckets.allow(v6("2001:db8:0:1::1"), 2, second, start));
        assert!(!buckets.allow(v6("::ffff:10.0.0.1"), 2, second, start));
    }

    #[test]
    fn statuses_say_whether_a_retry_can_help() {
        assert_eq!(
            TokenRefusal::ReviewFailed("x".into()).status().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            TokenRefusal::Expired(1).status().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            TokenRefusal::PodNotFound("p".into()).status().code(),
            tonic::Code::PermissionDenied
        );
    }
}
