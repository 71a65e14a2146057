//! The proof listener: the agent's side of the proof of address ownership (issue 18, the
//! way ACME's http-01 proves a domain). The approver opens a TCP connection to an IP SAN of
//! a node's CSR on the proof port and writes one probe frame
//! ([`rubber_stamp_proto::proof`]: `RSPROOF1` and a fresh 32-byte nonce). The agent that
//! receives it says so in a [`ProofReceipt`] on its own authenticated streams: the nonce,
//! the local address the connection arrived on and the address it came from. Which node
//! received the probe is the stream's, never the receipt's.
//!
//! Every pod on the node (and, on the node's addresses, anyone who can route to them) can
//! reach this port, so it is bounded like the agent's other listeners and never lets a
//! neighbour make the agent flood the approver:
//!
//! - connections hold slots of a pool of [`MAX_CONNECTIONS`], at most
//!   [`MAX_CONNECTIONS_PER_SOURCE`] per source address (`rubber-stamp-listen`; a full pool
//!   closes the oldest connection of the busiest source), counted in the descriptor budget;
//! - a connection must deliver exactly one frame within [`READ_TIMEOUT`]; the agent writes
//!   nothing and closes it either way. A frame with the wrong magic, a connection that
//!   closes early ([`FrameOutcome::Malformed`]) or stays silent too long
//!   ([`FrameOutcome::Timeout`]) gives no receipt;
//! - receipts pass one token bucket for the whole agent ([`RECEIPT_BURST`], refilled at
//!   [`RECEIPTS_PER_SECOND`]); the excess is dropped ([`FrameOutcome::RateLimited`]);
//! - what passes goes to every stream through a broadcast channel of [`RECEIPT_CHANNEL`]
//!   receipts; a stream that falls behind loses the oldest and counts them. A stream forwards
//!   a receipt only while the last Ack it received set `accepts_receipts` (an approver from
//!   before 0.4 would close the stream on a message kind it does not know):
//!   [`ReceiptGate`](crate::session::ReceiptGate).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rubber_stamp_listen::{Pending, PoolLimits, Throttle};
use rubber_stamp_proto::proof;
use rubber_stamp_proto::v1::ProofReceipt;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most connections open on the proof port at once. A probe is one 40-byte frame and the
/// approver opens one connection per IP SAN it proves: a handful is plenty, and every slot
/// is a descriptor a neighbour could otherwise take.
pub const MAX_CONNECTIONS: usize = 32;

/// Most connections open on the proof port from one source address (an approver replica
/// proving a CSR's SANs opens a few at once at most).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 4;

/// Longest a connection may take to deliver its whole frame before it is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Receipts the agent may pass on at once, after a quiet period (every stream gets each).
pub const RECEIPT_BURST: u32 = 40;

/// Receipts per second the agent passes on in the long run; the bucket refills at this rate.
pub const RECEIPTS_PER_SECOND: u32 = 20;

/// Receipts queued for each stream; a stream further behind loses the oldest.
pub const RECEIPT_CHANNEL: usize = 64;

/// The listener's name in logs.
const LISTENER: &str = "proof";

/// At most one log line per kind of dropped frame in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The proof listener's limits; [`ProofLimits::DEFAULT`] is what the agent runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofLimits {
    /// Most connections open at once; a new one evicts the oldest of the busiest source.
    pub max_connections: usize,
    /// Most connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// Longest a connection may take to deliver its frame.
    pub read_timeout: Duration,
    /// Receipts passed on at once after a quiet period.
    pub receipt_burst: u32,
    /// One more receipt may pass every this long (the bucket's refill).
    pub receipt_every: Duration,
}

impl ProofLimits {
    /// [`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_SOURCE`], [`READ_TIMEOUT`],
    /// [`RECEIPT_BURST`] and [`RECEIPTS_PER_SECOND`].
    pub const DEFAULT: Self = Self {
        max_connections: MAX_CONNECTIONS,
        max_connections_per_source: MAX_CONNECTIONS_PER_SOURCE,
        read_timeout: READ_TIMEOUT,
        receipt_burst: RECEIPT_BURST,
        receipt_every: Duration::from_millis(1000 / RECEIPTS_PER_SECOND as u64),
    };
}

impl Default for ProofLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// === ProofListen ===

