//! The same guarantees on a real 3-shard Redis Cluster (wharf-testkit's `RedisCluster`:
//! `redis-server --cluster-enabled yes` nodes joined with `redis-cli --cluster create`): each
//! partition's keys share a hash tag, so every script runs on one shard. Schedules (each tick
//! once with two schedulers) and rate limits (never more starts per window with two workers)
//! included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Callback, Gather, Record, Step, eventually, flow_registry, max_per_window, partition,
    register_client, started_at,
};
use wharf_job_partition::{
    Batch, CancelOutcome, CancellationToken, Config, Debounced, Enqueued, Flow, JobOutcome,
    JobState, Jobs, RateLimit, Registry, Schedule, Scheduler, Worker,
};
use wharf_testkit::RedisCluster;

#[tokio::test]
async fn partitions_on_a_redis_cluster_keep_queue_keys_execution_keys_and_cancellation() {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster (run scripts/install)");
    let jobs = Jobs::connect(Config::cluster(cluster.urls()))
        .await
        .unwrap();
    let parts: Vec<String> = (0..4).map(|_| partition("cluster")).collect();
    for p in &parts {
        register_client(p, &jobs);
        let batch: Vec<Record> = (0..50)
            .map(|n| Record {
                n,
                xkey: Some(format!("x{}", n % 3)),
                ..Default::default()
            })
            .collect();
        jobs.enqueue_bulk(p, "q", &batch).await.unwrap();
        let dup = Record {
            qkey: Some("once".into()),
            ..Default::default()
        };
        let first = jobs.enqueue(p, "held", &dup).await.unwrap();
        assert_eq!(
            jobs.enqueue(p, "held", &dup).await.unwrap(),
            Enqueued::Duplicate(first.id().to_owned())
        );
        assert_eq!(
            jobs.cancel(p, first.id()).await.unwrap(),
            CancelOutcome::Cancelled
        );
    }
    let mut builder = Worker::builder(jobs.clone(), Registry::new().register::<Record>());
    for p in &parts {
        builder = builder.queue(p, "q", 8);
    }
    let w = builder.build().unwrap().start();
    for p in &parts {
        let done = eventually("completed_total == 50", Duration::from_secs(30), || async {
            jobs.counts(p, "q").await.unwrap().completed_total == 50
        })
        .await
        .is_ok();
        assert!(
            done,
            "partition {p}: {:?}",
            jobs.counts(p, "q").await.unwrap()
        );
    }
    w.shutdown().await;
    let listed = jobs.partitions().await.unwrap();
    assert!(parts.iter().all(|p| listed.contains(p)));
}

