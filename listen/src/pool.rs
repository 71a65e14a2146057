//! Connection slots of one listener, bounded in total and per source address, and which
//! connection makes room for a new one:
//!
//! - its source already holds its share: that source's oldest connection that has not sent
//!   anything yet, else its oldest, is evicted (the source is the unit of blame; a client
//!   behind the same address as a flood still gets in);
//! - the pool is full: the busiest source's (if it holds more than one slot), chosen the
//!   same way; else, every source holding one slot, the oldest silent connection; else the
//!   new connection is refused.
//!
//! Why evict rather than refuse: a peer that opens connections and never finishes them
//! would otherwise hold every slot until its timeouts fire, reopen at once, and a
//! legitimate client arriving in between would be refused. Evicting from the busiest
//! source costs a flood its own connections first; a client with one connection that has
//! spoken is never evicted for another source's connection. Why refuse in the last case:
//! when every slot is a lone connection that has spoken (a TLS ClientHello, a request),
//! the pool looks like many legitimate clients at once (every agent reconnecting after an
//! approver restart); evicting one throws away work nearly done, while the refused client
//! retries after its backoff. Only a flood from as many addresses as the pool has slots,
//! each sending a first message, gets there.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Bounds of a [`Pool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most slots held at once.
    pub total: usize,
    /// Most slots one source address holds at once.
    pub per_source: usize,
}

/// The pool is full of lone connections that have spoken: the new one is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("every slot is held by a lone connection that has spoken")]
pub struct PoolFull;

impl PoolFull {
    /// A short snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        "refused_full"
    }
}

/// Why a connection was evicted to make room for a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// The new connection's source already held its share: its own oldest connection went.
    PerSource,
    /// The pool was full: the oldest connection of the source holding the most slots went.
    Total,
}

/// The slots of one listener; cheap to clone (clones share the slots).
#[derive(Clone, Debug)]
pub struct Pool {
    limits: PoolLimits,
    state: Arc<Mutex<State>>,
}

/// One connection's slot, given back when dropped. Cancelled when evicted.
#[derive(Debug)]
pub struct Slot {
    state: Arc<Mutex<State>>,
    source: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    /// Per source, its slots oldest first.
    sources: HashMap<IpAddr, VecDeque<Entry>>,
    total: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// The connection sent something (a request, a ClientHello).
    spoke: bool,
    evicted: CancellationToken,
}

// === impl Eviction ===

impl Eviction {
    /// A short snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerSource => "evicted_per_source",
            Self::Total => "evicted_total",
        }
    }
}

// === impl Pool ===

