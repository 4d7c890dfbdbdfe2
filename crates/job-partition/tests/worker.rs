//! The worker against a real Redis: retries, timeouts, cancellation, leases and fencing,
//! execution keys, global limits, hooks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use wharf_job_partition::{CancelOutcome, Hooks, JobEvent, JobState, Registry, Worker, testing};

fn rec(n: u64) -> Record {
    Record {
        n,
        ..Default::default()
    }
}

fn worker(
    jobs: &wharf_job_partition::Jobs,
    p: &str,
    concurrency: usize,
) -> wharf_job_partition::WorkerHandle {
    Worker::builder(
        jobs.clone(),
        Registry::new().register::<Record>().register::<Ordered>(),
    )
    .queue(p, "q", concurrency)
    .lease(Duration::from_secs(3))
    .build()
    .unwrap()
    .start()
}

#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Hooks for Seen {
    fn before(&self, job: &JobEvent<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("before {}", job.attempt));
    }
    fn after(&self, _job: &JobEvent<'_>, _elapsed: Duration) {
        self.0.lock().unwrap().push("after".into());
    }
    fn on_error(&self, job: &JobEvent<'_>, _error: &str, will_retry: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("error {} retry={will_retry}", job.attempt));
    }
    fn on_cancel(&self, _job: &JobEvent<'_>) {
        self.0.lock().unwrap().push("cancel".into());
    }
    fn on_dead(&self, _job: &JobEvent<'_>, _reason: &str) {
        self.0.lock().unwrap().push("dead".into());
    }
}

#[tokio::test]
async fn a_failing_job_is_retried_with_backoff_until_it_succeeds_and_hooks_see_each_step() {
    let jobs = jobs().await;
    let p = partition("retry");
    register_client(&p, &jobs);
    let seen = Seen::default();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 2)
        .hooks(seen.clone())
        .build()
        .unwrap()
        .start();
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                fail_times: 2,
                ..rec(1)
            },
        )
        .await
        .unwrap();
    eventually("completed_total == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 1
    })
    .await
    .unwrap();
    w.shutdown().await;
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(c.retried_total, 2);
    assert_eq!(jobs.job(&p, id.id()).await.unwrap().unwrap().attempts, 3);
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            "before 1",
            "error 1 retry=true",
            "before 2",
            "error 2 retry=true",
            "before 3",
            "after"
        ]
    );
}

#[tokio::test]
async fn after_the_last_attempt_a_job_is_dead_and_its_queue_key_released() {
    let jobs = jobs().await;
    let p = partition("last");
    register_client(&p, &jobs);
    let w = worker(&jobs, &p, 2);
    let job = Record {
        fail_times: 9,
        attempts: Some(3),
        qkey: Some("only".into()),
        ..rec(1)
    };
    let id = jobs.enqueue(&p, "q", &job).await.unwrap();
    // While it waits to retry, the queue key still holds.
    eventually("retried_total >= 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().retried_total >= 1
    })
    .await
    .unwrap();
    assert!(matches!(
        jobs.enqueue(&p, "q", &job).await.unwrap(),
        wharf_job_partition::Enqueued::Duplicate(_)
    ));
    eventually("dead == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().dead == 1
    })
    .await
    .unwrap();
    w.shutdown().await;
    let info = jobs.job(&p, id.id()).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Dead, 3));
    assert!(info.error.unwrap().contains("planned failure 3"));
    assert!(matches!(
        jobs.enqueue(&p, "q", &job).await.unwrap(),
        wharf_job_partition::Enqueued::Queued(_)
    ));
}

