//! The accept loop of every listener: each connection gets a slot of the listener's
//! [`Pool`] (evicting another when full) and is handed to an `admit` step (a TLS handshake,
//! or waiting for the first bytes of a plaintext request) that runs concurrently and ends
//! when the slot is evicted; what it admits is yielded as a stream a server can serve.
//!
//! Accept errors never stop the loop. Running out of descriptors or buffers (`EMFILE`,
//! `ENFILE`, `ENOBUFS`, `ENOMEM`) clears only when connections close, so the loop waits
//! before accepting again, 5 ms doubling to 1 s, back to 5 ms after the next success; any
//! other error (a peer that reset before it was accepted) is the peer's and the loop goes
//! on at once. Either way the error is counted ([`Events`]) and logged at most once every
//! five seconds with the number of errors held back in between.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::connection::Admitted;
use crate::pool::{Pool, PoolLimits, Slot};
use crate::throttle::Throttle;

/// First wait after an accept error caused by exhausted resources.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest wait after such errors.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per listener and kind of event in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Admitted connections queued for the server before the loop waits.
const QUEUE: usize = 64;

/// What a listener reports, for metrics. Every method has a default that does nothing.
pub trait Events: Send + Sync + 'static {
    /// `accept(2)` failed on `listener`.
    fn accept_failed(&self, listener: &'static str, error: &io::Error) {
        let _ = (listener, error);
    }

    /// A connection on `listener` was closed before it was served: `reason` is an
    /// [`Eviction::label`](crate::Eviction::label), [`PoolFull::label`](crate::PoolFull::label)
    /// or `request_timeout`.
    fn shed(&self, listener: &'static str, reason: &'static str) {
        let _ = (listener, reason);
    }
}

/// No metrics: the log lines only.
impl Events for () {}

/// A connection that holds a slot and is waiting to be admitted.
#[derive(Debug)]
pub struct Pending {
    /// The connection.
    pub stream: TcpStream,
    /// Its peer.
    pub peer: SocketAddr,
    /// Its slot; drop it to stop counting the connection (e.g. once its handshake is done
    /// and other limits take over), or keep it in what is admitted.
    pub slot: Slot,
}

/// Limits of a plaintext listener (health, admin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaintextLimits {
    /// Most connections open at once; a new one evicts the oldest of the busiest source.
    pub max_connections: usize,
    /// Most connections open at once from one source address; a new one evicts that
    /// source's oldest.
    pub max_connections_per_source: usize,
    /// Longest a new connection may stay silent before it is closed.
    pub request_timeout: Duration,
}

/// The admitted connections of a listener, as a stream a server can serve; never yields an
/// error (accept errors are handled inside), ends when the listener's loop stops.
pub struct Incoming<T>(ReceiverStream<T>);

/// Accepts connections on `listener` until `shutdown` or until the returned stream is
/// dropped: every connection gets a slot of a pool of `limits`, then `admit` decides
/// (concurrently, one task per connection) what to yield for it, if anything. `admit` is
/// abandoned when the slot is evicted, and `admit` must bound its own duration.
pub fn accept<T, F, Fut>(
    listener: TcpListener,
    name: &'static str,
    limits: PoolLimits,
    events: Arc<dyn Events>,
    shutdown: CancellationToken,
    admit: F,
) -> Incoming<T>
where
    T: Send + 'static,
    F: Fn(Pending) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let pool = Pool::new(limits);
    tokio::spawn(accept_loop(
        listener,
        name,
        pool,
        events,
        shutdown,
        tx,
        Arc::new(admit),
    ));
    Incoming(ReceiverStream::new(rx))
}

/// [`accept`] for a plaintext server: a connection must send its first bytes within the
/// request timeout and is then yielded with its slot (evicted later, its next read fails).
pub fn plaintext(
    listener: TcpListener,
    name: &'static str,
    limits: PlaintextLimits,
    events: Arc<dyn Events>,
    shutdown: CancellationToken,
) -> Incoming<Admitted<TcpStream>> {
    let timeout = limits.request_timeout;
    let pool = PoolLimits {
        total: limits.max_connections,
        per_source: limits.max_connections_per_source,
    };
    let shed_events = Arc::clone(&events);
    let shed_log = Arc::new(Mutex::new(Throttle::new(LOG_INTERVAL)));
    accept(listener, name, pool, events, shutdown, move |pending| {
        let events = Arc::clone(&shed_events);
        let shed_log = Arc::clone(&shed_log);
        async move {
            let Pending { stream, peer, slot } = pending;
            let mut first = [0u8; 1];
            match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {
                    slot.spoke();
                    Some(Admitted::new(stream, peer, slot))
                }
                // Closed, or reset, before it said anything.
                Ok(_) => None,
                Err(_) => {
                    events.shed(name, "request_timeout");
                    log_shed(&shed_log, name, peer.ip(), "request_timeout");
                    None
                }
            }
        }
    })
}

