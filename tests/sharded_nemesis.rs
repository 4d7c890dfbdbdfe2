//! A nemesis run of wharf-sharded-consumer over Kafka: producers publish keyed, numbered
//! messages to a durable Tansu broker, and a sharded consumer reads them through wharf-kafka-wrapper's
//! `KafkaSource`, every connection going through one fault proxy, while
//!
//! - a seeded nemesis cuts, refuses, holds (silently, or one direction) and delays the link
//!   (every proxy fault kind), pauses the broker (SIGSTOP) and kills it (SIGKILL), restarting
//!   it on the same port with its data (Tansu storing in S3 on moto), and
//! - the handler, for messages the same seed picked, misbehaves: it panics, fails (`Err`),
//!   answers `Retry`, waits past the handler timeout (a hang, cut at its deadline), blocks its
//!   thread past the deadline, or is slow; each for its first few attempts, some for more
//!   attempts than the retry budget allows (dead letters).
//!
//! Every produce, delivery (received from the source, then settled: ack, nack or release),
//! handler call and dead-letter publish goes into a history, which the checker
//! (`sharded_nemesis_check`) judges against the crate's promises: per-key order, one handler
//! call per key at a time (measured overlap), each delivery settled once and only after its
//! handler answered (or after its dead letter), nothing lost, dead letters only after the
//! retry budget.
//!
//! `cargo test -p wharf --features kafka-wrapper,sharded-consumer --test sharded_nemesis` runs
//! a short pass with a fixed seed and one with a random seed (printed; replay with
//! `WHARF_NEMESIS_SEED`). `scripts/nemesis sharded-consumer --seed S --minutes M` runs the
//! random-seed test for longer (`WHARF_NEMESIS_MINUTES`). The history is written to
//! `target/nemesis/sharded-consumer-<seed>.jsonl` (path printed).
//!
//! It joins two capability crates, so it is the umbrella's test (see `tests/sharded_kafka.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sharded_nemesis_check;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wharf_core::transport::{Acknowledger, Delivery, Message, Publisher, Receipt, Source};
use wharf_core::{Backoff, BoxError};
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler as KafkaHandler, KafkaConfig, KafkaWrapper, Outcome as KafkaOutcome,
    ProducerSpec, TopicSpec,
};
use wharf_sharded_consumer::{Handler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer};
use wharf_testkit::nemesis::{self, FaultKind, Plan, Targets, Victim};
use wharf_testkit::{History, Tansu, eventually};

use sharded_nemesis_check::Expect;

const PARTITIONS: i32 = 4;
const KEYS: usize = 24;
const PRODUCERS: usize = 4;
const MAX_ATTEMPTS: u32 = 4;
/// How long one handler call may take.
const HANDLER_TIMEOUT: Duration = Duration::from_millis(800);
/// The header carrying the id the recording source gives each delivery.
const DELIVERY_HEADER: &str = "nemesis-delivery";
/// How long the consumer may take to catch up once every fault is healed: a Tansu on S3
/// (moto) killed a dozen times serves fetches slowly (about 80 messages a minute at the end
/// of a 10-minute run).
const SETTLE: Duration = Duration::from_secs(300);

// ---- the messages and what the handler does with them --------------------------------------

/// What a message asks the handler to do, for its first `times` attempts (of each delivery).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Answer `Ack` at once.
    Ok,
    /// Sleep (awaiting) a while under the handler timeout, then `Ack`.
    Slow,
    /// Return `Err`.
    Fail,
    /// Answer `Retry`.
    Retry,
    /// Panic.
    Panic,
    /// Await far past the handler timeout (the consumer drops the call at its deadline).
    Hang,
    /// Block the thread past the handler timeout, then return `Err`.
    Block,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Payload {
    n: u64,
    key: String,
    seq: u64,
    mode: Mode,
    times: u32,
}

impl Payload {
    fn random(rng: &mut StdRng, n: u64, key: String, seq: u64) -> Self {
        let roll = rng.random_range(0..100);
        let (mode, times) = match roll {
            0..70 => (Mode::Ok, 0),
            70..78 => (Mode::Slow, 1),
            78..84 => (Mode::Fail, rng.random_range(1..=MAX_ATTEMPTS + 1)),
            84..89 => (Mode::Retry, rng.random_range(1..=MAX_ATTEMPTS + 1)),
            89..94 => (Mode::Panic, rng.random_range(1..=MAX_ATTEMPTS)),
            94..98 => (Mode::Hang, rng.random_range(1..=2)),
            98 => (Mode::Block, 1),
            _ => (Mode::Ok, 0),
        };
        Payload {
            n,
            key,
            seq,
            mode,
            times,
        }
    }
}