/// `--proof-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofListen {
    /// No proof listener: the agent reports `proof_port` 0 and sends no receipts.
    Off,
    /// Listen here (`[::]` takes IPv6 and IPv4).
    At(SocketAddr),
}

/// Why a `--proof-listen` value does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither `off` nor an address such as [::]:10273 or 10.0.0.1:10273")]
pub struct ProofListenError(String);

impl ProofListen {
    /// Where to listen, `None` when off.
    pub fn address(self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::At(addr) => Some(addr),
        }
    }
}

/// `[::]:10273` ([`proof::DEFAULT_PORT`]).
impl Default for ProofListen {
    fn default() -> Self {
        Self::At(SocketAddr::new(
            Ipv6Addr::UNSPECIFIED.into(),
            proof::DEFAULT_PORT,
        ))
    }
}

impl FromStr for ProofListen {
    type Err = ProofListenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|_| ProofListenError(s.to_owned()))
    }
}

impl fmt::Display for ProofListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(addr) => addr.fmt(f),
        }
    }
}

// === FrameOutcome, ProofEvents ===

/// What became of one connection to the proof port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameOutcome {
    /// A whole, well-formed frame; its receipt went to every stream.
    Received,
    /// A frame with the wrong magic, or a connection that closed or failed before a whole
    /// frame.
    Malformed,
    /// No whole frame within the read timeout.
    Timeout,
    /// A well-formed frame past the agent's receipt rate: dropped.
    RateLimited,
}

impl FrameOutcome {
    /// Every outcome.
    pub const ALL: [Self; 4] = [
        Self::Received,
        Self::Malformed,
        Self::Timeout,
        Self::RateLimited,
    ];

    /// The `result` label of `rubber_stamp_agent_proof_frames_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Told what became of every connection to the proof port: the agent's metrics; simulated
/// nodes count for their tests. Called on the listener's tasks: keep it short.
pub trait ProofEvents: fmt::Debug + Send + Sync + 'static {
    /// One connection ended with `outcome`.
    fn frame(&self, outcome: FrameOutcome);
}

// === ProofFeed ===

/// The listener as the streams see it: the port it listens on (`NodeReport.proof_port`)
/// and its receipts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProofFeed {
    port: u16,
    every_address: bool,
    receipts: broadcast::Sender<ProofReceipt>,
}

