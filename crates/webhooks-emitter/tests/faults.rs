//! The emitter when SQS is unreachable: an owned moto behind wharf-testkit's FaultProxy.
//! Every test is bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wharf_testkit::Moto;
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
    let during = wait_for(&emitter, Duration::from_secs(3), |s| s.retried >= 20).await;
    assert_eq!(during.sent, 0, "{during:?}");
    assert!(
        during.retried >= 20,
        "the emitter should keep retrying: {during:?}"
    );
    assert_eq!(during.buffered, 50);

    proxy.restore().unwrap();
    let after = wait_for(&emitter, Duration::from_secs(20), |s| s.sent == 50).await;
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

    let start = Instant::now();
    let result = emitter
        .emit_sync_timeout(
            Event::new("p", "e", json!({})).unwrap(),
            Duration::from_millis(800),
        )
        .await;
    let took = start.elapsed();
    match result {
        Err(Error::Timeout {
            attempts,
            last_error,
            ..
        }) => {
            assert!(attempts >= 1, "it tried");
            assert_ne!(last_error, "none", "the last transport error is reported");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // It may answer early, once the next retry could only come after the deadline.
    assert!(took < Duration::from_millis(900), "took {took:?}");
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
    let start = Instant::now();
    let over = emitter.emit(Event::new("p", "e", json!({})).unwrap()).await;
    assert!(
        matches!(over, Err(Error::BufferFull { capacity: 20, .. })),
        "{over:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(50));
    assert_eq!(
        emitter.stats().buffered,
        20,
        "memory does not grow with an unreachable endpoint"
    );
    proxy.restore().unwrap();
    let stats = wait_for(&emitter, Duration::from_secs(20), |s| s.sent == 20).await;
    assert_eq!(stats.sent, 20);
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
    let start = Instant::now();
    let over = emitter.emit(Event::new("p", "e", json!({})).unwrap()).await;
    let waited = start.elapsed();
    assert!(matches!(over, Err(Error::BufferFull { .. })), "{over:?}");
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(1),
        "{waited:?}"
    );

    // Once SQS is back the buffer empties and emit takes events again.
    proxy.restore().unwrap();
    let stats = wait_for(&emitter, Duration::from_secs(20), |s| s.sent == 10).await;
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
    let start = Instant::now();
    let report = emitter.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "bounded by drain_timeout: {:?}",
        start.elapsed()
    );
    assert_eq!((report.sent, report.unsent), (0, 30), "{report:?}");
    assert_eq!(hooked.load(Ordering::SeqCst), 30);
    let stats = emitter.stats();
    assert_eq!((stats.failed, stats.buffered), (30, 0));
}

#[tokio::test]
async fn with_a_hanging_endpoint_emit_returns_at_once_and_emit_sync_answers_within_its_timeout() {
    let moto = Moto::start_behind_proxy().unwrap();
    let proxy = moto.proxy().unwrap();
    let sqs = raw_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "hanging", false, &[]).await;
    let emitter = builder(&moto.endpoint(), &url)
        .retry(fast_retry())
        .request_timeout(Duration::from_secs(1))
        .drain_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    // Every chunk takes 3 s each way: requests hang until the request timeout.
    proxy.set_latency(Duration::from_secs(3));

    let start = Instant::now();
    for i in 0..50 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "emit waited: {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let result = emitter
        .emit_sync_timeout(
            Event::new("p", "e", json!({})).unwrap(),
            Duration::from_millis(600),
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");

    // Back to normal: everything emitted arrives (at least once; ids dedupe).
    proxy.clear_latency();
    let stats = wait_for(&emitter, Duration::from_secs(30), |s| s.sent >= 50).await;
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
    let stats = wait_for(&emitter, Duration::from_secs(20), |s| s.sent == 5).await;
    assert_eq!(stats.sent, 5);
    emitter.emit(event()).await.unwrap(); // room again
    assert_eq!(emitter.shutdown().await.unsent, 0);
}