#[tokio::test]
async fn max_execution_time_aborts_the_job_and_counts_as_a_failure() {
    let jobs = jobs().await;
    let p = partition("timeout");
    register_client(&p, &jobs);
    let w = worker(&jobs, &p, 2);
    let job = Record {
        sleep_ms: 10_000,
        timeout_ms: Some(200),
        attempts: Some(1),
        ..rec(1)
    };
    let id = jobs.enqueue(&p, "q", &job).await.unwrap();
    let t = Instant::now();
    eventually("dead == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().dead == 1
    })
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    w.shutdown().await;
    let info = jobs.job(&p, id.id()).await.unwrap().unwrap();
    assert!(info.error.unwrap().contains("max_execution_time"));
    // The abort itself, seen by the job's own code: its future was dropped mid-sleep (a run
    // that reached its end would say so), and before the job was recorded dead.
    let run = runs(&p);
    assert_eq!(run.len(), 1, "{run:?}");
    assert!(run[0].aborted, "the job's task was not aborted: {run:?}");
    let ran_for = run[0].ended.unwrap() - run[0].started;
    assert!(ran_for < Duration::from_secs(10), "it slept to its end");
    let marker: Option<i64> = cmd(
        &jobs,
        redis::cmd("HGET").arg(format!("{{{p}}}:runs")).arg(1),
    )
    .await;
    assert_eq!(marker, None, "the aborted job reached its end");
}

#[tokio::test]
async fn a_running_job_is_aborted_within_a_second_of_its_cancel_and_on_cancel_runs() {
    let jobs = jobs().await;
    let p = partition("cancel-run");
    register_client(&p, &jobs);
    let seen = Seen::default();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 2)
        .hooks(seen.clone())
        .build()
        .unwrap()
        .start();
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                sleep_ms: 30_000,
                ..rec(1)
            },
        )
        .await
        .unwrap();
    eventually("running == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().running == 1
    })
    .await
    .unwrap();
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
        "not cancelled within 1 s"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // The abort itself: the job's future was dropped mid-sleep, before `cancelled` was
    // recorded (the run's end is before the cancel was observed, not 30 s after its start).
    let run = runs(&p);
    assert_eq!(run.len(), 1, "{run:?}");
    assert!(
        run[0].aborted,
        "the task was not aborted mid-sleep: {run:?}"
    );
    assert!(run[0].ended.unwrap() <= Instant::now());
    w.shutdown().await;
    assert_eq!(*seen.0.lock().unwrap(), ["before 1", "cancel"]);
    let cur: i64 = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:cur"))).await;
    assert_eq!(cur, 1, "the task reached the end of its sleep");
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_can_neither_complete_nor_fail_the_job() {
    let jobs = jobs().await;
    let p = partition("fence");
    let id = jobs.enqueue(&p, "q", &rec(1)).await.unwrap();
    let lease = Duration::from_millis(200);
    let a = testing::claim(&jobs, &p, "q", 1, lease, "A").await.unwrap();
    assert_eq!(a.len(), 1);
    eventually(
        "A's lease to expire and the job to be requeued",
        lease + Duration::from_secs(5),
        || async { testing::reap(&jobs, &p, "q").await.unwrap() == 1 },
    )
    .await
    .unwrap();
    let b = testing::claim(&jobs, &p, "q", 1, Duration::from_secs(5), "B")
        .await
        .unwrap();
    assert_eq!(b[0].0, id.id());
    let (a_id, a_tok) = &a[0];
    assert!(
        !testing::heartbeat(&jobs, &p, a_id, a_tok, lease)
            .await
            .unwrap()
    );
    assert!(!testing::complete(&jobs, &p, a_id, a_tok).await.unwrap());
    assert_eq!(testing::fail(&jobs, &p, a_id, a_tok).await.unwrap(), 0);
    assert!(
        testing::complete(&jobs, &p, &b[0].0, &b[0].1)
            .await
            .unwrap()
    );
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(
        (c.completed_total, c.dead_total, c.lease_expired_total),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn jobs_of_an_execution_key_never_overlap_and_start_in_enqueue_order() {
    let jobs = jobs().await;
    let p = partition("xkey");
    register_client(&p, &jobs);
    let keys = 4;
    let per_key = 40;
    let batch: Vec<Ordered> = (0..per_key)
        .flat_map(|seq| {
            (0..keys).map(move |key| Ordered {
                key,
                seq,
                sleep_ms: 2,
            })
        })
        .collect();
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    let w1 = worker(&jobs, &p, 8);
    let w2 = worker(&jobs, &p, 8);
    let total = u64::from(keys * per_key);
    eventually(
        "completed_total == total",
        Duration::from_secs(30),
        || async { jobs.counts(&p, "q").await.unwrap().completed_total == total },
    )
    .await
    .unwrap();
    w1.shutdown().await;
    w2.shutdown().await;
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
    let locks: Vec<String> = cmd(
        &jobs,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:xlock:*")),
    )
    .await;
    assert!(locks.is_empty(), "execution keys left locked: {locks:?}");
}

#[tokio::test]
async fn the_queue_limit_holds_across_workers_and_changes_at_run_time() {
    let jobs = jobs().await;
    let p = partition("limit");
    register_client(&p, &jobs);
    jobs.set_limit(&p, "q", Some(3)).await.unwrap();
    jobs.enqueue_bulk(
        &p,
        "q",
        &(0..30)
            .map(|n| Record {
                sleep_ms: 30,
                ..rec(n)
            })
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let w1 = worker(&jobs, &p, 10);
    let w2 = worker(&jobs, &p, 10);
    eventually("completed_total == 30", Duration::from_secs(20), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 30
    })
    .await
    .unwrap();
    let max: i64 = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:max"))).await;
    assert_eq!(
        max, 3,
        "more than the limit ran at once (or fewer: the limit was not reached)"
    );
    jobs.set_limit(&p, "q", Some(6)).await.unwrap();
    jobs.enqueue_bulk(
        &p,
        "q",
        &(0..40)
            .map(|n| Record {
                sleep_ms: 50,
                ..rec(n)
            })
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    eventually("completed_total == 70", Duration::from_secs(20), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 70
    })
    .await
    .unwrap();
    w1.shutdown().await;
    w2.shutdown().await;
    let max: i64 = cmd(&jobs, redis::cmd("GET").arg(format!("{{{p}}}:max"))).await;
    assert_eq!(max, 6);
}

#[tokio::test]
async fn a_job_whose_worker_stopped_heartbeating_runs_again_after_its_lease() {
    let jobs = jobs().await;
    let p = partition("lease");
    register_client(&p, &jobs);
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                xkey: Some("x".into()),
                qkey: Some("u".into()),
                ..rec(1)
            },
        )
        .await
        .unwrap();
    // A "worker" that claims and then vanishes without a heartbeat.
    testing::claim(&jobs, &p, "q", 1, Duration::from_millis(500), "ghost")
        .await
        .unwrap();
    let w = worker(&jobs, &p, 2);
    eventually("completed_total == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 1
    })
    .await
    .unwrap();
    w.shutdown().await;
    let info = jobs.job(&p, id.id()).await.unwrap().unwrap();
    assert_eq!((info.attempts, info.lease_expiries), (2, 1));
    let locks: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:x*"))).await;
    assert!(locks.is_empty(), "{locks:?}");
    let q: Vec<String> = cmd(
        &jobs,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:qkey:*")),
    )
    .await;
    assert!(q.is_empty(), "{q:?}");
}

