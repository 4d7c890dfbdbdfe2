//! Flows (a parent that runs once after its children, in any queue and partition) and
//! batches (callbacks that run once after the last job), against a real Redis: across
//! partitions, with each failed-child policy, with two worker PROCESSES racing on the last
//! members, with a worker killed (`kill -9`) between a child's end and its count, with a
//! stale worker fenced off, and bad input refused with nothing written.
//!
//! Worker processes are this test binary run again with `WHARF_FLOW_CHILD` set (see
//! `flow_child_worker`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use wharf_job_partition::{
    Batch, ChildFailure, Error, Flow, JobState, Jobs, Worker, WorkerHandle, testing,
};

const WITHIN: Duration = Duration::from_secs(30);

fn is_child() -> bool {
    std::env::var("WHARF_FLOW_CHILD").is_ok()
}

/// Not a test of its own: the body of the worker processes the other tests spawn. Serves
/// queues `a`, `b` and `parents` of every partition in `WHARF_FLOW_CHILD` (comma-separated)
/// until killed (at most 120 s).
#[tokio::test]
#[ignore = "the body of the worker processes the other tests spawn"]
async fn flow_child_worker() {
    let Ok(parts) = std::env::var("WHARF_FLOW_CHILD") else {
        return;
    };
    let jobs = jobs().await;
    let mut b = Worker::builder(jobs.clone(), flow_registry());
    for p in parts.split(',') {
        register_client(p, &jobs);
        for q in ["a", "b", "parents"] {
            b = b.queue(p, q, 8);
        }
    }
    let w = b
        .lease(Duration::from_secs(3))
        .heartbeat_every(Duration::from_millis(300))
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_secs(120)).await;
    w.shutdown().await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(parts: &[&str], stall: bool) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe);
    c.args([
        "flow_child_worker",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("WHARF_FLOW_CHILD", parts.join(","))
    .env(wharf_testkit::BrokerKind::Redis.override_var(), redis_url())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if stall {
        c.env(testing::STALL_BEFORE_FORWARD, "1");
    }
    Proc(c.spawn().unwrap())
}

/// An in-process worker serving queues `a`, `b` and `parents` of `parts`.
fn worker(jobs: &Jobs, parts: &[&str]) -> WorkerHandle {
    let mut b = Worker::builder(jobs.clone(), flow_registry());
    for p in parts {
        for q in ["a", "b", "parents"] {
            b = b.queue(p, q, 8);
        }
    }
    b.lease(Duration::from_secs(3))
        .heartbeat_every(Duration::from_millis(300))
        .build()
        .unwrap()
        .start()
}

fn step(n: u64) -> Step {
    Step {
        n,
        ..Default::default()
    }
}

async fn hget(jobs: &Jobs, key: &str, field: &str) -> i64 {
    let v: Option<i64> = cmd(jobs, redis::cmd("HGET").arg(key).arg(field)).await;
    v.unwrap_or(0)
}

async fn gathered(jobs: &Jobs, p: &str, tag: &str) -> serde_json::Value {
    let v: String = cmd(
        jobs,
        redis::cmd("GET").arg(format!("{{{p}}}:gathered:{tag}")),
    )
    .await;
    serde_json::from_str(&v).unwrap()
}

async fn keys_of(jobs: &Jobs, p: &str) -> Vec<String> {
    let mut k: Vec<String> = cmd(jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:*"))).await;
    k.sort();
    k
}

async fn state(jobs: &Jobs, p: &str, id: &str) -> Option<JobState> {
    jobs.job(p, id).await.unwrap().map(|j| j.state)
}

#[tokio::test]
async fn a_parent_waits_for_children_in_two_partitions_then_runs_once_with_their_results() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let (p1, p2) = (partition("flow1"), partition("flow2"));
    register_client(&p1, &jobs);
    register_client(&p2, &jobs);
    let flow = Flow::new(&Gather { tag: "t".into() })
        .child(&p1, "a", &step(1))
        .child(&p1, "b", &step(2))
        .child(&p2, "a", &step(3));
    let f = jobs.enqueue_flow(&p1, "parents", flow).await.unwrap();
    assert_eq!(f.children.len(), 3);
    assert_eq!(f.children[2].partition, p2);
    assert_eq!(state(&jobs, &p1, &f.parent).await, Some(JobState::Waiting));
    // Only p1 is served: two of three children settle, the parent keeps waiting.
    let w1 = worker(&jobs, &[&p1]);
    eventually("2 of 3 children counted", WITHIN, || async {
        jobs.flow(&p1, &f.parent).await.unwrap().unwrap().done == 2
    })
    .await
    .unwrap();
    let info = jobs.flow(&p1, &f.parent).await.unwrap().unwrap();
    assert_eq!((info.total, info.failed), (3, 0));
    assert_eq!(info.state, JobState::Waiting);
    assert_eq!(info.children.iter().filter(|c| c.1.is_some()).count(), 2);
    let listed = jobs.flows(&p1, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, f.parent);
    assert_eq!(listed[0].done, 2);
    assert_eq!(hget(&jobs, &format!("{{{p1}}}:parent_runs"), "t").await, 0);
    // The child in p2 runs: its outcome crosses partitions and releases the parent.
    let w2 = worker(&jobs, &[&p2]);
    eventually("the parent ran", WITHIN, || async {
        state(&jobs, &p1, &f.parent).await == Some(JobState::Completed)
    })
    .await
    .unwrap();
    assert_eq!(hget(&jobs, &format!("{{{p1}}}:parent_runs"), "t").await, 1);
    let seen = gathered(&jobs, &p1, "t").await;
    let results = seen["results"].as_object().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[&f.children[2].id], 30);
    assert_eq!(results[&f.children[0].id], 10);
    assert!(jobs.flows(&p1, 10).await.unwrap().is_empty());
    w1.shutdown().await;
    w2.shutdown().await;
    for p in [&p1, &p2] {
        let outbox: i64 = cmd(
            &jobs,
            redis::cmd("HLEN").arg(format!("{{wharf:{p}}}:outbox")),
        )
        .await;
        assert_eq!(outbox, 0, "partition {p}: outbox not emptied");
    }
}

