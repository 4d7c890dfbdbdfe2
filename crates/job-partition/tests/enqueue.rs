//! Enqueue, queue keys, scheduling, cancel of waiting jobs, pause, purge, dead set:
//! against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use wharf_job_partition::{CancelOutcome, Enqueued, JobState, Registry, Retention, Worker};

fn rec(n: u64) -> Record {
    Record {
        n,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_second_enqueue_with_a_queue_key_is_a_duplicate_while_the_first_waits() {
    let jobs = jobs().await;
    let p = partition("qkey");
    let job = Record {
        qkey: Some("report-7".into()),
        ..rec(1)
    };
    let first = jobs.enqueue(&p, "q", &job).await.unwrap();
    let second = jobs.enqueue(&p, "q", &job).await.unwrap();
    assert!(matches!(first, Enqueued::Queued(_)));
    assert_eq!(second, Enqueued::Duplicate(first.id().to_owned()));
}

#[tokio::test]
async fn a_queue_key_is_released_when_its_job_is_cancelled() {
    let jobs = jobs().await;
    let p = partition("qkey-cancel");
    let job = Record {
        qkey: Some("k".into()),
        ..rec(1)
    };
    let first = jobs.enqueue(&p, "q", &job).await.unwrap();
    assert_eq!(
        jobs.cancel(&p, first.id()).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let again = jobs.enqueue(&p, "q", &job).await.unwrap();
    assert!(matches!(again, Enqueued::Queued(id) if id != first.id()));
}

#[tokio::test]
async fn bulk_enqueue_keeps_order_and_flags_duplicates_within_the_batch() {
    let jobs = jobs().await;
    let p = partition("bulk");
    let mut batch: Vec<Record> = (0..1200).map(rec).collect();
    batch[5].qkey = Some("same".into());
    batch[900].qkey = Some("same".into());
    let out = jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    assert_eq!(out.len(), 1200);
    assert_eq!(out[900], Enqueued::Duplicate(out[5].id().to_owned()));
    let counts = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(counts.queued, 1199);
}

#[tokio::test]
async fn delayed_and_timed_jobs_wait_for_their_time() {
    let jobs = jobs().await;
    let p = partition("sched");
    register_client(&p, &jobs);
    let soon = jobs
        .enqueue_in(&p, "q", &rec(1), Duration::from_millis(600))
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_secs(3600);
    let later = jobs.enqueue_at(&p, "q", &rec(2), at).await.unwrap();
    assert_eq!(
        jobs.job(&p, later.id()).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    assert_eq!(jobs.counts(&p, "q").await.unwrap().scheduled, 2);

    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    let done = eventually("completed_total == 1", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 1
    })
    .await
    .is_ok();
    assert!(done, "the delayed job did not run after its delay");
    // When it started, against when it was due: both on Redis' clock, stored with the job.
    let (enqueued, due, started): (u64, u64, u64) = cmd(
        &jobs,
        redis::cmd("HMGET")
            .arg(format!("{{wharf:{p}}}:job:{}", soon.id()))
            .arg("enq_at")
            .arg("run_at")
            .arg("started_at"),
    )
    .await;
    assert_eq!(due, enqueued + 600);
    assert!(
        started >= due,
        "the delayed job started {} ms before its time",
        due - started
    );
    assert_eq!(
        jobs.counts(&p, "q").await.unwrap().scheduled,
        1,
        "the job for in an hour ran"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_finished_or_unknown_job_says_so() {
    let jobs = jobs().await;
    let p = partition("cancel-done");
    let id = jobs.enqueue(&p, "q", &rec(1)).await.unwrap();
    jobs.cancel(&p, id.id()).await.unwrap();
    assert_eq!(
        jobs.cancel(&p, id.id()).await.unwrap(),
        CancelOutcome::AlreadyFinished("cancelled".into())
    );
    assert_eq!(
        jobs.cancel(&p, "no-such-job").await.unwrap(),
        CancelOutcome::Unknown
    );
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_until_resumed() {
    let jobs = jobs().await;
    let p = partition("pause");
    register_client(&p, &jobs);
    jobs.pause(&p, "q").await.unwrap();
    jobs.enqueue_bulk(&p, "q", &(0..5).map(rec).collect::<Vec<_>>())
        .await
        .unwrap();
    // Due at once: the claim script moves it to the ready jobs before it checks the pause,
    // in the same atomic call, so seeing it moved proves a claim ran on the paused queue.
    jobs.enqueue_in(&p, "q", &rec(5), Duration::from_millis(1))
        .await
        .unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    eventually(
        "a claim on the paused queue (the due job moved to ready)",
        Duration::from_secs(5),
        || async { jobs.counts(&p, "q").await.unwrap().scheduled == 0 },
    )
    .await
    .unwrap();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert!(c.paused);
    assert_eq!(
        (c.queued, c.running, c.completed_total),
        (6, 0, 0),
        "a paused queue ran jobs"
    );
    jobs.resume(&p, "q").await.unwrap();
    eventually("completed_total == 6", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 6
    })
    .await
    .unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn purge_deletes_waiting_jobs_and_releases_their_keys() {
    let jobs = jobs().await;
    let p = partition("purge");
    let mut batch: Vec<Record> = (0..50).map(rec).collect();
    batch[0].qkey = Some("q0".into());
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    jobs.enqueue_in(&p, "q", &rec(99), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.purge(&p, "q").await.unwrap(), 51);
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.queued, c.scheduled), (0, 0));
    let again = jobs.enqueue(&p, "q", &batch[0]).await.unwrap();
    assert!(
        matches!(again, Enqueued::Queued(_)),
        "purge left the queue key locked"
    );
}

#[tokio::test]
async fn unknown_names_and_undecodable_arguments_go_to_the_dead_set_with_the_reason() {
    let jobs = jobs().await;
    let p = partition("dead");
    register_client(&p, &jobs);
    // Registered under another name: the worker does not know "record".
    let unknown = jobs.enqueue(&p, "q", &rec(1)).await.unwrap();
    // Known name, arguments of the wrong shape.
    let bad = jobs
        .enqueue(
            &p,
            "q",
            &Ordered {
                key: 1,
                seq: 1,
                sleep_ms: 0,
            },
        )
        .await
        .unwrap();
    let bad_key =
        wharf_job_partition::JobInfo::clone(&jobs.job(&p, bad.id()).await.unwrap().unwrap());
    let _: () = cmd(
        &jobs,
        redis::cmd("HSET")
            .arg(format!("{{wharf:{p}}}:job:{}", bad.id()))
            .arg("args")
            .arg("{\"key\":\"x\"}"),
    )
    .await;
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Ordered>())
        .queue(&p, "q", 2)
        .build()
        .unwrap()
        .start();
    assert!(
        eventually("dead == 2", Duration::from_secs(5), || async {
            jobs.counts(&p, "q").await.unwrap().dead == 2
        })
        .await
        .is_ok(),
        "the bad jobs did not reach the dead set"
    );
    w.shutdown().await;
    let dead = jobs.dead(&p, "q", 10).await.unwrap();
    let reason = |id: &str| {
        dead.iter()
            .find(|j| j.id == id)
            .unwrap()
            .error
            .clone()
            .unwrap()
    };
    assert!(reason(unknown.id()).contains("no job type named `record`"));
    assert!(
        reason(bad.id()).contains("do not decode"),
        "{}",
        reason(bad.id())
    );
    assert_eq!(bad_key.name, "ordered");
}

#[tokio::test]
async fn a_dead_job_can_be_re_enqueued_and_the_dead_set_purged() {
    let jobs = jobs().await;
    let p = partition("dead-retry");
    register_client(&p, &jobs);
    let a = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                fail_times: 1,
                attempts: Some(1),
                ..rec(1)
            },
        )
        .await
        .unwrap();
    let b = jobs
        .enqueue(
            &p,
            "q",
            &Record {
                fail_times: 9,
                attempts: Some(1),
                ..rec(2)
            },
        )
        .await
        .unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 2)
        .build()
        .unwrap()
        .start();
    eventually("dead == 2", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().dead == 2
    })
    .await
    .unwrap();
    // Attempts start again from 1: job a fails only its first attempt... so it fails again.
    // Re-enqueued with fresh attempts, it gets max_attempts (1) more: still dead.
    assert_eq!(
        jobs.retry_dead(&p, a.id()).await.unwrap(),
        Enqueued::Queued(a.id().to_owned())
    );
    eventually("dead_total == 3", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().dead_total == 3
    })
    .await
    .unwrap();
    w.shutdown().await;
    assert_eq!(jobs.purge_dead(&p, "q").await.unwrap(), 2);
    assert!(jobs.job(&p, b.id()).await.unwrap().is_none());
}

