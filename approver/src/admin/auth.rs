//! Who may read the admin port: a bearer token the API server authenticates (TokenReview)
//! for a user it authorizes (SubjectAccessReview on the request's path, verb `get`) — the
//! delegated authentication and authorization of kube-rbac-proxy and controller-runtime's
//! secure metrics.
//!
//! The permissions are non-resource URLs, so plain RBAC grants them: `/metrics` to scrapers
//! (the `rubber-stamp:metrics-reader` ClusterRole in `deploy/`), `/attestations` and
//! `/streams` — every node's addresses and machine-id — to those who may read what the
//! approver knows (`rubber-stamp:attestation-reader`).
//!
//! Answers are cached by a digest of the token and the path: allowed for
//! [`AdminAuthConfig::allowed_ttl`], refused for [`DENIED_TTL`], in two maps of
//! [`MAX_CACHED_ANSWERS`] each, so that a flood of made-up tokens cannot push out the
//! scraper's allowed answer; failed reviews are never cached. Only the routes' paths are
//! reviewed (any other is 404 first). Reviews are bounded: [`AdminAuthConfig::max_concurrent_reviews`] in flight, each
//! within [`AdminAuthConfig::review_timeout`], and tokens longer than [`MAX_TOKEN_BYTES`]
//! are refused unread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rubber_stamp_listen::Throttle;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::metrics::ResultLabel;

/// Longest bearer token read (kube-apiserver's own limit is larger, but no ServiceAccount
/// or OIDC token comes near it).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most cached answers of each kind (allowed, refused); when a map is full, its expired
/// answers go, then all of it (a flood of distinct tokens costs reviews, never memory, and
/// never the allowed answers).
pub const MAX_CACHED_ANSWERS: usize = 1024;
/// How long a refusal (unauthenticated or forbidden) is reused.
pub const DENIED_TTL: Duration = Duration::from_secs(10);

/// How the admin port checks its callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAuthConfig {
    /// How long an allowed (token, path) is reused without asking the API server again.
    pub allowed_ttl: Duration,
    /// Most TokenReview + SubjectAccessReview pairs in flight at once.
    pub max_concurrent_reviews: usize,
    /// Longest a request waits for a review slot and the reviews.
    pub review_timeout: Duration,
}

impl Default for AdminAuthConfig {
    fn default() -> Self {
        Self {
            allowed_ttl: Duration::from_secs(60),
            max_concurrent_reviews: 8,
            review_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether the admin port is TLS with delegated authentication and authorization, or
/// plain HTTP open to anyone who can connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminSecurity {
    /// HTTPS; every request needs a token the API server authenticates and authorizes.
    Kubernetes(AdminAuthConfig),
    /// Plain HTTP without authentication (`--admin-secure=false`): only behind a network
    /// boundary the operator controls.
    Open,
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and authorized: the user's name, for the log.
    Allowed(String),
    /// No token, an unreadable one, or one the API server does not authenticate.
    Unauthenticated(&'static str),
    /// Authenticated, not authorized for this path.
    Forbidden(String),
    /// A review failed (API unreachable, timeout, RBAC of the approver itself).
    Unavailable(String),
}

impl Verdict {
    fn label(&self) -> &'static str {
        match self {
            Self::Allowed(_) => "allowed",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Unavailable(_) => "unavailable",
        }
    }

    fn cache_ttl(&self, allowed_ttl: Duration) -> Option<Duration> {
        match self {
            Self::Allowed(_) => Some(allowed_ttl),
            Self::Unauthenticated(_) | Self::Forbidden(_) => Some(DENIED_TTL),
            Self::Unavailable(_) => None,
        }
    }
}

/// The bearer token of an `Authorization` header, if it carries one.
pub fn bearer(value: &HeaderValue) -> Result<&str, &'static str> {
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err("token too long");
    }
    let value = value
        .to_str()
        .map_err(|_| "unreadable authorization header")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("authorization header without a scheme")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("authorization scheme is not Bearer");
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("empty bearer token");
    }
    Ok(token)
}

