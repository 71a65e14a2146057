//! Fault injection from test code: dropped watch streams, forced `410 Gone`,
//! 429/500/409 answers for a count or a seeded fraction of matching requests,
//! added latency, and stale reads (a kind's lists and watches served from an older
//! snapshot until the "cache" catches up). Deterministic for a given seed and request order.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use tokio::sync::watch;

use super::resources::{ResourceId, ResourceKind};
use super::status::ApiError;
use super::store::{ListPage, ObjectKey, StoredObject};
use super::versions::storage_of;

/// What an injected fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// 429 TooManyRequests with `Retry-After`.
    TooManyRequests {
        /// Seconds in `Retry-After`.
        retry_after_secs: u32,
    },
    /// 500 InternalError.
    InternalError,
    /// 409 Conflict, as for a stale resourceVersion.
    Conflict,
}

/// How many matching requests a rule hits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// The next `n`.
    Times(u32),
    /// Each with this probability (seeded RNG), until cleared.
    Fraction(f64),
}

/// Which requests a rule applies to; unset fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// Verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`).
    pub verb: Option<String>,
    /// Resource (plural).
    pub resource: Option<String>,
    /// Subresource (`status`, `approval`).
    pub subresource: Option<String>,
    /// Object name.
    pub name: Option<String>,
}

/// One fault rule.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// The answer.
    pub action: FaultAction,
    /// The requests.
    pub matching: RequestMatch,
    /// How many.
    pub budget: Budget,
}

// === impl FaultRule ===

impl FaultRule {
    /// A rule that hits the next matching request once.
    pub fn new(action: FaultAction) -> Self {
        Self {
            action,
            matching: RequestMatch::default(),
            budget: Budget::Times(1),
        }
    }

    /// Hits the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.budget = Budget::Times(n);
        self
    }

    /// Hits each matching request with probability `p`.
    pub fn fraction(mut self, p: f64) -> Self {
        self.budget = Budget::Fraction(p.clamp(0.0, 1.0));
        self
    }

    /// Only this verb.
    pub fn verb(mut self, verb: &str) -> Self {
        self.matching.verb = Some(verb.to_owned());
        self
    }

    /// Only this resource (plural).
    pub fn resource(mut self, resource: &str) -> Self {
        self.matching.resource = Some(resource.to_owned());
        self
    }

    /// Only this subresource.
    pub fn subresource(mut self, subresource: &str) -> Self {
        self.matching.subresource = Some(subresource.to_owned());
        self
    }

    /// Only this object.
    pub fn name(mut self, name: &str) -> Self {
        self.matching.name = Some(name.to_owned());
        self
    }
}

/// The request facts a rule is matched against.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Verb.
    pub verb: &'a str,
    /// Kind.
    pub kind: &'a ResourceKind,
    /// Subresource or empty.
    pub subresource: &'a str,
    /// Name or empty.
    pub name: &'a str,
}

/// A kind as it was at one resourceVersion, served in place of the current state: what a
/// watch cache that fell behind etcd (after an API server restart, or one HA replica
/// lagging another) answers. kube-apiserver serves only `resourceVersion=0` lists from its
/// cache; the fault applies to every list and watch of the kind, so that a product test
/// can put a stale view in front of a client that asks for the latest.
#[derive(Debug)]
pub struct StaleView {
    /// The resourceVersion of the snapshot.
    pub rv: u64,
    /// The objects then, in key order.
    pub objects: Vec<(ObjectKey, Arc<StoredObject>)>,
}

impl StaleView {
    /// The snapshot's objects as kind `id` serves them (one view serves every version of a
    /// resource, as one watch cache does).
    pub fn objects_as(&self, id: ResourceId) -> Vec<(ObjectKey, Arc<StoredObject>)> {
        self.objects
            .iter()
            .map(|(k, o)| (k.clone(), o.version(id)))
            .collect()
    }

    /// The snapshot's objects as kind `id` serves them, in a namespace (all when `None`),
    /// that pass `pred`, as one page at the snapshot's resourceVersion.
    pub fn page(
        &self,
        id: ResourceId,
        namespace: Option<&str>,
        pred: impl Fn(&ObjectKey, &StoredObject) -> bool,
    ) -> ListPage {
        let items = self
            .objects
            .iter()
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, o)| (k, o.version(id)))
            .filter(|(k, o)| pred(k, o))
            .map(|(_, o)| o)
            .collect();
        ListPage {
            items,
            rv: self.rv,
            next: None,
            remaining: 0,
        }
    }
}

#[derive(Debug)]
struct FaultState {
    rng: StdRng,
    rules: Vec<FaultRule>,
    expire_watches: u32,
    latency: Duration,
    injected: u64,
    stale: Vec<(ResourceId, Arc<StaleView>)>,
}

/// The fault handle of a cluster.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<FaultState>,
    drop_tx: watch::Sender<u64>,
    caught_up_tx: watch::Sender<u64>,
}

fn matches(m: &RequestMatch, f: &RequestFacts<'_>) -> bool {
    m.verb.as_deref().is_none_or(|v| v == f.verb)
        && m.resource.as_deref().is_none_or(|r| r == f.kind.plural)
        && m.subresource.as_deref().is_none_or(|s| s == f.subresource)
        && m.name.as_deref().is_none_or(|n| n == f.name)
}

// === impl Faults ===

