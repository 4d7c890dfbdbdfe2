//! The emitter against a real SQS API (moto, started once for this test binary by
//! wharf-testkit): what arrives, how it is batched, FIFO, partial failures, bad input,
//! supervision and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use base64::Engine;
use common::*;
use futures::FutureExt;
use serde_json::json;
use wharf_core::supervisor::{ChildSpec, ChildState, Started, Supervisor};
use wharf_testkit::eventually_some;
use wharf_webhooks_emitter::{
    Compression, DeniedFields, Emitter, EmitterBuilder, Error, Event, FailedEvent, GroupKey,
    LEGACY_MAX_MESSAGE_BYTES,
};

fn endpoint() -> String {
    wharf_testkit::sqs().unwrap().address().to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn events_read_back_from_the_queue_match_what_was_emitted_field_by_field() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "fields", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();

    let before = now_ms();
    let data = json!({"amount": 42, "currency": "CAD", "nested": {"ok": true}, "list": [1, "two"]});
    let event = Event::new("provider-7", "transaction.created", &data)
        .unwrap()
        .with_url("https://customer.example/hooks");
    let sent = emitter.emit_sync(event).await.unwrap();
    let after = now_ms();

    let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.message_id(), Some(sent.message_id.as_str()));
    let body = body_json(m);
    assert_eq!(body["id"], json!(sent.event_id.to_string()));
    let ts = body["ts"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&ts),
        "ts {ts} not within [{before}, {after}]"
    );
    assert_eq!(body["providerId"], json!("provider-7"));
    assert_eq!(body["event"], json!("transaction.created"));
    assert_eq!(body["data"], data);
    assert_eq!(body["url"], json!("https://customer.example/hooks"));
    assert!(body.get("enc").is_none());
    assert_eq!(
        body.as_object().unwrap().len(),
        6,
        "unexpected fields: {body}"
    );
    assert_eq!(
        string_attr(m, "event").as_deref(),
        Some("transaction.created")
    );
    assert_eq!(string_attr(m, "id"), Some(sent.event_id.to_string()));
    emitter.shutdown().await;
}

#[tokio::test]
async fn emit_returns_at_once_and_events_go_out_in_batches_of_ten() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "batches", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .linger(Duration::from_millis(200))
        .build()
        .unwrap();
    emitter.start().await.unwrap();

    let mut ids = HashSet::new();
    for i in 0..30 {
        let e = Event::new("p", "order.updated", json!({"i": i})).unwrap();
        // Returns at once: the future is ready at its first poll.
        let id = emitter.emit(e).now_or_never().expect("emit did not wait");
        ids.insert(id.unwrap().to_string());
    }

    let stats = eventually_some(
        "sent == 30",
        Duration::from_secs(10),
        stats_where(&emitter, |s| s.sent == 30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.sent, 30);
    assert_eq!(
        stats.requests, 3,
        "30 events should take 3 SendMessageBatch requests"
    );
    let got: HashSet<String> = receive(&sqs, &url, 30, Duration::from_secs(10))
        .await
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);
    emitter.shutdown().await;
}

#[tokio::test]
async fn a_batch_never_exceeds_the_queue_size_limit() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "bigbatch", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .linger(Duration::from_millis(300))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    // Four events of ~300 KiB: two fit in 1 MiB per batch at most three; never four.
    for i in 0..4 {
        let e = Event::new("p", "big", json!({"i": i, "blob": "x".repeat(300 * 1024)})).unwrap();
        emitter.emit(e).await.unwrap();
    }
    let stats = eventually_some(
        "sent == 4",
        Duration::from_secs(15),
        stats_where(&emitter, |s| s.sent == 4),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.sent, 4, "moto rejects a batch over 1 MiB: {stats:?}");
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.requests, 2);
    emitter.shutdown().await;
}