impl ProofFeed {
    /// A feed for a listener on `local`, with no receipts yet.
    fn new(local: SocketAddr) -> Self {
        Self {
            port: local.port(),
            every_address: local.ip().is_unspecified(),
            receipts: broadcast::channel(RECEIPT_CHANNEL).0,
        }
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What reports say as `proof_port`: the port when the listener takes every address of
    /// the node (a wildcard bind), else 0. The approver counts a refused probe as evidence
    /// that an address is another host's only when the node listens on all of its own
    /// addresses; a listener on one address would have its own kernel refuse a probe of
    /// the node's other addresses.
    pub fn reported_port(&self) -> u16 {
        if self.every_address { self.port } else { 0 }
    }

    /// Every receipt from now on (at most [`RECEIPT_CHANNEL`] queued).
    pub fn subscribe(&self) -> broadcast::Receiver<ProofReceipt> {
        self.receipts.subscribe()
    }
}

// === ProofListener ===

/// A bound proof listener, not serving yet.
#[derive(Debug)]
pub struct ProofListener {
    listener: TcpListener,
    local: SocketAddr,
    limits: ProofLimits,
    feed: ProofFeed,
}

impl ProofListener {
    /// Binds `addr` (within a Tokio runtime). `[::]:port` takes IPv6 and IPv4 on one socket
    /// (`IPV6_V6ONLY` off); on a host without IPv6 it binds `0.0.0.0:port` instead and says
    /// so. Any other address binds only that address.
    pub fn bind(addr: SocketAddr, limits: ProofLimits) -> io::Result<Self> {
        let listener = match rubber_stamp_listen::bind(addr) {
            Ok(listener) => listener,
            // The kernel has IPv6 sockets but no IPv6 address to bind (`EADDRNOTAVAIL`);
            // `rubber_stamp_listen::bind` already falls back where it has no IPv6 at all.
            Err(error)
                if is_unspecified_v6(addr) && error.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
                tracing::warn!(%addr, fallback = %v4, %error, "cannot bind the proof listener on IPv6: listening on IPv4 only");
                rubber_stamp_listen::bind(v4)?
            }
            Err(error) => return Err(error),
        };
        let local = listener.local_addr()?;
        Ok(Self {
            listener,
            local,
            limits,
            feed: ProofFeed::new(local),
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its port and receipts, for the streams.
    pub fn feed(&self) -> ProofFeed {
        self.feed.clone()
    }

    /// Accepts probes until `stop`, telling `events` what became of each and passing
    /// receipts within the rate to every subscribed stream.
    pub async fn serve(self, events: Arc<dyn ProofEvents>, stop: CancellationToken) {
        let Self {
            listener,
            local,
            limits,
            feed,
        } = self;
        tracing::debug!(%local, ?limits, "proof listener serving");
        let pool = PoolLimits {
            total: limits.max_connections,
            per_source: limits.max_connections_per_source,
        };
        let read_events = Arc::clone(&events);
        let read_log = Arc::new(Mutex::new(Throttle::new(LOG_INTERVAL)));
        let mut incoming = rubber_stamp_listen::accept(
            listener,
            LISTENER,
            pool,
            Arc::new(()),
            stop.clone(),
            move |pending| {
                let events = Arc::clone(&read_events);
                let log = Arc::clone(&read_log);
                async move { read_probe(pending, limits.read_timeout, &*events, &log).await }
            },
        );
        let mut bucket =
            TokenBucket::new(limits.receipt_burst, limits.receipt_every, Instant::now());
        let mut limited_log = Throttle::new(LOG_INTERVAL);
        loop {
            let receipt = tokio::select! {
                () = stop.cancelled() => return,
                next = incoming.next_admitted() => match next {
                    Some(receipt) => receipt,
                    None => return,
                },
            };
            let now = Instant::now();
            if bucket.take(now) {
                events.frame(FrameOutcome::Received);
                // No stream subscribed (none open yet): nobody to tell.
                let _ = feed.receipts.send(receipt);
            } else {
                events.frame(FrameOutcome::RateLimited);
                if let Some(held) = limited_log.admit(now) {
                    tracing::warn!(
                        held_back = held,
                        "proof frames arrive faster than the agent passes receipts on; dropping the excess"
                    );
                }
            }
        }
    }
}

fn is_unspecified_v6(addr: SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified())
}

/// Reads one frame from a new connection within `timeout`: its receipt, or `None` (counted
/// and logged at most once per interval). The connection closes when this returns; nothing
/// is ever written to it.
async fn read_probe(
    pending: Pending,
    timeout: Duration,
    events: &dyn ProofEvents,
    log: &Mutex<Throttle>,
) -> Option<ProofReceipt> {
    // The slot is held until the connection closes. It is never marked as having spoken:
    // a connection that sent part of a frame is as evictable as a silent one, so a flood
    // of partial frames from many sources cannot fill the pool and keep a probe out.
    let Pending {
        mut stream,
        peer,
        slot: _slot,
    } = pending;
    let mut frame = [0u8; proof::FRAME_BYTES];
    let outcome = match tokio::time::timeout(timeout, stream.read_exact(&mut frame)).await {
        Ok(Ok(_)) => match (proof::decode(&frame), stream.local_addr()) {
            (Some(nonce), Ok(local)) => {
                return Some(ProofReceipt {
                    nonce: nonce.to_vec(),
                    local_address: ip_bytes(local.ip()),
                    sender_address: ip_bytes(peer.ip()),
                });
            }
            _ => FrameOutcome::Malformed,
        },
        // Closed or reset before a whole frame.
        Ok(Err(_)) => FrameOutcome::Malformed,
        Err(_) => FrameOutcome::Timeout,
    };
    events.frame(outcome);
    let due = log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(Instant::now());
    match due {
        Some(held) => tracing::info!(
            source = %peer.ip().to_canonical(),
            result = outcome.label(),
            held_back = held,
            "a connection to the proof port sent no probe frame"
        ),
        None => {
            tracing::debug!(source = %peer.ip().to_canonical(), result = outcome.label(), "no probe frame")
        }
    }
    None
}

/// An address in wire form: 4 bytes for IPv4, including an IPv4-mapped IPv6 address (how a
/// dual-stack socket sees IPv4), 16 for IPv6.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

// === TokenBucket ===

/// A token bucket: up to `burst` tokens, one more every `every`; a receipt takes one.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    burst: u32,
    every: Duration,
    tokens: u32,
    /// When the next token is due (refills are counted from here, so none is lost).
    next: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(burst: u32, every: Duration, now: Instant) -> Self {
        Self {
            burst,
            every,
            tokens: burst,
            next: now + every,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    fn refill(&mut self, now: Instant) {
        if now < self.next {
            return;
        }
        if self.every.is_zero() {
            self.tokens = self.burst;
            return;
        }
        let due = 1 + (now - self.next).as_nanos() / self.every.as_nanos();
        let room = self.burst - self.tokens;
        if due >= u128::from(room) {
            self.tokens = self.burst;
            self.next = now + self.every;
        } else {
            // `due` < `room` ≤ u32::MAX.
            let due = u32::try_from(due).unwrap_or(room);
            self.tokens += due;
            self.next += self.every * due;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    use tokio::sync::watch;

    use super::*;

    /// Counts outcomes where a test can wait for them.
    #[derive(Debug, Default)]
    struct Outcomes(watch::Sender<BTreeMap<FrameOutcome, u64>>);

    impl ProofEvents for Outcomes {
        fn frame(&self, outcome: FrameOutcome) {
            self.0
                .send_modify(|counts| *counts.entry(outcome).or_default() += 1);
        }
    }

    impl Outcomes {
        fn count(&self, outcome: FrameOutcome) -> u64 {
            self.0.borrow().get(&outcome).copied().unwrap_or(0)
        }

        async fn wait(&self, outcome: FrameOutcome, at_least: u64) {
            let mut counts = self.0.subscribe();
            let waited = tokio::time::timeout(
                Duration::from_secs(10),
                counts.wait_for(|c| c.get(&outcome).copied().unwrap_or(0) >= at_least),
            )
            .await;
            assert!(
                matches!(waited, Ok(Ok(_))),
                "{outcome:?} never reached {at_least}"
            );
        }
    }

    /// A serving listener on `addr` with `limits`; stopped when the token is dropped.
    struct Running {
        addr: SocketAddr,
        feed: ProofFeed,
        receipts: broadcast::Receiver<ProofReceipt>,
        outcomes: Arc<Outcomes>,
        _stop: tokio_util::sync::DropGuard,
    }

    fn serve(addr: SocketAddr, limits: ProofLimits) -> Running {
        let listener = ProofListener::bind(addr, limits).expect("bind");
        let addr = listener.local_addr();
        let feed = listener.feed();
        let receipts = feed.subscribe();
        let outcomes = Arc::new(Outcomes::default());
        let stop = CancellationToken::new();
        tokio::spawn(listener.serve(Arc::clone(&outcomes) as Arc<dyn ProofEvents>, stop.clone()));
        Running {
            addr,
            feed,
            receipts,
            outcomes,
            _stop: stop.drop_guard(),
        }
    }

    /// Sends `bytes` to `addr` and waits until the agent closes the connection, asserting
    /// that it wrote nothing back.
    async fn send(addr: SocketAddr, bytes: &[u8]) -> SocketAddr {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(bytes).await.expect("write");
        let local = client.local_addr().expect("local");
        assert_closed_silently(&mut client).await;
        local
    }

    async fn assert_closed_silently(client: &mut TcpStream) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
            .await
            .expect("the agent closes the connection");
        // A close with unread data may come as a reset: either way nothing was written.
        if read.is_ok() {
            assert!(rest.is_empty(), "the agent wrote {rest:?}");
        }
    }

    async fn next_receipt(receipts: &mut broadcast::Receiver<ProofReceipt>) -> ProofReceipt {
        tokio::time::timeout(Duration::from_secs(10), receipts.recv())
            .await
            .expect("a receipt in time")
            .expect("a receipt")
    }

    fn ipv6_loopback_available() -> bool {
        std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
    }

    #[test]
    fn the_flag_takes_an_address_or_off() {
        assert_eq!(ProofListen::default().to_string(), "[::]:10273");
        assert_eq!("off".parse(), Ok(ProofListen::Off));
        assert_eq!(ProofListen::Off.address(), None);
        assert_eq!(
            "127.0.0.3:9"
                .parse::<ProofListen>()
                .map(ProofListen::address),
            Ok(Some(SocketAddr::from(([127, 0, 0, 3], 9))))
        );
        assert!("on".parse::<ProofListen>().is_err());
        assert!("10273".parse::<ProofListen>().is_err());
    }

    #[test]
    fn addresses_go_on_the_wire_in_their_canonical_form() {
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().expect("ip");
        assert_eq!(ip_bytes(mapped), [10, 0, 0, 7]);
        assert_eq!(ip_bytes(Ipv4Addr::LOCALHOST.into()), [127, 0, 0, 1]);
        assert_eq!(ip_bytes(Ipv6Addr::LOCALHOST.into()).len(), 16);
    }

    #[test]
    fn the_bucket_passes_a_burst_then_its_rate() {
        let start = Instant::now();
        let every = Duration::from_millis(50);
        let mut bucket = TokenBucket::new(40, every, start);
        assert_eq!((0..100).filter(|_| bucket.take(start)).count(), 40);
        assert!(!bucket.take(start + every / 2));
        assert!(bucket.take(start + every), "one token every 50 ms");
        assert!(!bucket.take(start + every));
        // A second after the start, 20 tokens came in all (one was taken at 50 ms).
        let later = start + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| bucket.take(later)).count(), 19);
        // A long quiet period refills it to the burst, never beyond.
        let quiet = later + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| bucket.take(quiet)).count(), 40);
        let defaults = ProofLimits::DEFAULT;
        assert_eq!(defaults.receipt_burst, 40);
        assert_eq!(
            defaults.receipt_every * RECEIPTS_PER_SECOND,
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn a_probe_on_ipv4_gives_a_receipt_with_the_address_it_arrived_on() {
        let mut running = serve(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ProofLimits::DEFAULT,
        );
        assert_eq!(running.feed.port(), running.addr.port());
        let nonce = [9; proof::NONCE_BYTES];
        let sender = send(running.addr, &proof::encode(&nonce)).await;
        let receipt = next_receipt(&mut running.receipts).await;
        assert_eq!(receipt.nonce, nonce);
        assert_eq!(receipt.local_address, [127, 0, 0, 1]);
        assert_eq!(receipt.sender_address, ip_bytes(sender.ip()));
        running.outcomes.wait(FrameOutcome::Received, 1).await;
    }

    #[tokio::test]
    async fn a_probe_on_ipv6_gives_a_receipt_with_the_address_it_arrived_on() {
        if !ipv6_loopback_available() {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        }
        let mut running = serve(
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
            ProofLimits::DEFAULT,
        );
        let nonce = [3; proof::NONCE_BYTES];
        send(running.addr, &proof::encode(&nonce)).await;
        let receipt = next_receipt(&mut running.receipts).await;
        assert_eq!(receipt.nonce, nonce);
        assert_eq!(receipt.local_address, Ipv6Addr::LOCALHOST.octets());
        assert_eq!(receipt.sender_address, Ipv6Addr::LOCALHOST.octets());
    }

    #[tokio::test]
    async fn the_unspecified_address_takes_ipv4_and_reports_it_as_ipv4() {
        let mut running = serve(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            ProofLimits::DEFAULT,
        );
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, running.addr.port()));
        send(target, &proof::encode(&[1; proof::NONCE_BYTES])).await;
        let receipt = next_receipt(&mut running.receipts).await;
        assert_eq!(
            receipt.local_address,
            [127, 0, 0, 1],
            "not ::ffff:127.0.0.1"
        );
        assert_eq!(receipt.sender_address, [127, 0, 0, 1]);
    }