#[tokio::test]
async fn each_failed_child_policy_fails_ignores_or_reports_dead_and_cancelled_children() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("flowpol");
    register_client(&p, &jobs);
    let failing = Step {
        n: 9,
        fail: true,
        ..Default::default()
    };
    let mut parents = HashMap::new();
    for (tag, policy) in [
        ("fail", ChildFailure::FailParent),
        ("ignore", ChildFailure::Ignore),
        ("report", ChildFailure::Report),
    ] {
        let flow = Flow::new(&Gather { tag: tag.into() })
            .child(&p, "a", &step(1))
            .child(&p, "a", &failing)
            // Queue `idle` has no worker: this child is cancelled before it runs.
            .child(&p, "idle", &step(2))
            .on_child_failure(policy);
        let f = jobs.enqueue_flow(&p, "parents", flow).await.unwrap();
        jobs.cancel(&p, &f.children[2].id).await.unwrap();
        parents.insert(tag, f);
    }
    let w = worker(&jobs, &[&p]);
    for (tag, want) in [
        ("fail", JobState::Dead),
        ("ignore", JobState::Completed),
        ("report", JobState::Completed),
    ] {
        let id = parents[tag].parent.clone();
        eventually(&format!("parent {tag} settled"), WITHIN, || async {
            state(&jobs, &p, &id).await == Some(want)
        })
        .await
        .unwrap();
    }
    w.shutdown().await;
    // Fail: the parent never ran; its error names the failed children.
    assert_eq!(
        hget(&jobs, &format!("{{{p}}}:parent_runs"), "fail").await,
        0
    );
    let dead = jobs
        .job(&p, &parents["fail"].parent)
        .await
        .unwrap()
        .unwrap();
    let err = dead.error.unwrap_or_default();
    assert!(err.contains("2 of 3 children failed"), "{err}");
    assert!(err.contains(&parents["fail"].children[1].id), "{err}");
    // Ignore: ran once, sees the completed child only.
    assert_eq!(
        hget(&jobs, &format!("{{{p}}}:parent_runs"), "ignore").await,
        1
    );
    let seen = gathered(&jobs, &p, "ignore").await;
    assert_eq!(seen["results"].as_object().unwrap().len(), 1);
    assert!(seen["failed"].as_array().unwrap().is_empty());
    // Report: ran once, with the dead child's error and the cancelled child listed.
    assert_eq!(
        hget(&jobs, &format!("{{{p}}}:parent_runs"), "report").await,
        1
    );
    let seen = gathered(&jobs, &p, "report").await;
    assert_eq!(seen["results"].as_object().unwrap().len(), 1);
    let failed = seen["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    let kids = &parents["report"].children;
    let dead_kid = failed.iter().find(|f| f[0] == kids[1].id.as_str()).unwrap();
    assert_eq!(dead_kid[1], "dead");
    assert!(dead_kid[2].as_str().unwrap().contains("failed on purpose"));
    let cancelled = failed.iter().find(|f| f[0] == kids[2].id.as_str()).unwrap();
    assert_eq!(cancelled[1], "cancelled");
}