#[tokio::test]
async fn fifo_queues_get_the_provider_as_group_and_the_event_id_as_deduplication_id() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "fifo", true, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    assert!(emitter.is_fifo());
    emitter.start().await.unwrap();

    let mut sent = Vec::new();
    for i in 0..6 {
        let provider = if i % 2 == 0 { "prov-a" } else { "prov-b" };
        let e = Event::new(provider, "seat.sold", json!({"seq": i})).unwrap();
        sent.push((provider, emitter.emit(e).await.unwrap().to_string()));
    }
    let stats = eventually_some(
        "sent == 6",
        Duration::from_secs(10),
        stats_where(&emitter, |s| s.sent == 6),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.sent, 6);

    let msgs = receive(&sqs, &url, 6, Duration::from_secs(10)).await;
    assert_eq!(msgs.len(), 6);
    for m in &msgs {
        let body = body_json(m);
        let id = body["id"].as_str().unwrap();
        let group = system_attr(m, MessageSystemAttributeName::MessageGroupId).unwrap();
        let dedup = system_attr(m, MessageSystemAttributeName::MessageDeduplicationId).unwrap();
        assert_eq!(group, body["providerId"].as_str().unwrap());
        assert_eq!(dedup, id);
    }
    // Order within each group is the emit order.
    for provider in ["prov-a", "prov-b"] {
        let expected: Vec<&str> = sent
            .iter()
            .filter(|(p, _)| *p == provider)
            .map(|(_, id)| id.as_str())
            .collect();
        let got: Vec<String> = msgs
            .iter()
            .map(body_json)
            .filter(|b| b["providerId"] == json!(provider))
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, expected);
    }
    emitter.shutdown().await;
}

#[tokio::test]
async fn fifo_group_can_come_from_a_data_field() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "fifokey", true, &[]).await;
    let emitter = builder(&endpoint, &url)
        .group_key(GroupKey::DataField("tenant".into()))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    emitter
        .emit_sync(Event::new("p", "e", json!({"tenant": "t-42"})).unwrap())
        .await
        .unwrap();
    let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(
        system_attr(&msgs[0], MessageSystemAttributeName::MessageGroupId).as_deref(),
        Some("t-42")
    );
    emitter.shutdown().await;
}

/// SQS servers fail single entries of a batch for invalid parameters: the test sends two
/// entries that both moto and LocalStack refuse (`rejected_by_sqs_for_tests`, a bypass of
/// the emitter's own checks) among eight good ones, all in one batch.
#[tokio::test]
async fn a_batch_entry_sqs_rejects_fails_alone_and_the_rest_of_the_batch_is_not_resent() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "partial", false, &[]).await;
    let failed: Arc<Mutex<Vec<FailedEvent>>> = Arc::default();
    let hook_sink = Arc::clone(&failed);
    let emitter = builder(&endpoint, &url)
        .linger(Duration::from_millis(300))
        .on_failure(move |f| hook_sink.lock().unwrap().push(f.clone()))
        .build()
        .unwrap();
    emitter.start().await.unwrap();

    let bad_fire_and_forget = Event::new("p", "bad.async", json!({}))
        .unwrap()
        .rejected_by_sqs_for_tests();
    let bad_sync = Event::new("p", "bad.sync", json!({}))
        .unwrap()
        .rejected_by_sqs_for_tests();
    let bad_id = emitter.emit(bad_fire_and_forget).await.unwrap();
    for i in 0..8 {
        emitter
            .emit(Event::new("p", "good", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let result = emitter.emit_sync(bad_sync).await;

    match result {
        // moto names the code as the query protocol does, LocalStack as the JSON protocol's
        // exception shape; the emitter passes it through as the server said it.
        Err(Error::Rejected { code, .. }) => assert!(
            ["InvalidParameterValue", "InvalidParameterValueException"].contains(&code.as_str()),
            "{code}"
        ),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let stats = eventually_some(
        "sent + failed == 10",
        Duration::from_secs(10),
        stats_where(&emitter, |s| s.sent + s.failed == 10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.requests, 1, "one batch, nothing resent: {stats:?}");
    assert_eq!((stats.sent, stats.failed, stats.retried), (8, 2, 0));
    let hooked = failed.lock().unwrap().clone();
    assert_eq!(
        hooked.len(),
        1,
        "only the emit (not emit_sync) failure goes to the hook"
    );
    assert_eq!(hooked[0].event_id, bad_id);
    assert!(matches!(hooked[0].error, Error::Rejected { .. }));
    assert_eq!(
        receive(&sqs, &url, 8, Duration::from_secs(10)).await.len(),
        8
    );
    emitter.shutdown().await;
}

#[tokio::test]
async fn compressed_data_decodes_to_what_was_emitted() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    for (compression, enc) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
        let url = create_queue(&sqs, enc, false, &[]).await;
        let emitter = builder(&endpoint, &url)
            .compression(compression)
            .build()
            .unwrap();
        emitter.start().await.unwrap();
        let data = json!({"text": "compress me ".repeat(50)});
        emitter
            .emit_sync(Event::new("p", "e", &data).unwrap())
            .await
            .unwrap();
        let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
        let body = body_json(&msgs[0]);
        assert_eq!(body["enc"], json!(enc));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body["data"].as_str().unwrap())
            .unwrap();
        let json_bytes = match compression {
            Compression::Gzip => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
                    .unwrap();
                out
            }
            _ => zstd::stream::decode_all(&raw[..]).unwrap(),
        };
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json_bytes).unwrap(),
            data
        );
        emitter.shutdown().await;
    }
}