/// One handler call in the history: invoke when it starts; ok (`ack` / `retry`) or fail
/// (`Err`) when it answers; info when it ends otherwise (a panic, or dropped at its deadline).
struct CallRecord {
    history: Arc<History>,
    op: String,
    done: bool,
}

impl CallRecord {
    fn finish(mut self, ok: bool, value: serde_json::Value) {
        self.done = true;
        if ok {
            self.history.ok(&self.op, "handler", "handle", value);
        } else {
            self.history.fail(&self.op, "handler", "handle", value);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.done {
            let how = if std::thread::panicking() {
                "panicked"
            } else {
                "dropped"
            };
            self.history
                .info(&self.op, "handler", "handle", json!({ "aborted": how }));
        }
    }
}

/// Misbehaves as each message's [`Mode`] says, recording every call.
struct Nemesis {
    history: Arc<History>,
}

impl Handler for Nemesis {
    type State = ();
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<(), String> {
        Ok(())
    }

    async fn handle_message(&self, (): &mut (), msg: &Incoming<'_>) -> Result<Outcome, String> {
        let payload: Payload = serde_json::from_slice(msg.payload()).map_err(|e| e.to_string())?;
        let delivery = msg
            .message()
            .headers()
            .get(DELIVERY_HEADER)
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        let attempt = msg.attempt();
        let record = CallRecord {
            history: Arc::clone(&self.history),
            op: self.history.invoke(
                "handler",
                "handle",
                json!({"d": delivery, "n": payload.n, "key": payload.key, "seq": payload.seq,
                       "attempt": attempt, "mode": payload.mode}),
            ),
            done: false,
        };
        let misbehave = attempt <= payload.times;
        let mode = if misbehave { payload.mode } else { Mode::Ok };
        match mode {
            Mode::Ok => {}
            Mode::Slow => tokio::time::sleep(Duration::from_millis(50 + payload.n % 150)).await,
            Mode::Fail => {
                record.finish(false, json!({"error": "planned"}));
                return Err(format!("planned failure, attempt {attempt}"));
            }
            Mode::Retry => {
                record.finish(true, json!({"outcome": "retry"}));
                return Ok(Outcome::Retry(Duration::from_millis(20)));
            }
            Mode::Panic => panic!("planned panic, attempt {attempt}"),
            Mode::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
            Mode::Block => {
                std::thread::sleep(HANDLER_TIMEOUT + Duration::from_millis(200));
                record.finish(false, json!({"error": "planned, after blocking"}));
                return Err(format!("planned failure after blocking, attempt {attempt}"));
            }
        }
        record.finish(true, json!({"outcome": "ack"}));
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, (): &mut (), signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
}

// ---- the recording source and dead-letter target ---------------------------------------------

/// Wraps a source: gives each delivery an id (a header the handler reads) and records when it
/// was received and how it was settled.
struct RecordingSource<S> {
    inner: S,
    history: Arc<History>,
    next: u64,
}

impl<S: Source> Source for RecordingSource<S> {
    type Error = S::Error;

    async fn recv(&mut self) -> Option<Result<Delivery, S::Error>> {
        let delivery = match self.inner.recv().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        self.next += 1;
        let id = format!("d{}", self.next);
        let info = delivery.info().clone();
        let n = serde_json::from_slice::<Payload>(delivery.message().payload())
            .map(|p| p.n)
            .ok();
        let op = self.history.invoke(
            "consumer",
            "deliver",
            json!({"d": id, "n": n, "partition": info.partition, "offset": info.offset,
                   "delivery_attempt": info.attempt}),
        );
        let message = delivery
            .message()
            .clone()
            .with_header(DELIVERY_HEADER, id.clone());
        let ack = RecordingAck {
            inner: delivery,
            history: Arc::clone(&self.history),
            op,
        };
        Some(Ok(Delivery::new(message, info, ack)))
    }
}

struct RecordingAck {
    inner: Delivery,
    history: Arc<History>,
    op: String,
}

impl Acknowledger for RecordingAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BoxError>> {
        self.history
            .ok(&self.op, "consumer", "deliver", json!({"settled": "ack"}));
        let done = self.inner.ack();
        Box::pin(async move { done.await.map_err(BoxError::from) })
    }

    fn nack(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), BoxError>> {
        self.history
            .fail(&self.op, "consumer", "deliver", json!({"settled": "nack"}));
        let done = self.inner.nack(delay);
        Box::pin(async move { done.await.map_err(BoxError::from) })
    }

