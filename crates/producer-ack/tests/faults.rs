//! The broker down, killed, restarted, or cut off mid-stream: every message still ends
//! exactly once, within its send timeout, and what was acknowledged can be read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use wharf_producer_ack::{Error, Message, MessageId, OnReconnect, Producer};
use wharf_testkit::{Direction, PulsarLite};

type Outcomes = Arc<Mutex<BTreeMap<u32, Vec<Result<MessageId, Error>>>>>;

/// Produces `i` with an ack that records its outcome under `i`.
async fn produce_recorded(producer: &Producer, outcomes: &Outcomes, i: u32) {
    let outcomes = outcomes.clone();
    producer
        .produce_with(
            Message::new(i.to_be_bytes().to_vec()),
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

/// The indexes of the 4-byte payloads produced by [`produce_recorded`] (others skipped).
fn read_indexes(read: &[common::ReadBack]) -> Vec<u32> {
    read.iter()
        .filter(|m| m.payload.len() == 4)
        .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_the_broker_is_down_and_connects_when_it_comes_up() {
    let broker = Arc::new(PulsarLite::start().unwrap());
    broker.stop().unwrap();
    let producer = Producer::builder(broker.url(), common::topic("late-broker"))
        .send_timeout(Duration::from_secs(20))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .start()
        .expect("starts without a broker");
    let pending = tokio::spawn({
        let producer = producer.clone();
        async move { producer.produce("waited for the broker").await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!producer.is_connected());
    assert!(
        !pending.is_finished(),
        "the message waits for the connection"
    );
    restart(&broker).await;
    let result = pending.await.unwrap();
    assert!(result.is_ok(), "stored once the broker is up: {result:?}");
    assert!(producer.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fails_with_timeout_within_the_send_timeout_when_the_broker_is_stopped() {
    let broker = PulsarLite::start().unwrap();
    let producer = Producer::builder(broker.url(), common::topic("timeout"))
        .send_timeout(Duration::from_millis(1500))
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
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );

    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .produce_with("ack later", move |r: Result<MessageId, Error>| {
            let _ = tx.send(r);
        })
        .await;
    let acked = tokio::time::timeout(Duration::from_secs(3), rx)
        .await
        .expect("ack within the timeout")
        .unwrap();
    assert!(matches!(acked, Err(Error::Timeout { .. })), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_every_message_ends_once_and_acked_ones_read_back() {
    const TOTAL: u32 = 3_000;
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
    let broker = Arc::new(PulsarLite::start().unwrap());
    let producer = Producer::builder(broker.url(), common::topic("window"))
        .window(3)
        .send_timeout(Duration::from_secs(20))
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
    let fourth = tokio::spawn({
        let producer = producer.clone();
        async move { producer.produce("fourth").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fourth.is_finished(),
        "the fourth message waits for room, it does not fail"
    );
    assert_eq!(producer.pending(), 3, "the window holds");
    restart(&broker).await;
    assert!(fourth.await.unwrap().is_ok());
    producer.close().await;
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

    proxy.hold_direction(Direction::ToUpstream);
    let outcomes: Outcomes = Arc::default();
    for i in 0..TOTAL {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(SIZE, b'x');
        let outcomes = outcomes.clone();
        producer
            .produce_with(Message::new(payload), move |r: Result<MessageId, Error>| {
                outcomes.lock().unwrap().entry(i).or_default().push(r);
            })
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
    assert_eq!(
        (producer.reconnects(), proxy.connections_accepted()),
        (0, accepted_before),
        "no SlowDown from the pulsar crate (wharf would have reconnected on it)"
    );
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
    let broker = Arc::new(PulsarLite::start().unwrap());
    let producer = Producer::builder(broker.url(), common::topic("fail-policy"))
        .on_reconnect(OnReconnect::Fail)
        .send_timeout(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    // a frozen broker: the next messages are sent but get no receipt
    signal(&broker, "STOP");
    let outcomes: Outcomes = Arc::default();
    for i in 0..5 {
        produce_recorded(&producer, &outcomes, i).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.kill().unwrap();
    // within the send timeout, every message handed to the lost connection has failed
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lost = outcomes.lock().unwrap().clone();
    assert!(
        !lost.is_empty(),
        "the messages sent before the loss failed at once"
    );
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
    producer.close().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_is_detected_and_messages_resent_when_it_thaws() {
    let broker = Arc::new(PulsarLite::start().unwrap());
    let producer = Producer::builder(broker.url(), common::topic("frozen"))
        .send_timeout(Duration::from_secs(16))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .start()
        .unwrap();
    producer.produce("connect first").await.unwrap();
    signal(&broker, "STOP");
    let outcomes: Outcomes = Arc::default();
    for i in 0..20 {
        produce_recorded(&producer, &outcomes, i).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !producer.is_connected(),
        "a broker that answers no ping counts as lost"
    );
    signal(&broker, "CONT");
    let _ = wharf_testkit::eventually(
        "the 20 messages to be acknowledged",
        Duration::from_secs(12),
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

fn signal(broker: &PulsarLite, name: &str) {
    let pid = broker.pid().expect("broker running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