    #[tokio::test]
    async fn a_foreign_or_short_frame_gives_no_receipt_and_is_counted() {
        let mut running = serve(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ProofLimits::DEFAULT,
        );
        let mut foreign = proof::encode(&[5; proof::NONCE_BYTES]);
        foreign[..8].copy_from_slice(b"GET / HT");
        send(running.addr, &foreign).await;
        assert_eq!(running.outcomes.count(FrameOutcome::Malformed), 1);
        // Half a frame, then the sender closes its side.
        let mut client = TcpStream::connect(running.addr).await.expect("connect");
        client
            .write_all(&proof::encode(&[5; proof::NONCE_BYTES])[..20])
            .await
            .expect("write");
        client.shutdown().await.expect("shutdown");
        assert_closed_silently(&mut client).await;
        assert_eq!(running.outcomes.count(FrameOutcome::Malformed), 2);
        // A good frame after them is the only receipt.
        let nonce = [6; proof::NONCE_BYTES];
        send(running.addr, &proof::encode(&nonce)).await;
        assert_eq!(next_receipt(&mut running.receipts).await.nonce, nonce);
        assert!(running.receipts.is_empty());
        assert_eq!(running.outcomes.count(FrameOutcome::Timeout), 0);
    }

    #[tokio::test]
    async fn a_slow_sender_is_closed_after_the_read_timeout_and_counted() {
        let limits = ProofLimits {
            read_timeout: Duration::from_millis(200),
            ..ProofLimits::DEFAULT
        };
        let mut running = serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits);
        // Most of a frame, then nothing: the agent gives up, the connection closes.
        let mut client = TcpStream::connect(running.addr).await.expect("connect");
        client
            .write_all(&proof::encode(&[2; proof::NONCE_BYTES])[..39])
            .await
            .expect("write");
        assert_closed_silently(&mut client).await;
        assert_eq!(running.outcomes.count(FrameOutcome::Timeout), 1);
        assert_eq!(running.outcomes.count(FrameOutcome::Malformed), 0);
        assert!(matches!(
            running.receipts.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
    }

    #[tokio::test]
    async fn receipts_past_the_rate_are_dropped_and_counted() {
        let limits = ProofLimits {
            receipt_burst: 3,
            // No refill within the test.
            receipt_every: Duration::from_secs(3600),
            ..ProofLimits::DEFAULT
        };
        let mut running = serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits);
        for n in 0..5u8 {
            send(running.addr, &proof::encode(&[n; proof::NONCE_BYTES])).await;
        }
        running.outcomes.wait(FrameOutcome::RateLimited, 2).await;
        running.outcomes.wait(FrameOutcome::Received, 3).await;
        let mut passed = Vec::new();
        while let Ok(receipt) = running.receipts.try_recv() {
            passed.push(receipt.nonce[0]);
        }
        assert_eq!(passed.len(), 3, "{passed:?}");
        assert_eq!(running.outcomes.count(FrameOutcome::Received), 3);
        assert_eq!(running.outcomes.count(FrameOutcome::RateLimited), 2);
    }