impl Faults {
    /// No faults; `seed` drives fractional rules.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(FaultState {
                rng: StdRng::seed_from_u64(seed),
                rules: Vec::new(),
                expire_watches: 0,
                latency: Duration::ZERO,
                injected: 0,
                stale: Vec::new(),
            }),
            drop_tx: watch::channel(0).0,
            caught_up_tx: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Adds a rule (rules are tried in the order added).
    pub fn inject(&self, rule: FaultRule) {
        self.lock().rules.push(rule);
    }

    /// Makes the next update (PUT or PATCH) of one object fail with 409 Conflict.
    pub fn conflict_next_update(&self, resource: &str, name: &str) {
        for verb in ["update", "patch"] {
            self.inject(
                FaultRule::new(FaultAction::Conflict)
                    .verb(verb)
                    .resource(resource)
                    .name(name),
            );
        }
    }

    /// Removes every rule, pending watch expiry, latency and stale view.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.expire_watches = 0;
        s.latency = Duration::ZERO;
        s.stale.clear();
        drop(s);
        self.caught_up_tx.send_modify(|g| *g += 1);
    }

    /// Serves a resource's lists and watches — through every version it is served in —
    /// from `view` (objects in storage form) until [`Faults::catch_up`]: lists answer the
    /// snapshot at its resourceVersion, watches hold back every change after it (open
    /// watches too), as a lagging watch cache does. Use
    /// [`crate::Objects::serve_stale_reads`] to take the snapshot.
    pub fn serve_stale(&self, id: ResourceId, view: StaleView) {
        let storage = storage_of(id);
        let mut s = self.lock();
        s.stale.retain(|(k, _)| *k != storage);
        s.stale.push((storage, Arc::new(view)));
        drop(s);
        // A held watch re-checks what the new view lets through.
        self.caught_up_tx.send_modify(|g| *g += 1);
    }

    /// The cache of this resource has caught up: lists are current again and held watch
    /// events flow.
    pub fn catch_up(&self, id: ResourceId) {
        let storage = storage_of(id);
        self.lock().stale.retain(|(k, _)| *k != storage);
        self.caught_up_tx.send_modify(|g| *g += 1);
    }

    /// The stale view a kind is served from, if any.
    pub(crate) fn stale_view(&self, id: ResourceId) -> Option<Arc<StaleView>> {
        let storage = storage_of(id);
        let s = self.lock();
        s.stale
            .iter()
            .find(|(k, _)| *k == storage)
            .map(|(_, v)| v.clone())
    }

    /// Changes whenever a stale view starts or ends.
    pub(crate) fn caught_up_signal(&self) -> watch::Receiver<u64> {
        self.caught_up_tx.subscribe()
    }

    /// Ends every open watch stream abruptly, as a dropped connection would.
    pub fn drop_watches(&self) {
        self.drop_tx.send_modify(|g| *g += 1);
    }

    /// The next watch request gets a `410 Gone` (reason Expired) error event.
    pub fn expire_next_watch(&self) {
        self.lock().expire_watches += 1;
    }

    /// Adds this latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// How many requests got an injected error so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub(crate) fn take_expired_watch(&self) -> bool {
        let mut s = self.lock();
        if s.expire_watches > 0 {
            s.expire_watches -= 1;
            s.injected += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_tx.subscribe()
    }

    /// The injected error for this request, if a rule hits it.
    pub(crate) fn check(&self, facts: &RequestFacts<'_>) -> Option<ApiError> {
        let mut s = self.lock();
        let mut hit = None;
        let FaultState { rng, rules, .. } = &mut *s;
        for (i, rule) in rules.iter_mut().enumerate() {
            if !matches(&rule.matching, facts) {
                continue;
            }
            let fire = match &mut rule.budget {
                Budget::Times(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                Budget::Times(_) => false,
                Budget::Fraction(p) => rng.random_bool(*p),
            };
            if fire {
                hit = Some((i, rule.action));
                break;
            }
        }
        s.rules.retain(|r| r.budget != Budget::Times(0));
        let (_, action) = hit?;
        s.injected += 1;
        Some(match action {
            FaultAction::TooManyRequests { retry_after_secs } => {
                ApiError::too_many_requests(retry_after_secs)
            }
            FaultAction::InternalError => ApiError::internal("injected fault"),
            FaultAction::Conflict => ApiError::conflict(facts.kind, facts.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ids, kind};

    fn facts(verb: &'static str, name: &'static str) -> RequestFacts<'static> {
        RequestFacts {
            verb,
            kind: kind(ids::csrs()),
            subresource: "",
            name,
        }
    }

    #[test]
    fn counted_rules_hit_exactly_the_matching_requests() {
        let f = Faults::new(1);
        f.inject(
            FaultRule::new(FaultAction::InternalError)
                .times(2)
                .verb("list"),
        );
        assert!(f.check(&facts("get", "a")).is_none());
        assert_eq!(f.check(&facts("list", "")).map(|e| e.code), Some(500));
        assert_eq!(f.check(&facts("list", "")).map(|e| e.code), Some(500));
        assert!(f.check(&facts("list", "")).is_none());
        f.conflict_next_update("certificatesigningrequests", "x");
        assert!(f.check(&facts("update", "y")).is_none());
        assert_eq!(f.check(&facts("update", "x")).map(|e| e.code), Some(409));
        assert_eq!(f.injected(), 3);
    }

    #[test]
    fn fractions_are_deterministic_per_seed() {
        let run = |seed| {
            let f = Faults::new(seed);
            f.inject(
                FaultRule::new(FaultAction::TooManyRequests {
                    retry_after_secs: 1,
                })
                .fraction(0.3),
            );
            (0..200)
                .map(|_| f.check(&facts("get", "a")).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let hits = run(7).iter().filter(|h| **h).count();
        assert!((30..90).contains(&hits), "{hits}");
        let e = {
            let f = Faults::new(0);
            f.inject(FaultRule::new(FaultAction::TooManyRequests {
                retry_after_secs: 3,
            }));
            f.check(&facts("get", "a")).expect("hit")
        };
        assert_eq!((e.code, e.retry_after), (429, Some(3)));
    }
}
