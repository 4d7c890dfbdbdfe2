//! The emitter when SQS is unreachable: an owned moto behind wharf-testkit's FaultProxy.
//! Every test is bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use common::*;
use serde_json::json;
use wharf_testkit::eventually_some;
use wharf_testkit::{Direction, FaultProxy, Moto};
use wharf_webhooks_emitter::{Error, Event, FullPolicy, RetryPolicy};

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(
        Duration::from_millis(50),
        Duration::from_millis(400),
        Duration::from_secs(60),
    )
}

#[tokio::test]
async fn events_emitted_while_sqs_is_unreachable_all_arrive_once_it_is_back() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "outage", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .retry(fast_retry())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    emitter.start().await.unwrap();

    proxy.down().unwrap();
    let mut ids = HashSet::new();
    for i in 0..50 {
        let id = emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
        ids.insert(id.to_string());
    }
    let during = eventually_some(
        "retried >= 20",
        Duration::from_secs(3),
        stats_where(&emitter, |s| s.retried >= 20),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(during.sent, 0, "{during:?}");
    assert!(
        during.retried >= 20,
        "the emitter should keep retrying: {during:?}"
    );
    assert_eq!(during.buffered, 50);

    proxy.restore().unwrap();
    let after = eventually_some(
        "sent == 50",
        Duration::from_secs(20),
        stats_where(&emitter, |s| s.sent == 50),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!((after.sent, after.failed), (50, 0), "{after:?}");
    let got: HashSet<String> = receive(&sqs, &url, 50, Duration::from_secs(10))
        .await
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids, "every event arrives, each with its id");
    assert_eq!(emitter.shutdown().await.unsent, 0);
}

#[tokio::test]
async fn emit_sync_answers_timeout_within_its_timeout_when_sqs_is_unreachable() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "synctimeout", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .retry(fast_retry())
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();

    let sync_timeout = Duration::from_millis(800);
    // Bounded by four times its timeout: the emitter answers at its deadline (or earlier, once
    // the next retry could only come after it); the slack is for a loaded machine.
    let result = tokio::time::timeout(
        sync_timeout * 4,
        emitter.emit_sync_timeout(Event::new("p", "e", json!({})).unwrap(), sync_timeout),
    )
    .await
    .expect("emit_sync answers within its timeout");
    match result {
        Err(Error::Timeout {
            attempts,
            last_error,
            maybe_sent,
            ..
        }) => {
            assert!(attempts >= 1, "it tried");
            assert_ne!(last_error, "none", "the last transport error is reported");
            assert!(
                !maybe_sent,
                "every attempt was refused at connect: provably not sent ({last_error})"
            );
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    proxy.restore().unwrap();
    emitter.shutdown().await;
}

#[tokio::test]
async fn a_full_buffer_refuses_events_at_once_with_the_error_policy() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "full", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .buffer_capacity(20)
        .full_policy(FullPolicy::Error)
        .retry(fast_retry())
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();
    for i in 0..20 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    // Refused without waiting at all: the future is ready at its first poll.
    let over = emitter
        .emit(Event::new("p", "e", json!({})).unwrap())
        .now_or_never()
        .expect("emit does not wait with FullPolicy::Error");
    assert!(
        matches!(over, Err(Error::BufferFull { capacity: 20, .. })),
        "{over:?}"
    );
    assert_eq!(
        emitter.stats().buffered,
        20,
        "memory does not grow with an unreachable endpoint"
    );
    proxy.restore().unwrap();
    let stats = eventually_some(
        "sent == 20",
        Duration::from_secs(20),
        stats_where(&emitter, |s| s.sent == 20),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.sent, 20);
    emitter.shutdown().await;
}

