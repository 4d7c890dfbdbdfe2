//! Finished jobs recorded in batches (one `complete` script call for several jobs, as a
//! worker sends the jobs of a queue that finish together): each job stays fenced by its own
//! lease token, and what Redis holds afterwards is what one call per job left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use wharf_job_partition::{JobState, Registry, Retention, Worker, testing};

const WAIT: Duration = Duration::from_secs(10);
const LEASE: Duration = Duration::from_secs(30);

fn rec(n: u64, xkey: Option<&str>) -> Record {
    Record {
        n,
        xkey: xkey.map(str::to_owned),
        ..Default::default()
    }
}

async fn enqueue(jobs: &wharf_job_partition::Jobs, p: &str, q: &str, r: &Record) -> String {
    jobs.enqueue(p, q, r).await.unwrap().id().to_owned()
}

#[tokio::test]
async fn a_stale_token_in_a_batch_is_refused_while_the_others_complete() {
    let jobs = jobs().await;
    let p = partition("batch-stale");
    let a = enqueue(&jobs, &p, "q", &rec(1, None)).await;
    // A's first lease expires and it is claimed again: its first token is stale.
    let first = testing::claim(&jobs, &p, "q", 1, Duration::from_millis(200), "w1")
        .await
        .unwrap();
    assert_eq!(first[0].0, a);
    let stale = first[0].1.clone();
    eventually("A's lease to expire and A to be requeued", WAIT, || async {
        testing::reap(&jobs, &p, "q").await.unwrap() == 1
    })
    .await
    .unwrap();
    let b = enqueue(&jobs, &p, "q", &rec(2, None)).await;
    let c = enqueue(&jobs, &p, "q", &rec(3, None)).await;
    let d = enqueue(&jobs, &p, "other", &rec(4, None)).await;
    let claimed = testing::claim(&jobs, &p, "q", 3, LEASE, "w2")
        .await
        .unwrap();
    let token = |id: &str| claimed.iter().find(|c| c.0 == id).unwrap().1.clone();
    let (ta, tb, tc) = (token(&a), token(&b), token(&c));
    assert_ne!(ta, stale);
    let td = testing::claim(&jobs, &p, "other", 1, LEASE, "w2")
        .await
        .unwrap()[0]
        .1
        .clone();
    let recorded = testing::complete_many(
        &jobs,
        &p,
        &[
            (&a, &stale, Some("\"stale\"")),
            (&b, &tb, None),
            (&c, &tc, Some("\"c\"")),
            // The same job twice: it is recorded once.
            (&b, &tb, None),
            (&d, &td, None),
        ],
    )
    .await
    .unwrap();
    assert_eq!(recorded, [false, true, true, false, true]);
    // A still runs under its new lease, untouched.
    let ja = jobs.job(&p, &a).await.unwrap().unwrap();
    assert_eq!((ja.state, ja.result), (JobState::Running, None));
    let counts = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(
        (counts.completed_total, counts.running, counts.finished_kept),
        (2, 1, 2)
    );
    let other = jobs.counts(&p, "other").await.unwrap();
    assert_eq!((other.completed_total, other.running), (1, 0));
    let outcome = jobs.wait_for(&p, &c, Duration::ZERO).await.unwrap();
    assert_eq!(outcome.result::<String>().unwrap().as_deref(), Some("c"));
    assert_eq!(
        jobs.job(&p, &b).await.unwrap().unwrap().state,
        JobState::Completed
    );
    // A's current token still completes it.
    assert_eq!(
        testing::complete_many(&jobs, &p, &[(&a, &ta, None)])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(jobs.counts(&p, "q").await.unwrap().completed_total, 3);
}

#[tokio::test]
async fn a_batch_hands_each_execution_key_to_its_next_job() {
    let jobs = jobs().await;
    let p = partition("batch-xkey");
    let x1 = enqueue(&jobs, &p, "q", &rec(1, Some("a"))).await;
    let y1 = enqueue(&jobs, &p, "q", &rec(2, Some("b"))).await;
    let x2 = enqueue(&jobs, &p, "q", &rec(3, Some("a"))).await;
    let y2 = enqueue(&jobs, &p, "q", &rec(4, Some("b"))).await;
    let claimed = testing::claim(&jobs, &p, "q", 4, LEASE, "w").await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(ids, [x1.as_str(), y1.as_str()]);
    assert_eq!(jobs.counts(&p, "q").await.unwrap().parked, 2);
    let done = without_results(&claimed);
    assert_eq!(
        testing::complete_many(&jobs, &p, &done).await.unwrap(),
        [true, true]
    );
    let counts = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((counts.parked, counts.queued), (0, 2));
    let next = testing::claim(&jobs, &p, "q", 4, LEASE, "w").await.unwrap();
    let ids: Vec<&str> = next.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(ids, [x2.as_str(), y2.as_str()]);
}

#[tokio::test]
async fn a_batch_keeps_finished_jobs_within_retention() {
    let jobs = jobs().await;
    let p = partition("batch-keep");
    jobs.set_retention(
        &p,
        Retention {
            keep_finished: 2,
            ..Retention::default()
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(enqueue(&jobs, &p, "q", &rec(n, None)).await);
    }
    let claimed = testing::claim(&jobs, &p, "q", 5, LEASE, "w").await.unwrap();
    let done = without_results(&claimed);
    assert_eq!(
        testing::complete_many(&jobs, &p, &done).await.unwrap(),
        [true; 5]
    );
    let counts = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((counts.completed_total, counts.finished_kept), (5, 2));
    let mut kept = 0;
    for id in &ids {
        if let Some(j) = jobs.job(&p, id).await.unwrap() {
            assert_eq!(j.state, JobState::Completed);
            kept += 1;
        }
    }
    // The three others' records were deleted with their place in the finished set.
    assert_eq!(kept, 2);
}

#[tokio::test]
async fn a_worker_records_a_lone_job_at_once_and_many_jobs_each_once() {
    let jobs = jobs().await;
    let p = partition("batch-worker");
    register_client(&p, &jobs);
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 50)
        .lease(Duration::from_secs(5))
        .build()
        .unwrap()
        .start();
    // Nothing else finishes: the lone job's outcome is not held back waiting for company.
    let lone = enqueue(&jobs, &p, "q", &rec(0, None)).await;
    let t0 = Instant::now();
    jobs.wait_for(&p, &lone, WAIT).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a lone job took {:?} from enqueue to its recorded outcome",
        t0.elapsed()
    );
    // Many finish together: each is recorded once, in batches.
    let batch: Vec<Record> = (1..=300).map(|n| rec(n, None)).collect();
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    eventually("301 jobs to complete", Duration::from_secs(60), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total >= 301
    })
    .await
    .unwrap();
    w.shutdown().await;
    let counts = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(
        (
            counts.completed_total,
            counts.running,
            counts.queued,
            counts.dead,
            counts.lease_expired_total
        ),
        (301, 0, 0, 0, 0)
    );
    let ran = runs(&p);
    assert_eq!(ran.len(), 301, "each job ran once");
}

/// Claimed jobs as `complete_many` entries: (id, token, no result).
fn without_results(claimed: &[(String, String)]) -> Vec<(&str, &str, Option<&str>)> {
    claimed
        .iter()
        .map(|(id, t)| (id.as_str(), t.as_str(), None))
        .collect()
}
