//! Handlers that never return, or block their thread: the handler deadline makes them failed
//! attempts under the retry policy, so their partition moves on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_core::Backoff;
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaWrapper, Outcome, ProducerSpec, Record, RetryPolicy, TopicSpec,
};

const DEADLINE: Duration = Duration::from_secs(2);
const ATTEMPTS: u32 = 2;

/// Offsets 0 to 9 of one partition, sent as one batch. Offset 2's handler never returns (it
/// waits forever at an `.await`); offset 5's blocks its thread for longer than the deadline.
/// Each is called as often as the retry policy allows, then dead-lettered; the messages
/// behind them are handled; while either is in its handler, the group's committed offset
/// stays at or below it; nothing is rebuilt (`stall_after` is shorter than the deadline:
/// a busy handler is not a stalled client).
///
/// Before the fix, offset 2's handler held the partition forever: nothing behind it was
/// handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_or_blocks_its_thread_is_retried_then_dead_lettered() {
    let brokers = common::brokers();
    let (topic, dlt, group) = (
        common::topic("deadline"),
        common::topic("deadline-dlt"),
        common::topic("g"),
    );
    let config = common::config(&brokers).stall_after(Duration::from_secs(1));
    let w = KafkaWrapper::start(config).await.unwrap();
    w.admin()
        .ensure_topics(&[TopicSpec::new(&topic, 1), TopicSpec::new(&dlt, 1)])
        .await
        .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let sent = p
        .send_batch(
            (0..10)
                .map(|i| Record::new(&topic, i.to_string()).partition(0))
                .collect(),
        )
        .await;
    assert!(sent.iter().all(Result::is_ok));

    let committed = Arc::new(common::Committed::new(&brokers, &group, &topic, 0));
    // (offset, attempt) of every call, and (offset of the call, committed offset read
    // during it).
    let calls = Arc::new(Mutex::new(Vec::new()));
    let during = Arc::new(Mutex::new(Vec::new()));
    let (k, d, c) = (calls.clone(), during.clone(), committed.clone());
    let handler = Handler::per_message(move |m| {
        k.lock().unwrap().push((m.offset(), m.attempt()));
        let (d, c) = (d.clone(), c.clone());
        async move {
            match m.offset() {
                2 => {
                    let now = tokio::task::spawn_blocking(move || c.get()).await.unwrap();
                    d.lock().unwrap().push((2, now));
                    std::future::pending::<Outcome>().await
                }
                5 => {
                    d.lock().unwrap().push((5, c.get()));
                    std::thread::sleep(DEADLINE + Duration::from_secs(1));
                    Outcome::Ack
                }
                _ => Outcome::Ack,
            }
        }
    });
    let consumer = w
        .add_consumer(
            ConsumerSpec::group("c", &group, [topic.clone()], handler)
                .dead_letter_topic(&dlt)
                .handler_timeout(Some(DEADLINE))
                .retry_policy(RetryPolicy::new(
                    ATTEMPTS,
                    Backoff::constant(Duration::from_millis(200)),
                ))
                .set("auto.commit.interval.ms", "100"),
        )
        .unwrap();

    // Each of the two takes ATTEMPTS deadlines (and a little more): derive the bound.
    let within = Duration::from_secs(30) + (DEADLINE + Duration::from_secs(2)) * ATTEMPTS * 2;
    wharf_testkit::eventually("every message handled or dead-lettered", within, || async {
        consumer.handled() == 10
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: handled {}, calls {:?}",
            consumer.handled(),
            calls.lock().unwrap()
        )
    });

    let mut called = calls.lock().unwrap().clone();
    called.sort_unstable();
    let mut want: Vec<(i64, u32)> = (0..10).map(|o| (o, 1)).collect();
    want.extend([(2, 2), (5, 2)]);
    want.sort_unstable();
    assert_eq!(called, want, "2 and 5 called twice, the rest once");

    let during = during.lock().unwrap().clone();
    for hung in [2, 5] {
        let seen: Vec<Option<i64>> = during
            .iter()
            .filter(|(o, _)| *o == hung)
            .map(|(_, c)| *c)
            .collect();
        assert!(!seen.is_empty(), "no committed offset read during {hung}");
        assert!(
            seen.iter().all(|c| c.is_none_or(|c| c <= hung)),
            "committed past {hung} while its handler ran: {seen:?}"
        );
        // Commits go on meanwhile (every 100 ms): by its last attempt, everything before it.
        assert_eq!(
            seen.last(),
            Some(&Some(hung)),
            "read during {hung}: {seen:?}"
        );
    }
    wharf_testkit::eventually(
        "committed past the last message",
        Duration::from_secs(15),
        || {
            let committed = committed.clone();
            async move {
                tokio::task::spawn_blocking(move || committed.get())
                    .await
                    .unwrap()
                    == Some(10)
            }
        },
    )
    .await
    .unwrap();

    let dead = w
        .admin()
        .fetch_range(&dlt, 0, 0, 10, Duration::from_secs(10))
        .await
        .unwrap();
    let header = |m: &wharf_kafka_wrapper::ConsumedMessage, h: &str| {
        String::from_utf8_lossy(m.header(h).unwrap_or_default()).into_owned()
    };
    let offsets: Vec<String> = dead.iter().map(|m| header(m, "wharf.dlq.offset")).collect();
    assert_eq!(offsets, ["2", "5"], "dead-lettered once each");
    for m in &dead {
        let reason = header(m, "wharf.dlq.reason");
        assert!(reason.contains("deadline"), "{reason}");
    }
    assert_eq!(
        w.rebuilds(),
        0,
        "a busy handler was taken for a stalled client"
    );
    w.shutdown().await.unwrap();
}

