//! Recurring jobs against a real Redis: ticks fire exactly once with several schedulers,
//! missed-tick policies, run-time changes, bad input that writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use wharf_job_partition::{
    CancellationToken, Config, Error, Jobs, Missed, Registry, Schedule, Scheduler, Worker,
};

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Every key of a partition (to check that a failed call wrote nothing).
async fn keys_of(jobs: &Jobs, p: &str) -> Vec<String> {
    let mut k: Vec<String> = cmd(jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:*"))).await;
    k.sort();
    k
}

async fn queued(jobs: &Jobs, p: &str, q: &str) -> u64 {
    jobs.counts(p, q).await.unwrap().queued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_schedulers_fire_every_tick_exactly_once() {
    let p = partition("sched3");
    let jobs = jobs().await;
    let every = Schedule::every(Duration::from_millis(200)).unwrap();
    let cron = Schedule::cron("* * * * * *").unwrap();
    jobs.schedule(&p, "i", "interval", &every, &Record::default())
        .await
        .unwrap();
    jobs.schedule(&p, "c", "cron", &cron, &Record::default())
        .await
        .unwrap();
    let listed = jobs.schedules(&p).await.unwrap();
    let first = |name: &str| {
        ms(listed
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .next_at
            .unwrap())
    };
    let (first_i, first_c) = (first("interval"), first("cron"));

    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        // Each scheduler with its own connection, as in separate processes.
        let s = Scheduler::new(common::jobs().await, [p.clone()])
            .unwrap()
            .poll_interval(Duration::from_millis(20));
        runs.push(tokio::spawn(s.run(stop.child_token())));
    }
    // Run until the cron schedule has fired 4 ticks (about 4 s).
    eventually("4 cron ticks", Duration::from_secs(15), || async {
        queued(&jobs, &p, "c").await >= 4
    })
    .await
    .unwrap();
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }

    for (name, queue, first, step) in [
        ("interval", "i", first_i, None),
        ("cron", "c", first_c, Some(1000)),
    ] {
        let info = jobs.schedules(&p).await.unwrap();
        let info = info.iter().find(|s| s.name == name).unwrap();
        let last = ms(info.last_at.unwrap());
        let expected = match step {
            Some(step) => (last - first) / step + 1,
            None => (last - first) / 200 + 1,
        } as u64;
        let got = queued(&jobs, &p, queue).await;
        assert_eq!(
            got, expected,
            "{name}: jobs enqueued vs ticks from the first to the last fired (a difference is a double-fire or a lost tick)"
        );
        assert_eq!(info.fired, expected, "{name}: the schedule's own count");
    }
}

/// Sets a schedule's next tick in the past, as if no scheduler had run since.
async fn back_date(jobs: &Jobs, p: &str, name: &str, ago: Duration) -> i64 {
    let t: (String, String) = cmd(jobs, &mut redis::cmd("TIME")).await;
    let now = t.0.parse::<i64>().unwrap() * 1000;
    let next = now - ago.as_millis() as i64;
    let _: i64 = cmd(
        jobs,
        redis::cmd("HSET")
            .arg(format!("{{wharf:{p}}}:sched:{name}"))
            .arg("next_ms")
            .arg(next),
    )
    .await;
    let _: i64 = cmd(
        jobs,
        redis::cmd("ZADD")
            .arg(format!("{{wharf:{p}}}:scheds"))
            .arg(next)
            .arg(name),
    )
    .await;
    next
}

#[tokio::test]
async fn ticks_missed_while_no_scheduler_ran_follow_the_policy() {
    let p = partition("missed");
    let jobs = jobs().await;
    let hourly = Schedule::every(Duration::from_secs(3600))
        .unwrap()
        .grace(Duration::from_secs(1));
    // 11 hourly ticks came due over the last 10.5 hours; all are more than 1 s late.
    let cases = [
        ("skip", Missed::Skip, 0),
        ("once", Missed::RunOnce, 1),
        ("each", Missed::RunEach(3), 3),
        ("all", Missed::RunEach(20), 11),
    ];
    for (name, missed, _) in cases {
        let s = hourly.clone().missed(missed);
        jobs.schedule(&p, name, name, &s, &Record::default())
            .await
            .unwrap();
        back_date(&jobs, &p, name, Duration::from_secs(10 * 3600 + 1800)).await;
    }
    let scheduler = Scheduler::new(jobs.clone(), [p.clone()]).unwrap();
    scheduler.tick().await.unwrap();
    for (name, _, want) in cases {
        assert_eq!(queued(&jobs, &p, name).await, want, "{name}");
        let info = jobs.schedules(&p).await.unwrap();
        let next = info
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .next_at
            .unwrap();
        let ahead = next.duration_since(SystemTime::now()).unwrap_or_default();
        // The next tick keeps the phase: half an hour from now (give or take clock skew).
        assert!(
            ahead > Duration::from_secs(1700) && ahead < Duration::from_secs(1900),
            "{name}: {ahead:?}"
        );
    }
    // A second pass finds nothing due.
    scheduler.tick().await.unwrap();
    assert_eq!(queued(&jobs, &p, "all").await, 11);
}

