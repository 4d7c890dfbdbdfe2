//! Kafka (Tansu): the shared broker and a broker behind the fault proxy answer `rdkafka`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use wharf_testkit::{Tansu, unique_name};

const MESSAGES: usize = 30;
const PARTITIONS: i32 = 3;

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &options,
        ),
    )
    .await
    .expect("CreateTopics timed out")
    .unwrap();
    for result in results {
        result
            .map_err(|(topic, code)| format!("{topic}: {code}"))
            .unwrap();
    }
}

/// Produces MESSAGES keyed messages with acks=all; returns the partitions they landed in.
async fn produce(brokers: &str, topic: &str) -> BTreeSet<i32> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .create()
        .unwrap();
    let mut partitions = BTreeSet::new();
    for i in 0..MESSAGES {
        let key = format!("key-{i}");
        let payload = format!("message-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        partitions.insert(delivery.partition);
    }
    partitions
}

/// Consumes in a fresh group until every payload is seen; returns them sorted.
async fn consume_all(brokers: &str, topic: &str) -> Vec<String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("group"))
        .set("auto.offset.reset", "earliest")
        // Tansu delays the first join by the session timeout's initial delay (BROKERS.md).
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let all = async {
        while seen.len() < MESSAGES {
            let message = consumer.recv().await.unwrap();
            let payload = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
            seen.insert(payload);
        }
    };
    tokio::time::timeout(Duration::from_secs(45), all)
        .await
        .unwrap_or_else(|_| panic!("consumed only {} of {MESSAGES} within 45 s", seen.len()));
    seen.into_iter().collect()
}

