//! A nemesis run: three producers, each through its own fault proxy, write to one partitioned
//! topic (3 partitions) of a pulsar-lite that keeps its data across a `kill -9`, while a seeded
//! nemesis cuts, refuses, holds (silently, or one direction), delays the links, and freezes
//! and kills (then restarts, same port and data) the broker. Each producer runs two streams:
//! one blocks for each receipt (`produce`, and now and then `produce_batch`), the other
//! acknowledges later (`produce_with`, half with closures, half with an `ack_channel`);
//! messages are keyed (one of 6 keys) or not; one producer batches. Every message and its
//! outcome go into a history; at the end a consumer reads the whole topic back, and the
//! checker (`nemesis_check`) judges both against the crate's promises.
//!
//! `cargo test` runs a short pass with a fixed seed and one with a random seed (printed; replay
//! with `WHARF_NEMESIS_SEED`). `scripts/nemesis producer-ack --seed S --minutes M` runs the
//! random-seed test for longer (`WHARF_NEMESIS_MINUTES`). The history is written to
//! `target/nemesis/producer-ack-<seed>.jsonl` (path printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nemesis_check;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::time::Instant;
use wharf_producer_ack::{Batching, Error, MessageId, Producer, PulsarMessage, ack_channel};
use wharf_testkit::nemesis::{self, FaultKind, Plan, Targets, Victim};
use wharf_testkit::{FaultProxy, History, PulsarLite, eventually};

use nemesis_check::{Expect, Stored};

const PARTITIONS: u32 = 3;
const PRODUCERS: usize = 3;
const KEYS: u32 = 6;
const SEND_TIMEOUT: Duration = Duration::from_secs(4);
const WINDOW: usize = 200;
/// The longest freeze or kill of the broker.
const BROKER_FAULT: Duration = Duration::from_secs(3);
/// How long after the healing each producer may take to get a message acknowledged again.
const RECOVERY: Duration = Duration::from_secs(60);
/// How long reading the whole topic back may take.
const READ_BACK: Duration = Duration::from_secs(300);

