//! Readiness: the agent is attested while at least one approver replica acknowledged a
//! report within the max age that replica announced in its Ack, and its last read of the
//! node's facts succeeded (a failed read sends nothing, so the node may soon be unattested).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rubber_stamp_proto::v1::Ack;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::SessionEvents;

/// Acks per approver endpoint and the readiness derived from them; cheap to clone.
#[derive(Clone, Debug)]
pub struct Readiness {
    fresh_until: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    facts_readable: Arc<AtomicBool>,
    wake: Arc<Notify>,
    ready: watch::Sender<bool>,
}

impl Readiness {
    /// Not ready (no Ack yet; facts not known to be unreadable).
    pub fn new() -> Self {
        Self {
            fresh_until: Arc::default(),
            facts_readable: Arc::new(AtomicBool::new(true)),
            wake: Arc::default(),
            ready: watch::channel(false).0,
        }
    }

    /// Records an Ack from `endpoint` announcing `max_age`.
    pub fn acked(&self, endpoint: SocketAddr, max_age: Duration) {
        let until = Instant::now() + max_age;
        self.fresh_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint, until);
        self.recompute();
        self.wake.notify_one();
    }

    /// Records whether the last read of the node's facts succeeded.
    pub fn facts_readable(&self, readable: bool) {
        self.facts_readable.store(readable, Ordering::SeqCst);
        self.recompute();
        self.wake.notify_one();
    }

    /// Follows `readable` (the facts' read state) until `stop`.
    pub async fn follow_facts(self, mut readable: watch::Receiver<bool>, stop: CancellationToken) {
        loop {
            self.facts_readable(*readable.borrow_and_update());
            tokio::select! {
                () = stop.cancelled() => return,
                changed = readable.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Ready when facts are readable and some Ack is fresh; the earliest Ack expiry.
    fn recompute(&self) -> Option<Instant> {
        let now = Instant::now();
        let next = {
            let mut fresh = self
                .fresh_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            fresh.retain(|_, until| *until > now);
            fresh.values().min().copied()
        };
        let ready = next.is_some() && self.facts_readable.load(Ordering::SeqCst);
        self.ready
            .send_if_modified(|current| std::mem::replace(current, ready) != ready);
        next
    }

    /// Whether some replica's Ack is still within its max age.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Notified on every change of readiness.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Turns readiness off when the last Ack ages out, until `stop`.
    pub async fn expire(self, stop: CancellationToken) {
        loop {
            let next = self.recompute();
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = sleep_until(next) => {}
            }
        }
    }
}

impl SessionEvents for Readiness {
    /// Fresh for the max age the replica announced (at least a second).
    fn acknowledged(&self, endpoint: SocketAddr, ack: &Ack) {
        let max_age = Duration::from_secs(u64::from(ack.max_age_seconds.max(1)));
        self.acked(endpoint, max_age);
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_after_an_ack_until_the_last_one_ages_out() {
        let readiness = Readiness::new();
        let stop = CancellationToken::new();
        let expiry = tokio::spawn(readiness.clone().expire(stop.clone()));
        let mut changes = readiness.subscribe();
        assert!(!readiness.is_ready());

        let a: SocketAddr = "10.0.0.1:8443".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:8443".parse().expect("addr");
        readiness.acked(a, Duration::from_secs(300));
        assert!(readiness.is_ready());
        tokio::time::sleep(Duration::from_secs(200)).await;
        readiness.acked(b, Duration::from_secs(300));

        // a ages out at 300 s, b keeps the agent ready until 500 s.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(readiness.is_ready());
        changes.mark_unchanged();
        tokio::time::timeout(Duration::from_secs(101), changes.changed())
            .await
            .expect("turns unready when the last ack expires")
            .expect("sender alive");
        assert!(!readiness.is_ready());

        stop.cancel();
        expiry.await.expect("expiry loop stops");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_of_the_facts_turns_readiness_off_until_a_read_succeeds() {
        let readiness = Readiness::new();
        let stop = CancellationToken::new();
        let (readable, follow) = watch::channel(true);
        let follower = tokio::spawn(readiness.clone().follow_facts(follow, stop.clone()));
        let mut changes = readiness.subscribe();
        readiness.acked(
            "10.0.0.1:8443".parse().expect("addr"),
            Duration::from_secs(300),
        );
        assert!(readiness.is_ready());

        readable.send_replace(false);
        changes.mark_unchanged();
        changes.changed().await.expect("sender alive");
        assert!(
            !readiness.is_ready(),
            "the Ack is fresh but the facts are not"
        );
        readable.send_replace(true);
        changes.changed().await.expect("sender alive");
        assert!(readiness.is_ready());

        stop.cancel();
        follower.await.expect("follower stops");
    }
}