impl Pool {
    /// An empty pool; limits of zero are taken as one.
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            limits: PoolLimits {
                total: limits.total.max(1),
                per_source: limits.per_source.max(1),
            },
            state: Arc::default(),
        }
    }

    /// Its limits.
    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    /// Slots held now.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A slot for a new connection from `source`, evicting another connection if the source
    /// or the pool is full (the evicted slot's [`Slot::evicted`] completes), or
    /// [`PoolFull`] (see the module docs).
    pub fn admit(&self, source: IpAddr) -> Result<(Slot, Option<Eviction>), PoolFull> {
        let mut state = self.lock();
        let mut eviction = None;
        let own = state.sources.get(&source).map_or(0, VecDeque::len);
        if own >= self.limits.per_source {
            let index = state.victim_in(source);
            state.evict(source, index);
            eviction = Some(Eviction::PerSource);
        } else if state.total >= self.limits.total {
            let (victim, index) = state.victim().ok_or(PoolFull)?;
            state.evict(victim, index);
            eviction = Some(Eviction::Total);
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.sources.entry(source).or_default().push_back(Entry {
            id,
            spoke: false,
            evicted: evicted.clone(),
        });
        state.total += 1;
        Ok((
            Slot {
                state: Arc::clone(&self.state),
                source,
                id,
                evicted,
            },
            eviction,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl State ===

impl State {
    /// The connection that makes room in a full pool: in the busiest source (of several,
    /// the one with the oldest slot) if it holds more than one slot; else the oldest
    /// silent connection; else none.
    fn victim(&self) -> Option<(IpAddr, usize)> {
        let busiest = self
            .sources
            .iter()
            .filter_map(|(source, slots)| Some((*source, slots.len(), slots.front()?.id)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        if let Some((source, len, _)) = busiest
            && len > 1
        {
            return Some((source, self.victim_in(source)));
        }
        self.sources
            .iter()
            .filter_map(|(source, slots)| {
                let index = slots.iter().position(|e| !e.spoke)?;
                Some((slots[index].id, *source, index))
            })
            .min()
            .map(|(_, source, index)| (source, index))
    }

    /// Position of `source`'s oldest connection that has not spoken, else of its oldest.
    fn victim_in(&self, source: IpAddr) -> usize {
        self.sources
            .get(&source)
            .and_then(|slots| slots.iter().position(|e| !e.spoke))
            .unwrap_or(0)
    }

    /// Evicts `source`'s connection at `index`.
    fn evict(&mut self, source: IpAddr, index: usize) {
        let Some(slots) = self.sources.get_mut(&source) else {
            return;
        };
        if let Some(entry) = slots.remove(index) {
            entry.evicted.cancel();
            self.total -= 1;
        }
        if slots.is_empty() {
            self.sources.remove(&source);
        }
    }
}

// === impl Slot ===

impl Slot {
    /// Records that the connection sent something: it is evicted after the silent ones of
    /// its source.
    pub fn spoke(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = state
            .sources
            .get_mut(&self.source)
            .and_then(|slots| slots.iter_mut().find(|e| e.id == self.id))
        {
            entry.spoke = true;
        }
    }

    /// The source address the slot is counted against.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Whether this connection was evicted.
    pub fn is_evicted(&self) -> bool {
        self.evicted.is_cancelled()
    }

    /// Completes when this connection is evicted.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evicted.clone().cancelled_owned()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.evicted.is_cancelled() {
            // Eviction already took it out of the pool.
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { sources, total, .. } = &mut *state;
        if let Some(slots) = sources.get_mut(&self.source) {
            if let Some(index) = slots.iter().position(|e| e.id == self.id) {
                slots.remove(index);
                *total -= 1;
            }
            if slots.is_empty() {
                sources.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn mk_pool(total: usize, per_source: usize) -> Pool {
        Pool::new(PoolLimits { total, per_source })
    }

    fn admit(pool: &Pool, source: IpAddr) -> (Slot, Option<Eviction>) {
        pool.admit(source).expect("admitted")
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn a_full_source_loses_its_own_oldest_silent_connection() {
        let pool = mk_pool(10, 3);
        let (first, _) = admit(&pool, ip(1));
        let (second, _) = admit(&pool, ip(1));
        let (third, _) = admit(&pool, ip(1));
        first.spoke();
        let (fourth, eviction) = admit(&pool, ip(1));
        assert_eq!(eviction, Some(Eviction::PerSource));
        assert!(!first.is_evicted(), "it spoke; the silent ones go first");
        assert!(second.is_evicted());
        assert!(!third.is_evicted() && !fourth.is_evicted());
        assert_eq!(pool.len(), 3);
        // Every silent one gone: the oldest goes, spoken or not.
        third.spoke();
        fourth.spoke();
        let (_fifth, _) = admit(&pool, ip(1));
        assert!(first.is_evicted());
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn a_full_pool_evicts_from_the_busiest_source_never_from_a_lone_client() {
        let pool = mk_pool(6, 4);
        let flood: Vec<Slot> = (0..4).map(|_| admit(&pool, ip(9)).0).collect();
        let (other, _) = admit(&pool, ip(8));
        let (client, _) = admit(&pool, ip(1));
        assert_eq!(pool.len(), 6);
        // Each new connection (the client's too) evicts the busiest source's oldest.
        let (probe, eviction) = admit(&pool, ip(2));
        assert_eq!(eviction, Some(Eviction::Total));
        assert!(flood[0].is_evicted());
        let (_again, _) = admit(&pool, ip(3));
        assert!(flood[1].is_evicted());
        assert!(!client.is_evicted() && !other.is_evicted() && !probe.is_evicted());
        assert_eq!(pool.len(), 6);
        // Two flooding sources tie at two slots: the one with the older slot pays.
        let (late, _) = admit(&pool, ip(8));
        assert!(flood[2].is_evicted(), "ip 9's slot is older than ip 8's");
        assert!(!late.is_evicted());
    }

    #[test]
    fn slots_come_back_when_dropped_or_evicted() {
        let pool = mk_pool(2, 2);
        let (a, _) = admit(&pool, ip(1));
        let (b, _) = admit(&pool, ip(2));
        drop(a);
        assert_eq!(pool.len(), 1);
        let (_c, eviction) = admit(&pool, ip(3));
        assert_eq!(eviction, None, "room was given back");
        let (_d, eviction) = admit(&pool, ip(3));
        assert_eq!(eviction, Some(Eviction::Total));
        assert!(
            b.is_evicted(),
            "ip 2 and ip 3 tie at one slot; ip 2's is older"
        );
        drop(b);
        assert_eq!(
            pool.len(),
            2,
            "dropping an evicted slot gives nothing back twice"
        );
        assert_eq!(
            mk_pool(0, 0).limits(),
            PoolLimits {
                total: 1,
                per_source: 1
            }
        );
    }

    #[test]
    fn a_pool_of_lone_connections_that_spoke_refuses_the_newcomer() {
        let pool = mk_pool(3, 3);
        let lone: Vec<Slot> = (1..=3).map(|i| admit(&pool, ip(i)).0).collect();
        lone[0].spoke();
        lone[2].spoke();
        // One lone connection is still silent: it goes, though it is not the oldest.
        let (fourth, eviction) = admit(&pool, ip(4));
        assert_eq!(eviction, Some(Eviction::Total));
        assert!(lone[1].is_evicted());
        assert!(!lone[0].is_evicted() && !lone[2].is_evicted());
        fourth.spoke();
        // Every slot is now a lone connection that spoke: the newcomer is refused.
        assert_eq!(pool.admit(ip(5)).err(), Some(PoolFull));
        assert!(
            !lone[0].is_evicted() && !lone[2].is_evicted() && !fourth.is_evicted(),
            "nothing thrown away"
        );
        assert_eq!(pool.len(), 3);
        // A source with two slots pays again.
        drop(fourth);
        let (extra, _) = admit(&pool, ip(1));
        extra.spoke();
        let (_newcomer, eviction) = admit(&pool, ip(9));
        assert_eq!(eviction, Some(Eviction::Total));
        assert!(lone[0].is_evicted(), "the busiest source's oldest");
        assert!(!extra.is_evicted());
    }

    #[tokio::test]
    async fn an_evicted_slot_wakes_its_owner() {
        let pool = mk_pool(1, 1);
        let (slot, _) = admit(&pool, ip(1));
        let waiter = tokio::spawn(slot.evicted());
        let (_newer, _) = admit(&pool, ip(2));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