#[tokio::test]
async fn waiting_for_a_job_and_debouncing_work_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster (run scripts/install)");
    let jobs = Jobs::connect(Config::cluster(cluster.urls()))
        .await
        .unwrap();
    let p = partition("clusterwait");
    register_client(&p, &jobs);
    let keyed = Record {
        qkey: Some("debounced".into()),
        ..Default::default()
    };
    let first = jobs
        .enqueue_debounced(&p, "q", &keyed, Duration::ZERO)
        .await
        .unwrap();
    let second = jobs
        .enqueue_debounced(&p, "q", &keyed, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        second,
        Debounced::Replaced {
            id: second.id().to_owned(),
            replaced: first.id().to_owned()
        }
    );
    // The waiters block (on connections of their own) before any worker runs.
    let (j, p2, id) = (jobs.clone(), p.clone(), second.id().to_owned());
    let waiter = tokio::spawn(async move { j.wait_for(&p2, &id, Duration::from_secs(30)).await });
    assert_eq!(
        jobs.wait_for(&p, first.id(), Duration::from_secs(5))
            .await
            .unwrap(),
        JobOutcome::Cancelled
    );
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 2)
        .build()
        .unwrap()
        .start();
    let outcome = waiter.await.unwrap().unwrap();
    assert!(
        matches!(outcome, JobOutcome::Completed { .. }),
        "{outcome:?}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_flow_and_a_batch_with_members_in_other_partitions_run_their_parent_and_callback_once_on_a_redis_cluster()
 {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster (run scripts/install)");
    let jobs = Jobs::connect(Config::cluster(cluster.urls()))
        .await
        .unwrap();
    // Four partitions: every member is in another hash slot than its flow (no one script
    // could reach both), and with 3 shards most likely on another shard.
    let parts: Vec<String> = (0..4).map(|_| partition("clusterflow")).collect();
    for p in &parts {
        register_client(p, &jobs);
    }
    let home = &parts[0];
    let flow = (1..4u64).fold(Flow::new(&Gather { tag: "cf".into() }), |f, n| {
        f.child(
            &parts[n as usize],
            "a",
            &Step {
                n,
                ..Default::default()
            },
        )
    });
    let f = jobs.enqueue_flow(home, "parents", flow).await.unwrap();
    let batch = (1..4u64)
        .fold(Batch::new(), |b, n| {
            b.job(
                &parts[n as usize],
                "a",
                &Step {
                    n: n + 10,
                    ..Default::default()
                },
            )
        })
        .on_success("parents", &Callback { tag: "cb".into() });
    let b = jobs.enqueue_batch(home, batch).await.unwrap();
    let mut builder = Worker::builder(jobs.clone(), flow_registry());
    for p in &parts {
        builder = builder.queue(p, "a", 4).queue(p, "parents", 2);
    }
    let w = builder.build().unwrap().start();
    for id in [&f.parent, b.on_success.as_ref().unwrap()] {
        eventually(
            "the parent and the callback ran",
            Duration::from_secs(30),
            || async {
                jobs.job(home, id).await.unwrap().map(|j| j.state) == Some(JobState::Completed)
            },
        )
        .await
        .unwrap();
    }
    w.shutdown().await;
    let runs = |key: &'static str, tag: &'static str| {
        let (jobs, home) = (jobs.clone(), home.clone());
        async move {
            let v = jobs
                .raw(redis::cmd("HGET").arg(format!("{{{home}}}:{key}")).arg(tag))
                .await
                .unwrap();
            let n: Option<i64> = redis::FromRedisValue::from_redis_value(v).unwrap();
            n.unwrap_or(0)
        }
    };
    assert_eq!(runs("parent_runs", "cf").await, 1);
    assert_eq!(runs("callback_runs", "cb").await, 1);
    let v = jobs
        .raw(redis::cmd("GET").arg(format!("{{{home}}}:gathered:cf")))
        .await
        .unwrap();
    let seen: String = redis::FromRedisValue::from_redis_value(v).unwrap();
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["results"].as_object().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_fire_every_tick_once_with_two_schedulers_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster (run scripts/install)");
    let connect = || async {
        Jobs::connect(Config::cluster(cluster.urls()))
            .await
            .unwrap()
    };
    let jobs = connect().await;
    // Several partitions, so that their schedules most likely live on different shards.
    let parts: Vec<String> = (0..3).map(|_| partition("clustersched")).collect();
    let every = Schedule::every(Duration::from_millis(200)).unwrap();
    let mut first = Vec::new();
    for p in &parts {
        register_client(p, &jobs);
        jobs.schedule(p, "i", "interval", &every, &Record::default())
            .await
            .unwrap();
        let info = jobs.schedules(p).await.unwrap();
        first.push(ms(info[0].next_at.unwrap()));
    }
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        // Each scheduler with its own connection, as in separate processes.
        let s = Scheduler::new(connect().await, parts.clone())
            .unwrap()
            .poll_interval(Duration::from_millis(20));
        runs.push(tokio::spawn(s.run(stop.child_token())));
    }
    for p in &parts {
        eventually("5 ticks", Duration::from_secs(20), || async {
            jobs.counts(p, "i").await.unwrap().queued >= 5
        })
        .await
        .unwrap();
    }
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }
    for (p, first) in parts.iter().zip(first) {
        let info = jobs.schedules(p).await.unwrap();
        let last = ms(info[0].last_at.unwrap());
        let expected = ((last - first) / 200 + 1) as u64;
        let got = jobs.counts(p, "i").await.unwrap().queued;
        assert_eq!(
            got, expected,
            "{p}: jobs enqueued vs ticks from the first to the last fired (a difference is a double fire or a lost tick)"
        );
        assert_eq!(info[0].fired, expected, "{p}: the schedule's own count");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_hold_with_two_workers_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster (run scripts/install)");
    let connect = || async {
        Jobs::connect(Config::cluster(cluster.urls()))
            .await
            .unwrap()
    };
    let jobs = connect().await;
    let (max, window) = (5, Duration::from_millis(500));
    let parts: Vec<String> = (0..3).map(|_| partition("clusterrate")).collect();
    let mut ids = Vec::new();
    for p in &parts {
        register_client(p, &jobs);
        jobs.set_rate_limit(p, "q", Some(RateLimit::new(max, window).unwrap()))
            .await
            .unwrap();
        let batch: Vec<Record> = (0..20)
            .map(|n| Record {
                n,
                ..Default::default()
            })
            .collect();
        let enqueued = jobs.enqueue_bulk(p, "q", &batch).await.unwrap();
        ids.push(
            enqueued
                .iter()
                .map(|e| e.id().to_owned())
                .collect::<Vec<_>>(),
        );
    }
    let mut workers = Vec::new();
    for _ in 0..2 {
        // Each worker with its own connection, as in separate processes.
        let mut builder = Worker::builder(connect().await, Registry::new().register::<Record>());
        for p in &parts {
            builder = builder.queue(p, "q", 4);
        }
        workers.push(builder.build().unwrap().start());
    }
    for p in &parts {
        eventually("completed_total == 20", Duration::from_secs(30), || async {
            jobs.counts(p, "q").await.unwrap().completed_total == 20
        })
        .await
        .unwrap();
    }
    for w in workers {
        w.shutdown().await;
    }
    for (p, ids) in parts.iter().zip(&ids) {
        let starts = started_at(&jobs, p, ids).await;
        let most = max_per_window(starts, window.as_millis() as i64);
        assert_eq!(
            most, max as usize,
            "{p}: the limit is reached and never passed"
        );
    }
}

fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
