//! Supervision behaviour, OTP semantics and wharf's additions.
//!
//! Time is paused (`start_paused = true`): tokio's clock moves only when every task is idle,
//! so backoffs, grace periods and timeouts are exact, bounds derive from the configured
//! durations, and negative checks ("X did not happen") wait for the engine to have answered
//! a call, which it does only between two whole steps (an exit handled, a restart done).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use wharf_core::supervisor::{
    ChildSpec, ChildState, DynamicSupervisor, Restart, Shutdown, Started, Strategy, Supervisor,
};
use wharf_core::{Backoff, Error};
use wharf_testkit::eventually;

/// A shared, ordered log of what children did.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, entry: &str) -> usize {
        self.entries().iter().filter(|e| *e == entry).count()
    }
}

/// A child that logs `start:<id>` and `stop:<id>`, and runs until cancelled.
fn worker(id: &'static str, log: &Log) -> ChildSpec {
    let log = log.clone();
    ChildSpec::new(id, move |ctx| {
        let log = log.clone();
        async move {
            log.push(format!("start:{id}"));
            Ok::<_, Error>(Started::task(async move {
                ctx.cancelled().await;
                log.push(format!("stop:{id}"));
                Ok::<_, Error>(())
            }))
        }
    })
}

/// A child that logs its start, then fails after `after` on its first `failures` runs.
fn flaky(id: &'static str, log: &Log, failures: u32, after: Duration) -> ChildSpec {
    let log = log.clone();
    let runs = Arc::new(AtomicU32::new(0));
    ChildSpec::new(id, move |ctx| {
        let (log, runs) = (log.clone(), Arc::clone(&runs));
        async move {
            log.push(format!("start:{id}"));
            Ok::<_, Error>(Started::task(async move {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                if run < failures {
                    tokio::time::sleep(after).await;
                    return Err(std::io::Error::other(format!("{id} failed on run {run}")));
                }
                ctx.cancelled().await;
                log.push(format!("stop:{id}"));
                Ok::<_, std::io::Error>(())
            }))
        }
    })
}

/// How long a wait on observable state may take before the test fails. Generous: it only
/// bounds a bug; a passing wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(10);

/// How long the engine waits for an aborted task to end (documented: "a second").
const ABORT_WAIT: Duration = Duration::from_secs(1);

fn fast() -> Backoff {
    Backoff::none()
}

// ----- 1. two-phase start -----

