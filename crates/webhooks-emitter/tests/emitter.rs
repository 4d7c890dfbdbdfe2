//! The emitter against a real SQS API (moto, started once for this test binary by
//! wharf-testkit): what arrives, how it is batched, FIFO, partial failures, bad input,
//! supervision and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use base64::Engine;
use common::*;
use serde_json::json;
use wharf_core::supervisor::{ChildSpec, ChildState, Started, Supervisor};
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
    let start = std::time::Instant::now();
    for i in 0..30 {
        let e = Event::new("p", "order.updated", json!({"i": i})).unwrap();
        ids.insert(emitter.emit(e).await.unwrap().to_string());
    }
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "emit waited: {:?}",
        start.elapsed()
    );

    let stats = wait_for(&emitter, Duration::from_secs(10), |s| s.sent == 30).await;
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
    let stats = wait_for(&emitter, Duration::from_secs(15), |s| s.sent == 4).await;
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
    let stats = wait_for(&emitter, Duration::from_secs(10), |s| s.sent == 6).await;
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

/// moto fails single entries of a batch only for an invalid `DelaySeconds` (over 900): the
/// test sends one such entry through the test-only bypass of the emitter's own validation,
/// among nine good ones, all in one batch.
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
        .unchecked_delay_seconds_for_tests(901);
    let bad_sync = Event::new("p", "bad.sync", json!({}))
        .unwrap()
        .unchecked_delay_seconds_for_tests(901);
    let bad_id = emitter.emit(bad_fire_and_forget).await.unwrap();
    for i in 0..8 {
        emitter
            .emit(Event::new("p", "good", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let result = emitter.emit_sync(bad_sync).await;

    match result {
        Err(Error::Rejected { code, .. }) => assert_eq!(code, "InvalidParameterValue"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let stats = wait_for(&emitter, Duration::from_secs(10), |s| {
        s.sent + s.failed == 10
    })
    .await;
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
        .denied_fields(DeniedFields::new().deny("transaction.*", ["password"]))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    let data = json!({"user": {"name": "n", "password": "hunter2"}, "password": "x"});
    emitter
        .emit_sync(Event::new("p", "transaction.created", &data).unwrap())
        .await
        .unwrap();
    let body = body_json(&receive(&sqs, &url, 1, Duration::from_secs(10)).await[0]);
    assert_eq!(body["data"], json!({"user": {"name": "n"}}));
    emitter.shutdown().await;
}

// ----- bad input: a clear error, nothing sent -----

async fn assert_rejected_before_sending(emitter: &Emitter, sqs: &aws_sdk_sqs::Client, url: &str) {
    let stats = emitter.stats();
    assert_eq!((stats.emitted, stats.requests), (0, 0), "{stats:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue_depth(sqs, url).await, 0);
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
    let mut map = std::collections::HashMap::new();
    map.insert((1, 2), "tuple keys are not JSON object keys");
    assert!(matches!(
        Event::new("p", "e", Broken),
        Err(Error::Unencodable { .. })
    ));
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

/// The failure hook runs on the worker's task, so a panicking hook crashes the worker: its
/// supervisor restarts it, and the events the crashed worker held are sent by the next one.
#[tokio::test]
async fn a_crashed_worker_is_restarted_and_the_events_it_held_are_not_lost() {
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "crash", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .max_in_flight(1)
        .linger(Duration::from_millis(300))
        .on_failure(|failed| panic!("hook panics on {}", failed.event_id))
        .build()
        .unwrap();
    let tree = Supervisor::builder("app")
        .child(emitter.child_spec("webhooks"))
        .start()
        .await
        .unwrap();
    // First batch: the poisoned event and nine good ones; then 15 more wait behind it.
    let poisoned = Event::new("p", "e", json!({}))
        .unwrap()
        .unchecked_delay_seconds_for_tests(901);
    emitter.emit(poisoned).await.unwrap();
    let mut ids = HashSet::new();
    for i in 0..24 {
        ids.insert(
            emitter
                .emit(Event::new("p", "e", json!({"i": i})).unwrap())
                .await
                .unwrap()
                .to_string(),
        );
    }
    let stats = wait_for(&emitter, Duration::from_secs(15), |s| s.sent == 24).await;
    assert_eq!((stats.sent, stats.failed), (24, 1), "{stats:?}");
    let children = tree.which_children().await.unwrap();
    assert_eq!(children[0].restarts, 1, "{children:?}");
    let got: HashSet<String> = receive(&sqs, &url, 24, Duration::from_secs(10))
        .await
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);
    tree.shutdown().await.unwrap();
}
