//! The broker down, killed, restarted, or cut off mid-stream: every message still ends
//! exactly once, within its send timeout, and what was acknowledged can be read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::poll;
use tokio::time::Instant;
use wharf_producer_ack::{Error, MessageId, OnReconnect, Producer, PulsarMessage};
use wharf_testkit::{Direction, FaultProxy, PulsarLite, eventually};

/// Bounds waits on observable state that only a bug (or a broker that does not start) can
/// exceed.
const WAIT: Duration = Duration::from_secs(30);

/// How late after its deadline (its send timeout) a message's outcome may arrive here: the
/// deadline is a timer of the task that delivers the outcome (the caller's for `produce`,
/// the producer's for an ack), which never waits on the network for it; what is left is the
/// time the runtime takes to run that task. Milliseconds on an idle machine, but these tests
/// share two cores with other builds and brokers: the send timeout again, at least 2 s (the
/// slack docs/producer-ack.md states).
fn scheduling_slack(send_timeout: Duration) -> Duration {
    send_timeout.max(Duration::from_secs(2))
}

type Outcomes = Arc<Mutex<BTreeMap<u32, Vec<Result<MessageId, Error>>>>>;

/// Produces `i` with an ack that records its outcome under `i`.
async fn produce_recorded(producer: &Producer, outcomes: &Outcomes, i: u32) {
    let outcomes = outcomes.clone();
    producer
        .produce_with(
            PulsarMessage::new(i.to_be_bytes().to_vec()),
            move |result: Result<MessageId, Error>| {
                outcomes.lock().unwrap().entry(i).or_default().push(result);
            },
        )
        .await;
}

async fn restart(broker: &Arc<PulsarLite>) {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || broker.restart())
        .await
        .unwrap()
        .expect("broker restarts");
}

/// With the broker down, waits until the producer has noticed that it is not connected,
/// then has failed `n` connection attempts of its own and begun the next. Each attempt is a
/// connection the proxy accepts and then closes (it has nowhere to forward it), and the
/// next begins only after the producer handled that failure. One more accept is allowed
/// for a connection the `pulsar` crate (which retries a lost connection by itself) had begun
/// before the producer gave its client up.
async fn failed_connection_attempts(producer: &Producer, proxy: &FaultProxy, n: u64) {
    eventually("the producer to notice the loss", WAIT, || async {
        !producer.is_connected()
    })
    .await
    .unwrap();
    let since = proxy.connections_accepted();
    eventually(&format!("{n} failed connection attempts"), WAIT, || async {
        proxy.connections_accepted() >= since + n + 2
    })
    .await
    .unwrap();
}

