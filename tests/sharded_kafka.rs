//! wharf-sharded-consumer end to end over Kafka (Tansu, started by wharf-testkit) through
//! wharf-kafka-wrapper's `KafkaSource`: a restart in the middle, two consumers sharing one
//! group, and many keys over one partition.
//!
//! These are the umbrella's tests, not the sharded consumer's: they join two capability
//! crates, and a capability crate never depends on another. Run them with
//! `cargo test -p wharf --features kafka-wrapper,sharded-consumer --test sharded_kafka`.
//!
//! Every wait has a deadline: `eventually` on what the test can observe, `timeout` around
//! every run it joins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::transport::{Message, Publisher};
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler as KafkaHandler, KafkaConfig, KafkaSource, KafkaWrapper,
    Outcome as KafkaOutcome, ProducerSpec, TopicSpec,
};
use wharf_sharded_consumer::{Error, Handler, Incoming, Outcome, ShardKey, ShardedConsumer};
use wharf_testkit::eventually;

/// How long a run may take to end once stopped (its handlers are quick; the source's
/// consumer leaves its group in the background).
const STOPPING: Duration = Duration::from_secs(30);

/// Joins a run, failing the test if it does not end within [`STOPPING`].
async fn joined(run: tokio::task::JoinHandle<Result<(), Error>>) {
    tokio::time::timeout(STOPPING, run)
        .await
        .expect("the run ends once stopped")
        .unwrap()
        .unwrap();
}

/// Every call: (consumer, key, sequence number within the key).
type Log = Arc<Mutex<Vec<(&'static str, String, u64)>>>;

/// Checks order as it goes: a key's next new sequence number must be the one after the
/// highest seen (a replay of an older one after a restart is allowed: at least once).
struct Ordered {
    who: &'static str,
    log: Log,
    gaps: Arc<Mutex<Vec<String>>>,
    /// One permit per message: lets a test stop the consumer in the middle of a stream.
    gate: Arc<tokio::sync::Semaphore>,
}

impl Handler for Ordered {
    type State = Option<u64>;
    /// A no-op: its answer (or `Stopped`) tells whether the key's executor still runs.
    type Signal = ();
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<Option<u64>, String> {
        Ok(None)
    }

    async fn handle_message(
        &self,
        last: &mut Option<u64>,
        msg: &Incoming<'_>,
    ) -> Result<Outcome, String> {
        self.gate.acquire().await.unwrap().forget();
        let key = msg.key().as_str().unwrap().to_owned();
        let seq: u64 = std::str::from_utf8(msg.payload()).unwrap().parse().unwrap();
        // A fresh actor (first message, or after a restart) may start at any replayed point.
        if let Some(last) = *last
            && seq > last + 1
        {
            self.gaps
                .lock()
                .unwrap()
                .push(format!("{key}: {seq} after {last}"));
        }
        *last = Some(last.map_or(seq, |l| l.max(seq)));
        self.log.lock().unwrap().push((self.who, key, seq));
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, _: &mut Option<u64>, (): ()) -> Result<(), String> {
        Ok(())
    }
}

/// The two tests run one after the other: each starts group consumers, and the shared
/// broker's group coordination is the slow part (joins overlapping with leaves).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `RUST_LOG=info` (or finer) shows what the wrapper and the consumer do.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig::new(brokers)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .health_interval(Duration::from_millis(500))
        .rebuild_backoff(Duration::from_millis(200), Duration::from_secs(2))
}

/// A wrapper on the test binary's shared Kafka (Tansu from wharf-testkit).
async fn wrapper() -> KafkaWrapper {
    let brokers = wharf_testkit::kafka()
        .expect("Tansu (run scripts/install)")
        .address();
    KafkaWrapper::start(config(brokers)).await.unwrap()
}

/// A new topic named after `prefix`, with `partitions` partitions.
async fn new_topic(w: &KafkaWrapper, prefix: &str, partitions: i32) -> String {
    let topic = wharf_testkit::unique_name(prefix);
    w.admin()
        .ensure_topics(&[TopicSpec::new(&topic, partitions)])
        .await
        .unwrap();
    topic
}

/// Publishes `per_key` messages to each of `keys` keys, payload = the key's sequence number.
async fn produce(w: &KafkaWrapper, topic: &str, keys: usize, per_key: u64) {
    let publisher = w
        .add_producer(ProducerSpec::new("producer"))
        .unwrap()
        .publisher(topic);
    let mut batch = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            batch.push(Message::new(seq.to_string()).with_key(format!("key-{k}")));
        }
    }
    for result in publisher.publish_batch(batch).await {
        result.unwrap();
    }
}

fn source(w: &KafkaWrapper, name: &str, group: &str, topic: &str) -> KafkaSource {
    let spec = ConsumerSpec::group(
        name,
        group,
        [topic.to_owned()],
        KafkaHandler::per_message(|_| async { KafkaOutcome::Ack }),
    );
    w.add_source(spec, 256).unwrap()
}

