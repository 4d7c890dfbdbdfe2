//! `Jobs::wait_for`, schedulers, rate limits and a worker's batched completions over a link
//! that holds bytes silently (no reset, no refusal) and one that answers only after the
//! client's timeout (the request took effect although the client gave up): calls fail within
//! their configured bounds instead of hanging, nothing is left behind without an expiry, no
//! tick is fired twice or lost, no window holds more starts than the limit, and no finished
//! job is recorded twice. Bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use wharf_job_partition::{
    CancellationToken, Config, JobOutcome, Jobs, Missed, QueueCounts, RateLimit, Registry,
    Schedule, Scheduler, Worker,
};
use wharf_testkit::{Direction, RedisServer};

/// The response and connect timeout of the clients behind the faulty link.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Longer than [`TIMEOUT`]: each answer arrives after the client gave up.
const LATE: Duration = Duration::from_millis(800);

async fn direct(redis: &RedisServer) -> Jobs {
    let url = format!("redis://{}/", redis.direct_addr());
    Jobs::connect(Config::new(url).response_timeout(RESPONSE_TIMEOUT))
        .await
        .unwrap()
}

async fn behind_proxy(redis: &RedisServer) -> Jobs {
    Jobs::connect(
        Config::new(redis.url())
            .response_timeout(TIMEOUT)
            .connect_timeout(TIMEOUT),
    )
    .await
    .unwrap()
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn hget(jobs: &Jobs, key: &str, field: &str) -> Option<String> {
    cmd(jobs, redis::cmd("HGET").arg(key).arg(field)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_over_a_silent_link_fails_within_its_bounds_and_leaves_nothing_without_expiry() {
    let redis = RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let direct = direct(&redis).await;
    let held = behind_proxy(&redis).await;
    let p = partition("waitsilent");
    register_client(&p, &direct);
    let id = direct
        .enqueue(&p, "q", &Record::default())
        .await
        .unwrap()
        .id()
        .to_owned();
    let wait = Duration::from_secs(2);
    // What a wait may take on a dead link: its own timeout, the look before and after it, and
    // a connect for the blocking pop, each bounded by the configured timeouts (the pop's
    // connect by twice the connect timeout), plus 2 s for a loaded machine.
    let bound = wait + TIMEOUT * 2 + TIMEOUT * 2 + TIMEOUT + Duration::from_secs(2);

    // 1. The link is silent before the call: the first look never gets an answer.
    proxy.hold();
    let t = Instant::now();
    let r = tokio::time::timeout(bound * 2, held.wait_for(&p, &id, wait))
        .await
        .expect("wait_for hung for twice its bound over a silent link");
    let took = t.elapsed();
    println!("silent before the call: {r:?} after {took:?} (bound {bound:?})");
    assert!(
        r.is_err(),
        "over a silent link wait_for claimed to know the outcome: {r:?}"
    );
    assert!(
        took <= bound,
        "wait_for took {took:?}, over its bound {bound:?}"
    );
    proxy.release();

    // 2. The link goes silent while the caller waits for the outcome, and the job completes
    //    meanwhile: the answer never reaches the caller, which gives up within the bound.
    let waiting = tokio::spawn({
        let (held, p, id) = (held.clone(), p.clone(), id.clone());
        async move {
            let t = Instant::now();
            let r = held.wait_for(&p, &id, wait).await;
            (r, t.elapsed())
        }
    });
    let job_key = format!("{{wharf:{p}}}:job:{id}");
    eventually(
        "the caller to register as a waiter",
        Duration::from_secs(10),
        || async { hget(&direct, &job_key, "waiters").await.is_some() },
    )
    .await
    .unwrap();
    proxy.hold();
    let worker = Worker::builder(direct.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 1)
        .build()
        .unwrap()
        .start();
    let (r, took) = tokio::time::timeout(bound * 2, waiting)
        .await
        .expect("wait_for hung for twice its bound after the link went silent")
        .unwrap();
    println!("silent while waiting: {r:?} after {took:?} (bound {bound:?})");
    assert!(
        r.is_err(),
        "no answer crossed the silent link, yet wait_for returned {r:?}"
    );
    assert!(
        took <= bound,
        "wait_for took {took:?}, over its bound {bound:?}"
    );
    assert_eq!(
        hget(&direct, &job_key, "state").await.as_deref(),
        Some("completed"),
        "the job did not complete on the direct link"
    );

    // 3. Healed: the outcome is still there for any caller, and every outcome list the lost
    //    answer may have left behind expires by itself.
    proxy.release();
    let again = tokio::time::timeout(bound * 2, held.wait_for(&p, &id, wait))
        .await
        .expect("wait_for hung on a healed link")
        .unwrap();
    assert!(
        matches!(again, JobOutcome::Completed { .. }),
        "after the link healed wait_for said {again:?}"
    );
    let lists: Vec<String> = cmd(
        &direct,
        redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:outcome:*")),
    )
    .await;
    for key in lists {
        let ttl: i64 = cmd(&direct, redis::cmd("PTTL").arg(&key)).await;
        assert!(ttl != -1, "{key} was left without an expiry");
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_behind_a_silent_or_slow_link_loses_no_tick_and_does_not_stall_the_others() {
    let redis = RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let direct = direct(&redis).await;
    let p = partition("schedsilent");
    let every = Schedule::every(Duration::from_millis(200))
        .unwrap()
        .missed(Missed::Skip)
        .grace(Duration::from_secs(60));
    direct
        .schedule(&p, "q", "s", &every, &Record::default())
        .await
        .unwrap();
    let first = ms(direct.schedules(&p).await.unwrap()[0].next_at.unwrap());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let scheduler = |jobs: Jobs, stop: &CancellationToken| {
        Scheduler::new(jobs, [p.clone()])
            .unwrap()
            .poll_interval(Duration::from_millis(20))
            .run(stop.child_token())
    };
    // A through the faulty link, B direct: B alone keeps the schedule alive while A's link
    // is silent; then A alone, whose answers come late; then A healed.
    let a = tokio::spawn(scheduler(behind_proxy(&redis).await, &stop_a));
    let b = tokio::spawn(scheduler(direct.clone(), &stop_b));
    let queued = || async { direct.counts(&p, "q").await.map_or(0, |c| c.queued) };
    eventually("3 ticks", Duration::from_secs(15), || async {
        queued().await >= 3
    })
    .await
    .unwrap();

    proxy.hold();
    let before = queued().await;
    eventually(
        "5 ticks while A's link is silent",
        Duration::from_secs(15),
        || async { queued().await >= before + 5 },
    )
    .await
    .unwrap();
    proxy.release();

    let stopped = |run: tokio::task::JoinHandle<()>| async move {
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("a scheduler did not stop within 10 s of being told")
            .unwrap();
    };
    stop_b.cancel();
    stopped(b).await;
    // Every answer now comes after A's timeout, so A cannot even learn which tick is due:
    // the schedule stalls (no client can act on a link that slow) until at least 5 ticks
    // are overdue, and those must all fire once the link heals (they are within the grace).
    proxy.set_direction_latency(Direction::ToClient, LATE);
    eventually(
        "5 ticks to fall due while A's answers come late",
        Duration::from_secs(20),
        || async {
            let next = direct.schedules(&p).await.unwrap()[0].next_at.unwrap();
            SystemTime::now()
                .duration_since(next)
                .is_ok_and(|late| late >= Duration::from_millis(1000))
        },
    )
    .await
    .unwrap();
    proxy.clear_latency();
    let before = queued().await;
    eventually("5 ticks after healing", Duration::from_secs(15), || async {
        queued().await >= before + 5
    })
    .await
    .unwrap();
    stop_a.cancel();
    stopped(a).await;

    let info = direct.schedules(&p).await.unwrap();
    let last = ms(info[0].last_at.unwrap());
    let expected = ((last - first) / 200 + 1) as u64;
    let got = queued().await;
    println!("ticks {first}..={last}: expected {expected}, enqueued {got}");
    assert_eq!(got, expected, "a tick was lost or fired twice");
    assert_eq!(info[0].fired, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_when_claims_are_answered_after_the_workers_timeout() {
    let redis = RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let direct = direct(&redis).await;
    let p = partition("ratelate");
    register_client(&p, &direct);
    let (max, window) = (5u32, Duration::from_millis(500));
    direct
        .set_rate_limit(&p, "q", Some(RateLimit::new(max, window).unwrap()))
        .await
        .unwrap();
    let total = 40u64;
    let mut ids = Vec::new();
    for n in 0..total {
        let e = direct
            .enqueue(
                &p,
                "q",
                &Record {
                    n,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        ids.push(e.id().to_owned());
    }
    let worker = |jobs: Jobs| {
        Worker::builder(jobs, Registry::new().register::<Record>())
            .queue(&p, "q", 4)
            .lease(Duration::from_secs(3))
            .build()
            .unwrap()
            .start()
    };
    let late = worker(behind_proxy(&redis).await);
    let on_time = worker(direct.clone());
    let completed = || async {
        direct
            .counts(&p, "q")
            .await
            .map_or(0, |c| c.completed_total)
    };
    eventually("10 jobs completed", Duration::from_secs(30), || async {
        completed().await >= 10
    })
    .await
    .unwrap();
    // Claims through the proxy now take effect in Redis (and count as starts) while their
    // answers arrive after the worker gave up; those jobs run again once their leases end.
    proxy.set_direction_latency(Direction::ToClient, LATE);
    let before = completed().await;
    eventually(
        "10 more jobs completed while answers come late",
        Duration::from_secs(30),
        || async { completed().await >= before + 10 },
    )
    .await
    .unwrap();
    proxy.clear_latency();
    eventually("every job completed", Duration::from_secs(60), || async {
        completed().await == total
    })
    .await
    .unwrap();
    late.shutdown().await;
    on_time.shutdown().await;

    let mut starts = Vec::new();
    for id in &ids {
        let s = hget(&direct, &format!("{{wharf:{p}}}:job:{id}"), "started_at")
            .await
            .unwrap();
        starts.push(s.parse::<i64>().unwrap());
    }
    starts.sort_unstable();
    let window_ms = window.as_millis() as i64;
    let most = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|&&s| s < starts[i] + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!("rate limit {max}/{window:?} with late answers: most starts in any window {most}");
    assert!(
        most <= max as usize,
        "{most} starts in one window, over the limit of {max}"
    );
}

/// Finished jobs are recorded several to a call (`worker::complete`). A call whose link goes
/// silent, or whose answer comes only after the worker gave up (the jobs were recorded), must
/// neither hang the jobs waiting on it nor record a job twice: once healed, every job is
/// completed exactly once in Redis's counters and nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_completions_over_a_silent_or_late_link_record_each_job_once() {
    let redis = RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let direct = direct(&redis).await;
    let p = partition("completesilent");
    register_client(&p, &direct);
    // Enough work (about 2 s at 8 at a time) that both faults below find jobs running and
    // completions on their way.
    let total = 600u64;
    let mut ids = Vec::new();
    for n in 0..total {
        let job = Record {
            n,
            sleep_ms: 10 + n % 40,
            ..Default::default()
        };
        ids.push(direct.enqueue(&p, "q", &job).await.unwrap().id().to_owned());
    }
    let lease = Duration::from_secs(3);
    let worker = Worker::builder(
        behind_proxy(&redis).await,
        Registry::new().register::<Record>(),
    )
    .queue(&p, "q", 8)
    .lease(lease)
    .build()
    .unwrap()
    .start();
    let counts = || async { direct.counts(&p, "q").await.unwrap() };
    let completed_at_least = |n: u64| {
        let counts = &counts;
        async move {
            eventually(
                &format!("{n} jobs completed"),
                Duration::from_secs(60),
                || async { counts().await.completed_total >= n },
            )
            .await
            .unwrap();
        }
    };
    completed_at_least(30).await;
    let left = |c: QueueCounts| c.completed_total + 30 < total;

    // 1. Answers held: the calls on their way take effect in Redis, but the worker hears
    //    nothing until after its timeout (the held bytes arrive late, on release).
    assert!(
        left(counts().await),
        "the jobs finished before the first fault"
    );
    proxy.hold_direction(Direction::ToClient);
    tokio::time::sleep(TIMEOUT * 3).await;
    proxy.release();
    let after_late = counts().await.completed_total;
    completed_at_least(after_late + 30).await;

    // 2. Silent both ways: the calls on their way never reach Redis until the release.
    assert!(
        left(counts().await),
        "the jobs finished before the second fault"
    );
    proxy.hold();
    tokio::time::sleep(TIMEOUT * 4).await;
    proxy.release();

    // Healed: everything completes (a job whose lease ran out meanwhile runs again first).
    eventually(
        "every job completed and nothing left running",
        Duration::from_secs(60),
        || async {
            let c = counts().await;
            c.completed_total >= total && c.queued + c.running + c.scheduled + c.parked == 0
        },
    )
    .await
    .unwrap();
    // Stopped before the counts are judged: no retried completion can land after them.
    tokio::time::timeout(lease * 4, worker.shutdown())
        .await
        .expect("the worker did not shut down within four leases after the link healed");
    let c = counts().await;
    assert_eq!(
        c.completed_total, total,
        "the queue counted {} completions of {total} jobs: a job was recorded twice",
        c.completed_total
    );
    for id in &ids {
        assert_eq!(
            hget(&direct, &format!("{{wharf:{p}}}:job:{id}"), "state")
                .await
                .as_deref(),
            Some("completed"),
            "job {id} is not completed"
        );
    }
    let mut reran = 0;
    for n in 0..total {
        let runs: Option<u64> = cmd(
            &direct,
            redis::cmd("HGET").arg(format!("{{{p}}}:runs")).arg(n),
        )
        .await;
        let runs = runs.unwrap_or(0);
        assert!(runs >= 1, "job {n} completed without a successful run");
        reran += runs - 1;
    }
    println!(
        "{total} jobs completed once each in the counters; {reran} ran again after a lost answer"
    );
}