fn expected() -> Vec<String> {
    let mut all: Vec<String> = (0..MESSAGES).map(|i| format!("message-{i}")).collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_shared_kafka_creates_topics_and_round_trips_messages_in_a_group() {
    let kafka = wharf_testkit::kafka().unwrap();
    let topic = unique_name("smoke");

    create_topic(kafka.address(), &topic).await;
    let partitions = produce(kafka.address(), &topic).await;
    let consumed = consume_all(kafka.address(), &topic).await;

    assert!(partitions.len() > 1, "30 keys all landed in {partitions:?}");
    assert_eq!(consumed, expected());
}

#[tokio::test]
async fn a_kafka_behind_the_proxy_round_trips_messages_through_it() {
    let kafka = Tansu::start_behind_proxy().unwrap();
    let proxy = kafka.proxy().unwrap();
    let brokers = kafka.bootstrap_servers();
    assert_eq!(brokers, proxy.addr().to_string());
    let topic = unique_name("proxied");

    create_topic(&brokers, &topic).await;
    produce(&brokers, &topic).await;
    let consumed = consume_all(&brokers, &topic).await;

    assert_eq!(consumed, expected());
    assert!(
        proxy.connections_accepted() >= 3,
        "clients bypassed the proxy"
    );
}

#[tokio::test]
async fn a_kafka_behind_the_proxy_advertises_the_proxy() {
    let kafka = Tansu::start_behind_proxy().unwrap();
    let proxy = kafka.proxy().unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", unique_name("metadata"))
        .create()
        .unwrap();

    let metadata = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();

    let brokers: Vec<(String, i32)> = metadata
        .brokers()
        .iter()
        .map(|b| (b.host().to_owned(), b.port()))
        .collect();
    assert_eq!(
        brokers,
        vec![("127.0.0.1".to_owned(), i32::from(proxy.port()))]
    );
    assert_ne!(kafka.port(), proxy.port());
}

#[tokio::test]
async fn an_owned_tansu_comes_back_on_the_same_address_after_a_kill_but_empty() {
    let kafka = Tansu::start().unwrap();
    let brokers = kafka.bootstrap_servers();
    let topic = unique_name("before-restart");
    create_topic(&brokers, &topic).await;

    kafka.kill().unwrap();
    kafka.restart().unwrap();

    assert_eq!(kafka.bootstrap_servers(), brokers);
    // In-memory storage: the old topic is gone, so creating it again succeeds.
    create_topic(&brokers, &topic).await;
    produce(&brokers, &topic).await;
}

/// Produces `n` messages `{prefix}-{i}` with acks=all, each acknowledged before the next.
async fn produce_named(brokers: &str, topic: &str, prefix: &str, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .create()
        .unwrap();
    for i in 0..n {
        let payload = format!("{prefix}-{i}");
        producer
            .send(
                FutureRecord::to(topic).key(&payload).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Every payload of the topic, read from the start by a fresh group, once `want` distinct
/// ones are seen (45 s at most).
async fn read_distinct(brokers: &str, topic: &str, want: usize) -> BTreeSet<String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let all = async {
        while seen.len() < want {
            let message = consumer.recv().await.unwrap();
            seen.insert(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(45), all)
        .await
        .unwrap_or_else(|_| panic!("read only {} of {want} within 45 s", seen.len()));
    seen
}

#[tokio::test]
async fn a_durable_tansu_serves_its_records_and_committed_offsets_after_kill_and_restart() {
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::CommitMode;
    use wharf_testkit::nemesis::Victim;

    let kafka = Tansu::start_durable_behind_proxy().unwrap();
    assert!(kafka.is_durable());
    let brokers = kafka.bootstrap_servers();
    let topic = unique_name("durable");
    create_topic(&brokers, &topic).await;
    produce_named(&brokers, &topic, "before", MESSAGES).await;

    // A group commits offset 7 on partition 0.
    let group = unique_name("durable-group");
    let committer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, rdkafka::Offset::Offset(7))
        .unwrap();
    let committer = tokio::task::spawn_blocking(move || {
        committer.commit(&offsets, CommitMode::Sync).unwrap();
        committer
    })
    .await
    .unwrap();
    drop(committer);

    // The nemesis's kill: SIGKILL, then a restart on the same port with the same store.
    let pid = kafka.pid().unwrap();
    let victim: &dyn Victim = &kafka;
    victim.kill().unwrap();
    assert!(!kafka.is_running());
    victim.restart().unwrap();
    assert_ne!(kafka.pid(), Some(pid));
    assert_eq!(kafka.bootstrap_servers(), brokers);

    // Every record from before the kill, and the new ones after it at later offsets.
    produce_named(&brokers, &topic, "after", MESSAGES).await;
    let seen = read_distinct(&brokers, &topic, 2 * MESSAGES).await;
    let mut want: BTreeSet<String> = (0..MESSAGES).map(|i| format!("before-{i}")).collect();
    want.extend((0..MESSAGES).map(|i| format!("after-{i}")));
    assert_eq!(seen, want, "log tail:\n{}", kafka.log_tail());

    // And the group's committed offset.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let committed = tokio::task::spawn_blocking(move || {
        reader
            .committed_offsets(wanted, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        rdkafka::Offset::Offset(7)
    );
}

/// What [`produce_through_kills`] saw: records acknowledged, and those of them the topic did
/// not hold when read back, with the offset each receipt named.
struct KillRun {
    acked: usize,
    missing: Vec<(u64, i64)>,
}

impl KillRun {
    /// Fails the test, naming each acknowledged record the topic does not hold.
    fn assert_nothing_missing(&self, seed: u64) {
        assert!(
            self.missing.is_empty(),
            "{} of {} acknowledged records are not in the topic (id, receipt offset): {:?}; seed {seed}",
            self.missing.len(),
            self.acked,
            self.missing
        );
    }
}

/// Produces numbered records to one partition of a durable Tansu, five at a time every
/// 10 ms, with `settings` on the producer, while the broker is killed (SIGKILL) and
/// restarted 5 times at moments drawn from `seed`; then reads the partition back and lists
/// every acknowledged record it does not hold.
async fn produce_through_kills(settings: &[(&str, &str)], seed: u64) -> KillRun {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let kafka = Arc::new(
        tokio::task::spawn_blocking(Tansu::start_durable)
            .await
            .unwrap()
            .unwrap(),
    );
    let brokers = kafka.bootstrap_servers();
    let topic = unique_name("kills");
    create_topic(&brokers, &topic).await;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "20000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().unwrap();

    let acked: Arc<Mutex<BTreeMap<u64, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (kafka, stop) = (Arc::clone(&kafka), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut x = seed | 1;
            for _ in 0..5 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::thread::sleep(Duration::from_millis(800 + x % 1200));
                kafka.kill().unwrap();
                std::thread::sleep(Duration::from_millis(500));
                kafka.restart().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut sends = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..5 {
            let (producer, topic, acked) = (producer.clone(), topic.clone(), Arc::clone(&acked));
            let id = n;
            n += 1;
            sends.push(tokio::spawn(async move {
                let payload = id.to_string();
                let record = FutureRecord::<(), _>::to(&topic)
                    .payload(&payload)
                    .partition(0);
                if let Ok(d) = producer.send(record, Duration::from_secs(20)).await {
                    acked.lock().unwrap().insert(id, d.offset);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in sends {
        s.await.unwrap(); // each send gives up after message.timeout.ms
    }
    tokio::task::spawn_blocking(move || killer.join())
        .await
        .unwrap()
        .unwrap();
    let acked = acked.lock().unwrap().clone();

    // Read partition 0 back until it holds every acknowledged record, or nothing new came
    // for 10 s (the broker's high watermark is not used: after a restart Tansu reported one
    // below records it then served).
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique_name("kills-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut stored = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !acked.keys().all(|id| stored.contains(id)) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
            Ok(Ok(m)) => {
                let payload = std::str::from_utf8(m.payload().unwrap()).unwrap();
                stored.insert(payload.parse::<u64>().unwrap());
            }
            Ok(Err(e)) => panic!("reading the topic back failed: {e}"),
            Err(_) => break, // nothing new for 10 s: the partition is read
        }
    }
    let missing = acked
        .iter()
        .filter(|(id, _)| !stored.contains(id))
        .map(|(id, offset)| (*id, *offset))
        .collect();
    eprintln!(
        "{} records acknowledged of {n} sent, {} read back (settings {settings:?}, seed {seed})",
        acked.len(),
        stored.len()
    );
    KillRun {
        acked: acked.len(),
        missing,
    }
}

/// The nemesis kills a durable broker with the producer settings it recommends for that
/// ([`Tansu::CRASH_SAFE_PRODUCER`]): every acknowledged record must then survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_broker_keeps_every_acknowledged_record_across_kills_at_random_moments() {
    let seed = wharf_testkit::nemesis::seed();
    let run = produce_through_kills(Tansu::CRASH_SAFE_PRODUCER, seed).await;
    assert!(
        run.acked > 500,
        "too few records acknowledged to judge: {}",
        run.acked
    );
    run.assert_nothing_missing(seed);
}

/// The same with librdkafka's idempotent producer (wharf-kafka-wrapper's default): on Tansu
/// 0.6 a kill between the broker saving the producer's sequence and the batch loses the
/// batch although the retry is acknowledged (see [`Tansu::CRASH_SAFE_PRODUCER`]). Fails
/// while Tansu has that defect (about 1 kill in 4 lands in the window); passes once fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails on Tansu 0.6: an idempotent produce retried across a broker crash is \
            acknowledged and not stored (Tansu::CRASH_SAFE_PRODUCER)"]
async fn a_durable_broker_keeps_every_idempotent_record_across_kills_at_random_moments() {
    let seed = wharf_testkit::nemesis::seed();
    let run = produce_through_kills(&[("enable.idempotence", "true")], seed).await;
    run.assert_nothing_missing(seed);
}
