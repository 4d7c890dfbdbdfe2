//! The application's code the worker calls outside a job's own task: `Hooks`, and the
//! methods of a `Job` read before it runs (decoding, `max_attempts`, `backoff`, ...). A
//! panic in it is caught, counted in `wharf_jobs_callback_panics_total{callback}` and logged
//! with the job's id; it never changes the job's recorded outcome and never runs it again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use wharf_job_partition::{
    CancelOutcome, Hooks, Job, JobContext, JobError, JobEvent, JobState, Jobs, Registry, Worker,
};

const PANICS: &str = wharf_job_partition::metrics::CALLBACK_PANICS;
/// Long enough that a job re-run after its lease expired cannot be mistaken for its first
/// run within the tests' deadlines (a rerun comes after the lease, plus a lease check).
const LEASE: Duration = Duration::from_secs(6);

/// Hooks that note each call, then panic in the hooks named (all when empty).
#[derive(Default, Clone)]
struct PanicsIn(Arc<Mutex<Vec<String>>>, &'static [&'static str]);

impl PanicsIn {
    fn note(&self, what: String) {
        self.0.lock().unwrap().push(what.clone());
        let hook = what.split(' ').next().unwrap_or_default();
        if self.1.is_empty() || self.1.contains(&hook) {
            panic!("the application's hook panicked in {what}");
        }
    }
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Hooks for PanicsIn {
    fn before(&self, job: &JobEvent<'_>) {
        self.note(format!("before {} {}", job.id, job.attempt))
    }
    fn after(&self, job: &JobEvent<'_>, _elapsed: Duration) {
        self.note(format!("after {}", job.id))
    }
    fn on_error(&self, job: &JobEvent<'_>, _error: &str, will_retry: bool) {
        self.note(format!("on_error {} retry={will_retry}", job.id))
    }
    fn on_cancel(&self, job: &JobEvent<'_>) {
        self.note(format!("on_cancel {}", job.id))
    }
    fn on_dead(&self, job: &JobEvent<'_>, _reason: &str) {
        self.note(format!("on_dead {}", job.id))
    }
}

fn worker(
    jobs: &Jobs,
    p: &str,
    registry: Registry,
    hooks: impl Hooks,
) -> wharf_job_partition::WorkerHandle {
    Worker::builder(jobs.clone(), registry)
        .queue(p, "q", 4)
        .lease(LEASE)
        .hooks(hooks)
        .build()
        .unwrap()
        .start()
}

/// How many times job `n` (a `Record`) started, from its own count in Redis.
async fn starts(jobs: &Jobs, p: &str, n: u64) -> i64 {
    let v: Option<i64> = cmd(
        jobs,
        redis::cmd("HGET").arg(format!("{{{p}}}:starts")).arg(n),
    )
    .await;
    v.unwrap_or(0)
}

/// The log lines written on this thread while the guard lives (the worker's tasks run on
/// the test's thread: `#[tokio::test]` is a current_thread runtime).
fn capture_log() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::default());
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buf.0, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn hooks_that_panic_change_no_outcome_and_run_no_job_again() {
    recorder();
    let (log, _guard) = capture_log();
    let jobs = jobs().await;
    let p = partition("hook-panics");
    register_client(&p, &jobs);
    let hooks = PanicsIn::default();
    let w = worker(
        &jobs,
        &p,
        Registry::new().register::<Record>(),
        hooks.clone(),
    );
    let ok = Record {
        n: 1,
        ..Default::default()
    };
    let retried = Record {
        n: 2,
        fail_times: 1,
        ..Default::default()
    };
    let dead = Record {
        n: 3,
        fail_times: 9,
        attempts: Some(1),
        ..Default::default()
    };
    let ids: Vec<String> = jobs
        .enqueue_bulk(&p, "q", &[ok, retried, dead])
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id().to_owned())
        .collect();
    // A first run ends in milliseconds; a run again would come only after the lease.
    let settled = eventually(
        "2 completed and 1 dead",
        LEASE - Duration::from_secs(1),
        || async {
            let c = jobs.counts(&p, "q").await.unwrap();
            c.completed_total == 2 && c.dead_total == 1
        },
    )
    .await;
    let c = jobs.counts(&p, "q").await.unwrap();
    w.shutdown().await;
    settled.unwrap_or_else(|e| panic!("{e}: {c:?}, hooks called: {:?}", hooks.calls()));

    // Each job ran as often as its own outcome says, and is recorded as it ended.
    let want = [
        (1, JobState::Completed, 1),
        (2, JobState::Completed, 2),
        (3, JobState::Dead, 1),
    ];
    for ((n, state, attempts), id) in want.into_iter().zip(&ids) {
        let info = jobs.job(&p, id).await.unwrap().unwrap();
        assert_eq!(
            (info.state, info.attempts),
            (state, attempts),
            "job {n}: {info:?}"
        );
        assert_eq!(
            starts(&jobs, &p, n).await,
            i64::from(attempts),
            "job {n} started"
        );
    }
    assert_eq!(c.lease_expired_total, 0, "{c:?}");
    // Every hook was called where it belongs, a panic in one skipping none of the next.
    let mut calls = hooks.calls();
    calls.sort();
    let (a, b, d) = (&ids[0], &ids[1], &ids[2]);
    let mut want = vec![
        format!("before {a} 1"),
        format!("after {a}"),
        format!("before {b} 1"),
        format!("on_error {b} retry=true"),
        format!("before {b} 2"),
        format!("after {b}"),
        format!("before {d} 1"),
        format!("on_error {d} retry=false"),
        format!("on_dead {d}"),
    ];
    want.sort();
    assert_eq!(calls, want);
    // Each panic was logged as an error with the hook and the job's id.
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let logged = |hook: &str, id: &str| {
        log.lines().any(|l| {
            l.contains("ERROR")
                && l.contains("the application's code panicked")
                && l.contains(&format!("callback=\"{hook}\""))
                && l.contains(id)
        })
    };
    assert!(logged("before", a) && logged("on_dead", d), "{log}");
    // And every panic was counted, by hook.
    for (hook, n) in [
        ("before", 4.0),
        ("after", 2.0),
        ("on_error", 2.0),
        ("on_dead", 1.0),
    ] {
        assert_eq!(metric(PANICS, &p, Some(("callback", hook))), n, "{hook}");
    }
}

