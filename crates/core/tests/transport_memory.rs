//! The in-memory queue, specified from the outside: what a publisher and its consumers see.
//!
//! Time is paused (`start_paused = true`): tokio advances the clock only when every task is
//! idle, so delays and timeouts are exact and the tests take no wall-clock time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use tokio::time::{Instant, timeout};
use wharf_core::Error;
use wharf_core::transport::{
    Delivery, DynPublisher, MemoryQueue, MemorySource, Message, Publisher, Receipt, Source,
};

/// Longer than any test waits on purpose: a wait that reaches it means a lost wake-up or a
/// lost message. With paused time it costs no wall-clock time, so tests fail, never hang.
const STALLED: Duration = Duration::from_secs(24 * 3600);

/// Receives the next delivery, failing the test if the source ended, erred, or stalled.
async fn next(source: &mut MemorySource) -> Delivery {
    timeout(STALLED, source.recv())
        .await
        .expect("nothing was delivered: the source stalled")
        .expect("the source ended too early")
        .expect("the in-memory source never errs")
}

fn payload(delivery: &Delivery) -> String {
    String::from_utf8(delivery.message().payload().to_vec()).unwrap()
}

/// Whether `recv` would wait: it does not complete before virtual time moves by 1 ms.
async fn nothing_to_receive(source: &mut MemorySource) -> bool {
    timeout(Duration::from_millis(1), source.recv())
        .await
        .is_err()
}

// ----- publishing -----

#[tokio::test(start_paused = true)]
async fn receipts_number_messages_in_publication_order() {
    let queue = MemoryQueue::new(4);
    let publisher = queue.publisher();
    let first = publisher.publish(Message::new("a")).await.unwrap();
    let second = publisher.publish(Message::new("b")).await.unwrap();
    assert_eq!(first, Receipt::Memory { sequence: 0 });
    assert_eq!(second, Receipt::Memory { sequence: 1 });
}

#[tokio::test(start_paused = true)]
async fn a_delivery_carries_the_message_its_attempt_offset_and_id() {
    let queue = MemoryQueue::new(4);
    let sent = Message::new("body").with_key("k").with_header("h", "v");
    queue
        .publisher()
        .publish(Message::new("first"))
        .await
        .unwrap();
    queue.publisher().publish(sent.clone()).await.unwrap();
    let mut source = queue.source();
    next(&mut source).await.ack().await.unwrap();

    let delivery = next(&mut source).await;
    assert_eq!(delivery.message(), &sent);
    assert_eq!(delivery.attempt(), 1);
    assert_eq!(delivery.info().offset, Some(1));
    assert_eq!(delivery.info().id, Some(Receipt::Memory { sequence: 1 }));
    assert_eq!(delivery.info().partition, None);
}

#[tokio::test(start_paused = true)]
async fn try_publish_fails_at_once_when_the_queue_is_full() {
    let queue = MemoryQueue::new(1);
    let publisher = queue.publisher();
    publisher.try_publish(Message::new("a")).unwrap();
    let error = publisher.try_publish(Message::new("b")).unwrap_err();
    assert!(matches!(error, Error::QueueFull { capacity: 1 }), "{error}");
    assert_eq!(queue.stats().published, 1);
}

#[tokio::test(start_paused = true)]
async fn publish_waits_while_full_and_resumes_when_a_delivery_is_acked() {
    let queue = MemoryQueue::new(1);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let waiting = tokio::spawn({
        let publisher = queue.publisher();
        async move { publisher.publish(Message::new("b")).await }
    });

    let mut source = queue.source();
    let delivery = next(&mut source).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !waiting.is_finished(),
        "an in-flight message still takes its slot"
    );

    delivery.ack().await.unwrap();
    let receipt = waiting.await.unwrap().unwrap();
    assert_eq!(receipt, Receipt::Memory { sequence: 1 });
}

#[tokio::test(start_paused = true)]
async fn a_nack_keeps_the_slot_taken() {
    let queue = MemoryQueue::new(1);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let mut source = queue.source();
    next(&mut source)
        .await
        .nack(Duration::from_secs(1))
        .await
        .unwrap();
    let error = queue
        .publisher()
        .try_publish(Message::new("b"))
        .unwrap_err();
    assert!(matches!(error, Error::QueueFull { .. }), "{error}");
}