#[tokio::test]
async fn a_full_buffer_hands_the_refused_event_back_to_be_emitted_again_once_there_is_room() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "handback", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .buffer_capacity(2)
        .full_policy(FullPolicy::Error)
        .retry(fast_retry())
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();
    for i in 0..2 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let refused = emitter
        .emit(Event::new("p", "refused.event", json!({"i": "the third"})).unwrap())
        .await
        .expect_err("the buffer is full");
    let event = refused
        .into_event()
        .expect("a full buffer hands the event back");
    assert_eq!(
        (event.provider_id(), event.event_type(), event.data()),
        ("p", "refused.event", &json!({"i": "the third"})),
        "unchanged"
    );

    proxy.restore().unwrap();
    eventually_some(
        "sent == 2",
        Duration::from_secs(20),
        stats_where(&emitter, |s| s.sent == 2),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    let sent = emitter.emit_sync(event).await.expect("room again");
    let bodies: Vec<serde_json::Value> = receive(&sqs, &url, 3, Duration::from_secs(10))
        .await
        .iter()
        .map(body_json)
        .collect();
    let resent = bodies
        .iter()
        .find(|b| b["id"] == json!(sent.event_id.to_string()))
        .unwrap_or_else(|| panic!("the handed-back event arrived: {bodies:?}"));
    assert_eq!(resent["data"], json!({"i": "the third"}));
    emitter.shutdown().await;
}

#[tokio::test]
async fn a_timeout_while_sqs_is_unreachable_keeps_the_sdks_last_error_as_its_source() {
    use aws_sdk_sqs::config::http::HttpResponse;
    use aws_sdk_sqs::error::SdkError;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;

    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "timeoutsource", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .retry(fast_retry())
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();

    let sync_timeout = Duration::from_millis(800);
    let result = tokio::time::timeout(
        sync_timeout * 4, // slack for a loaded machine; a deadline ignored would retry far longer
        emitter.emit_sync_timeout(Event::new("p", "e", json!({})).unwrap(), sync_timeout),
    )
    .await
    .expect("emit_sync answers within its timeout");
    let error = match result {
        Err(error @ Error::Timeout { .. }) => error,
        other => panic!("expected Timeout, got {other:?}"),
    };
    let source = std::error::Error::source(&error).expect("the last error's cause is kept");
    let sdk = source
        .downcast_ref::<SdkError<SendMessageBatchError, HttpResponse>>()
        .unwrap_or_else(|| panic!("not the SDK's error: {source:?}"));
    assert!(
        matches!(sdk, SdkError::DispatchFailure(_)),
        "the request could not be sent: {sdk:?}"
    );
    proxy.restore().unwrap();
    emitter.shutdown().await;
}

#[tokio::test]
async fn the_wait_policy_waits_for_room_then_gives_up_after_its_bound() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "wait", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .buffer_capacity(10)
        .full_policy(FullPolicy::Wait(Duration::from_millis(300)))
        .retry(fast_retry())
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();
    for i in 0..10 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let start = tokio::time::Instant::now();
    let over = tokio::time::timeout(
        Duration::from_secs(3),
        emitter.emit(Event::new("p", "e", json!({})).unwrap()),
    )
    .await
    .expect("the wait for room is bounded");
    let waited = start.elapsed();
    assert!(matches!(over, Err(Error::BufferFull { .. })), "{over:?}");
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}, before its 300 ms"
    );

    // Once SQS is back the buffer empties and emit takes events again.
    proxy.restore().unwrap();
    let stats = eventually_some(
        "sent == 10",
        Duration::from_secs(20),
        stats_where(&emitter, |s| s.sent == 10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.sent, 10);
    emitter
        .emit(Event::new("p", "e", json!({"late": true})).unwrap())
        .await
        .unwrap();
    emitter.shutdown().await;
}

#[tokio::test]
async fn shutdown_with_sqs_unreachable_counts_every_unsent_event_and_hands_each_to_the_hook() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "lost", false, &[]).await;
    let hooked = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hooked);
    let emitter = builder(&moto.endpoint(), &url)
        .retry(fast_retry())
        .drain_timeout(Duration::from_millis(500))
        .on_failure(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();
    for i in 0..30 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    // Bounded by drain_timeout (500 ms) plus one request timeout: the slack is for a loaded
    // machine, the bound is what matters.
    let report = tokio::time::timeout(Duration::from_secs(5), emitter.shutdown())
        .await
        .expect("shutdown is bounded by the drain timeout");
    assert_eq!((report.sent, report.unsent), (0, 30), "{report:?}");
    assert_eq!(hooked.load(Ordering::SeqCst), 30);
    let stats = emitter.stats();
    assert_eq!((stats.failed, stats.buffered), (30, 0));
}