#[tokio::test]
async fn denied_fields_never_reach_the_queue() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "denied", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .denied_fields(
            DeniedFields::new()
                .deny("transaction.*", ["password"])
                .deny("transaction.*", ["cardNumber"]),
        )
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    let data = json!({"user": {"name": "n", "password": "hunter2"}, "password": "x"});
    emitter
        .emit_sync(Event::new("p", "transaction.created", &data).unwrap())
        .await
        .unwrap();
    // As in the original, `transaction.*` also covers the event named `transaction`.
    let card = json!({"cardNumber": "4111111111111111", "amount": 5});
    emitter
        .emit_sync(Event::new("p", "transaction", &card).unwrap())
        .await
        .unwrap();
    let bodies: Vec<serde_json::Value> = receive(&sqs, &url, 2, Duration::from_secs(10))
        .await
        .iter()
        .map(body_json)
        .collect();
    let data_of = |event: &str| {
        bodies
            .iter()
            .find(|b| b["event"] == json!(event))
            .map(|b| b["data"].clone())
    };
    assert_eq!(
        data_of("transaction.created"),
        Some(json!({"user": {"name": "n"}}))
    );
    assert_eq!(data_of("transaction"), Some(json!({"amount": 5})));
    emitter.shutdown().await;
}

// ----- bad input: a clear error, nothing sent -----

/// Nothing was accepted or sent; then a good event is confirmed, and the queue holds it
/// alone: a refused event, had it been queued, would have been sent before it.
async fn assert_rejected_before_sending(emitter: &Emitter, sqs: &aws_sdk_sqs::Client, url: &str) {
    let stats = emitter.stats();
    assert_eq!((stats.emitted, stats.requests), (0, 0), "{stats:?}");
    let sentinel = emitter
        .emit_sync(Event::new("p", "sentinel", json!({})).unwrap())
        .await
        .unwrap();
    assert_eq!(
        body_ids(&read_all(sqs, url).await),
        vec![sentinel.event_id.to_string()]
    );
}

#[tokio::test]
async fn a_body_over_the_default_one_mib_limit_is_rejected_before_sending() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "toolarge", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();
    let big = Event::new("p", "e", json!({"blob": "x".repeat(1024 * 1024)})).unwrap();
    assert!(matches!(
        emitter.emit(big.clone()).await,
        Err(Error::TooLarge {
            limit: 1_048_576,
            ..
        })
    ));
    assert!(matches!(
        emitter.emit_sync(big).await,
        Err(Error::TooLarge { .. })
    ));
    assert_rejected_before_sending(&emitter, &sqs, &url).await;
}

