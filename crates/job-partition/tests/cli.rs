//! The `wharf-jobs` command-line tool against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use wharf_job_partition::{JobState, Registry, Worker};

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf-jobs"))
        .arg("--url")
        .arg(redis_url())
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_cli_lists_counts_pauses_limits_cancels_and_purges() {
    let jobs = jobs().await;
    let p = partition("cli");
    let a = jobs.enqueue(&p, "mail", &Record::default()).await.unwrap();
    jobs.enqueue(&p, "mail", &Record::default()).await.unwrap();

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

#[test]
fn the_cli_answers_bad_usage_with_status_2() {
    let (code, out) = cli(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(out.contains("usage: wharf-jobs"));
}

#[tokio::test]
async fn limit_zero_means_zero_in_the_cli_and_the_library_and_none_lifts_it() {
    let jobs = jobs().await;
    let p = partition("cli-zero");
    register_client(&p, &jobs);
    jobs.enqueue(&p, "q", &Record::default()).await.unwrap();
    let (code, out) = cli(&["limit", &p, "q", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 (no job of the queue starts)"), "{out}");
    assert_eq!(jobs.counts(&p, "q").await.unwrap().limit, Some(0));
    let (_, out) = cli(&["queues", &p]);
    assert!(out.contains("limit=0"), "{out}");

    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    // A job due at once is moved to the ready jobs by the same atomic claim that applies the
    // limit: once it has moved, a claim has run and had to start nothing.
    jobs.enqueue_in(&p, "q", &Record::default(), Duration::from_millis(1))
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

    // The library agrees: Some(0) is zero too, None lifts the limit.
    jobs.set_limit(&p, "q", Some(0)).await.unwrap();
    assert_eq!(jobs.counts(&p, "q").await.unwrap().limit, Some(0));
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
async fn pause_and_limit_of_a_misspelled_partition_or_queue_fail_and_create_nothing() {
    let jobs = jobs().await;
    let p = partition("cli-spell");
    jobs.enqueue(&p, "mail", &Record::default()).await.unwrap();
    let ghost = partition("cli-nosuch");

    for args in [
        vec!["pause", ghost.as_str(), "mail"],
        vec!["limit", ghost.as_str(), "mail", "3"],
        vec!["resume", ghost.as_str(), "mail"],
    ] {
        let (code, out) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains(&format!("no partition `{ghost}`")), "{out}");
    }
    assert!(!jobs.partitions().await.unwrap().contains(&ghost));

    for args in [
        vec!["pause", p.as_str(), "mial"],
        vec!["limit", p.as_str(), "mial", "0"],
        vec!["purge", p.as_str(), "mial"],
        vec!["dead", p.as_str(), "mial"],
    ] {
        let (code, out) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains("no queue `mial`"), "{out}");
        assert!(out.contains("its queues: mail"), "{out}");
    }
    assert_eq!(jobs.queues(&p).await.unwrap(), ["mail"]);
    let (code, out) = cli(&["queues", &ghost]);
    assert_eq!(code, 1, "{out}");

    // On purpose: --create sets up a queue before its first job.
    let (code, out) = cli(&["--create", "pause", &p, "later"]);
    assert_eq!(code, 0, "{out}");
    assert!(jobs.counts(&p, "later").await.unwrap().paused);
}

#[tokio::test]
async fn show_and_cancel_of_an_unknown_job_exit_1_with_a_message() {
    let jobs = jobs().await;
    let p = partition("cli-unknown");
    jobs.enqueue(&p, "q", &Record::default()).await.unwrap();
    let (code, out) = cli(&["show", &p, "no-such-id"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no job no-such-id"), "{out}");
    let (code, out) = cli(&["cancel", &p, "no-such-id"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing cancelled"), "{out}");
}

#[tokio::test]
async fn the_cli_lists_pauses_resumes_and_removes_schedules() {
    let jobs = jobs().await;
    let p = partition("clisched");
    let daily = wharf_job_partition::Schedule::cron_in("0 0 3 * * *", "Europe/Berlin").unwrap();
    jobs.schedule(&p, "reports", "nightly", &daily, &Record::default())
        .await
        .unwrap();

    let (code, out) = cli(&["schedules", &p]);
    assert_eq!(code, 0, "{out}");
    let row = out.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(
        row.contains("reports") && row.contains("Europe/Berlin"),
        "{row}"
    );

    assert_eq!(cli(&["schedule-pause", &p, "nightly"]).0, 0);
    let (_, out) = cli(&["schedules", &p]);
    assert!(out.contains("paused"), "{out}");
    assert!(jobs.schedules(&p).await.unwrap()[0].paused);
    assert_eq!(cli(&["schedule-resume", &p, "nightly"]).0, 0);
    assert!(!jobs.schedules(&p).await.unwrap()[0].paused);

    let (code, out) = cli(&["schedule-remove", &p, "nope"]);
    assert_eq!(code, 1);
    assert!(out.contains("no schedule `nope`"), "{out}");
    assert_eq!(cli(&["schedule-remove", &p, "nightly"]).0, 0);
    assert!(jobs.schedules(&p).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cli_shows_and_sets_rate_limits_and_refuses_bad_windows() {
    let jobs = jobs().await;
    let p = partition("clirate");
    jobs.enqueue(&p, "api", &Record::default()).await.unwrap();

    let (code, out) = cli(&["rate", &p, "api", "10", "2s"]);
    assert_eq!(code, 0, "{out}");
    let limit = jobs.counts(&p, "api").await.unwrap().rate_limit.unwrap();
    assert_eq!((limit.max(), limit.window()), (10, Duration::from_secs(2)));
    let (_, out) = cli(&["rate", &p, "api"]);
    assert!(out.contains("10 starts per 2s"), "{out}");
    let (_, out) = cli(&["queues", &p]);
    assert!(out.contains("rate=10/2s"), "{out}");

    for (n, window) in [("10", "0"), ("10", "-1s"), ("0", "1s"), ("10", "soon")] {
        let (code, out) = cli(&["rate", &p, "api", n, window]);
        assert_eq!(code, 1, "{n} {window}: {out}");
    }
    let limit = jobs.counts(&p, "api").await.unwrap().rate_limit.unwrap();
    assert_eq!(limit.max(), 10, "a refused change wrote nothing");

    assert_eq!(cli(&["rate", &p, "api", "none"]).0, 0);
    assert!(jobs.counts(&p, "api").await.unwrap().rate_limit.is_none());
}
