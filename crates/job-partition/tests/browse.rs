//! Browsing for an operator's console: pages per list, a bounded search, a job's record,
//! workers from their leases, execution keys and their waiters, and the console's actions
//! (delete, run now, retry every dead job), with typed errors for unknown names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use wharf_job_partition::{Deleted, Error, Filter, JobList, JobState, MAX_PAGE, RunNow, testing};

const LEASE: Duration = Duration::from_secs(30);

fn rec(n: u64) -> Record {
    Record {
        n,
        ..Default::default()
    }
}

fn keyed(n: u64, key: &str) -> Record {
    Record {
        n,
        xkey: Some(key.to_owned()),
        ..Default::default()
    }
}

async fn enqueue_n(jobs: &wharf_job_partition::Jobs, p: &str, q: &str, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(jobs.enqueue(p, q, &rec(i)).await.unwrap().id().to_owned());
    }
    ids
}

#[tokio::test]
async fn a_queue_list_pages_in_the_order_workers_take_jobs_and_counts_the_whole_list() {
    let jobs = jobs().await;
    let p = partition("browse-page");
    let ids = enqueue_n(&jobs, &p, "q", 7).await;

    let first = jobs.list(&p, "q", JobList::Queued, 0, 3).await.unwrap();
    let second = jobs.list(&p, "q", JobList::Queued, 3, 3).await.unwrap();
    let last = jobs.list(&p, "q", JobList::Queued, 6, 3).await.unwrap();

    let shown: Vec<String> = [first.clone(), second, last.clone()]
        .iter()
        .flat_map(|pg| pg.jobs.iter().map(|j| j.info.id.clone()))
        .collect();
    assert_eq!(shown, ids);
    assert_eq!((first.total, last.jobs.len()), (7, 1));
    assert!(
        first.jobs[0]
            .enqueued_at_ms
            .is_some_and(|t| t <= first.now_ms)
    );
}

#[tokio::test]
async fn a_page_never_holds_more_than_max_page_jobs() {
    let jobs = jobs().await;
    let p = partition("browse-max");
    let bulk: Vec<Record> = (0..(MAX_PAGE as u64 + 20)).map(rec).collect();
    jobs.enqueue_bulk(&p, "q", &bulk).await.unwrap();

    let page = jobs
        .list(&p, "q", JobList::Queued, 0, 10_000)
        .await
        .unwrap();

    assert_eq!(
        (page.jobs.len(), page.total),
        (MAX_PAGE, MAX_PAGE as u64 + 20)
    );
}

#[tokio::test]
async fn running_and_dead_lists_show_the_worker_lease_and_error() {
    let jobs = jobs().await;
    let p = partition("browse-states");
    let ids = enqueue_n(&jobs, &p, "q", 2).await;
    let claimed = testing::claim(&jobs, &p, "q", 2, LEASE, "w-1")
        .await
        .unwrap();
    testing::fail(&jobs, &p, &claimed[1].0, &claimed[1].1)
        .await
        .unwrap();

    let running = jobs.list(&p, "q", JobList::Running, 0, 10).await.unwrap();
    let dead = jobs.list(&p, "q", JobList::Dead, 0, 10).await.unwrap();

    let r = &running.jobs[0];
    assert_eq!(r.info.id, ids[0]);
    assert_eq!(r.worker.as_deref(), Some("w-1"));
    assert!(r.lease_expires_at_ms.is_some_and(|t| t > running.now_ms));
    assert!(r.started_at_ms.is_some());
    let d = &dead.jobs[0];
    assert_eq!(
        (d.info.id.as_str(), d.info.state),
        (ids[1].as_str(), JobState::Dead)
    );
    assert_eq!(d.info.error.as_deref(), Some("test failure"));
    assert!(d.finished_at_ms.is_some() && d.worker.is_none());
}