#[tokio::test]
async fn a_panicking_job_is_a_failure_not_a_dead_worker() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Boom;
    impl wharf_job_partition::Job for Boom {
        const NAME: &'static str = "boom";
        async fn perform(
            self,
            _ctx: wharf_job_partition::JobContext,
        ) -> Result<(), wharf_job_partition::JobError> {
            panic!("kaboom")
        }
        fn max_attempts(&self) -> u32 {
            1
        }
    }
    let jobs = jobs().await;
    let p = partition("panic");
    register_client(&p, &jobs);
    let w = Worker::builder(
        jobs.clone(),
        Registry::new().register::<Boom>().register::<Record>(),
    )
    .queue(&p, "q", 1)
    .build()
    .unwrap()
    .start();
    let boom = jobs.enqueue(&p, "q", &Boom).await.unwrap();
    jobs.enqueue(&p, "q", &rec(1)).await.unwrap();
    eventually("completed_total == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 1
    })
    .await
    .unwrap();
    w.shutdown().await;
    let info = jobs.job(&p, boom.id()).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert!(info.error.unwrap().contains("kaboom"));
}

/// The poll interval of the workers in the tests that check a queue is NOT worked.
const POLL: Duration = Duration::from_millis(50);

/// Returns once every idle claim loop of this runtime has polled Redis since the call: a
/// job due two poll intervals from now goes to the paused queue `probe` (which a worker with
/// poll interval [`POLL`] on this runtime and this client serves), and the call waits until
/// a claim has moved it to the ready jobs (the claim script does that before it checks the
/// pause). Every loop's timer sits in the one timer wheel of the test's current_thread
/// runtime and sends on the one connection of `jobs`: an idle loop polls at least every
/// poll interval, so a loop that exists polled before that claim.
async fn until_idle_loops_polled(jobs: &wharf_job_partition::Jobs, p: &str) {
    jobs.enqueue_in(p, "probe", &rec(0), POLL * 2)
        .await
        .unwrap();
    eventually(
        "a claim on queue probe once its job was due",
        Duration::from_secs(10),
        || async { jobs.counts(p, "probe").await.unwrap().scheduled == 0 },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn queues_can_be_added_to_and_removed_from_a_running_worker() {
    let jobs = jobs().await;
    let p = partition("runtime");
    register_client(&p, &jobs);
    jobs.pause(&p, "probe").await.unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "probe", 1)
        .poll_interval(POLL)
        .build()
        .unwrap()
        .start();
    jobs.enqueue(&p, "late", &rec(1)).await.unwrap();
    until_idle_loops_polled(&jobs, &p).await;
    assert_eq!(
        jobs.counts(&p, "late").await.unwrap().queued,
        1,
        "a queue the worker was not given was worked"
    );
    w.add_queue(&p, "late", 2).unwrap();
    eventually("completed_total == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "late").await.unwrap().completed_total == 1
    })
    .await
    .unwrap();
    w.remove_queue(&p, "late").await;
    jobs.enqueue(&p, "late", &rec(2)).await.unwrap();
    until_idle_loops_polled(&jobs, &p).await;
    assert_eq!(
        jobs.counts(&p, "late").await.unwrap().queued,
        1,
        "a removed queue was still worked"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_worker_runs_as_a_supervised_child_and_stops_with_its_supervisor() {
    use wharf_core::supervisor::Supervisor;
    let jobs = jobs().await;
    let p = partition("supervised");
    register_client(&p, &jobs);
    let worker = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 2)
        .poll_interval(POLL)
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let sup = Supervisor::builder("jobs")
        .child(worker.child_spec("worker"))
        .start()
        .await
        .unwrap();
    jobs.enqueue(&p, "q", &rec(1)).await.unwrap();
    eventually("completed_total == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 1
    })
    .await
    .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), sup.shutdown()).await;
    assert!(
        stopped.is_ok_and(|r| r.is_ok()),
        "the supervisor did not stop cleanly"
    );
    // Another worker on this runtime and client, to show when a loop would have polled.
    jobs.pause(&p, "probe").await.unwrap();
    let probe = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "probe", 1)
        .poll_interval(POLL)
        .build()
        .unwrap()
        .start();
    jobs.enqueue(&p, "q", &rec(2)).await.unwrap();
    until_idle_loops_polled(&jobs, &p).await;
    probe.shutdown().await;
    assert_eq!(
        jobs.counts(&p, "q").await.unwrap().queued,
        1,
        "the worker outlived its supervisor"
    );
}