#[tokio::test]
async fn the_dead_set_and_finished_jobs_are_bounded_by_retention() {
    let jobs = jobs().await;
    let p = partition("retention");
    register_client(&p, &jobs);
    jobs.set_retention(
        &p,
        Retention {
            keep_finished: 10,
            keep_dead: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut batch: Vec<Record> = (0..40).map(rec).collect();
    for r in batch.iter_mut().skip(20) {
        r.fail_times = 9;
        r.attempts = Some(1);
    }
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 8)
        .build()
        .unwrap()
        .start();
    eventually(
        "20 completed and 20 dead",
        Duration::from_secs(10),
        || async {
            let c = jobs.counts(&p, "q").await.unwrap();
            c.completed_total == 20 && c.dead_total == 20
        },
    )
    .await
    .unwrap();
    w.shutdown().await;
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.finished_kept, c.dead), (10, 5));
    let keys: Vec<String> = cmd(
        &jobs,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:job:*")),
    )
    .await;
    assert_eq!(keys.len(), 15, "job hashes beyond retention were kept");
}

#[tokio::test]
async fn arguments_over_the_size_limit_are_refused_with_advice() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Big {
        blob: String,
    }
    impl wharf_job_partition::Job for Big {
        const NAME: &'static str = "big";
        async fn perform(
            self,
            _ctx: wharf_job_partition::JobContext,
        ) -> Result<(), wharf_job_partition::JobError> {
            Ok(())
        }
    }
    let jobs = jobs().await;
    let big = Big {
        blob: "x".repeat(wharf_job_partition::MAX_ARGS_BYTES),
    };
    let err = jobs
        .enqueue(&partition("big"), "q", &big)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pass a reference"), "{err}");
}

