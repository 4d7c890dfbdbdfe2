//! Handles that outlive restarts, and the deadline on every call: a supervised counter
//! service and its callers.
//!
//! Call deadlines run on the real clock (one thread per process enforces them, whatever the
//! runtimes do), so the tests about them use real time with call timeouts of a few hundred
//! milliseconds. On a runtime whose tokio clock is paused a call's deadline follows that
//! clock instead: the `paused_time_*` tests check that, with timeouts far longer than the
//! tests take. Every test is bounded by [`TEST_BOUND`], so a call that never ends fails the
//! test instead of hanging it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Notify;
use wharf_core::service::{CALL_DEADLINE_SLACK, ServiceHandle, TryCallError, mailbox};
use wharf_core::supervisor::{ChildSpec, Shutdown, Started, Supervisor, SupervisorHandle};
use wharf_core::{Backoff, Error};
use wharf_testkit::eventually;

/// The most any test here may take.
const TEST_BOUND: Duration = Duration::from_secs(60);
/// The call timeout of the deadline tests.
const SHORT: Duration = Duration::from_millis(250);
/// How late past its deadline a call may end in these tests: the documented slack plus the
/// scheduling delays of a machine loaded by other builds, and never less than the call
/// timeouts configured here.
const LATE_ALLOWED: Duration = Duration::from_secs(1);

/// The worked example: a counter whose state lives in its task.
enum Cmd {
    /// Adds to the total and answers the new total.
    Add(u64),
    /// Signals `taken`, waits until `gate` opens, then answers the total: a service that
    /// hangs in the middle of a request, without blocking its thread.
    Hold {
        taken: Arc<Notify>,
        gate: Arc<Notify>,
    },
    /// Panics: a bug in the service.
    Crash,
    /// Returns an error from the run loop: a failure the service chose to die on.
    Fail,
    /// Never handled (queued behind a hung request); panics when dropped, if armed.
    Bomb(Bomb),
}

struct Bomb {
    armed: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        assert!(!self.armed, "a request whose Drop panics");
    }
}

fn counter_spec(mailbox: wharf_core::service::Mailbox<Cmd, u64>, shutdown: Shutdown) -> ChildSpec {
    ChildSpec::new("counter", move |ctx| {
        let mailbox = mailbox.clone();
        async move {
            let mut inbox = mailbox.attach().await;
            let mut total = 0_u64;
            Ok::<_, Error>(Started::task(async move {
                while let Some(request) = inbox.recv_until(&ctx).await {
                    let (cmd, reply) = request.into_parts();
                    match cmd {
                        Cmd::Add(n) => {
                            total += n;
                            reply.send(total);
                        }
                        Cmd::Hold { taken, gate } => {
                            taken.notify_one();
                            gate.notified().await;
                            reply.send(total);
                        }
                        Cmd::Crash => panic!("counter bug"),
                        Cmd::Fail => return Err(std::io::Error::other("gave up")),
                        Cmd::Bomb(mut bomb) => bomb.armed = false,
                    }
                }
                Ok(())
            }))
        }
    })
    .shutdown(shutdown)
}

async fn start_counter_with(
    capacity: usize,
    backoff: Backoff,
    shutdown: Shutdown,
) -> (ServiceHandle<Cmd, u64>, SupervisorHandle) {
    let (handle, mailbox) = mailbox::<Cmd, u64>("counter", capacity);
    let sup = Supervisor::builder("root")
        .backoff(backoff)
        .intensity(10, Duration::from_secs(5))
        .child(counter_spec(mailbox, shutdown))
        .start()
        .await
        .unwrap();
    (handle, sup)
}

async fn start_counter(capacity: usize) -> (ServiceHandle<Cmd, u64>, SupervisorHandle) {
    start_counter_with(capacity, Backoff::none(), Shutdown::default()).await
}

/// Runs a test body within [`TEST_BOUND`].
async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .expect("the test did not finish within its bound: a call never ended")
}