#[tokio::test]
async fn search_finds_jobs_by_execution_key_and_by_text_in_arguments() {
    let jobs = jobs().await;
    let p = partition("browse-search");
    for i in 0..30 {
        let key = if i % 10 == 3 { "acct:7" } else { "acct:1" };
        jobs.enqueue(&p, "q", &keyed(1000 + i, key)).await.unwrap();
    }

    let by_key = jobs
        .search(
            &p,
            "q",
            JobList::Queued,
            &Filter::new().execution_key("acct:7"),
            0,
            10,
        )
        .await
        .unwrap();
    let by_text = jobs
        .search(
            &p,
            "q",
            JobList::Queued,
            &Filter::new().args_contain("\"n\":1017"),
            0,
            10,
        )
        .await
        .unwrap();

    let ns: Vec<&str> = by_key.jobs.iter().map(|j| j.info.args.as_str()).collect();
    assert_eq!(by_key.jobs.len(), 3, "{ns:?}");
    assert!(ns.iter().all(|a| a.contains("acct:7")));
    assert_eq!((by_key.scanned, by_key.next_offset), (30, None));
    assert_eq!(by_text.jobs.len(), 1);
    assert!(by_text.jobs[0].info.args.contains("1017"));
}

#[tokio::test]
async fn a_search_stopped_by_its_page_says_where_to_continue() {
    let jobs = jobs().await;
    let p = partition("browse-cont");
    enqueue_n(&jobs, &p, "q", 10).await;

    let first = jobs
        .search(
            &p,
            "q",
            JobList::Queued,
            &Filter::new().name("record"),
            0,
            4,
        )
        .await
        .unwrap();
    let rest = jobs
        .search(
            &p,
            "q",
            JobList::Queued,
            &Filter::new().name("record"),
            first.next_offset.unwrap(),
            10,
        )
        .await
        .unwrap();

    assert_eq!((first.jobs.len(), first.next_offset), (4, Some(4)));
    assert_eq!((rest.jobs.len(), rest.next_offset), (6, None));
}

#[tokio::test]
async fn unknown_partitions_queues_and_jobs_are_typed_errors() {
    let jobs = jobs().await;
    let p = partition("browse-unknown");
    enqueue_n(&jobs, &p, "q", 1).await;

    let no_partition = jobs
        .list("no-such-partition-x", "q", JobList::Queued, 0, 10)
        .await;
    let no_queue = jobs.list(&p, "nope", JobList::Queued, 0, 10).await;
    let no_job = jobs.job_record(&p, "no-such-id").await;
    let no_job_delete = jobs.delete(&p, "no-such-id").await;

    assert!(
        matches!(no_partition, Err(Error::UnknownPartition { .. })),
        "{no_partition:?}"
    );
    assert!(
        matches!(no_queue, Err(Error::UnknownQueue { .. })),
        "{no_queue:?}"
    );
    assert!(
        matches!(no_job, Err(Error::UnknownJob { .. })),
        "{no_job:?}"
    );
    assert!(
        matches!(no_job_delete, Err(Error::UnknownJob { .. })),
        "{no_job_delete:?}"
    );
}

#[tokio::test]
async fn workers_are_seen_through_their_leases_with_the_jobs_each_runs() {
    let jobs = jobs().await;
    let p = partition("browse-workers");
    enqueue_n(&jobs, &p, "a", 2).await;
    enqueue_n(&jobs, &p, "b", 1).await;
    testing::claim(&jobs, &p, "a", 2, LEASE, "w-a")
        .await
        .unwrap();
    let b = testing::claim(&jobs, &p, "b", 1, LEASE, "w-b")
        .await
        .unwrap();

    let workers = jobs.workers(&p).await.unwrap();

    let seen: Vec<(&str, usize)> = workers
        .iter()
        .map(|w| (w.worker.as_str(), w.jobs.len()))
        .collect();
    assert_eq!(seen, [("w-a", 2), ("w-b", 1)]);
    assert_eq!(workers[1].jobs[0].0, "b");
    assert_eq!(workers[1].jobs[0].1.id, b[0].0);
    assert!(!workers[0].stalled);
}

#[tokio::test]
async fn execution_keys_show_their_holder_and_waiters_in_order() {
    let jobs = jobs().await;
    let p = partition("browse-xkeys");
    let holder = jobs
        .enqueue(&p, "q", &keyed(1, "k1"))
        .await
        .unwrap()
        .id()
        .to_owned();
    let w1 = jobs
        .enqueue(&p, "q", &keyed(2, "k1"))
        .await
        .unwrap()
        .id()
        .to_owned();
    let w2 = jobs
        .enqueue(&p, "q", &keyed(3, "k1"))
        .await
        .unwrap()
        .id()
        .to_owned();
    // One claim takes the holder and parks the two others behind it.
    testing::claim(&jobs, &p, "q", 3, LEASE, "w").await.unwrap();

    let keys = jobs.execution_keys(&p, 100).await.unwrap();

    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].key, "k1");
    assert_eq!(keys[0].holder.as_deref(), Some(holder.as_str()));
    assert_eq!(
        (keys[0].waiting, keys[0].waiters.clone()),
        (2, vec![w1, w2])
    );
}

