//! Priorities against a real Redis: order across two workers under a global limit, with
//! delays, and with execution keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use wharf_job_partition::{
    Error, Job, JobContext, JobError, JobState, Jobs, MAX_PRIORITY, Registry, Worker, WorkerHandle,
};

#[derive(Default)]
struct Order(Mutex<Vec<String>>);

#[derive(Serialize, Deserialize, Clone, Default)]
struct Step {
    name: String,
    priority: u8,
    xkey: Option<String>,
    sleep_ms: u64,
}

impl Job<Order> for Step {
    const NAME: &'static str = "step";

    async fn perform(self, ctx: JobContext<Order>) -> Result<(), JobError> {
        ctx.state().0.lock().unwrap().push(self.name.clone());
        tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        Ok(())
    }
    fn priority(&self) -> u8 {
        self.priority
    }
    fn execution_key(&self) -> Option<String> {
        self.xkey.clone()
    }
}

fn step(name: &str, priority: u8) -> Step {
    Step {
        name: name.into(),
        priority,
        ..Default::default()
    }
}

fn worker(jobs: &Jobs, p: &str, order: Arc<Order>) -> WorkerHandle {
    Worker::builder(
        jobs.clone(),
        Registry::with_shared_state(order).register::<Step>(),
    )
    .queue(p, "q", 4)
    .lease(Duration::from_secs(3))
    .poll_interval(Duration::from_millis(20))
    .build()
    .unwrap()
    .start()
}

const WAIT: Duration = Duration::from_secs(10);

async fn run_all(jobs: &Jobs, p: &str, order: &Arc<Order>, n: usize) -> Vec<String> {
    eventually("every job to run", WAIT, || async {
        order.0.lock().unwrap().len() == n
            && jobs.counts(p, "q").await.unwrap().completed_total == n as u64
    })
    .await
    .unwrap();
    order.0.lock().unwrap().clone()
}

#[tokio::test]
async fn ready_jobs_start_by_priority_then_in_enqueue_order_across_two_workers() {
    let (a, b) = (jobs().await, jobs().await);
    let p = partition("prio");
    // One at a time across both workers, so the start order is the claim order.
    a.set_limit(&p, "q", Some(1)).await.unwrap();
    let mut want = Vec::new();
    for i in 0..4u8 {
        for prio in [3u8, 1, 0, 2] {
            let name = format!("p{prio}-{i}");
            a.enqueue(&p, "q", &step(&name, prio)).await.unwrap();
            want.push((prio, i, name));
        }
    }
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, _, n)| n).collect();
    let order = Arc::new(Order::default());
    let (w1, w2) = (worker(&a, &p, order.clone()), worker(&b, &p, order.clone()));
    assert_eq!(run_all(&a, &p, &order, want.len()).await, want);
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn a_delayed_urgent_job_starts_before_the_ready_jobs_of_a_lower_priority() {
    let jobs = jobs().await;
    let p = partition("priodelay");
    jobs.set_limit(&p, "q", Some(0)).await.unwrap(); // nothing starts yet
    for i in 0..3 {
        jobs.enqueue(&p, "q", &step(&format!("low-{i}"), 3))
            .await
            .unwrap();
    }
    let urgent = jobs
        .enqueue_in(&p, "q", &step("urgent", 0), Duration::from_millis(200))
        .await
        .unwrap();
    let order = Arc::new(Order::default());
    let w = worker(&jobs, &p, order.clone());
    // The worker's claims move the due job to the ready jobs even while the limit is 0.
    eventually("the delayed job to be due and queued", WAIT, || async {
        jobs.job(&p, urgent.id()).await.unwrap().unwrap().state == JobState::Queued
    })
    .await
    .unwrap();
    jobs.set_limit(&p, "q", Some(1)).await.unwrap();
    assert_eq!(
        run_all(&jobs, &p, &order, 4).await,
        ["urgent", "low-0", "low-1", "low-2"]
    );
    w.shutdown().await;
}

#[tokio::test]
async fn jobs_waiting_for_an_execution_key_take_it_by_priority() {
    let jobs = jobs().await;
    let p = partition("prioxkey");
    let keyed = |name: &str, prio: u8, sleep_ms: u64| Step {
        xkey: Some("account:1".into()),
        sleep_ms,
        ..step(name, prio)
    };
    let order = Arc::new(Order::default());
    let w = worker(&jobs, &p, order.clone());
    let first = jobs
        .enqueue(&p, "q", &keyed("first", 3, 500))
        .await
        .unwrap();
    eventually("the first job to run", WAIT, || async {
        jobs.job(&p, first.id()).await.unwrap().unwrap().state == JobState::Running
    })
    .await
    .unwrap();
    for (name, prio) in [("late-low", 3), ("later-high", 0), ("last-mid", 1)] {
        jobs.enqueue(&p, "q", &keyed(name, prio, 0)).await.unwrap();
    }
    eventually("the three to wait for the key", WAIT, || async {
        jobs.counts(&p, "q").await.unwrap().parked == 3
    })
    .await
    .unwrap();
    assert_eq!(
        run_all(&jobs, &p, &order, 4).await,
        ["first", "later-high", "last-mid", "late-low"]
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_priority_out_of_range_is_a_typed_error_that_writes_nothing() {
    let jobs = jobs().await;
    let p = partition("priobad");
    let err = jobs
        .enqueue(&p, "q", &step("x", MAX_PRIORITY + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = jobs
        .enqueue_bulk(&p, "q", &[step("ok", 0), step("bad", 200)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let keys: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("*{p}*"))).await;
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_job_shows_its_priority() {
    let jobs = jobs().await;
    let p = partition("prioshow");
    let id = jobs.enqueue(&p, "q", &step("x", 2)).await.unwrap();
    assert_eq!(jobs.job(&p, id.id()).await.unwrap().unwrap().priority, 2);
}