/// The indexes of the 4-byte payloads produced by [`produce_recorded`] (others skipped).
fn read_indexes(read: &[common::ReadBack]) -> Vec<u32> {
    read.iter()
        .filter(|m| m.payload.len() == 4)
        .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_the_broker_is_down_and_connects_when_it_comes_up() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(20);
    let broker = Arc::new(PulsarLite::start().unwrap());
    let proxy = broker.proxy().expect("pulsar-lite runs behind its proxy");
    broker.stop().unwrap();
    let producer = Producer::builder(broker.url(), common::topic("late-broker"))
        .send_timeout(SEND_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .start()
        .expect("starts without a broker");
    let mut pending = std::pin::pin!(producer.produce("waited for the broker"));
    assert!(
        poll!(pending.as_mut()).is_pending(),
        "handed to the producer, it waits"
    );
    // A failed connection attempt is where a producer that gave up on waiting messages would
    // fail this one: let two fail after the message was handed over.
    failed_connection_attempts(&producer, proxy, 2).await;
    assert!(!producer.is_connected());
    assert!(
        poll!(pending.as_mut()).is_pending(),
        "the message waits for the connection through failed attempts"
    );
    restart(&broker).await;
    let result = tokio::time::timeout(SEND_TIMEOUT, pending)
        .await
        .expect("produce resolves within its send timeout");
    assert!(result.is_ok(), "stored once the broker is up: {result:?}");
    assert!(producer.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fails_with_timeout_within_the_send_timeout_when_the_broker_is_stopped() {
    const SEND_TIMEOUT: Duration = Duration::from_millis(1500);
    let broker = PulsarLite::start().unwrap();
    let producer = Producer::builder(broker.url(), common::topic("timeout"))
        .send_timeout(SEND_TIMEOUT)
        .start()
        .unwrap();
    producer
        .produce("before")
        .await
        .expect("stored while the broker runs");
    broker.kill().unwrap();

    let started = Instant::now();
    let result = producer.produce("after").await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    // never before its deadline (counted from the call, after `started`), and at it but for
    // the time the runtime takes to run the caller
    assert!(
        elapsed >= SEND_TIMEOUT && elapsed < SEND_TIMEOUT + scheduling_slack(SEND_TIMEOUT),
        "{elapsed:?}"
    );

    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .produce_with("ack later", move |r: Result<MessageId, Error>| {
            let _ = tx.send(r);
        })
        .await;
    let acked = tokio::time::timeout(SEND_TIMEOUT + scheduling_slack(SEND_TIMEOUT), rx)
        .await
        .expect("ack within the send timeout")
        .unwrap();
    assert!(matches!(acked, Err(Error::Timeout { .. })), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_every_message_ends_once_and_acked_ones_read_back() {
    const TOTAL: u32 = 3_000;
    common::init_logs();
    let broker = Arc::new(PulsarLite::start().unwrap());
    let topic = common::topic("restart");
    let producer = Producer::builder(broker.url(), &topic)
        .window(200)
        .send_timeout(Duration::from_secs(30))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .start()
        .unwrap();
    let outcomes: Outcomes = Arc::default();
    let killer = {
        let broker = broker.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            while outcomes.lock().unwrap().len() < 1_000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            broker.kill().unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            restart(&broker).await;
        })
    };
    for i in 0..TOTAL {
        produce_recorded(&producer, &outcomes, i).await;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await; // a stream of about 3 s, not a burst
        }
    }
    killer.await.unwrap();
    producer.close().await;

    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), TOTAL as usize, "every message got an ack");
    assert!(
        outcomes.values().all(|v| v.len() == 1),
        "no message acked twice"
    );
    let failed: Vec<_> = outcomes.iter().filter(|(_, v)| v[0].is_err()).collect();
    assert!(
        failed.is_empty(),
        "a 1 s outage is well within the 30 s send timeout: {failed:?}"
    );
    assert!(producer.reconnects() >= 1, "the restart was noticed");

    let read = read_indexes(
        &common::read_back(
            &broker.url(),
            &topic,
            TOTAL as usize * 2,
            Duration::from_secs(3),
        )
        .await,
    );
    let mut first_seen = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in read {
        if seen.insert(i) {
            first_seen.push(i);
        }
    }
    assert_eq!(
        first_seen,
        (0..TOTAL).collect::<Vec<_>>(),
        "every acked message is stored, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_makes_produce_wait_instead_of_failing() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(20);
    let broker = Arc::new(PulsarLite::start().unwrap());
    let proxy = broker.proxy().expect("pulsar-lite runs behind its proxy");
    let producer = Producer::builder(broker.url(), common::topic("window"))
        .window(3)
        .send_timeout(SEND_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    broker.kill().unwrap();
    let outcomes: Outcomes = Arc::default();
    for i in 0..3 {
        produce_recorded(&producer, &outcomes, i).await;
    }
    assert_eq!(producer.pending(), 3);
    let mut fourth = std::pin::pin!(producer.produce("fourth"));
    // A full window refused at once would resolve this first poll.
    assert!(
        poll!(fourth.as_mut()).is_pending(),
        "the fourth message waits for room, it does not fail"
    );
    // Nor does it fail later while the broker stays down: once the producer has noticed the
    // loss, the window's messages wait through failed connection attempts, and so does the
    // fourth.
    failed_connection_attempts(&producer, proxy, 2).await;
    assert!(
        poll!(fourth.as_mut()).is_pending(),
        "the fourth message still waits for room"
    );
    assert_eq!(producer.pending(), 3, "the window holds");
    assert!(
        outcomes.lock().unwrap().is_empty(),
        "the window's messages wait too"
    );
    restart(&broker).await;
    let fourth = tokio::time::timeout(SEND_TIMEOUT, fourth)
        .await
        .expect("produce resolves within its send timeout");
    assert!(fourth.is_ok(), "{fourth:?}");
    tokio::time::timeout(SEND_TIMEOUT, producer.close())
        .await
        .expect("the window drains within the send timeout");
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(
        outcomes.values().all(|v| v.len() == 1 && v[0].is_ok()),
        "{outcomes:?}"
    );
}

/// Bytes the kernel holds on the TCP connections to `port` (what clients wrote and the
/// listener did not read yet): the send queues of the sockets connected to `port` plus the
/// receive queues of the sockets accepted on it, from /proc/net/tcp.
fn kernel_bytes_queued_to(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let queue = |queues: &str, tx: bool| {
        let (t, r) = queues.split_once(':').unwrap();
        u64::from_str_radix(if tx { t } else { r }, 16).unwrap()
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, queues) = (fields[1], fields[2], fields[3], fields[4]);
            if state != "01" {
                return None; // only established connections
            }
            if port_of(remote) == Some(port) {
                Some(queue(queues, true))
            } else if port_of(local) == Some(port) {
                Some(queue(queues, false))
            } else {
                None
            }
        })
        .sum()
}