#[tokio::test(start_paused = true)]
async fn a_child_starts_only_after_the_previous_childs_setup_finished() {
    let log = Log::default();
    let slow_log = log.clone();
    let slow = ChildSpec::new("slow", move |ctx| {
        let log = slow_log.clone();
        async move {
            log.push("setup-begin:slow");
            tokio::time::sleep(Duration::from_millis(100)).await;
            log.push("setup-end:slow");
            Ok::<_, Error>(Started::task(async move {
                ctx.cancelled().await;
                Ok::<_, Error>(())
            }))
        }
    });
    let sup = Supervisor::builder("root")
        .child(slow)
        .child(worker("next", &log))
        .start()
        .await
        .unwrap();
    assert_eq!(
        log.entries(),
        vec!["setup-begin:slow", "setup-end:slow", "start:next"]
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_fails_the_supervisor_naming_the_child_and_cause() {
    let log = Log::default();
    let broken = ChildSpec::new("database", |_ctx| async {
        Err::<Started, _>(std::io::Error::other(
            "connection refused on 127.0.0.1:5432",
        ))
    });
    let err = Supervisor::builder("root")
        .child(worker("first", &log))
        .child(broken)
        .child(worker("never", &log))
        .start()
        .await
        .unwrap_err();
    match &err {
        Error::StartFailed { child, cause } => {
            assert_eq!(child, "database");
            assert!(cause.to_string().contains("connection refused"), "{cause}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    // The child started before it was stopped again; the one after never started.
    assert_eq!(log.entries(), vec!["start:first", "stop:first"]);
}

#[tokio::test(start_paused = true)]
async fn a_panic_during_setup_fails_the_start_with_the_panic_message() {
    let boom = ChildSpec::new("boom", |_ctx| async {
        if true {
            panic!("config file is missing");
        }
        Ok::<_, Error>(Started::Ignore)
    });
    let err = Supervisor::builder("root")
        .child(boom)
        .start()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`boom`") && text.contains("config file is missing"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_setup_that_hangs_is_bounded_by_its_start_timeout() {
    const START_TIMEOUT: Duration = Duration::from_millis(100);
    let hang = ChildSpec::new("hang", |_ctx| async {
        std::future::pending::<()>().await;
        Ok::<_, Error>(Started::Ignore)
    })
    .start_timeout(Some(START_TIMEOUT));
    let began = Instant::now();
    let err = Supervisor::builder("root")
        .child(hang)
        .start()
        .await
        .unwrap_err();
    let took = began.elapsed();
    // The setup is aborted at its timeout; the engine then waits at most ABORT_WAIT for it.
    assert!(
        took >= START_TIMEOUT && took < START_TIMEOUT + ABORT_WAIT,
        "{took:?}"
    );
    assert!(err.to_string().contains("did not finish within"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn ignore_keeps_the_spec_runs_nothing_and_the_rest_of_the_tree_starts() {
    let log = Log::default();
    let idle = ChildSpec::new("emitter", |_ctx| async { Ok::<_, Error>(Started::Ignore) });
    let sup = Supervisor::builder("root")
        .child(idle)
        .child(worker("after", &log))
        .start()
        .await
        .unwrap();
    let children = sup.which_children().await.unwrap();
    assert_eq!(children[0].id, "emitter");
    assert_eq!(children[0].state, ChildState::Ignored);
    assert_eq!(children[1].state, ChildState::Running);
    assert_eq!(log.entries(), vec!["start:after"]);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn duplicate_child_ids_are_refused() {
    let log = Log::default();
    let err = Supervisor::builder("root")
        .child(worker("a", &log))
        .child(worker("a", &log))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateChild(ref id) if id == "a"),
        "{err:?}"
    );
}

// ----- 2. strategies, restart types, panics -----

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_child_that_failed() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .backoff(fast())
        .child(worker("a", &log))
        .child(flaky("b", &log, 1, Duration::from_millis(10)))
        .child(worker("c", &log))
        .start()
        .await
        .unwrap();
    // The engine answers `which_children` only between whole steps: once it shows `b`
    // running again, the restart (and anything it would have done to a and c) is over.
    eventually("b restarted", WAIT, || async {
        let children = sup.which_children().await.unwrap();
        children[1].restarts == 1 && children[1].state == ChildState::Running
    })
    .await
    .unwrap();
    let children = sup.which_children().await.unwrap();
    assert_eq!((children[0].restarts, children[2].restarts), (0, 0));
    assert_eq!((log.count("start:a"), log.count("start:c")), (1, 1));
    assert_eq!(log.count("stop:a") + log.count("stop:c"), 0);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .strategy(Strategy::OneForAll)
        .backoff(fast())
        .child(worker("a", &log))
        .child(flaky("b", &log, 1, Duration::from_millis(20)))
        .child(worker("c", &log))
        .start()
        .await
        .unwrap();
    eventually("group restarted", WAIT, || async {
        log.count("start:c") == 2
    })
    .await
    .unwrap();
    let after_first_start = log.entries()[3..].to_vec();
    assert_eq!(
        after_first_start,
        vec!["stop:c", "stop:a", "start:a", "start:b", "start:c"]
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .strategy(Strategy::RestForOne)
        .backoff(fast())
        .child(worker("a", &log))
        .child(flaky("b", &log, 1, Duration::from_millis(20)))
        .child(worker("c", &log))
        .start()
        .await
        .unwrap();
    eventually("rest restarted", WAIT, || async {
        log.count("start:c") == 2
    })
    .await
    .unwrap();
    assert_eq!(log.count("start:a"), 1);
    assert_eq!(log.count("stop:a"), 0);
    assert_eq!(log.entries()[3..], ["stop:c", "start:b", "start:c"]);
    sup.shutdown().await.unwrap();
}

/// A child that exits by itself: normally, with an error, or with a panic.
fn exits(id: &'static str, how: &'static str, log: &Log) -> ChildSpec {
    let log = log.clone();
    ChildSpec::new(id, move |_ctx| {
        let log = log.clone();
        async move {
            log.push(format!("start:{id}"));
            Ok::<_, Error>(Started::task(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                match how {
                    "normal" => Ok(()),
                    "error" => Err(Error::Stopped("simulated".into())),
                    _ => panic!("{id} exploded"),
                }
            }))
        }
    })
}

/// Runs `spec` alone until its first exit has been handled; answers whether it was
/// restarted. A static supervisor keeps a child that is not restarted as `Stopped`, and
/// one that is restarted is `Restarting` or running again with a restart counted, so the
/// decision is observable and nothing is left to a sleep.
async fn restarted_after_its_exit(spec: ChildSpec) -> bool {
    let sup = Supervisor::builder("root")
        .backoff(fast())
        .intensity(100, Duration::from_secs(5))
        .child(spec)
        .start()
        .await
        .unwrap();
    let restarted = wharf_testkit::eventually_some("the exit handled", WAIT, || async {
        let child = sup.which_children().await.unwrap().remove(0);
        match (child.state, child.restarts) {
            (ChildState::Stopped, 0) => Some(false),
            (_, n) if n > 0 => Some(true),
            _ => None,
        }
    })
    .await
    .unwrap();
    sup.shutdown().await.unwrap();
    restarted
}

#[tokio::test(start_paused = true)]
async fn restart_types_decide_which_exits_are_restarted() {
    let cases = [
        (Restart::Permanent, "normal", true),
        (Restart::Permanent, "error", true),
        (Restart::Transient, "normal", false),
        (Restart::Transient, "error", true),
        (Restart::Transient, "panic", true),
        (Restart::Temporary, "error", false),
        (Restart::Temporary, "panic", false),
    ];
    for (restart, how, restarted) in cases {
        let log = Log::default();
        let spec = exits("child", how, &log).restart(restart);
        assert_eq!(
            restarted_after_its_exit(spec).await,
            restarted,
            "{restart:?} after a {how} exit"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_an_abnormal_exit_and_its_message_is_reported() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .backoff(Backoff::constant(Duration::from_secs(60)))
        .child(exits("bomb", "panic", &log))
        .start()
        .await
        .unwrap();
    let child = wharf_testkit::eventually_some("the panic handled", WAIT, || async {
        let child = sup.which_children().await.unwrap().remove(0);
        (child.state == ChildState::Restarting).then_some(child)
    })
    .await
    .unwrap();
    let last = child.last_exit.clone().unwrap();
    assert!(
        last.contains("panicked") && last.contains("bomb exploded"),
        "{last}"
    );
    sup.shutdown().await.unwrap();
}

// ----- 3. intensity and escalation -----

#[tokio::test(start_paused = true)]
async fn too_many_restarts_stop_the_children_and_escalate() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .backoff(fast())
        .intensity(2, Duration::from_secs(5))
        .child(worker("bystander", &log))
        .child(flaky("doomed", &log, u32::MAX, Duration::from_millis(5)))
        .start()
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), sup.join())
        .await
        .expect("the supervisor should give up")
        .unwrap_err();
    match err {
        Error::IntensityExceeded {
            supervisor,
            max_restarts,
            last_failure,
            ..
        } => {
            assert_eq!(supervisor, "root");
            assert_eq!(max_restarts, 2);
            assert!(last_failure.contains("doomed"), "{last_failure}");
        }
        other => panic!("expected IntensityExceeded, got {other:?}"),
    }
    // Two restarts were allowed, the third failure escalated.
    assert_eq!(log.count("start:doomed"), 3);
    assert_eq!(log.count("stop:bystander"), 1);
}

#[tokio::test(start_paused = true)]
async fn restarts_spread_wider_than_the_period_do_not_escalate() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .backoff(fast())
        .intensity(1, Duration::from_millis(50))
        .child(flaky("slowly-failing", &log, 4, Duration::from_millis(80)))
        .start()
        .await
        .unwrap();
    eventually("all failures absorbed", WAIT, || async {
        log.count("start:slowly-failing") == 5
    })
    .await
    .unwrap();
    assert!(!sup.is_finished());
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_nested_supervisor_escalates_to_its_parent_which_restarts_it() {
    let log = Log::default();
    let (inner, inner_handle) = Supervisor::builder("inner")
        .backoff(fast())
        .intensity(0, Duration::from_secs(5))
        .child(flaky("fragile", &log, 1, Duration::from_millis(10)))
        .into_child();
    let root = Supervisor::builder("root")
        .backoff(fast())
        .child(worker("sibling", &log))
        .child(inner)
        .start()
        .await
        .unwrap();
    eventually("inner restarted by root", WAIT, || async {
        log.count("start:fragile") == 2
    })
    .await
    .unwrap();
    let tree = root.snapshot().await.unwrap();
    let inner_node = tree.find(&["inner"]).unwrap();
    assert_eq!(inner_node.restarts, 1);
    assert!(
        inner_node
            .last_exit
            .as_deref()
            .unwrap()
            .contains("restart intensity"),
        "{:?}",
        inner_node.last_exit
    );
    // The same handle talks to the new incarnation.
    let children = inner_handle.which_children().await.unwrap();
    assert_eq!(children[0].state, ChildState::Running);
    assert_eq!(log.count("start:sibling"), 1);
    root.shutdown().await.unwrap();
}

// ----- 4. shutdown -----

#[tokio::test(start_paused = true)]
async fn shutdown_stops_children_in_reverse_start_order() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log))
        .start()
        .await
        .unwrap();
    sup.shutdown().await.unwrap();
    assert_eq!(log.entries()[3..], ["stop:c", "stop:b", "stop:a"]);
}

/// Logs when its future is dropped, and whether cancellation had been signalled.
struct DropProbe {
    log: Log,
    ctx: wharf_core::supervisor::ChildContext,
}
impl Drop for DropProbe {
    fn drop(&mut self) {
        self.log
            .push(format!("dropped, cancelled={}", self.ctx.is_cancelled()));
    }
}

fn stubborn(log: &Log, shutdown: Shutdown) -> ChildSpec {
    let log = log.clone();
    ChildSpec::new("stubborn", move |ctx| {
        let log = log.clone();
        async move {
            Ok::<_, Error>(Started::task(async move {
                let _probe = DropProbe { log, ctx };
                std::future::pending::<()>().await; // ignores cancellation
                Ok::<_, Error>(())
            }))
        }
    })
    .shutdown(shutdown)
}

#[tokio::test(start_paused = true)]
async fn a_child_that_ignores_cancellation_is_aborted_after_its_grace_period() {
    const GRACE: Duration = Duration::from_millis(200);
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .child(stubborn(&log, Shutdown::Timeout(GRACE)))
        .start()
        .await
        .unwrap();
    let began = Instant::now();
    sup.shutdown().await.unwrap();
    let took = began.elapsed();
    assert!(took >= GRACE, "aborted too early: {took:?}");
    assert!(took < GRACE + ABORT_WAIT, "grace not enforced: {took:?}");
    assert_eq!(log.entries(), vec!["dropped, cancelled=true"]);
}

#[tokio::test(start_paused = true)]
async fn brutal_shutdown_aborts_at_once_without_a_cancellation_signal() {
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .child(stubborn(&log, Shutdown::Brutal))
        .start()
        .await
        .unwrap();
    let began = Instant::now();
    sup.shutdown().await.unwrap();
    // Aborted without a grace period: less than the default grace, and without a signal.
    let Shutdown::Timeout(default_grace) = Shutdown::default() else {
        unreachable!()
    };
    assert!(began.elapsed() < default_grace, "{:?}", began.elapsed());
    assert_eq!(log.entries(), vec!["dropped, cancelled=false"]);
}

#[tokio::test(start_paused = true)]
async fn a_cooperative_child_is_not_aborted() {
    const GRACE: Duration = Duration::from_secs(10);
    let log = Log::default();
    let sup = Supervisor::builder("root")
        .child(worker("polite", &log).shutdown(Shutdown::Timeout(GRACE)))
        .start()
        .await
        .unwrap();
    let began = Instant::now();
    sup.shutdown().await.unwrap();
    // It ended by itself, long before its grace ran out, and logged its own stop.
    assert!(began.elapsed() < GRACE, "{:?}", began.elapsed());
    assert_eq!(log.entries(), vec!["start:polite", "stop:polite"]);
}

// ----- 5. dynamic supervisor -----

#[tokio::test(start_paused = true)]
async fn a_dynamic_supervisor_starts_lists_counts_and_terminates_children() {
    let log = Log::default();
    let dynamic = DynamicSupervisor::builder("sessions")
        .max_children(3)
        .start()
        .await
        .unwrap();
    let a = dynamic.start_child(worker("session", &log)).await.unwrap();
    let b = dynamic.start_child(worker("session", &log)).await.unwrap();
    let c = dynamic.start_child(worker("session", &log)).await.unwrap();
    assert_ne!(a, b);
    let counts = dynamic.count_children().await.unwrap();
    assert_eq!((counts.specs, counts.active, counts.workers), (3, 3, 3));

    let err = dynamic
        .start_child(worker("session", &log))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooManyChildren { max: 3, .. }),
        "{err:?}"
    );

    dynamic.terminate_child(b).await.unwrap();
    let ids: Vec<_> = dynamic
        .which_children()
        .await
        .unwrap()
        .iter()
        .map(|c| c.child_id)
        .collect();
    assert_eq!(ids, vec![a, c]);
    assert_eq!(log.count("stop:session"), 1);
    let err = dynamic.terminate_child(b).await.unwrap_err();
    assert!(matches!(err, Error::UnknownChild(_)), "{err:?}");

    dynamic.start_child(worker("session", &log)).await.unwrap();
    dynamic.shutdown().await.unwrap();
    assert_eq!(log.count("stop:session"), 4);
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_child_is_restarted_and_a_temporary_one_is_forgotten_when_it_ends() {
    let log = Log::default();
    let dynamic = DynamicSupervisor::builder("d")
        .backoff(fast())
        .start()
        .await
        .unwrap();
    dynamic
        .start_child(flaky("flaky", &log, 1, Duration::from_millis(10)))
        .await
        .unwrap();
    dynamic
        .start_child(exits("once", "normal", &log).restart(Restart::Temporary))
        .await
        .unwrap();
    // The temporary child ends 10 ms after its start and is forgotten; the flaky one fails
    // 10 ms after its start and comes back.
    let children =
        wharf_testkit::eventually_some("the temporary child forgotten", WAIT, || async {
            let children = dynamic.which_children().await.unwrap();
            (children.len() == 1 && children[0].restarts == 1).then_some(children)
        })
        .await
        .unwrap();
    assert_eq!(log.count("start:flaky"), 2);
    assert_eq!(children[0].id, "flaky");
    assert_eq!(children[0].restarts, 1);
    dynamic.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_child_whose_start_fails_is_not_kept() {
    let dynamic = DynamicSupervisor::builder("d").start().await.unwrap();
    let failing = ChildSpec::new("bad", |_ctx| async {
        Err::<Started, _>(std::io::Error::other("no such tenant"))
    });
    let err = dynamic.start_child(failing).await.unwrap_err();
    assert!(err.to_string().contains("no such tenant"), "{err}");
    assert_eq!(dynamic.count_children().await.unwrap().specs, 0);
    dynamic.shutdown().await.unwrap();
}

// ----- 6. backoff and introspection -----

#[tokio::test(start_paused = true)]
async fn restarts_wait_for_the_backoff_delay() {
    const BACKOFF: Duration = Duration::from_millis(150);
    let log = Log::default();
    let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = Arc::clone(&starts);
    let spec = ChildSpec::new("timed", move |_ctx| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(Instant::now());
            Ok::<_, Error>(Started::task(async {
                Err::<(), _>(std::io::Error::other("always"))
            }))
        }
    });
    let sup = Supervisor::builder("root")
        .backoff(Backoff::constant(BACKOFF))
        .intensity(10, Duration::from_secs(10))
        .child(spec)
        .start()
        .await
        .unwrap();
    eventually("three starts", WAIT, || async {
        starts.lock().unwrap().len() >= 3
    })
    .await
    .unwrap();
    sup.shutdown().await.unwrap();
    let times = starts.lock().unwrap().clone();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= BACKOFF, "restart after only {gap:?}");
    }
    drop(log);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_shows_the_whole_tree_with_states_and_restart_counts() {
    let log = Log::default();
    let (sub, _) = Supervisor::builder("brokers")
        .child(worker("kafka", &log))
        .child(ChildSpec::new("sqs", |_ctx| async {
            Ok::<_, Error>(Started::Ignore)
        }))
        .into_child();
    let root = Supervisor::builder("app")
        .backoff(fast())
        .child(sub)
        .child(flaky("api", &log, 1, Duration::from_millis(5)))
        .start()
        .await
        .unwrap();
    eventually("api restarted", WAIT, || async {
        log.count("start:api") == 2
    })
    .await
    .unwrap();
    let tree = root.snapshot().await.unwrap();
    assert_eq!(tree.id, "app");
    assert_eq!(tree.restarts, 1);
    assert_eq!(
        tree.find(&["brokers", "kafka"]).unwrap().state,
        ChildState::Running
    );
    assert_eq!(
        tree.find(&["brokers", "sqs"]).unwrap().state,
        ChildState::Ignored
    );
    assert_eq!(tree.find(&["api"]).unwrap().restarts, 1);
    let rendered = tree.to_string();
    assert!(rendered.contains("kafka Running"), "{rendered}");
    root.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stopped_supervisor_answers_calls_with_stopped() {
    let log = Log::default();
    let sup = Supervisor::builder("gone")
        .child(worker("a", &log))
        .start()
        .await
        .unwrap();
    sup.shutdown().await.unwrap();
    let err = sup.which_children().await.unwrap_err();
    assert!(
        matches!(err, Error::Stopped(ref id) if id == "gone"),
        "{err:?}"
    );
}

// ----- 7. group restarts and children that had ended (OTP's rule) -----

/// A child that exits normally on its first run and runs until cancelled on later ones.
fn done_once(id: &'static str, log: &Log, restart: Restart) -> ChildSpec {
    let log = log.clone();
    let runs = Arc::new(AtomicU32::new(0));
    ChildSpec::new(id, move |ctx| {
        let (log, runs) = (log.clone(), Arc::clone(&runs));
        async move {
            log.push(format!("start:{id}"));
            let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
            Ok::<_, Error>(Started::task(async move {
                if !first {
                    ctx.cancelled().await;
                }
                Ok::<_, Error>(())
            }))
        }
    })
    .restart(restart)
}

/// A child that runs until `fail` is notified, then fails (once); later runs wait for
/// cancellation.
fn fails_when_told(id: &'static str, log: &Log, fail: &Arc<tokio::sync::Notify>) -> ChildSpec {
    let (log, fail) = (log.clone(), Arc::clone(fail));
    let runs = Arc::new(AtomicU32::new(0));
    ChildSpec::new(id, move |ctx| {
        let (log, fail, runs) = (log.clone(), Arc::clone(&fail), Arc::clone(&runs));
        async move {
            log.push(format!("start:{id}"));
            let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
            Ok::<_, Error>(Started::task(async move {
                if first {
                    fail.notified().await;
                    return Err(Error::Stopped(format!("{id} told to fail")));
                }
                ctx.cancelled().await;
                Ok(())
            }))
        }
    })
}

async fn child_state(sup: &wharf_core::supervisor::SupervisorHandle, id: &str) -> ChildState {
    let children = sup.which_children().await.unwrap();
    children.iter().find(|c| c.id == id).unwrap().state
}

/// OTP (`supervisor.erl`, `restart_multiple_children` → `terminate_children` →
/// `start_children`) keeps a transient child that ended normally as a spec without a
/// process, and a group restart starts every non-temporary spec of the group again.
#[tokio::test(start_paused = true)]
async fn a_group_restart_starts_again_a_transient_child_that_had_ended_normally() {
    for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
        let log = Log::default();
        let fail = Arc::new(tokio::sync::Notify::new());
        let sup = Supervisor::builder("root")
            .strategy(strategy)
            .backoff(fast())
            .child(worker("a", &log))
            .child(fails_when_told("b", &log, &fail))
            .child(done_once("finished", &log, Restart::Transient))
            .child(worker("c", &log))
            .start()
            .await
            .unwrap();
        eventually("the transient child ended normally", WAIT, || async {
            child_state(&sup, "finished").await == ChildState::Stopped
        })
        .await
        .unwrap();

        fail.notify_one();
        eventually("the group restarted", WAIT, || async {
            log.count("start:c") == 2
        })
        .await
        .unwrap();
        assert_eq!(
            log.count("start:finished"),
            2,
            "{strategy:?}: restarted with its group"
        );
        assert_eq!(child_state(&sup, "finished").await, ChildState::Running);
        sup.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_leaves_temporary_children_stopped_whether_running_or_ended() {
    for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
        let log = Log::default();
        let fail = Arc::new(tokio::sync::Notify::new());
        let sup = Supervisor::builder("root")
            .strategy(strategy)
            .backoff(fast())
            .child(fails_when_told("b", &log, &fail))
            .child(done_once("once", &log, Restart::Temporary))
            .child(worker("running", &log).restart(Restart::Temporary))
            .child(worker("c", &log))
            .start()
            .await
            .unwrap();
        eventually("the temporary child ended", WAIT, || async {
            child_state(&sup, "once").await == ChildState::Stopped
        })
        .await
        .unwrap();

        fail.notify_one();
        // The group starts in order; `c` comes after `once`, so once `c` started again the
        // moment `once` would have been started has passed.
        eventually("the group restarted", WAIT, || async {
            log.count("start:c") == 2
        })
        .await
        .unwrap();
        assert_eq!(
            log.count("start:once"),
            1,
            "{strategy:?}: a temporary child is never restarted"
        );
        assert_eq!(child_state(&sup, "once").await, ChildState::Stopped);
        // A temporary child still running is stopped with its group and stays stopped.
        assert_eq!(
            (log.count("stop:running"), log.count("start:running")),
            (1, 1),
            "{strategy:?}"
        );
        assert_eq!(child_state(&sup, "running").await, ChildState::Stopped);
        sup.shutdown().await.unwrap();
    }
}

/// A member of a group that dies during the group's restart, whose restart then fails at a
/// later member's setup: the supervisor stops what it had started of the group, the dead
/// member included, and starts the group again after the backoff. Its exit may already have
/// been collected while the supervisor waited for the later member's aborted setup; the
/// stop must not wait out that member's grace and the abort wait for a task already over,
/// while a child outside the group keeps running (the core nemesis found a supervisor stuck
/// so for 1.15 s, its restart counted that much later).
#[tokio::test(start_paused = true)]
async fn a_failed_group_restart_does_not_wait_for_a_member_that_had_already_died() {
    let log = Log::default();
    let grace = Duration::from_secs(5);
    let a_runs = Arc::new(AtomicU32::new(0));
    let a = {
        let (log, runs) = (log.clone(), Arc::clone(&a_runs));
        ChildSpec::new("a", move |ctx| {
            let (log, runs) = (log.clone(), Arc::clone(&runs));
            async move {
                log.push("start:a");
                Ok::<_, Error>(Started::task(async move {
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0 => tokio::time::sleep(Duration::from_millis(20)).await,
                        // Dies at once, during the group's restart.
                        1 => {}
                        _ => {
                            ctx.cancelled().await;
                            return Ok(());
                        }
                    }
                    Err(Error::Stopped("a failed".into()))
                }))
            }
        })
        .shutdown(Shutdown::Timeout(grace))
    };
    let b_setups = Arc::new(AtomicU32::new(0));
    let b = {
        let (log, setups) = (log.clone(), Arc::clone(&b_setups));
        ChildSpec::new("b", move |ctx| {
            let (log, setups) = (log.clone(), Arc::clone(&setups));
            async move {
                log.push("start:b");
                if setups.fetch_add(1, Ordering::SeqCst) == 1 {
                    // Past its start timeout: the group's restart fails here.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, Error>(Started::task(async move {
                    ctx.cancelled().await;
                    Ok::<_, Error>(())
                }))
            }
        })
        .start_timeout(Some(Duration::from_millis(100)))
    };
    let began = Instant::now();
    let sup = Supervisor::builder("root")
        .strategy(Strategy::RestForOne)
        .backoff(fast())
        .child(worker("z", &log))
        .child(a)
        .child(b)
        .start()
        .await
        .unwrap();
    eventually("the group started a third time", WAIT, || async {
        log.count("start:a") == 3 && b_setups.load(Ordering::SeqCst) == 3
    })
    .await
    .unwrap();
    // 20 ms until a's first failure, 100 ms of b's setup cut at its timeout: the rest is
    // the engine's own (no backoff), far below a's grace.
    let took = began.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "the group started again {took:?} after the supervisor's start (a's grace is {grace:?})"
    );
    assert_eq!(a_runs.load(Ordering::SeqCst), 3);
    assert_eq!((log.count("start:z"), log.count("stop:z")), (1, 0));
    sup.shutdown().await.unwrap();
}
