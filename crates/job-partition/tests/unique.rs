//! Uniqueness over a period (`Job::unique_for`) and debounced enqueues
//! (`Jobs::enqueue_debounced`) against a real Redis, with two workers and two client handles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wharf_job_partition::{
    Debounced, Enqueued, Error, Job, JobContext, JobError, JobOutcome, JobState, Jobs, Registry,
    Worker, WorkerHandle,
};

/// What the tests' jobs record: the `n` of each run, in order.
#[derive(Default)]
struct Seen {
    ran: Mutex<Vec<u64>>,
    gate: Notify,
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct Keyed {
    key: Option<String>,
    n: u64,
    unique_ms: Option<u64>,
    wait_for_gate: bool,
}

impl Job<Seen> for Keyed {
    const NAME: &'static str = "keyed";

    async fn perform(self, ctx: JobContext<Seen>) -> Result<(), JobError> {
        if self.wait_for_gate {
            ctx.state().gate.notified().await;
        }
        ctx.state().ran.lock().unwrap().push(self.n);
        Ok(())
    }
    fn queue_key(&self) -> Option<String> {
        self.key.clone()
    }
    fn unique_for(&self) -> Option<Duration> {
        self.unique_ms.map(Duration::from_millis)
    }
}

fn keyed(n: u64) -> Keyed {
    Keyed {
        key: Some("report:7".into()),
        n,
        ..Default::default()
    }
}

fn worker(jobs: &Jobs, p: &str, seen: Arc<Seen>) -> WorkerHandle {
    Worker::builder(
        jobs.clone(),
        Registry::with_shared_state(seen).register::<Keyed>(),
    )
    .queue(p, "q", 4)
    .lease(Duration::from_secs(3))
    .build()
    .unwrap()
    .start()
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_queue_key_with_unique_for_stays_taken_after_completion_until_the_period_ends() {
    let (a, b) = (jobs().await, jobs().await);
    let p = partition("unique");
    let seen = Arc::new(Seen::default());
    let (w1, w2) = (worker(&a, &p, seen.clone()), worker(&b, &p, seen.clone()));
    let job = Keyed {
        unique_ms: Some(1500),
        ..keyed(1)
    };
    let first = a.enqueue(&p, "q", &job).await.unwrap();
    let outcome = a.wait_for(&p, first.id(), WAIT).await.unwrap();
    assert!(
        matches!(outcome, JobOutcome::Completed { .. }),
        "{outcome:?}"
    );
    // Completed, and still the key's holder, from the other handle too.
    let again = b.enqueue(&p, "q", &keyed(2)).await.unwrap();
    assert_eq!(again, Enqueued::Duplicate(first.id().to_owned()));
    // The period ends by itself (Redis' clock), without a worker's help.
    let later = wharf_testkit::eventually_some("the period to end", WAIT, || async {
        match b.enqueue(&p, "q", &keyed(3)).await.unwrap() {
            Enqueued::Queued(id) => Some(id),
            Enqueued::Duplicate(_) => None,
        }
    })
    .await
    .unwrap();
    a.wait_for(&p, &later, WAIT).await.unwrap();
    assert_eq!(*seen.ran.lock().unwrap(), [1, 3]);
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_job_frees_its_key_at_once_even_with_unique_for() {
    let jobs = jobs().await;
    let p = partition("uncancel");
    let job = Keyed {
        unique_ms: Some(60_000),
        ..keyed(1)
    };
    let first = jobs.enqueue(&p, "q", &job).await.unwrap();
    jobs.cancel(&p, first.id()).await.unwrap();
    let second = jobs.enqueue(&p, "q", &job).await.unwrap();
    assert!(matches!(second, Enqueued::Queued(_)), "{second:?}");
}

#[tokio::test]
async fn debounced_enqueues_from_two_handles_leave_one_job_and_only_the_last_runs() {
    let (a, b) = (jobs().await, jobs().await);
    let p = partition("debounce");
    let seen = Arc::new(Seen::default());
    let mut answers = Vec::new();
    for n in 1..=6u64 {
        let client = if n % 2 == 0 { &a } else { &b };
        let d = client
            .enqueue_debounced(&p, "q", &keyed(n), Duration::from_millis(300))
            .await
            .unwrap();
        answers.push(d);
    }
    assert!(matches!(answers[0], Debounced::Queued(_)), "{answers:?}");
    for (i, d) in answers.iter().enumerate().skip(1) {
        match d {
            Debounced::Replaced { replaced, .. } => assert_eq!(replaced, answers[i - 1].id()),
            other => panic!("call {i}: {other:?}"),
        }
    }
    let counts = a.counts(&p, "q").await.unwrap();
    assert_eq!((counts.scheduled, counts.cancelled_total), (1, 5));
    let first = a.job(&p, answers[0].id()).await.unwrap().unwrap();
    assert_eq!(first.state, JobState::Cancelled);
    assert_eq!(first.replaced_by.as_deref(), Some(answers[1].id()));

    let (w1, w2) = (worker(&a, &p, seen.clone()), worker(&b, &p, seen.clone()));
    let last = answers[5].id();
    let outcome = a.wait_for(&p, last, WAIT).await.unwrap();
    assert!(
        matches!(outcome, JobOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(*seen.ran.lock().unwrap(), [6]);
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn concurrent_debounced_enqueues_leave_exactly_one_pending_job() {
    let (a, b) = (jobs().await, jobs().await);
    let p = partition("debburst");
    let mut calls = Vec::new();
    for n in 0..40u64 {
        let (client, p) = (if n % 2 == 0 { a.clone() } else { b.clone() }, p.clone());
        calls.push(tokio::spawn(async move {
            client
                .enqueue_debounced(&p, "q", &keyed(n), Duration::from_secs(60))
                .await
                .unwrap()
        }));
    }
    let mut replaced = 0;
    for c in calls {
        if matches!(c.await.unwrap(), Debounced::Replaced { .. }) {
            replaced += 1;
        }
    }
    let counts = a.counts(&p, "q").await.unwrap();
    assert_eq!(
        (counts.scheduled, counts.cancelled_total, replaced),
        (1, 39, 39)
    );
}

#[tokio::test]
async fn a_debounced_enqueue_never_replaces_a_job_that_started() {
    let jobs = jobs().await;
    let p = partition("debrun");
    let seen = Arc::new(Seen::default());
    let w = worker(&jobs, &p, seen.clone());
    let running = Keyed {
        wait_for_gate: true,
        ..keyed(1)
    };
    let first = jobs.enqueue(&p, "q", &running).await.unwrap();
    eventually("the first job to run", WAIT, || async {
        jobs.job(&p, first.id()).await.unwrap().unwrap().state == JobState::Running
    })
    .await
    .unwrap();
    let d = jobs
        .enqueue_debounced(&p, "q", &keyed(2), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(d, Debounced::Duplicate(first.id().to_owned()));
    seen.gate.notify_one();
    jobs.wait_for(&p, first.id(), WAIT).await.unwrap();
    assert_eq!(*seen.ran.lock().unwrap(), [1]);
    w.shutdown().await;
}

#[tokio::test]
async fn a_debounced_job_that_replaced_a_queued_holder_of_an_execution_key_frees_it() {
    // A queued job may already hold its execution key (handed over by the job before it);
    // replacing it must leave the key usable by the job that replaced it.
    #[derive(Serialize, Deserialize)]
    struct Exec {
        n: u64,
        key: bool,
    }
    impl Job<Seen> for Exec {
        const NAME: &'static str = "exec";
        async fn perform(self, ctx: JobContext<Seen>) -> Result<(), JobError> {
            ctx.state().ran.lock().unwrap().push(self.n);
            Ok(())
        }
        fn queue_key(&self) -> Option<String> {
            self.key.then(|| "only".to_owned())
        }
        fn execution_key(&self) -> Option<String> {
            Some("x".into())
        }
    }
    let jobs = jobs().await;
    let p = partition("debx");
    // Claim the first job so the second (the key's next) parks, then complete the first:
    // the key passes to the second, which goes back to the queue holding it.
    jobs.enqueue(&p, "q", &Exec { n: 1, key: false })
        .await
        .unwrap();
    let second = jobs
        .enqueue(&p, "q", &Exec { n: 2, key: true })
        .await
        .unwrap();
    let claimed = wharf_job_partition::testing::claim(&jobs, &p, "q", 2, WAIT, "w")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        wharf_job_partition::testing::complete(&jobs, &p, &claimed[0].0, &claimed[0].1)
            .await
            .unwrap()
    );
    let holder: Option<String> = cmd(
        &jobs,
        redis::cmd("GET").arg(format!("{{wharf:{p}}}:xlock:x")),
    )
    .await;
    assert_eq!(holder.as_deref(), Some(second.id()));
    let d = jobs
        .enqueue_debounced(&p, "q", &Exec { n: 3, key: true }, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(d, Debounced::Replaced { .. }), "{d:?}");
    let seen = Arc::new(Seen::default());
    let w = Worker::builder(
        jobs.clone(),
        Registry::with_shared_state(seen.clone()).register::<Exec>(),
    )
    .queue(&p, "q", 2)
    .build()
    .unwrap()
    .start();
    let outcome = jobs.wait_for(&p, d.id(), WAIT).await.unwrap();
    assert!(
        matches!(outcome, JobOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(*seen.ran.lock().unwrap(), [3]);
    w.shutdown().await;
}

#[tokio::test]
async fn bad_unique_and_debounce_input_is_a_typed_error_that_writes_nothing() {
    let jobs = jobs().await;
    let p = partition("badunique");
    let zero = Keyed {
        unique_ms: Some(0),
        ..keyed(1)
    };
    let no_key = Keyed {
        key: None,
        unique_ms: Some(1000),
        ..keyed(1)
    };
    let errors = [
        jobs.enqueue(&p, "q", &zero).await.unwrap_err(),
        jobs.enqueue(&p, "q", &no_key).await.unwrap_err(),
        jobs.enqueue_debounced(
            &p,
            "q",
            &Keyed {
                key: None,
                ..keyed(1)
            },
            Duration::ZERO,
        )
        .await
        .unwrap_err(),
        jobs.enqueue_debounced(&p, "bad:queue", &keyed(1), Duration::ZERO)
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
    let keys: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("*{p}*"))).await;
    assert!(keys.is_empty(), "{keys:?}");
    let partitions = jobs.partitions().await.unwrap();
    assert!(!partitions.contains(&p), "{partitions:?}");
}