#[tokio::test]
async fn with_a_hanging_endpoint_emit_returns_at_once_and_emit_sync_answers_within_its_timeout() {
    // Far apart, so that "answered by its own timeout, not by the request's" needs no tight
    // wall-clock bound: an emit_sync that waited on the hanging request would take 5 s.
    let request_timeout = Duration::from_secs(5);
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "hanging", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .retry(fast_retry())
        .request_timeout(request_timeout)
        .drain_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    // Every chunk takes 3 s each way: requests hang until the request timeout.
    proxy.set_latency(Duration::from_secs(3));

    for i in 0..50 {
        // Never waits on the network: the future is ready at its first poll.
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .now_or_never()
            .expect("emit did not wait")
            .unwrap();
    }

    let sync_timeout = Duration::from_millis(600);
    let result = tokio::time::timeout(
        request_timeout,
        emitter.emit_sync_timeout(Event::new("p", "e", json!({})).unwrap(), sync_timeout),
    )
    .await
    .expect("emit_sync answers by its own timeout, before the hanging request's");
    assert!(
        matches!(result, Err(Error::Timeout { after, .. }) if after == sync_timeout),
        "{result:?}"
    );

    // Back to normal: everything emitted arrives (at least once; ids dedupe).
    proxy.clear_latency();
    let stats = eventually_some(
        "sent >= 50",
        Duration::from_secs(30),
        stats_where(&emitter, |s| s.sent >= 50),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert!(stats.sent >= 50, "{stats:?}");
    assert_eq!(emitter.shutdown().await.unsent, 0);
    let ids: HashSet<String> = receive(&sqs, &url, 51, Duration::from_secs(10))
        .await
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 50, "{} distinct events arrived", ids.len());
}

#[tokio::test]
async fn the_byte_budget_bounds_the_buffer_whatever_the_event_count() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "bytes", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .max_message_bytes(wharf_webhooks_emitter::LEGACY_MAX_MESSAGE_BYTES)
        .buffer_bytes(1024 * 1024)
        .retry(fast_retry())
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    proxy.down().unwrap();
    let event = || Event::new("p", "e", json!({"blob": "x".repeat(200 * 1024)})).unwrap();
    for _ in 0..5 {
        emitter.emit(event()).await.unwrap(); // 5 x ~200 KiB fit in 1 MiB
    }
    let over = emitter.emit(event()).await;
    assert!(
        matches!(
            over,
            Err(Error::BufferFull {
                bytes: 1_048_576,
                ..
            })
        ),
        "{over:?}"
    );
    assert_eq!(emitter.stats().buffered, 5);
    proxy.restore().unwrap();
    let stats = eventually_some(
        "sent == 5",
        Duration::from_secs(20),
        stats_where(&emitter, |s| s.sent == 5),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.sent, 5);
    emitter.emit(event()).await.unwrap(); // room again
    assert_eq!(emitter.shutdown().await.unsent, 0);
}

// ----- maybe_sent: false is a promise that the event is not in the queue -----

/// `(event id, maybe_sent)` for every failure that carries the flag.
type Reported = Arc<Mutex<Vec<(String, bool)>>>;

fn maybe_sent(error: &Error) -> Option<(String, bool)> {
    match error {
        Error::Timeout {
            event_id,
            maybe_sent,
            ..
        }
        | Error::NotSent {
            event_id,
            maybe_sent,
            ..
        }
        | Error::RetriesExhausted {
            event_id,
            maybe_sent,
            ..
        } => Some((event_id.to_string(), *maybe_sent)),
        _ => None,
    }
}

