//! Handles that outlive restarts: a supervised counter service and its callers.
//!
//! Time is paused: every call's timeout is a tokio timer, so a lost answer fails the test
//! at that timeout instead of hanging it, at no wall-clock cost. Tests wait on what the
//! service shows (its queue, the moment it holds a request), never on a sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use wharf_core::service::{ServiceHandle, mailbox};
use wharf_core::supervisor::{ChildSpec, Started, Supervisor, SupervisorHandle};
use wharf_core::{Backoff, Error};
use wharf_testkit::eventually;

/// Bounds every wait on observable state; reached only by a bug.
const WAIT: Duration = Duration::from_secs(10);

/// The worked example: a counter whose state lives in its task.
enum Cmd {
    /// Adds to the total and answers the new total.
    Add(u64),
    /// Says it has been taken (`entered`), then waits until the gate opens or the service is
    /// asked to stop, then answers the total.
    Hold {
        entered: oneshot::Sender<()>,
        gate: Arc<Notify>,
    },
    /// Panics: a bug in the service.
    Crash,
    /// Returns an error from the run loop: a failure the service chose to die on.
    Fail,
}

fn counter_spec(mailbox: wharf_core::service::Mailbox<Cmd, u64>) -> ChildSpec {
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
                        Cmd::Hold { entered, gate } => {
                            let _ = entered.send(());
                            tokio::select! {
                                () = gate.notified() => {}
                                () = ctx.cancelled() => {}
                            }
                            reply.send(total);
                        }
                        Cmd::Crash => panic!("counter bug"),
                        Cmd::Fail => return Err(std::io::Error::other("gave up")),
                    }
                }
                Ok(())
            }))
        }
    })
}

async fn start_counter(capacity: usize) -> (ServiceHandle<Cmd, u64>, SupervisorHandle) {
    let (handle, mailbox) = mailbox::<Cmd, u64>("counter", capacity);
    let sup = Supervisor::builder("root")
        .backoff(Backoff::none())
        .intensity(10, Duration::from_secs(5))
        .child(counter_spec(mailbox))
        .start()
        .await
        .unwrap();
    (handle, sup)
}

async fn wait_queued(handle: &ServiceHandle<Cmd, u64>, n: usize) {
    eventually(&format!("{n} requests queued"), WAIT, || async {
        handle.queued() == n
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; have {}", handle.queued()));
}

/// Sends a `Hold` and returns once the service has taken it (so whatever is sent next
/// queues up behind it), with the gate that releases it and the pending call.
async fn hold(counter: &ServiceHandle<Cmd, u64>) -> (Arc<Notify>, JoinHandle<Result<u64, Error>>) {
    let gate = Arc::new(Notify::new());
    let (entered, taken) = oneshot::channel();
    let held = tokio::spawn({
        let (counter, gate) = (counter.clone(), Arc::clone(&gate));
        async move { counter.call(Cmd::Hold { entered, gate }).await }
    });
    tokio::time::timeout(WAIT, taken)
        .await
        .expect("the service takes the Hold")
        .expect("the Hold reached the service");
    (gate, held)
}

#[tokio::test(start_paused = true)]
async fn requests_queued_during_a_crash_are_all_served_by_the_next_incarnation() {
    let (counter, sup) = start_counter(128).await;
    assert_eq!(counter.call(Cmd::Add(10)).await.unwrap(), 10);

    // Keep the service busy so what follows queues up behind it, in order.
    let (gate, held) = hold(&counter).await;
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
}

#[tokio::test(start_paused = true)]
async fn a_service_that_returns_an_error_fails_only_the_request_it_was_handling() {
    let (counter, sup) = start_counter(16).await;
    let err = counter.call(Cmd::Fail).await.unwrap_err();
    assert!(matches!(err, Error::ServiceCrashed { .. }), "{err:?}");
    assert_eq!(counter.call(Cmd::Add(3)).await.unwrap(), 3);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_same_handle_survives_many_crashes() {
    let (counter, sup) = start_counter(16).await;
    for _ in 0..5 {
        assert!(counter.call(Cmd::Crash).await.is_err());
        assert_eq!(counter.call(Cmd::Add(1)).await.unwrap(), 1);
    }
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn try_call_on_a_full_mailbox_fails_at_once_with_mailbox_full() {
    let (counter, sup) = start_counter(2).await;
    let (gate, held) = hold(&counter).await;
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move { counter.call(Cmd::Add(1)).await })
        })
        .collect();
    wait_queued(&counter, 2).await;
    let err = counter.try_call(Cmd::Add(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::MailboxFull { capacity: 2, .. }),
        "{err:?}"
    );
    gate.notify_one();
    held.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_to_a_stuck_service_times_out() {
    let (counter, sup) = start_counter(4).await;
    let counter = counter.with_call_timeout(Duration::from_millis(100));
    let gate = Arc::new(Notify::new());
    let (entered, _taken) = oneshot::channel();
    let began = tokio::time::Instant::now();
    let err = counter
        .call(Cmd::Hold {
            entered,
            gate: Arc::clone(&gate),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        began.elapsed(),
        Duration::from_millis(100),
        "at its timeout"
    );
    gate.notify_one();
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_service_stops_for_good_queued_and_new_calls_fail_with_stopped() {
    let (counter, sup) = start_counter(8).await;
    let (_gate, held) = hold(&counter).await;
    let queued = tokio::spawn({
        let counter = counter.clone();
        async move { counter.call(Cmd::Add(1)).await }
    });
    wait_queued(&counter, 1).await;
    // Shutting down asks the holder to stop (it answers, or not, then leaves without taking
    // the queued request) and drops the mailbox with that request in it.
    sup.shutdown().await.unwrap();
    let held = held.await.unwrap();
    assert!(
        held.is_ok() || matches!(held, Err(Error::ServiceCrashed { .. })),
        "{held:?}"
    );
    let queued = queued.await.unwrap();
    assert!(matches!(queued, Err(Error::Stopped(_))), "{queued:?}");
    let late = counter.call(Cmd::Add(1)).await;
    assert!(matches!(late, Err(Error::Stopped(_))), "{late:?}");
}

#[tokio::test(start_paused = true)]
async fn a_service_with_its_own_poll_loop_takes_requests_with_poll_recv() {
    let (doubler, mailbox) = mailbox::<u64, u64>("doubler", 4);
    let service = tokio::spawn(async move {
        let mut inbox = mailbox.attach().await;
        while let Some(request) = std::future::poll_fn(|cx| inbox.poll_recv(cx)).await {
            let n = *request.get();
            request.reply(2 * n);
        }
    });
    assert_eq!(doubler.call(21).await.unwrap(), 42);
    assert_eq!(doubler.call(4).await.unwrap(), 8);
    // Every handle gone: the loop sees the end.
    drop(doubler);
    tokio::time::timeout(WAIT, service)
        .await
        .expect("poll_recv answers None once the handles are gone")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_responder_tells_whether_its_caller_still_waits() {
    let (service, mailbox) = mailbox::<(), ()>("slow", 4);
    let service = service.with_call_timeout(Duration::from_secs(1));
    let mut inbox = mailbox.attach().await;
    let caller = tokio::spawn(async move { service.call(()).await });
    let request = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("the request arrives")
        .unwrap();
    let (_, responder) = request.into_parts();
    assert!(!responder.is_closed(), "the caller waits");
    let answer = tokio::time::timeout(WAIT, caller).await.unwrap().unwrap();
    assert!(matches!(answer, Err(Error::Timeout { .. })), "{answer:?}");
    assert!(responder.is_closed(), "the caller gave up at its timeout");
}
