//! `jobs-throughput`: wharf-job-partition vs BullMQ on the same Redis, in the same run.
//!
//! No-op jobs: bulk-enqueue `WHARF_BENCH_JOBS` (default 100,000) of them into a paused queue,
//! start 2 worker processes (concurrency 50 each), resume, and time until all are done.
//! Again with execution keys over 1,000 keys (wharf only: open-source BullMQ has no per-key
//! serialization, so its unkeyed figure is the baseline). Several rounds
//! (`WHARF_BENCH_ROUNDS`, default 3); medians reported. Writes JSON to `$WHARF_BENCH_OUT`.
//!
//! Each wharf round also prints what one job cost, figures a busy shared machine moves far
//! less than throughput: CPU time of the two worker processes, CPU time of Redis, and Redis
//! commands (those run inside scripts included), each per job. Redis figures need the
//! bench's own Redis (no `WHARF_TEST_REDIS_URL`). To compare two builds of the worker, point
//! `WHARF_JOBS_BENCH_WORKER_EXE` at another build of this bench: its worker processes are
//! then used, with this build's producer. `WHARF_BENCH_BULLMQ=0` skips BullMQ. `WHARF_BENCH_COMMANDSTATS=1`
//! also prints, per round, each Redis command's calls and µs per job (`INFO commandstats`;
//! a script's own row includes the time of the commands it ran).
//!
//! The Rust peer, apalis 1.0 with its Redis backend (`apalis` / `apalis-redis`), runs the
//! same no-op jobs on the same Redis in the same rounds: `push_bulk` in chunks of 10,000
//! while no worker runs (apalis has no pause), then 2 worker processes, each
//! `WorkerBuilder::concurrency(50).parallelize(tokio::spawn)` (its README's idiom) with a
//! fetch batch of 50 (wharf's claim batch; apalis' default is 10), told to start together
//! once both are connected; done when its done set holds every job. apalis-redis 1.0.0
//! cannot fetch a backlog of more than about 8,000 jobs (see `apalis_promote`), so the bench
//! moves the pushed jobs to its active list itself before the workers start. `WHARF_BENCH_APALIS=0`
//! skips it.
//!
//! BullMQ comes from `crates/job-partition/benches/bullmq/install.sh` (run automatically
//! when missing; needs Node 20 and npm).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wharf_job_partition::{Config, Job, JobContext, JobError, Jobs, Registry, Worker};
use wharf_testkit::bench::{self, Entry, median};

pub(crate) const CONCURRENCY: usize = 50;
const KEYS: u64 = 1_000;

#[derive(Serialize, Deserialize)]
pub(crate) struct Noop {
    pub(crate) n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<u64>,
}

impl Job for Noop {
    const NAME: &'static str = "noop";
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
    fn execution_key(&self) -> Option<String> {
        self.key.map(|k| format!("k{k}"))
    }
}

pub(crate) fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("WHARF_BENCH_MODE").as_deref() == Ok("growth") {
        // The same as `scripts/bench jobs-growth`.
        growth_main();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(partition) = std::env::var("WHARF_JOBS_BENCH_WORKER") {
        rt.block_on(worker_process(partition));
        return;
    }
    if let Ok(queue) = std::env::var("WHARF_JOBS_BENCH_APALIS_WORKER") {
        rt.block_on(apalis_worker_process(queue));
        return;
    }
    rt.block_on(bench());
}

/// `scripts/bench jobs-growth` (`benches/jobs_growth.rs`): with 10,000, 100,000 and
/// 1,000,000 jobs waiting (`WHARF_BENCH_GROWTH_JOBS`, comma-separated), Redis memory per
/// waiting job (`INFO memory` used_memory added by the enqueue, divided by the jobs) and the
/// processing rate of 2 worker processes over the first `min(jobs, 100,000)` jobs, so that
/// the rate is measured with the queue still that deep. Rounds: `WHARF_BENCH_ROUNDS`
/// (default 3) up to 100,000 jobs, `WHARF_BENCH_BIG_ROUNDS` (default 1) above. The enqueue
/// is pipelined: 4 `enqueue_bulk` calls of 10,000 in flight.
pub(crate) fn growth_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(partition) = std::env::var("WHARF_JOBS_BENCH_WORKER") {
        rt.block_on(worker_process(partition));
        return;
    }
    rt.block_on(growth());
}

