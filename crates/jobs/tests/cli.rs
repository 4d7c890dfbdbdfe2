//! The `wharf-jobs` command line against a real Redis (wharf-testkit's): every command, its
//! text and `--json` output, `--watch`, and the exit status of each kind of failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wharf_job_partition::{
    Config, Job, JobContext, JobError, JobState, Jobs, Registry, Worker, testing,
};
use wharf_testkit::eventually;

fn redis_url() -> String {
    wharf_testkit::redis()
        .expect("start redis-server (run scripts/install)")
        .address()
        .to_owned()
}

async fn jobs() -> Jobs {
    Jobs::connect(Config::new(redis_url()).response_timeout(Duration::from_secs(2)))
        .await
        .unwrap()
}

/// A partition name no other test uses.
fn partition(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

/// Succeeds, or with `fail` fails for good (one attempt): dead.
#[derive(Serialize, Deserialize, Debug, Default)]
struct Task {
    n: u32,
    fail: bool,
}

impl Job for Task {
    const NAME: &'static str = "task";

    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if self.fail {
            return Err(format!("task {} failed on purpose", self.n).into());
        }
        Ok(())
    }

    fn max_attempts(&self) -> u32 {
        1
    }
}

/// Runs `wharf-jobs --url <test redis> ARGS`: (exit status, stdout + stderr).
fn cli(args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = cli_split(args);
    (code, stdout + &stderr)
}

/// Runs `wharf-jobs --url <test redis> ARGS`: (exit status, stdout, stderr).
fn cli_split(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf-jobs"))
        .arg("--url")
        .arg(redis_url())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs with `--json`: (exit status, the JSON document on stdout).
fn cli_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cli_split(&all);
    let value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (code, value)
}

/// `n` dead jobs in `p`/`q`, made by a worker running tasks that fail for good.
async fn dead_jobs(jobs: &Jobs, p: &str, q: &str, n: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..n {
        let job = Task { n, fail: true };
        ids.push(jobs.enqueue(p, q, &job).await.unwrap().id().to_owned());
    }
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Task>())
        .queue(p, q, 4)
        .build()
        .unwrap()
        .start();
    eventually("the tasks to die", Duration::from_secs(20), || async {
        jobs.counts(p, q).await.unwrap().dead == u64::from(n)
    })
    .await
    .unwrap();
    w.shutdown().await;
    ids
}

#[tokio::test]
async fn the_cli_lists_counts_pauses_limits_cancels_and_purges() {
    let jobs = jobs().await;
    let p = partition("cli");
    let a = jobs.enqueue(&p, "mail", &Task::default()).await.unwrap();
    jobs.enqueue(&p, "mail", &Task::default()).await.unwrap();

    let (code, out) = cli(&["partitions"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == p), "{out}");

    assert_eq!(cli(&["pause", &p, "mail"]).0, 0);
    assert_eq!(cli(&["limit", &p, "mail", "3"]).0, 0);
    let (_, out) = cli(&["queues", &p]);
    let row = out.lines().find(|l| l.starts_with("mail")).unwrap();
    assert!(row.contains("paused") && row.contains("limit=3"), "{row}");
    assert_eq!(row.split_whitespace().nth(1), Some("2"), "{row}");

    let (_, out) = cli(&["show", &p, a.id()]);
    assert!(out.contains("state:           queued"), "{out}");
    let (_, out) = cli(&["cancel", &p, a.id()]);
    assert!(out.contains("cancelled"), "{out}");
    assert_eq!(
        jobs.job(&p, a.id()).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    let (_, out) = cli(&["purge", &p, "mail"]);
    assert!(out.contains("deleted 1 waiting jobs"), "{out}");
    assert_eq!(cli(&["resume", &p, "mail"]).0, 0);
    assert!(!jobs.counts(&p, "mail").await.unwrap().paused);
}

#[tokio::test]
async fn every_listing_prints_json_with_json() {
    let jobs = jobs().await;
    let p = partition("cli-json");
    let a = jobs
        .enqueue(&p, "mail", &Task { n: 7, fail: false })
        .await
        .unwrap();
    jobs.set_limit(&p, "mail", Some(5)).await.unwrap();

    let (code, v) = cli_json(&["partitions"]);
    assert_eq!(code, 0);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|x| x == &Value::from(p.clone())),
        "{v}"
    );

    let (code, v) = cli_json(&["queues", &p]);
    assert_eq!(code, 0);
    assert_eq!(v[0]["queue"], "mail", "{v}");
    assert_eq!(v[0]["queued"], 1, "{v}");
    assert_eq!(v[0]["limit"], 5, "{v}");

    let (code, v) = cli_json(&["show", &p, a.id()]);
    assert_eq!(code, 0);
    assert_eq!(v["state"], "queued", "{v}");
    assert_eq!(
        v["args"]["n"], 7,
        "the arguments are JSON, not a string: {v}"
    );

    let (code, v) = cli_json(&["leases", &p, "mail"]);
    assert_eq!(code, 0);
    assert_eq!(v["running"], 0, "{v}");
    assert_eq!(v["leases"], Value::Array(vec![]), "{v}");

    dead_jobs(&jobs, &p, "mail", 2).await;
    let (code, v) = cli_json(&["dead", &p, "mail"]);
    assert_eq!(code, 0);
    let dead = v.as_array().unwrap();
    assert_eq!(dead.len(), 2, "{v}");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("failed on purpose"),
        "{v}"
    );
}

