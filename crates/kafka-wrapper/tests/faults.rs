//! Faults: broker unreachable at start, a 10 s connection cut under load, rebuilds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_kafka_wrapper::{
    ConsumerSpec, Error, Handler, KafkaWrapper, Outcome, Producer, ProducerSpec, Record, TopicSpec,
    WrapperState,
};
use wharf_testkit::Tansu;

/// A proxied Tansu with a new topic, a wrapper that rebuilds 2 s after Kafka became
/// unreachable, and a producer on it. The short grace makes the old client's flush give up
/// while Kafka is still down, so its queued records are purged rather than delivered late
/// by it.
async fn rebuilding_wrapper(prefix: &str) -> (Tansu, String, KafkaWrapper, Producer) {
    let (kafka, brokers, topic) = proxied_tansu_with_topic(prefix).await;
    let config = common::config(&brokers)
        .unreachable_after(Duration::from_secs(2))
        .shutdown_grace(Duration::from_millis(500));
    let w = KafkaWrapper::start(config).await.unwrap();
    let p = w
        .add_producer(ProducerSpec::new("p").queue_timeout(Duration::from_secs(60)))
        .unwrap();
    (kafka, topic, w, p)
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let w = common::wrapper_with_topic(brokers, topic, partitions).await;
    w.shutdown().await.unwrap();
}

/// A Tansu of this test's own behind the fault proxy, with a new one-partition topic named
/// after `prefix`: (broker, bootstrap servers, topic).
async fn proxied_tansu_with_topic(prefix: &str) -> (Tansu, String, String) {
    let kafka = tokio::task::spawn_blocking(Tansu::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let brokers = kafka.bootstrap_servers();
    let topic = common::topic(prefix);
    create_topic(&brokers, &topic, 1).await;
    (kafka, brokers, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_kafka_is_unreachable_and_works_once_it_is_back() {
    let (kafka, brokers, topic) = proxied_tansu_with_topic("late").await;
    let proxy = kafka.proxy().unwrap();
    proxy.down().unwrap();

    let w = KafkaWrapper::start(common::config(&brokers))
        .await
        .expect("starting must not need Kafka");
    let p = w
        .add_producer(ProducerSpec::new("p").queue_timeout(Duration::from_secs(30)))
        .unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            Handler::per_message(move |_| {
                let g = g.clone();
                async move {
                    g.fetch_add(1, Ordering::Relaxed);
                    Outcome::Ack
                }
            }),
        ))
        .unwrap();
    let send = tokio::spawn({
        let p = p.clone();
        let topic = topic.clone();
        async move { p.send(Record::new(topic, "hello")).await }
    });
    // Kafka stays down for 3 s. A send that failed for want of a broker would have done so
    // at once; one that was delivered cannot have been.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !send.is_finished(),
        "a send while Kafka is down waits for it: {:?}",
        send.is_finished()
    );
    assert_eq!(w.state(), WrapperState::Running(0));

    proxy.restore().unwrap();
    let receipt = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(receipt.partition, 0);
    wharf_testkit::eventually(
        "got.load(Ordering::Relaxed) == 1",
        Duration::from_secs(40),
        || async { got.load(Ordering::Relaxed) == 1 },
    )
    .await
    .unwrap();
    assert_eq!(c.handled(), 1);
    w.shutdown().await.unwrap();
}