/// Emits with `emit_sync` and `emit` while `fault` is on, shuts the emitter down with the
/// fault still on (so the drain fails what is left), heals the link, reads the queue back
/// fully, and checks that no event reported `maybe_sent: false` is in it.
async fn events_reported_not_sent_are_absent_from_the_queue(
    prefix: &str,
    fault: impl Fn(&FaultProxy),
    heal: impl Fn(&FaultProxy),
) {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    // The test's own eyes go straight to moto, not through the fault.
    let direct = raw_client(&format!("http://{}", moto.direct_addr())).await;
    let url = create_queue(&direct, prefix, false, &[]).await;
    let reported: Reported = Arc::default();
    let hook_sink = Arc::clone(&reported);
    let request_timeout = Duration::from_millis(300);
    let emitter = builder(&moto.endpoint(), &url)
        .request_timeout(request_timeout)
        .connect_timeout(request_timeout)
        .max_in_flight(2)
        // A backoff longer than what is left of the emit_sync timeout after a first attempt:
        // the worker gives such an event up after one attempt that SQS carried out.
        .retry(RetryPolicy::new(
            Duration::from_millis(2500),
            Duration::from_secs(3),
            Duration::from_secs(4),
        ))
        .drain_timeout(Duration::from_millis(600))
        .on_failure(move |failed| {
            let flag = maybe_sent(&failed.error);
            hook_sink.lock().unwrap().extend(flag);
        })
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    emitter
        .emit_sync(Event::new("p", "warm-up", json!({})).unwrap())
        .await
        .expect("sent before the fault");

    fault(proxy);
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..20 {
        let emitter = emitter.clone();
        callers.spawn(async move {
            let event = Event::new("p", "sync", json!({ "i": i })).unwrap();
            emitter
                .emit_sync_timeout(event, Duration::from_millis(1500))
                .await
        });
    }
    // The emit_sync events go first, so that they are the ones in the first requests.
    eventually_some(
        "the emit_sync events to be buffered",
        Duration::from_secs(5),
        stats_where(&emitter, |s| s.emitted == 21),
    )
    .await
    .unwrap();
    for i in 0..30 {
        emitter
            .emit(Event::new("p", "async", json!({ "i": i })).unwrap())
            .await
            .unwrap();
    }
    let results = tokio::time::timeout(Duration::from_secs(20), callers.join_all())
        .await
        .expect("every emit_sync answers within its timeout");
    for result in results {
        if let Err(error) = result {
            let flag = maybe_sent(&error).unwrap_or_else(|| panic!("unexpected {error:?}"));
            reported.lock().unwrap().push(flag);
        }
    }
    emitter.shutdown().await;
    let stats = emitter.stats();
    assert_eq!(stats.emitted, 51, "{stats:?}");
    assert_eq!(
        (stats.sent + stats.failed, stats.buffered),
        (51, 0),
        "every event resolved: {stats:?}"
    );

    heal(proxy);
    drop(emitter);
    // Requests the fault held or delayed reach moto (or die) before the proxy closes them.
    wharf_testkit::eventually(
        "the proxy to close every connection",
        Duration::from_secs(20),
        || async { proxy.active_connections() == 0 },
    )
    .await
    .unwrap();
    let in_queue: HashSet<String> = body_ids(&read_all(&direct, &url).await)
        .into_iter()
        .collect();
    let reported = reported.lock().unwrap().clone();
    let wrongly_not_sent: Vec<&String> = reported
        .iter()
        .filter(|(id, maybe)| !maybe && in_queue.contains(id))
        .map(|(id, _)| id)
        .collect();
    assert!(
        wrongly_not_sent.is_empty(),
        "{} of {} events reported `maybe_sent: false` are in the queue: {wrongly_not_sent:?}",
        wrongly_not_sent.len(),
        reported.iter().filter(|(_, maybe)| !maybe).count(),
    );
    assert!(
        reported
            .iter()
            .any(|(id, maybe)| *maybe && in_queue.contains(id)),
        "the fault did not make SQS store an event the emitter reported as failed; \
         the test did not reach its case: {reported:?}"
    );
    assert!(
        reported.iter().any(|(_, maybe)| !maybe),
        "no event was reported `maybe_sent: false` (those never attempted should be): \
         {reported:?}"
    );
}

#[tokio::test]
async fn events_reported_not_maybe_sent_are_not_in_the_queue_when_answers_come_after_the_timeout() {
    events_reported_not_sent_are_absent_from_the_queue(
        "late",
        |proxy| proxy.set_direction_latency(Direction::ToClient, Duration::from_secs(3)),
        FaultProxy::clear_latency,
    )
    .await;
}

#[tokio::test]
async fn events_reported_not_maybe_sent_are_not_in_the_queue_after_a_silent_partition() {
    events_reported_not_sent_are_absent_from_the_queue(
        "held",
        FaultProxy::hold,
        FaultProxy::release,
    )
    .await;
}
