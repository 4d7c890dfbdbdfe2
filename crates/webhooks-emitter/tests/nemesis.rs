//! A nemesis run: three emitters (fire-and-forget `emit` in bursts, and confirmed `emit_sync`
//! calls several at once, each with its own timeout) send to one SQS queue through two fault
//! proxies, while a seeded nemesis cuts, refuses, holds (silently, or one direction) and
//! delays the links, freezes the SQS server (SIGSTOP) and kills and restarts it. A reader
//! reads every message back as it arrives. Every operation, every failure the emitters
//! report through their failure hook, every message read and the emitters' final counters
//! and metrics go into a history, which the checker (`nemesis_check`) judges against the
//! crate's promises.
//!
//! **Kills.** moto (and LocalStack, `WHARF_SQS_SERVER=localstack`) keep nothing across a
//! kill: messages SQS acknowledged before it would be lost by the server, and the checker
//! would blame the emitter. So a kill here is a phase boundary, not a blind crash: the
//! nemesis first takes both proxies down (the emitters see an outage: connections closed,
//! new ones refused), waits for the server to finish what it was given, reads the queue
//! empty (directly, bypassing the proxies), and only then kills the server with SIGKILL;
//! the restart creates the queue again and brings the proxies back. Every message the server
//! acknowledged is therefore read before it dies, and what the emitters do across the kill
//! (requests cut mid-way, a server that answers nothing, then a fresh one) is still tested.
//! Freezes (SIGSTOP) are blind: they hit the server whenever the schedule says.
//!
//! `cargo test` runs a short pass with a fixed seed and one with a random seed (printed;
//! replay with `WHARF_NEMESIS_SEED`). `scripts/nemesis webhooks-emitter --seed S --minutes M`
//! runs the random-seed test for longer (`WHARF_NEMESIS_MINUTES`). The history is written to
//! `target/nemesis/webhooks-emitter-<seed>.jsonl` (path printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nemesis_check;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use wharf_testkit::nemesis::{self, FaultKind, Plan, Targets, Victim};
use wharf_testkit::{FaultProxy, History, Moto};
use wharf_webhooks_emitter::{
    Emitter, Error, Event, FailedEvent, FullPolicy, RetryPolicy, metrics as m,
};

use common::{REGION, raw_client};
use nemesis_check::Expect;

const EMITTERS: usize = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Fire-and-forget events are failed (hook, counter) after this long unsent.
const GIVE_UP_AFTER: Duration = Duration::from_secs(6);
const BUFFER: usize = 400;
/// `emit_sync` timeouts are drawn from this range, per call.
const SYNC_TIMEOUT_MS: (u64, u64) = (300, 3000);
/// What the checker allows past a timeout (an `emit_sync` that answers late) or for an `emit`
/// (which must not wait on the network): scheduling on a loaded 2-core machine, where this
/// test's own emitters, reader, proxies and SQS server share the cores.
const SLACK: Duration = Duration::from_millis(250);
/// The longest freeze of the SQS server.
const MAX_PAUSE: Duration = Duration::from_secs(3);
/// The visibility timeout of what the reader received: a message whose receive answer was
/// lost (the call timed out on a loaded machine, the server was frozen) or whose delete
/// failed comes back after it and is read again (the checker counts a message once, by its
/// SQS message id).
const VISIBILITY_S: i32 = 5;
/// How long reading the queue empty may take (a loaded machine makes moto slow).
const READ_BOUND: Duration = Duration::from_secs(300);

