//! Guarantees that must hold across worker PROCESSES: the global limit, a queue's rate limit,
//! cancelling a job running in another process, and `kill -9` of a worker in the middle of
//! 5,000 jobs.
//!
//! Worker processes are this test binary run again with `WHARF_JOBS_CHILD` set: it then
//! runs only `child_worker`, which works the given partition until killed (at most 120 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use wharf_job_partition::{CancelOutcome, JobState, RateLimit, Registry, Retention, Worker};

/// Not a test of its own: the body of a worker process (see the module docs), run with
/// `--ignored` by the tests below.
#[tokio::test]
#[ignore = "the body of the worker processes the other tests spawn"]
async fn child_worker() {
    let Ok(p) = std::env::var("WHARF_JOBS_CHILD") else {
        return;
    };
    let concurrency: usize = std::env::var("CHILD_CONCURRENCY").unwrap().parse().unwrap();
    let lease_ms: u64 = std::env::var("CHILD_LEASE_MS").unwrap().parse().unwrap();
    let jobs = jobs().await;
    register_client(&p, &jobs);
    let w = Worker::builder(
        jobs.clone(),
        Registry::new().register::<Record>().register::<Ordered>(),
    )
    .queue(&p, "q", concurrency)
    .lease(Duration::from_millis(lease_ms))
    .heartbeat_every(Duration::from_millis(lease_ms / 10))
    .build()
    .unwrap()
    .start();
    tokio::time::sleep(Duration::from_secs(120)).await;
    w.shutdown().await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(p: &str, concurrency: usize, lease_ms: u64) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "child_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WHARF_JOBS_CHILD", p)
        // The child's testkit then returns this Redis instead of starting its own.
        .env(wharf_testkit::BrokerKind::Redis.override_var(), redis_url())
        .env("CHILD_CONCURRENCY", concurrency.to_string())
        .env("CHILD_LEASE_MS", lease_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

fn rec(n: u64) -> Record {
    Record {
        n,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_queue_limit_holds_across_two_worker_processes() {
    if std::env::var("WHARF_JOBS_CHILD").is_ok() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("limit-procs");
    register_client(&p, &jobs);
    jobs.set_limit(&p, "q", Some(4)).await.unwrap();
    let batch: Vec<Record> = (0..60)
        .map(|n| Record {
            sleep_ms: 40,
            ..rec(n)
        })
        .collect();
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    let _a = spawn_worker(&p, 10, 3000);
    let _b = spawn_worker(&p, 10, 3000);
    eventually("completed_total == 60", Duration::from_secs(60), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 60
    })
    .await
    .unwrap();
    let max: i64 = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:max"))).await;
    assert_eq!(
        max, 4,
        "the two processes together ran {max} jobs at once; the limit is 4"
    );
    let workers: Vec<String> = cmd(
        &jobs,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:job:*")),
    )
    .await;
    assert_eq!(workers.len(), 60);
}

#[tokio::test]
async fn a_job_running_in_another_process_is_cancelled_within_a_second() {
    if std::env::var("WHARF_JOBS_CHILD").is_ok() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("cancel-procs");
    register_client(&p, &jobs);
    let _w = spawn_worker(&p, 2, 3000);
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                sleep_ms: 60_000,
                mark_abort: true,
                ..rec(1)
            },
        )
        .await
        .unwrap();
    // Inside its sleep: it counted itself in `{p}:cur` just before.
    eventually(
        "the job to be in its sleep",
        Duration::from_secs(30),
        || async {
            let cur: Option<i64> = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:cur"))).await;
            cur == Some(1)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        jobs.job(&p, id.id()).await.unwrap().unwrap().state,
        JobState::Running
    );
    let t = Instant::now();
    assert_eq!(
        jobs.cancel(&p, id.id()).await.unwrap(),
        CancelOutcome::Cancelling
    );
    assert!(
        eventually(
            "the job to be cancelled",
            Duration::from_secs(1),
            || async { jobs.job(&p, id.id()).await.unwrap().unwrap().state == JobState::Cancelled }
        )
        .await
        .is_ok(),
        "the other process did not cancel the job within 1 s"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // The abort itself, reported by the job's own code in the other process: its future was
    // dropped mid-sleep (the cancel is recorded only once the task has ended).
    let aborted: Option<i64> = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:aborted"))).await;
    assert_eq!(aborted, Some(1), "the job's task was not aborted");
    let runs: Option<i64> = cmd(
        &jobs,
        redis::cmd("HGET").arg(format!("{{{p}}}:runs")).arg(1),
    )
    .await;
    assert_eq!(runs, None, "the cancelled job ran to its end");
}

#[tokio::test]
async fn kill_9_of_a_worker_during_5000_jobs_loses_none_and_leaves_no_key_locked() {
    if std::env::var("WHARF_JOBS_CHILD").is_ok() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("kill9");
    register_client(&p, &jobs);
    jobs.set_retention(
        &p,
        Retention {
            keep_finished: 10_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let total = 5_000u64;
    let batch: Vec<Record> = (0..total)
        .map(|n| Record {
            sleep_ms: 2,
            xkey: (n % 5 == 0).then(|| format!("x{}", n % 50)),
            qkey: (n % 7 == 0).then(|| format!("u{n}")),
            ..rec(n)
        })
        .collect();
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    let lease_ms = 2000;
    let mut victim = spawn_worker(&p, 20, lease_ms);
    let _survivor = spawn_worker(&p, 20, lease_ms);
    assert!(
        eventually(
            "completed_total >= total / 4",
            Duration::from_secs(60),
            || async { jobs.counts(&p, "q").await.unwrap().completed_total >= total / 4 }
        )
        .await
        .is_ok(),
        "workers did not get going"
    );
    // Kill it while it holds jobs (its worker id starts with its pid). Jobs take 2 ms, so
    // it is frozen first (SIGSTOP): what it holds then cannot change before the kill, and a
    // moment when it holds none is skipped (thawed, tried again).
    let pid = format!("{}-", victim.0.id());
    let active = format!("{{wharf:{p}}}:q:q:active");
    let held_by_victim = || async {
        let ids: Vec<String> = cmd(&jobs, redis::cmd("ZRANGE").arg(&active).arg(0).arg(-1)).await;
        let mut held = 0;
        for id in ids {
            let w: Option<String> = cmd(
                &jobs,
                redis::cmd("HGET")
                    .arg(format!("{{wharf:{p}}}:job:{id}"))
                    .arg("worker"),
            )
            .await;
            held += usize::from(w.is_some_and(|w| w.starts_with(&pid)));
        }
        held
    };
    let signal = |name: &str| {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(victim.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    };
    let mut held = 0;
    for _ in 0..100 {
        signal("STOP");
        held = held_by_victim().await;
        if held > 0 {
            break;
        }
        signal("CONT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held > 0, "the victim never held a job while frozen");
    victim.0.kill().unwrap(); // SIGKILL
    victim.0.wait().unwrap();
    let done = eventually(
        "completed_total == total",
        Duration::from_secs(90),
        || async { jobs.counts(&p, "q").await.unwrap().completed_total == total },
    )
    .await
    .is_ok();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert!(done, "not every job completed after the crash: {c:?}");
    assert_eq!(
        (c.queued, c.parked, c.running, c.scheduled, c.dead),
        (0, 0, 0, 0, 0),
        "{c:?}"
    );

    // Every job's side effect happened; a job ran twice only if it was on the killed worker
    // when it died, and then its lease expiry is recorded.
    let runs: HashMap<u64, u64> =
        cmd(&jobs, redis::cmd("HGETALL").arg(format!("{{{p}}}:runs"))).await;
    assert_eq!(runs.len() as u64, total, "jobs lost");
    let reruns: Vec<u64> = runs
        .iter()
        .filter(|(_, r)| **r > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        reruns.len() <= 20,
        "{} jobs ran twice; at most 20 were in flight on the killed worker",
        reruns.len()
    );
    assert!(
        c.lease_expired_total <= 20 && c.lease_expired_total >= reruns.len() as u64,
        "{c:?}"
    );
    assert!(
        c.lease_expired_total >= 1,
        "the killed worker had no job in flight: the crash path was not exercised"
    );
    eprintln!(
        "after kill -9: {} leases expired, {} jobs ran twice",
        c.lease_expired_total,
        reruns.len()
    );
    let ids: Vec<String> = cmd(
        &jobs,
        redis::cmd("ZRANGE")
            .arg(format!("{{wharf:{p}}}:q:q:done"))
            .arg(0)
            .arg(-1),
    )
    .await;
    assert_eq!(ids.len() as u64, total);
    let locks: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:x*"))).await;
    assert!(locks.is_empty(), "execution keys left locked: {locks:?}");
    let qkeys: Vec<String> = cmd(
        &jobs,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:qkey:*")),
    )
    .await;
    assert!(qkeys.is_empty(), "queue keys left locked: {qkeys:?}");
}

#[tokio::test]
async fn execution_key_order_holds_with_many_jobs_on_few_keys_across_two_processes() {
    if std::env::var("WHARF_JOBS_CHILD").is_ok() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("xkey-procs");
    register_client(&p, &jobs);
    let (keys, per_key) = (5u32, 200u32);
    let batch: Vec<Ordered> = (0..per_key)
        .flat_map(|seq| {
            (0..keys).map(move |key| Ordered {
                key,
                seq,
                sleep_ms: 0,
            })
        })
        .collect();
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    let _a = spawn_worker(&p, 16, 3000);
    let _b = spawn_worker(&p, 16, 3000);
    let total = u64::from(keys * per_key);
    assert!(
        eventually(
            "completed_total == total",
            Duration::from_secs(90),
            || async { jobs.counts(&p, "q").await.unwrap().completed_total == total }
        )
        .await
        .is_ok(),
        "{:?}",
        jobs.counts(&p, "q").await.unwrap()
    );
    let overlap: Option<i64> = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:overlap"))).await;
    assert_eq!(overlap, None, "two jobs of one key ran at once");
    for key in 0..keys {
        let order: Vec<u32> = cmd(
            &jobs,
            redis::cmd("LRANGE")
                .arg(format!("{{{p}}}:order:{key}"))
                .arg(0)
                .arg(-1),
        )
        .await;
        assert_eq!(
            order,
            (0..per_key).collect::<Vec<_>>(),
            "key {key} out of order"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_holds_across_two_worker_processes() {
    if std::env::var("WHARF_JOBS_CHILD").is_ok() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("rate-procs");
    register_client(&p, &jobs);
    let (max, window) = (5, Duration::from_millis(500));
    jobs.set_rate_limit(&p, "q", Some(RateLimit::new(max, window).unwrap()))
        .await
        .unwrap();
    let batch: Vec<Record> = (0..40)
        .map(|n| Record {
            note_pid: true,
            ..rec(n)
        })
        .collect();
    let ids: Vec<String> = jobs
        .enqueue_bulk(&p, "q", &batch)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id().to_owned())
        .collect();
    let _a = spawn_worker(&p, 4, 3000);
    let _b = spawn_worker(&p, 4, 3000);
    eventually("completed_total == 40", Duration::from_secs(60), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 40
    })
    .await
    .unwrap();

    // Both processes must have started some, or the limit was not shared.
    let pids: Vec<u32> = cmd(&jobs, redis::cmd("SMEMBERS").arg(format!("{{{p}}}:pids"))).await;
    assert_eq!(pids.len(), 2, "jobs ran in the processes {pids:?}");
    let starts = started_at(&jobs, &p, &ids).await;
    let most = max_per_window(starts, window.as_millis() as i64);
    println!(
        "rate limit {max}/{window:?}, 2 processes x 4 slots: most starts in any window {most}"
    );
    assert_eq!(
        most, max as usize,
        "the limit is reached and never passed across both processes"
    );
}
