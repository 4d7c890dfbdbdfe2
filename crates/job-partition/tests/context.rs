//! A job's context against a real Redis: the application's state, progress, results, and
//! waiting for a job's outcome from another handle (as another process would).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wharf_job_partition::{
    Error, Job, JobContext, JobError, JobOutcome, JobState, Jobs, MAX_PROGRESS_BYTES,
    MAX_RESULT_BYTES, Registry, Worker, WorkerHandle, testing,
};

/// The application's state the tests' jobs get.
#[derive(Default)]
struct App {
    total: AtomicU64,
    gate: Notify,
}

/// Adds `n` to the state's total, reports progress, waits for the gate when asked, and
/// returns `n * 2` as its result (or fails, or sets a result too large, when asked).
#[derive(Serialize, Deserialize, Default)]
struct Add {
    n: u64,
    wait_for_gate: bool,
    fail: bool,
    huge_result: bool,
    sleep_ms: u64,
}

impl Job<App> for Add {
    const NAME: &'static str = "add";

    async fn perform(self, ctx: JobContext<App>) -> Result<(), JobError> {
        ctx.state().total.fetch_add(self.n, Ordering::SeqCst);
        ctx.set_progress(&serde_json::json!({ "step": 1, "of": 2 }))
            .await?;
        if self.wait_for_gate {
            ctx.state().gate.notified().await;
        }
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        if self.fail {
            return Err("asked to fail".into());
        }
        if self.huge_result {
            let too_much = "p".repeat(MAX_PROGRESS_BYTES);
            match ctx.set_progress(&too_much).await {
                Err(Error::TooLarge { .. }) => {}
                other => return Err(format!("expected TooLarge, got {other:?}").into()),
            }
            let big = "x".repeat(MAX_RESULT_BYTES + 1);
            match ctx.set_result(&big) {
                Err(Error::TooLarge { .. }) => ctx.set_result("refused")?,
                other => return Err(format!("expected TooLarge, got {other:?}").into()),
            }
            return Ok(());
        }
        ctx.set_result(&(self.n * 2))?;
        Ok(())
    }

    fn max_attempts(&self) -> u32 {
        1
    }
}