    #[tokio::test]
    async fn a_source_past_its_connection_limit_loses_its_oldest_connection() {
        let limits = ProofLimits {
            max_connections: 8,
            max_connections_per_source: 2,
            read_timeout: Duration::from_secs(3600),
            ..ProofLimits::DEFAULT
        };
        let running = serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits);
        let mut oldest = TcpStream::connect(running.addr).await.expect("connect");
        let _second = TcpStream::connect(running.addr).await.expect("connect");
        // The third from the same address evicts the first.
        let mut third = TcpStream::connect(running.addr).await.expect("connect");
        assert_closed_silently(&mut oldest).await;
        // The newest still delivers its frame.
        let mut receipts = running.feed.subscribe();
        let nonce = [8; proof::NONCE_BYTES];
        third
            .write_all(&proof::encode(&nonce))
            .await
            .expect("write");
        assert_closed_silently(&mut third).await;
        assert_eq!(next_receipt(&mut receipts).await.nonce, nonce);
    }

    /// A connection to `addr` from `source`.
    async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((source, 0))).expect("bind");
        socket.connect(addr).await.expect("connect")
    }

    #[tokio::test]
    async fn a_full_pool_makes_room_for_new_connections() {
        let limits = ProofLimits {
            max_connections: 3,
            max_connections_per_source: 2,
            read_timeout: Duration::from_secs(3600),
            ..ProofLimits::DEFAULT
        };
        let running = serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits);
        let mut idle = Vec::new();
        for n in 2..5 {
            idle.push(connect_from(Ipv4Addr::new(127, 0, 0, n), running.addr).await);
        }
        let mut receipts = running.feed.subscribe();
        let nonce = [4; proof::NONCE_BYTES];
        // A fourth source, the pool full of lone connections: the oldest makes room, even
        // though it sent part of a frame (a flood of partial frames cannot keep a probe out).
        idle[0]
            .write_all(&proof::encode(&nonce)[..10])
            .await
            .expect("write");
        let mut probe = connect_from(Ipv4Addr::new(127, 0, 0, 5), running.addr).await;
        probe
            .write_all(&proof::encode(&nonce))
            .await
            .expect("write");
        assert_closed_silently(&mut idle[0]).await;
        assert_closed_silently(&mut probe).await;
        assert_eq!(next_receipt(&mut receipts).await.nonce, nonce);
        assert_eq!(running.outcomes.count(FrameOutcome::Malformed), 0);
    }
}