    fn release(self: Box<Self>) {
        self.history.info(
            &self.op,
            "consumer",
            "deliver",
            json!({"settled": "release"}),
        );
    }
}

/// The dead-letter target: records each publish; the first try for some messages fails (the
/// consumer tries again).
struct DeadLetters {
    history: Arc<History>,
    tries: Mutex<HashMap<String, u32>>,
}

impl Publisher for DeadLetters {
    type Error = std::io::Error;

    async fn publish(&self, message: Message) -> Result<Receipt, std::io::Error> {
        let header = |name: &str| {
            message
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let d = header(DELIVERY_HEADER);
        let attempts: u32 = header("wharf-dead-letter-attempts").parse().unwrap_or(0);
        let n = serde_json::from_slice::<Payload>(message.payload())
            .map(|p| p.n)
            .ok();
        let op = self.history.invoke(
            "dead-letter",
            "dead-letter",
            json!({"d": d, "n": n, "attempts": attempts,
                   "reason": header("wharf-dead-letter-reason")}),
        );
        let try_no = {
            let mut tries = self.tries.lock().unwrap();
            let t = tries.entry(d.clone()).or_default();
            *t += 1;
            *t
        };
        if try_no == 1 && n.is_some_and(|n| n % 3 == 0) {
            self.history.fail(
                &op,
                "dead-letter",
                "dead-letter",
                json!({"error": "planned"}),
            );
            return Err(std::io::Error::other("planned dead-letter failure"));
        }
        self.history.ok(
            &op,
            "dead-letter",
            "dead-letter",
            json!({"published": true}),
        );
        Ok(Receipt::Memory { sequence: 0 })
    }
}

// ---- the tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_consumer_keeps_its_promises_under_a_fixed_seed_nemesis() {
    run_nemesis(1, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_consumer_keeps_its_promises_under_a_random_seed_nemesis() {
    run_nemesis(
        nemesis::seed(),
        nemesis::run_length(Duration::from_secs(12)),
    )
    .await;
}

/// The two tests run one after the other: each has its own broker, but the machine is small.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig::new(brokers)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .health_interval(Duration::from_millis(500))
        .rebuild_backoff(Duration::from_millis(200), Duration::from_secs(2))
}

/// The handler's planned panics are part of the workload: not printed (others are).
fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("planned panic"));
            if !planned {
                default(info);
            }
        }));
    });
}