/// The `pulsar` crate queues at most ~100 sends per connection by default and answers
/// `SlowDown` past that; wharf sizes that queue for its whole window and has the crate wait
/// instead. To reach the case, the link to the broker is held (a silent partition, requests
/// only) while far more than 100 large messages are produced: the crate's writer blocks once
/// the kernel's socket buffers are full, and every later message waits in the crate's queue.
/// The test measures how much the kernel holds and checks that more than 100 messages cannot
/// be anywhere but inside the client. With the protection removed (the crate's default queue
/// and no blocking), the crate says `SlowDown`, wharf treats it as a lost connection, and the
/// reconnect this test forbids happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_more_messages_than_the_pulsar_crates_queue_never_see_slow_down() {
    const TOTAL: u32 = 600;
    const SIZE: usize = 32 * 1024;
    const CRATE_QUEUE: u64 = 100;
    common::init_logs();
    let broker = PulsarLite::start_behind_proxy().unwrap();
    let proxy = broker.proxy().unwrap();
    // The default window (1000) holds every message; the send timeout leaves the held link
    // 5 s before a ping counts it as lost.
    let producer = Producer::builder(broker.url(), common::topic("no-slowdown"))
        .send_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    let accepted_before = proxy.connections_accepted();

    // A hold longer than the ping limit (5 s at this send timeout) is rightly taken for a lost
    // connection; on a machine too loaded to fill the buffers within it, the no-reconnect check
    // below has nothing to say and is skipped (the order check still runs).
    let ping_limit = Duration::from_secs(5);
    let held_at = Instant::now();
    proxy.hold_direction(Direction::ToUpstream);
    let outcomes: Outcomes = Arc::default();
    for i in 0..TOTAL {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(SIZE, b'x');
        let outcomes = outcomes.clone();
        producer
            .produce_with(
                PulsarMessage::new(payload),
                move |r: Result<MessageId, Error>| {
                    outcomes.lock().unwrap().entry(i).or_default().push(r);
                },
            )
            .await;
    }
    assert_eq!(
        producer.pending(),
        TOTAL as usize,
        "nothing can be acknowledged"
    );
    // Wait until the kernel takes no more: the crate's writer is blocked.
    let mut last = u64::MAX;
    let in_kernel = wharf_testkit::eventually_some(
        "the socket buffers towards the broker to fill up",
        Duration::from_secs(3),
        || {
            let now = kernel_bytes_queued_to(proxy.port());
            let stable = now > 0 && now == last;
            last = now;
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                stable.then_some(now)
            }
        },
    )
    .await
    .unwrap();
    let at_most_in_kernel = in_kernel.div_ceil(SIZE as u64);
    let in_client = u64::from(TOTAL) - at_most_in_kernel - 1; // one frame being written
    assert!(
        in_client > CRATE_QUEUE,
        "the case is reached: {in_client} messages wait inside the client (the kernel holds \
         {in_kernel} bytes, at most {at_most_in_kernel} messages), more than the pulsar crate's \
         default {CRATE_QUEUE}"
    );
    let held_for = held_at.elapsed();
    proxy.release();

    wharf_testkit::eventually(
        "every message to be acknowledged",
        Duration::from_secs(30),
        || async { outcomes.lock().unwrap().len() == TOTAL as usize },
    )
    .await
    .unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    let ids: Vec<MessageId> = outcomes
        .iter()
        .map(|(i, v)| match &v[..] {
            [Ok(id)] => *id,
            other => panic!("message {i}: {other:?}"),
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "stored once each, in order"
    );
    // a second of margin for the ping's own scheduling on a loaded machine
    if held_for + Duration::from_secs(1) < ping_limit {
        assert_eq!(
            (producer.reconnects(), proxy.connections_accepted()),
            (0, accepted_before),
            "no SlowDown from the pulsar crate (wharf would have reconnected on it); \
             the link was held {held_for:?}"
        );
    } else {
        eprintln!(
            "the link was held {held_for:?}, too close to the {ping_limit:?} ping limit for the \
             no-reconnect check to mean anything; skipped it (the machine is loaded)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_stream_are_resent_in_order() {
    const TOTAL: u32 = 1_500;
    let broker = PulsarLite::start_behind_proxy().unwrap();
    let topic = common::topic("cut");
    let producer = Producer::builder(broker.url(), &topic)
        .window(100)
        .send_timeout(Duration::from_secs(30))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    let proxy = broker.proxy().unwrap();
    producer.produce("connect first").await.unwrap();
    assert!(
        proxy.active_connections() > 0,
        "the producer's connection goes through the proxy"
    );
    let accepted_before = proxy.connections_accepted();
    let outcomes: Outcomes = Arc::default();
    for i in 0..TOTAL {
        produce_recorded(&producer, &outcomes, i).await;
        if i == 500 || i == 1_000 {
            proxy.cut().unwrap();
        }
    }
    producer.close().await;
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), TOTAL as usize);
    assert!(
        outcomes.values().all(|v| v.len() == 1 && v[0].is_ok()),
        "each acked once, successfully"
    );
    assert!(
        proxy.connections_accepted() >= accepted_before + 2,
        "the client reconnected after each cut (by the pulsar crate or by wharf)"
    );
    let read = read_indexes(
        &common::read_back(
            &broker.url(),
            &topic,
            TOTAL as usize * 2,
            Duration::from_secs(3),
        )
        .await,
    );
    let mut seen = std::collections::BTreeSet::new();
    let first_seen: Vec<u32> = read.into_iter().filter(|i| seen.insert(*i)).collect();
    assert_eq!(first_seen, (0..TOTAL).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_reconnect_fail_unacknowledged_messages_fail_with_connection_lost() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(10);
    let broker = Arc::new(PulsarLite::start().unwrap());
    let proxy = broker.proxy().expect("pulsar-lite runs behind its proxy");
    let producer = Producer::builder(broker.url(), common::topic("fail-policy"))
        .on_reconnect(OnReconnect::Fail)
        .send_timeout(SEND_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    // a frozen broker: the next messages are sent but get no receipt
    signal(&broker, "STOP").await;
    let connections = proxy.connections_accepted();
    let outcomes: Outcomes = Arc::default();
    for i in 0..5 {
        produce_recorded(&producer, &outcomes, i).await;
    }
    // The producer gives the frozen connection up when a ping goes unanswered (a quarter of
    // the send timeout), fails at once what it had handed to it, then tries a new connection.
    // That attempt begins after the failures were reported: the outcomes are complete then.
    // All of it within the send timeout, so the failures cannot be send timeouts.
    eventually(
        "the lost connection's messages failed, then a new connection began",
        SEND_TIMEOUT,
        || async {
            !outcomes.lock().unwrap().is_empty() && proxy.connections_accepted() > connections
        },
    )
    .await
    .unwrap();
    let lost = outcomes.lock().unwrap().clone();
    assert!(
        !lost.is_empty(),
        "the messages sent before the loss failed at once"
    );
    broker.kill().unwrap();
    for (i, v) in &lost {
        assert!(
            matches!(v[..], [Err(Error::ConnectionLost { .. })]),
            "message {i}: {v:?}"
        );
    }
    // messages not yet handed over when the loss was noticed go out after the reconnect
    restart(&broker).await;
    // (a connection that stumbles again right after the restart fails its message too)
    let mut after = producer.produce("after the outage").await;
    for _ in 0..2 {
        if after.is_ok() {
            break;
        }
        after = producer.produce("after the outage, again").await;
    }
    assert!(after.is_ok(), "the handle is still valid: {after:?}");
    tokio::time::timeout(SEND_TIMEOUT, producer.close())
        .await
        .expect("the window drains within the send timeout");
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 5, "every message got an ack");
    for (i, v) in &outcomes {
        let ok = matches!(v[..], [Err(Error::ConnectionLost { .. })] | [Ok(_)]);
        assert!(
            ok && (v[0].is_err() == lost.contains_key(i)),
            "message {i}: {v:?}"
        );
    }
}

/// The `pulsar` crate re-creates a producer whose connection dropped, and re-sends its
/// unacknowledged messages, by itself and silently; while it does, wharf's pings wait on it
/// (the crate serialises them behind the re-creation), so a re-creation shorter than a
/// ping's limit (here 5 s) used to pass for a healthy connection. Five messages are sent on a
/// link that holds them (requests only), the link is cut while nothing else is handed over
/// (the window holds them all) and the crate could re-make it at once: the loss must still
/// reach wharf, so that `OnReconnect::Fail` fails the five and `reconnects` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_pulsar_crate_re_makes_by_itself_still_counts_as_lost() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(30);
    const SIZE: usize = 16 * 1024;
    common::init_logs();
    let broker = PulsarLite::start_behind_proxy().unwrap();
    let proxy = broker.proxy().unwrap();
    let producer = Producer::builder(broker.url(), common::topic("silent-recovery"))
        .on_reconnect(OnReconnect::Fail)
        .send_timeout(SEND_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    proxy.hold_direction(Direction::ToUpstream);
    let outcomes: Outcomes = Arc::default();
    for i in 0..5u32 {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(SIZE, b'x');
        let outcomes = outcomes.clone();
        producer
            .produce_with(
                PulsarMessage::new(payload),
                move |r: Result<MessageId, Error>| {
                    outcomes.lock().unwrap().entry(i).or_default().push(r);
                },
            )
            .await;
    }
    // The five were written to the connection once the kernel holds all their bytes but the
    // one chunk (16 KiB) the proxy may have read before it noticed the hold; pings are tiny.
    const PROXY_CHUNK: usize = 16 * 1024;
    eventually("the five messages to be on the wire", WAIT, || async {
        kernel_bytes_queued_to(proxy.port()) >= (5 * SIZE - PROXY_CHUNK) as u64
    })
    .await
    .unwrap();
    assert!(outcomes.lock().unwrap().is_empty(), "no receipt while held");
    proxy.cut().unwrap();
    proxy.release();
    eventually("the five messages to end", WAIT, || async {
        outcomes.lock().unwrap().len() == 5
    })
    .await
    .unwrap();
    assert!(
        producer.reconnects() >= 1,
        "the lost connection was noticed by wharf"
    );
    let outcomes = outcomes.lock().unwrap().clone();
    for (i, v) in &outcomes {
        assert!(
            matches!(v[..], [Err(Error::ConnectionLost { .. })]),
            "message {i}, handed to the lost connection, fails under OnReconnect::Fail: {v:?}"
        );
    }
    let after = tokio::time::timeout(SEND_TIMEOUT, producer.produce("after"))
        .await
        .expect("resolves within the send timeout");
    assert!(after.is_ok(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_is_detected_and_messages_resent_when_it_thaws() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(16);
    let broker = Arc::new(PulsarLite::start().unwrap());
    let producer = Producer::builder(broker.url(), common::topic("frozen"))
        .send_timeout(SEND_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    signal(&broker, "STOP").await;
    let outcomes: Outcomes = Arc::default();
    for i in 0..20 {
        produce_recorded(&producer, &outcomes, i).await;
    }
    // A ping unanswered for a quarter of the send timeout (4 s) gives the connection up;
    // noticed within the messages' send timeout, or they could not all be stored.
    eventually(
        "a broker that answers no ping to count as lost",
        SEND_TIMEOUT,
        || async { !producer.is_connected() },
    )
    .await
    .unwrap();
    signal(&broker, "CONT").await;
    // every message ends by its deadline (plus scheduling), stored or not
    let _ = eventually(
        "the 20 messages to end",
        SEND_TIMEOUT + scheduling_slack(SEND_TIMEOUT),
        || async { outcomes.lock().unwrap().len() == 20 },
    )
    .await;
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(
        outcomes.len() == 20 && outcomes.values().all(|v| v.len() == 1 && v[0].is_ok()),
        "{outcomes:?}"
    );
    assert!(producer.reconnects() >= 1);
}

/// Sends signal `name` to the broker; after `STOP`, returns once every thread of it is stopped
/// (`kill` returns when the signal is queued, and a broker thread running then could still
/// answer what the test sends next).
async fn signal(broker: &PulsarLite, name: &str) {
    let pid = broker.pid().expect("broker running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    if name == "STOP" {
        eventually("the broker to stop", WAIT, || async {
            all_threads_stopped(pid)
        })
        .await
        .unwrap();
    }
}

/// Every thread of process `pid` is stopped (state `T` in /proc).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // the state follows the command name, which is in parentheses
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}
