//! Group and plain consumers against a real broker (Tansu).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, Outcome, ProducerSpec, Record, StartAt, TopicSpec,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_after_its_delay_and_order_is_kept() {
    let brokers = common::brokers();
    let topic = common::topic("retry");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for m in ["one", "two", "three"] {
        p.send(Record::new(&topic, m)).await.unwrap();
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let handler = Handler::per_message(move |m| {
        let l = l.clone();
        async move {
            let payload = text(m.payload());
            l.lock().unwrap().push((payload.clone(), m.attempt()));
            if payload == "two" && m.attempt() < 3 {
                Outcome::Retry(Duration::from_millis(200))
            } else {
                Outcome::Ack
            }
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
    wharf_testkit::eventually("c.handled() == 3", Duration::from_secs(30), || async {
        c.handled() == 3
    })
    .await
    .unwrap();
    let got = log.lock().unwrap().clone();
    let want: Vec<(String, u32)> = [("one", 1), ("two", 1), ("two", 2), ("two", 3), ("three", 1)]
        .iter()
        .map(|(s, a)| (s.to_string(), *a))
        .collect();
    assert_eq!(got, want);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_goes_to_the_dead_letter_topic_with_its_origin() {
    let brokers = common::brokers();
    let topic = common::topic("dl-src");
    let dlt = common::topic("dl-dlt");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    w.admin()
        .ensure_topics(&[TopicSpec::new(&dlt, 1)])
        .await
        .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    p.send(Record::new(&topic, "fine")).await.unwrap();
    let poison = p
        .send(Record::new(&topic, "poison").key("k1").header("h", "v"))
        .await
        .unwrap();
    p.send(Record::new(&topic, "fine too")).await.unwrap();
    let handler = Handler::per_message(|m| async move {
        if m.payload() == b"poison" {
            Outcome::DeadLetter("cannot parse".into())
        } else {
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(
            ConsumerSpec::group("c", common::topic("g"), [topic.clone()], handler)
                .dead_letter_topic(&dlt),
        )
        .unwrap();
    wharf_testkit::eventually("c.handled() == 3", Duration::from_secs(30), || async {
        c.handled() == 3
    })
    .await
    .unwrap();
    let dead = w
        .admin()
        .fetch_range(&dlt, 0, 0, 10, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.payload(), b"poison");
    assert_eq!(d.key().unwrap(), b"k1");
    assert_eq!(d.header("h").unwrap(), b"v");
    assert_eq!(d.header("wharf.dlq.reason").unwrap(), b"cannot parse");
    assert_eq!(text(d.header("wharf.dlq.topic").unwrap()), topic);
    assert_eq!(
        text(d.header("wharf.dlq.offset").unwrap()),
        poison.offset.to_string()
    );
    w.shutdown().await.unwrap();
}

/// The handler never finishes offset 5; after the consumer is removed (which drains and
/// commits), a new member of the group must start exactly at 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_past_handled_messages() {
    let brokers = common::brokers();
    let topic = common::topic("commit");
    let group = common::topic("g");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for i in 0..10 {
        p.send(Record::new(&topic, i.to_string()).partition(0))
            .await
            .unwrap();
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let k = calls.clone();
    let handler = Handler::per_message(move |m| {
        k.lock().unwrap().push(m.offset());
        async move {
            if m.offset() == 5 {
                Outcome::Retry(Duration::from_millis(100))
            } else {
                Outcome::Ack
            }
        }
    });
    let c = w
        .add_consumer(ConsumerSpec::group(
            "first",
            &group,
            [topic.clone()],
            handler,
        ))
        .unwrap();
    // Offset 5 called a third time: its first two Retry answers were acted on, which is
    // when a wrapper that let later messages pass would have called 6.
    let fives = || calls.lock().unwrap().iter().filter(|o| **o == 5).count();
    wharf_testkit::eventually(
        "offset 5 retried twice",
        Duration::from_secs(30),
        || async { fives() >= 3 },
    )
    .await
    .unwrap();
    let called = calls.lock().unwrap().clone();
    assert!(
        called.iter().all(|o| *o <= 5),
        "nothing after the stuck message may be handled: {called:?}"
    );
    assert_eq!(c.handled(), 5);
    w.remove_consumer("first").await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = Handler::per_message(move |m| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(m.offset());
            Outcome::Ack
        }
    });
    let c2 = w
        .add_consumer(ConsumerSpec::group(
            "second",
            &group,
            [topic.clone()],
            handler,
        ))
        .unwrap();
    // Everything comes in offset order, so anything before 5 delivered again would be seen
    // before the last message.
    wharf_testkit::eventually("the last message", Duration::from_secs(30), || async {
        seen.lock().unwrap().contains(&9)
    })
    .await
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![5, 6, 7, 8, 9]);
    assert_eq!(c2.handled(), 5);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_group_members_share_the_partitions_and_see_every_message() {
    let brokers = common::brokers();
    let topic = common::topic("share");
    let group = common::topic("g");
    let w = common::wrapper_with_topic(&brokers, &topic, 4).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mk = |who: &'static str| {
        let seen = seen.clone();
        Handler::per_message(move |m| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((who, text(m.payload())));
                Outcome::Ack
            }
        })
    };
    let a = w
        .add_consumer(ConsumerSpec::group("a", &group, [topic.clone()], mk("a")))
        .unwrap();
    let b = w
        .add_consumer(ConsumerSpec::group("b", &group, [topic.clone()], mk("b")))
        .unwrap();
    // Wait until the group settled with both members holding partitions.
    assert!(
        wharf_testkit::eventually("a.assignment().len() + b.assignment().len() == 4 && !a.assignment().is_empty() && !b.assignment().is_empty()", Duration::from_secs(40), || async { a.assignment().len()
            + b.assignment().len()
            == 4
            && !a.assignment().is_empty()
            && !b.assignment().is_empty() })
        .await.is_ok(),
        "assignments: {:?} / {:?}",
        a.assignment(),
        b.assignment()
    );
    let pa: HashSet<_> = a.assignment().into_iter().collect();
    assert!(
        b.assignment().iter().all(|x| !pa.contains(x)),
        "members must not share a partition"
    );
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for i in 0..200 {
        p.send(Record::new(&topic, i.to_string()).key(format!("k{i}")))
            .await
            .unwrap();
    }
    wharf_testkit::eventually(
        "seen.lock().unwrap().len() >= 200",
        Duration::from_secs(30),
        || async { seen.lock().unwrap().len() >= 200 },
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    let distinct: HashSet<&String> = seen.iter().map(|(_, m)| m).collect();
    assert_eq!(distinct.len(), 200);
    assert!(seen.iter().any(|(w, _)| *w == "a") && seen.iter().any(|(w, _)| *w == "b"));
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_handling_lag_shows_the_backlog_and_resume_catches_up() {
    let brokers = common::brokers();
    let topic = common::topic("pause");
    let w = common::wrapper_with_topic(&brokers, &topic, 2).await;
    let acks = || Handler::per_message(|_| async { Outcome::Ack });
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            acks(),
        ))
        .unwrap();
    // Paused before the group assigns anything (a join takes seconds): the pause is applied
    // with the assignment, before the assignment is published.
    c.pause_all();
    // The same topic read by another group, unpaused: it shows when the messages could have
    // been handled.
    let control = w
        .add_consumer(ConsumerSpec::group(
            "control",
            common::topic("g"),
            [topic.clone()],
            acks(),
        ))
        .unwrap();
    wharf_testkit::eventually(
        "both consumers assigned",
        Duration::from_secs(30),
        || async { c.assignment().len() == 2 && control.assignment().len() == 2 },
    )
    .await
    .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for i in 0..50 {
        p.send(Record::new(&topic, i.to_string())).await.unwrap();
    }
    wharf_testkit::eventually(
        "the control consumer handled everything",
        Duration::from_secs(30),
        || async { control.handled() == 50 },
    )
    .await
    .unwrap();
    assert_eq!(c.handled(), 0, "a paused consumer handles nothing");
    assert!(
        wharf_testkit::eventually("c.total_lag() == 50", Duration::from_secs(10), || async {
            c.total_lag() == 50
        })
        .await
        .is_ok(),
        "lag {:?}",
        c.lag()
    );
    c.resume_all();
    wharf_testkit::eventually("c.handled() == 50", Duration::from_secs(10), || async {
        c.handled() == 50
    })
    .await
    .unwrap();
    assert!(
        wharf_testkit::eventually("c.total_lag() == 0", Duration::from_secs(10), || async {
            c.total_lag() == 0
        })
        .await
        .is_ok(),
        "lag {:?}",
        c.lag()
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handlers_get_several_messages_of_one_partition_at_once() {
    let brokers = common::brokers();
    let topic = common::topic("batchh");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let recs: Vec<Record> = (0..100)
        .map(|i| Record::new(&topic, i.to_string()))
        .collect();
    assert!(p.send_batch(recs).await.iter().all(Result::is_ok));
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = sizes.clone();
    let handler = Handler::per_batch(32, move |b| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .push(b.iter().map(|m| m.offset()).collect::<Vec<_>>());
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
    wharf_testkit::eventually("c.handled() == 100", Duration::from_secs(30), || async {
        c.handled() == 100
    })
    .await
    .unwrap();
    let batches = sizes.lock().unwrap().clone();
    assert!(batches.iter().all(|b| b.len() <= 32));
    let flat: Vec<i64> = batches.concat();
    assert_eq!(flat, (0..100).collect::<Vec<_>>(), "in order, each once");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_consumer_reads_the_given_partition_from_the_given_offset() {
    let brokers = common::brokers();
    let topic = common::topic("plain");
    let w = common::wrapper_with_topic(&brokers, &topic, 2).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for i in 0..10 {
        p.send(Record::new(&topic, i.to_string()).partition(1))
            .await
            .unwrap();
        p.send(Record::new(&topic, "other").partition(0))
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = Handler::per_message(move |m| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((m.partition(), text(m.payload())));
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(ConsumerSpec::partitions(
            "plain",
            [(topic.clone(), 1, StartAt::Offset(6))],
            handler,
        ))
        .unwrap();
    // Messages of a partition come in offset order: once the last one is there, anything
    // before offset 6 that was delivered would have come before it.
    let has = |payload: &str| seen.lock().unwrap().iter().any(|(_, m)| m == payload);
    wharf_testkit::eventually("offset 9", Duration::from_secs(20), || async { has("9") })
        .await
        .unwrap();
    let want: Vec<(i32, String)> = (6..10).map(|i| (1, i.to_string())).collect();
    assert_eq!(*seen.lock().unwrap(), want);
    assert_eq!(c.handled(), 4);
    // Across a rebuild it resumes after what it handled: nothing is seen twice (a message
    // delivered again would come before the new one).
    w.force_rebuild("test");
    p.send(Record::new(&topic, "10").partition(1))
        .await
        .unwrap();
    wharf_testkit::eventually("offset 10", Duration::from_secs(20), || async { has("10") })
        .await
        .unwrap();
    let want: Vec<(i32, String)> = (6..11).map(|i| (1, i.to_string())).collect();
    assert_eq!(*seen.lock().unwrap(), want);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_do_not_cause_rebalances() {
    let brokers = common::brokers();
    let topic = common::topic("slow");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for i in 0..2 {
        p.send(Record::new(&topic, i.to_string())).await.unwrap();
    }
    let calls = Arc::new(AtomicU64::new(0));
    let calls2 = calls.clone();
    // Each message takes 7 s, longer than max.poll.interval.ms (6 s, the least librdkafka
    // allows with session.timeout.ms = 6 s). The polling thread keeps polling while the
    // handler runs, so the member is never kicked out and nothing is redelivered.
    let handler = Handler::per_message(move |_| {
        let calls = calls2.clone();
        async move {
            calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(7)).await;
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(
            ConsumerSpec::group("c", common::topic("g"), [topic.clone()], handler)
                .set("max.poll.interval.ms", "6000"),
        )
        .unwrap();
    wharf_testkit::eventually("the first call", Duration::from_secs(30), || async {
        calls.load(Ordering::Relaxed) == 1
    })
    .await
    .unwrap();
    // From the first call on, the member must keep its partition: a member dropped for
    // exceeding max.poll.interval.ms loses it (and gets it again seconds later, on Tansu).
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = tokio::spawn({
        let (c, lost) = (c.clone(), lost.clone());
        async move {
            loop {
                if c.assignment().is_empty() {
                    lost.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    wharf_testkit::eventually("both messages handled", Duration::from_secs(40), || async {
        c.handled() == 2
    })
    .await
    .unwrap();
    watching.abort();
    assert!(
        !lost.load(Ordering::SeqCst),
        "the member lost its partition while a handler ran"
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "each message handled once: no rebalance redelivered any"
    );
    w.shutdown().await.unwrap();
}

/// The wrapper's threads hand work to the runtime it was started in; a current-thread
/// runtime (the `#[tokio::test]` default) works too.
#[tokio::test]
async fn works_on_a_current_thread_runtime() {
    let brokers = common::brokers();
    let topic = common::topic("current");
    let w = common::wrapper_with_topic(&brokers, &topic, 2).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let recs: Vec<Record> = (0..3000)
        .map(|i| Record::new(&topic, i.to_string()))
        .collect();
    assert!(p.send_batch(recs).await.iter().all(Result::is_ok));
    let c = w
        .add_consumer(
            ConsumerSpec::group(
                "c",
                common::topic("g"),
                [topic.clone()],
                Handler::per_message(|_| async { Outcome::Ack }),
            )
            .queue_per_partition(64),
        )
        .unwrap();
    assert!(
        wharf_testkit::eventually("c.handled() == 3000", Duration::from_secs(30), || async {
            c.handled() == 3000
        })
        .await
        .is_ok(),
        "handled {}",
        c.handled()
    );
    w.shutdown().await.unwrap();
}

/// A worker queue far smaller than the backlog, and a handler that stalls now and then: the
/// partition is paused and resumed (bounded memory) and every message is still handled
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_pauses_and_resumes_without_loss_or_reordering() {
    let brokers = common::brokers();
    let topic = common::topic("bp");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let recs: Vec<Record> = (0..10_000)
        .map(|i| Record::new(&topic, i.to_string()))
        .collect();
    assert!(p.send_batch(recs).await.iter().all(Result::is_ok));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = Handler::per_message(move |m| {
        let s = s.clone();
        async move {
            if m.offset() % 2500 == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            s.lock().unwrap().push(m.offset());
            Outcome::Ack
        }
    });
    let c = w
        .add_consumer(
            ConsumerSpec::group("c", common::topic("g"), [topic.clone()], handler)
                .queue_per_partition(64),
        )
        .unwrap();
    assert!(
        wharf_testkit::eventually("c.handled() == 10_000", Duration::from_secs(60), || async {
            c.handled() == 10_000
        })
        .await
        .is_ok(),
        "handled {}",
        c.handled()
    );
    assert_eq!(*seen.lock().unwrap(), (0..10_000).collect::<Vec<i64>>());
    w.shutdown().await.unwrap();
}

/// A handler for [`ConsumerSpec::in_flight_per_partition`] tests, and what it observed.
struct Concurrent {
    handler: Handler,
    /// The most calls running at once.
    peak: Arc<AtomicU64>,
    /// Set to let the stuck message through.
    release: Arc<std::sync::atomic::AtomicBool>,
    /// Offsets acked, in the order they were.
    done: Arc<Mutex<Vec<i64>>>,
    /// Calls of the stuck message.
    stuck_calls: Arc<AtomicU64>,
}

/// Sleeps `work` per call and keeps retrying `stuck` (every 50 ms) until released.
fn concurrent_handler(work: Duration, stuck: i64) -> Concurrent {
    let running = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::new()));
    let stuck_calls = Arc::new(AtomicU64::new(0));
    let (r, pk, rel, d, sc) = (
        running,
        peak.clone(),
        release.clone(),
        done.clone(),
        stuck_calls.clone(),
    );
    let handler = Handler::per_message(move |m| {
        let (r, pk, rel, d, sc) = (r.clone(), pk.clone(), rel.clone(), d.clone(), sc.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            pk.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(work).await;
            r.fetch_sub(1, Ordering::SeqCst);
            if m.offset() == stuck {
                sc.fetch_add(1, Ordering::SeqCst);
                if !rel.load(Ordering::SeqCst) {
                    return Outcome::Retry(Duration::from_millis(50));
                }
            }
            d.lock().unwrap().push(m.offset());
            Outcome::Ack
        }
    });
    Concurrent {
        handler,
        peak,
        release,
        done,
        stuck_calls,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_messages_of_one_partition_in_flight_commit_only_below_the_oldest_unfinished() {
    let brokers = common::brokers();
    let topic = common::topic("inflight");
    let group = common::topic("g");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    // One at a time: Tansu reports the high watermark of a multi-record batch as one past
    // its first record, which would make the lag below wrong.
    for i in 0..40 {
        p.send(Record::new(&topic, i.to_string()).partition(0))
            .await
            .unwrap();
    }

    let Concurrent {
        handler,
        peak,
        release,
        done,
        ..
    } = concurrent_handler(Duration::from_millis(50), 3);
    let c = w
        .add_consumer(
            ConsumerSpec::group("first", &group, [topic.clone()], handler)
                .in_flight_per_partition(8),
        )
        .unwrap();
    // Everything but offset 3 is handled while 3 keeps failing: one stuck message no
    // longer holds up its partition.
    wharf_testkit::eventually("c.handled() == 39", Duration::from_secs(30), || async {
        c.handled() == 39
    })
    .await
    .unwrap();
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (4..=8).contains(&peak),
        "up to 8 calls of one partition may run at once; the peak was {peak}"
    );
    // ...but the committable position stays at 3, below the oldest unfinished message (the
    // lag is read at the health checks; the new member below shows what was committed).
    let shows = |lag: &[wharf_kafka_wrapper::PartitionLag]| {
        lag.len() == 1 && lag[0].position == 3 && lag[0].lag == 37
    };
    if let Err(e) = wharf_testkit::eventually(
        "the lag to show position 3",
        Duration::from_secs(10),
        || async { shows(&c.lag()) },
    )
    .await
    {
        panic!("{e}: {:?}", c.lag());
    }
    // Stop while 3 is still unfinished: a new member of the group starts again at 3.
    w.remove_consumer("first").await.unwrap();
    let mut first: Vec<i64> = done.lock().unwrap().clone();
    first.sort_unstable();
    assert_eq!(first, (0..40).filter(|o| *o != 3).collect::<Vec<_>>());

    let Concurrent {
        handler,
        release: release2,
        done: done2,
        ..
    } = concurrent_handler(Duration::ZERO, -1);
    release2.store(true, Ordering::SeqCst);
    let c2 = w
        .add_consumer(
            ConsumerSpec::group("second", &group, [topic.clone()], handler)
                .in_flight_per_partition(8),
        )
        .unwrap();
    wharf_testkit::eventually("c2.handled() == 37", Duration::from_secs(30), || async {
        c2.handled() == 37
    })
    .await
    .unwrap();
    let mut second: Vec<i64> = done2.lock().unwrap().clone();
    second.sort_unstable();
    assert_eq!(
        second,
        (3..40).collect::<Vec<_>>(),
        "redelivered from the oldest unfinished"
    );
    release.store(true, Ordering::SeqCst);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_message_holds_back_at_most_a_queue_of_newer_ones() {
    let brokers = common::brokers();
    let topic = common::topic("window");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let results = p
        .send_batch(
            (0..100)
                .map(|i| Record::new(&topic, i.to_string()).partition(0))
                .collect(),
        )
        .await;
    assert!(results.iter().all(Result::is_ok));
    let Concurrent {
        handler,
        release,
        stuck_calls,
        ..
    } = concurrent_handler(Duration::ZERO, 0);
    let c = w
        .add_consumer(
            ConsumerSpec::group("c", common::topic("g"), [topic.clone()], handler)
                .in_flight_per_partition(4)
                .queue_per_partition(10),
        )
        .unwrap();
    // Offset 0 is stuck: 9 newer messages fill the window of 10, then the partition waits.
    wharf_testkit::eventually("c.handled() == 9", Duration::from_secs(30), || async {
        c.handled() == 9
    })
    .await
    .unwrap();
    // Had the window not held, the next messages would have been started as soon as the
    // ninth finished, and handled at once: by the time the stuck one was retried three more
    // times, they would be.
    let calls = stuck_calls.load(Ordering::SeqCst);
    wharf_testkit::eventually("three more retries", Duration::from_secs(10), || async {
        stuck_calls.load(Ordering::SeqCst) >= calls + 3
    })
    .await
    .unwrap();
    assert_eq!(
        c.handled(),
        9,
        "no more than the window may pass a stuck message"
    );
    release.store(true, Ordering::SeqCst);
    wharf_testkit::eventually("c.handled() == 100", Duration::from_secs(30), || async {
        c.handled() == 100
    })
    .await
    .unwrap();
    w.shutdown().await.unwrap();
}

/// Consumed messages are read in place from librdkafka's buffer. One kept after its
/// consumer is gone is still readable (it keeps the client alive, and letting go of it
/// does not block); `detach` gives an equal owned copy; headers keep their order and
/// repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_message_outlives_its_consumer_and_detach_copies_it() {
    let brokers = common::brokers();
    let topic = common::topic("kept");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let record = Record::new(&topic, "payload")
        .key("k")
        .header("h", "1")
        .header("h", "2")
        .header("other", "");
    p.send(record).await.unwrap();
    p.send(Record::new(&topic, "bare")).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    w.add_consumer(ConsumerSpec::group(
        "c",
        common::topic("g"),
        [topic.clone()],
        Handler::per_message(move |m| {
            let tx = tx.clone();
            async move {
                tx.send(m).await.unwrap();
                Outcome::Ack
            }
        }),
    ))
    .unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap()
    };
    let (m, bare) = (next().await, next().await);
    let detached = m.detach();
    assert_eq!(m, detached);
    assert!(bare.headers().is_empty() && bare.key().is_none());

    w.remove_consumer("c").await.unwrap();
    w.shutdown().await.unwrap();
    drop(bare);
    let headers = |m: &wharf_kafka_wrapper::ConsumedMessage| -> Vec<(String, Vec<u8>)> {
        m.headers()
            .iter()
            .map(|(k, v)| (k.into_owned(), v.to_vec()))
            .collect()
    };
    let expected = vec![
        ("h".to_owned(), b"1".to_vec()),
        ("h".to_owned(), b"2".to_vec()),
        ("other".to_owned(), Vec::new()),
    ];
    assert_eq!(
        (m.payload(), m.key(), m.header("h")),
        (&b"payload"[..], Some(&b"k"[..]), Some(&b"1"[..])),
        "read after the consumer was removed and the wrapper shut down"
    );
    assert_eq!(headers(&m), expected);
    assert_eq!(headers(&detached), expected);
    // Letting go of the last message closes its client on a thread of its own; here it
    // must simply return (a close that hung would fail the test rather than hang it).
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || drop(m)),
    )
    .await
    .expect("letting go of the last message returns")
    .unwrap();
    assert_eq!(detached.payload(), b"payload");
}
