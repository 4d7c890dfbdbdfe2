//! Job code that blocks its thread (`std::thread::sleep` inside `perform`): it cannot be
//! interrupted, so the worker must keep the job's lease, execution key and queue slot until
//! the task really ends, from a thread job code cannot starve. Three such jobs on one
//! execution key, with a queue limit of 1, `max_attempts = 1` and a `max_execution_time`
//! far below their run time: never two at once, none twice, no attempt beyond the first,
//! with a second worker (another "machine") ready to take any lease that expires. And a job
//! that overstays its stop is reported (state, metric, log) while it keeps its key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio_util::sync::CancellationToken;
use wharf_job_partition::{Config, JobState, Jobs, Registry, Worker, metrics};

const LEASE: Duration = Duration::from_secs(1);
const BEAT: Duration = Duration::from_millis(100);
/// Margin 200 ms + 500 ms + 2 × 100 ms fits the 1 s lease.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Longer than two leases: without renewal the lease expires mid-run and the other worker's
/// lease check (once a second) sees it.
const BLOCK_MS: u64 = 2_500;

async fn connect() -> Jobs {
    Jobs::connect(Config::new(redis_url()).response_timeout(TIMEOUT))
        .await
        .unwrap()
}

fn worker(jobs: &Jobs, p: &str) -> Worker {
    Worker::builder(jobs.clone(), Registry::new().register::<Blocker>())
        .queue(p, "q", 3)
        .lease(LEASE)
        .heartbeat_every(BEAT)
        .build()
        .unwrap()
}

/// Worker B on a runtime and thread of its own, started once worker A runs the first job.
fn other_machine(p: String, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let jobs = connect().await;
            eventually(
                "A to run the first job",
                Duration::from_secs(10),
                || async { jobs.counts(&p, "q").await.unwrap().running == 1 },
            )
            .await
            .unwrap();
            let b = worker(&jobs, &p).start();
            stop.cancelled().await;
            b.shutdown().await;
        });
    })
}

async fn three_blocking_jobs_on_one_key(tag: &str) {
    let jobs = connect().await;
    let p = partition(tag);
    jobs.set_limit(&p, "q", Some(1)).await.unwrap();
    let job = Blocker {
        key: "k".into(),
        block_ms: BLOCK_MS,
        timeout_ms: 150,
        attempts: 1,
    };
    let ids: Vec<String> = jobs
        .enqueue_bulk(&p, "q", &[job.clone(), job.clone(), job])
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id().to_owned())
        .collect();
    let a = worker(&jobs, &p).start();
    let stop = CancellationToken::new();
    let b = other_machine(p.clone(), stop.clone());

    let settled = eventually(
        "the three jobs to be dead (timed out)",
        Duration::from_millis(BLOCK_MS * 3) + Duration::from_secs(20),
        // On a current_thread runtime the blocked job blocks this test's own Redis calls
        // too, and a call pending across the block may time out: that is not the answer.
        || async { jobs.counts(&p, "q").await.is_ok_and(|c| c.dead_total == 3) },
    )
    .await;
    stop.cancel();
    a.shutdown().await;
    tokio::task::spawn_blocking(move || b.join().unwrap())
        .await
        .unwrap();
    let mut seen = runs(&p);
    seen.sort_by_key(|r| r.started);
    let c = jobs.counts(&p, "q").await.unwrap();
    settled.unwrap_or_else(|e| panic!("{e}: {c:?}, runs {seen:#?}"));

    for w in seen.windows(2) {
        let ended = w[0].ended.expect("a run never ended");
        assert!(
            w[1].started >= ended,
            "two jobs of execution key k ran at once: {seen:#?}"
        );
    }
    let mut ran: Vec<&str> = seen.iter().map(|r| r.id.as_str()).collect();
    ran.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(ran, want, "each job must run exactly once: {seen:#?}");
    assert!(seen.iter().all(|r| r.attempt == 1), "{seen:#?}");
    assert_eq!(c.lease_expired_total, 0, "a lease expired: {c:?}");
    for id in &ids {
        let info = jobs.job(&p, id).await.unwrap().unwrap();
        assert_eq!((info.state, info.attempts), (JobState::Dead, 1), "{info:?}");
        assert!(
            info.error
                .as_deref()
                .is_some_and(|e| e.contains("max_execution_time")),
            "{info:?}"
        );
    }
}

#[tokio::test]
async fn blocking_jobs_of_one_key_never_overlap_or_rerun_on_a_current_thread_runtime() {
    three_blocking_jobs_on_one_key("blocking-ct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_jobs_of_one_key_never_overlap_or_rerun_on_a_multi_thread_runtime() {
    three_blocking_jobs_on_one_key("blocking-mt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_that_does_not_end_is_reported_stopping_and_keeps_its_key_until_it_ends() {
    recorder();
    let jobs = jobs().await;
    let p = partition("stopping");
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Blocker>())
        .queue(&p, "q", 2)
        .build()
        .unwrap()
        .start();
    let stuck = Blocker {
        key: "k".into(),
        block_ms: 3_000,
        timeout_ms: 100,
        attempts: 1,
    };
    let next = Blocker {
        block_ms: 10,
        timeout_ms: 5_000,
        ..stuck.clone()
    };
    let stuck = jobs.enqueue(&p, "q", &stuck).await.unwrap();
    let next = jobs.enqueue(&p, "q", &next).await.unwrap();

    // Reported: state, reason, metric (and an error in the log).
    let info = wharf_testkit::eventually_some(
        "the blocked job to be reported stopping",
        Duration::from_secs(3),
        || async {
            let i = jobs.job(&p, stuck.id()).await.unwrap().unwrap();
            (i.state == JobState::Stopping).then_some(i)
        },
    )
    .await
    .unwrap();
    assert!(
        info.stopping
            .as_deref()
            .is_some_and(|s| s.contains("max_execution_time")),
        "{info:?}"
    );
    assert_eq!(
        metric(metrics::JOBS, &p, Some(("state", "stop_overdue"))),
        1.0
    );
    assert_eq!(metric(metrics::STOPPING, &p, None), 1.0);
    // It still holds its execution key and its slot: the next job of the key waits.
    let holder: Option<String> = cmd(
        &jobs,
        redis::cmd("GET").arg(format!("{{wharf:{p}}}:xlock:k")),
    )
    .await;
    assert_eq!(holder.as_deref(), Some(stuck.id()));
    // A claim found the key held and parked the next job (a released key would have been
    // handed to it, and parked is where it waits for the key).
    assert_eq!(
        jobs.job(&p, next.id()).await.unwrap().unwrap().state,
        JobState::Parked
    );
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.running, c.dead), (1, 0), "{c:?}");
    assert!(
        runs(&p).iter().all(|r| r.id == stuck.id()),
        "{:?}",
        runs(&p)
    );

    // Once its task ends: dead (it timed out), and only then does the next job run.
    eventually("both jobs to finish", Duration::from_secs(10), || async {
        let c = jobs.counts(&p, "q").await.unwrap();
        c.dead == 1 && c.completed_total == 1
    })
    .await
    .unwrap();
    w.shutdown().await;
    let seen = runs(&p);
    let first = seen.iter().find(|r| r.id == stuck.id()).unwrap();
    let second = seen.iter().find(|r| r.id == next.id()).unwrap();
    assert!(second.started >= first.ended.unwrap(), "{seen:#?}");
    let info = jobs.job(&p, stuck.id()).await.unwrap().unwrap();
    assert_eq!((info.state, info.stopping), (JobState::Dead, None));
    assert_eq!(metric(metrics::STOPPING, &p, None), 0.0);
}
