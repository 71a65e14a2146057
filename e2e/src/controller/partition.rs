//! A TCP relay between one approver replica and the testbed cluster that a test can cut,
//! to play a network partition or a frozen process: the replica's requests (renewals
//! included) fail while everything else keeps working.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The relay; dropping it stops it.
#[derive(Debug)]
pub struct Partition {
    addr: SocketAddr,
    state: Arc<RelayState>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct RelayState {
    cut: AtomicBool,
    /// Cancelled to close every relayed connection; replaced on heal.
    epoch: Mutex<CancellationToken>,
}

impl Partition {
    /// Relays `127.0.0.1:<port>` to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(RelayState {
            cut: AtomicBool::new(false),
            epoch: Mutex::new(CancellationToken::new()),
        });
        let task = tokio::spawn(relay(listener, target, Arc::clone(&state)));
        Ok(Self { addr, state, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancel();
    }

    /// Relays again.
    pub fn heal(&self) {
        *self
            .state
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = CancellationToken::new();
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn relay(listener: TcpListener, target: SocketAddr, state: Arc<RelayState>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if state.cut.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let epoch = state
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let (mut inbound, mut outbound) = (inbound, outbound);
            tokio::select! {
                () = epoch.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}