#[tokio::test]
async fn a_cancel_whose_hook_panics_is_recorded_at_once_not_at_lease_expiry() {
    recorder();
    let jobs = jobs().await;
    let p = partition("cancel-hook-panic");
    register_client(&p, &jobs);
    let hooks = PanicsIn(Arc::default(), &["on_cancel"]);
    let w = worker(
        &jobs,
        &p,
        Registry::new().register::<Record>(),
        hooks.clone(),
    );
    let id = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                sleep_ms: 60_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eventually("the job to run", Duration::from_secs(5), || async {
        runs(&p).len() == 1
    })
    .await
    .unwrap();
    assert_eq!(
        jobs.cancel(&p, id.id()).await.unwrap(),
        CancelOutcome::Cancelling
    );
    // Noticed at the next heartbeat (250 ms) and recorded; without the worker's record the
    // lease check would finish it as cancelled only once the lease expired.
    let cancelled = eventually(
        "the job to be recorded cancelled",
        LEASE - Duration::from_secs(1),
        || async { jobs.job(&p, id.id()).await.unwrap().unwrap().state == JobState::Cancelled },
    )
    .await;
    w.shutdown().await;
    cancelled.unwrap();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.cancelled_total, c.lease_expired_total), (1, 0), "{c:?}");
    assert_eq!(metric(PANICS, &p, Some(("callback", "on_cancel"))), 1.0);
    assert_eq!(runs(&p).len(), 1);
}

/// A job whose methods panic, as `which` says: `deserialize`, `max_attempts`, `backoff`
/// (after a failed first attempt), `perform` (before it returns its future), `error`
/// (its error's `Display`).
#[derive(Serialize, Clone, Debug)]
struct Faulty {
    which: String,
}

impl<'de> Deserialize<'de> for Faulty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            which: String,
        }
        let raw = Raw::deserialize(d)?;
        if raw.which == "deserialize" {
            panic!("Faulty panics in deserialize");
        }
        Ok(Self { which: raw.which })
    }
}

#[derive(Debug)]
struct BadDisplay;

impl std::fmt::Display for BadDisplay {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Faulty's error panics in Display")
    }
}

impl std::error::Error for BadDisplay {}