#[tokio::test]
async fn retry_dead_puts_every_dead_job_of_a_queue_back_and_delete_dead_empties_it() {
    let jobs = jobs().await;
    let p = partition("cli-bulk");
    let ids = dead_jobs(&jobs, &p, "q", 3).await;
    // One by id (two ids, one unknown: the known one is retried, the status says not found).
    let (code, out) = cli(&["retry", &p, &ids[0], "no-such-id"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&format!("{}: re-enqueued", ids[0])), "{out}");
    assert!(out.contains("no job no-such-id"), "{out}");
    assert_eq!(jobs.counts(&p, "q").await.unwrap().dead, 2);

    // The rest in bulk, as JSON.
    let (code, v) = cli_json(&["retry-dead", &p, "q"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["retried"], 2, "{v}");
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.dead, c.queued), (0, 3), "{c:?}");
    let (code, out) = cli(&["retry-dead", &p, "q"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no dead job"), "{out}");

    // They die again; delete-dead (purge-dead's alias) empties the dead set.
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Task>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    eventually(
        "the tasks to die again",
        Duration::from_secs(20),
        || async { jobs.counts(&p, "q").await.unwrap().dead == 3 },
    )
    .await
    .unwrap();
    w.shutdown().await;
    let (code, out) = cli(&["delete-dead", &p, "q"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deleted 3 dead jobs"), "{out}");
    assert_eq!(jobs.counts(&p, "q").await.unwrap().dead, 0);
}

#[tokio::test]
async fn leases_and_queues_say_which_leases_a_dead_worker_holds() {
    let jobs = jobs().await;
    let p = partition("cli-stalled");
    jobs.enqueue(&p, "q", &Task::default()).await.unwrap();
    jobs.enqueue(&p, "q", &Task::default()).await.unwrap();
    // A worker claims both and dies (never renews: as after kill -9). A lease is stalled
    // once not renewed for five heartbeats (lease / 10 each): after half the lease.
    let lease = Duration::from_secs(20);
    testing::claim(&jobs, &p, "q", 2, lease, "4242-deadbeef")
        .await
        .unwrap();
    eventually(
        "both leases to read as stalled",
        lease / 2 + Duration::from_secs(5),
        || async {
            jobs.leases(&p, "q", 10)
                .await
                .unwrap()
                .iter()
                .filter(|l| l.stalled)
                .count()
                == 2
        },
    )
    .await
    .unwrap();
    let (code, out) = cli(&["leases", &p, "q"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("STALLED").count(), 2, "{out}");
    assert!(out.contains("worker=4242-deadbeef"), "{out}");
    assert!(out.contains("waiting: 2 stalled lease(s)"), "{out}");
    let (code, out) = cli(&["queues", &p]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 stalled lease(s) held by a dead or frozen worker"),
        "{out}"
    );
    let (_, v) = cli_json(&["leases", &p, "q"]);
    assert_eq!(v["leases"][0]["stalled"], true, "{v}");
    assert_eq!(v["leases"][0]["worker"], "4242-deadbeef", "{v}");
}

#[tokio::test]
async fn jobs_lists_each_state_a_page_at_a_time_and_searches_arguments_and_keys() {
    let jobs = jobs().await;
    let p = partition("cli-list");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            jobs.enqueue(&p, "q", &Task { n, fail: false })
                .await
                .unwrap()
                .id()
                .to_owned(),
        );
    }
    let later = jobs
        .enqueue_in(
            &p,
            "q",
            &Task { n: 99, fail: false },
            Duration::from_secs(3600),
        )
        .await
        .unwrap();

    // A page of the queued list, in the order workers take them, and where to go on.
    let (code, out) = cli(&["jobs", &p, "q", "--limit", "2"]);
    assert_eq!(code, 0, "{out}");
    let shown: Vec<&str> = out.lines().filter(|l| l.contains("  task  ")).collect();
    assert_eq!(shown.len(), 2, "{out}");
    assert!(
        shown[0].starts_with(&ids[0]) && shown[1].starts_with(&ids[1]),
        "{out}"
    );
    assert!(out.contains("5 in all, next page: --offset 2"), "{out}");
    let (_, v) = cli_json(&["jobs", &p, "q", "--offset", "4"]);
    assert_eq!(v["total"], 5, "{v}");
    assert_eq!(v["jobs"][0]["id"], ids[4].as_str(), "{v}");

    // The scheduled list holds the delayed job; run-now moves it to the queue.
    let (_, v) = cli_json(&["jobs", &p, "q", "--state", "scheduled"]);
    assert_eq!(v["jobs"][0]["id"], later.id(), "{v}");
    assert!(v["jobs"][0]["run_at_ms"].as_i64().unwrap() > 0, "{v}");
    let (code, out) = cli(&["run-now", &p, later.id()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        jobs.job(&p, later.id()).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let (code, out) = cli(&["run-now", &p, later.id()]);
    assert_eq!(code, 1, "a queued job is not waiting for a time: {out}");

    // A search in the arguments.
    let (code, v) = cli_json(&["jobs", &p, "q", "--search", "\"n\":3"]);
    assert_eq!(code, 0, "{v}");
    let found = v["jobs"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["id"], ids[3].as_str(), "{v}");

    // Delete takes a job out for good; an unknown list name is bad usage.
    let (code, out) = cli(&["delete", &p, &ids[0]]);
    assert_eq!(code, 0, "{out}");
    assert!(jobs.job(&p, &ids[0]).await.unwrap().is_none());
    let (code, out) = cli(&["jobs", &p, "q", "--state", "waiting"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("one of queued, scheduled"), "{out}");
    let (code, out) = cli(&["jobs", &p, "nope"]);
    assert_eq!(code, 3, "{out}");
}

#[tokio::test]
async fn workers_and_keys_show_who_runs_what_and_who_waits() {
    let jobs = jobs().await;
    let p = partition("cli-keys");
    #[derive(Serialize, Deserialize, Debug)]
    struct Keyed(u32);
    impl Job for Keyed {
        const NAME: &'static str = "keyed";
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
        fn execution_key(&self) -> Option<String> {
            Some("customer-7".into())
        }
    }
    let first = jobs.enqueue(&p, "q", &Keyed(1)).await.unwrap();
    let second = jobs.enqueue(&p, "q", &Keyed(2)).await.unwrap();
    // A worker (dead at once: it never renews) holds the key; the second job waits for it.
    testing::claim(&jobs, &p, "q", 2, Duration::from_secs(30), "777-cafe")
        .await
        .unwrap();
    let (code, out) = cli(&["workers", &p]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("777-cafe  1 job(s)"), "{out}");
    assert!(out.contains(first.id()), "{out}");
    let (code, v) = cli_json(&["keys", &p]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v[0]["key"], "customer-7", "{v}");
    assert_eq!(v[0]["holder"], first.id(), "{v}");
    assert_eq!(v[0]["waiters"][0], second.id(), "{v}");
    let (code, out) = cli(&["keys", &p, "customer-7"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("held by {}  1 waiting", first.id())),
        "{out}"
    );
}

#[tokio::test]
async fn show_prints_a_jobs_progress_result_and_priority() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Report;
    impl Job for Report {
        const NAME: &'static str = "report";
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            ctx.set_progress(&serde_json::json!({ "step": 1, "of": 2 }))
                .await?;
            ctx.set_result(&10)?;
            Ok(())
        }
        fn priority(&self) -> u8 {
            2
        }
    }
    let jobs = jobs().await;
    let p = partition("cli-show");
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Report>())
        .queue(&p, "q", 1)
        .build()
        .unwrap()
        .start();
    let id = jobs.enqueue(&p, "q", &Report).await.unwrap();
    jobs.wait_for(&p, id.id(), Duration::from_secs(20))
        .await
        .unwrap();
    w.shutdown().await;
    let (code, out) = cli(&["show", &p, id.id()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#"progress:        {"of":2,"step":1}"#),
        "{out}"
    );
    assert!(out.contains("result:          10"), "{out}");
    assert!(out.contains("priority:        2"), "{out}");
    let (_, v) = cli_json(&["show", &p, id.id()]);
    assert_eq!(v["progress"]["step"], 1, "{v}");
    assert_eq!(v["result"], 10, "{v}");
    assert_eq!(v["priority"], 2, "{v}");
}

#[tokio::test]
async fn the_cli_lists_pauses_resumes_and_removes_schedules() {
    let jobs = jobs().await;
    let p = partition("cli-sched");
    let daily = wharf_job_partition::Schedule::cron_in("0 0 3 * * *", "Europe/Berlin").unwrap();
    jobs.schedule(&p, "reports", "nightly", &daily, &Task::default())
        .await
        .unwrap();

    let (code, out) = cli(&["schedules", &p]);
    assert_eq!(code, 0, "{out}");
    let row = out.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(
        row.contains("reports") && row.contains("Europe/Berlin"),
        "{row}"
    );
    let (_, v) = cli_json(&["schedules", &p]);
    assert_eq!(v[0]["name"], "nightly", "{v}");
    assert!(v[0]["next_at_ms"].as_u64().unwrap() > 0, "{v}");

    assert_eq!(cli(&["schedule-pause", &p, "nightly"]).0, 0);
    let (_, out) = cli(&["schedules", &p]);
    assert!(out.contains("paused"), "{out}");
    assert!(jobs.schedules(&p).await.unwrap()[0].paused);
    assert_eq!(cli(&["schedule-resume", &p, "nightly"]).0, 0);
    assert!(!jobs.schedules(&p).await.unwrap()[0].paused);

    let (code, out) = cli(&["schedule-remove", &p, "nope"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("nope"), "{out}");
    assert_eq!(cli(&["schedule-remove", &p, "nightly"]).0, 0);
    assert!(jobs.schedules(&p).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cli_lists_and_shows_flows_and_batches_with_their_counts() {
    let jobs = jobs().await;
    let (p, other) = (partition("cli-flow"), partition("cli-flow2"));
    let flow = wharf_job_partition::Flow::new(&Task { n: 0, fail: false })
        .child(&p, "kids", &Task { n: 1, fail: false })
        .child(&other, "kids", &Task { n: 2, fail: false });
    let f = jobs.enqueue_flow(&p, "parents", flow).await.unwrap();
    let batch = wharf_job_partition::Batch::new()
        .job(&p, "members", &Task { n: 3, fail: false })
        .job(&p, "members", &Task { n: 4, fail: true })
        .on_complete("callbacks", &Task::default());
    let b = jobs.enqueue_batch(&p, batch).await.unwrap();

    let (code, out) = cli(&["flows", &p]);
    assert_eq!(code, 0, "{out}");
    let row = out.lines().find(|l| l.starts_with(&f.parent)).unwrap();
    assert!(row.contains("0/2") && row.contains("parents"), "{row}");
    // One child settles (its worker's steps played by hand): 1/2.
    let c = testing::claim(&jobs, &p, "kids", 1, Duration::from_secs(30), "t")
        .await
        .unwrap();
    assert!(
        testing::complete(&jobs, &p, &c[0].0, &c[0].1)
            .await
            .unwrap()
    );
    testing::drain_outbox(&jobs, &p).await.unwrap();
    let (_, v) = cli_json(&["flows", &p]);
    assert_eq!(v[0]["id"], f.parent.as_str(), "{v}");
    assert_eq!(
        (v[0]["done"].as_u64(), v[0]["total"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    let (code, out) = cli(&["flow", &p, &f.parent]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("waiting") && out.contains("1/2 done"), "{out}");
    assert!(out.contains(&format!("{other}/kids: pending")), "{out}");
    let (_, v) = cli_json(&["flow", &p, &f.parent]);
    let kids = v["children"].as_array().unwrap();
    assert_eq!(kids[0]["outcome"], "completed", "{v}");
    assert_eq!(kids[1]["outcome"], Value::Null, "{v}");
    let (_, out) = cli(&["show", &other, &f.children[1].id]);
    assert!(
        out.contains(&format!("flow parent:     {p}/{}", f.parent)),
        "{out}"
    );
    let (_, v) = cli_json(&["show", &other, &f.children[1].id]);
    assert_eq!(v["flow_parent"]["id"], f.parent.as_str(), "{v}");

    // The batch: one job completes, one dies.
    let c = testing::claim(&jobs, &p, "members", 2, Duration::from_secs(30), "t")
        .await
        .unwrap();
    assert!(
        testing::complete(&jobs, &p, &c[0].0, &c[0].1)
            .await
            .unwrap()
    );
    assert_eq!(testing::fail(&jobs, &p, &c[1].0, &c[1].1).await.unwrap(), 3);
    testing::drain_outbox(&jobs, &p).await.unwrap();
    let (code, out) = cli(&["batches", &p]);
    assert_eq!(code, 0, "{out}");
    let row = out.lines().find(|l| l.starts_with(&b.id)).unwrap();
    assert!(row.ends_with("settled"), "{row}");
    let (_, v) = cli_json(&["batch", &p, &b.id]);
    assert_eq!(
        (
            v["total"].as_u64(),
            v["succeeded"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["on_complete"], b.on_complete.unwrap().as_str(), "{v}");

    let (code, out) = cli(&["flow", &p, "nope"]);
    assert_eq!(code, 3, "{out}");
    let (code, out) = cli(&["batch", &p, "nope"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("batches"), "{out}");
    let (code, out) = cli(&["flows", "no-such-partition"]);
    assert_eq!(code, 3, "{out}");
}

#[tokio::test]
async fn the_cli_shows_and_sets_rate_limits_and_refuses_bad_windows() {
    let jobs = jobs().await;
    let p = partition("cli-rate");
    jobs.enqueue(&p, "api", &Task::default()).await.unwrap();

    let (code, out) = cli(&["rate", &p, "api", "10", "2s"]);
    assert_eq!(code, 0, "{out}");
    let limit = jobs.counts(&p, "api").await.unwrap().rate_limit.unwrap();
    assert_eq!((limit.max(), limit.window()), (10, Duration::from_secs(2)));
    let (_, out) = cli(&["rate", &p, "api"]);
    assert!(out.contains("10 starts per 2s"), "{out}");
    let (_, out) = cli(&["queues", &p]);
    assert!(out.contains("rate=10/2s"), "{out}");
    let (_, v) = cli_json(&["rate", &p, "api"]);
    assert_eq!(v["rate_limit"]["max"], 10, "{v}");

    // Bad words are bad usage (2); a limit the library refuses fails (1); neither writes.
    for (n, window, status) in [
        ("10", "0", 2),
        ("10", "-1s", 2),
        ("10", "soon", 2),
        ("0", "1s", 1),
    ] {
        let (code, out) = cli(&["rate", &p, "api", n, window]);
        assert_eq!(code, status, "{n} {window}: {out}");
    }
    let limit = jobs.counts(&p, "api").await.unwrap().rate_limit.unwrap();
    assert_eq!(limit.max(), 10, "a refused change wrote nothing");

    assert_eq!(cli(&["rate", &p, "api", "none"]).0, 0);
    assert!(jobs.counts(&p, "api").await.unwrap().rate_limit.is_none());
}

#[tokio::test]
async fn web_serves_the_consoles_jobs_pages_and_refuses_requests_without_its_token() {
    let jobs = jobs().await;
    let p = partition("cli-web");
    jobs.enqueue(&p, "mail", &Task::default()).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf-jobs"))
        .args([
            "--url",
            &redis_url(),
            "web",
            "--bind",
            "127.0.0.1:0",
            "--token",
            "s3cret",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let get = |path: &str, token: Option<&str>| -> String {
        use std::io::{Read as _, Write as _};
        let addr = line
            .as_deref()
            .unwrap()
            .trim_start_matches("console: http://")
            .trim_end_matches('/')
            .to_owned();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let page = line
        .as_ref()
        .ok()
        .map(|_| get(&format!("/p/{p}"), Some("s3cret")));
    let refused = line.as_ref().ok().map(|_| get(&format!("/p/{p}"), None));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("wharf-jobs web printed its address");
    assert!(line.starts_with("console: http://127.0.0.1:"), "{line}");
    let page = page.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("mail"),
        "the partition's queue is listed: {page}"
    );
    let refused = refused.unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

#[test]
fn bad_usage_exits_2_with_the_help() {
    let (code, out) = cli(&["frobnicate"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Usage: wharf-jobs"), "{out}");
    let (code, out) = cli(&["--watch", "1", "purge", "p", "q"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("repeats listings only"), "{out}");
    let (code, out) = cli(&["--watch", "0.1", "partitions"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = cli(&["limit", "p", "q", "-1"]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn every_command_has_its_own_help() {
    for command in [
        "partitions",
        "queues",
        "leases",
        "show",
        "dead",
        "cancel",
        "retry",
        "retry-dead",
        "jobs",
        "workers",
        "keys",
        "delete",
        "run-now",
        "purge",
        "purge-dead",
        "pause",
        "resume",
        "limit",
        "rate",
        "schedules",
        "schedule-pause",
        "schedule-resume",
        "schedule-remove",
        "flows",
        "flow",
        "batches",
        "batch",
        "web",
    ] {
        let (code, out) = cli(&["help", command]);
        assert_eq!(code, 0, "{command}: {out}");
        assert!(
            out.contains(&format!("Usage: wharf-jobs {command}")),
            "{command}: {out}"
        );
    }
}

#[tokio::test]
async fn watch_repeats_a_listing_until_stopped() {
    let jobs = jobs().await;
    let p = partition("cli-watch");
    jobs.enqueue(&p, "q", &Task::default()).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf-jobs"))
        .args([
            "--url",
            &redis_url(),
            "--json",
            "--watch",
            "0.5",
            "queues",
            &p,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first run shows one queued job; a job enqueued meanwhile shows in a later run.
    let first: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(20)).unwrap()).unwrap();
    assert_eq!(first[0]["queued"], 1, "{first}");
    jobs.enqueue(&p, "q", &Task::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen_two = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        if v[0]["queued"] == 2 {
            seen_two = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen_two, "--watch did not show the second job");
}

#[tokio::test]
async fn limit_zero_means_zero_in_the_cli_and_the_library_and_none_lifts_it() {
    let jobs = jobs().await;
    let p = partition("cli-zero");
    jobs.enqueue(&p, "q", &Task::default()).await.unwrap();
    let (code, out) = cli(&["limit", &p, "q", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 (no job of the queue starts)"), "{out}");
    assert_eq!(jobs.counts(&p, "q").await.unwrap().limit, Some(0));
    let (_, out) = cli(&["queues", &p]);
    assert!(out.contains("limit=0"), "{out}");

    let w = Worker::builder(jobs.clone(), Registry::new().register::<Task>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    // A job due at once is moved to the ready jobs by the same atomic claim that applies the
    // limit: once it has moved, a claim has run and had to start nothing.
    jobs.enqueue_in(&p, "q", &Task::default(), Duration::from_millis(1))
        .await
        .unwrap();
    eventually("a claim on the queue", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().scheduled == 0
    })
    .await
    .unwrap();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(
        (c.queued, c.running, c.completed_total),
        (2, 0, 0),
        "limit 0 let jobs start: {c:?}"
    );

    let (code, out) = cli(&["limit", &p, "q", "none"]);
    assert_eq!(code, 0, "{out}");
    eventually("both jobs to complete", Duration::from_secs(5), || async {
        jobs.counts(&p, "q").await.unwrap().completed_total == 2
    })
    .await
    .unwrap();
    w.shutdown().await;
    assert_eq!(jobs.counts(&p, "q").await.unwrap().limit, None);
}

#[tokio::test]
async fn a_misspelled_partition_or_queue_exits_3_and_creates_nothing() {
    let jobs = jobs().await;
    let p = partition("cli-spell");
    jobs.enqueue(&p, "mail", &Task::default()).await.unwrap();
    let ghost = partition("cli-nosuch");

    for args in [
        vec!["pause", ghost.as_str(), "mail"],
        vec!["limit", ghost.as_str(), "mail", "3"],
        vec!["resume", ghost.as_str(), "mail"],
    ] {
        let (code, out) = cli(&args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(out.contains(&format!("no partition `{ghost}`")), "{out}");
    }
    assert!(!jobs.partitions().await.unwrap().contains(&ghost));

    for args in [
        vec!["pause", p.as_str(), "mial"],
        vec!["limit", p.as_str(), "mial", "0"],
        vec!["purge", p.as_str(), "mial"],
        vec!["dead", p.as_str(), "mial"],
        vec!["retry-dead", p.as_str(), "mial"],
    ] {
        let (code, out) = cli(&args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(out.contains("no queue `mial`"), "{out}");
        assert!(out.contains("its queues: mail"), "{out}");
    }
    assert_eq!(jobs.queues(&p).await.unwrap(), ["mail"]);
    let (code, out) = cli(&["queues", &ghost]);
    assert_eq!(code, 3, "{out}");

    // On purpose: --create sets up a queue before its first job.
    let (code, out) = cli(&["--create", "pause", &p, "later"]);
    assert_eq!(code, 0, "{out}");
    assert!(jobs.counts(&p, "later").await.unwrap().paused);
}

#[tokio::test]
async fn show_and_cancel_of_an_unknown_job_exit_3_with_a_message() {
    let jobs = jobs().await;
    let p = partition("cli-unknown");
    jobs.enqueue(&p, "q", &Task::default()).await.unwrap();
    let (code, out) = cli(&["show", &p, "no-such-id"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no job no-such-id"), "{out}");
    let (code, out) = cli(&["cancel", &p, "no-such-id"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("nothing cancelled"), "{out}");
}

#[test]
fn an_unreachable_redis_exits_1_and_never_prints_the_password() {
    // A port nothing listens on (bound, then closed): the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf-jobs"))
        .args([
            "--url",
            &format!("redis://:sekrit-pass@127.0.0.1:{port}/"),
            "--timeout",
            "2",
            "partitions",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("error:"), "{text}");
    assert!(
        !text.contains("sekrit-pass"),
        "the password was printed: {text}"
    );
}