/// With several calls of a partition in flight, a call that never returns no longer holds
/// the commits below it forever: after one attempt (no retries) it is dead-lettered, and the
/// offset is committed past everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_in_flight_a_call_that_never_returns_is_dead_lettered() {
    let brokers = common::brokers();
    let (topic, dlt, group) = (
        common::topic("deadline-n"),
        common::topic("deadline-n-dlt"),
        common::topic("g"),
    );
    let w = KafkaWrapper::start(common::config(&brokers)).await.unwrap();
    w.admin()
        .ensure_topics(&[TopicSpec::new(&topic, 1), TopicSpec::new(&dlt, 1)])
        .await
        .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let sent = p
        .send_batch(
            (0..10)
                .map(|i| Record::new(&topic, i.to_string()).partition(0))
                .collect(),
        )
        .await;
    assert!(sent.iter().all(Result::is_ok));
    let handler = Handler::per_message(|m| async move {
        if m.offset() == 1 {
            std::future::pending::<()>().await;
        }
        Outcome::Ack
    });
    let deadline = Duration::from_secs(1);
    let c = w
        .add_consumer(
            ConsumerSpec::group("c", &group, [topic.clone()], handler)
                .in_flight_per_partition(4)
                .dead_letter_topic(&dlt)
                .handler_timeout(Some(deadline))
                .retry_policy(RetryPolicy::no_retries())
                .set("auto.commit.interval.ms", "100"),
        )
        .unwrap();
    wharf_testkit::eventually(
        "all handled",
        Duration::from_secs(30) + deadline,
        || async { c.handled() == 10 },
    )
    .await
    .unwrap();
    let committed = Arc::new(common::Committed::new(&brokers, &group, &topic, 0));
    wharf_testkit::eventually(
        "committed past the last message",
        Duration::from_secs(15),
        || {
            let committed = committed.clone();
            async move {
                tokio::task::spawn_blocking(move || committed.get())
                    .await
                    .unwrap()
                    == Some(10)
            }
        },
    )
    .await
    .unwrap();
    let dead = w
        .admin()
        .fetch_range(&dlt, 0, 0, 10, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("wharf.dlq.offset"), Some(&b"1"[..]));
    w.shutdown().await.unwrap();
}

/// A handler that panics (in the call itself, then in its future) fails its attempts like
/// one past its deadline: tried as often as the policy allows, then dead-lettered with the
/// panic's message; the messages behind it are handled. (Before, a panic was retried every
/// second, forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_is_retried_then_dead_lettered() {
    let brokers = common::brokers();
    let (topic, dlt) = (common::topic("panics"), common::topic("panics-dlt"));
    let w = KafkaWrapper::start(common::config(&brokers)).await.unwrap();
    w.admin()
        .ensure_topics(&[TopicSpec::new(&topic, 1), TopicSpec::new(&dlt, 1)])
        .await
        .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let sent = p
        .send_batch(
            (0..3)
                .map(|i| Record::new(&topic, i.to_string()).partition(0))
                .collect(),
        )
        .await;
    assert!(sent.iter().all(Result::is_ok));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let k = calls.clone();
    let handler = Handler::per_message(move |m| {
        k.lock().unwrap().push((m.offset(), m.attempt()));
        assert!(
            !(m.offset() == 1 && m.attempt() == 1),
            "bad message (in the call)"
        );
        async move {
            assert!(m.offset() != 1, "bad message (in the future)");
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(
            ConsumerSpec::group("c", common::topic("g"), [topic.clone()], handler)
                .dead_letter_topic(&dlt)
                .retry_policy(RetryPolicy::new(
                    ATTEMPTS,
                    Backoff::constant(Duration::from_millis(50)),
                )),
        )
        .unwrap();
    wharf_testkit::eventually("all handled", Duration::from_secs(30), || async {
        c.handled() == 3
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: calls {:?}", calls.lock().unwrap()));
    assert_eq!(
        *calls.lock().unwrap(),
        [(0, 1), (1, 1), (1, 2), (2, 1)],
        "1 tried twice, then passed"
    );
    let dead = w
        .admin()
        .fetch_range(&dlt, 0, 0, 10, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let reason = String::from_utf8_lossy(dead[0].header("wharf.dlq.reason").unwrap_or_default())
        .into_owned();
    assert!(
        reason.contains("handler panicked: bad message (in the future)"),
        "{reason}"
    );
    assert_eq!(dead[0].header("wharf.dlq.offset"), Some(&b"1"[..]));
    w.shutdown().await.unwrap();
}
