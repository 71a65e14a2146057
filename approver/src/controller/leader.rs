//! Leader election: which replica may act on CSRs, and until when.
//!
//! kube-lease-manager holds the Lease (`watch()` mode: it acquires, renews and, when told
//! to, releases). It reports when this replica becomes or stops being the holder, but not
//! its renewals, and a holder that cannot reach the API server keeps believing it holds the
//! Lease. So acting is bounded by a local deadline instead: after each renewal, read back
//! from the Lease (`renewTime`, written by this replica's own clock, `holderIdentity` this
//! replica), the replica may act until `renewTime + duration − grace`, converted to the
//! monotonic clock at once. Another replica can take the Lease only after
//! `renewTime + duration` by its own clock, so with clocks within `grace` of each other this
//! replica has stopped before anyone else starts. Every write checks [`Leadership::may_act`]
//! right before it goes out.
//!
//! The holder renews twice per acting window (kube-lease-manager's own `grace` is set so),
//! and reads the Lease back four times per window, so one slow or failed renewal does not
//! interrupt acting.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::LeaseConfig;

/// How long shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to set up the Lease manager (API server unreachable, …).
const SETUP_RETRY: Duration = Duration::from_secs(2);

/// Whether this replica may act on CSRs now. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<LeaderInner>,
}

#[derive(Debug)]
struct LeaderInner {
    state: Mutex<LeaderState>,
    acting: watch::Sender<bool>,
}

#[derive(Debug)]
struct LeaderState {
    /// Acting depends on a Lease (else: always, until stopped).
    elected: bool,
    /// With election: acting ends at this instant.
    until: Option<Instant>,
    /// With election: when the current stretch of acting began.
    since: Option<Instant>,
    /// Shutting down: never act again.
    stopped: bool,
}

// === impl Leadership ===

impl Leadership {
    /// A replica that acts without election (until stopped).
    pub fn unelected() -> Self {
        Self::with(false)
    }

    /// A replica that acts only while it holds the Lease.
    pub fn elected() -> Self {
        Self::with(true)
    }

    fn with(elected: bool) -> Self {
        let (acting, _) = watch::channel(!elected);
        Self {
            inner: Arc::new(LeaderInner {
                state: Mutex::new(LeaderState {
                    elected,
                    until: None,
                    since: None,
                    stopped: false,
                }),
                acting,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LeaderState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True when this replica may write to CSRs right now.
    pub fn may_act(&self) -> bool {
        Self::acting_now(&self.lock(), Instant::now())
    }

    fn acting_now(state: &LeaderState, now: Instant) -> bool {
        !state.stopped && (!state.elected || state.until.is_some_and(|until| now < until))
    }

    /// Follows when acting starts and stops (the value is [`may_act`](Self::may_act) as of
    /// the last change; the deadline lapsing is reported within milliseconds).
    pub fn acting(&self) -> watch::Receiver<bool> {
        self.inner.acting.subscribe()
    }

    /// When acting ends, with election and while acting.
    pub fn deadline(&self) -> Option<Instant> {
        let state = self.lock();
        state.until.filter(|_| state.elected && !state.stopped)
    }

    /// When the current stretch of acting began (with election; `None` while not acting).
    pub fn acting_since(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .since
            .filter(|_| Self::acting_now(&state, Instant::now()))
    }

    /// Allows acting until `until` (a renewal was confirmed).
    pub(crate) fn grant_until(&self, until: Instant) {
        {
            let mut state = self.lock();
            let now = Instant::now();
            if !Self::acting_now(&state, now) {
                state.since = Some(now);
            }
            state.until = Some(until);
        }
        self.refresh();
    }

    /// Stops acting at once (the Lease is held by another replica, or was lost).
    pub(crate) fn revoke(&self) {
        self.lock().until = None;
        self.refresh();
    }

    /// Stops acting for good (shutdown).
    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
        self.refresh();
    }

    /// Publishes the current acting state if it changed.
    pub(crate) fn refresh(&self) {
        let acting = self.may_act();
        self.inner.acting.send_if_modified(|current| {
            let changed = *current != acting;
            *current = acting;
            changed
        });
    }
}

/// Holds the Lease for one replica and keeps its [`Leadership`] deadline current.
pub(crate) struct Election {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) identity: String,
    pub(crate) lease: LeaseConfig,
    pub(crate) leadership: Leadership,
}

/// Why the election stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// kube-lease-manager's task ended on its own.
    #[error("the Lease manager stopped: {0}")]
    Manager(String),
}

// === impl Election ===

impl Election {
    /// Competes for the Lease until `release`, then releases it (if held) and returns.
    /// The caller stops acting (and lets writes in flight finish) before `release`.
    pub(crate) async fn run(self, release: CancellationToken) -> Result<(), ElectionError> {
        let Some(manager) = self.manager(&release).await else {
            return Ok(());
        };
        let (mut holder, task) = manager.watch().await;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let confirm_every = self.lease.confirm_interval();
        let mut next_confirm = Instant::now();
        let mut failure = None;
        loop {
            let held = *holder.borrow_and_update();
            if !held {
                self.leadership.revoke();
            } else if Instant::now() >= next_confirm {
                self.confirm(&leases).await;
                next_confirm = Instant::now() + confirm_every;
            }
            self.leadership.refresh();
            // Wake when acting lapses, to publish it; a lapsed deadline needs no wake-up.
            let deadline = self.leadership.deadline().filter(|d| *d > Instant::now());
            tokio::select! {
                biased;
                () = release.cancelled() => break,
                changed = holder.changed() => {
                    if changed.is_err() {
                        failure = Some("its status channel closed".to_owned());
                        break;
                    }
                    // Became or stopped being the holder: confirm at once.
                    next_confirm = Instant::now();
                }
                () = tokio::time::sleep_until(next_confirm), if held => {}
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
        }
        self.leadership.stop();
        // Dropping the receiver makes kube-lease-manager release the Lease and return.
        drop(holder);
        match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => {
                tracing::info!(lease = %self.lease.name, "released the Lease");
            }
            Ok(Ok(Err(error))) => {
                tracing::warn!(lease = %self.lease.name, %error, "releasing the Lease failed; it expires on its own");
            }
            Ok(Err(error)) => failure = Some(error.to_string()),
            Err(_) => {
                tracing::warn!(lease = %self.lease.name, timeout = ?RELEASE_TIMEOUT, "releasing the Lease timed out; it expires on its own");
            }
        }
        match failure {
            Some(message) => Err(ElectionError::Manager(message)),
            None => Ok(()),
        }
    }