#[tokio::test]
async fn a_legacy_256_kib_queue_limit_is_enforced_and_an_event_just_under_it_is_accepted() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(
        &sqs,
        "legacy",
        false,
        &[(QueueAttributeName::MaximumMessageSize, "262144")],
    )
    .await;
    let emitter = builder(&endpoint, &url)
        .max_message_bytes(LEGACY_MAX_MESSAGE_BYTES)
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    let over = Event::new("p", "e", json!({"blob": "x".repeat(256 * 1024)})).unwrap();
    assert!(matches!(
        emitter.emit_sync(over).await,
        Err(Error::TooLarge { limit: 262_144, .. })
    ));
    assert_rejected_before_sending(&emitter, &sqs, &url).await;
    let under = Event::new("p", "e", json!({"blob": "x".repeat(255 * 1024)})).unwrap();
    emitter.emit_sync(under).await.unwrap();
    emitter.shutdown().await;
}

#[tokio::test]
async fn characters_sqs_rejects_are_refused_with_their_code_point() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "chars", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();
    let in_data = Event::new("p", "e", json!({"note": "bad \u{FFFE} char"})).unwrap();
    assert!(matches!(
        emitter.emit(in_data).await,
        Err(Error::InvalidCharacter {
            field: "data",
            code_point: 0xFFFE,
            ..
        })
    ));
    let in_type = Event::new("p", "bell\u{7}", json!({})).unwrap();
    assert!(matches!(
        emitter.emit_sync(in_type).await,
        Err(Error::InvalidCharacter {
            field: "event",
            code_point: 7,
            ..
        })
    ));
    let in_url = Event::new("p", "e", json!({}))
        .unwrap()
        .with_url("https://x/\u{FFFF}");
    assert!(matches!(
        emitter.emit(in_url).await,
        Err(Error::InvalidCharacter {
            field: "url",
            code_point: 0xFFFF,
            ..
        })
    ));
    assert_rejected_before_sending(&emitter, &sqs, &url).await;
    // A NUL in the data is escaped by JSON and SQS takes it: not an error.
    emitter
        .emit_sync(Event::new("p", "e", json!({"nul": "a\u{0}b"})).unwrap())
        .await
        .unwrap();
    emitter.shutdown().await;
}

#[tokio::test]
async fn data_that_cannot_be_encoded_is_refused() {
    struct Broken;
    impl serde::Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this type refuses to serialize"))
        }
    }
    struct Panicking;
    impl serde::Serialize for Panicking {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("this type panics while serializing")
        }
    }
    let mut map = std::collections::HashMap::new();
    map.insert((1, 2), "tuple keys are not JSON object keys");
    assert!(matches!(
        Event::new("p", "e", Broken),
        Err(Error::Unencodable { .. })
    ));
    // The application's Serialize is its code: a panic in it becomes an error, not an unwind.
    match Event::new("p", "e", Panicking) {
        Err(Error::Unencodable { reason, .. }) => {
            assert!(reason.contains("panics while serializing"), "{reason}")
        }
        other => panic!("expected Unencodable, got {other:?}"),
    }
    assert!(matches!(
        Event::new("p", "e", map),
        Err(Error::Unencodable { .. })
    ));
}

#[tokio::test]
async fn empty_event_types_and_provider_ids_are_refused() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "empty", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();
    assert!(matches!(
        emitter.try_emit(Event::new("p", "", json!({})).unwrap()),
        Err(Error::InvalidEvent { field: "event", .. })
    ));
    assert!(matches!(
        emitter.try_emit(Event::new("", "e", json!({})).unwrap()),
        Err(Error::InvalidEvent {
            field: "providerId",
            ..
        })
    ));
    assert!(matches!(
        emitter.try_emit(
            Event::new("p", "e", json!({}))
                .unwrap()
                .with_delay(Duration::from_secs(901))
        ),
        Err(Error::InvalidEvent { field: "delay", .. })
    ));
    assert_rejected_before_sending(&emitter, &sqs, &url).await;
}

