//! [`Admitted`]: an accepted connection that holds its slot of the listener's pool until it
//! closes, and fails its next read or write once evicted (so the server serving it drops it
//! and the descriptor is freed even when the peer is idle).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::pool::Slot;

/// A connection with a slot; evicted, it reads and writes `ConnectionAborted`.
pub struct Admitted<S> {
    io: S,
    peer: SocketAddr,
    slot: Slot,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Admitted<S> {
    /// `io` from `peer`, holding `slot`.
    pub fn new(io: S, peer: SocketAddr, slot: Slot) -> Self {
        let evicted = Box::pin(slot.evicted());
        Self {
            io,
            peer,
            slot,
            evicted,
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The underlying connection.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Ready with an error once the slot was evicted; registers the waker otherwise.
    fn poll_evicted(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.slot.is_evicted() || self.evicted.as_mut().poll(cx).is_ready() {
            Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection evicted to make room for a newer one",
            ))
        } else {
            Poll::Pending
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(error) = self.poll_evicted(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(error) = self.poll_evicted(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(error) = self.poll_evicted(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Admitted<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<S> std::fmt::Debug for Admitted<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("peer", &self.peer)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}
