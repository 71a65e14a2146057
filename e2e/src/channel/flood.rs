//! Floods of idle TCP connections from loopback source addresses (all of 127/8 is local),
//! as a pod on the node network would open them: connect, send nothing, never close. The
//! flood runs in the background and keeps a set number open, replacing every connection
//! the server closes, until it is stopped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long one connection attempt may take (a server out of descriptors stops accepting
/// and its backlog fills up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one new connection per this interval: about 1 000 a second, enough to fill any
/// limit in about a second without starving a two-core machine.
const PACE: Duration = Duration::from_millis(1);
/// How often the held connections are checked for being closed by the server.
const SWEEP: Duration = Duration::from_millis(100);

/// A TCP connection to `to` from the loopback address `source`.
pub async fn connect_from(source: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// A running flood.
#[derive(Debug)]
pub struct Flood {
    opened: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Flood {
    /// Starts opening idle connections to `to`, round-robin over `sources`, until `hold`
    /// are open; every one the server closes is replaced.
    pub fn start(to: SocketAddr, sources: Vec<IpAddr>, hold: usize) -> Self {
        let opened = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(to, sources, hold, Arc::clone(&opened), stop.clone()));
        Self { opened, stop, task }
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::SeqCst)
    }

    /// Stops the flood and closes its connections.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    to: SocketAddr,
    sources: Vec<IpAddr>,
    hold: usize,
    opened: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut held: Vec<TcpStream> = Vec::with_capacity(hold);
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = tokio::time::Instant::now();
    let mut sources = sources.iter().cycle();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = pace.tick() => {}
        }
        if swept.elapsed() >= SWEEP {
            held.retain(|stream| !closed_by_peer(stream));
            swept = tokio::time::Instant::now();
        }
        if held.len() >= hold {
            continue;
        }
        let Some(source) = sources.next() else {
            return;
        };
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect_from(*source, to)) => connected,
        };
        if let Ok(Ok(stream)) = connected {
            opened.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    }
}

/// Whether the peer closed (or reset) `stream`; never blocks.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != io::ErrorKind::WouldBlock,
    }
}