#[tokio::test]
async fn cancelling_a_waiting_parent_ends_the_flow_and_its_children_run_on() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("flowcancel");
    register_client(&p, &jobs);
    let flow = Flow::new(&Gather { tag: "c".into() })
        .child(&p, "a", &step(1))
        .child(&p, "a", &step(2));
    let f = jobs.enqueue_flow(&p, "parents", flow).await.unwrap();
    assert_eq!(
        jobs.cancel(&p, &f.parent).await.unwrap(),
        wharf_job_partition::CancelOutcome::Cancelled
    );
    assert!(jobs.flows(&p, 10).await.unwrap().is_empty());
    let w = worker(&jobs, &[&p]);
    for c in &f.children {
        eventually("child completed", WITHIN, || async {
            state(&jobs, &p, &c.id).await == Some(JobState::Completed)
        })
        .await
        .unwrap();
    }
    // Their outcomes are forwarded and dropped (the flow is closed): the outbox empties and
    // the parent never runs.
    eventually("outbox empty", WITHIN, || async {
        let n: i64 = cmd(
            &jobs,
            redis::cmd("HLEN").arg(format!("{{wharf:{p}}}:outbox")),
        )
        .await;
        n == 0
    })
    .await
    .unwrap();
    w.shutdown().await;
    assert_eq!(state(&jobs, &p, &f.parent).await, Some(JobState::Cancelled));
    assert_eq!(hget(&jobs, &format!("{{{p}}}:parent_runs"), "c").await, 0);
}