/// One metrics recorder for this test binary (both tests; their queues differ).
fn snapshotter() -> &'static Snapshotter {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_their_promises_under_a_fixed_seed_nemesis() {
    run_nemesis(1, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_their_promises_under_a_random_seed_nemesis() {
    run_nemesis(
        nemesis::seed(),
        nemesis::run_length(Duration::from_secs(15)),
    )
    .await;
}

// ---- the SQS server as the nemesis's victim -------------------------------------------------

/// The SQS server, which the nemesis may freeze, or kill at a phase boundary (module docs):
/// `kill` takes the proxies down, reads the queue empty, then kills; `restart` starts the
/// server again, creates the queue and brings the proxies back.
struct Sqs {
    server: Moto,
    proxies: Vec<Arc<FaultProxy>>,
    reader: Reader,
    queue_name: String,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Sqs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqs")
            .field("pid", &self.server.pid())
            .finish_non_exhaustive()
    }
}

impl Victim for Sqs {
    fn name(&self) -> String {
        format!("sqs:{}", self.server.port())
    }
    fn pid(&self) -> Option<u32> {
        self.server.pid()
    }
    fn kill(&self) -> wharf_testkit::Result<()> {
        for proxy in &self.proxies {
            proxy.down()?;
        }
        // What reached the server before the proxies went down is handled within a request's
        // time; then nothing more arrives.
        std::thread::sleep(Duration::from_millis(300));
        if let Err(e) = self
            .rt
            .block_on(self.reader.read_until_empty("drain-before-kill"))
        {
            let op = self.reader.history.invoke("nemesis", "drain", json!({}));
            self.reader
                .history
                .fail(&op, "nemesis", "drain", json!({"error": e}));
        }
        self.server.kill()
    }
    fn restart(&self) -> wharf_testkit::Result<()> {
        self.server.restart()?;
        self.rt.block_on(async {
            create_queue(&self.reader.client, &self.queue_name).await;
        });
        for proxy in &self.proxies {
            proxy.restore()?;
        }
        Ok(())
    }
}

async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_S.to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

// ---- the reader ---------------------------------------------------------------------------