fn worker(jobs: &Jobs, p: &str, app: std::sync::Arc<App>) -> WorkerHandle {
    Worker::builder(
        jobs.clone(),
        Registry::with_shared_state(app).register::<Add>(),
    )
    .queue(p, "q", 8)
    .lease(Duration::from_secs(3))
    .build()
    .unwrap()
    .start()
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn perform_gets_the_state_given_to_the_registry_and_its_result_is_awaitable() {
    let jobs = jobs().await;
    let p = partition("state");
    let app = std::sync::Arc::new(App::default());
    let w = worker(&jobs, &p, app.clone());
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Add {
                n: 21,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let waiter = common::jobs().await;
    let outcome = waiter.wait_for(&p, id.id(), WAIT).await.unwrap();
    assert_eq!(outcome.result::<u64>().unwrap(), Some(42), "{outcome:?}");
    assert_eq!(app.total.load(Ordering::SeqCst), 21);
    w.shutdown().await;
}

#[tokio::test]
async fn progress_reported_by_a_running_job_is_readable_from_another_handle() {
    let jobs = jobs().await;
    let p = partition("progress");
    let app = std::sync::Arc::new(App::default());
    let w = worker(&jobs, &p, app.clone());
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Add {
                n: 1,
                wait_for_gate: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let other = common::jobs().await;
    eventually("progress to be stored", WAIT, || async {
        let j = other.job(&p, id.id()).await.unwrap().unwrap();
        j.state == JobState::Running && j.progress.as_deref() == Some(r#"{"of":2,"step":1}"#)
    })
    .await
    .unwrap();
    app.gate.notify_one();
    let outcome = other.wait_for(&p, id.id(), WAIT).await.unwrap();
    assert!(
        matches!(outcome, JobOutcome::Completed { .. }),
        "{outcome:?}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn progress_and_result_from_a_worker_that_lost_the_lease_are_fenced_off() {
    let jobs = jobs().await;
    let p = partition("fence");
    let a = jobs
        .enqueue(&p, "q", &Add::default())
        .await
        .unwrap()
        .id()
        .to_owned();
    let lease = Duration::from_millis(200);
    let old = testing::claim(&jobs, &p, "q", 1, lease, "w1")
        .await
        .unwrap();
    let old_token = old[0].1.clone();
    eventually(
        "the lease to expire and the job to be requeued",
        WAIT,
        || async { testing::reap(&jobs, &p, "q").await.unwrap() == 1 },
    )
    .await
    .unwrap();
    let new = testing::claim(&jobs, &p, "q", 1, Duration::from_secs(30), "w2")
        .await
        .unwrap();
    assert!(
        !testing::set_progress(&jobs, &p, &a, &old_token, "1")
            .await
            .unwrap()
    );
    assert!(
        !testing::complete_with_result(&jobs, &p, &a, &old_token, "\"stale\"")
            .await
            .unwrap()
    );
    let j = jobs.job(&p, &a).await.unwrap().unwrap();
    assert_eq!((j.progress, j.result), (None, None));
    assert!(
        testing::complete_with_result(&jobs, &p, &a, &new[0].1, "\"fresh\"")
            .await
            .unwrap()
    );
    let outcome = jobs.wait_for(&p, &a, Duration::ZERO).await.unwrap();
    assert_eq!(
        outcome.result::<String>().unwrap().as_deref(),
        Some("fresh")
    );
}

#[tokio::test]
async fn wait_for_sees_every_outcome_of_jobs_run_by_two_workers() {
    let p = partition("two");
    let (j1, j2, waiter) = (jobs().await, jobs().await, jobs().await);
    let app = std::sync::Arc::new(App::default());
    let (w1, w2) = (worker(&j1, &p, app.clone()), worker(&j2, &p, app.clone()));
    // Each wait starts right after its enqueue, while the job may be finishing: an outcome
    // between the waiter's check and its blocking pop must not be missed.
    let mut waits = Vec::new();
    for n in 0..200u64 {
        let job = Add {
            n,
            fail: n % 10 == 3,
            sleep_ms: n % 4,
            ..Default::default()
        };
        let id = waiter.enqueue(&p, "q", &job).await.unwrap().id().to_owned();
        let (w, p) = (waiter.clone(), p.clone());
        waits.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = w.wait_for(&p, &id, WAIT).await.unwrap();
            // Answered by the pushed outcome, not by the last look after the timeout.
            assert!(started.elapsed() < WAIT, "job {n} waited the whole timeout");
            (n, outcome)
        }));
    }
    for wait in waits {
        let (n, outcome) = wait.await.unwrap();
        if n % 10 == 3 {
            assert_eq!(
                outcome,
                JobOutcome::Dead {
                    error: "asked to fail".into()
                },
                "job {n}"
            );
        } else {
            assert_eq!(outcome.result::<u64>().unwrap(), Some(n * 2), "job {n}");
        }
    }
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn wait_for_a_cancelled_job_says_cancelled() {
    let jobs = jobs().await;
    let p = partition("wcancel");
    let id = jobs
        .enqueue(&p, "q", &Add::default())
        .await
        .unwrap()
        .id()
        .to_owned();
    let (w, p2, id2) = (jobs.clone(), p.clone(), id.clone());
    let wait = tokio::spawn(async move { w.wait_for(&p2, &id2, WAIT).await.unwrap() });
    // The waiter registers before the cancel, or finds the job cancelled: both answer.
    jobs.cancel(&p, &id).await.unwrap();
    assert_eq!(wait.await.unwrap(), JobOutcome::Cancelled);
}

#[tokio::test]
async fn wait_for_a_job_nobody_runs_times_out() {
    let jobs = jobs().await;
    let p = partition("wtimeout");
    let id = jobs
        .enqueue(&p, "q", &Add::default())
        .await
        .unwrap()
        .id()
        .to_owned();
    let outcome = jobs
        .wait_for(&p, &id, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(outcome, JobOutcome::TimedOut);
    assert_eq!(
        jobs.job(&p, &id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn progress_or_a_result_over_the_limit_is_refused_and_nothing_of_it_is_stored() {
    let jobs = jobs().await;
    let p = partition("huge");
    let app = std::sync::Arc::new(App::default());
    let w = worker(&jobs, &p, app);
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Add {
                huge_result: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let outcome = jobs.wait_for(&p, id.id(), WAIT).await.unwrap();
    assert_eq!(
        outcome.result::<String>().unwrap().as_deref(),
        Some("refused")
    );
    let j = jobs.job(&p, id.id()).await.unwrap().unwrap();
    assert_eq!(j.progress.as_deref(), Some(r#"{"of":2,"step":1}"#));
    w.shutdown().await;
}

#[tokio::test]
async fn wait_for_an_unknown_job_or_a_bad_partition_is_a_typed_error_that_writes_nothing() {
    let jobs = jobs().await;
    let p = partition("wunknown");
    let err = jobs
        .wait_for(&p, "no-such-id", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownJob { .. }), "{err}");
    let err = jobs
        .wait_for("bad:name", "x", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let keys: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("*{p}*"))).await;
    assert!(keys.is_empty(), "{keys:?}");
}