/// 50,000 keyed messages; after 15,000 the proxy drops every connection and refuses new
/// ones for 10 s. Nothing may be lost, duplicates stay bounded, and both sides resume on
/// their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_cut_during_fifty_thousand_messages_loses_nothing() {
    const N: u64 = 50_000;
    let kafka = tokio::task::spawn_blocking(Tansu::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let brokers = kafka.bootstrap_servers();
    let topic = common::topic("cut");
    let w = common::wrapper_with_topic(&brokers, &topic, 3).await;

    let seen = Arc::new(Mutex::new(vec![0u8; N as usize]));
    let s = seen.clone();
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            Handler::per_message(move |m| {
                let s = s.clone();
                async move {
                    let i: usize = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
                    let mut s = s.lock().unwrap();
                    s[i] = s[i].saturating_add(1);
                    Outcome::Ack
                }
            }),
        ))
        .unwrap();
    wharf_testkit::eventually(
        "c.assignment().len() == 3",
        Duration::from_secs(30),
        || async { c.assignment().len() == 3 },
    )
    .await
    .unwrap();

    let p = w
        .add_producer(ProducerSpec::new("p").queue_timeout(Duration::from_secs(60)))
        .unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let proxy_ctl = Arc::new(kafka);
    for i in 0..N {
        if i == 15_000 {
            let k = proxy_ctl.clone();
            tokio::task::spawn_blocking(move || {
                let proxy = k.proxy().unwrap();
                proxy.down().unwrap();
                std::thread::sleep(Duration::from_secs(10));
                proxy.restore().unwrap();
            });
        }
        if i % 1_000 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await; // a stream, not a burst
        }
        let (ok, failed) = (ok.clone(), failed.clone());
        p.send_with(
            Record::new(&topic, i.to_string()).key(format!("k{}", i % 97)),
            move |r| {
                if r.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            },
        )
        .await
        .unwrap();
    }
    wharf_testkit::eventually(
        "ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) == N",
        Duration::from_secs(120),
        || async { ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) == N },
    )
    .await
    .unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "every message must be delivered"
    );
    let all_seen = wharf_testkit::eventually(
        "seen.lock().unwrap().iter().all(|n| *n > 0)",
        Duration::from_secs(120),
        || async { seen.lock().unwrap().iter().all(|n| *n > 0) },
    )
    .await
    .is_ok();
    let counts = seen.lock().unwrap().clone();
    let missing = counts.iter().filter(|n| **n == 0).count();
    let duplicates: u64 = counts.iter().map(|n| u64::from(n.saturating_sub(1))).sum();
    let mut stored = 0;
    for part in 0..3 {
        stored += w.admin().watermarks(&topic, part).await.unwrap().1;
    }
    eprintln!(
        "missing {missing}, duplicates seen by the consumer {duplicates}, messages stored {stored} (of {N}), rebuilds {}",
        w.rebuilds()
    );
    assert!(all_seen, "{missing} messages never consumed");
    assert!(
        duplicates <= 10_000,
        "{duplicates} duplicates: more than the uncommitted window explains"
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_keeps_every_registration_and_handles_keep_working() {
    let brokers = common::brokers();
    let topic = common::topic("rebuild");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            Handler::per_message(|_| async { Outcome::Ack }),
        ))
        .unwrap();
    p.send(Record::new(&topic, "before")).await.unwrap();
    wharf_testkit::eventually("c.handled() == 1", Duration::from_secs(30), || async {
        c.handled() == 1
    })
    .await
    .unwrap();
    let mut states = w.watch_state();
    w.force_rebuild("test");
    tokio::time::timeout(
        Duration::from_secs(30),
        states.wait_for(|s| *s == WrapperState::Running(1)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(w.rebuilds(), 1);
    assert!(w.producer("p").is_some() && w.consumer("c").is_some());
    p.send(Record::new(&topic, "after")).await.unwrap();
    wharf_testkit::eventually("c.handled() == 2", Duration::from_secs(30), || async {
        c.handled() == 2
    })
    .await
    .unwrap();
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_trigger_rebuilds_until_the_configured_limit() {
    let kafka = tokio::task::spawn_blocking(Tansu::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    kafka.proxy().unwrap().down().unwrap();
    let config = common::config(&kafka.bootstrap_servers())
        .unreachable_after(Duration::from_secs(1))
        .rebuild_backoff(Duration::from_millis(100), Duration::from_millis(200))
        .max_rebuilds(Some(2));
    let w = KafkaWrapper::start(config).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), w.join())
        .await
        .unwrap();
    assert!(
        matches!(r, Err(Error::RebuildsExhausted { attempts: 2, .. })),
        "{r:?}"
    );
    assert_eq!(w.state(), WrapperState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_longer_than_the_threshold_the_rebuilt_clients_work() {
    let (kafka, brokers, topic) = proxied_tansu_with_topic("outage").await;
    let config = common::config(&brokers).unreachable_after(Duration::from_secs(2));
    let w = KafkaWrapper::start(config).await.unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    p.send(Record::new(&topic, "1")).await.unwrap();
    kafka.proxy().unwrap().down().unwrap();
    // Sent while Kafka is down: its client is torn down by the rebuild, the message is not.
    let during = tokio::spawn({
        let (p, topic) = (p.clone(), topic.clone());
        async move { p.send(Record::new(topic, "during")).await }
    });
    assert!(
        wharf_testkit::eventually("w.rebuilds() >= 1", Duration::from_secs(20), || async {
            w.rebuilds() >= 1
        })
        .await
        .is_ok(),
        "no rebuild while unreachable"
    );
    kafka.proxy().unwrap().restore().unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), during)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.partition, 0);
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match p.send(Record::new(&topic, "2")).await {
                Ok(d) => break d,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .unwrap();
    assert!(r.offset >= 2, "after '1' and 'during': {r:?}");
    let _ = TopicSpec::new("unused", 1);
    w.shutdown().await.unwrap();
}

/// Under a wharf-core supervisor: when the wrapper gives up, the child exits with an error,
/// the supervisor restarts it, and the restarted loop keeps the registrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_supervisor_a_wrapper_that_gave_up_is_restarted_with_its_registrations() {
    use wharf_core::supervisor::{Shutdown, Supervisor};
    let (kafka, brokers, topic) = proxied_tansu_with_topic("sup").await;
    kafka.proxy().unwrap().down().unwrap();
    let config = common::config(&brokers)
        .health_interval(Duration::from_millis(250))
        .unreachable_after(Duration::from_millis(500))
        .rebuild_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .max_rebuilds(Some(1));
    let w = KafkaWrapper::start(config).await.unwrap();
    let p = w
        .add_producer(ProducerSpec::new("p").queue_timeout(Duration::from_secs(30)))
        .unwrap();
    let tree = Supervisor::builder("app")
        .intensity(100, Duration::from_secs(10))
        .child(
            w.child_spec("kafka")
                .shutdown(Shutdown::Timeout(Duration::from_secs(15))),
        )
        .start()
        .await
        .unwrap();
    // The loop gives up within a few seconds while Kafka is down; the supervisor restarts it.
    assert!(
        wharf_testkit::eventually("w.rebuilds() >= 3", Duration::from_secs(20), || async {
            w.rebuilds() >= 3
        })
        .await
        .is_ok(),
        "rebuilds {}",
        w.rebuilds()
    );
    kafka.proxy().unwrap().restore().unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match p.send(Record::new(&topic, "x")).await {
                Ok(d) => break d,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(d.partition, 0);
    tree.shutdown().await.unwrap();
    assert_eq!(w.state(), WrapperState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_purged_by_a_rebuild_are_sent_again_for_send_with_and_send_batch() {
    common::trace();
    let (kafka, topic, w, p) = rebuilding_wrapper("purged-callback").await;
    p.send(Record::new(&topic, "before")).await.unwrap();
    kafka.proxy().unwrap().down().unwrap();
    // Queued while Kafka is down: the rebuild tears their client down with them inside.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..20 {
        let tx = tx.clone();
        p.send_with(Record::new(&topic, format!("during-{i}")), move |r| {
            let _ = tx.send(r);
        })
        .await
        .unwrap();
    }
    drop(tx);
    // And a batch queued at the same time: its purged records are sent again too.
    let batch = tokio::spawn({
        let (p, topic) = (p.clone(), topic.clone());
        async move {
            p.send_batch(
                (0..20)
                    .map(|i| Record::new(&topic, format!("batch-{i}")))
                    .collect(),
            )
            .await
        }
    });
    assert!(
        wharf_testkit::eventually("w.rebuilds() >= 1", Duration::from_secs(20), || async {
            w.rebuilds() >= 1
        })
        .await
        .is_ok(),
        "no rebuild while unreachable"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.proxy().unwrap().restore().unwrap();
    let mut offsets = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("every callback is called")
    {
        let d = r.expect("a purged record is sent again, not failed");
        offsets.push(d.offset);
    }
    let batch = tokio::time::timeout(Duration::from_secs(60), batch)
        .await
        .expect("the batch completes")
        .unwrap();
    assert_eq!(batch.len(), 20);
    for r in batch {
        offsets.push(
            r.expect("a purged batch record is sent again, not failed")
                .offset,
        );
    }
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 40, "40 records, each delivered: {offsets:?}");
    assert!(w.rebuilds() >= 1);
    w.shutdown().await.unwrap();
}

/// A stream of `send_with` records to one partition while Kafka goes away long enough for
/// a rebuild: the records the old client held are sent again through the new one before
/// anything sent after them, so the partition keeps the order they were sent in (a record
/// may be stored twice, never ahead of an earlier one's first copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_keeps_the_order_of_records_sent_with_send_with() {
    const N: u64 = 4_000;
    common::trace();
    let (kafka, topic, w, p) = rebuilding_wrapper("purged-order").await;
    p.send(Record::new(&topic, "-1")).await.unwrap();
    let kafka = Arc::new(kafka);
    let outage = tokio::spawn({
        let (kafka, w) = (kafka.clone(), w.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            kafka.proxy().unwrap().down().unwrap();
            let rebuilt =
                wharf_testkit::eventually("w.rebuilds() >= 1", Duration::from_secs(20), || async {
                    w.rebuilds() >= 1
                })
                .await
                .is_ok();
            // Records keep coming while the new client cannot reach Kafka either.
            tokio::time::sleep(Duration::from_millis(700)).await;
            kafka.proxy().unwrap().restore().unwrap();
            rebuilt
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..N {
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let tx = tx.clone();
        p.send_with(Record::new(&topic, i.to_string()), move |r| {
            let _ = tx.send(r.map(|_| ()));
        })
        .await
        .unwrap();
    }
    drop(tx);
    assert!(
        outage.await.unwrap(),
        "no rebuild while Kafka was unreachable"
    );
    let mut delivered = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("every callback is called")
    {
        r.expect("a purged record is sent again, not failed");
        delivered += 1;
    }
    assert_eq!(delivered, N);
    // Read back with a plain consumer (Tansu's high watermark of a multi-record batch is one
    // past its first record, so a watermark-bounded read would stop early).
    let stored = Arc::new(Mutex::new(Vec::<i64>::new()));
    let s = stored.clone();
    w.add_consumer(ConsumerSpec::partitions(
        "read-back",
        [(topic.clone(), 0, wharf_kafka_wrapper::StartAt::Beginning)],
        Handler::per_message(move |m| {
            let s = s.clone();
            async move {
                let seq = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
                s.lock().unwrap().push(seq);
                Outcome::Ack
            }
        }),
    ))
    .unwrap();
    let complete = |seqs: &[i64]| {
        let mut seen = std::collections::HashSet::new();
        seqs.iter().filter(|s| seen.insert(**s)).count() as u64 == N + 1
    };
    // Checked below, with what is missing.
    let _ = wharf_testkit::eventually(
        "every record read back",
        Duration::from_secs(60),
        || async { complete(&stored.lock().unwrap()) },
    )
    .await;
    let seqs = stored.lock().unwrap().clone();
    // The first copy of each record, in partition order, must be -1, 0, 1, 2, ...: count the
    // records whose first copy came after that of a record sent later.
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<i64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
    let mut highest = i64::MIN;
    let mut overtaken = Vec::new();
    for s in &firsts {
        if *s < highest {
            overtaken.push(*s);
        }
        highest = highest.max(*s);
    }
    assert_eq!(firsts.len() as u64, N + 1, "every record stored");
    assert!(
        overtaken.is_empty(),
        "{} records stored after a record sent later (first: {:?}); rebuilds {}",
        overtaken.len(),
        &overtaken[..overtaken.len().min(10)],
        w.rebuilds()
    );
    w.shutdown().await.unwrap();
}

/// Many deliveries per partition in flight through a `KafkaSource`, and the group member
/// cut off for longer than its session timeout, so that the group drops it and it joins
/// again (its partitions revoked and assigned again): every key's messages are still first
/// handed out in the order they were produced. A message may come again (at least once),
/// but never first after a later message of its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_many_in_flight_a_rejoin_hands_out_each_keys_messages_in_order() {
    use std::collections::{HashMap, VecDeque};
    use wharf_core::transport::Source as _;
    const KEYS: u64 = 24;
    const N: u64 = 6_000;
    common::trace();
    let kafka = tokio::task::spawn_blocking(Tansu::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let brokers = kafka.bootstrap_servers();
    let topic = common::topic("rejoin");
    let w = common::wrapper_with_topic(&brokers, &topic, 4).await;
    let spec = ConsumerSpec::group(
        "src",
        common::topic("g"),
        [topic.clone()],
        Handler::per_message(|_| async { Outcome::Ack }),
    )
    .in_flight_per_partition(256);
    let mut source = w.add_source(spec, 1024).unwrap();
    let handle = w.consumer("src").unwrap();
    wharf_testkit::eventually(
        "handle.assignment().len() == 4",
        Duration::from_secs(30),
        || async { handle.assignment().len() == 4 },
    )
    .await
    .unwrap();

    let p = w
        .add_producer(ProducerSpec::new("p").queue_timeout(Duration::from_secs(60)))
        .unwrap();
    let producing = tokio::spawn({
        let (p, topic) = (p.clone(), topic.clone());
        async move {
            for i in 0..N {
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let (key, seq) = (i % KEYS, i / KEYS);
                p.send_with(
                    Record::new(&topic, format!("{key}:{seq}")).key(format!("k{key}")),
                    |r| {
                        r.expect("delivered");
                    },
                )
                .await
                .unwrap();
            }
        }
    });
    let kafka = Arc::new(kafka);
    let cut = tokio::spawn({
        let kafka = kafka.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            kafka.proxy().unwrap().down().unwrap();
            tokio::time::sleep(Duration::from_secs(9)).await; // session timeout: 6 s
            kafka.proxy().unwrap().restore().unwrap();
        }
    });

    // Like a sharded consumer: per key, accept the next message, skip what was accepted
    // before, and note a message that comes first after a later one of its key. Deliveries
    // are settled 30 ms after they arrive, so hundreds per partition are out at once.
    let last = (N - 1) / KEYS;
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut gaps = Vec::new();
    let mut held = VecDeque::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while next.len() < KEYS as usize || next.values().any(|n| *n <= last) {
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "not every message arrived: {next:?}");
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, d): (_, wharf_core::transport::Delivery) = held.pop_front().unwrap();
            d.ack().await.unwrap();
        }
        let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(10), source.recv()).await
        else {
            continue;
        };
        let d = d.unwrap();
        let text = std::str::from_utf8(d.message().payload())
            .unwrap()
            .to_owned();
        let (key, seq) = text.split_once(':').unwrap();
        let (key, seq): (u64, u64) = (key.parse().unwrap(), seq.parse().unwrap());
        let expected = next.entry(key).or_insert(0);
        if seq > *expected {
            gaps.push((
                key,
                seq,
                *expected,
                d.info().partition,
                d.info().offset,
                d.attempt(),
            ));
        }
        if seq >= *expected {
            *expected = seq + 1;
        }
        held.push_back((now + Duration::from_millis(30), d));
    }
    producing.await.unwrap();
    cut.await.unwrap();
    assert!(
        gaps.is_empty(),
        "{} messages handed out before an earlier one of their key (key, seq, expected, partition, offset, attempt): {:?}",
        gaps.len(),
        &gaps[..gaps.len().min(10)]
    );
    drop(held);
    drop(source);
    w.shutdown().await.unwrap();
}
