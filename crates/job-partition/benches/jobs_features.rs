//! `jobs-features`: wharf-job-partition's features under load, on one Redis, in one run.
//!
//! - **priority**: `WHARF_BENCH_JOBS` (default 100,000) no-op jobs with 3 priority levels in
//!   turn, bulk-enqueued into a paused queue, then processed by 2 worker processes at
//!   concurrency 50; against BullMQ's priorities (1, 2, 3) with the same jobs and workers.
//! - **rate**: `WHARF_BENCH_RATE_JOBS` (default 6,000) no-op jobs under a queue rate limit
//!   of `WHARF_BENCH_RATE_MAX` (default 1,000) starts per `WHARF_BENCH_RATE_MS` (default
//!   1,000) ms, 2 worker processes at concurrency 50; against BullMQ's queue rate limiter
//!   (`limiter: {max, duration}` on both Workers). Throughput, and the most starts in any
//!   sliding window, from recorded start times (wharf: the claim's Redis time, `started_at`;
//!   BullMQ: each job's `processedOn`): it must equal the limit, never more.
//! - **scale**: `WHARF_BENCH_SCALE_JOBS` (default 100,000) no-op jobs processed by 1, 2 and
//!   4 worker processes (concurrency 50 each); the baseline of each row is the 1-process
//!   figure, so the ratio is the speed-up.
//! - **cron**: 3 scheduler processes (each its own `Jobs` and `Scheduler`) on one
//!   every-second schedule for `WHARF_BENCH_CRON_SECS` (default 600): ticks fired against
//!   expected, double fires (must be 0) and p50/p99 lateness (the tick job's enqueue time,
//!   Redis clock, minus its whole second).
//!
//! `WHARF_BENCH_ONLY=priority,rate,scale,cron` picks parts (default all); rounds:
//! `WHARF_BENCH_ROUNDS` (default 3; cron runs once); `WHARF_BENCH_BULLMQ=0` skips BullMQ.
//! The worker and scheduler processes are this binary run again. Shares the no-op job,
//! Redis and BullMQ set-up with `jobs-throughput`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "jobs_throughput.rs"]
#[allow(dead_code)]
mod throughput;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use throughput::{CONCURRENCY, Noop, Server, env_num};
use wharf_job_partition::{
    CancellationToken, Config, Job, JobContext, JobError, Jobs, RateLimit, Registry, Retention,
    Schedule, Scheduler, Worker,
};
use wharf_testkit::bench::{self, Entry, median};

/// A no-op job with a priority (0 first).
#[derive(Serialize, Deserialize, Clone)]
struct Prio {
    n: u64,
    p: u8,
}

impl Job for Prio {
    const NAME: &'static str = "prio";
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
    fn priority(&self) -> u8 {
        self.p
    }
}

/// The cron schedule's job (never run: only its enqueue time is read).
#[derive(Serialize, Deserialize, Clone, Default)]
struct Tick {}

impl Job for Tick {
    const NAME: &'static str = "tick";
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(p) = std::env::var("WHARF_JOBS_BENCH_WORKER") {
        rt.block_on(worker_process(p));
    } else if let Ok(p) = std::env::var("WHARF_JOBS_BENCH_SCHEDULER") {
        rt.block_on(scheduler_process(p));
    } else {
        rt.block_on(bench());
    }
}

fn redis_url() -> String {
    std::env::var("WHARF_REDIS_URL").unwrap()
}

/// A worker process: works the partition's `bench` queue until killed (at most 10 min).
async fn worker_process(partition: String) {
    let jobs = Jobs::connect(Config::new(redis_url())).await.unwrap();
    let w = Worker::builder(jobs, Registry::new().register::<Noop>().register::<Prio>())
        .queue(&partition, "bench", CONCURRENCY)
        .build()
        .unwrap()
        .start();
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
    w.shutdown().await;
}

/// A scheduler process: fires the partition's schedules until killed (at most 30 min).
async fn scheduler_process(partition: String) {
    let jobs = Jobs::connect(Config::new(redis_url())).await.unwrap();
    let stop = CancellationToken::new();
    let s = Scheduler::new(jobs, [partition]).unwrap();
    println!("ready");
    let _ = tokio::time::timeout(Duration::from_secs(1800), s.run(stop)).await;
}