/// Redis' `used_memory` (bytes).
async fn used_memory(jobs: &Jobs) -> f64 {
    let text = match jobs.raw(redis::cmd("INFO").arg("memory")).await {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        _ => String::new(),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Starts the 2 worker processes on partition `p` and waits until both are ready.
fn spawn_workers(url: &str, p: &str) -> Vec<Server> {
    let exe = std::env::var_os("WHARF_JOBS_BENCH_WORKER_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    let mut workers: Vec<Server> = (0..2)
        .map(|_| {
            Server(
                Command::new(&exe)
                    .env("WHARF_JOBS_BENCH_WORKER", p)
                    .env("WHARF_REDIS_URL", url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for w in &mut workers {
        use std::io::BufRead;
        let out = w.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    workers
}

struct GrowthRound {
    enqueue_per_s: f64,
    process_per_s: f64,
    bytes_per_job: f64,
}

async fn growth_round(url: &str, n: u64, round: u64) -> GrowthRound {
    use futures::StreamExt;
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    jobs.raw(&redis::cmd("FLUSHALL")).await.unwrap();
    let p = format!("growth-{n}-{round}");
    jobs.pause(&p, "bench").await.unwrap();
    let batch: Vec<Noop> = (0..n).map(|i| Noop { n: i, key: None }).collect();
    let before = used_memory(&jobs).await;
    let t0 = Instant::now();
    let results: Vec<_> = futures::stream::iter(batch.chunks(10_000))
        .map(|chunk| jobs.enqueue_bulk(&p, "bench", chunk))
        .buffer_unordered(4)
        .collect()
        .await;
    for r in results {
        r.unwrap();
    }
    let enqueue = t0.elapsed();
    let after = used_memory(&jobs).await;
    let measured = n.min(100_000);
    let workers = spawn_workers(url, &p);
    let t1 = Instant::now();
    jobs.resume(&p, "bench").await.unwrap();
    loop {
        let c = jobs.counts(&p, "bench").await.unwrap();
        if c.completed_total >= measured {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "processing stalled: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let process = t1.elapsed();
    drop(workers);
    jobs.raw(&redis::cmd("FLUSHALL")).await.unwrap();
    GrowthRound {
        enqueue_per_s: n as f64 / enqueue.as_secs_f64(),
        process_per_s: measured as f64 / process.as_secs_f64(),
        bytes_per_job: (after - before) / n as f64,
    }
}

async fn growth() {
    let sizes: Vec<u64> = std::env::var("WHARF_BENCH_GROWTH_JOBS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let (server, url) = start_redis();
    assert!(
        server.is_some(),
        "jobs-growth flushes its Redis: it starts its own, so unset WHARF_TEST_REDIS_URL"
    );
    let mut rows = Vec::new();
    for n in sizes {
        let rounds = if n > 100_000 {
            env_num("WHARF_BENCH_BIG_ROUNDS", 1)
        } else {
            env_num("WHARF_BENCH_ROUNDS", 3)
        }
        .max(1);
        let (mut e, mut pr, mut b) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let r = growth_round(&url, n, round).await;
            eprintln!(
                "{n:>8} jobs waiting, round {round}: enqueue {:.0}/s, process {:.0}/s (first {} jobs), Redis {:.0} B per waiting job",
                r.enqueue_per_s,
                r.process_per_s,
                n.min(100_000),
                r.bytes_per_job
            );
            e.push(r.enqueue_per_s);
            pr.push(r.process_per_s);
            b.push(r.bytes_per_job);
        }
        let params = serde_json::json!({
            "jobs_waiting": n, "rounds": rounds, "worker_processes": 2,
            "concurrency_per_process": CONCURRENCY, "measured_jobs": n.min(100_000),
            "enqueue_jobs_per_second": median(&e),
            "enqueue": "enqueue_bulk chunks of 10,000, 4 in flight, into a paused queue",
        });
        let row = |metric: &str, unit: &str, higher: bool, ours: f64| {
            Entry {
                name: "jobs-growth".to_owned(),
                metric: metric.to_owned(),
                unit: unit.to_owned(),
                higher_is_better: higher,
                ours,
                baseline: f64::NAN,
                baseline_label: "none (how wharf's own cost grows)".to_owned(),
                params: params.clone(),
            }
            .to_json()
        };
        rows.push(row(
            "processing_jobs_per_second",
            "jobs/s",
            true,
            median(&pr),
        ));
        rows.push(row(
            "redis_bytes_per_waiting_job",
            "bytes",
            false,
            median(&b),
        ));
    }
    if let Some(out) = bench::write_report(&rows).unwrap() {
        println!("wrote {}", out.display());
    }
}

/// A worker process: works the partition's queue until killed (at most 10 min).
async fn worker_process(partition: String) {
    let url = std::env::var("WHARF_REDIS_URL").unwrap();
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    let w = Worker::builder(jobs, Registry::new().register::<Noop>())
        .queue(&partition, "bench", CONCURRENCY)
        .build()
        .unwrap()
        .start();
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
    w.shutdown().await;
}

pub(crate) struct Server(pub(crate) Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn start_redis() -> (Option<Server>, String) {
    if let Ok(url) = std::env::var(wharf_testkit::BrokerKind::Redis.override_var()) {
        return (None, url);
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("wharf-jobs-bench-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let local = workspace_root().join(".wharf/bin/redis-server");
    let bin = if local.exists() {
        local
    } else {
        PathBuf::from("redis-server")
    };
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (scripts/install or apt-get install redis-server)");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Some(Server(child)), format!("redis://127.0.0.1:{port}/"))
}

struct Round {
    enqueue_per_s: f64,
    process_per_s: f64,
}

/// CPU seconds (user + system) a process has used so far, from `/proc` (Linux only).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `INFO commandstats` as command name -> (calls, usec).
async fn command_stats(jobs: &Jobs) -> std::collections::HashMap<String, (f64, f64)> {
    let text = match jobs.raw(redis::cmd("INFO").arg("commandstats")).await {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        _ => String::new(),
    };
    let field = |rest: &str, key: &str| -> f64 {
        rest.split(',')
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            Some((
                name.to_owned(),
                (field(rest, "calls="), field(rest, "usec=")),
            ))
        })
        .collect()
}

/// Redis' own CPU seconds and the commands it ran (scripts' inner commands included).
async fn redis_work(jobs: &Jobs) -> (f64, u64) {
    let info = |section: &'static str| async move {
        match jobs.raw(redis::cmd("INFO").arg(section)).await {
            Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(redis::Value::VerbatimString { text, .. }) => text,
            _ => String::new(),
        }
    };
    let cpu: f64 = info("cpu")
        .await
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum();
    let calls: u64 = info("commandstats")
        .await
        .lines()
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (cpu, calls)
}

async fn ours(url: &str, n: u64, keyed: bool, round: u64) -> Round {
    let jobs = Jobs::connect(Config::new(url)).await.unwrap();
    let p = format!(
        "bench-{}-{round}-{:06x}",
        if keyed { "keyed" } else { "plain" },
        rand::random::<u32>() & 0xff_ffff
    );
    jobs.pause(&p, "bench").await.unwrap();
    let batch: Vec<Noop> = (0..n)
        .map(|i| Noop {
            n: i,
            key: keyed.then_some(i % KEYS),
        })
        .collect();
    let t0 = Instant::now();
    // In chunks of 10,000 per call, as a producer would send them.
    for chunk in batch.chunks(10_000) {
        jobs.enqueue_bulk(&p, "bench", chunk).await.unwrap();
    }
    let enqueue = t0.elapsed();
    let exe = std::env::var_os("WHARF_JOBS_BENCH_WORKER_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    let mut workers: Vec<Server> = (0..2)
        .map(|_| {
            Server(
                Command::new(&exe)
                    .env("WHARF_JOBS_BENCH_WORKER", &p)
                    .env("WHARF_REDIS_URL", url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for w in &mut workers {
        use std::io::BufRead;
        let out = w.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let cpu0: Option<f64> = workers.iter().map(|w| cpu_seconds(w.0.id())).sum();
    let redis0 = redis_work(&jobs).await;
    let stats0 = command_stats(&jobs).await;
    let t1 = Instant::now();
    jobs.resume(&p, "bench").await.unwrap();
    loop {
        let c = jobs.counts(&p, "bench").await.unwrap();
        if c.completed_total >= n {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "processing stalled: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let process = t1.elapsed();
    let cpu1: Option<f64> = workers.iter().map(|w| cpu_seconds(w.0.id())).sum();
    let redis1 = redis_work(&jobs).await;
    let stats1 = command_stats(&jobs).await;
    let us = |s: f64| s * 1e6 / n as f64;
    if std::env::var_os("WHARF_BENCH_COMMANDSTATS").is_some() {
        // Which commands the per-job figures are made of (calls and Redis' own µs per job).
        let mut rows: Vec<(String, f64, f64)> = stats1
            .iter()
            .map(|(name, (calls, usec))| {
                let (c0, u0) = stats0.get(name).copied().unwrap_or((0.0, 0.0));
                (
                    name.clone(),
                    (calls - c0) / n as f64,
                    (usec - u0) / n as f64,
                )
            })
            .filter(|r| r.1 > 0.0)
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        for (name, calls, usec) in rows {
            eprintln!("    {name:<24} {calls:>8.3} calls/job {usec:>8.2} us/job");
        }
    }
    eprintln!(
        "  per job ({}): workers {:.1} us CPU, redis {:.1} us CPU, {:.2} redis commands",
        if keyed { "keyed" } else { "plain" },
        cpu0.zip(cpu1).map_or(f64::NAN, |(a, b)| us(b - a)),
        us(redis1.0 - redis0.0),
        (redis1.1 - redis0.1) as f64 / n as f64,
    );
    drop(workers);
    jobs.purge(&p, "bench").await.unwrap();
    Round {
        enqueue_per_s: n as f64 / enqueue.as_secs_f64(),
        process_per_s: n as f64 / process.as_secs_f64(),
    }
}

/// apalis' job: the same no-op, in its own type (apalis wants `Serialize + Deserialize`).
#[derive(Serialize, Deserialize, Clone)]
struct ApalisNoop {
    n: u64,
}

async fn apalis_noop(_job: ApalisNoop) -> Result<(), apalis::prelude::BoxDynError> {
    Ok(())
}

/// apalis' connection: `apalis_redis::connect` but with a 30 s response timeout (the
/// default 500 ms times out a bulk push of 10,000 on a busy machine).
async fn apalis_connect(url: &str) -> redis::aio::ConnectionManager {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)));
    redis::aio::ConnectionManager::new_with_config(redis::Client::open(url).unwrap(), config)
        .await
        .unwrap()
}

fn apalis_config(queue: &str) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(queue)
        .batch_size(CONCURRENCY)
}

/// An apalis worker process: connects, says `ready`, waits for a line on stdin, then works
/// the queue until killed (at most 10 min).
async fn apalis_worker_process(queue: String) {
    use apalis::prelude::*;
    let url = std::env::var("WHARF_REDIS_URL").unwrap();
    let conn = apalis_connect(&url).await;
    let storage =
        apalis_redis::RedisStorage::<ApalisNoop>::new(conn).with_config(apalis_config(&queue));
    println!("ready");
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let worker = WorkerBuilder::new(format!("bench-{}", std::process::id()))
        .backend(storage)
        .concurrency(CONCURRENCY)
        .parallelize(tokio::spawn)
        .build(apalis_noop);
    match tokio::time::timeout(Duration::from_secs(600), worker.run()).await {
        Ok(Ok(())) | Err(_) => {}
        Ok(Err(e)) => eprintln!("apalis worker stopped: {e:?}"),
    }
}

/// apalis-redis 1.0.0 pushes every job into its scheduled set (run at "now"), and its fetch
/// script moves all due ones to the active list with one Lua `unpack`, which fails with
/// "too many results to unpack" past about 8,000 ids: a backlog of 100,000 could never be
/// fetched (the workers stop with that error). So the bench does that move itself before
/// the workers start, in chunks, in the same order (by run time): the state apalis' own
/// promotion would leave. Untimed.
async fn apalis_promote(conn: &mut redis::aio::ConnectionManager, config: &apalis_redis::Config) {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(config.scheduled_jobs_set())
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    for chunk in ids.chunks(1_000) {
        let _: () = redis::cmd("RPUSH")
            .arg(config.active_jobs_list())
            .arg(chunk)
            .query_async(conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("DEL")
        .arg(config.scheduled_jobs_set())
        .query_async(conn)
        .await
        .unwrap();
}

async fn apalis_round(url: &str, n: u64, round: u64) -> Round {
    use apalis::prelude::*;
    use std::io::{BufRead, Write};
    let queue = format!(
        "apalis-bench-{round}-{:06x}",
        rand::random::<u32>() & 0xff_ffff
    );
    let mut conn = apalis_connect(url).await;
    let mut storage = apalis_redis::RedisStorage::<ApalisNoop>::new(conn.clone())
        .with_config(apalis_config(&queue));
    let done_set = storage.get_config().done_jobs_set();
    let batch: Vec<ApalisNoop> = (0..n).map(|i| ApalisNoop { n: i }).collect();
    let t0 = Instant::now();
    for chunk in batch.chunks(10_000) {
        storage.push_bulk(chunk.to_vec()).await.unwrap();
    }
    let enqueue = t0.elapsed();
    apalis_promote(&mut conn, storage.get_config()).await;
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<Server> = (0..2)
        .map(|_| {
            Server(
                Command::new(&exe)
                    .env("WHARF_JOBS_BENCH_APALIS_WORKER", &queue)
                    .env("WHARF_REDIS_URL", url)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for w in &mut workers {
        let out = w.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let t1 = Instant::now();
    for w in &mut workers {
        let stdin = w.0.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    loop {
        let done: u64 = redis::cmd("SCARD")
            .arg(&done_set)
            .query_async(&mut conn)
            .await
            .unwrap();
        if done >= n {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "apalis processing stalled: {done} of {n} done"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let process = t1.elapsed();
    drop(workers);
    // Its keys all start with the queue's name.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{queue}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for chunk in keys.chunks(100) {
        let _: () = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    Round {
        enqueue_per_s: n as f64 / enqueue.as_secs_f64(),
        process_per_s: n as f64 / process.as_secs_f64(),
    }
}

#[derive(Deserialize)]
struct BullRound {
    enqueue_ms: f64,
    process_ms: f64,
}

pub(crate) fn bullmq_dir() -> PathBuf {
    std::env::var("WHARF_BULLMQ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".wharf/node/bullmq-bench"))
}

pub(crate) fn ensure_bullmq() -> bool {
    let dir = bullmq_dir();
    if dir.join("node_modules/bullmq").exists() && dir.join("node_modules/ioredis").exists() {
        // Refresh the script in case it changed.
        let _ = std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq/bench.mjs"),
            dir.join("bench.mjs"),
        );
        return true;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq/install.sh");
    Command::new("sh")
        .arg(script)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn bullmq(url: &str, n: u64, round: u64) -> Option<Round> {
    let out = Command::new("node")
        .arg(bullmq_dir().join("bench.mjs"))
        .args(["run", url, &format!("bench-{round}")])
        .args([n.to_string(), CONCURRENCY.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let r: BullRound = serde_json::from_str(text.lines().last()?).ok()?;
    Some(Round {
        enqueue_per_s: n as f64 / (r.enqueue_ms / 1000.0),
        process_per_s: n as f64 / (r.process_ms / 1000.0),
    })
}

pub(crate) fn bullmq_version() -> String {
    let p = bullmq_dir().join("node_modules/bullmq/package.json");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

async fn bench() {
    let n = env_num("WHARF_BENCH_JOBS", 100_000);
    let rounds = env_num("WHARF_BENCH_ROUNDS", 3).max(1);
    let (_server, url) = start_redis();
    let have_bullmq =
        std::env::var("WHARF_BENCH_BULLMQ").map_or(true, |v| v != "0") && ensure_bullmq();
    if !have_bullmq {
        eprintln!("BullMQ could not be installed (needs node 20 and npm): baselines left empty");
    }
    let have_apalis = std::env::var("WHARF_BENCH_APALIS").map_or(true, |v| v != "0");
    let (mut oe, mut op, mut ok, mut be, mut bp) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut ae, mut ap) = (vec![], vec![]);
    for round in 0..rounds {
        let r = ours(&url, n, false, round).await;
        let k = ours(&url, n, true, round).await;
        eprintln!(
            "round {round}: wharf enqueue {:.0}/s, process {:.0}/s, keyed {:.0}/s",
            r.enqueue_per_s, r.process_per_s, k.process_per_s
        );
        oe.push(r.enqueue_per_s);
        op.push(r.process_per_s);
        ok.push(k.process_per_s);
        if have_bullmq && let Some(b) = bullmq(&url, n, round) {
            eprintln!(
                "round {round}: bullmq enqueue {:.0}/s, process {:.0}/s",
                b.enqueue_per_s, b.process_per_s
            );
            be.push(b.enqueue_per_s);
            bp.push(b.process_per_s);
        }
        if have_apalis {
            let a = apalis_round(&url, n, round).await;
            eprintln!(
                "round {round}: apalis enqueue {:.0}/s, process {:.0}/s",
                a.enqueue_per_s, a.process_per_s
            );
            ae.push(a.enqueue_per_s);
            ap.push(a.process_per_s);
        }
    }
    let version = bullmq_version();
    let label = format!("BullMQ {version} (Node {})", node_version());
    let apalis_label = format!("apalis {APALIS_VERSION} + apalis-redis {APALIS_VERSION}");
    let params = serde_json::json!({
        "jobs": n, "rounds": rounds, "worker_processes": 2, "concurrency_per_process": CONCURRENCY,
        "execution_keys": KEYS, "bullmq_version": version,
        "bullmq_settings": "addBulk chunks of 1000, removeOnComplete 1000, 2 worker processes x concurrency 50",
        "apalis_settings": "push_bulk chunks of 10000 with no worker running, 2 worker processes x concurrency(50).parallelize(tokio::spawn), batch_size 50, other Config defaults",
        "wharf_settings": "enqueue_bulk chunks of 10000, default retention (keep 1000 finished), 2 worker processes x concurrency 50, claim batch 50",
    });
    // Without a baseline it is NaN, which the report writes as null (ratio too).
    let row = |name: &str, metric: &str, ours: f64, base: f64, label: &str, extra: &str| {
        let mut params = params.clone();
        if !extra.is_empty() {
            params["note"] = serde_json::Value::from(extra);
        }
        Entry {
            name: name.to_owned(),
            metric: metric.to_owned(),
            unit: "jobs/s".to_owned(),
            higher_is_better: true,
            ours,
            baseline: base,
            baseline_label: label.to_owned(),
            params,
        }
        .to_json()
    };
    let (bq_e, bq_p) = (median(&be), median(&bp));
    let (a_e, a_p) = (median(&ae), median(&ap));
    let rows = vec![
        row(
            "enqueue_jobs_per_second",
            "enqueue_jobs_per_second",
            median(&oe),
            bq_e,
            &label,
            "",
        ),
        row(
            "processing_jobs_per_second",
            "processing_jobs_per_second",
            median(&op),
            bq_p,
            &label,
            "",
        ),
        row(
            "processing_jobs_per_second_keyed",
            "processing_jobs_per_second_keyed",
            median(&ok),
            bq_p,
            &label,
            "wharf with execution keys over 1,000 keys; baseline is BullMQ unkeyed (open-source BullMQ has no per-key serialization)",
        ),
        row(
            "enqueue_jobs_per_second_vs_apalis",
            "enqueue_jobs_per_second",
            median(&oe),
            a_e,
            &apalis_label,
            "",
        ),
        row(
            "processing_jobs_per_second_vs_apalis",
            "processing_jobs_per_second",
            median(&op),
            a_p,
            &apalis_label,
            "",
        ),
    ];
    println!(
        "\n{:<40} {:>14} {:>14} {:>8}  baseline",
        "row", "wharf", "baseline", "ratio"
    );
    for r in &rows {
        println!(
            "{:<40} {:>14.0} {:>14.0} {:>8.2}  {}",
            r["name"].as_str().unwrap_or(""),
            r["ours"].as_f64().unwrap_or(f64::NAN),
            r["baseline"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["baseline_label"].as_str().unwrap_or("")
        );
    }
    if let Some(out) = bench::write_report(&rows).unwrap() {
        println!("wrote {}", out.display());
    }
}

/// The apalis and apalis-redis version the bench is built with (Cargo.toml pins it).
const APALIS_VERSION: &str = "1.0.0";

pub(crate) fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