#[tokio::test]
async fn finished_jobs_older_than_retention_are_trimmed_on_an_idle_queue() {
    let jobs = jobs().await;
    let p = partition("retention-age");
    register_client(&p, &jobs);
    let keep_for = Duration::from_secs(2);
    jobs.set_retention(
        &p,
        Retention {
            keep_finished_for: keep_for,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    jobs.enqueue_bulk(&p, "q", &(0..3).map(rec).collect::<Vec<_>>())
        .await
        .unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    eventually(
        "the three jobs to complete",
        Duration::from_secs(5),
        || async { jobs.counts(&p, "q").await.unwrap().completed_total == 3 },
    )
    .await
    .unwrap();
    // Nothing finishes from now on: the queue is idle, its worker still serves it. The
    // jobs age out after `keep_for`; the worker's lease check (every second) trims them.
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(c.finished_kept, 3, "trimmed before their time: {c:?}");
    let trimmed = eventually(
        "the finished jobs to be trimmed by age",
        keep_for + Duration::from_secs(5),
        || async { jobs.counts(&p, "q").await.unwrap().finished_kept == 0 },
    )
    .await;
    w.shutdown().await;
    trimmed.unwrap();
    let keys: Vec<String> = cmd(
        &jobs,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:job:*")),
    )
    .await;
    assert!(keys.is_empty(), "job hashes kept past retention: {keys:?}");
}