async fn accept_loop<T, F, Fut>(
    listener: TcpListener,
    name: &'static str,
    pool: Pool,
    events: Arc<dyn Events>,
    shutdown: CancellationToken,
    tx: mpsc::Sender<T>,
    admit: Arc<F>,
) where
    T: Send + 'static,
    F: Fn(Pending) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    let mut failures = AcceptFailures::default();
    let shed_log = Arc::new(Mutex::new(Throttle::new(LOG_INTERVAL)));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                failures.succeeded();
                accepted
            }
            Err(error) => {
                events.accept_failed(name, &error);
                let delay = failures.failed(&error, Instant::now());
                if let Some(held) = delay.log {
                    tracing::warn!(
                        listener = name,
                        %error,
                        held_back = held,
                        retry_in = ?delay.wait,
                        limits = ?pool.limits(),
                        open = pool.len(),
                        "accepting a connection failed"
                    );
                }
                if let Some(wait) = delay.wait {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                continue;
            }
        };
        let (slot, eviction) = match pool.admit(peer.ip().to_canonical()) {
            Ok(admitted) => admitted,
            Err(full) => {
                // Dropping the stream closes it.
                events.shed(name, full.label());
                log_shed(&shed_log, name, peer.ip(), full.label());
                continue;
            }
        };
        if let Some(eviction) = eviction {
            events.shed(name, eviction.label());
            log_shed(&shed_log, name, peer.ip(), eviction.label());
        }
        let evicted = slot.evicted();
        let admitted = admit(Pending { stream, peer, slot });
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let admitted = tokio::select! {
                biased;
                () = evicted => return,
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                admitted = admitted => admitted,
            };
            if let Some(admitted) = admitted {
                // The server stopped: the connection just closes.
                let _ = tx.send(admitted).await;
            }
        });
    }
}

/// Logs a closed connection at most once per interval (a flood closes thousands).
fn log_shed(log: &Mutex<Throttle>, listener: &'static str, source: IpAddr, reason: &'static str) {
    let due = log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(Instant::now());
    match due {
        Some(held) => tracing::warn!(
            listener,
            %source,
            reason,
            held_back = held,
            "closing connections to stay within the listener's limits"
        ),
        None => tracing::debug!(listener, %source, reason, "closing a connection"),
    }
}

/// Backoff and log throttling of accept errors.
#[derive(Debug)]
struct AcceptFailures {
    backoff: Option<Duration>,
    log: Throttle,
}

/// What to do after an accept error.
#[derive(Debug, PartialEq, Eq)]
struct AfterFailure {
    /// How long to wait before accepting again (exhausted resources only).
    wait: Option<Duration>,
    /// Log it, with this many errors held back since the last line.
    log: Option<u64>,
}

impl Default for AcceptFailures {
    fn default() -> Self {
        Self {
            backoff: None,
            log: Throttle::new(LOG_INTERVAL),
        }
    }
}

impl AcceptFailures {
    fn succeeded(&mut self) {
        self.backoff = None;
    }

    fn failed(&mut self, error: &io::Error, now: Instant) -> AfterFailure {
        let wait = is_exhaustion(error).then(|| {
            let next = self
                .backoff
                .map_or(BACKOFF_MIN, |d| (d * 2).min(BACKOFF_MAX));
            self.backoff = Some(next);
            next
        });
        AfterFailure {
            wait,
            log: self.log.admit(now),
        }
    }
}

/// Errors that mean the process or the system ran out of something and that clear only
/// when connections close.
fn is_exhaustion(error: &io::Error) -> bool {
    use rustix::io::Errno;
    error.raw_os_error().is_some_and(|code| {
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
            .iter()
            .any(|e| e.raw_os_error() == code)
    })
}

// === impl Incoming ===

impl<T> Stream for Incoming<T> {
    type Item = Result<T, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|next| next.map(Ok))
    }
}

impl<T> std::fmt::Debug for Incoming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl<T> Incoming<T> {
    /// The next admitted connection, or `None` once the loop stopped.
    pub async fn next_admitted(&mut self) -> Option<T> {
        futures::StreamExt::next(&mut self.0).await
    }
}

#[cfg(test)]
mod tests;
