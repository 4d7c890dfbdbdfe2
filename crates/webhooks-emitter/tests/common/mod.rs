//! Helpers shared by the integration tests: a raw SQS client on moto, queues, reading back.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use wharf_testkit::eventually;
use wharf_webhooks_emitter::{Emitter, EmitterBuilder, Stats};

pub const REGION: &str = "us-east-1";

/// A plain SDK client (the test's own eyes on the queue).
pub async fn raw_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// Creates a queue with a unique name and returns its URL.
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    fifo: bool,
    attrs: &[(QueueAttributeName, &str)],
) -> String {
    let mut name = wharf_testkit::unique_name(prefix);
    let mut req = client.create_queue();
    if fifo {
        name.push_str(".fifo");
        req = req
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false");
    }
    for (k, v) in attrs {
        req = req.attributes(k.clone(), *v);
    }
    req.queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// An emitter builder pointed at `endpoint` and `queue_url`, with test credentials.
pub fn builder(endpoint: &str, queue_url: &str) -> EmitterBuilder {
    EmitterBuilder::new()
        .queue_url(queue_url)
        .endpoint_url(endpoint)
        .region(REGION)
        .credentials("testing", "testing")
}

/// One ReceiveMessage call (up to 10 messages), deleting what it got.
async fn receive_once(client: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Message> {
    let resp = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(0)
        .visibility_timeout(60)
        .send()
        .await
        .unwrap();
    let msgs = resp.messages.unwrap_or_default();
    for m in &msgs {
        client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(m.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    msgs
}

/// Receives (and deletes) messages until `n` arrived or `within` passed; returns what arrived.
pub async fn receive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    n: usize,
    within: Duration,
) -> Vec<Message> {
    let got = Mutex::new(Vec::new());
    let got_ref = &got;
    let _ = eventually(
        &format!("{n} messages in {queue_url}"),
        within,
        move || async move {
            let batch = receive_once(client, queue_url).await;
            let mut got = got_ref.lock().unwrap();
            got.extend(batch);
            got.len() >= n
        },
    )
    .await;
    got.into_inner().unwrap()
}

/// Reads the queue back fully: receives (and deletes) until it holds no message at all
/// (visible, in flight or delayed). Call it once nothing writes to the queue any more.
pub async fn read_all(client: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Message> {
    let got = Mutex::new(Vec::new());
    let got_ref = &got;
    eventually(
        &format!("{queue_url} to be read empty"),
        Duration::from_secs(30),
        move || async move {
            let batch = receive_once(client, queue_url).await;
            let empty = batch.is_empty();
            got_ref.lock().unwrap().extend(batch);
            empty && queue_depth(client, queue_url).await == 0
        },
    )
    .await
    .unwrap();
    got.into_inner().unwrap()
}

/// A check for `wharf_testkit::eventually_some`: the emitter's stats once `cond` holds.
pub fn stats_where<'a>(
    emitter: &'a Emitter,
    cond: impl Fn(&Stats) -> bool + 'a,
) -> impl FnMut() -> std::future::Ready<Option<Stats>> + 'a {
    move || std::future::ready(Some(emitter.stats()).filter(|s| cond(s)))
}

/// The event ids in the bodies of `msgs`.
pub fn body_ids(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .collect()
}

/// How many messages the queue holds (visible + in flight + delayed).
pub async fn queue_depth(client: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    let resp = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs: HashMap<QueueAttributeName, String> = resp.attributes.unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|k| {
        attrs
            .get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    })
    .sum()
}

pub fn body_json(m: &Message) -> serde_json::Value {
    serde_json::from_str(m.body().unwrap()).unwrap()
}

pub fn string_attr(m: &Message, name: &str) -> Option<String> {
    m.message_attributes()?
        .get(name)?
        .string_value()
        .map(str::to_string)
}

pub fn system_attr(m: &Message, name: MessageSystemAttributeName) -> Option<String> {
    m.attributes()?.get(&name).cloned()
}