#[tokio::test]
async fn schedules_are_listed_paused_resumed_changed_and_removed_at_run_time() {
    let p = partition("admin");
    let jobs = jobs().await;
    let every = Schedule::every(Duration::from_millis(100)).unwrap();
    jobs.schedule(&p, "q", "s", &every, &Record::default())
        .await
        .unwrap();
    let scheduler = Scheduler::new(jobs.clone(), [p.clone()]).unwrap();

    jobs.pause_schedule(&p, "s").await.unwrap();
    let info = jobs.schedules(&p).await.unwrap();
    assert!(info[0].paused && info[0].next_at.is_none());
    // Wait past the moment the next tick would have come due, then look: nothing fires.
    tokio::time::sleep(Duration::from_millis(300)).await;
    scheduler.tick().await.unwrap();
    assert_eq!(queued(&jobs, &p, "q").await, 0, "a paused schedule fired");

    jobs.resume_schedule(&p, "s").await.unwrap();
    eventually("a tick after resume", Duration::from_secs(10), || async {
        scheduler.tick().await.unwrap();
        queued(&jobs, &p, "q").await >= 1
    })
    .await
    .unwrap();

    // Change it: a daily cron in Berlin; it keeps its name, the next tick follows the new rule.
    let daily = Schedule::cron_in("0 0 3 * * *", "Europe/Berlin").unwrap();
    jobs.schedule(&p, "q", "s", &daily, &Record::default())
        .await
        .unwrap();
    let info = jobs.schedules(&p).await.unwrap();
    assert_eq!(info.len(), 1);
    assert!(info[0].when.contains("Europe/Berlin"), "{}", info[0].when);
    let next = info[0].next_at.unwrap();
    assert_eq!(Some(next), daily.next_after(next - Duration::from_secs(1)));

    jobs.remove_schedule(&p, "s").await.unwrap();
    assert!(jobs.schedules(&p).await.unwrap().is_empty());
    let left: Vec<String> = keys_of(&jobs, &p)
        .await
        .into_iter()
        .filter(|k| k.contains("sched"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let p = partition("bad");
    let jobs = jobs().await;
    let before = keys_of(&jobs, &p).await;

    let err = Schedule::cron("0 61 * * *").unwrap_err();
    assert!(matches!(err, Error::InvalidSchedule { .. }), "{err}");
    let err = Schedule::every(Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::InvalidSchedule { .. }), "{err}");
    let unbounded = Schedule::every(Duration::from_secs(1))
        .unwrap()
        .missed(Missed::RunEach(0));
    let err = jobs
        .schedule(&p, "q", "s", &unbounded, &Record::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSchedule { .. }), "{err}");
    let ok = Schedule::every(Duration::from_secs(1)).unwrap();
    let err = jobs
        .schedule(&p, "q", "bad:name", &ok, &Record::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    for err in [
        jobs.pause_schedule(&p, "nope").await.unwrap_err(),
        jobs.resume_schedule(&p, "nope").await.unwrap_err(),
        jobs.remove_schedule(&p, "nope").await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::UnknownSchedule { .. }), "{err}");
        assert!(err.to_string().contains("wharf-jobs schedules"), "{err}");
    }
    assert_eq!(keys_of(&jobs, &p).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_schedules_fires_them_and_runs_their_jobs() {
    let p = partition("wsched");
    let jobs = jobs().await;
    register_client(&p, &jobs);
    let every = Schedule::every(Duration::from_millis(200)).unwrap();
    jobs.schedule(&p, "q", "s", &every, &Record::default())
        .await
        .unwrap();
    let worker = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 2)
        .schedules(&p)
        .lease(Duration::from_secs(3))
        .build()
        .unwrap();
    let handle = worker.start();
    eventually(
        "3 scheduled jobs completed",
        Duration::from_secs(15),
        || async { jobs.counts(&p, "q").await.unwrap().completed_total >= 3 },
    )
    .await
    .unwrap();
    handle.shutdown().await;
}

