//! Stall detection and lag on a broker that under-reports high watermarks.
//!
//! Tansu 0.6 reports the high watermark of a batch of records as one past the batch's first
//! record: after `send_batch` of 30 records it says 1. These tests produce in batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaWrapper, Outcome, PartitionLag, ProducerSpec, Record, TopicSpec,
    WrapperState,
};

const STALL_AFTER: Duration = Duration::from_secs(2);

/// A wrapper that takes a consumer for stalled after [`STALL_AFTER`], and a new topic of one
/// partition.
async fn wrapper(prefix: &str) -> (KafkaWrapper, String) {
    let w = KafkaWrapper::start(common::config(&common::brokers()).stall_after(STALL_AFTER))
        .await
        .unwrap();
    let topic = common::topic(prefix);
    w.admin()
        .ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    (w, topic)
}

fn batch(topic: &str, range: std::ops::Range<usize>, size: usize) -> Vec<Record> {
    range
        .map(|i| Record::new(topic, format!("{i:0size$}")).partition(0))
        .collect()
}

/// Messages keep flowing (two batches, the second sent while the first is handled), and
/// some take longer than `stall_after` to handle: the consumer is busy, not stalled. Before
/// the fix, the first slow message (lag 1 by Tansu's watermark, no progress for 3 s) was
/// taken for a stall: the wrapper rebuilt everything and the message was handled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_handled_slower_than_stall_after_are_not_taken_for_a_stall() {
    let (w, topic) = wrapper("stall-busy").await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let sent = p.send_batch(batch(&topic, 0..40, 1)).await;
    assert!(sent.iter().all(Result::is_ok));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let k = calls.clone();
    let handler = Handler::per_message(move |m| {
        k.lock().unwrap().push(m.offset());
        async move {
            if m.offset() % 20 == 0 {
                tokio::time::sleep(STALL_AFTER + Duration::from_secs(1)).await;
            }
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            handler,
        ))
        .unwrap();
    wharf_testkit::eventually("the first call", Duration::from_secs(30), || async {
        !calls.lock().unwrap().is_empty()
    })
    .await
    .unwrap();
    let sent = p.send_batch(batch(&topic, 40..80, 1)).await;
    assert!(sent.iter().all(Result::is_ok));
    wharf_testkit::eventually("80 messages handled", Duration::from_secs(60), || async {
        c.handled() == 80
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: handled {}, rebuilds {}", c.handled(), w.rebuilds()));
    assert_eq!(
        w.rebuilds(),
        0,
        "a busy consumer was taken for a stalled one"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        (0..80).collect::<Vec<i64>>(),
        "each message handled once, in order"
    );
    w.shutdown().await.unwrap();
}

/// Lag counts the messages the consumer received and has not handled, even where the
/// broker's high watermark says fewer exist. Before the fix it read the watermark alone:
/// lag 1 for 30 waiting messages, then a high watermark of 1 below a position of 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_received_messages_the_broker_does_not_report() {
    let (w, topic) = wrapper("stall-lag").await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let sent = p.send_batch(batch(&topic, 0..30, 1)).await;
    assert!(sent.iter().all(Result::is_ok));
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let handler = Handler::per_message(move |m| {
        let r = r.clone();
        async move {
            while m.offset() == 0 && !r.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            handler,
        ))
        .unwrap();
    let lag = |high, position, lag| {
        vec![PartitionLag {
            topic: topic.clone(),
            partition: 0,
            high_watermark: high,
            position,
            lag,
        }]
    };
    let waiting = lag(30, 0, 30);
    wharf_testkit::eventually(
        "lag 30 while 0 is handled",
        Duration::from_secs(30),
        || async { c.lag() == waiting },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", c.lag()));
    release.store(true, Ordering::SeqCst);
    let done = lag(30, 30, 0);
    wharf_testkit::eventually("lag 0 at position 30", Duration::from_secs(30), || async {
        c.lag() == done
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", c.lag()));
    w.shutdown().await.unwrap();
}

/// A real stall after a batch: the consumer's fetches are held by the broker (a
/// `fetch.min.bytes` the second, small batch cannot fill, with a long `fetch.wait.max.ms`),
/// so it receives nothing while the broker has messages for it, and its handler waits for
/// them. The wrapper sees the stall and rebuilds, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_receives_nothing_the_broker_has_is_taken_for_stalled() {
    let (w, topic) = wrapper("stall-real").await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    // About 6 kB: enough for a fetch of at least 4,000 bytes to return at once.
    let sent = p.send_batch(batch(&topic, 0..30, 200)).await;
    assert!(sent.iter().all(Result::is_ok));
    let c = w
        .add_consumer(
            ConsumerSpec::group(
                "c",
                common::topic("g"),
                [topic.clone()],
                Handler::per_message(|_| async { Outcome::Ack }),
            )
            .set("fetch.min.bytes", "4000")
            .set("fetch.wait.max.ms", "50000"),
        )
        .unwrap();
    wharf_testkit::eventually(
        "the first batch handled",
        Duration::from_secs(30),
        || async { c.handled() == 30 },
    )
    .await
    .unwrap();
    let mut states = w.watch_state();
    // About 300 bytes: the broker holds the consumer's fetch for 50 s waiting for more.
    let sent = p.send_batch(batch(&topic, 30..60, 1)).await;
    assert!(sent.iter().all(Result::is_ok));
    let within = STALL_AFTER * 5 + Duration::from_secs(10);
    let state = tokio::time::timeout(
        within,
        states.wait_for(|s| matches!(s, WrapperState::Rebuilding(_))),
    )
    .await
    .unwrap_or_else(|_| panic!("no rebuild within {within:?}; handled {}", c.handled()))
    .unwrap()
    .clone();
    let WrapperState::Rebuilding(reason) = state else {
        unreachable!()
    };
    assert!(
        reason.contains("consumer `c` stalled") && reason.contains("received up to 30"),
        "{reason}"
    );
    assert_eq!(c.handled(), 30, "nothing of the second batch arrived");
    w.shutdown().await.unwrap();
}