async fn run_nemesis(seed: u64, run_for: Duration) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    quiet_planned_panics();
    eprintln!("sharded-consumer nemesis: seed {seed}, {run_for:?}");
    let kafka = Arc::new(
        tokio::task::spawn_blocking(Tansu::start_durable_behind_proxy)
            .await
            .unwrap()
            .unwrap(),
    );
    let proxy = kafka.proxy_handle().unwrap();
    let brokers = proxy.addr().to_string();
    let w = KafkaWrapper::start(config(&brokers)).await.unwrap();
    let topic = wharf_testkit::unique_name("sharded-nemesis");
    w.admin()
        .ensure_topics(&[TopicSpec::new(&topic, PARTITIONS)])
        .await
        .unwrap();

    let history = Arc::new(History::new("sharded-consumer", seed));
    let plan = Plan::new(run_for)
        .fault_duration(Duration::from_millis(200), Duration::from_secs(4))
        .gap(Duration::from_millis(300), Duration::from_secs(2))
        .max_fault_time(run_for / 2)
        .latency(Duration::from_millis(20), Duration::from_millis(600))
        .proxy_faults(0, &FaultKind::PROXY)
        .process_faults(
            0,
            &[FaultKind::Pause, FaultKind::Kill],
            Duration::from_secs(3),
        );
    let schedule = plan.schedule(seed);
    eprintln!("{schedule}");
    let targets = Targets::new()
        .proxy(Arc::clone(&proxy))
        .process(Arc::clone(&kafka) as Arc<dyn Victim>);

    // The consumer.
    let consumer = ShardedConsumer::builder(
        "nemesis",
        Nemesis {
            history: Arc::clone(&history),
        },
    )
    .retry(RetryPolicy::new(
        MAX_ATTEMPTS,
        Backoff::exponential(Duration::from_millis(20), Duration::from_millis(200)),
    ))
    .handler_timeout(Some(HANDLER_TIMEOUT))
    .dead_letter(DeadLetters {
        history: Arc::clone(&history),
        tries: Mutex::default(),
    })
    .build()
    .unwrap();
    let spec = ConsumerSpec::group(
        "sharded",
        wharf_testkit::unique_name("sharded-nemesis-group"),
        [topic.clone()],
        KafkaHandler::per_message(|_| async { KafkaOutcome::Ack }),
    )
    // Many messages of one partition in flight at once: the sharded consumer, not the
    // source, keeps each key's order (the default, 1, would serialise whole partitions).
    .in_flight_per_partition(64);
    let source = RecordingSource {
        inner: w.add_source(spec, 256).unwrap(),
        history: Arc::clone(&history),
        next: 0,
    };
    let stop_consumer = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop_consumer.clone());
        async move { consumer.run(source, stop).await }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let nemesis = {
        let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
        std::thread::spawn(move || schedule.run(&targets, &history, &stop))
    };

    // The producers: each owns the keys k with k % PRODUCERS == its index, and publishes each
    // key's messages one after another (each awaited), so a key's acknowledged messages are
    // on the topic in their order.
    let publisher = Arc::new(
        // The broker is killed: Tansu 0.6 needs these to keep what it acknowledges.
        w.add_producer(
            Tansu::CRASH_SAFE_PRODUCER
                .iter()
                .fold(ProducerSpec::new("producer"), |spec, (k, v)| {
                    spec.set(*k, *v)
                }),
        )
        .unwrap()
        .publisher(&topic),
    );
    let numbers = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run_for;
    let mut producers = Vec::new();
    for i in 0..PRODUCERS {
        let (publisher, history, numbers) = (
            Arc::clone(&publisher),
            Arc::clone(&history),
            Arc::clone(&numbers),
        );
        producers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0x5eed + i as u64));
            let mine: Vec<usize> = (0..KEYS).filter(|k| k % PRODUCERS == i).collect();
            let mut seqs = vec![0u64; mine.len()];
            let process = format!("producer-{i}");
            while Instant::now() < deadline {
                let slot = rng.random_range(0..mine.len());
                let key = format!("key-{}", mine[slot]);
                let n = numbers.fetch_add(1, Ordering::Relaxed);
                let payload = Payload::random(&mut rng, n, key.clone(), seqs[slot]);
                seqs[slot] += 1;
                let op =
                    history.invoke(&process, "produce", serde_json::to_value(&payload).unwrap());
                let message = Message::new(serde_json::to_vec(&payload).unwrap()).with_key(key);
                match publisher.publish(message).await {
                    Ok(receipt) => history.ok(
                        &op,
                        &process,
                        "produce",
                        json!({"receipt": receipt.to_string()}),
                    ),
                    Err(e) => {
                        history.info(&op, &process, "produce", json!({"error": e.to_string()}))
                    }
                }
                // Paced: Tansu on S3 (moto) serves fetches more slowly as its store grows; at about
                // 8 messages a second a 10-minute run outgrew what it could serve back within
                // the settling bound.
                tokio::time::sleep(Duration::from_millis(rng.random_range(150..450))).await;
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let report = tokio::task::spawn_blocking(move || nemesis.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "nemesis: {} faults applied {:?}, {:?} in effect; errors: {:?}",
        report.applied, report.by_kind, report.fault_time, report.errors
    );

    let healed_at = Instant::now();
    // Healed: every acknowledged message gets handled or dead-lettered.
    let settled = eventually(
        "every acknowledged message handled or dead-lettered",
        SETTLE,
        || {
            let events = history.events();
            async move { sharded_nemesis_check::unsettled(&events).is_empty() }
        },
    )
    .await;
    eprintln!(
        "caught up {:?} after the nemesis ended",
        healed_at.elapsed()
    );
    stop_consumer.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(60), run).await;
    let path = history.write().unwrap();
    eprintln!("history: {}", path.display());
    let expect = Expect {
        max_attempts: MAX_ATTEMPTS,
        handler_timeout: HANDLER_TIMEOUT,
    };
    let events = history.events();
    let outcome = sharded_nemesis_check::check(&events, &expect);
    eprintln!("{}", outcome.summary());
    assert!(
        settled.is_ok(),
        "not every acknowledged message was handled or dead-lettered within {SETTLE:?} after the \
         nemesis healed everything; seed {seed}; history {}; missing n: {:?}; consumer {:?}",
        path.display(),
        sharded_nemesis_check::unsettled(&events),
        consumer.stats()
    );
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the consumer's run ends cleanly once stopped: {ended:?}"
    );
    w.shutdown().await.unwrap();
    drop(kafka);
    assert!(
        report.errors.is_empty(),
        "the nemesis could not apply or heal faults: {:?}",
        report.errors
    );
    assert!(
        outcome.violations.is_empty(),
        "{} violation(s) under seed {seed} (replay with WHARF_NEMESIS_SEED={seed}); history {}:\n{}",
        outcome.violations.len(),
        path.display(),
        outcome.violations.join("\n")
    );
}
