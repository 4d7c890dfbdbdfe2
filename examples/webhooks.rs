//! Webhook events into SQS with wharf-webhooks-emitter, under a supervisor.
//!
//! ```text
//! app (one_for_one)
//! └── webhooks   the emitter's worker: batches, retries, drains on shutdown
//! ```
//!
//! The program emits N events with `emit` (fire-and-forget, batched), one with `emit_sync`
//! (waits for SQS's MessageId), shuts the tree down (the buffer is drained), then reads the
//! queue back with the AWS SDK and checks every event arrived.
//!
//! Run it against the moto that `scripts/install` provides:
//! `WHARF_SQS_ENDPOINT=http://127.0.0.1:PORT cargo run --example webhooks --features webhooks-emitter [N]`
//! Without `WHARF_SQS_ENDPOINT` it starts a moto of its own through wharf-testkit.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use wharf::core::supervisor::Supervisor;
use wharf::webhooks_emitter::aws_sdk_sqs;
use wharf::webhooks_emitter::serde_json::json;
use wharf::webhooks_emitter::{Emitter, Event, FullPolicy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000);

    // Where SQS is: the scripts' moto, or one started here.
    let mut _owned_moto = None;
    let endpoint = match std::env::var("WHARF_SQS_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => {
            let moto = wharf_testkit::Moto::start()?;
            let e = moto.endpoint();
            _owned_moto = Some(moto);
            println!("started moto at {e}");
            e
        }
    };

    // The test's eyes: a plain SDK client to create the queue and read it back.
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "example", "example", None, None, "example",
            ))
            .build(),
    );
    let queue_name = format!("webhooks-example-{}", std::process::id());
    let queue_url = sqs
        .create_queue()
        .queue_name(&queue_name)
        .send()
        .await?
        .queue_url()
        .ok_or("CreateQueue returned no URL")?
        .to_string();

    // The emitter: a handle you clone anywhere, and a child for the supervisor.
    let emitter = Emitter::builder()
        .queue_url(&queue_url)
        .endpoint_url(&endpoint)
        .region("us-east-1")
        .credentials("example", "example")
        .full_policy(FullPolicy::Wait(Duration::from_secs(5)))
        .on_failure(|failed| eprintln!("event {} failed: {}", failed.event_id, failed.error))
        .build()?;
    let tree = Supervisor::builder("app")
        .child(emitter.child_spec("webhooks"))
        .start()
        .await?;

    let start = Instant::now();
    let mut ids = HashSet::new();
    for i in 0..events {
        let event = Event::new(
            format!("provider-{}", i % 7),
            "transaction.created",
            json!({"transactionId": i, "amount": 100 + i}),
        )?
        .with_url("https://customer.example/webhooks");
        ids.insert(emitter.emit(event).await?.to_string());
    }
    let emitted_in = start.elapsed();
    let confirmed = emitter
        .emit_sync(Event::new(
            "provider-0",
            "transaction.confirmed",
            json!({"last": true}),
        )?)
        .await?;
    ids.insert(confirmed.event_id.to_string());
    println!(
        "emitted {events} events in {emitted_in:?} with emit; emit_sync confirmed MessageId {}",
        confirmed.message_id
    );

    // Shutting the tree down drains the emitter's buffer.
    tree.shutdown().await?;
    let stats = emitter.stats();
    println!(
        "sent {} events in {} SendMessageBatch requests ({:.1} events/request), failed {}, in {:?}",
        stats.sent,
        stats.requests,
        stats.sent as f64 / stats.requests.max(1) as f64,
        stats.failed,
        start.elapsed()
    );

    // Read everything back.
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < ids.len() && Instant::now() < deadline {
        let resp = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await?;
        for m in resp.messages() {
            let body: wharf::webhooks_emitter::serde_json::Value =
                wharf::webhooks_emitter::serde_json::from_str(m.body().unwrap_or("{}"))?;
            if seen.is_empty() {
                println!("first message: {body}");
            }
            if let Some(id) = body["id"].as_str() {
                seen.insert(id.to_string());
            }
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    let missing = ids.difference(&seen).count();
    println!(
        "read back {} of {} events; missing {missing}",
        seen.len(),
        ids.len()
    );
    if missing > 0 {
        return Err(format!("{missing} events did not arrive").into());
    }
    Ok(())
}