fn consumer(
    who: &'static str,
    log: &Log,
    gaps: &Arc<Mutex<Vec<String>>>,
    gate: &Arc<tokio::sync::Semaphore>,
) -> ShardedConsumer<Ordered> {
    ShardedConsumer::builder(
        who,
        Ordered {
            who,
            log: log.clone(),
            gaps: gaps.clone(),
            gate: gate.clone(),
        },
    )
    .discard_dead_letters()
    .build()
    .unwrap()
}

fn distinct(log: &Log) -> BTreeSet<(String, u64)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(_, k, s)| (k.clone(), *s))
        .collect()
}

/// `eventually` for a synchronous check, answering whether it held in time (the callers
/// add what they saw to their failure message).
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> bool {
    eventually(what, within, || std::future::ready(check()))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_a_restart_in_the_middle_loses_nothing_and_keeps_each_keys_order() {
    let _alone = ONE_AT_A_TIME.lock().await;
    logs();
    let w = wrapper().await;
    let topic = new_topic(&w, "sharded", 4).await;
    let group = wharf_testkit::unique_name("sharded-group");
    let (keys, per_key) = (40, 50u64);
    let total = keys * per_key as usize;
    produce(&w, &topic, keys, per_key).await;

    let (log, gaps) = (Log::default(), Arc::new(Mutex::new(Vec::new())));
    let gate = Arc::new(tokio::sync::Semaphore::new(total / 3));
    let sharded = consumer("restarted", &log, &gaps, &gate);

    // First run: stopped once a third is handled (the gate holds the rest back).
    let stop = CancellationToken::new();
    let first = tokio::spawn({
        let (sharded, source, stop) = (
            sharded.clone(),
            source(&w, "first", &group, &topic),
            stop.clone(),
        );
        async move { sharded.run(source, stop).await }
    });
    assert!(
        until("a third handled", Duration::from_secs(60), || distinct(
            &log
        )
        .len()
            >= total / 3)
        .await,
        "first run started"
    );
    // The handlers now wait at the gate: stop, then let the calls in progress finish. An
    // executor answers `Stopped` once it has seen the stop, and starts nothing new after;
    // once every key's executor has, the gate may open without more being handled.
    stop.cancel();
    eventually("every executor saw the stop", STOPPING, || async {
        for k in 0..keys {
            let answer = sharded.signal(format!("key-{k}"), ()).await;
            if !matches!(answer, Err(Error::Stopped { .. })) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();
    gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS - total);
    joined(first).await;
    // Dropping the source removes its Kafka consumer (it drains, commits, leaves the
    // group) in the background; the next source of the same group, on the same wrapper,
    // starts once it is gone.
    assert!(
        until(
            "the first consumer removed",
            Duration::from_secs(30),
            || { w.consumer("first").is_none() }
        )
        .await,
        "the first Kafka consumer is removed"
    );
    let after_first = distinct(&log).len();
    assert!(
        after_first < total,
        "stopped in the middle ({after_first} of {total})"
    );

    // Second run of the same consumer on a new source of the same group.
    let stop = CancellationToken::new();
    let second = tokio::spawn({
        let (sharded, source, stop) = (
            sharded.clone(),
            source(&w, "second", &group, &topic),
            stop.clone(),
        );
        async move { sharded.run(source, stop).await }
    });
    let all = until("all handled", Duration::from_secs(90), || {
        distinct(&log).len() == total
    })
    .await;
    let diagnosis = format!(
        "consumer {:?}; source consumer: {:?}",
        sharded.stats(),
        w.consumer("second")
            .map(|c| (c.assignment(), c.handled(), c.total_lag()))
    );
    stop.cancel();
    joined(second).await;

    assert!(
        all,
        "nothing lost: {} of {total} handled; {diagnosis}",
        distinct(&log).len()
    );
    assert!(
        gaps.lock().unwrap().is_empty(),
        "per-key order: {:?}",
        gaps.lock().unwrap()
    );
    let calls = log.lock().unwrap().len();
    println!(
        "{total} messages, {calls} calls ({} replayed after the restart)",
        calls - total
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_handle_each_key_on_exactly_one_of_them() {
    let _alone = ONE_AT_A_TIME.lock().await;
    logs();
    let (a, b) = (wrapper().await, wrapper().await);
    let topic = new_topic(&a, "sharded-pair", 4).await;
    let group = wharf_testkit::unique_name("sharded-pair-group");

    let (log, gaps) = (Log::default(), Arc::new(Mutex::new(Vec::new())));
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for (who, w) in [("machine-a", &a), ("machine-b", &b)] {
        let open = Arc::new(tokio::sync::Semaphore::new(
            tokio::sync::Semaphore::MAX_PERMITS,
        ));
        let sharded = consumer(who, &log, &gaps, &open);
        let source = source(w, who, &group, &topic);
        let stop = stop.clone();
        runs.push(tokio::spawn(async move { sharded.run(source, stop).await }));
    }
    // Wait until the group is stable: the 4 partitions split between the two members.
    let split = until("the group split", Duration::from_secs(60), || {
        let (pa, pb) = (
            a.consumer("machine-a")
                .map(|c| c.assignment().len())
                .unwrap_or(0),
            b.consumer("machine-b")
                .map(|c| c.assignment().len())
                .unwrap_or(0),
        );
        pa > 0 && pb > 0 && pa + pb == 4
    })
    .await;
    assert!(split, "both members got partitions");

    let (keys, per_key) = (30, 20u64);
    produce(&a, &topic, keys, per_key).await;
    let total = keys * per_key as usize;
    assert!(
        until("all handled", Duration::from_secs(60), || distinct(&log)
            .len()
            == total)
        .await,
        "all handled"
    );
    stop.cancel();
    for run in runs {
        joined(run).await;
    }

    let mut owners: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for (who, key, _) in log.lock().unwrap().iter() {
        owners.entry(key.clone()).or_default().insert(who);
    }
    assert_eq!(owners.len(), keys);
    for (key, who) in &owners {
        assert_eq!(who.len(), 1, "{key} was handled by {who:?}");
    }
    let machines: BTreeSet<_> = owners.values().flatten().collect();
    assert_eq!(machines.len(), 2, "both machines handled keys");
    assert!(
        gaps.lock().unwrap().is_empty(),
        "per-key order: {:?}",
        gaps.lock().unwrap()
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Sleeps per message, records the most keys handled at once, and checks each key's order.
struct Slow {
    running: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
    log: Log,
    gaps: Arc<Mutex<Vec<String>>>,
}

impl Handler for Slow {
    type State = Option<u64>;
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<Option<u64>, String> {
        Ok(None)
    }

    async fn handle_message(
        &self,
        last: &mut Option<u64>,
        msg: &Incoming<'_>,
    ) -> Result<Outcome, String> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.running.fetch_sub(1, SeqCst);
        let key = msg.key().as_str().unwrap().to_owned();
        let seq: u64 = std::str::from_utf8(msg.payload()).unwrap().parse().unwrap();
        if last.is_some_and(|l| seq != l + 1) || (last.is_none() && seq != 0) {
            self.gaps
                .lock()
                .unwrap()
                .push(format!("{key}: {seq} after {last:?}"));
        }
        *last = Some(seq);
        self.log.lock().unwrap().push(("slow", key, seq));
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, _: &mut Option<u64>, signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_one_kafka_partition_many_keys_are_handled_in_parallel_each_in_order() {
    let _alone = ONE_AT_A_TIME.lock().await;
    logs();
    let w = wrapper().await;
    let topic = new_topic(&w, "sharded-one", 1).await;
    let (keys, per_key) = (16, 10u64);
    let total = keys * per_key as usize;
    produce(&w, &topic, keys, per_key).await;

    let spec = ConsumerSpec::group(
        "one-partition",
        wharf_testkit::unique_name("sharded-one-group"),
        [topic.clone()],
        KafkaHandler::per_message(|_| async { KafkaOutcome::Ack }),
    )
    .in_flight_per_partition(64);
    let source = w.add_source(spec, 256).unwrap();
    let (log, gaps) = (Log::default(), Arc::new(Mutex::new(Vec::new())));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sharded = ShardedConsumer::builder(
        "one-partition",
        Slow {
            running: Arc::default(),
            peak: peak.clone(),
            log: log.clone(),
            gaps: gaps.clone(),
        },
    )
    .discard_dead_letters()
    .build()
    .unwrap();
    let stop = CancellationToken::new();
    let started = std::time::Instant::now();
    let run = tokio::spawn({
        let (sharded, stop) = (sharded.clone(), stop.clone());
        async move { sharded.run(source, stop).await }
    });
    let all = until("all handled", Duration::from_secs(60), || {
        distinct(&log).len() == total
    })
    .await;
    let elapsed = started.elapsed();
    stop.cancel();
    joined(run).await;
    assert!(all, "nothing lost: {} of {total}", distinct(&log).len());
    assert!(
        gaps.lock().unwrap().is_empty(),
        "per-key order: {:?}",
        gaps.lock().unwrap()
    );
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    // One delivery per partition at a time would allow one key at a time (160 x 20 ms).
    assert!(
        peak >= 8,
        "keys of one partition run in parallel: at most {peak} at once"
    );
    println!("{total} messages over 1 partition in {elapsed:?}, up to {peak} keys at once");
    w.shutdown().await.unwrap();
}