#[tokio::test]
async fn a_stale_worker_cannot_complete_a_child_and_a_forward_repeated_counts_once() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("flowstale");
    register_client(&p, &jobs);
    let flow = Flow::new(&Gather { tag: "s".into() })
        .child(&p, "a", &step(1))
        .child(&p, "a", &step(2));
    let f = jobs.enqueue_flow(&p, "parents", flow).await.unwrap();
    let lease = Duration::from_millis(300);
    let a = testing::claim(&jobs, &p, "a", 1, lease, "A").await.unwrap();
    eventually(
        "A's lease to expire and the child to be requeued",
        WITHIN,
        || async { testing::reap(&jobs, &p, "a").await.unwrap() == 1 },
    )
    .await
    .unwrap();
    let b = testing::claim(&jobs, &p, "a", 2, Duration::from_secs(30), "B")
        .await
        .unwrap();
    assert_eq!(b.len(), 2);
    // A comes back with its stale token: fenced off, nothing recorded for the flow.
    assert!(
        !testing::complete(&jobs, &p, &a[0].0, &a[0].1)
            .await
            .unwrap()
    );
    let outbox: i64 = cmd(
        &jobs,
        redis::cmd("HLEN").arg(format!("{{wharf:{p}}}:outbox")),
    )
    .await;
    assert_eq!(outbox, 0);
    assert_eq!(jobs.flow(&p, &f.parent).await.unwrap().unwrap().done, 0);
    // B completes the first child; its outcome forwarded many times counts once.
    let first = b.iter().find(|(id, _)| *id == a[0].0).unwrap();
    assert!(
        testing::complete(&jobs, &p, &first.0, &first.1)
            .await
            .unwrap()
    );
    let entry: String = cmd(
        &jobs,
        redis::cmd("HGET")
            .arg(format!("{{wharf:{p}}}:outbox"))
            .arg(&first.0),
    )
    .await;
    assert_eq!(testing::drain_outbox(&jobs, &p).await.unwrap(), 1);
    // Put the same entry back (a worker that counted it, then died before removing it)
    // and forward it again: still counted once.
    let _: i64 = cmd(
        &jobs,
        redis::cmd("HSET")
            .arg(format!("{{wharf:{p}}}:outbox"))
            .arg(&first.0)
            .arg(&entry),
    )
    .await;
    let _: i64 = cmd(
        &jobs,
        redis::cmd("ZADD")
            .arg(format!("{{wharf:{p}}}:outbox:at"))
            .arg(0)
            .arg(&first.0),
    )
    .await;
    assert_eq!(testing::drain_outbox(&jobs, &p).await.unwrap(), 1);
    let info = jobs.flow(&p, &f.parent).await.unwrap().unwrap();
    assert_eq!((info.done, info.state), (1, JobState::Waiting));
    let second = b.iter().find(|(id, _)| *id != a[0].0).unwrap();
    assert!(
        testing::complete(&jobs, &p, &second.0, &second.1)
            .await
            .unwrap()
    );
    // An entry no script wrote, older than the real one, is dropped, not retried forever
    // in front of it.
    let _: i64 = cmd(
        &jobs,
        redis::cmd("HSET")
            .arg(format!("{{wharf:{p}}}:outbox"))
            .arg("junk")
            .arg("not json"),
    )
    .await;
    let _: i64 = cmd(
        &jobs,
        redis::cmd("ZADD")
            .arg(format!("{{wharf:{p}}}:outbox:at"))
            .arg(0)
            .arg("junk"),
    )
    .await;
    assert_eq!(testing::drain_outbox(&jobs, &p).await.unwrap(), 2);
    assert_eq!(state(&jobs, &p, &f.parent).await, Some(JobState::Queued));
    let n: i64 = cmd(
        &jobs,
        redis::cmd("HLEN").arg(format!("{{wharf:{p}}}:outbox")),
    )
    .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn bad_flows_and_batches_are_refused_with_typed_errors_and_nothing_written() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let p = partition("flowbad");
    let q = partition("flowbad2");
    let keyed = Record {
        qkey: Some("k".into()),
        ..Default::default()
    };
    let cases: Vec<(&str, Result<String, Error>)> = vec![
        (
            "empty flow",
            jobs.enqueue_flow(&p, "parents", Flow::new(&Gather::default()))
                .await
                .map(|f| f.parent),
        ),
        (
            "child in a queue whose name is not valid",
            jobs.enqueue_flow(
                &p,
                "parents",
                Flow::new(&Gather::default())
                    .child(&q, "a", &step(1))
                    .child(&q, "no:colons", &step(2)),
            )
            .await
            .map(|f| f.parent),
        ),
        (
            "child in a partition whose name is not valid",
            jobs.enqueue_flow(
                &p,
                "parents",
                Flow::new(&Gather::default())
                    .child(&q, "a", &step(1))
                    .child("{bad}", "a", &step(2)),
            )
            .await
            .map(|f| f.parent),
        ),
        (
            "child with an empty partition name",
            jobs.enqueue_flow(
                &p,
                "parents",
                Flow::new(&Gather::default())
                    .child(&q, "a", &step(1))
                    .child("", "a", &step(2)),
            )
            .await
            .map(|f| f.parent),
        ),
        (
            "batch job with an empty partition name",
            jobs.enqueue_batch(
                &p,
                Batch::new().job(&q, "a", &step(1)).job("", "a", &step(2)),
            )
            .await
            .map(|b| b.id),
        ),
        (
            "parent queue not valid",
            jobs.enqueue_flow(
                &p,
                "",
                Flow::new(&Gather::default()).child(&q, "a", &step(1)),
            )
            .await
            .map(|f| f.parent),
        ),
        (
            "child with a queue key",
            jobs.enqueue_flow(
                &p,
                "parents",
                Flow::new(&Gather::default())
                    .child(&q, "a", &step(1))
                    .child(&q, "a", &keyed),
            )
            .await
            .map(|f| f.parent),
        ),
        (
            "too many children",
            jobs.enqueue_flow(
                &p,
                "parents",
                (0..=wharf_job_partition::MAX_FLOW_CHILDREN as u64)
                    .fold(Flow::new(&Gather::default()), |f, n| {
                        f.child(&q, "a", &step(n))
                    }),
            )
            .await
            .map(|f| f.parent),
        ),
        (
            "empty batch",
            jobs.enqueue_batch(&p, Batch::new().on_complete("cb", &Callback::default()))
                .await
                .map(|b| b.id),
        ),
        (
            "batch callback with a queue key",
            jobs.enqueue_batch(
                &p,
                Batch::new().job(&q, "a", &step(1)).on_success("cb", &keyed),
            )
            .await
            .map(|b| b.id),
        ),
    ];
    for (what, r) in cases {
        match r {
            Err(e @ Error::InvalidFlow { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("nothing was written"), "{what}: {msg}");
            }
            other => panic!("{what}: expected InvalidFlow, got {other:?}"),
        }
        assert!(
            keys_of(&jobs, &p).await.is_empty(),
            "{what}: keys written in {p}"
        );
        assert!(
            keys_of(&jobs, &q).await.is_empty(),
            "{what}: keys written in {q}"
        );
        let known: Vec<String> = cmd(&jobs, redis::cmd("SMEMBERS").arg("wharf:partitions")).await;
        assert!(
            !known.contains(&p) && !known.contains(&q),
            "{what}: partition registered"
        );
    }
    // The error says what to do.
    let e = jobs
        .enqueue_flow(&p, "parents", Flow::new(&Gather::default()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Jobs::enqueue"), "{e}");
}

#[tokio::test]
async fn batch_callbacks_run_once_with_the_counts_on_success_only_when_none_failed() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let (p1, p2) = (partition("batch1"), partition("batch2"));
    register_client(&p1, &jobs);
    register_client(&p2, &jobs);
    let failing = Step {
        n: 9,
        fail: true,
        ..Default::default()
    };
    let mixed = Batch::new()
        .job(&p1, "a", &step(1))
        .job(&p2, "b", &step(2))
        .job(&p2, "a", &failing)
        .on_success("parents", &Callback { tag: "m_ok".into() })
        .on_complete(
            "parents",
            &Callback {
                tag: "m_all".into(),
            },
        );
    let mixed = jobs.enqueue_batch(&p1, mixed).await.unwrap();
    let clean = (0..5)
        .fold(Batch::new(), |b, n| b.job(&p2, "a", &step(n)))
        .on_success("parents", &Callback { tag: "c_ok".into() })
        .on_complete(
            "parents",
            &Callback {
                tag: "c_all".into(),
            },
        );
    jobs.enqueue_batch(&p1, clean).await.unwrap();
    let before = jobs.batch(&p1, &mixed.id).await.unwrap().unwrap();
    assert_eq!((before.total, before.settled), (3, false));
    let w = worker(&jobs, &[&p1, &p2]);
    let runs = format!("{{{p1}}}:callback_runs");
    eventually("callbacks ran", WITHIN, || async {
        hget(&jobs, &runs, "m_all").await == 1
            && hget(&jobs, &runs, "c_all").await == 1
            && hget(&jobs, &runs, "c_ok").await == 1
    })
    .await
    .unwrap();
    let m_ok = mixed.on_success.clone().unwrap();
    eventually(
        "on_success of the failed batch cancelled",
        WITHIN,
        || async { state(&jobs, &p1, &m_ok).await == Some(JobState::Cancelled) },
    )
    .await
    .unwrap();
    w.shutdown().await;
    assert_eq!(hget(&jobs, &runs, "m_ok").await, 0);
    let counts: String = cmd(
        &jobs,
        redis::cmd("GET").arg(format!("{{{p1}}}:counts:m_all")),
    )
    .await;
    assert_eq!(counts, "3 2 1");
    let counts: String = cmd(
        &jobs,
        redis::cmd("GET").arg(format!("{{{p1}}}:counts:c_ok")),
    )
    .await;
    assert_eq!(counts, "5 5 0");
    let info = jobs.batch(&p1, &mixed.id).await.unwrap().unwrap();
    assert!(info.settled);
    assert_eq!((info.succeeded, info.failed), (2, 1));
    assert_eq!(jobs.batches(&p1, 10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_racing_on_the_last_members_run_each_parent_and_callback_once() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let (p1, p2) = (partition("flowrace1"), partition("flowrace2"));
    register_client(&p1, &jobs);
    register_client(&p2, &jobs);
    const FLOWS: usize = 40;
    const BATCHES: usize = 20;
    for i in 0..FLOWS {
        let flow = (0..4).fold(
            Flow::new(&Gather {
                tag: format!("f{i}"),
            }),
            |f, n| {
                let p = if n % 2 == 0 { &p1 } else { &p2 };
                f.child(p, "a", &step(n))
            },
        );
        jobs.enqueue_flow(&p1, "parents", flow.on_child_failure(ChildFailure::Report))
            .await
            .unwrap();
    }
    for i in 0..BATCHES {
        let batch = (0..5)
            .fold(Batch::new(), |b, n| {
                b.job(if n % 2 == 0 { &p1 } else { &p2 }, "b", &step(n))
            })
            .on_complete(
                "parents",
                &Callback {
                    tag: format!("b{i}"),
                },
            );
        jobs.enqueue_batch(&p1, batch).await.unwrap();
    }
    // Both processes serve every queue of both partitions, so members of one flow finish on
    // either process at about the same time.
    let _a = spawn_worker(&[&p1, &p2], false);
    let _b = spawn_worker(&[&p1, &p2], false);
    let parents = format!("{{{p1}}}:parent_runs");
    let callbacks = format!("{{{p1}}}:callback_runs");
    eventually(
        "every parent and callback ran",
        Duration::from_secs(90),
        || async {
            let a: i64 = cmd(&jobs, redis::cmd("HLEN").arg(&parents)).await;
            let b: i64 = cmd(&jobs, redis::cmd("HLEN").arg(&callbacks)).await;
            a == FLOWS as i64 && b == BATCHES as i64
        },
    )
    .await
    .unwrap();
    // Give a double release time to show: both queues idle, then count again.
    eventually("queues drained", WITHIN, || async {
        let c = jobs.counts(&p1, "parents").await.unwrap();
        c.queued == 0 && c.running == 0
    })
    .await
    .unwrap();
    let runs: HashMap<String, i64> = cmd(&jobs, redis::cmd("HGETALL").arg(&parents)).await;
    assert!(
        runs.values().all(|&n| n == 1),
        "a parent ran twice: {runs:?}"
    );
    let runs: HashMap<String, i64> = cmd(&jobs, redis::cmd("HGETALL").arg(&callbacks)).await;
    assert!(
        runs.values().all(|&n| n == 1),
        "a callback ran twice: {runs:?}"
    );
    assert_eq!(
        jobs.counts(&p1, "parents").await.unwrap().completed_total,
        (FLOWS + BATCHES) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_a_childs_end_and_its_count_still_runs_the_parent_once() {
    if is_child() {
        return;
    }
    let jobs = jobs().await;
    let (p1, p2) = (partition("flowkill1"), partition("flowkill2"));
    register_client(&p1, &jobs);
    register_client(&p2, &jobs);
    let flow = Flow::new(&Gather { tag: "k".into() })
        .child(&p2, "a", &step(1))
        .child(&p2, "a", &step(2));
    let f = jobs.enqueue_flow(&p1, "parents", flow).await.unwrap();
    // The process completes the children, then stops before counting them: its outcomes
    // wait in p2's outbox.
    let mut proc = spawn_worker(&[&p2], true);
    let outbox = format!("{{wharf:{p2}}}:outbox");
    eventually("both children completed, not counted", WITHIN, || async {
        let n: i64 = cmd(&jobs, redis::cmd("HLEN").arg(&outbox)).await;
        n == 2
    })
    .await
    .unwrap();
    for c in &f.children {
        assert_eq!(state(&jobs, &p2, &c.id).await, Some(JobState::Completed));
    }
    assert_eq!(jobs.flow(&p1, &f.parent).await.unwrap().unwrap().done, 0);
    proc.0.kill().unwrap(); // SIGKILL
    proc.0.wait().unwrap();
    // Another worker of p2's queues: its lease check forwards the outbox.
    let w = worker(&jobs, &[&p1, &p2]);
    eventually("the parent ran", WITHIN, || async {
        state(&jobs, &p1, &f.parent).await == Some(JobState::Completed)
    })
    .await
    .unwrap();
    w.shutdown().await;
    assert_eq!(hget(&jobs, &format!("{{{p1}}}:parent_runs"), "k").await, 1);
    for n in [1, 2] {
        assert_eq!(
            hget(&jobs, &format!("{{{p2}}}:step_runs"), &n.to_string()).await,
            1
        );
    }
    let n: i64 = cmd(&jobs, redis::cmd("HLEN").arg(&outbox)).await;
    assert_eq!(n, 0);
    let seen = gathered(&jobs, &p1, "k").await;
    assert_eq!(seen["results"].as_object().unwrap().len(), 2);
}