#[tokio::test]
async fn run_now_moves_a_scheduled_job_to_the_ready_list_and_refuses_others() {
    let jobs = jobs().await;
    let p = partition("browse-runnow");
    let later = jobs
        .enqueue_in(&p, "q", &rec(1), Duration::from_secs(3600))
        .await
        .unwrap()
        .id()
        .to_owned();
    let ready = jobs
        .enqueue(&p, "q", &rec(2))
        .await
        .unwrap()
        .id()
        .to_owned();

    let moved = jobs.run_now(&p, &later).await.unwrap();
    let refused = jobs.run_now(&p, &ready).await.unwrap();

    assert_eq!(moved, RunNow::Queued);
    assert_eq!(refused, RunNow::NotScheduled(JobState::Queued));
    let queued = jobs.list(&p, "q", JobList::Queued, 0, 10).await.unwrap();
    let order: Vec<&str> = queued.jobs.iter().map(|j| j.info.id.as_str()).collect();
    assert_eq!(order, [ready.as_str(), later.as_str()]);
    assert_eq!(jobs.counts(&p, "q").await.unwrap().scheduled, 0);
}

#[tokio::test]
async fn delete_removes_a_waiting_job_and_hands_its_execution_key_on_but_spares_running_ones() {
    let jobs = jobs().await;
    let p = partition("browse-delete");
    let first = jobs
        .enqueue(&p, "q", &keyed(1, "k"))
        .await
        .unwrap()
        .id()
        .to_owned();
    let second = jobs
        .enqueue(&p, "q", &keyed(2, "k"))
        .await
        .unwrap()
        .id()
        .to_owned();
    let claimed = testing::claim(&jobs, &p, "q", 2, LEASE, "w").await.unwrap();
    assert_eq!(claimed.len(), 1);

    let spared = jobs.delete(&p, &first).await.unwrap();
    let deleted = jobs.delete(&p, &second).await.unwrap();

    assert_eq!((spared, deleted), (Deleted::Running, Deleted::Deleted));
    assert!(jobs.job(&p, &second).await.unwrap().is_none());
    let key = jobs.execution_key(&p, "k").await.unwrap();
    assert_eq!(
        (key.holder.as_deref(), key.waiting),
        (Some(first.as_str()), 0)
    );
    assert_eq!(jobs.counts(&p, "q").await.unwrap().parked, 0);
}

#[tokio::test]
async fn retry_all_dead_puts_every_dead_job_back_in_its_queue() {
    let jobs = jobs().await;
    let p = partition("browse-retryall");
    enqueue_n(&jobs, &p, "q", 5).await;
    for (id, token) in testing::claim(&jobs, &p, "q", 5, LEASE, "w").await.unwrap() {
        testing::fail(&jobs, &p, &id, &token).await.unwrap();
    }
    assert_eq!(jobs.counts(&p, "q").await.unwrap().dead, 5);

    let done = jobs.retry_all_dead(&p, "q").await.unwrap();

    assert_eq!((done.retried, done.duplicates), (5, 0));
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.dead, c.queued), (0, 5));
}

#[tokio::test]
async fn retry_all_dead_leaves_a_job_whose_queue_key_is_taken_dead() {
    let jobs = jobs().await;
    let p = partition("browse-retrydup");
    let mut r = rec(1);
    r.qkey = Some("only-one".into());
    jobs.enqueue(&p, "q", &r).await.unwrap();
    let (id, token) = testing::claim(&jobs, &p, "q", 1, LEASE, "w")
        .await
        .unwrap()
        .remove(0);
    testing::fail(&jobs, &p, &id, &token).await.unwrap();
    jobs.enqueue(&p, "q", &r).await.unwrap();

    let done = jobs.retry_all_dead(&p, "q").await.unwrap();

    assert_eq!((done.retried, done.duplicates), (0, 1));
    assert_eq!(jobs.counts(&p, "q").await.unwrap().dead, 1);
}