#[tokio::test(start_paused = true)]
async fn publish_gives_up_after_its_timeout_when_the_queue_stays_full() {
    let queue = MemoryQueue::new(1);
    let publisher = queue.publisher().with_timeout(Duration::from_secs(2));
    publisher.publish(Message::new("a")).await.unwrap();

    let started = Instant::now();
    let error = publisher.publish(Message::new("b")).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(
        matches!(error, Error::PublishTimedOut { capacity: 1, after } if after == Duration::from_secs(2)),
        "{error}"
    );
    assert_eq!(
        queue.stats().published,
        1,
        "a timed-out publish is not published"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_publishers_get_room_first_come_first_served() {
    let queue = MemoryQueue::new(1);
    queue
        .publisher()
        .publish(Message::new("first"))
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for name in ["second", "third"] {
        let publisher = queue.publisher();
        waiting.push(tokio::spawn(async move {
            publisher.publish(Message::new(name)).await
        }));
        tokio::task::yield_now().await; // let it start waiting before the next one
    }

    let mut source = queue.source();
    let mut order = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut source).await;
        order.push(payload(&delivery));
        delivery.ack().await.unwrap();
    }
    assert_eq!(order, ["first", "second", "third"]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_answers_once_per_message_in_order() {
    let queue = MemoryQueue::new(2);
    let publisher: Arc<dyn DynPublisher> =
        Arc::new(queue.publisher().with_timeout(Duration::from_millis(10)));
    let batch = vec![Message::new("a"), Message::new("b"), Message::new("c")];

    let results = publisher.publish_batch_boxed(batch).await;

    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Receipt::Memory { sequence: 0 }
    );
    assert_eq!(
        results[1].as_ref().unwrap(),
        &Receipt::Memory { sequence: 1 }
    );
    let error = results[2].as_ref().unwrap_err();
    assert!(
        matches!(
            error.downcast_ref::<Error>(),
            Some(Error::PublishTimedOut { .. })
        ),
        "the third message found the queue full: {error}"
    );
}

// ----- settling deliveries -----

#[tokio::test(start_paused = true)]
async fn an_acked_message_is_never_delivered_again() {
    let queue = MemoryQueue::new(4);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let mut source = queue.source();
    next(&mut source).await.ack().await.unwrap();

    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(nothing_to_receive(&mut source).await);
    assert_eq!(queue.stats().acked, 1);
}

#[tokio::test(start_paused = true)]
async fn a_nacked_message_comes_back_after_its_delay_and_not_before() {
    let queue = MemoryQueue::new(4);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let mut source = queue.source();
    let nacked_at = Instant::now();
    next(&mut source)
        .await
        .nack(Duration::from_secs(5))
        .await
        .unwrap();

    let early = timeout(Duration::from_millis(4_999), source.recv()).await;
    assert!(early.is_err(), "redelivered before the delay passed");

    let again = next(&mut source).await;
    assert_eq!(nacked_at.elapsed(), Duration::from_secs(5));
    assert_eq!(payload(&again), "a");
    assert_eq!(again.attempt(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_nacked_message_waiting_out_its_delay_does_not_hold_up_the_others() {
    let queue = MemoryQueue::new(4);
    let publisher = queue.publisher();
    publisher.publish(Message::new("a")).await.unwrap();
    publisher.publish(Message::new("b")).await.unwrap();
    let mut source = queue.source();
    next(&mut source)
        .await
        .nack(Duration::from_secs(60))
        .await
        .unwrap();

    let started = Instant::now();
    let other = next(&mut source).await;
    assert_eq!(payload(&other), "b");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_nacked_message_goes_behind_the_waiting_ones() {
    let queue = MemoryQueue::new(4);
    let publisher = queue.publisher();
    publisher.publish(Message::new("a")).await.unwrap();
    publisher.publish(Message::new("b")).await.unwrap();
    let mut source = queue.source();
    next(&mut source).await.nack(Duration::ZERO).await.unwrap();

    let waiting = next(&mut source).await;
    let nacked = next(&mut source).await;
    assert_eq!(
        (payload(&waiting), payload(&nacked)),
        ("b".into(), "a".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_delivery_comes_back_at_once_in_its_place_with_the_next_attempt() {
    let queue = MemoryQueue::new(4);
    let publisher = queue.publisher();
    publisher.publish(Message::new("a")).await.unwrap();
    publisher.publish(Message::new("b")).await.unwrap();
    let mut source = queue.source();
    drop(next(&mut source).await);

    let started = Instant::now();
    let again = next(&mut source).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(payload(&again), "a");
    assert_eq!(again.attempt(), 2);
    assert_eq!(queue.stats().released, 1);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_dropped_by_a_crashed_handler_reaches_another_consumer() {
    let queue = MemoryQueue::new(4);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let mut crashing = queue.source();
    let handler = tokio::spawn(async move {
        let _delivery = next(&mut crashing).await;
        panic!("handler crashed while holding the delivery");
    });
    assert!(handler.await.unwrap_err().is_panic());

    let mut survivor = queue.source();
    let again = next(&mut survivor).await;
    assert_eq!((payload(&again), again.attempt()), ("a".to_owned(), 2));
}

#[tokio::test(start_paused = true)]
async fn the_attempt_counts_every_redelivery() {
    let queue = MemoryQueue::new(1);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let mut source = queue.source();
    drop(next(&mut source).await);
    next(&mut source)
        .await
        .nack(Duration::from_millis(5))
        .await
        .unwrap();
    drop(next(&mut source).await);
    let fourth = next(&mut source).await;
    assert_eq!(fourth.attempt(), 4);
    assert_eq!(fourth.info().redeliveries(), 3);
}

// ----- consumers -----

#[tokio::test(start_paused = true)]
async fn competing_sources_each_get_a_different_message() {
    let queue = MemoryQueue::new(4);
    let publisher = queue.publisher();
    publisher.publish(Message::new("a")).await.unwrap();
    publisher.publish(Message::new("b")).await.unwrap();
    let (mut one, mut two) = (queue.source(), queue.source());

    let first = next(&mut one).await;
    let second = next(&mut two).await;
    assert_eq!(
        (payload(&first), payload(&second)),
        ("a".into(), "b".into())
    );
    assert!(nothing_to_receive(&mut one).await);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_source_wakes_when_a_message_is_published() {
    let queue = MemoryQueue::new(4);
    let mut source = queue.source();
    let consumer = tokio::spawn(async move { payload(&next(&mut source).await) });
    tokio::time::sleep(Duration::from_secs(1)).await;

    queue
        .publisher()
        .publish(Message::new("late"))
        .await
        .unwrap();
    assert_eq!(consumer.await.unwrap(), "late");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_recv_loses_no_message() {
    let queue = MemoryQueue::new(4);
    let mut impatient = queue.source();
    // A receive that was waiting, then cancelled (as a `select!` branch that lost would be).
    assert!(nothing_to_receive(&mut impatient).await);

    queue.publisher().publish(Message::new("a")).await.unwrap();
    let mut other = queue.source();
    assert_eq!(payload(&next(&mut other).await), "a");
    assert_eq!(queue.stats().delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_source_is_also_a_stream() {
    let queue = MemoryQueue::new(4);
    for name in ["a", "b", "c"] {
        queue.publisher().publish(Message::new(name)).await.unwrap();
    }
    queue.close();

    let payloads: Vec<String> = queue
        .source()
        .into_stream()
        .then(|delivery| async move {
            let delivery = delivery.unwrap();
            let text = payload(&delivery);
            delivery.ack().await.unwrap();
            text
        })
        .collect()
        .await;
    assert_eq!(payloads, ["a", "b", "c"]);
}

// ----- closing -----

#[tokio::test(start_paused = true)]
async fn a_closed_queue_refuses_publishers_including_those_waiting() {
    let queue = MemoryQueue::new(1);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    let waiting = tokio::spawn({
        let publisher = queue.publisher();
        async move { publisher.publish(Message::new("b")).await }
    });
    tokio::task::yield_now().await;

    queue.close();
    assert!(matches!(waiting.await.unwrap(), Err(Error::QueueClosed)));
    assert!(matches!(
        queue.publisher().publish(Message::new("c")).await,
        Err(Error::QueueClosed)
    ));
    assert!(matches!(
        queue.publisher().try_publish(Message::new("d")),
        Err(Error::QueueClosed)
    ));
}

#[tokio::test(start_paused = true)]
async fn sources_end_only_after_the_closed_queue_is_drained() {
    let queue = MemoryQueue::new(4);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    queue.close();
    let mut source = queue.source();

    // Drop it: it is still owed a delivery, so the source must not end.
    drop(next(&mut source).await);
    let retried = next(&mut source).await;
    retried.nack(Duration::from_secs(30)).await.unwrap();
    let last = next(&mut source).await;
    assert_eq!((payload(&last), last.attempt()), ("a".to_owned(), 3));
    last.ack().await.unwrap();

    let end = timeout(STALLED, source.recv())
        .await
        .expect("the source did not end");
    assert!(end.is_none());
    assert!(source.recv().await.is_none(), "an ended source stays ended");
}

#[tokio::test(start_paused = true)]
async fn a_source_waiting_on_a_closed_queue_ends_when_the_last_delivery_is_acked() {
    let queue = MemoryQueue::new(4);
    queue.publisher().publish(Message::new("a")).await.unwrap();
    queue.close();
    let delivery = next(&mut queue.source()).await;
    let mut idle = queue.source();
    let ended = tokio::spawn(async move { timeout(STALLED, idle.recv()).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ended.is_finished(), "a message is still in flight");

    delivery.ack().await.unwrap();
    let received = ended.await.unwrap().expect("the source did not end");
    assert!(received.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_real_concurrency_every_message_is_acked_exactly_once() {
    const PRODUCERS: usize = 2;
    const PER_PRODUCER: usize = 1_000;
    let queue = MemoryQueue::new(8);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let publisher = queue.publisher();
            tokio::spawn(async move {
                for i in 0..PER_PRODUCER {
                    let id = p * PER_PRODUCER + i;
                    publisher
                        .publish(Message::new(id.to_string()))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let mut source = queue.source();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                while let Some(delivery) = source.recv().await {
                    let delivery = delivery.unwrap();
                    let id: usize = payload(&delivery).parse().unwrap();
                    // Every 7th message is dropped and every 5th nacked once, then acked.
                    match (delivery.attempt(), id % 7, id % 5) {
                        (1, 0, _) => drop(delivery),
                        (1, _, 0) => delivery.nack(Duration::ZERO).await.unwrap(),
                        _ => {
                            acked.push(id);
                            delivery.ack().await.unwrap();
                        }
                    }
                }
                acked
            })
        })
        .collect();

    let run = async {
        for producer in producers {
            producer.await.unwrap();
        }
        queue.close();
        let mut acked = Vec::new();
        for consumer in consumers {
            acked.extend(consumer.await.unwrap());
        }
        acked
    };
    // Real time here: a lost wake-up shows as a stall.
    let mut acked = timeout(Duration::from_secs(60), run)
        .await
        .expect("stalled: a wake-up or a message was lost");
    acked.sort_unstable();
    assert_eq!(acked, (0..PRODUCERS * PER_PRODUCER).collect::<Vec<_>>());
    assert_eq!(queue.stats().held(), 0);
}

// ----- properties -----

/// What a consumer does with one delivery.
#[derive(Clone, Copy, Debug)]
enum Decision {
    Ack,
    Nack(u64),
    Drop,
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        3 => Just(Decision::Ack),
        1 => (0u64..50).prop_map(Decision::Nack),
        1 => Just(Decision::Drop),
    ]
}

/// Decisions shared by all consumers of one run, taken in turn. After three attempts a
/// message is acked, so every run ends.
#[derive(Clone, Debug)]
struct Script {
    decisions: Arc<Vec<Decision>>,
    taken: Arc<Mutex<usize>>,
}

impl Script {
    fn new(decisions: Vec<Decision>) -> Self {
        Self {
            decisions: Arc::new(decisions),
            taken: Arc::default(),
        }
    }

    fn decide(&self, attempt: u32) -> Decision {
        let mut taken = self.taken.lock().unwrap();
        let decision = self.decisions[*taken % self.decisions.len()];
        *taken += 1;
        if attempt >= 3 {
            Decision::Ack
        } else {
            decision
        }
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn check_invariants(queue: &MemoryQueue) {
    let stats = queue.stats();
    assert!(stats.held() <= stats.capacity, "over capacity: {stats:?}");
    assert_eq!(
        stats.published,
        stats.acked + stats.held() as u64,
        "a message went missing: {stats:?}"
    );
}

/// Publishes `count` messages (payload = index), waiting for room, then closes the queue.
fn spawn_producer(queue: &MemoryQueue, count: usize) -> tokio::task::JoinHandle<()> {
    let queue = queue.clone();
    tokio::spawn(async move {
        let publisher = queue.publisher();
        for index in 0..count {
            publisher
                .publish(Message::new(index.to_string()))
                .await
                .unwrap();
            check_invariants(&queue);
        }
        queue.close();
    })
}

/// Consumes until the source ends, following `script`; returns the indexes it acked.
async fn consume(queue: MemoryQueue, script: Script) -> Vec<usize> {
    let mut source = queue.source();
    let mut acked = Vec::new();
    while let Some(delivery) = source.recv().await {
        let delivery = delivery.unwrap();
        check_invariants(&queue);
        match script.decide(delivery.attempt()) {
            Decision::Ack => {
                acked.push(payload(&delivery).parse().unwrap());
                delivery.ack().await.unwrap();
            }
            Decision::Nack(ms) => delivery.nack(Duration::from_millis(ms)).await.unwrap(),
            Decision::Drop => drop(delivery),
        }
        check_invariants(&queue);
        // Let the producer and the other consumers interleave with this one.
        tokio::task::yield_now().await;
    }
    acked
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever consumers decide, every published message is acked exactly once, none is
    /// lost, and the queue never holds more than its capacity.
    #[test]
    fn every_message_is_acked_exactly_once_within_capacity(
        count in 0usize..40,
        capacity in 1usize..8,
        consumers in 1usize..4,
        decisions in proptest::collection::vec(decision(), 1..32),
    ) {
        let acked = paused_runtime().block_on(async {
            let queue = MemoryQueue::new(capacity);
            let script = Script::new(decisions);
            let producer = spawn_producer(&queue, count);
            let workers: Vec<_> = (0..consumers)
                .map(|_| tokio::spawn(consume(queue.clone(), script.clone())))
                .collect();
            let run = async {
                producer.await.unwrap();
                let mut acked = Vec::new();
                for worker in workers {
                    acked.extend(worker.await.unwrap());
                }
                acked
            };
            let mut acked = timeout(STALLED, run)
                .await
                .expect("the run stalled: a message was lost or a wait never woke");
            let stats = queue.stats();
            assert_eq!((stats.acked, stats.held()), (count as u64, 0), "{stats:?}");
            acked.sort_unstable();
            acked
        });
        prop_assert_eq!(acked, (0..count).collect::<Vec<_>>());
    }

    /// One source settling one delivery at a time, acking or dropping, sees the messages in
    /// publication order: a dropped delivery keeps its place.
    #[test]
    fn one_source_acking_or_dropping_keeps_publication_order(
        count in 0usize..40,
        capacity in 1usize..8,
        drops in proptest::collection::vec(any::<bool>(), 1..16),
    ) {
        let decisions = drops
            .into_iter()
            .map(|drop| if drop { Decision::Drop } else { Decision::Ack })
            .collect();
        let acked = paused_runtime().block_on(async {
            let queue = MemoryQueue::new(capacity);
            let producer = spawn_producer(&queue, count);
            let acked = timeout(STALLED, consume(queue.clone(), Script::new(decisions)))
                .await
                .expect("the run stalled");
            producer.await.unwrap();
            acked
        });
        prop_assert_eq!(acked, (0..count).collect::<Vec<_>>());
    }
}