/// Reads the queue (directly, not through a proxy), recording every message in the history as
/// an operation `receive` (the messages' ids, event ids and workload keys), and deletes what
/// it read.
#[derive(Clone)]
struct Reader {
    client: aws_sdk_sqs::Client,
    url: String,
    history: Arc<History>,
    /// Held while reading, so that the drain before a kill and the background reader do not
    /// interleave their receive and delete calls.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Reader {
    /// One receive: how many messages came, or `None` when the call failed.
    async fn once(&self, process: &str) -> Option<usize> {
        let _guard = self.lock.lock().await;
        let resp = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_S)
            .wait_time_seconds(0)
            .send()
            .await
            .ok()?;
        let msgs = resp.messages.unwrap_or_default();
        if msgs.is_empty() {
            return Some(0);
        }
        let read: Vec<Value> = msgs
            .iter()
            .map(|msg| {
                let body: Value = msg
                    .body()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or(Value::Null);
                json!({
                    "message_id": msg.message_id(),
                    "id": body["id"],
                    "k": body["data"]["k"],
                })
            })
            .collect();
        let op = self
            .history
            .invoke(process, "receive", json!({"n": msgs.len()}));
        self.history
            .ok(&op, process, "receive", json!({"messages": read}));
        let entries: Vec<DeleteMessageBatchRequestEntry> = msgs
            .iter()
            .enumerate()
            .filter_map(|(i, msg)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(msg.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        // A failed delete leaves the message in flight for VISIBILITY_S: it is read again.
        let deleted = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        if let Err(e) = deleted {
            let op = self.history.invoke(process, "delete", json!({}));
            self.history
                .info(&op, process, "delete", json!({"error": format!("{e:?}")}));
        }
        Some(msgs.len())
    }

    /// Messages in the queue, visible or in flight (received, not deleted), or `None` when
    /// the call failed.
    async fn visible(&self) -> Option<usize> {
        let resp = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .ok()?;
        let attrs = resp.attributes()?;
        let mut n = 0;
        for name in [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ] {
            n += attrs.get(&name)?.parse::<usize>().ok()?;
        }
        Some(n)
    }

    /// Reads until a receive comes back empty and the queue holds nothing (visible or in
    /// flight), twice in a row; bounded (`READ_BOUND`). Returns why not, if it could not.
    async fn read_until_empty(&self, process: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READ_BOUND;
        let mut empty_in_a_row = 0;
        let mut last = (None, None);
        while empty_in_a_row < 2 && tokio::time::Instant::now() < deadline {
            let got = self.once(process).await;
            let visible = if got == Some(0) {
                self.visible().await
            } else {
                None
            };
            last = (got, visible);
            match (got, visible) {
                (Some(0), Some(0)) => {
                    empty_in_a_row += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (Some(n), _) if n > 0 => empty_in_a_row = 0,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        if empty_in_a_row >= 2 {
            return Ok(());
        }
        Err(format!(
            "the queue could not be read empty within {READ_BOUND:?} ({process}): the last receive got \
             {:?} message(s) and the queue held {:?}",
            last.0, last.1
        ))
    }

    /// Reads in the background until `stop`, then once more until the queue is empty.
    async fn run(self, stop: Arc<AtomicBool>) -> Result<(), String> {
        while !stop.load(Ordering::Relaxed) {
            match self.once("reader").await {
                Some(10) => {}
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.read_until_empty("reader").await
    }
}

// ---- the run ------------------------------------------------------------------------------

/// One run at a time in this binary: the metrics recorder is shared, and its snapshot leaves
/// out counters not updated since the previous snapshot, so two runs at once could hide one
/// run's metrics from its own check (and two at once would also double the load on two cores).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run_nemesis(seed: u64, run_for: Duration) {
    let _one = ONE_AT_A_TIME.lock().await;
    eprintln!("webhooks-emitter nemesis: seed {seed}, {run_for:?}");
    let snap = snapshotter();
    let history = Arc::new(History::new("webhooks-emitter", seed));
    let server = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .unwrap();
    let direct = format!("http://{}", server.direct_addr());
    let client = raw_client(&direct).await;
    let queue_name = wharf_testkit::unique_name("nemesis");
    let url = create_queue(&client, &queue_name).await;
    let proxies: Vec<Arc<FaultProxy>> = (0..2)
        .map(|_| Arc::new(FaultProxy::start(server.direct_addr()).unwrap()))
        .collect();
    let reader = Reader {
        client,
        url: url.clone(),
        history: Arc::clone(&history),
        lock: Arc::new(tokio::sync::Mutex::new(())),
    };
    let sqs = Arc::new(Sqs {
        server,
        proxies: proxies.clone(),
        reader: reader.clone(),
        queue_name,
        rt: tokio::runtime::Handle::current(),
    });

    // Emitters 0 and 1 through proxy 0, emitter 2 through proxy 1.
    let mut emitters = Vec::new();
    for e in 0..EMITTERS {
        let proxy = &proxies[usize::from(e == 2)];
        let name = format!("emitter-{e}");
        let hook_history = Arc::clone(&history);
        let hook_name = name.clone();
        let emitter = common::builder(&format!("http://{}", proxy.addr()), &url)
            .region(REGION)
            .request_timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .linger(Duration::from_millis(20))
            .buffer_capacity(BUFFER)
            .full_policy(FullPolicy::Error)
            // Backoff of 200 ms to 2 s: a retry storm of three emitters would starve the SQS
            // server (one Python process) and the reader on this shared machine.
            .retry(RetryPolicy::new(
                Duration::from_millis(200),
                Duration::from_secs(2),
                GIVE_UP_AFTER,
            ))
            .drain_timeout(Duration::from_secs(5))
            .on_failure(move |failed: &FailedEvent| {
                record_hook(&hook_history, &hook_name, failed);
            })
            .build()
            .unwrap();
        emitter.start().await.unwrap();
        emitters.push((name, Arc::new(emitter)));
    }

    let plan = Plan::new(run_for)
        .fault_duration(Duration::from_millis(200), Duration::from_secs(5))
        .gap(Duration::from_millis(100), Duration::from_millis(800))
        .max_fault_time(run_for * 6 / 10)
        .proxy_faults(0, &FaultKind::PROXY)
        .proxy_faults(1, &FaultKind::PROXY)
        .process_faults(0, &[FaultKind::Pause], MAX_PAUSE)
        .process_faults(0, &[FaultKind::Kill], Duration::from_secs(3));
    let schedule = plan.schedule(seed);
    eprintln!("{schedule}");
    let targets = Targets::new()
        .proxy(Arc::clone(&proxies[0]))
        .proxy(Arc::clone(&proxies[1]))
        .process(Arc::clone(&sqs) as Arc<dyn Victim>);
    let stop = Arc::new(AtomicBool::new(false));
    let nemesis = {
        let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
        std::thread::spawn(move || schedule.run(&targets, &history, &stop))
    };
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader_task = tokio::spawn(reader.clone().run(Arc::clone(&reader_stop)));

    // The workload: per emitter, a task of `emit` bursts and a task of concurrent
    // `emit_sync` calls, until `run_for` has passed.
    let deadline = tokio::time::Instant::now() + run_for;
    let mut tasks = Vec::new();
    for (i, (name, emitter)) in emitters.iter().enumerate() {
        let rng = StdRng::seed_from_u64(seed ^ (0x5eed + i as u64));
        tasks.push(tokio::spawn(emit_bursts(
            name.clone(),
            Arc::clone(emitter),
            Arc::clone(&history),
            rng,
            deadline,
        )));
        let rng = StdRng::seed_from_u64(seed ^ (0xc0ffee + i as u64));
        tasks.push(tokio::spawn(sync_calls(
            name.clone(),
            Arc::clone(emitter),
            Arc::clone(&history),
            rng,
            deadline,
        )));
    }
    for task in tasks {
        task.await.unwrap();
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

    // Healed: each emitter drains (bounded by its drain timeout); then its counters are final.
    for (name, emitter) in &emitters {
        let op = history.invoke(name, "shutdown", json!({}));
        let shutdown = emitter.shutdown().await;
        let stats = emitter.stats();
        history.ok(
            &op,
            name,
            "shutdown",
            json!({
                "unsent": shutdown.unsent,
                "emitted": stats.emitted,
                "sent": stats.sent,
                "failed": stats.failed,
                "retried": stats.retried,
                "requests": stats.requests,
                "buffered": stats.buffered,
            }),
        );
    }
    let queue = emitters[0].1.queue_name().to_owned();
    let op = history.invoke("checker", "metrics", json!({"queue": queue}));
    history.ok(&op, "checker", "metrics", json!(read_metrics(snap, &queue)));
    reader_stop.store(true, Ordering::Relaxed);
    let read_back = reader_task.await.unwrap();

    let path = history.write().unwrap();
    eprintln!("history: {}", path.display());
    let expect = Expect {
        slack: SLACK,
        emitters: emitters.iter().map(|(n, _)| n.clone()).collect(),
    };
    let outcome = nemesis_check::check(&history.events(), &expect);
    eprintln!("{}", outcome.summary());
    for violation in outcome.violations.iter().take(30) {
        eprintln!("violation: {violation}");
    }
    if !outcome.violations.is_empty() || read_back.is_err() {
        eprintln!(
            "the SQS server is {}running; the end of its log:\n{}",
            if sqs.server.is_running() { "" } else { "not " },
            sqs.server.log_tail()
        );
    }
    assert!(read_back.is_ok(), "{read_back:?}");
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

/// The emitters' metrics for `queue`: each counter summed over its other labels.
fn read_metrics(snap: &Snapshotter, queue: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, _, _, value) in snap.snapshot().into_vec() {
        let ours = key
            .key()
            .labels()
            .any(|l| l.key() == "queue" && l.value() == queue);
        if let (true, DebugValue::Counter(n)) = (ours, value) {
            *out.entry(key.key().name().to_owned()).or_default() += n;
        }
    }
    for name in [m::EMITTED, m::SENT, m::FAILED, m::RETRIED, m::REQUESTS] {
        out.entry(name.to_owned()).or_insert(0);
    }
    out
}

fn event(k: &str) -> Event {
    Event::from_json("nemesis", "nemesis.step", json!({"k": k}))
}

/// Whether a request carrying the event may have reached SQS, as the error says (`false` is
/// the emitter's promise that it did not). Errors before acceptance never send anything.
fn maybe_sent(error: &Error) -> bool {
    match error {
        Error::Timeout { maybe_sent, .. }
        | Error::RetriesExhausted { maybe_sent, .. }
        | Error::NotSent { maybe_sent, .. } => *maybe_sent,
        _ => false,
    }
}

/// Whether the emitter had accepted the event when this error came (a failure it counts).
fn accepted(error: &Error) -> bool {
    matches!(
        error,
        Error::Timeout { .. }
            | Error::RetriesExhausted { .. }
            | Error::NotSent { .. }
            | Error::Rejected { .. }
    )
}

fn error_value(error: &Error) -> Value {
    json!({
        "error": error.to_string(),
        "accepted": accepted(error),
        "maybe_sent": maybe_sent(error),
        "kind": format!("{error:?}").split([' ', '{', '(']).next().unwrap_or("").to_owned(),
    })
}

fn record_hook(history: &History, emitter: &str, failed: &FailedEvent) {
    let body: Value = serde_json::from_str(&failed.body).unwrap_or(Value::Null);
    let op = history.invoke(
        emitter,
        "hook",
        json!({"k": body["data"]["k"], "id": failed.event_id.to_string()}),
    );
    history.ok(&op, emitter, "hook", error_value(&failed.error));
}

/// `emit` in bursts of 1 or 2 events, 200 to 600 ms apart (gentle: moto reads its queue in
/// time proportional to its length, so a reader that falls behind falls further behind).
async fn emit_bursts(
    name: String,
    emitter: Arc<Emitter>,
    history: Arc<History>,
    mut rng: StdRng,
    deadline: tokio::time::Instant,
) {
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline {
        for _ in 0..rng.random_range(1..=2) {
            n += 1;
            let k = format!("{name}.e{n}");
            let op = history.invoke(&name, "emit", json!({"k": k}));
            match emitter.emit(event(&k)).await {
                Ok(id) => history.ok(&op, &name, "emit", json!({"id": id.to_string()})),
                Err(e) => history.fail(&op, &name, "emit", error_value(&e)),
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..600))).await;
    }
}

/// 1 or 2 `emit_sync` calls at once, each with its own timeout, 100 to 400 ms between rounds.
async fn sync_calls(
    name: String,
    emitter: Arc<Emitter>,
    history: Arc<History>,
    mut rng: StdRng,
    deadline: tokio::time::Instant,
) {
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline {
        let mut calls = Vec::new();
        for _ in 0..rng.random_range(1..=2) {
            n += 1;
            let k = format!("{name}.s{n}");
            let timeout =
                Duration::from_millis(rng.random_range(SYNC_TIMEOUT_MS.0..=SYNC_TIMEOUT_MS.1));
            let (emitter, history, name) =
                (Arc::clone(&emitter), Arc::clone(&history), name.clone());
            calls.push(async move {
                let op = history.invoke(
                    &name,
                    "emit_sync",
                    json!({"k": k, "timeout_ms": timeout.as_millis() as u64}),
                );
                match emitter.emit_sync_timeout(event(&k), timeout).await {
                    Ok(sent) => history.ok(
                        &op,
                        &name,
                        "emit_sync",
                        json!({"id": sent.event_id.to_string(), "message_id": sent.message_id}),
                    ),
                    Err(e) if maybe_sent(&e) => {
                        history.info(&op, &name, "emit_sync", error_value(&e));
                    }
                    Err(e) => history.fail(&op, &name, "emit_sync", error_value(&e)),
                }
            });
        }
        futures::future::join_all(calls).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    }
}
