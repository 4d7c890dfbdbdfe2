//! The consumer's counts reach the `metrics` facade.
//!
//! Each test runs on a current-thread runtime with paused time and its own
//! `DebuggingRecorder` set as the thread's local recorder: the consumer's tasks run on that
//! thread, so the test reads only its own metrics, and it reads them only while every task
//! is idle (a paused-time sleep returns only then), never half-way through an update. A
//! debugging snapshot drains what it reads (counters and gauges alike), so each test takes
//! one snapshot per thing it checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;
use wharf_core::transport::{MemoryQueue, Message, Publisher};
use wharf_sharded_consumer::metrics as m;
use wharf_sharded_consumer::{Handler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer};
use wharf_testkit::eventually;

/// Bounds every wait on observable state; reached only by a bug.
const WAIT: Duration = Duration::from_secs(20);

/// The consumer's metrics now, by name (drains them: one call per check).
fn values(snapshotter: &Snapshotter, consumer: &str) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "consumer" && l.value() == consumer)
        })
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect()
}

fn gauge(snapshotter: &Snapshotter, consumer: &str, name: &str) -> Option<f64> {
    match values(snapshotter, consumer).get(name) {
        Some(DebugValue::Gauge(g)) => Some(g.into_inner()),
        _ => None,
    }
}

/// Lets every task run until it waits (paused time: the sleep returns only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Fails every message of key "bad"; acks the others.
struct Picky;

impl Handler for Picky {
    type State = ();
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<(), String> {
        Ok(())
    }
    async fn handle_message(&self, _: &mut (), msg: &Incoming<'_>) -> Result<Outcome, String> {
        match msg.key().as_str() {
            Some("bad") => Err("bad key".into()),
            _ => Ok(Outcome::Ack),
        }
    }
    async fn handle_signal(&self, _: &mut (), signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
}

#[tokio::test(start_paused = true)]
async fn counts_and_gauges_reach_the_metrics_facade_labelled_with_the_consumer() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let queue = MemoryQueue::new(64);
    let consumer = ShardedConsumer::builder("metered", Picky)
        .discard_dead_letters()
        .retry(RetryPolicy::new(2, Backoff::none()))
        .idle_timeout(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (c, s, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { c.run(s, stop).await }
    });
    let publisher = queue.publisher();
    for key in ["a", "b", "a", "bad"] {
        publisher
            .publish(Message::new("m").with_key(key))
            .await
            .unwrap();
    }
    publisher.publish(Message::new("no key")).await.unwrap();
    eventually("handled and evicted", WAIT, || async {
        queue.stats().acked >= 5 && consumer.stats().evicted >= 2
    })
    .await
    .unwrap();
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the run ends once stopped")
        .unwrap()
        .unwrap();

    let values = values(&snapshotter, "metered");
    let counter = |name: &str| match values.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {:?}", values.keys()),
    };
    assert_eq!(counter(m::ACKED), 3);
    assert_eq!(counter(m::KEYS_STARTED), 3 + 1, "a, b, bad twice");
    assert_eq!(counter(m::KEY_RESTARTS), 2);
    assert_eq!(counter(m::RETRIES), 1);
    assert_eq!(counter(m::DEAD_LETTERED), 2, "bad, and the keyless one");
    assert_eq!(counter(m::REJECTED_KEYS), 1);
    assert!(counter(m::KEYS_EVICTED) >= 2);
    match values.get(m::KEYS_ACTIVE) {
        Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), 0.0, "every actor stopped"),
        other => panic!("keys_active: {other:?}"),
    }
    assert!(values.contains_key(m::IN_FLIGHT));
    assert!(values.contains_key(m::KEY_QUEUE_DEPTH_MAX));
}

/// The `metrics` module names every metric the consumer records, under the names the
/// guide lists: a run registers each one, labelled with the consumer, and nothing else.
#[tokio::test(start_paused = true)]
async fn a_run_registers_exactly_the_metrics_the_metrics_module_names() {
    use wharf_sharded_consumer::metrics::*;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let queue = MemoryQueue::new(8);
    let consumer = ShardedConsumer::builder("named", Picky)
        .discard_dead_letters()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let running = consumer.spawn(queue.source(), stop.clone()).unwrap();
    settle().await;

    let mut registered: Vec<String> = values(&snapshotter, "named").into_keys().collect();
    registered.sort();
    let mut named = vec![
        KEYS_ACTIVE,
        IN_FLIGHT,
        QUEUED_MESSAGES,
        KEY_QUEUE_DEPTH_MAX,
        KEYS_STARTED,
        KEYS_EVICTED,
        KEYS_STOPPED,
        KEY_RESTARTS,
        RETRIES,
        DEAD_LETTERED,
        ACKED,
        REJECTED_KEYS,
        SOURCE_ERRORS,
    ];
    named.sort_unstable();
    assert_eq!(registered, named);

    stop.cancel();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the run ends once stopped")
        .unwrap()
        .unwrap();
}

/// Holds every message until the test lets it go.
struct Held(Arc<tokio::sync::Semaphore>);

impl Handler for Held {
    type State = ();
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<(), String> {
        Ok(())
    }
    async fn handle_message(&self, _: &mut (), _msg: &Incoming<'_>) -> Result<Outcome, String> {
        self.0.acquire().await.unwrap().forget();
        Ok(Outcome::Ack)
    }
    async fn handle_signal(&self, _: &mut (), signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
}

/// `stats().in_flight` and the `wharf_sharded_in_flight` gauge count the deliveries received
/// and not settled: exactly the ones held, and 0 once everything is settled, while the
/// consumer waits for the source.
#[tokio::test(start_paused = true)]
async fn in_flight_counts_exactly_the_unsettled_deliveries_and_reads_zero_when_idle() {
    const NAME: &str = "in-flight";
    const GAUGE: &str = m::IN_FLIGHT;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let queue = MemoryQueue::new(64);
    let consumer = ShardedConsumer::builder(NAME, Held(gate.clone()))
        .discard_dead_letters()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (c, s, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { c.run(s, stop).await }
    });
    let publisher = queue.publisher();
    for key in ["a", "b", "a"] {
        publisher
            .publish(Message::new("m").with_key(key))
            .await
            .unwrap();
    }
    eventually("3 deliveries received", WAIT, || async {
        queue.stats().in_flight == 3
    })
    .await
    .unwrap();
    settle().await;
    assert_eq!(consumer.stats().in_flight, 3, "3 held");
    assert_eq!(gauge(&snapshotter, NAME, GAUGE), Some(3.0), "3 held");

    gate.add_permits(3);
    eventually("everything settled", WAIT, || async {
        queue.stats().acked == 3
    })
    .await
    .unwrap();
    settle().await;
    assert_eq!(consumer.stats().in_flight, 0, "nothing in flight");
    assert_eq!(
        gauge(&snapshotter, NAME, GAUGE),
        Some(0.0),
        "nothing in flight"
    );

    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the run ends once stopped")
        .unwrap()
        .unwrap();
    assert_eq!(consumer.stats().in_flight, 0, "after the run");
}
