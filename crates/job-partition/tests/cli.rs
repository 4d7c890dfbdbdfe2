//! The `wharf-jobs` command-line tool against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use wharf_job_partition::JobState;

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