/// Delegated authentication and authorization through the API server, with a bounded cache.
#[derive(Clone)]
pub struct AdminAuth {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    config: AdminAuthConfig,
    slots: Semaphore,
    allowed: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
    refused: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
    unavailable_log: Mutex<Throttle>,
    requests: Family<ResultLabel, Counter>,
    reviews: Counter,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// Checks callers through `client`, counting answers in `requests` (by result) and
    /// the reviews sent in `reviews`.
    pub fn new(
        client: kube::Client,
        config: AdminAuthConfig,
        requests: Family<ResultLabel, Counter>,
        reviews: Counter,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                slots: Semaphore::new(config.max_concurrent_reviews.max(1)),
                config,
                allowed: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashMap::new()),
                unavailable_log: Mutex::new(Throttle::new(Duration::from_secs(5))),
                requests,
                reviews,
            }),
        }
    }

    /// Whether `token` may `get` `path`.
    pub async fn check(&self, token: &str, path: &str) -> Verdict {
        let key = digest(token, path);
        let now = Instant::now();
        let cached = [&self.inner.allowed, &self.inner.refused]
            .into_iter()
            .find_map(|map| {
                map.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&key)
                    .filter(|(_, until)| *until > now)
                    .map(|(verdict, _)| verdict.clone())
            });
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let timeout = self.inner.config.review_timeout;
                let reviewed = tokio::time::timeout(timeout, async {
                    let Ok(_slot) = self.inner.slots.acquire().await else {
                        return Verdict::Unavailable("shutting down".to_owned());
                    };
                    self.review(token, path).await
                })
                .await
                .unwrap_or_else(|_| Verdict::Unavailable(format!("no answer within {timeout:?}")));
                self.remember(key, &reviewed);
                reviewed
            }
        };
        self.inner
            .requests
            .get_or_create(&ResultLabel {
                result: verdict.label(),
            })
            .inc();
        verdict
    }

    async fn review(&self, token: &str, path: &str) -> Verdict {
        self.inner.reviews.inc();
        let client = &self.inner.client;
        // No audiences: the API server's own, as for any client of the API.
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = match Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &request)
            .await
        {
            Ok(reviewed) => reviewed.status.unwrap_or_default(),
            Err(e) => return Verdict::Unavailable(format!("TokenReview: {e}")),
        };
        let user = match (reviewed.authenticated, reviewed.user) {
            (Some(true), Some(user)) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => {
                user
            }
            _ => return Verdict::Unauthenticated("the API server did not authenticate the token"),
        };
        let UserInfo {
            username,
            uid,
            groups,
            extra,
        } = user;
        let username = username.unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(username.clone()),
                uid,
                groups,
                extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some("get".to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        match Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &access)
            .await
        {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {
                Verdict::Allowed(username)
            }
            Ok(_) => Verdict::Forbidden(username),
            Err(e) => Verdict::Unavailable(format!("SubjectAccessReview: {e}")),
        }
    }

    fn remember(&self, key: [u8; 32], verdict: &Verdict) {
        let Some(ttl) = verdict.cache_ttl(self.inner.config.allowed_ttl) else {
            return;
        };
        let now = Instant::now();
        let map = match verdict {
            Verdict::Allowed(_) => &self.inner.allowed,
            _ => &self.inner.refused,
        };
        let mut cache = map.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_ANSWERS {
            cache.retain(|_, (_, until)| *until > now);
        }
        if cache.len() >= MAX_CACHED_ANSWERS {
            cache.clear();
        }
        cache.insert(key, (verdict.clone(), now + ttl));
    }
}

fn digest(token: &str, path: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(token.as_bytes());
    // A separator no token contains, so (token, path) pairs cannot collide by shifting.
    context.update(b"\0");
    context.update(path.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// The middleware: 401 without an authenticated token, 403 without the permission, 503
/// when the API server cannot answer; the request goes on otherwise.
pub async fn guard(State(auth): State<AdminAuth>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let token = match request.headers().get(header::AUTHORIZATION).map(bearer) {
        Some(Ok(token)) => token.to_owned(),
        Some(Err(why)) => return unauthenticated(why),
        None => return unauthenticated("no bearer token"),
    };
    match auth.check(&token, &path).await {
        Verdict::Allowed(_) => next.run(request).await,
        Verdict::Unauthenticated(why) => unauthenticated(why),
        Verdict::Forbidden(user) => (
            StatusCode::FORBIDDEN,
            format!("{user} may not get {path} (a ClusterRole with nonResourceURLs [\"{path}\"] and verb get grants it)\n"),
        )
            .into_response(),
        Verdict::Unavailable(error) => {
            let admitted = auth
                .inner
                .unavailable_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(Instant::now());
            if let Some(held_back) = admitted {
                tracing::warn!(%error, %path, held_back, "cannot review an admin request");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the API server could not review the request; try again\n",
            )
                .into_response()
        }
    }
}

fn unauthenticated(why: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        format!("Unauthorized: {why}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let header = |s: &str| HeaderValue::from_str(s).expect("header");
        assert_eq!(bearer(&header("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(&header("bearer abc")), Ok("abc"));
        assert!(bearer(&header("Basic abc")).is_err());
        assert!(bearer(&header("Bearer ")).is_err());
        assert!(bearer(&header("abc")).is_err());
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer(&header(&long)), Err("token too long"));
    }

    #[test]
    fn the_digest_separates_token_and_path() {
        assert_ne!(digest("ab", "/c"), digest("a", "b/c"));
        assert_ne!(digest("t", "/metrics"), digest("t", "/attestations"));
        assert_eq!(digest("t", "/metrics"), digest("t", "/metrics"));
    }

    #[test]
    fn only_answers_are_cached() {
        let ttl = Duration::from_secs(60);
        assert_eq!(Verdict::Allowed("u".into()).cache_ttl(ttl), Some(ttl));
        assert_eq!(
            Verdict::Forbidden("u".into()).cache_ttl(ttl),
            Some(DENIED_TTL)
        );
        assert_eq!(
            Verdict::Unauthenticated("x").cache_ttl(ttl),
            Some(DENIED_TTL)
        );
        assert_eq!(Verdict::Unavailable("x".into()).cache_ttl(ttl), None);
    }
}