#[test]
fn a_malformed_queue_url_fails_the_build() {
    for url in [
        "not a url",
        "https://sqs.us-east-1.amazonaws.com/hooks",
        "https://host/123/q/x",
    ] {
        let err = EmitterBuilder::new().queue_url(url).build().unwrap_err();
        assert!(matches!(err, Error::InvalidQueueUrl { .. }), "{url}: {err}");
        assert!(err.to_string().contains("ACCOUNT_ID/QUEUE_NAME"));
    }
}

// ----- disabled, supervised, shutdown -----

#[tokio::test]
async fn without_a_queue_the_child_is_ignored_the_tree_runs_and_emit_reports_disabled() {
    if std::env::var_os("SQS_QUEUE_URL").is_some() {
        return; // from_env would be enabled: not the case under test
    }
    let emitter = Emitter::from_env().unwrap();
    assert!(!emitter.is_enabled());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let sibling = ChildSpec::new("sibling", move |ctx| {
        let tx = Arc::clone(&tx);
        async move {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            Ok::<_, std::io::Error>(Started::task(async move {
                ctx.cancelled().await;
                Ok::<_, std::io::Error>(())
            }))
        }
    });
    let tree = Supervisor::builder("app")
        .child(emitter.child_spec("webhooks"))
        .child(sibling)
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    let children = tree.which_children().await.unwrap();
    assert_eq!(children[0].state, ChildState::Ignored);
    let event = Event::new("p", "e", json!({})).unwrap();
    assert!(matches!(
        emitter.emit(event.clone()).await,
        Err(Error::Disabled)
    ));
    assert!(matches!(
        emitter.emit_sync(event).await,
        Err(Error::Disabled)
    ));
    tree.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_supervised_emitter_sends_and_its_supervisor_shutdown_drains_the_buffer() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "supervised", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .linger(Duration::from_secs(5)) // nothing leaves before the drain unless batches fill
        .build()
        .unwrap();
    let tree = Supervisor::builder("app")
        .child(emitter.child_spec("webhooks"))
        .start()
        .await
        .unwrap();
    for i in 0..7 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    tree.shutdown().await.unwrap();
    assert_eq!(emitter.stats().sent, 7, "{:?}", emitter.stats());
    assert_eq!(
        receive(&sqs, &url, 7, Duration::from_secs(10)).await.len(),
        7
    );
    assert!(matches!(
        emitter.emit(Event::new("p", "e", json!({})).unwrap()).await,
        Err(Error::Stopped { .. })
    ));
}

#[tokio::test]
async fn shutdown_sends_everything_buffered_and_reports_nothing_unsent() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "drain", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .max_in_flight(1)
        .linger(Duration::from_secs(5))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    for i in 0..205 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let report = emitter.shutdown().await;
    assert_eq!(report.unsent, 0, "{report:?}");
    let stats = emitter.stats();
    assert_eq!((stats.sent, stats.failed, stats.buffered), (205, 0, 0));
    assert_eq!(
        receive(&sqs, &url, 205, Duration::from_secs(20))
            .await
            .len(),
        205
    );
    assert!(matches!(
        emitter.try_emit(Event::new("p", "e", json!({})).unwrap()),
        Err(Error::Stopped { .. })
    ));
}

#[tokio::test]
async fn emit_sync_after_shutdown_is_refused_with_stopped() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "stopped", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();
    emitter.shutdown().await;
    assert!(matches!(
        emitter
            .emit_sync(Event::new("p", "e", json!({})).unwrap())
            .await,
        Err(Error::Stopped { .. })
    ));
}

// ----- the worker's life: never started, crashed, restarted, given up -----