#[tokio::test]
async fn a_cancel_asked_of_a_job_whose_worker_died_finishes_it_at_lease_expiry() {
    let jobs = jobs().await;
    let p = partition("cancel-dead-worker");
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                qkey: Some("u".into()),
                ..rec(1)
            },
        )
        .await
        .unwrap();
    let lease = Duration::from_millis(200);
    testing::claim(&jobs, &p, "q", 1, lease, "ghost")
        .await
        .unwrap();
    assert_eq!(
        jobs.cancel(&p, id.id()).await.unwrap(),
        CancelOutcome::Cancelling
    );
    eventually(
        "the ghost's lease to expire and the lease check to finish the job",
        lease + Duration::from_secs(5),
        || async { testing::reap(&jobs, &p, "q").await.unwrap() == 1 },
    )
    .await
    .unwrap();
    let info = jobs.job(&p, id.id()).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Cancelled);
    let again = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                qkey: Some("u".into()),
                ..rec(1)
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(again, wharf_job_partition::Enqueued::Queued(_)),
        "queue key still held"
    );
}

#[tokio::test]
async fn a_job_still_running_after_the_shutdown_grace_goes_back_to_its_queue_at_once() {
    let jobs = jobs().await;
    let p = partition("release");
    register_client(&p, &jobs);
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 1)
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap()
        .start();
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                sleep_ms: 30_000,
                xkey: Some("x".into()),
                ..rec(1)
            },
        )
        .await
        .unwrap();
    eventually("running == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().running == 1
    })
    .await
    .unwrap();
    let t = Instant::now();
    w.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    let info = jobs.job(&p, id.id()).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Queued, 0));
    assert_eq!(jobs.counts(&p, "q").await.unwrap().running, 0);
}

