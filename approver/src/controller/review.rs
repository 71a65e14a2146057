//! Check 14: a SubjectAccessReview asking whether the CSR's requestor (username, uid,
//! groups, extra) may `create` `certificates.k8s.io/certificatesigningrequests`, subresource
//! `selfnodeserver`. Allowed answers are reused for a short while per requestor, in a
//! bounded cache; refusals are not, so a fixed binding takes effect at the next decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use crate::metrics::ControllerMetrics;
use rubber_stamp_core::{AccessReview, CsrInput};

/// Most requestors whose answer is kept.
pub(crate) const MAX_CACHED_REVIEWS: usize = 16_384;

/// The API group of CertificateSigningRequests.
const CSR_GROUP: &str = "certificates.k8s.io";

/// Check 14's SubjectAccessReview: may `csr`'s requestor (username, uid, groups, extra)
/// `create` `certificatesigningrequests/selfnodeserver`? Shared with `kubectl rubber-stamp
/// explain`, so that both ask the same question.
pub fn selfnodeserver_review(csr: &CsrInput) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(csr.username.clone()),
            uid: (!csr.uid.is_empty()).then(|| csr.uid.clone()),
            groups: Some(csr.groups.clone()),
            extra: (!csr.extra.is_empty()).then(|| csr.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(CSR_GROUP.to_owned()),
                resource: Some("certificatesigningrequests".to_owned()),
                subresource: Some("selfnodeserver".to_owned()),
                verb: Some("create".to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Check 14's verdict and detail from the review's answer for `user`: allowed only when
/// allowed and not explicitly denied; the detail says what to grant when it is not.
pub fn selfnodeserver_answer(user: &str, status: SubjectAccessReviewStatus) -> (bool, String) {
    let allowed = status.allowed && status.denied != Some(true);
    let because = [status.reason, status.evaluation_error]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let because = if because.is_empty() {
        String::new()
    } else {
        format!(" ({because})")
    };
    let detail = if allowed {
        format!("{user} may create certificatesigningrequests/selfnodeserver{because}")
    } else {
        format!(
            "{user} may not create certificatesigningrequests/selfnodeserver (SubjectAccessReview){because}; grant it, e.g. with the rubber-stamp:selfnodeserver ClusterRole bound to system:nodes"
        )
    };
    (allowed, detail)
}

/// Everything a review is asked about: the same requestor always gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Requestor {
    user: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug)]
struct Answer {
    allowed: bool,
    detail: String,
    at: Instant,
}

/// SubjectAccessReviews with a short-lived cache.
#[derive(Debug)]
pub(crate) struct AccessReviews {
    api: Api<SubjectAccessReview>,
    ttl: Duration,
    cache: Mutex<HashMap<Requestor, Answer>>,
}

// === impl AccessReviews ===

impl AccessReviews {
    /// Reviews through `api`, reusing answers for `ttl` (zero: never).
    pub(crate) fn new(api: Api<SubjectAccessReview>, ttl: Duration) -> Self {
        Self {
            api,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// May the CSR's requestor create `certificatesigningrequests/selfnodeserver`? Returns
    /// the answer and a plain-words detail for check 14.
    pub(crate) async fn selfnodeserver(
        &self,
        csr: &CsrInput,
        metrics: &ControllerMetrics,
    ) -> Result<AccessReview, kube::Error> {
        let requestor = Requestor {
            user: csr.username.clone(),
            uid: csr.uid.clone(),
            groups: csr.groups.clone(),
            extra: csr.extra.clone(),
        };
        if let Some(answer) = self.cached(&requestor) {
            metrics.access_review("cached");
            return Ok(access_review(answer.allowed, answer.detail));
        }
        let review = selfnodeserver_review(csr);
        let answered = match self.api.create(&PostParams::default(), &review).await {
            Ok(answered) => answered,
            Err(error) => {
                metrics.access_review("error");
                return Err(error);
            }
        };
        let (allowed, detail) =
            selfnodeserver_answer(&requestor.user, answered.status.unwrap_or_default());
        metrics.access_review(if allowed { "allowed" } else { "denied" });
        if allowed {
            self.remember(requestor, &detail);
        }
        Ok(access_review(allowed, detail))
    }

    fn cached(&self, requestor: &Requestor) -> Option<Answer> {
        if self.ttl.is_zero() {
            return None;
        }
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(requestor)
            .filter(|a| a.at.elapsed() < self.ttl)
            .cloned()
    }

    fn remember(&self, requestor: Requestor, detail: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_REVIEWS {
            let ttl = self.ttl;
            cache.retain(|_, a| a.at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED_REVIEWS {
                cache.clear();
            }
        }
        cache.insert(
            requestor,
            Answer {
                allowed: true,
                detail: detail.to_owned(),
                at: Instant::now(),
            },
        );
    }
}
/// The core's check 14 input for an answer.
fn access_review(allowed: bool, detail: String) -> AccessReview {
    if allowed {
        AccessReview::Allowed(detail)
    } else {
        AccessReview::Refused(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_say_what_to_grant() {
        let status = |allowed, denied, reason: &str| SubjectAccessReviewStatus {
            allowed,
            denied,
            reason: Some(reason.to_owned()),
            ..SubjectAccessReviewStatus::default()
        };
        assert_eq!(
            selfnodeserver_answer("system:node:a", status(true, None, "")),
            (
                true,
                "system:node:a may create certificatesigningrequests/selfnodeserver".to_owned()
            )
        );
        let (allowed, detail) = selfnodeserver_answer(
            "system:node:a",
            status(false, None, "no RBAC policy matched"),
        );
        assert!(!allowed);
        assert!(
            detail.contains("(SubjectAccessReview) (no RBAC policy matched); grant it"),
            "{detail}"
        );
        // An explicit denial wins over an allow.
        assert!(!selfnodeserver_answer("u", status(true, Some(true), "")).0);
    }
}