    /// Builds the Lease manager (creating the Lease if missing), retrying until `release`.
    async fn manager(
        &self,
        release: &CancellationToken,
    ) -> Option<kube_lease_manager::LeaseManager> {
        loop {
            let built = LeaseManagerBuilder::new(self.client.clone(), &self.lease.name)
                .with_namespace(&self.namespace)
                .with_identity(&self.identity)
                .with_duration(self.lease.duration.as_secs())
                .with_grace(self.lease.renew_ahead_secs())
                .with_create_mode(LeaseCreateMode::AutoCreate)
                .build()
                .await;
            match built {
                Ok(manager) => return Some(manager),
                Err(error) => {
                    tracing::warn!(lease = %self.lease.name, namespace = %self.namespace, %error, "cannot set up leader election; retrying");
                }
            }
            tokio::select! {
                () = release.cancelled() => return None,
                () = tokio::time::sleep(SETUP_RETRY) => {}
            }
        }
    }

    /// Reads the Lease back: when this replica holds it, acting is allowed until
    /// `renewTime + duration − grace`; when another does, acting stops. A failed read
    /// changes nothing: the current deadline simply lapses.
    async fn confirm(&self, leases: &Api<Lease>) {
        let read = tokio::time::timeout(
            self.lease.confirm_interval().max(Duration::from_secs(1)),
            leases.get(&self.lease.name),
        )
        .await;
        let lease = match read {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading the Lease back failed");
                return;
            }
            Err(_) => {
                tracing::debug!("reading the Lease back timed out");
                return;
            }
        };
        let spec = lease.spec.unwrap_or_default();
        let renewed = spec.renew_time.map(|t| t.0);
        match (spec.holder_identity.as_deref(), renewed) {
            (Some(holder), Some(renewed)) if holder == self.identity => {
                match acting_until(renewed, self.lease.acting_window(), Timestamp::now()) {
                    Some(left) => self.leadership.grant_until(Instant::now() + left),
                    None => self.leadership.revoke(),
                }
            }
            _ => self.leadership.revoke(),
        }
    }
}

/// How much longer a holder whose last renewal was at `renewed` may act at `now`, with
/// `window` = duration − grace; `None` when the window has passed.
pub(crate) fn acting_until(
    renewed: Timestamp,
    window: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let window = SignedDuration::try_from(window).ok()?;
    let end = renewed.checked_add(window).ok()?;
    let left = end.duration_since(now);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acting_window_runs_from_the_renewal() {
        let renewed = Timestamp::from_second(1_000).expect("ts");
        let window = Duration::from_secs(10);
        let at = |s| Timestamp::from_second(s).expect("ts");
        assert_eq!(
            acting_until(renewed, window, at(1_004)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(acting_until(renewed, window, at(1_010)), None);
        assert_eq!(acting_until(renewed, window, at(1_020)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn acting_needs_a_future_deadline_and_stops_for_good() {
        let leadership = Leadership::elected();
        let mut acting = leadership.acting();
        assert!(!leadership.may_act());
        let granted = Instant::now();
        leadership.grant_until(granted + Duration::from_secs(2));
        assert!(leadership.may_act());
        assert!(*acting.borrow_and_update());
        tokio::time::advance(Duration::from_secs(1)).await;
        leadership.grant_until(Instant::now() + Duration::from_secs(2));
        assert_eq!(
            leadership.acting_since(),
            Some(granted),
            "a renewal continues the stretch"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(leadership.acting_since(), None);
        assert!(!leadership.may_act(), "the deadline lapsed");
        leadership.refresh();
        assert!(acting.has_changed().unwrap_or(false));
        assert!(!*acting.borrow_and_update());
        leadership.grant_until(Instant::now() + Duration::from_secs(2));
        assert!(leadership.may_act());
        leadership.revoke();
        assert!(!leadership.may_act());

        let solo = Leadership::unelected();
        assert!(solo.may_act());
        solo.stop();
        assert!(!solo.may_act());
        solo.grant_until(Instant::now() + Duration::from_secs(60));
        assert!(!solo.may_act(), "stopped is final");
    }
}