/// The slack docs/producer-ack.md allows an outcome past its send timeout on a loaded machine:
/// the send timeout again, at least 2 s.
fn slack() -> Duration {
    SEND_TIMEOUT.max(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_promises_under_a_fixed_seed_nemesis() {
    run_nemesis(1, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_promises_under_a_random_seed_nemesis() {
    run_nemesis(
        nemesis::seed(),
        nemesis::run_length(Duration::from_secs(15)),
    )
    .await;
}

async fn run_nemesis(seed: u64, run_for: Duration) {
    if std::env::var_os("RUST_LOG").is_some() {
        common::init_logs();
    }
    eprintln!("producer-ack nemesis: seed {seed}, {run_for:?}");
    let pulsar = Arc::new(PulsarLite::start_partitioned(PARTITIONS).unwrap());
    // In front of pulsar-lite's compatibility proxy, which keeps lookups on the service URL:
    // every connection of a producer goes through its own fault proxy.
    let inner = pulsar.proxy().expect("pulsar-lite has its proxy").addr();
    let proxies: Vec<Arc<FaultProxy>> = (0..PRODUCERS)
        .map(|_| Arc::new(FaultProxy::start(inner).unwrap()))
        .collect();
    let topic = common::topic("nemesis");
    let history = Arc::new(History::new("producer-ack", seed));

    let mut plan = Plan::new(run_for)
        .fault_duration(Duration::from_millis(200), Duration::from_secs(6))
        .gap(Duration::from_millis(100), Duration::from_secs(1))
        .max_fault_time(run_for * 6 / 10);
    for i in 0..PRODUCERS {
        plan = plan.proxy_faults(i, &FaultKind::PROXY);
    }
    // The broker is one target among the proxies' 24 choices: weighted so that about a
    // quarter of the faults freeze or kill it.
    for _ in 0..4 {
        plan = plan.process_faults(0, &[FaultKind::Pause, FaultKind::Kill], BROKER_FAULT);
    }
    let schedule = plan.schedule(seed);
    eprintln!("{schedule}");
    let mut targets = Targets::new();
    for proxy in &proxies {
        targets = targets.proxy(Arc::clone(proxy));
    }
    let targets = targets.process(Arc::clone(&pulsar) as Arc<dyn Victim>);
    let stop = Arc::new(AtomicBool::new(false));

    let producers: Vec<Producer> = proxies
        .iter()
        .enumerate()
        .map(|(i, proxy)| {
            let mut builder = Producer::builder(format!("pulsar://{}", proxy.addr()), &topic)
                .send_timeout(SEND_TIMEOUT)
                .window(WINDOW)
                .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
                .connect_timeout(Duration::from_secs(2));
            if i == 2 {
                builder = builder.batching(Batching {
                    max_messages: 8,
                    max_bytes: 64 * 1024,
                    max_delay: Duration::from_millis(5),
                });
            }
            builder.start().unwrap()
        })
        .collect();

    let nemesis = {
        let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
        std::thread::spawn(move || schedule.run(&targets, &history, &stop))
    };
    let deadline = Instant::now() + run_for;
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, producer) in producers.iter().enumerate() {
        let rec = Recorder {
            history: Arc::clone(&history),
            process: format!("p{i}"),
        };
        tasks.push(tokio::spawn(blocking_stream(
            producer.clone(),
            rec.clone(),
            StdRng::seed_from_u64(seed ^ (0x5eed + i as u64)),
            deadline,
        )));
        tasks.push(tokio::spawn(acking_stream(
            producer.clone(),
            rec,
            StdRng::seed_from_u64(seed ^ (0xac4 + i as u64)),
            deadline,
            Arc::clone(&outstanding),
        )));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every produce_with's outcome is due within its send timeout (plus the slack).
    let all_told = eventually(
        "every acknowledge-later message to get its outcome",
        SEND_TIMEOUT + slack() + Duration::from_secs(5),
        || async { outstanding.load(Ordering::Relaxed) == 0 },
    )
    .await;

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

    // Healed: every producer gets a message acknowledged again, within RECOVERY.
    let mut recovered = Vec::new();
    for (i, producer) in producers.iter().enumerate() {
        let rec = Recorder {
            history: Arc::clone(&history),
            process: format!("p{i}"),
        };
        recovered.push(recover(producer, &rec).await);
    }
    let reconnects: Vec<u64> = producers.iter().map(Producer::reconnects).collect();
    eprintln!("reconnects per producer: {reconnects:?}");
    for producer in &producers {
        producer.close().await;
    }

    let url = pulsar.url();
    let stored = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || read_topic(&url, &topic))
            .await
            .unwrap()
    };
    let path = history.write().unwrap();
    let topic_path = path.with_extension("topic.jsonl");
    let lines: Vec<String> = stored
        .iter()
        .map(|s| json!({"payload": s.payload, "key": s.key, "id": s.id}).to_string() + "\n")
        .collect();
    std::fs::write(&topic_path, lines.concat()).unwrap();
    eprintln!(
        "history: {}; the topic as read back: {}",
        path.display(),
        topic_path.display()
    );
    let expect = Expect {
        send_timeout: SEND_TIMEOUT,
        slack: slack(),
    };
    assert_eq!(
        history.dropped(),
        0,
        "the history was full ({} events kept): a run this long cannot be judged; shorten it",
        history.events().len()
    );
    let outcome = nemesis_check::check(&history.events(), &stored, &expect);
    eprintln!("{}", outcome.summary());
    assert!(
        report.errors.is_empty(),
        "the nemesis could not apply or heal faults: {:?}",
        report.errors
    );
    assert!(
        outcome.violations.is_empty() && outcome.violation_count == 0,
        "{} violation(s) under seed {seed} (replay with WHARF_NEMESIS_SEED={seed}); history {}:\n{}",
        outcome.violation_count,
        path.display(),
        outcome.violations.join("\n")
    );
    assert!(
        all_told.is_ok(),
        "acknowledge-later messages still without an outcome {:?} after the run; seed {seed}",
        SEND_TIMEOUT + slack() + Duration::from_secs(5)
    );
    for (i, ok) in recovered.iter().enumerate() {
        assert!(
            ok,
            "producer p{i} got no message acknowledged within {RECOVERY:?} after every fault was \
             healed; seed {seed}; history {}",
            path.display()
        );
    }
    assert!(
        outcome.outcomes.get("ok").copied().unwrap_or(0) > 0,
        "no message was acknowledged at all: the run judged nothing"
    );
}

/// Records messages and their outcomes in the history, as operations `send` of one producer.
#[derive(Clone)]
struct Recorder {
    history: Arc<History>,
    process: String,
}

impl Recorder {
    /// Records the call; returns the operation id.
    fn invoke(&self, stream: &str, seq: u64, key: Option<&str>, how: &str) -> (String, String) {
        let payload = format!("{}/{stream}/{seq}", self.process);
        let op = self.history.invoke(
            &self.process,
            "send",
            json!({"msg": payload, "stream": format!("{}/{stream}", self.process), "seq": seq,
                   "key": key, "how": how}),
        );
        (op, payload)
    }

    /// Records an outcome: `ok` with the id, `fail` for an error after which the broker
    /// certainly did not store the message, `info` for one after which it may have.
    fn outcome(&self, op: &str, result: &Result<MessageId, Error>) {
        match result {
            Ok(id) => self
                .history
                .ok(op, &self.process, "send", json!({"id": id.to_string()})),
            Err(e) => {
                let value = json!({"kind": error_kind(e), "error": e.to_string()});
                if e.may_have_been_stored() {
                    self.history.info(op, &self.process, "send", value);
                } else {
                    self.history.fail(op, &self.process, "send", value);
                }
            }
        }
    }
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Timeout { .. } => "timeout",
        Error::ConnectionLost { .. } => "connection-lost",
        Error::Rejected { .. } => "rejected",
        Error::Closed { .. } => "closed",
        Error::InvalidConfig(_) => "invalid-config",
        _ => "other",
    }
}

fn message(payload: &str, key: Option<&str>) -> PulsarMessage {
    let message = PulsarMessage::new(payload.to_owned());
    match key {
        Some(key) => message.with_key(key),
        None => message,
    }
}

fn pick_key(rng: &mut StdRng) -> Option<String> {
    rng.random_bool(0.5)
        .then(|| format!("k{}", rng.random_range(0..KEYS)))
}

/// Blocks for each receipt: `produce`, and one call in five a `produce_batch` of 2 to 5.
async fn blocking_stream(producer: Producer, rec: Recorder, mut rng: StdRng, deadline: Instant) {
    let mut seq = 0u64;
    while Instant::now() < deadline {
        if rng.random_ratio(1, 5) {
            let n = rng.random_range(2..=5);
            let mut ops = Vec::new();
            let mut batch = Vec::new();
            for _ in 0..n {
                seq += 1;
                let key = pick_key(&mut rng);
                let (op, payload) = rec.invoke("sync", seq, key.as_deref(), "batch");
                batch.push(message(&payload, key.as_deref()));
                ops.push(op);
            }
            let results = producer.produce_batch(batch).await;
            // One result per message: a missing one shows as a message without outcome.
            for (op, result) in ops.iter().zip(&results) {
                rec.outcome(op, result);
            }
        } else {
            seq += 1;
            let key = pick_key(&mut rng);
            let (op, payload) = rec.invoke("sync", seq, key.as_deref(), "produce");
            let result = producer.produce(message(&payload, key.as_deref())).await;
            rec.outcome(&op, &result);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
    }
}

/// Acknowledges later: `produce_with`, half with a closure, half with an `ack_channel` whose
/// context is the operation id; bursts of up to 30 messages, then a pause.
async fn acking_stream(
    producer: Producer,
    rec: Recorder,
    mut rng: StdRng,
    deadline: Instant,
    outstanding: Arc<AtomicUsize>,
) {
    let (acks, mut outcomes) = ack_channel::<String>();
    let reader = {
        let (rec, outstanding) = (rec.clone(), Arc::clone(&outstanding));
        tokio::spawn(async move {
            while let Some(acked) = outcomes.recv().await {
                rec.outcome(&acked.context, &acked.result);
                outstanding.fetch_sub(1, Ordering::Relaxed);
            }
        })
    };
    let mut seq = 0u64;
    while Instant::now() < deadline {
        for _ in 0..rng.random_range(1..=30) {
            seq += 1;
            let key = pick_key(&mut rng);
            let closure = rng.random_bool(0.5);
            let how = if closure { "closure" } else { "channel" };
            let (op, payload) = rec.invoke("async", seq, key.as_deref(), how);
            outstanding.fetch_add(1, Ordering::Relaxed);
            let m = message(&payload, key.as_deref());
            if closure {
                let (rec, outstanding) = (rec.clone(), Arc::clone(&outstanding));
                producer
                    .produce_with(m, move |result: Result<MessageId, Error>| {
                        rec.outcome(&op, &result);
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    })
                    .await;
            } else {
                producer.produce_with(m, acks.with(op)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    }
    drop(acks);
    // Ends once every channel ack was delivered (or its message dropped: a missing outcome).
    let _ = tokio::time::timeout(SEND_TIMEOUT + slack() + Duration::from_secs(5), reader).await;
}

/// After the healing: produces until a message is acknowledged, within [`RECOVERY`].
async fn recover(producer: &Producer, rec: &Recorder) -> bool {
    let until = Instant::now() + RECOVERY;
    let mut seq = 0;
    while Instant::now() < until {
        seq += 1;
        let (op, payload) = rec.invoke("final", seq, None, "produce");
        let result = producer.produce(message(&payload, None)).await;
        rec.outcome(&op, &result);
        if result.is_ok() {
            return true;
        }
    }
    false
}

/// Reads the whole topic from its earliest message with the official client
/// (`benches/read_topic.py`), until nothing new arrives for 5 s; fails past [`READ_BACK`].
fn read_topic(url: &str, topic: &str) -> Vec<Stored> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/read_topic.py");
    let mut child = Command::new(common::python())
        .arg(script)
        .arg(url)
        .arg(topic)
        .arg(u32::MAX.to_string())
        .arg("5")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run read_topic.py");
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let until = std::time::Instant::now() + READ_BACK;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reading the topic back took longer than {READ_BACK:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines = lines.join().unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "read_topic.py failed: {stderr}");
    lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = &v["message_id"];
            let non_negative = |v: &serde_json::Value| v.as_i64().filter(|v| *v >= 0);
            let partition = non_negative(&id["partition"]).map(|p| p as i32);
            let message_id = MessageId {
                ledger_id: id["ledger_id"].as_u64().unwrap(),
                entry_id: id["entry_id"].as_u64().unwrap(),
                partition,
                batch_index: non_negative(&id["batch_index"]).map(|b| b as i32),
            };
            let hex = v["payload"].as_str().unwrap_or_default();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            Stored {
                payload: String::from_utf8_lossy(&bytes).into_owned(),
                key: v["key"].as_str().map(str::to_owned),
                id: message_id.to_string(),
                partition: partition.unwrap_or(-1),
            }
        })
        .collect()
}
