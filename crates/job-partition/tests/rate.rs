//! Rate limits against a real Redis: starts per window never above the limit with several
//! workers, groups limited apart, rate-limited jobs visible, bad input that writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use wharf_job_partition::{
    Error, Job, JobContext, JobError, JobState, Jobs, RateLimit, Registry, Worker, WorkerHandle,
};

/// A job that only counts as a start (its group is its rate group).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Hit {
    group: Option<String>,
}

impl Job for Hit {
    const NAME: &'static str = "hit";

    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }

    fn rate_group(&self) -> Option<String> {
        self.group.clone()
    }
}

async fn worker(p: &str, concurrency: usize) -> WorkerHandle {
    // Each worker with its own connection, as in separate processes.
    Worker::builder(common::jobs().await, Registry::new().register::<Hit>())
        .queue(p, "q", concurrency)
        .lease(Duration::from_secs(3))
        .build()
        .unwrap()
        .start()
}

async fn enqueue(jobs: &Jobs, p: &str, group: Option<&str>, n: usize) -> Vec<String> {
    let hit = Hit {
        group: group.map(str::to_owned),
    };
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(jobs.enqueue(p, "q", &hit).await.unwrap().id().to_owned());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_per_window_never_exceed_the_limit_with_two_workers() {
    let p = partition("rate2w");
    let jobs = jobs().await;
    let (max, window) = (5, Duration::from_millis(500));
    jobs.set_rate_limit(&p, "q", Some(RateLimit::new(max, window).unwrap()))
        .await
        .unwrap();
    let ids = enqueue(&jobs, &p, None, 30).await;
    let workers = [worker(&p, 4).await, worker(&p, 4).await];

    let seen_limited = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    eventually("30 jobs completed", Duration::from_secs(30), || {
        let (jobs, p, seen) = (jobs.clone(), p.clone(), seen_limited.clone());
        async move {
            let c = jobs.counts(&p, "q").await.unwrap();
            seen.fetch_max(c.rate_limited, std::sync::atomic::Ordering::Relaxed);
            c.completed_total == 30
        }
    })
    .await
    .unwrap();
    for w in workers {
        w.shutdown().await;
    }

    let starts = started_at(&jobs, &p, &ids).await;
    let most = max_per_window(starts, window.as_millis() as i64);
    println!("rate limit {max}/{window:?}, 2 workers x 4 slots: most starts in any window {most}");
    assert_eq!(most, max as usize, "the limit is reached and never passed");
    assert!(
        seen_limited.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "rate-limited jobs were never visible in counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_limited_apart_and_waiting_jobs_are_visible_and_cancellable() {
    let p = partition("rategrp");
    let jobs = jobs().await;
    // A long window: what is limited stays limited for the whole test.
    let limit = RateLimit::new(2, Duration::from_secs(60)).unwrap();
    jobs.set_rate_limit(&p, "q", Some(limit)).await.unwrap();
    let a = enqueue(&jobs, &p, Some("customer-a"), 5).await;
    let b = enqueue(&jobs, &p, Some("customer-b"), 3).await;
    enqueue(&jobs, &p, None, 1).await;
    let w = worker(&p, 4).await;

    // 2 of a, 2 of b and the one without a group start; 3 of a and 1 of b wait.
    eventually(
        "5 started, 4 rate-limited",
        Duration::from_secs(15),
        || async {
            let c = jobs.counts(&p, "q").await.unwrap();
            c.completed_total == 5 && c.rate_limited == 4 && c.queued == 0
        },
    )
    .await
    .unwrap();
    let limited: Vec<&String> = a[2..].iter().chain(&b[2..]).collect();
    for id in &limited {
        let state = jobs.job(&p, id).await.unwrap().unwrap().state;
        assert_eq!(state, JobState::RateLimited, "{id}");
    }
    // They wait for their window, not for a poll: their turn is about a minute away.
    let turns: Vec<(String, f64)> = cmd(
        &jobs,
        redis::cmd("ZRANGE")
            .arg(format!("{{wharf:{p}}}:q:q:limited"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    )
    .await;
    let now: (String, String) = cmd(&jobs, &mut redis::cmd("TIME")).await;
    let now_ms = now.0.parse::<f64>().unwrap() * 1000.0;
    assert!(
        turns.iter().all(|(_, at)| at - now_ms > 50_000.0),
        "{turns:?}"
    );

    // A rate-limited job can be cancelled; lifting the limit starts the others.
    jobs.cancel(&p, limited[0]).await.unwrap();
    assert_eq!(jobs.counts(&p, "q").await.unwrap().rate_limited, 3);
    jobs.set_rate_limit(&p, "q", None).await.unwrap();
    eventually("the rest completed", Duration::from_secs(15), || async {
        let c = jobs.counts(&p, "q").await.unwrap();
        c.completed_total == 8 && c.rate_limited == 0
    })
    .await
    .unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn bad_rate_limits_are_typed_errors_and_write_nothing() {
    let p = partition("ratebad");
    let jobs = jobs().await;
    let keys = || async {
        let mut k: Vec<String> =
            cmd(&jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:*"))).await;
        k.sort();
        k
    };
    let before = keys().await;
    for (max, window) in [
        (0, Duration::from_secs(1)),
        (5, Duration::ZERO),
        (5, Duration::from_micros(999)),
        (5, Duration::from_secs(8 * 24 * 3600)),
        (wharf_job_partition::MAX_RATE + 1, Duration::from_secs(1)),
    ] {
        let err = RateLimit::new(max, window).unwrap_err();
        assert!(
            matches!(err, Error::InvalidRateLimit { .. }),
            "{max}/{window:?}: {err}"
        );
        assert!(err.to_string().contains("invalid rate limit"), "{err}");
    }
    let ok = RateLimit::new(5, Duration::from_secs(1)).unwrap();
    let err = jobs
        .set_rate_limit(&p, "bad:queue", Some(ok))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert_eq!(keys().await, before);
}