async fn wait_queued(handle: &ServiceHandle<Cmd, u64>, n: usize) {
    eventually(
        &format!("{n} requests queued"),
        Duration::from_secs(10),
        || async { handle.queued() == n },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; queued: {}", handle.queued()));
}

/// Makes the service take a request it will not answer until the gate opens; returns once
/// it has taken it.
async fn hold(
    handle: &ServiceHandle<Cmd, u64>,
) -> (tokio::task::JoinHandle<Result<u64, Error>>, Arc<Notify>) {
    let (taken, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let held = tokio::spawn({
        let (handle, taken, gate) = (handle.clone(), Arc::clone(&taken), Arc::clone(&gate));
        async move { handle.call(Cmd::Hold { taken, gate }).await }
    });
    taken.notified().await;
    (held, gate)
}

/// Calls and measures how long the call took.
async fn timed(handle: &ServiceHandle<Cmd, u64>, cmd: Cmd) -> (Result<u64, Error>, Duration) {
    let began = Instant::now();
    let result = handle.call(cmd).await;
    (result, began.elapsed())
}

/// Asserts a timeout after `timeout` (never before it, at most `LATE_ALLOWED` after it)
/// whose message says `stood`.
fn assert_timed_out(result: Result<u64, Error>, took: Duration, timeout: Duration, stood: &str) {
    match result {
        Err(Error::Timeout { what, after }) => {
            assert_eq!(after, timeout);
            assert!(what.contains(stood), "expected `{stood}` in: {what}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= timeout,
        "ended {took:?} after it began, before its deadline"
    );
    assert!(
        took <= timeout + LATE_ALLOWED,
        "ended {:?} after its deadline",
        took - timeout
    );
}

#[tokio::test]
async fn requests_queued_during_a_crash_are_all_served_by_the_next_incarnation() {
    bounded(async {
        let (counter, sup) = start_counter(128).await;
        assert_eq!(counter.call(Cmd::Add(10)).await.unwrap(), 10);

        // Keep the service busy so what follows queues up behind it, in order.
        let (held, gate) = hold(&counter).await;
        let crash = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call(Cmd::Crash).await }
        });
        wait_queued(&counter, 1).await;
        let mut adds = Vec::new();
        for i in 0..50 {
            let caller = counter.clone();
            adds.push(tokio::spawn(async move { caller.call(Cmd::Add(1)).await }));
            wait_queued(&counter, 2 + i).await;
        }

        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap(), 10);
        // Only the request in flight at the crash fails, with a typed error.
        match crash.await.unwrap() {
            Err(Error::ServiceCrashed { service, reason }) => {
                assert_eq!(service, "counter");
                assert!(reason.contains("panicked"), "{reason}");
            }
            other => panic!("expected ServiceCrashed, got {other:?}"),
        }
        // Every queued request is served, once, by the new incarnation (state rebuilt from 0).
        let mut totals = BTreeSet::new();
        for add in adds {
            totals.insert(add.await.unwrap().unwrap());
        }
        assert_eq!(totals, (1..=50).collect::<BTreeSet<u64>>());
        let children = sup.which_children().await.unwrap();
        assert_eq!(children[0].restarts, 1);
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_service_that_returns_an_error_fails_only_the_request_it_was_handling() {
    bounded(async {
        let (counter, sup) = start_counter(16).await;
        let err = counter.call(Cmd::Fail).await.unwrap_err();
        assert!(matches!(err, Error::ServiceCrashed { .. }), "{err:?}");
        assert_eq!(counter.call(Cmd::Add(3)).await.unwrap(), 3);
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_same_handle_survives_many_crashes() {
    bounded(async {
        let (counter, sup) = start_counter(16).await;
        for _ in 0..5 {
            assert!(counter.call(Cmd::Crash).await.is_err());
            assert_eq!(counter.call(Cmd::Add(1)).await.unwrap(), 1);
        }
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn try_call_on_a_full_mailbox_fails_at_once_and_hands_the_request_back() {
    bounded(async {
        let (counter, sup) = start_counter(2).await;
        let (held, gate) = hold(&counter).await;
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let counter = counter.clone();
                tokio::spawn(async move { counter.call(Cmd::Add(1)).await })
            })
            .collect();
        wait_queued(&counter, 2).await;
        let err = counter.try_call(Cmd::Add(40)).await.unwrap_err();
        assert!(
            matches!(err, TryCallError::Full { capacity: 2, .. }),
            "{err:?}"
        );
        let Some(Cmd::Add(n)) = err.into_inner() else {
            panic!("the refused request should come back as it was sent");
        };
        assert_eq!(n, 40);

        gate.notify_one();
        held.await.unwrap().unwrap();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        // The request that came back is sent again, without a clone: 1 + 1 + 40.
        assert_eq!(counter.call(Cmd::Add(n)).await.unwrap(), 42);
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn after_the_service_stops_for_good_queued_and_new_calls_fail_with_stopped() {
    bounded(async {
        // The holder never answers: shutdown aborts it after its grace.
        let grace = Shutdown::Timeout(Duration::from_millis(100));
        let (counter, sup) = start_counter_with(8, Backoff::none(), grace).await;
        let (held, _gate) = hold(&counter).await;
        let queued = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call(Cmd::Add(1)).await }
        });
        wait_queued(&counter, 1).await;

        // Shutting down stops the holder (it gets no answer) and drops the mailbox.
        sup.shutdown().await.unwrap();

        let held = held.await.unwrap();
        assert!(
            matches!(held, Err(Error::ServiceCrashed { .. })),
            "{held:?}"
        );
        let queued = queued.await.unwrap();
        assert!(matches!(queued, Err(Error::Stopped(_))), "{queued:?}");
        let late = counter.call(Cmd::Add(1)).await;
        assert!(matches!(late, Err(Error::Stopped(_))), "{late:?}");
        let late = counter.try_call(Cmd::Add(7)).await;
        assert!(
            matches!(
                late,
                Err(TryCallError::Stopped {
                    request: Cmd::Add(7),
                    ..
                })
            ),
            "{late:?}"
        );
    })
    .await;
}

/// `#[tokio::test]` runs on a current_thread runtime: the service and the observer share its
/// one thread, so the observer runs during the drain only if the service yields.
#[tokio::test]
async fn a_service_draining_a_long_queue_lets_other_tasks_on_its_runtime_run() {
    const QUEUED: usize = 2_000;
    bounded(async {
        let (counter, sup) = start_counter(QUEUED + 8).await;
        let (held, gate) = hold(&counter).await;
        let calls = tokio::spawn({
            let counter = counter.clone();
            async move {
                let calls: FuturesUnordered<_> =
                    (0..QUEUED).map(|_| counter.call(Cmd::Add(1))).collect();
                calls.collect::<Vec<_>>().await
            }
        });
        wait_queued(&counter, QUEUED).await;
        let observer = tokio::spawn({
            let counter = counter.clone();
            async move {
                let mut saw_the_drain_midway = false;
                loop {
                    let queued = counter.queued();
                    saw_the_drain_midway |= queued > 0 && queued < QUEUED;
                    if queued == 0 {
                        return saw_the_drain_midway;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });

        gate.notify_one();

        assert!(
            observer.await.unwrap(),
            "the service took {QUEUED} requests without letting another task run"
        );
        held.await.unwrap().unwrap();
        assert!(calls.await.unwrap().iter().all(Result::is_ok));
        sup.shutdown().await.unwrap();
    })
    .await;
}

// ----- the deadline on every call -----
// `#[tokio::test]` runs each test on a current_thread runtime: the caller's runtime has one
// thread, which must be woken from outside when a deadline passes.

#[tokio::test]
async fn a_call_to_a_service_that_hangs_mid_request_fails_at_its_deadline() {
    bounded(async {
        let (counter, sup) = start_counter(4).await;
        let short = counter.clone().with_call_timeout(SHORT);
        let (taken, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));

        let (result, took) = timed(
            &short,
            Cmd::Hold {
                taken,
                gate: Arc::clone(&gate),
            },
        )
        .await;

        assert_timed_out(result, took, SHORT, "may still take effect");
        gate.notify_one();
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn calls_queued_behind_a_hung_request_fail_at_their_deadline_and_are_never_served() {
    bounded(async {
        let (counter, sup) = start_counter(8).await;
        let short = counter.clone().with_call_timeout(SHORT);
        let (held, gate) = hold(&counter).await;

        let calls: Vec<_> = (0..3)
            .map(|_| {
                let short = short.clone();
                tokio::spawn(async move { timed(&short, Cmd::Add(1)).await })
            })
            .collect();
        for call in calls {
            let (result, took) = call.await.unwrap();
            assert_timed_out(result, took, SHORT, "withdrawn, it will never be served");
        }

        assert_eq!(counter.queued(), 0, "timed-out requests left in the queue");
        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap(), 0);
        assert_eq!(
            counter.call(Cmd::Add(0)).await.unwrap(),
            0,
            "a withdrawn Add ran"
        );
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_call_waiting_for_room_in_a_full_mailbox_fails_at_its_deadline_and_is_never_queued() {
    bounded(async {
        let (counter, sup) = start_counter(1).await;
        let short = counter.clone().with_call_timeout(SHORT);
        let (held, gate) = hold(&counter).await;
        let queued = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call(Cmd::Add(10)).await }
        });
        wait_queued(&counter, 1).await;

        let (result, took) = timed(&short, Cmd::Add(100)).await;

        assert_timed_out(result, took, SHORT, "never queued");
        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap(), 0);
        assert_eq!(queued.await.unwrap().unwrap(), 10);
        assert_eq!(
            counter.call(Cmd::Add(0)).await.unwrap(),
            10,
            "the Add(100) ran"
        );
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_call_made_while_the_service_restarts_fails_at_its_deadline_and_is_withdrawn() {
    bounded(async {
        // The restart waits an hour: while it does, no incarnation takes requests.
        let backoff = Backoff::constant(Duration::from_secs(3600));
        let (counter, sup) = start_counter_with(4, backoff, Shutdown::default()).await;
        let short = counter.clone().with_call_timeout(SHORT);
        let crashed = counter.call(Cmd::Crash).await;
        assert!(
            matches!(crashed, Err(Error::ServiceCrashed { .. })),
            "{crashed:?}"
        );

        let (result, took) = timed(&short, Cmd::Add(1)).await;

        assert_timed_out(result, took, SHORT, "withdrawn, it will never be served");
        assert_eq!(counter.queued(), 0, "the timed-out request stayed queued");
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_call_to_a_service_that_blocks_its_runtimes_only_thread_fails_at_its_deadline() {
    bounded(async {
        // The service runs on a current_thread runtime of its own and blocks that thread;
        // the caller is on another runtime (this test's).
        let (handle, mailbox) = mailbox::<std::sync::mpsc::Receiver<()>, u64>("blocker", 4);
        let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
        let service = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut inbox = mailbox.attach().await;
                let mut taken = Some(taken_tx);
                while let Some(request) = inbox.recv().await {
                    let (release, reply) = request.into_parts();
                    if let Some(taken) = taken.take() {
                        let _ = taken.send(());
                    }
                    let _ = release.recv(); // blocks this runtime's only thread
                    reply.send(1);
                }
            });
        });
        let short = handle.clone().with_call_timeout(SHORT);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();

        let began = Instant::now();
        let call = tokio::spawn(async move { short.call(release_rx).await });
        taken_rx.await.unwrap();
        let result = call.await.unwrap();

        assert_timed_out(result, began.elapsed(), SHORT, "may still take effect");
        drop(release_tx);
        drop(handle);
        tokio::task::spawn_blocking(move || service.join())
            .await
            .unwrap()
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn calls_with_different_timeouts_each_fail_at_their_own_deadline() {
    bounded(async {
        let (counter, sup) = start_counter(64).await;
        let (held, gate) = hold(&counter).await;

        // Queued in an order that is not the order of their deadlines.
        let calls: Vec<_> = (0..40_u64)
            .map(|i| {
                let timeout = Duration::from_millis(100 + (i * 17 % 40) * 5);
                let caller = counter.clone().with_call_timeout(timeout);
                tokio::spawn(async move { (timeout, timed(&caller, Cmd::Add(1)).await) })
            })
            .collect();
        let mut latest = Duration::ZERO;
        for call in calls {
            let (timeout, (result, took)) = call.await.unwrap();
            assert_timed_out(result, took, timeout, "withdrawn");
            latest = latest.max(took - timeout);
        }
        println!("40 calls ended at most {latest:?} after their deadlines (slack {CALL_DEADLINE_SLACK:?})");

        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap(), 0);
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_caller_that_gives_up_while_waiting_for_room_withdraws_its_request() {
    bounded(async {
        let (counter, sup) = start_counter(1).await;
        let (held, gate) = hold(&counter).await;
        let queued = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call(Cmd::Add(10)).await }
        });
        wait_queued(&counter, 1).await;

        // The caller's own timeout, not the handle's: the call future is dropped.
        let gave_up = tokio::time::timeout(SHORT, counter.call(Cmd::Add(100))).await;

        assert!(gave_up.is_err(), "{gave_up:?}");
        gate.notify_one();
        held.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 10);
        assert_eq!(
            counter.call(Cmd::Add(0)).await.unwrap(),
            10,
            "the Add(100) ran"
        );
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_request_whose_drop_panics_does_not_stop_the_deadlines_of_later_calls() {
    bounded(async {
        let (counter, sup) = start_counter(8).await;
        let short = counter.clone().with_call_timeout(SHORT);
        let (held, gate) = hold(&counter).await;

        // Withdrawn at its deadline, so dropped by the deadline thread, where it panics.
        let (result, took) = timed(&short, Cmd::Bomb(Bomb { armed: true })).await;
        assert_timed_out(result, took, SHORT, "withdrawn");

        let (result, took) = timed(&short, Cmd::Add(1)).await;
        assert_timed_out(result, took, SHORT, "withdrawn");
        gate.notify_one();
        held.await.unwrap().unwrap();
        sup.shutdown().await.unwrap();
    })
    .await;
}

/// The deadline thread wakes callers through their wakers: a call made under an executor
/// that is not tokio's still ends at its deadline.
#[test]
fn a_call_under_another_executor_fails_at_its_deadline() {
    let (handle, mailbox) = mailbox::<u64, u64>("nobody-serves", 4);
    let short = handle.with_call_timeout(SHORT);
    let (result_tx, result_rx) = std::sync::mpsc::channel();

    let began = Instant::now();
    std::thread::spawn(move || {
        let result = futures::executor::block_on(short.call(1));
        let _ = result_tx.send((result, began.elapsed()));
    });
    let (result, took) = result_rx
        .recv_timeout(TEST_BOUND)
        .expect("the call never ended");

    assert_timed_out(result, took, SHORT, "withdrawn");
    drop(mailbox);
}

// ----- a service with its own poll loop, and a responder that knows its caller left -----

#[tokio::test]
async fn a_service_with_its_own_poll_loop_takes_requests_with_poll_recv() {
    bounded(async {
        let (doubler, mailbox) = mailbox::<u64, u64>("doubler", 4);
        let service = tokio::spawn(async move {
            let mut inbox = mailbox.attach().await;
            while let Some(request) = std::future::poll_fn(|cx| inbox.poll_recv(cx)).await {
                let n = *request.get();
                request.reply(2 * n);
            }
        });
        // Each call arrives while the loop waits (Pending): the request wakes it.
        assert_eq!(doubler.call(21).await.unwrap(), 42);
        assert_eq!(doubler.call(4).await.unwrap(), 8);
        // Every handle gone: the loop sees the end.
        drop(doubler);
        service
            .await
            .expect("poll_recv answers None once the handles are gone");
    })
    .await;
}

/// A request taken with `poll_recv` counts as taken: a crash fails it with
/// `ServiceCrashed`, and its deadline says it may still take effect.
#[tokio::test]
async fn a_request_taken_with_poll_recv_is_in_the_services_hands() {
    bounded(async {
        let (handle, mailbox) = mailbox::<&'static str, ()>("poller", 4);
        let short = handle.clone().with_call_timeout(SHORT);
        let (taken_tx, mut taken_rx) = tokio::sync::mpsc::unbounded_channel();
        let service = tokio::spawn(async move {
            let mut inbox = mailbox.attach().await;
            while let Some(request) = std::future::poll_fn(|cx| inbox.poll_recv(cx)).await {
                match *request.get() {
                    "crash" => panic!("asked to crash"),
                    // Kept unanswered: the service hangs on it.
                    _ => taken_tx.send(request).unwrap(),
                }
            }
        });

        let (result, took) = {
            let began = Instant::now();
            let result = short.call("hang").await;
            (result, began.elapsed())
        };
        match result {
            Err(Error::Timeout { what, after }) => {
                assert_eq!(after, SHORT);
                assert!(what.contains("may still take effect"), "{what}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(took >= SHORT, "ended {took:?} after it began, before its deadline");
        let kept = taken_rx.recv().await.unwrap();
        assert!(!kept.reply(()), "the caller no longer waits");

        let crashed = handle.call("crash").await;
        assert!(
            matches!(crashed, Err(Error::ServiceCrashed { ref reason, .. }) if reason.contains("panicked")),
            "{crashed:?}"
        );
        assert!(service.await.unwrap_err().is_panic());
    })
    .await;
}

/// `#[tokio::test]` runs on a current_thread runtime: the poll loop and the observer share
/// its one thread, so the observer runs during the drain only if `poll_recv` yields.
#[tokio::test]
async fn a_poll_loop_draining_a_long_queue_lets_other_tasks_on_its_runtime_run() {
    const QUEUED: usize = 2_000;
    bounded(async {
        let (handle, mailbox) = mailbox::<(), ()>("drained", QUEUED);
        let calls = tokio::spawn({
            let handle = handle.clone();
            async move {
                let calls: FuturesUnordered<_> = (0..QUEUED).map(|_| handle.call(())).collect();
                calls.collect::<Vec<_>>().await
            }
        });
        eventually("every request queued", Duration::from_secs(10), || async {
            handle.queued() == QUEUED
        })
        .await
        .unwrap();
        let service = tokio::spawn(async move {
            let mut inbox = mailbox.attach().await;
            // Answers without ever awaiting anything else: only poll_recv can yield.
            std::future::poll_fn(|cx| {
                loop {
                    match inbox.poll_recv(cx) {
                        std::task::Poll::Ready(Some(request)) => {
                            request.reply(());
                        }
                        std::task::Poll::Ready(None) => return std::task::Poll::Ready(()),
                        std::task::Poll::Pending => return std::task::Poll::Pending,
                    }
                }
            })
            .await;
        });
        let observer = tokio::spawn({
            let handle = handle.clone();
            async move {
                let mut saw_the_drain_midway = false;
                loop {
                    let queued = handle.queued();
                    saw_the_drain_midway |= queued > 0 && queued < QUEUED;
                    if queued == 0 {
                        return saw_the_drain_midway;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });

        assert!(
            observer.await.unwrap(),
            "the poll loop took {QUEUED} requests without letting another task run"
        );
        assert!(calls.await.unwrap().iter().all(Result::is_ok));
        drop(handle);
        service.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_responder_tells_whether_its_caller_still_waits() {
    bounded(async {
        let (service, mailbox) = mailbox::<(), ()>("slow", 4);
        let short = service.clone().with_call_timeout(SHORT);
        let mut inbox = mailbox.attach().await;

        // The caller times out.
        let caller = tokio::spawn(async move { short.call(()).await });
        let (_, responder) = inbox.recv().await.unwrap().into_parts();
        assert!(!responder.is_closed(), "the caller waits");
        let answer = caller.await.unwrap();
        assert!(matches!(answer, Err(Error::Timeout { .. })), "{answer:?}");
        assert!(responder.is_closed(), "the caller gave up at its timeout");
        assert!(!responder.send(()), "nobody takes the answer");

        // The caller's future is dropped.
        let caller = tokio::spawn({
            let service = service.clone();
            async move { service.call(()).await }
        });
        let (_, responder) = inbox.recv().await.unwrap().into_parts();
        assert!(!responder.is_closed(), "the caller waits");
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert!(responder.is_closed(), "the caller's call was dropped");
    })
    .await;
}

// ----- under paused tokio time: the deadline follows the runtime's clock -----
// A test's paused clock moves only to tokio's timers, when every task is idle. A deadline on
// the system clock would not be one of them: these timeouts (20 s and more) would then take
// real time, and `bounded` (a tokio timer at 60 s) would fire first, failing the test.

/// Far longer than any of these tests takes in real time; twice it is within `TEST_BOUND`.
const PAUSED_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(start_paused = true)]
async fn paused_time_a_call_to_a_service_that_hangs_mid_request_fails_at_its_deadline_on_tokios_clock()
 {
    bounded(async {
        let (counter, sup) = start_counter(4).await;
        let timed_out = counter.clone().with_call_timeout(PAUSED_TIMEOUT);
        let (taken, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let real = Instant::now();
        let began = tokio::time::Instant::now();

        let result = timed_out
            .call(Cmd::Hold {
                taken,
                gate: Arc::clone(&gate),
            })
            .await;

        assert_eq!(
            began.elapsed(),
            PAUSED_TIMEOUT,
            "at its deadline, on tokio's clock"
        );
        assert!(real.elapsed() < PAUSED_TIMEOUT, "not on the system clock");
        match result {
            Err(Error::Timeout { what, .. }) => {
                assert!(what.contains("may still take effect"), "{what}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        gate.notify_one();
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn paused_time_calls_queued_or_waiting_for_room_fail_at_their_deadline_and_are_never_served()
{
    /// Calls with `timeout`; the outcome and how long it took on tokio's clock.
    fn call_within(
        counter: &ServiceHandle<Cmd, u64>,
        timeout: Duration,
        cmd: Cmd,
    ) -> tokio::task::JoinHandle<(Result<u64, Error>, Duration)> {
        let caller = counter.clone().with_call_timeout(timeout);
        tokio::spawn(async move {
            let began = tokio::time::Instant::now();
            let result = caller.call(cmd).await;
            (result, began.elapsed())
        })
    }

    bounded(async {
        let (counter, sup) = start_counter(1).await;
        // Its own deadline (the default 30 s) must not pass while the others wait.
        let patient = counter.clone().with_call_timeout(Duration::from_secs(3600));
        let (held, gate) = hold(&patient).await;
        let queued = call_within(&counter, 2 * PAUSED_TIMEOUT, Cmd::Add(1));
        wait_queued(&counter, 1).await;
        // The mailbox (capacity 1) is full: this one waits for room, and its deadline comes
        // first.
        let waiting = call_within(&counter, PAUSED_TIMEOUT, Cmd::Add(10));

        for (call, stood, timeout) in [
            (waiting, "never queued", PAUSED_TIMEOUT),
            (
                queued,
                "withdrawn, it will never be served",
                2 * PAUSED_TIMEOUT,
            ),
        ] {
            let (result, took) = call.await.unwrap();
            match result {
                Err(Error::Timeout { what, .. }) => assert!(what.contains(stood), "{what}"),
                other => panic!("expected a timeout, got {other:?}"),
            }
            assert_eq!(took, timeout, "at its deadline on tokio's clock");
        }

        assert_eq!(counter.queued(), 0, "a timed-out request stayed queued");
        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap(), 0);
        assert_eq!(
            counter.call(Cmd::Add(0)).await.unwrap(),
            0,
            "a timed-out Add ran"
        );
        sup.shutdown().await.unwrap();
    })
    .await;
}

/// The restart's backoff (an hour) and the call's deadline both run on the paused clock:
/// the deadline comes first, so the request is withdrawn and the next incarnation never
/// sees it. (On the system clock the runtime would skip the idle hour at once, and the
/// next incarnation would serve the request.)
#[tokio::test(start_paused = true)]
async fn paused_time_a_call_made_while_the_service_restarts_is_withdrawn_at_its_deadline() {
    bounded(async {
        let backoff = Backoff::constant(Duration::from_secs(3600));
        let (counter, sup) = start_counter_with(4, backoff, Shutdown::default()).await;
        let crashed = counter.call(Cmd::Crash).await;
        assert!(
            matches!(crashed, Err(Error::ServiceCrashed { .. })),
            "{crashed:?}"
        );
        let began = tokio::time::Instant::now();

        let result = counter
            .clone()
            .with_call_timeout(PAUSED_TIMEOUT)
            .call(Cmd::Add(1))
            .await;

        match result {
            Err(Error::Timeout { what, .. }) => assert!(what.contains("withdrawn"), "{what}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(began.elapsed(), PAUSED_TIMEOUT);
        assert_eq!(counter.queued(), 0, "the timed-out request stayed queued");
        sup.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_responder_tells_whether_its_caller_still_waits() {
    bounded(async {
        let (service, mailbox) = mailbox::<(), ()>("slow", 4);
        let service = service.with_call_timeout(PAUSED_TIMEOUT);
        let mut inbox = mailbox.attach().await;
        let caller = tokio::spawn(async move { service.call(()).await });
        let (_, responder) = inbox.recv().await.unwrap().into_parts();
        assert!(!responder.is_closed(), "the caller waits");
        let answer = caller.await.unwrap();
        assert!(matches!(answer, Err(Error::Timeout { .. })), "{answer:?}");
        assert!(responder.is_closed(), "the caller gave up at its timeout");
    })
    .await;
}

/// A multi-thread runtime cannot pause its clock: calls there keep the deadline thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_multi_thread_runtime_fails_at_its_deadline() {
    bounded(async {
        let (counter, sup) = start_counter(4).await;
        let short = counter.clone().with_call_timeout(SHORT);
        let (held, gate) = hold(&counter).await;

        let (result, took) = timed(&short, Cmd::Add(1)).await;

        assert_timed_out(result, took, SHORT, "withdrawn, it will never be served");
        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap(), 0);
        sup.shutdown().await.unwrap();
    })
    .await;
}
