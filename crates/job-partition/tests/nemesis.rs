//! A nemesis run: two worker **processes** and a producer work one queue (execution keys,
//! queue keys, a global limit, retries, failing jobs, cancels), each through its own fault
//! proxy in front of a Redis that keeps its data across a `kill -9`, while a seeded nemesis
//! cuts, refuses, holds (silently, or one direction), delays the links, pauses and kills Redis,
//! and pauses and kills the workers. Every operation goes into a history; the checker
//! (`nemesis_check`) judges it and Redis's final state against the crate's promises.
//!
//! `cargo test` runs a short pass with a fixed seed and one with a random seed (printed; replay
//! with `WHARF_NEMESIS_SEED`). `scripts/nemesis job-partition --seed S --minutes M` runs the
//! random-seed test for longer (`WHARF_NEMESIS_MINUTES`). The history is written to
//! `target/nemesis/job-partition-<seed>.jsonl` (path printed).
//!
//! Worker processes are this test binary run again with `WHARF_NEMESIS_CHILD` set: it then
//! runs only `nemesis_worker`, which works the queue until killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nemesis_check;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wharf_job_partition::{
    CancelOutcome, Config, Enqueued, Job, JobContext, JobError, Jobs, Registry, Retention, Worker,
};
use wharf_testkit::nemesis::{self, FaultKind, Plan, RespawningChild, Targets, Victim};
use wharf_testkit::{FaultProxy, History, RedisServer, eventually};

use nemesis_check::{Expect, Outcome};

const QUEUE: &str = "q";
const LEASE: Duration = Duration::from_secs(3);
const BEAT: Duration = Duration::from_millis(250);
/// The default margin (a fifth of the lease).
const MARGIN: Duration = Duration::from_millis(600);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many jobs of the queue run at once, across both processes.
const LIMIT: u32 = 6;
const CONCURRENCY: usize = 8;
const MAX_ATTEMPTS: u32 = 4;

// ---- the job and its worker process -------------------------------------------------------

/// The history of this (worker) process, recording every run.
static CHILD_HISTORY: OnceLock<(History, String)> = OnceLock::new();

/// Sleeps, fails its first `fail_times` attempts, and records each run (start, end or abort)
/// in its process's history.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Step {
    n: u64,
    sleep_ms: u64,
    fail_times: u32,
    qkey: Option<String>,
    xkey: Option<String>,
}

/// One run in the history: invoke when `perform` starts; ok / fail when it returns; info
/// `aborted` when its future is dropped mid-way (cancel, lost lease, shutdown).
struct RunRecord {
    op: String,
    done: bool,
}

impl RunRecord {
    fn start(ctx: &JobContext, step: &Step) -> Option<Self> {
        let (history, process) = CHILD_HISTORY.get()?;
        let op = history.invoke(
            process,
            "run",
            json!({"n": step.n, "id": ctx.id(), "attempt": ctx.attempt(), "xkey": step.xkey}),
        );
        Some(RunRecord { op, done: false })
    }

    fn finish(mut self, ok: bool) {
        self.done = true;
        if let Some((history, process)) = CHILD_HISTORY.get() {
            let value = json!({});
            if ok {
                history.ok(&self.op, process, "run", value);
            } else {
                history.fail(&self.op, process, "run", value);
            }
        }
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some((history, process)) = CHILD_HISTORY.get() {
            history.info(&self.op, process, "run", json!({"aborted": true}));
        }
    }
}

impl Job for Step {
    const NAME: &'static str = "nemesis_step";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let record = RunRecord::start(&ctx, &self);
        tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        let ok = ctx.attempt() > self.fail_times;
        if let Some(record) = record {
            record.finish(ok);
        }
        if ok {
            Ok(())
        } else {
            Err(format!("planned failure {}", ctx.attempt()).into())
        }
    }

    fn queue_key(&self) -> Option<String> {
        self.qkey.clone()
    }
    fn execution_key(&self) -> Option<String> {
        self.xkey.clone()
    }
    fn max_attempts(&self) -> u32 {
        MAX_ATTEMPTS
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::from_millis(100)
    }
}

