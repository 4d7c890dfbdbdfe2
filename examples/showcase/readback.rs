//! Reading back what reached the brokers: the webhook events in SQS (while the showcase
//! runs) and the audit records in Pulsar (at the end).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use wharf::webhooks_emitter::aws_sdk_sqs;
use wharf::webhooks_emitter::serde_json;

use crate::BoxError;
use crate::app::lock;

/// Per order, the W3C `traceparent` its first read-back message carried (SQS message
/// attribute, Pulsar property): the context the sending span wrote, checked by `--trace`.
pub(crate) type Carried = HashMap<u64, String>;

/// The read-back of one broker: messages per order, and the trace context they carried.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) per_order: HashMap<u64, u32>,
    pub(crate) traceparents: Carried,
}

/// The SQS read-back, running beside the showcase (outside the tree: it is the test's eyes).
#[derive(Debug)]
pub(crate) struct SqsReaders {
    seen: Arc<Mutex<SqsSeen>>,
    finish: Arc<tokio::sync::watch::Sender<Option<usize>>>,
    readers: tokio::task::JoinSet<()>,
}

impl SqsReaders {
    /// Starts three readers: moto serves a ReceiveMessage slowly, and the queue must not
    /// pile up.
    pub(crate) fn spawn(client: &aws_sdk_sqs::Client, queue_url: &str) -> Self {
        let seen: Arc<Mutex<SqsSeen>> = Arc::default();
        let finish = Arc::new(tokio::sync::watch::channel(None).0);
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..3 {
            readers.spawn(read_sqs(
                client.clone(),
                queue_url.to_owned(),
                seen.clone(),
                finish.clone(),
            ));
        }
        Self {
            seen,
            finish,
            readers,
        }
    }

    /// Orders with at least one event read so far.
    pub(crate) fn orders_seen(&self) -> usize {
        lock(&self.seen).per_order.len()
    }

    /// Tells the readers how many orders to expect, waits for them to finish, and answers
    /// the events each order got.
    pub(crate) async fn finish(mut self, expected: usize) -> Seen {
        self.finish.send_replace(Some(expected));
        while self.readers.join_next().await.is_some() {}
        let mut seen = lock(&self.seen);
        Seen {
            per_order: std::mem::take(&mut seen.per_order),
            traceparents: std::mem::take(&mut seen.traceparents),
        }
    }
}

/// What the SQS read-back found: distinct envelope ids, and events per order.
#[derive(Debug, Default)]
struct SqsSeen {
    ids: HashSet<String>,
    per_order: HashMap<u64, u32>,
    traceparents: Carried,
}

/// Reads the webhook queue back while the showcase runs (and deletes what it read, which
/// keeps moto fast), until `finish` fires and then everything expected is in or the queue
/// stays empty for a while. Errors (SQS unreachable during --chaos) are retried.
async fn read_sqs(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    seen: Arc<Mutex<SqsSeen>>,
    finish: Arc<tokio::sync::watch::Sender<Option<usize>>>,
) {
    let mut finishing = finish.subscribe();
    let mut empty_after_finish = 0;
    let mut deadline = None;
    loop {
        let expected = *finishing.borrow_and_update();
        if let Some(expected) = expected {
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            let complete = lock(&seen).per_order.len() >= expected;
            if Instant::now() > deadline || empty_after_finish >= if complete { 2 } else { 90 } {
                return;
            }
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            sqs.receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                // Not deleted in time (a lost response): visible again for the final pass.
                .visibility_timeout(20)
                .message_attribute_names("traceparent")
                .wait_time_seconds(0)
                .send(),
        )
        .await;
        let Ok(Ok(resp)) = resp else {
            tokio::time::sleep(Duration::from_millis(500)).await; // SQS away: try again
            continue;
        };
        if resp.messages().is_empty() {
            if expected.is_some() {
                empty_after_finish += 1;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = finishing.changed() => {}
            }
            continue;
        }
        empty_after_finish = 0;
        let mut delete = sqs.delete_message_batch().queue_url(&queue_url);
        {
            let mut seen = lock(&seen);
            for (n, m) in resp.messages().iter().enumerate() {
                let body: serde_json::Value =
                    serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
                let event_id = body["id"].as_str().unwrap_or_default().to_owned();
                // The same event delivered twice by SQS is not a second event.
                if seen.ids.insert(event_id)
                    && let Some(order) = body["data"]["order"].as_u64()
                {
                    *seen.per_order.entry(order).or_default() += 1;
                    if let Some(tp) = m
                        .message_attributes()
                        .and_then(|a| a.get("traceparent"))
                        .and_then(|v| v.string_value())
                    {
                        seen.traceparents
                            .entry(order)
                            .or_insert_with(|| tp.to_owned());
                    }
                }
                let entry = aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                    .build();
                if let Ok(entry) = entry {
                    delete = delete.entries(entry);
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), delete.send()).await;
    }
}

/// Reads the audit topic back from its beginning: how many records each order got, and the
/// trace context each order's first record carried.
pub(crate) async fn read_pulsar(
    client: &pulsar::Pulsar<pulsar::TokioExecutor>,
    topic: &str,
    expected: usize,
) -> Result<Seen, BoxError> {
    use pulsar::consumer::{ConsumerOptions, InitialPosition};
    let mut consumer: pulsar::Consumer<Vec<u8>, pulsar::TokioExecutor> = tokio::time::timeout(
        Duration::from_secs(20),
        client
            .consumer()
            .with_topic(topic)
            .with_subscription(format!("showcase-readback-{}", std::process::id()))
            .with_subscription_type(pulsar::SubType::Exclusive)
            .with_options(
                ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
            )
            .build(),
    )
    .await
    .map_err(|_| "subscribing to the audit topic timed out")?
    .map_err(|e| format!("subscribing to the audit topic failed: {e}"))?;
    let mut per_order: HashMap<u64, u32> = HashMap::new();
    let mut traceparents = Carried::new();
    let mut records = 0usize;
    loop {
        let wait = if per_order.len() >= expected { 1 } else { 5 };
        let next = match tokio::time::timeout(Duration::from_secs(wait), consumer.try_next()).await
        {
            Err(_) => break, // quiet for `wait` seconds: the topic is read
            Ok(Err(e)) => return Err(format!("reading the audit topic failed: {e}").into()),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        records += 1;
        let body: serde_json::Value = serde_json::from_slice(&next.payload.data)?;
        if let Some(order) = body["order"].as_u64() {
            *per_order.entry(order).or_default() += 1;
            if let Some(tp) = next
                .payload
                .metadata
                .properties
                .iter()
                .find(|kv| kv.key == "traceparent")
            {
                traceparents
                    .entry(order)
                    .or_insert_with(|| tp.value.clone());
            }
        }
        let _ = consumer.ack(&next).await;
        if records > expected * 3 + 1000 {
            break; // bounded
        }
    }
    let _ = consumer.close().await;
    Ok(Seen {
        per_order,
        traceparents,
    })
}