/// Starts `count` processes of this binary with `var=partition` and waits until each is
/// ready.
fn spawn(url: &str, var: &str, p: &str, count: usize) -> Vec<Server> {
    let exe = std::env::current_exe().unwrap();
    let mut procs: Vec<Server> = (0..count)
        .map(|_| {
            Server(
                Command::new(&exe)
                    .env(var, p)
                    .env("WHARF_REDIS_URL", url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for w in &mut procs {
        let out = w.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    procs
}

fn fresh(kind: &str) -> String {
    format!("{kind}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Resumes the paused queue and waits until `n` jobs completed; answers the time taken.
async fn resume_and_wait(jobs: &Jobs, p: &str, n: u64) -> Duration {
    let t = Instant::now();
    jobs.resume(p, "bench").await.unwrap();
    loop {
        let c = jobs.counts(p, "bench").await.unwrap();
        if c.completed_total >= n {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "processing stalled: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn enqueue_paused<J: Job>(jobs: &Jobs, p: &str, batch: &[J]) -> Vec<String> {
    jobs.pause(p, "bench").await.unwrap();
    let mut ids = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(10_000) {
        for e in jobs.enqueue_bulk(p, "bench", chunk).await.unwrap() {
            ids.push(e.id().to_owned());
        }
    }
    ids
}

/// wharf, priorities: jobs/s.
async fn priority_round(url: &str, n: u64) -> f64 {
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    let p = fresh("prio");
    let batch: Vec<Prio> = (0..n)
        .map(|i| Prio {
            n: i,
            p: (i % 3) as u8,
        })
        .collect();
    enqueue_paused(&jobs, &p, &batch).await;
    let workers = spawn(url, "WHARF_JOBS_BENCH_WORKER", &p, 2);
    let took = resume_and_wait(&jobs, &p, n).await;
    drop(workers);
    jobs.purge(&p, "bench").await.unwrap();
    n as f64 / took.as_secs_f64()
}

/// The most starts in any window of `window_ms` (a window is `[s, s + window_ms)`).
fn max_per_window(mut starts: Vec<i64>, window_ms: i64) -> usize {
    starts.sort_unstable();
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi] - starts[lo] >= window_ms {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

struct RateRound {
    per_s: f64,
    most_in_window: usize,
}

/// wharf, a rate limit: jobs/s and the most starts in any window.
async fn rate_round(url: &str, n: u64, max: u32, window_ms: u64) -> RateRound {
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    let p = fresh("rate");
    jobs.set_rate_limit(
        &p,
        "bench",
        Some(RateLimit::new(max, Duration::from_millis(window_ms)).unwrap()),
    )
    .await
    .unwrap();
    // Keep every finished job, so that each one's start time can be read afterwards.
    jobs.set_retention(
        &p,
        Retention {
            keep_finished: n,
            ..Retention::default()
        },
    )
    .await
    .unwrap();
    let batch: Vec<Noop> = (0..n).map(|i| Noop { n: i, key: None }).collect();
    let ids = enqueue_paused(&jobs, &p, &batch).await;
    let workers = spawn(url, "WHARF_JOBS_BENCH_WORKER", &p, 2);
    let took = resume_and_wait(&jobs, &p, n).await;
    drop(workers);
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut starts = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGET")
                .arg(format!("{{wharf:{p}}}:job:{id}"))
                .arg("started_at");
        }
        let got: Vec<Option<i64>> = pipe.query_async(&mut conn).await.unwrap();
        starts.extend(
            got.into_iter()
                .map(|s| s.expect("every job has a start time")),
        );
    }
    jobs.purge(&p, "bench").await.unwrap();
    RateRound {
        per_s: n as f64 / took.as_secs_f64(),
        most_in_window: max_per_window(starts, window_ms as i64),
    }
}

#[derive(Deserialize)]
struct BullRound {
    process_ms: f64,
    #[serde(default)]
    starts: Option<Vec<i64>>,
}

fn bullmq(url: &str, n: u64, kind: &str, extra: &[String]) -> Option<BullRound> {
    let out = Command::new("node")
        .arg(throughput::bullmq_dir().join("bench.mjs"))
        .args(["run", url, &fresh(kind)])
        .args([n.to_string(), CONCURRENCY.to_string(), kind.to_owned()])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

/// Processing jobs/s of `procs` wharf worker processes.
async fn scale_round(url: &str, n: u64, procs: usize) -> f64 {
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    let p = fresh("scale");
    let batch: Vec<Noop> = (0..n).map(|i| Noop { n: i, key: None }).collect();
    enqueue_paused(&jobs, &p, &batch).await;
    let workers = spawn(url, "WHARF_JOBS_BENCH_WORKER", &p, procs);
    let took = resume_and_wait(&jobs, &p, n).await;
    drop(workers);
    jobs.purge(&p, "bench").await.unwrap();
    n as f64 / took.as_secs_f64()
}

async fn redis_ms(jobs: &Jobs) -> i64 {
    let t: (String, String) =
        redis::from_redis_value(jobs.raw(&redis::cmd("TIME")).await.unwrap()).unwrap();
    t.0.parse::<i64>().unwrap() * 1000 + t.1.parse::<i64>().unwrap() / 1000
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

struct CronRun {
    expected: usize,
    fired: usize,
    doubles: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    secs: u64,
}

/// 3 scheduler processes on one every-second schedule for `secs` seconds.
async fn cron_run(url: &str, secs: u64) -> CronRun {
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    let p = fresh("cron");
    let schedulers = spawn(url, "WHARF_JOBS_BENCH_SCHEDULER", &p, 3);
    let every_second = Schedule::cron("* * * * * *").unwrap();
    jobs.schedule(&p, "ticks", "every-second", &every_second, &Tick {})
        .await
        .unwrap();
    let from = redis_ms(&jobs).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let to = redis_ms(&jobs).await;
    drop(schedulers);
    // Every tick's job: its whole second and how late it was enqueued.
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{wharf:{p}}}:job:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut per_tick: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HGET").arg(k).arg("enq_at");
        }
        let got: Vec<Option<i64>> = pipe.query_async(&mut conn).await.unwrap();
        for at in got.into_iter().flatten() {
            per_tick.entry(at / 1000 * 1000).or_default().push(at);
        }
    }
    jobs.remove_schedule(&p, "every-second").await.unwrap();
    jobs.purge(&p, "ticks").await.unwrap();
    // Counted: the whole seconds after the schedule was set, up to 2 s before the end (a
    // tick due just before the end may still be on its way).
    let first = from / 1000 * 1000 + 1000;
    let last = (to - 2000) / 1000 * 1000;
    let expected = ((last - first) / 1000 + 1).max(0) as usize;
    let fired = per_tick.range(first..=last).count();
    let doubles = per_tick.values().filter(|v| v.len() > 1).count();
    let mut late: Vec<f64> = per_tick
        .iter()
        .flat_map(|(tick, ats)| ats.iter().map(move |at| (at - tick) as f64))
        .collect();
    late.sort_by(f64::total_cmp);
    CronRun {
        expected,
        fired,
        doubles,
        p50_ms: percentile(&late, 0.5),
        p99_ms: percentile(&late, 0.99),
        max_ms: late.last().copied().unwrap_or(f64::NAN),
        secs,
    }
}

fn entry(
    metric: &str,
    unit: &str,
    higher: bool,
    ours: f64,
    base: f64,
    label: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    Entry {
        name: "jobs-features".to_owned(),
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        higher_is_better: higher,
        ours,
        baseline: base,
        baseline_label: label.to_owned(),
        params,
    }
    .to_json()
}

async fn bench() {
    let only = std::env::var("WHARF_BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let rounds = env_num("WHARF_BENCH_ROUNDS", 3).max(1);
    let (_server, url) = throughput::start_redis();
    let have_bullmq = std::env::var("WHARF_BENCH_BULLMQ").map_or(true, |v| v != "0")
        && throughput::ensure_bullmq();
    let label = format!(
        "BullMQ {} (Node {})",
        throughput::bullmq_version(),
        throughput::node_version()
    );
    let mut rows = Vec::new();

    if part("priority") {
        let n = env_num("WHARF_BENCH_JOBS", 100_000);
        let (mut ours, mut base) = (vec![], vec![]);
        for round in 0..rounds {
            let o = priority_round(&url, n).await;
            let b = have_bullmq
                .then(|| bullmq(&url, n, "prio", &[]))
                .flatten()
                .map(|b| n as f64 / (b.process_ms / 1000.0));
            eprintln!("priority round {round}: wharf {o:.0}/s, bullmq {b:.0?}/s");
            ours.push(o);
            base.extend(b);
        }
        rows.push(entry(
            "processing_jobs_per_second_3_priorities",
            "jobs/s",
            true,
            median(&ours),
            median(&base),
            &label,
            serde_json::json!({
                "jobs": n, "rounds": rounds, "worker_processes": 2,
                "concurrency_per_process": CONCURRENCY,
                "priorities": "wharf 0, 1, 2 in turn; BullMQ 1, 2, 3 in turn",
                "wharf_rounds": ours, "bullmq_rounds": base,
            }),
        ));
    }

    if part("rate") {
        let n = env_num("WHARF_BENCH_RATE_JOBS", 6_000);
        let max = env_num("WHARF_BENCH_RATE_MAX", 1_000) as u32;
        let window_ms = env_num("WHARF_BENCH_RATE_MS", 1_000);
        let (mut ours, mut base, mut ours_most, mut base_most) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let o = rate_round(&url, n, max, window_ms).await;
            let extra = [max.to_string(), window_ms.to_string()];
            let b = have_bullmq
                .then(|| bullmq(&url, n, "rate", &extra))
                .flatten();
            let b_most = b
                .as_ref()
                .and_then(|b| b.starts.clone())
                .map(|s| max_per_window(s, window_ms as i64));
            let b_rate = b.map(|b| n as f64 / (b.process_ms / 1000.0));
            eprintln!(
                "rate round {round}: wharf {:.0}/s, most starts in a window {}; bullmq {b_rate:.0?}/s, most starts in a window {b_most:?} (limit {max} per {window_ms} ms)",
                o.per_s, o.most_in_window
            );
            ours.push(o.per_s);
            ours_most.push(o.most_in_window as f64);
            base.extend(b_rate);
            base_most.extend(b_most.map(|m| m as f64));
        }
        let params = serde_json::json!({
            "jobs": n, "rounds": rounds, "worker_processes": 2,
            "concurrency_per_process": CONCURRENCY, "limit_max": max, "limit_window_ms": window_ms,
            "wharf": "Jobs::set_rate_limit on the queue; start = started_at (claim, Redis clock)",
            "bullmq": "Worker limiter {max, duration} on both workers; start = processedOn",
            "wharf_rounds": ours, "bullmq_rounds": base,
            "wharf_most_starts_per_window": ours_most, "bullmq_most_starts_per_window": base_most,
        });
        rows.push(entry(
            "processing_jobs_per_second_rate_limited",
            "jobs/s",
            true,
            median(&ours),
            median(&base),
            &label,
            params.clone(),
        ));
        // The worst round, not the median: "never more" holds for every round or not at all.
        let worst = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        rows.push(entry(
            "most_starts_in_any_window",
            "starts",
            false,
            worst(&ours_most),
            worst(&base_most),
            &label,
            params,
        ));
    }

    if part("scale") {
        let n = env_num("WHARF_BENCH_SCALE_JOBS", 100_000);
        let mut per: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for round in 0..rounds {
            for procs in [1, 2, 4] {
                let r = scale_round(&url, n, procs).await;
                eprintln!("scale round {round}: {procs} worker processes {r:.0}/s");
                per.entry(procs).or_default().push(r);
            }
        }
        let one = median(&per[&1]);
        for (procs, v) in &per {
            rows.push(entry(
                &format!("processing_jobs_per_second_{procs}_worker_processes"),
                "jobs/s",
                true,
                median(v),
                one,
                "wharf with 1 worker process (the ratio is the speed-up)",
                serde_json::json!({
                    "jobs": n, "rounds": rounds, "worker_processes": procs,
                    "concurrency_per_process": CONCURRENCY, "rounds_jobs_per_second": v,
                }),
            ));
        }
    }

    if part("cron") {
        let secs = env_num("WHARF_BENCH_CRON_SECS", 600);
        let c = cron_run(&url, secs).await;
        eprintln!(
            "cron: {} s, 3 schedulers: {} of {} ticks fired, {} double fires, lateness p50 {} ms, p99 {} ms, max {} ms",
            c.secs, c.fired, c.expected, c.doubles, c.p50_ms, c.p99_ms, c.max_ms
        );
        let params = serde_json::json!({
            "seconds": c.secs, "schedulers": 3, "schedule": "cron * * * * * * (every second)",
            "expected_ticks": c.expected, "fired_ticks": c.fired, "double_fires": c.doubles,
            "lateness_p50_ms": c.p50_ms, "lateness_p99_ms": c.p99_ms, "lateness_max_ms": c.max_ms,
        });
        let none = "none (wharf's own figure; expected ticks in `params`)";
        rows.push(entry(
            "cron_ticks_fired",
            "ticks",
            true,
            c.fired as f64,
            c.expected as f64,
            "the expected ticks (the ratio must be 1)",
            params.clone(),
        ));
        rows.push(entry(
            "cron_double_fires",
            "ticks",
            false,
            c.doubles as f64,
            f64::NAN,
            none,
            params.clone(),
        ));
        rows.push(entry(
            "cron_lateness_p99",
            "ms",
            false,
            c.p99_ms,
            f64::NAN,
            none,
            params,
        ));
    }

    println!(
        "\n{:<52} {:>12} {:>12} {:>8}",
        "metric", "wharf", "baseline", "ratio"
    );
    for r in &rows {
        println!(
            "{:<52} {:>12.1} {:>12.1} {:>8.2}",
            r["metric"].as_str().unwrap_or(""),
            r["ours"].as_f64().unwrap_or(f64::NAN),
            r["baseline"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(out) = bench::write_report(&rows).unwrap() {
        println!("wrote {}", out.display());
    }
}