/// Appends its `seq` to `{p}:order` under execution key `k`; fails its first attempt when
/// `fail_first`; retries after 300 ms.
#[derive(serde::Serialize, serde::Deserialize)]
struct InLine {
    seq: u32,
    fail_first: bool,
}

impl InLine {
    async fn run(
        &self,
        ctx: &wharf_job_partition::JobContext,
    ) -> Result<(), wharf_job_partition::JobError> {
        let p = ctx.partition();
        let _: i64 = cmd(
            &client(p),
            redis::cmd("RPUSH")
                .arg(format!("{{{p}}}:order"))
                .arg(self.seq),
        )
        .await;
        if self.fail_first && ctx.attempt() == 1 {
            return Err("planned failure".into());
        }
        Ok(())
    }
}

impl wharf_job_partition::Job for InLine {
    const NAME: &'static str = "in_line";
    async fn perform(
        self,
        ctx: wharf_job_partition::JobContext,
    ) -> Result<(), wharf_job_partition::JobError> {
        self.run(&ctx).await
    }
    fn execution_key(&self) -> Option<String> {
        Some("k".into())
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::from_millis(300)
    }
}

/// The same, but lets later jobs of its key pass while it waits to retry.
#[derive(serde::Serialize, serde::Deserialize)]
struct LetsPass(InLine);

impl wharf_job_partition::Job for LetsPass {
    const NAME: &'static str = "lets_pass";
    async fn perform(
        self,
        ctx: wharf_job_partition::JobContext,
    ) -> Result<(), wharf_job_partition::JobError> {
        self.0.run(&ctx).await
    }
    fn execution_key(&self) -> Option<String> {
        Some("k".into())
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::from_millis(300)
    }
    fn execution_key_waits_for_retry(&self) -> bool {
        false
    }
}

async fn order_of_a_failing_job_and_two_more(first_lets_pass: bool) -> Vec<u32> {
    let jobs = jobs().await;
    let p = partition("fifo-retry");
    register_client(&p, &jobs);
    let a = InLine {
        seq: 0,
        fail_first: true,
    };
    if first_lets_pass {
        jobs.enqueue(&p, "q", &LetsPass(a)).await.unwrap();
    } else {
        jobs.enqueue(&p, "q", &a).await.unwrap();
    }
    for seq in [1, 2] {
        let job = InLine {
            seq,
            fail_first: false,
        };
        jobs.enqueue(&p, "q", &job).await.unwrap();
    }
    let w = Worker::builder(
        jobs.clone(),
        Registry::new().register::<InLine>().register::<LetsPass>(),
    )
    .queue(&p, "q", 4)
    .build()
    .unwrap()
    .start();
    eventually(
        "the three jobs to complete",
        Duration::from_secs(10),
        || async { jobs.counts(&p, "q").await.unwrap().completed_total == 3 },
    )
    .await
    .unwrap();
    w.shutdown().await;
    let locks: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:x*"))).await;
    assert!(locks.is_empty(), "execution keys left locked: {locks:?}");
    cmd(
        &jobs,
        redis::cmd("LRANGE")
            .arg(format!("{{{p}}}:order"))
            .arg(0)
            .arg(-1),
    )
    .await
}

#[tokio::test]
async fn a_retrying_job_keeps_its_place_on_its_execution_key_by_default() {
    let order = order_of_a_failing_job_and_two_more(false).await;
    assert_eq!(order, [0, 0, 1, 2], "A, A's retry, B, C");
}

#[tokio::test]
async fn a_job_may_let_later_jobs_of_its_key_pass_while_it_waits_to_retry() {
    let order = order_of_a_failing_job_and_two_more(true).await;
    assert_eq!(order, [0, 1, 2, 0], "A, B, C, A's retry");
}
