//! The fault proxy, specified against a plain TCP echo server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use wharf_testkit::FaultProxy;

/// An echo server on its own threads: independent of any runtime and of the proxy.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).unwrap();
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

/// "Promptly": generous enough for a loaded two-core machine, far below any hang.
const PROMPT: Duration = Duration::from_millis(250);

/// True when the peer closed the connection (EOF or reset) within the read timeout.
fn sees_close(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

#[test]
fn bytes_pass_through_unchanged_in_both_directions() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    // Write from a second handle so that a large payload cannot deadlock on full buffers.
    let mut writer = client.try_clone().unwrap();
    let to_send = payload.clone();
    let sender = std::thread::spawn(move || writer.write_all(&to_send).unwrap());
    let mut back = vec![0u8; payload.len()];
    client.read_exact(&mut back).unwrap();
    sender.join().unwrap();

    assert_eq!(back, payload);
    assert_eq!(proxy.connections_accepted(), 1);
}

#[test]
fn latency_is_added_to_each_direction_and_can_be_cleared() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    round_trip(&mut client, b"warm-up");

    proxy.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    round_trip(&mut client, b"slow");
    let slow = started.elapsed();

    proxy.clear_latency();
    let started = Instant::now();
    round_trip(&mut client, b"fast");
    let fast = started.elapsed();

    assert!(
        slow >= Duration::from_millis(300),
        "round trip took {slow:?}, expected >= 300 ms (150 ms each way)"
    );
    assert!(slow < Duration::from_secs(2), "round trip took {slow:?}");
    assert!(
        fast < PROMPT,
        "round trip took {fast:?} after clear_latency"
    );
}

#[test]
fn cut_closes_open_connections_promptly_and_new_ones_are_accepted() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut first = connect(proxy.addr()).unwrap();
    let mut second = connect(proxy.addr()).unwrap();
    round_trip(&mut first, b"a");
    round_trip(&mut second, b"b");

    let started = Instant::now();
    proxy.cut().unwrap();
    assert!(
        started.elapsed() < PROMPT,
        "cut took {:?}",
        started.elapsed()
    );
    assert!(
        sees_close(&mut first),
        "first connection still open after cut"
    );
    assert!(
        sees_close(&mut second),
        "second connection still open after cut"
    );
    assert_eq!(proxy.active_connections(), 0);

    let mut third = connect(proxy.addr()).unwrap();
    assert_eq!(round_trip(&mut third, b"again"), b"again");
    assert_eq!(proxy.connections_accepted(), 3);
}

#[test]
fn refuse_makes_connects_fail_fast_and_restore_listens_on_the_same_port() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let addr = proxy.addr();
    let mut open = connect(addr).unwrap();
    round_trip(&mut open, b"before");

    proxy.refuse().unwrap();
    let started = Instant::now();
    let refused = connect(addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert!(
        started.elapsed() < PROMPT,
        "connect took {:?}",
        started.elapsed()
    );
    // Refusing new connections leaves the open one alone.
    assert_eq!(round_trip(&mut open, b"during"), b"during");

    proxy.restore().unwrap();
    assert_eq!(proxy.addr(), addr);
    let mut again = connect(addr).unwrap();
    assert_eq!(round_trip(&mut again, b"after"), b"after");
}

#[test]
fn down_closes_open_connections_and_refuses_new_ones_until_restored() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut open = connect(proxy.addr()).unwrap();
    round_trip(&mut open, b"x");

    proxy.down().unwrap();
    assert!(sees_close(&mut open), "connection still open after down");
    assert_eq!(
        connect(proxy.addr()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );

    proxy.restore().unwrap();
    let mut again = connect(proxy.addr()).unwrap();
    assert_eq!(round_trip(&mut again, b"y"), b"y");
}

#[test]
fn controls_can_be_repeated_in_any_order() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    for _ in 0..3 {
        proxy.restore().unwrap(); // already listening: no-op
        proxy.refuse().unwrap();
        proxy.refuse().unwrap();
        proxy.cut().unwrap();
        proxy.restore().unwrap();
    }
    let mut client = connect(proxy.addr()).unwrap();
    assert_eq!(round_trip(&mut client, b"ok"), b"ok");
}

#[test]
fn a_dead_upstream_closes_the_client_connection() {
    let nothing = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = FaultProxy::start(nothing).unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    assert!(sees_close(&mut client));
}

#[test]
fn dropping_the_proxy_closes_its_connections_and_its_port() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let addr = proxy.addr();
    let mut open = connect(addr).unwrap();
    round_trip(&mut open, b"x");

    drop(proxy);
    assert!(sees_close(&mut open));
    let deadline = Instant::now() + Duration::from_secs(2);
    while connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "proxy port still accepting after drop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn controls_work_from_inside_a_single_threaded_runtime() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    proxy.cut().unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[test]
fn restore_reports_a_taken_port_and_succeeds_once_it_is_free() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    proxy.refuse().unwrap();
    let squatter = TcpListener::bind(proxy.addr()).unwrap();

    let err = proxy.restore().unwrap_err();
    assert!(err.to_string().contains("could not listen"), "{err}");

    drop(squatter);
    proxy.restore().unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    assert_eq!(round_trip(&mut client, b"back"), b"back");
}