/// An emitter on a real queue, with a failure hook that records what it is given.
async fn recorded_emitter(
    prefix: &str,
    configure: impl FnOnce(EmitterBuilder) -> EmitterBuilder,
) -> (
    Emitter,
    aws_sdk_sqs::Client,
    String,
    Arc<Mutex<Vec<FailedEvent>>>,
) {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, prefix, false, &[]).await;
    let failed: Arc<Mutex<Vec<FailedEvent>>> = Arc::default();
    let sink = Arc::clone(&failed);
    let emitter = configure(builder(&endpoint, &url))
        .on_failure(move |f| sink.lock().unwrap().push(f.clone()))
        .build()
        .unwrap();
    (emitter, sqs, url, failed)
}

#[tokio::test]
async fn an_enabled_emitter_that_was_never_started_refuses_events_at_once() {
    let (emitter, _sqs, _url, _failed) = recorded_emitter("unstarted", |b| b).await;
    let event = Event::new("p", "e", json!({})).unwrap();
    let refused: [Option<Result<(), Error>>; 3] = [
        emitter
            .emit(event.clone())
            .now_or_never()
            .map(|r| r.map(drop)),
        emitter
            .emit_sync(event.clone())
            .now_or_never()
            .map(|r| r.map(drop)),
        Some(emitter.try_emit(event).map(drop)),
    ];
    for result in refused {
        match result.expect("answered at once, without waiting") {
            Err(Error::NotStarted { queue }) => assert_eq!(queue, emitter.queue_name()),
            other => panic!("expected NotStarted, got {other:?}"),
        }
    }
    let message = Error::NotStarted { queue: "q".into() }.to_string();
    assert!(
        message.contains("child_spec") && message.contains("start"),
        "the error says what to do: {message}"
    );
    assert_eq!(emitter.stats().emitted, 0, "nothing was buffered");
}

