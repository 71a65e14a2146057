//! Binding a listener. The unspecified IPv6 address (`[::]`, the binaries' default) binds
//! both families — IPv4 arrives as IPv4-mapped addresses — so IPv6-only, IPv6-primary and
//! IPv4 clusters reach and probe the same port; on a kernel without IPv6 (booted with
//! `ipv6.disable=1`) it falls back to `0.0.0.0` with a warning instead of failing to start.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel queues per listener (what `TcpListener::bind` uses).
pub const BACKLOG: u32 = 1024;

/// Binds `addr` for listening (within a Tokio runtime). `[::]:port` listens on IPv6 and
/// IPv4 (`IPV6_V6ONLY` off, whatever `net.ipv6.bindv6only` says); where the kernel has no
/// IPv6 it listens on `0.0.0.0:port` instead. Any other address binds as given.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match TcpSocket::new_v6() {
            Ok(socket) => {
                rustix::net::sockopt::set_ipv6_v6only(&socket, false)?;
                listen(socket, addr)
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error()) => {
                let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
                tracing::warn!(%addr, fallback = %v4, "the kernel has no IPv6: listening on IPv4 only");
                listen(TcpSocket::new_v4()?, v4)
            }
            Err(e) => Err(e),
        },
        SocketAddr::V4(_) => listen(TcpSocket::new_v4()?, addr),
        SocketAddr::V6(_) => listen(TcpSocket::new_v6()?, addr),
    }
}

fn listen(socket: TcpSocket, addr: SocketAddr) -> io::Result<TcpListener> {
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[tokio::test]
    async fn the_unspecified_ipv6_address_takes_both_families() -> io::Result<()> {
        let listener = bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0))?;
        let port = listener.local_addr()?.port();
        for target in [
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ] {
            let client = tokio::net::TcpStream::connect(target).await?;
            let (_, peer) = listener.accept().await?;
            assert_eq!(peer.port(), client.local_addr()?.port(), "{target}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn other_addresses_bind_as_given() -> io::Result<()> {
        let listener = bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))?;
        assert!(listener.local_addr()?.is_ipv4());
        Ok(())
    }
}