/// Not a test of its own: the body of the worker processes (see the module docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the body of the worker processes the nemesis tests spawn"]
async fn nemesis_worker() {
    let Ok(p) = std::env::var("WHARF_NEMESIS_CHILD") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let process = format!("{}.{}", var("NEMESIS_NAME"), var("NEMESIS_INCARNATION"));
    let history = History::new("child", 0)
        .op_prefix(&format!("{process}."))
        .stream_to(Path::new(&var("NEMESIS_HISTORY")))
        .unwrap();
    let _ = CHILD_HISTORY.set((history, process));
    // Redis may be down or held right now: keep trying, as a supervisor would.
    let config = Config::new(var("NEMESIS_REDIS_URL")).response_timeout(RESPONSE_TIMEOUT);
    // Bounded: a Redis that never comes back fails the child (and the run) instead of
    // leaving it retrying forever.
    let connect_by = std::time::Instant::now() + Duration::from_secs(120);
    let jobs = loop {
        match Jobs::connect(config.clone()).await {
            Ok(jobs) => break jobs,
            Err(e) if std::time::Instant::now() > connect_by => {
                panic!("the nemesis child could not reach Redis for 120 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let worker = Worker::builder(jobs, Registry::new().register::<Step>())
        .queue(&p, QUEUE, CONCURRENCY)
        .lease(LEASE)
        .lease_margin(MARGIN)
        .heartbeat_every(BEAT)
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    worker.shutdown().await;
}

fn spawn_worker(name: &str, p: &str, url: String, history: PathBuf) -> RespawningChild {
    let exe = std::env::current_exe().unwrap();
    let (name_owned, p) = (name.to_owned(), p.to_owned());
    RespawningChild::start(name, move |incarnation| {
        let mut c = Command::new(&exe);
        c.args([
            "nemesis_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WHARF_NEMESIS_CHILD", &p)
        .env("NEMESIS_NAME", &name_owned)
        .env("NEMESIS_INCARNATION", incarnation.to_string())
        .env("NEMESIS_REDIS_URL", &url)
        .env("NEMESIS_HISTORY", &history)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    })
    .unwrap()
}

// ---- the tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_keep_their_promises_under_a_fixed_seed_nemesis() {
    if std::env::var("WHARF_NEMESIS_CHILD").is_ok() {
        return;
    }
    run_nemesis(1, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_keep_their_promises_under_a_random_seed_nemesis() {
    if std::env::var("WHARF_NEMESIS_CHILD").is_ok() {
        return;
    }
    run_nemesis(
        nemesis::seed(),
        nemesis::run_length(Duration::from_secs(15)),
    )
    .await;
}

async fn run_nemesis(seed: u64, run_for: Duration) {
    eprintln!("job-partition nemesis: seed {seed}, {run_for:?}");
    let redis = Arc::new(
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]).unwrap(),
    );
    let proxy = || Arc::new(FaultProxy::start(redis.direct_addr()).unwrap());
    let (proxy_a, proxy_b, proxy_p) = (proxy(), proxy(), proxy());
    let direct = Jobs::connect(
        Config::new(format!("redis://{}/", redis.direct_addr())).response_timeout(RESPONSE_TIMEOUT),
    )
    .await
    .unwrap();
    let p = format!("nemesis-{seed}");
    direct.set_limit(&p, QUEUE, Some(LIMIT)).await.unwrap();
    direct
        .set_retention(
            &p,
            Retention {
                keep_finished: 1_000_000,
                keep_dead: 1_000_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let history = Arc::new(History::new("job-partition", seed));
    let dir = tempfile::tempdir().unwrap();
    let child_file = |name: &str| dir.path().join(format!("{name}.jsonl"));
    let url = |proxy: &FaultProxy| format!("redis://{}/", proxy.addr());
    let worker_a = Arc::new(spawn_worker(
        "worker-a",
        &p,
        url(&proxy_a),
        child_file("worker-a"),
    ));
    let worker_b = Arc::new(spawn_worker(
        "worker-b",
        &p,
        url(&proxy_b),
        child_file("worker-b"),
    ));

    // Pauses of a worker stay within the margin: a process frozen longer than that may run
    // job code for a moment after it thaws (docs/job-partition.md, "Limits").
    let plan = Plan::new(run_for)
        // Up to longer than the lease: a partitioned worker's leases expire in Redis.
        .fault_duration(Duration::from_millis(200), Duration::from_secs(6))
        .gap(Duration::from_millis(100), Duration::from_millis(800))
        .max_fault_time(run_for * 6 / 10)
        .proxy_faults(0, &FaultKind::PROXY)
        .proxy_faults(1, &FaultKind::PROXY)
        .proxy_faults(
            2,
            &[
                FaultKind::Cut,
                FaultKind::Down,
                FaultKind::Hold,
                FaultKind::HoldAnswers,
                FaultKind::AnswerLate,
            ],
        )
        .process_faults(
            0,
            &[FaultKind::Pause, FaultKind::Kill],
            Duration::from_secs(6),
        )
        .process_faults(1, &[FaultKind::Pause], MARGIN - Duration::from_millis(50))
        .process_faults(2, &[FaultKind::Pause], MARGIN - Duration::from_millis(50))
        .process_faults(1, &[FaultKind::Kill], Duration::from_secs(3))
        .process_faults(2, &[FaultKind::Kill], Duration::from_secs(3));
    let schedule = plan.schedule(seed);
    eprintln!("{schedule}");
    let targets = Targets::new()
        .proxy(Arc::clone(&proxy_a))
        .proxy(Arc::clone(&proxy_b))
        .proxy(Arc::clone(&proxy_p))
        .process(Arc::clone(&redis) as Arc<dyn Victim>)
        .process(Arc::clone(&worker_a) as Arc<dyn Victim>)
        .process(Arc::clone(&worker_b) as Arc<dyn Victim>);
    let stop = Arc::new(AtomicBool::new(false));
    let nemesis = {
        let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
        std::thread::spawn(move || schedule.run(&targets, &history, &stop))
    };

    let producer = Jobs::connect(Config::new(url(&proxy_p)).response_timeout(RESPONSE_TIMEOUT))
        .await
        .unwrap();
    let expect = produce(&producer, &p, &history, seed, run_for).await;

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

    // Healed: every job reaches a final state (a lease may have to expire, a retry to wait).
    // A longer run leaves a longer backlog: jobs parked behind one execution key run one at a
    // time, so the bound grows with the run (97.5 s for the 15 s pass, 390 s after 10 minutes).
    // What is left is printed every 30 s, so a slow drain can be told from a stuck one.
    let settle_within = Duration::from_secs(90) + run_for / 2;
    let healed_at = tokio::time::Instant::now();
    let next_print = std::sync::Mutex::new(healed_at + Duration::from_secs(30));
    let settled = eventually(
        "every job to reach a final state",
        settle_within,
        || async {
            let counts = direct.counts(&p, QUEUE).await;
            {
                let mut next = next_print.lock().unwrap();
                if tokio::time::Instant::now() >= *next {
                    *next += Duration::from_secs(30);
                    eprintln!("{:?} after healing: {counts:?}", healed_at.elapsed());
                }
            }
            counts.is_ok_and(|c| {
                c.queued + c.scheduled + c.parked + c.running == 0
                    && !worker_a.has_exited()
                    && !worker_b.has_exited()
            })
        },
    )
    .await;
    // Stop the workers before reading their histories (what they hold is final by now).
    worker_a.kill().unwrap();
    worker_b.kill().unwrap();
    for name in ["worker-a", "worker-b"] {
        history.extend(History::load(&child_file(name)).unwrap());
    }
    let path = history.write().unwrap();
    eprintln!("history: {}", path.display());

    let state = nemesis_check::read_redis(&direct, &p, QUEUE).await;
    let outcome: Outcome = nemesis_check::check(&history.events(), &state, &expect);
    eprintln!("{}", outcome.summary());
    // Printed before the assertions: a run that does not settle fails on that first.
    for violation in outcome.violations.iter().take(20) {
        eprintln!("  violation: {violation}");
    }
    assert!(
        settled.is_ok(),
        "jobs did not settle within {settle_within:?} after the nemesis healed everything; \
         seed {seed}; history {}; {:?}",
        path.display(),
        direct.counts(&p, QUEUE).await
    );
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

/// Enqueues jobs (some keyed, some failing) and cancels some, recording each call, until
/// `run_for` has passed.
async fn produce(jobs: &Jobs, p: &str, history: &History, seed: u64, run_for: Duration) -> Expect {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let deadline = tokio::time::Instant::now() + run_for;
    let mut enqueued: Vec<String> = Vec::new();
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline {
        if !enqueued.is_empty() && rng.random_ratio(1, 12) {
            let id = enqueued[rng.random_range(0..enqueued.len())].clone();
            let op = history.invoke("producer", "cancel", json!({"id": id}));
            match jobs.cancel(p, &id).await {
                Ok(outcome) => {
                    let answer = match outcome {
                        CancelOutcome::Cancelled => "cancelled".to_owned(),
                        CancelOutcome::Cancelling => "cancelling".to_owned(),
                        CancelOutcome::AlreadyFinished(state) => format!("finished:{state}"),
                        CancelOutcome::Unknown => "unknown".to_owned(),
                        other => format!("{other:?}"),
                    };
                    history.ok(&op, "producer", "cancel", json!({"outcome": answer}));
                }
                Err(e) => history.info(&op, "producer", "cancel", json!({"error": e.to_string()})),
            }
            continue;
        }
        n += 1;
        let step = Step {
            n,
            // Mostly short; some run longer than the lease, so that faults catch them mid-run
            // and their lease must be kept, or given up in time.
            sleep_ms: if rng.random_ratio(1, 50) {
                rng.random_range(2000..8000)
            } else {
                rng.random_range(0..100)
            },
            fail_times: if rng.random_ratio(1, 5) {
                rng.random_range(1..=MAX_ATTEMPTS)
            } else {
                0
            },
            qkey: rng
                .random_ratio(1, 5)
                .then(|| format!("u{}", rng.random_range(0..8))),
            xkey: rng
                .random_ratio(2, 5)
                .then(|| format!("x{}", rng.random_range(0..4))),
        };
        let op = history.invoke(
            "producer",
            "enqueue",
            json!({"n": n, "qkey": step.qkey, "xkey": step.xkey, "fail_times": step.fail_times}),
        );
        match jobs.enqueue(p, QUEUE, &step).await {
            Ok(Enqueued::Queued(id)) => {
                history.ok(&op, "producer", "enqueue", json!({"id": id}));
                enqueued.push(id);
            }
            Ok(Enqueued::Duplicate(holder)) => {
                history.ok(&op, "producer", "enqueue", json!({"duplicate_of": holder}));
            }
            // A timeout or a dropped connection: the job may or may not be stored.
            Err(e) => history.info(&op, "producer", "enqueue", json!({"error": e.to_string()})),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..50))).await;
    }
    Expect {
        limit: LIMIT,
        max_attempts: MAX_ATTEMPTS,
    }
}