impl Job for Faulty {
    const NAME: &'static str = "faulty";

    #[allow(clippy::manual_async_fn)]
    fn perform(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send {
        if self.which == "perform" {
            panic!("Faulty panics before it returns its future");
        }
        async move {
            let guard = RunGuard::start(&ctx);
            guard.done();
            match self.which.as_str() {
                "error" => Err(Box::new(BadDisplay) as JobError),
                "backoff" if ctx.attempt() == 1 => Err("first attempt fails".into()),
                _ => Ok(()),
            }
        }
    }
    fn max_attempts(&self) -> u32 {
        if self.which == "max_attempts" {
            panic!("Faulty panics in max_attempts");
        }
        if self.which == "backoff" { 2 } else { 1 }
    }
    fn backoff(&self, attempt: u32) -> Duration {
        if self.which == "backoff" {
            panic!("Faulty panics in backoff");
        }
        Duration::from_millis(50 * u64::from(attempt))
    }
}

#[tokio::test]
async fn a_job_whose_own_methods_panic_outside_its_task_is_recorded_once_and_never_rerun() {
    recorder();
    let jobs = jobs().await;
    let p = partition("job-panics");
    register_client(&p, &jobs);
    let w = worker(
        &jobs,
        &p,
        Registry::new().register::<Faulty>(),
        wharf_job_partition::NoHooks,
    );
    let cases = ["deserialize", "max_attempts", "backoff", "perform", "error"];
    let mut ids = Vec::new();
    for which in cases {
        let id = jobs
            .enqueue(
                &p,
                "q",
                &Faulty {
                    which: which.into(),
                },
            )
            .await
            .unwrap();
        ids.push(id.id().to_owned());
    }
    // backoff: the default backoff (1 s, with jitter) replaces the one that panicked.
    let settled = eventually(
        "every job to finish",
        LEASE - Duration::from_secs(1),
        || async {
            let c = jobs.counts(&p, "q").await.unwrap();
            c.completed_total + c.dead_total == 5
        },
    )
    .await;
    let c = jobs.counts(&p, "q").await.unwrap();
    w.shutdown().await;
    settled.unwrap_or_else(|e| panic!("{e}: {c:?}"));
    assert_eq!(c.lease_expired_total, 0, "{c:?}");

    let info = |i: usize| {
        let (jobs, p, id) = (jobs.clone(), p.clone(), ids[i].clone());
        async move { jobs.job(&p, &id).await.unwrap().unwrap() }
    };
    let ran = |i: usize| runs(&p).iter().filter(|r| r.id == ids[i]).count();
    // Cannot be decoded, or its limits cannot be read: to the dead set, never started.
    for (i, what) in [(0, "Job::deserialize"), (1, "Job::max_attempts")] {
        let info = info(i).await;
        assert_eq!((info.state, info.attempts), (JobState::Dead, 1), "{info:?}");
        let error = info.error.unwrap_or_default();
        assert!(error.contains(&format!("{what} panicked")), "{error}");
        assert!(error.contains("Faulty panics in"), "{error}");
        assert_eq!(ran(i), 0, "{what}");
        assert_eq!(metric(PANICS, &p, Some(("callback", what))), 1.0, "{what}");
    }
    // Its backoff panicked: retried after the default backoff, then completed.
    let retried = info(2).await;
    assert_eq!(
        (retried.state, retried.attempts),
        (JobState::Completed, 2),
        "{retried:?}"
    );
    assert_eq!(ran(2), 2);
    assert!(metric(PANICS, &p, Some(("callback", "Job::backoff"))) >= 1.0);
    // A panic before perform returned its future is a failed attempt like any panic in it.
    let early = info(3).await;
    assert_eq!(
        (early.state, early.attempts),
        (JobState::Dead, 1),
        "{early:?}"
    );
    assert!(
        early
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("panics before it returns its future"),
        "{early:?}"
    );
    // Its error could not be displayed: a failure, recorded with what is known.
    let error = info(4).await;
    assert_eq!(
        (error.state, error.attempts),
        (JobState::Dead, 1),
        "{error:?}"
    );
    assert!(
        error
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("Display panicked"),
        "{error:?}"
    );
    assert_eq!(ran(4), 1);
    assert_eq!(metric(PANICS, &p, Some(("callback", "JobError::fmt"))), 1.0);
}
