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

/// An echo server that also counts the bytes it received, so a test sees whether a request
/// reached the upstream.
fn counting_echo_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let received = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = std::sync::Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = std::sync::Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            counter.fetch_add(n, Ordering::SeqCst);
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

/// Reads with a short timeout: `None` when nothing arrived (and the connection is still open).
fn read_nothing_for(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    let outcome = stream.read(&mut buf);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    matches!(outcome, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn hold_forwards_nothing_and_closes_nothing_until_released() {
    use std::sync::atomic::Ordering;
    let (upstream, received) = counting_echo_server();
    let proxy = FaultProxy::start(upstream).unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    round_trip(&mut client, b"warm-up");
    let before = received.load(Ordering::SeqCst);

    proxy.hold();
    assert!(proxy.is_held());
    client.write_all(b"held").unwrap();
    // Neither an answer nor a close: the read times out on an open connection.
    assert!(read_nothing_for(&mut client, Duration::from_millis(500)));
    assert_eq!(
        received.load(Ordering::SeqCst),
        before,
        "a held request reached the upstream"
    );
    // A new connection is accepted, and held as well.
    let mut second = connect(proxy.addr()).unwrap();
    second.write_all(b"x").unwrap();
    assert!(read_nothing_for(&mut second, Duration::from_millis(200)));

    proxy.release();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(
        &back, b"held",
        "held bytes are delivered in order on release"
    );
    assert_eq!(proxy.connections_accepted(), 2);
}

#[test]
fn holding_the_answers_lets_requests_take_effect_unanswered() {
    use std::sync::atomic::Ordering;
    let (upstream, received) = counting_echo_server();
    let proxy = FaultProxy::start(upstream).unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    round_trip(&mut client, b"warm-up");
    let before = received.load(Ordering::SeqCst);

    proxy.hold_direction(wharf_testkit::Direction::ToClient);
    client.write_all(b"request").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::SeqCst) < before + 7 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(read_nothing_for(&mut client, Duration::from_millis(300)));
    proxy.release();
    let mut back = [0u8; 7];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"request");
}

#[test]
fn a_one_way_delay_delivers_the_request_at_once_and_the_answer_late() {
    use std::sync::atomic::Ordering;
    let (upstream, received) = counting_echo_server();
    let proxy = FaultProxy::start(upstream).unwrap();
    let mut client = connect(proxy.addr()).unwrap();
    round_trip(&mut client, b"warm-up");
    let before = received.load(Ordering::SeqCst);

    proxy.set_direction_latency(
        wharf_testkit::Direction::ToClient,
        Duration::from_millis(600),
    );
    let started = Instant::now();
    client.write_all(b"late").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::SeqCst) < before + 4 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let reached = started.elapsed();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    let answered = started.elapsed();
    assert!(
        answered >= Duration::from_millis(600),
        "answer arrived after {answered:?}, before the 600 ms delay"
    );
    // Derived from the configured delay: a request delayed like its answer would need 600 ms.
    assert!(
        reached < Duration::from_millis(600),
        "the request reached the upstream only after {reached:?}: it was delayed too"
    );
}