/// Not a test of its own: the body of the scheduler processes
/// `two_scheduler_processes_fire_every_tick_exactly_once` spawns (this binary again, with
/// `WHARF_SCHED_CHILD` set), which fire the partition's ticks until killed (at most 60 s).
#[tokio::test]
#[ignore = "the body of the scheduler processes another test spawns"]
async fn child_scheduler() {
    let Ok(p) = std::env::var("WHARF_SCHED_CHILD") else {
        return;
    };
    let jobs = jobs().await;
    let _: () = cmd(
        &jobs,
        redis::cmd("SET")
            .arg(format!("{{{p}}}:child:{}", std::process::id()))
            .arg(1),
    )
    .await;
    let s = Scheduler::new(jobs, [p])
        .unwrap()
        .poll_interval(Duration::from_millis(20));
    let stop = CancellationToken::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.run(stop)).await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_scheduler(p: &str) -> Proc {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_scheduler",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("WHARF_SCHED_CHILD", p)
        // The child's testkit then returns this Redis instead of starting its own.
        .env(wharf_testkit::BrokerKind::Redis.override_var(), redis_url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

#[tokio::test]
async fn two_scheduler_processes_fire_every_tick_exactly_once() {
    let p = partition("schedproc");
    let jobs = jobs().await;
    let every = Schedule::every(Duration::from_millis(200)).unwrap();
    jobs.schedule(&p, "q", "s", &every, &Record::default())
        .await
        .unwrap();
    let first = ms(jobs.schedules(&p).await.unwrap()[0].next_at.unwrap());
    let children = [spawn_scheduler(&p), spawn_scheduler(&p)];
    eventually(
        "both scheduler processes started",
        Duration::from_secs(30),
        || async {
            let k: Vec<String> =
                cmd(&jobs, redis::cmd("KEYS").arg(format!("{{{p}}}:child:*"))).await;
            k.len() == 2
        },
    )
    .await
    .unwrap();
    eventually("15 ticks", Duration::from_secs(30), || async {
        queued(&jobs, &p, "q").await >= 15
    })
    .await
    .unwrap();
    drop(children);

    let info = jobs.schedules(&p).await.unwrap();
    let last = ms(info[0].last_at.unwrap());
    let expected = ((last - first) / 200 + 1) as u64;
    assert_eq!(
        queued(&jobs, &p, "q").await,
        expected,
        "double-fired or lost ticks"
    );
    assert_eq!(info[0].fired, expected);
}

#[tokio::test]
async fn a_scheduler_rides_out_a_redis_outage_and_loses_no_tick() {
    let redis = wharf_testkit::RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let config = Config::new(redis.url()).response_timeout(Duration::from_millis(500));
    let jobs = Jobs::connect(config).await.unwrap();
    let p = partition("schedout");
    // The outage (1.5 s) is within the grace: its ticks are late, not missed, and all fire.
    let every = Schedule::every(Duration::from_millis(200))
        .unwrap()
        .missed(Missed::Skip)
        .grace(Duration::from_secs(30));
    jobs.schedule(&p, "q", "s", &every, &Record::default())
        .await
        .unwrap();
    let first = ms(jobs.schedules(&p).await.unwrap()[0].next_at.unwrap());
    let stop = CancellationToken::new();
    let s = Scheduler::new(jobs.clone(), [p.clone()])
        .unwrap()
        .poll_interval(Duration::from_millis(20));
    let run = tokio::spawn(s.run(stop.child_token()));
    eventually("3 ticks", Duration::from_secs(15), || async {
        jobs.counts(&p, "q").await.is_ok_and(|c| c.queued >= 3)
    })
    .await
    .unwrap();
    proxy.down().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore().unwrap();
    let before = jobs.counts(&p, "q").await.map(|c| c.queued).unwrap_or(0);
    eventually(
        "ticks after the outage",
        Duration::from_secs(30),
        || async {
            jobs.counts(&p, "q")
                .await
                .is_ok_and(|c| c.queued >= before + 12)
        },
    )
    .await
    .unwrap();
    stop.cancel();
    run.await.unwrap();

    let info = jobs.schedules(&p).await.unwrap();
    let last = ms(info[0].last_at.unwrap());
    let expected = ((last - first) / 200 + 1) as u64;
    assert_eq!(
        queued(&jobs, &p, "q").await,
        expected,
        "a tick was lost or fired twice"
    );
}