#[tokio::test]
async fn after_a_plain_worker_dies_its_events_fail_and_emit_refuses_new_ones_until_restarted() {
    let (emitter, sqs, url, failed) =
        recorded_emitter("died", |b| b.linger(Duration::from_secs(10))).await;
    emitter.start().await.unwrap();
    let mut held = HashSet::new();
    for i in 0..5 {
        let id = emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
        held.insert(id);
    }
    let caller = tokio::spawn({
        let emitter = emitter.clone();
        async move {
            emitter
                .emit_sync_timeout(
                    Event::new("p", "sync", json!({})).unwrap(),
                    Duration::from_secs(60),
                )
                .await
        }
    });
    eventually_some(
        "6 events buffered",
        Duration::from_secs(5),
        stats_where(&emitter, |s| s.buffered == 6),
    )
    .await
    .unwrap();

    emitter.crash_worker_for_tests();

    // Every event it held fails at once (not after the 60 s linger or timeout), counted once.
    let sync = tokio::time::timeout(Duration::from_secs(10), caller)
        .await
        .expect("the emit_sync caller is answered when the worker dies")
        .unwrap();
    assert!(
        matches!(
            sync,
            Err(Error::NotSent {
                maybe_sent: false,
                ..
            })
        ),
        "{sync:?}"
    );
    let stats = eventually_some(
        "the 6 held events to fail",
        Duration::from_secs(10),
        stats_where(&emitter, |s| s.failed == 6),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!((stats.sent, stats.buffered), (0, 0), "{stats:?}");
    let hooked = failed.lock().unwrap().clone();
    assert_eq!(
        hooked.iter().map(|f| f.event_id).collect::<HashSet<_>>(),
        held,
        "each emit event went to the hook"
    );
    assert!(
        hooked.iter().all(|f| matches!(
            f.error,
            Error::NotSent {
                maybe_sent: false,
                ..
            }
        )),
        "{hooked:?}"
    );

    // New events are refused at once, with what happened and what to do.
    let refused = emitter
        .emit(Event::new("p", "e", json!({})).unwrap())
        .now_or_never()
        .expect("answered at once");
    match refused {
        Err(Error::WorkerDied { reason, .. }) => {
            assert!(reason.contains("crash injected"), "{reason}")
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }

    // Started again, it works again (the shutdown's drain sends without the long linger).
    emitter.start().await.unwrap();
    let again = emitter
        .emit(Event::new("p", "again", json!({})).unwrap())
        .await
        .unwrap();
    assert_eq!(emitter.shutdown().await.sent, 1);
    assert_eq!(
        body_ids(&read_all(&sqs, &url).await),
        vec![again.to_string()],
        "nothing of the dead worker's was sent"
    );
}

#[test]
fn when_the_runtime_of_a_plain_worker_shuts_down_its_events_fail_and_emit_refuses_new_ones() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (emitter, failed) = runtime.block_on(async {
        let (emitter, _sqs, _url, failed) =
            recorded_emitter("rtdrop", |b| b.linger(Duration::from_secs(10))).await;
        emitter.start().await.unwrap();
        for i in 0..3 {
            emitter
                .emit(Event::new("p", "e", json!({"i": i})).unwrap())
                .await
                .unwrap();
        }
        (emitter, failed)
    });
    drop(runtime); // drops the worker's task with its events

    let stats = emitter.stats();
    assert_eq!((stats.failed, stats.buffered), (3, 0), "{stats:?}");
    assert_eq!(
        failed.lock().unwrap().len(),
        3,
        "each event went to the hook"
    );
    match emitter.try_emit(Event::new("p", "e", json!({})).unwrap()) {
        Err(Error::WorkerDied { reason, .. }) => assert!(reason.contains("dropped"), "{reason}"),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_crashed_supervised_worker_is_restarted_and_takes_over_every_buffered_event() {
    let (emitter, sqs, url, _failed) = recorded_emitter("crash", |b| {
        b.max_in_flight(1).linger(Duration::from_millis(300))
    })
    .await;
    let tree = Supervisor::builder("app")
        .child(emitter.child_spec("webhooks"))
        .start()
        .await
        .unwrap();
    let mut ids = HashSet::new();
    for i in 0..24 {
        let id = emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
        ids.insert(id.to_string());
    }
    emitter.crash_worker_for_tests();
    // While the supervisor restarts it, events are still taken: the next worker sends them.
    for i in 24..30 {
        let id = emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
        ids.insert(id.to_string());
    }
    let stats = eventually_some(
        "30 events sent",
        Duration::from_secs(15),
        stats_where(&emitter, |s| s.sent == 30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(stats.failed, 0, "{stats:?}");
    let children = tree.which_children().await.unwrap();
    assert_eq!(children[0].restarts, 1, "{children:?}");
    let got: HashSet<String> = body_ids(&read_all(&sqs, &url).await).into_iter().collect();
    assert_eq!(got, ids);
    tree.shutdown().await.unwrap();
}

#[tokio::test]
async fn when_its_supervisor_gives_up_the_buffered_events_fail_and_emit_refuses_new_ones() {
    let (emitter, _sqs, _url, failed) =
        recorded_emitter("givenup", |b| b.linger(Duration::from_secs(10))).await;
    // No restart allowed: the first crash makes the supervisor stop for good.
    let _tree = Supervisor::builder("app")
        .intensity(0, Duration::from_secs(60))
        .child(emitter.child_spec("webhooks"))
        .start()
        .await
        .unwrap();
    for i in 0..5 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    emitter.crash_worker_for_tests();
    let stats = eventually_some(
        "the 5 buffered events to fail",
        Duration::from_secs(10),
        stats_where(&emitter, |s| s.failed == 5),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!((stats.sent, stats.buffered), (0, 0), "{stats:?}");
    assert_eq!(failed.lock().unwrap().len(), 5);
    match emitter.try_emit(Event::new("p", "e", json!({})).unwrap()) {
        Err(Error::WorkerDied { reason, .. }) => {
            assert!(reason.contains("supervisor"), "{reason}")
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

// ----- the failure hook is the application's code: its panics are caught -----

#[tokio::test]
async fn a_failure_hook_that_panics_is_caught_counted_and_the_worker_carries_on() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "hookpanic", false, &[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let emitter = {
        // A hook that panics (after counting its call).
        let calls = Arc::clone(&calls);
        builder(&endpoint, &url)
            .linger(Duration::from_millis(300))
            .on_failure(move |f| {
                calls.fetch_add(1, Ordering::SeqCst);
                panic!("the hook panics on {}", f.event_id)
            })
            .build()
            .unwrap()
    };
    emitter.start().await.unwrap();
    // One batch: a poisoned event SQS rejects (its hook panics) and nine good ones.
    let poisoned = Event::new("p", "e", json!({}))
        .unwrap()
        .rejected_by_sqs_for_tests();
    emitter.emit(poisoned).await.unwrap();
    for i in 0..9 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let stats = eventually_some(
        "10 events resolved",
        Duration::from_secs(10),
        stats_where(&emitter, |s| s.sent + s.failed == 10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", emitter.stats()));
    assert_eq!(
        (stats.sent, stats.failed, stats.callback_panics),
        (9, 1, 1),
        "{stats:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The worker survived its hook: it still sends.
    let after = emitter
        .emit_sync_timeout(
            Event::new("p", "after", json!({})).unwrap(),
            Duration::from_secs(10),
        )
        .await;
    assert!(after.is_ok(), "the worker died with its hook: {after:?}");
    assert_eq!(read_all(&sqs, &url).await.len(), 10);
    emitter.shutdown().await;
}

const CHILD_MARKER: &str = "child scenario passed:";

/// Runs `test` (an ignored test of this binary) in a child process and returns its output:
/// a scenario that may abort the process must not take the whole test run with it.
fn run_in_child_process(test: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(CHILD_MARKER),
        "the child process running `{test}` failed ({}); its stderr ends with:\n{}",
        output.status,
        stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    stdout
}

#[test]
fn a_failure_hook_that_panics_during_the_drain_does_not_abort_the_process() {
    let stdout = run_in_child_process("child_a_failure_hook_panics_on_every_event_of_the_drain");
    assert!(
        stdout.contains("failed=30 callback_panics=30 unsent=30"),
        "{stdout}"
    );
}

#[tokio::test]
#[ignore = "run in a child process by a_failure_hook_that_panics_during_the_drain_does_not_abort_the_process"]
async fn child_a_failure_hook_panics_on_every_event_of_the_drain() {
    // Port 1 refuses connections: every event is still buffered when the drain gives up.
    let emitter = Emitter::builder()
        .queue_url("http://127.0.0.1:1/123456789012/refused")
        .endpoint_url("http://127.0.0.1:1")
        .region(REGION)
        .credentials("testing", "testing")
        .drain_timeout(Duration::from_millis(300))
        .on_failure(|f| panic!("the hook panics on {}", f.event_id))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    for i in 0..30 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let report = tokio::time::timeout(Duration::from_secs(10), emitter.shutdown())
        .await
        .expect("the drain is bounded");
    let stats = emitter.stats();
    assert_eq!(stats.buffered, 0, "{stats:?}");
    println!(
        "{CHILD_MARKER} failed={} callback_panics={} unsent={}",
        stats.failed, stats.callback_panics, report.unsent
    );
}

#[tokio::test]
async fn a_request_sqs_refuses_as_a_whole_fails_with_the_sdks_error_as_its_source() {
    use aws_sdk_sqs::config::http::HttpResponse;
    use aws_sdk_sqs::error::SdkError;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;

    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "deleted", false, &[]).await;
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();

    let result = emitter
        .emit_sync_timeout(
            Event::new("p", "e", json!({})).unwrap(),
            Duration::from_secs(10),
        )
        .await;
    let error = match result {
        Err(error @ Error::Rejected { .. }) => error,
        other => panic!("expected Rejected, got {other:?}"),
    };
    let source = std::error::Error::source(&error).expect("the SDK's error is kept");
    let sdk = source
        .downcast_ref::<SdkError<SendMessageBatchError, HttpResponse>>()
        .unwrap_or_else(|| panic!("not the SDK's error: {source:?}"));
    assert!(
        sdk.as_service_error().is_some(),
        "SQS answered, refusing the request: {sdk:?}"
    );
    emitter.shutdown().await;
}
