//! The accept loop against real sockets on loopback, and its backoff.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use super::*;

#[derive(Debug, Default)]
struct Counts {
    shed: AtomicU64,
    timeouts: AtomicU64,
}

impl Events for Counts {
    fn shed(&self, _: &'static str, reason: &'static str) {
        let counter = if reason == "request_timeout" {
            &self.timeouts
        } else {
            &self.shed
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn mk_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind source");
    socket.connect(to).await.expect("connect")
}

/// Whether the server closed `stream` (end of stream or reset) within five seconds.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn mk_limits(total: usize, per_source: usize, timeout: Duration) -> PlaintextLimits {
    PlaintextLimits {
        max_connections: total,
        max_connections_per_source: per_source,
        request_timeout: timeout,
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_request_timeout_a_talking_one_is_served() {
    let (listener, addr) = mk_listener().await;
    let counts = Arc::new(Counts::default());
    let mut incoming = plaintext(
        listener,
        "test",
        mk_limits(8, 8, Duration::from_millis(300)),
        counts.clone(),
        CancellationToken::new(),
    );
    let mut silent = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
    let mut talking = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).await;
    talking
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut admitted = tokio::time::timeout(Duration::from_secs(5), incoming.next_admitted())
        .await
        .expect("admitted in time")
        .expect("loop running");
    assert_eq!(admitted.peer().ip(), Ipv4Addr::new(127, 0, 0, 3));
    // What was peeked is still there for the server.
    let mut head = [0u8; 3];
    admitted.read_exact(&mut head).await.expect("read");
    assert_eq!(&head, b"GET");
    assert!(
        closed_by_server(&mut silent).await,
        "silent connection closed"
    );
    assert_eq!(counts.timeouts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_flood_evicts_its_own_connections_before_a_client_that_spoke() {
    let (listener, addr) = mk_listener().await;
    let counts = Arc::new(Counts::default());
    let mut incoming = plaintext(
        listener,
        "test",
        mk_limits(4, 2, Duration::from_secs(30)),
        counts.clone(),
        CancellationToken::new(),
    );
    // A client that spoke and was handed to the server.
    let client_ip = Ipv4Addr::new(127, 0, 0, 5);
    let mut client = connect_from(client_ip, addr).await;
    client.write_all(b"x").await.expect("write");
    let mut served = tokio::time::timeout(Duration::from_secs(5), incoming.next_admitted())
        .await
        .expect("admitted")
        .expect("running");

    // A flood from one address: each new connection evicts that address's oldest.
    let flood_ip = Ipv4Addr::new(127, 0, 0, 6);
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(connect_from(flood_ip, addr).await);
    }
    assert!(closed_by_server(&mut flood[0]).await, "oldest evicted");
    assert!(closed_by_server(&mut flood[47]).await);
    // Other sources fill the pool: the busiest source (the flood's) pays first.
    for last in 10..12 {
        flood.push(connect_from(Ipv4Addr::new(127, 0, 0, last), addr).await);
    }
    let mut byte = [0u8; 1];
    served.read_exact(&mut byte).await.expect("still served");
    assert_eq!(&byte, b"x");
    // Now every source holds one slot; the client's is the oldest, but it has spoken: the
    // next source evicts the oldest silent one, the flood's last.
    flood.push(connect_from(Ipv4Addr::new(127, 0, 0, 12), addr).await);
    assert!(closed_by_server(&mut flood[49]).await);
    client.write_all(b"z").await.expect("write");
    served.read_exact(&mut byte).await.expect("still served");
    assert_eq!(&byte, b"z");
    drop(client);
    // 48 by the single source, one by 127.0.0.11, one by 127.0.0.12.
    assert_eq!(counts.shed.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn a_served_connection_fails_its_next_read_once_evicted() {
    let (listener, addr) = mk_listener().await;
    let mut incoming = plaintext(
        listener,
        "test",
        mk_limits(4, 1, Duration::from_secs(30)),
        Arc::new(()),
        CancellationToken::new(),
    );
    let source = Ipv4Addr::new(127, 0, 0, 7);
    let mut client = connect_from(source, addr).await;
    client.write_all(b"x").await.expect("write");
    let mut served = tokio::time::timeout(Duration::from_secs(5), incoming.next_admitted())
        .await
        .expect("admitted")
        .expect("running");
    let mut byte = [0u8; 1];
    served.read_exact(&mut byte).await.expect("read");
    // The source's one slot goes to its newest connection; the idle served one, blocked in
    // a read, wakes up with an error.
    let _newer = connect_from(source, addr).await;
    let read = tokio::time::timeout(Duration::from_secs(5), served.read(&mut byte))
        .await
        .expect("woken by the eviction");
    assert!(
        read.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionAborted),
        "evicted"
    );
    drop(served);
    assert!(closed_by_server(&mut client).await);
}

#[tokio::test]
async fn the_loop_stops_with_its_stream_or_on_shutdown() {
    let (listener, addr) = mk_listener().await;
    let shutdown = CancellationToken::new();
    let mut incoming = plaintext(
        listener,
        "test",
        mk_limits(4, 4, Duration::from_secs(30)),
        Arc::new(()),
        shutdown.clone(),
    );
    let mut pending = connect_from(Ipv4Addr::LOCALHOST, addr).await;
    shutdown.cancel();
    assert!(
        closed_by_server(&mut pending).await,
        "pending connection closed"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), incoming.next_admitted())
        .await
        .expect("ended in time");
    assert!(ended.is_none());
}

#[test]
fn exhaustion_backs_off_up_to_a_second_other_errors_do_not() {
    let now = Instant::now();
    let emfile = io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
    let aborted = io::Error::from_raw_os_error(rustix::io::Errno::CONNABORTED.raw_os_error());
    let mut failures = AcceptFailures::default();
    let waits: Vec<_> = (0..10)
        .map(|_| failures.failed(&emfile, now).wait.expect("waits"))
        .collect();
    assert_eq!(waits[0], BACKOFF_MIN);
    assert_eq!(waits[1], BACKOFF_MIN * 2);
    assert_eq!(waits[9], BACKOFF_MAX);
    assert_eq!(failures.failed(&aborted, now).wait, None);
    failures.succeeded();
    assert_eq!(failures.failed(&emfile, now).wait, Some(BACKOFF_MIN));
    // Twelve errors in the same instant: one line, eleven held back for the next.
    assert_eq!(
        failures.failed(&emfile, now + LOG_INTERVAL).log,
        Some(11),
        "one line per interval, counting those held back"
    );
}
