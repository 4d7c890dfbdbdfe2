//! One connection attempt (an *incarnation*): a fresh `pulsar` client and producer, then
//! sends and receipts until the driver gives it up.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{connect, is_permanent};
use crate::MessageId;
use crate::config::ProducerBuilder;

/// What an incarnation reports to the driver.
pub(super) enum Event {
    Connected {
        incarnation: u64,
    },
    Broken {
        incarnation: u64,
        reason: String,
        permanent: bool,
    },
    Receipts {
        incarnation: u64,
        receipts: Vec<(u64, Result<MessageId, pulsar::Error>)>,
    },
}

/// The current connection attempt.
pub(super) struct Incarnation {
    pub(super) id: u64,
    pub(super) up: bool,
    pub(super) sends: mpsc::UnboundedSender<(u64, pulsar::producer::Message)>,
    pub(super) task: JoinHandle<()>,
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often the live connection is pinged, and how long a ping may take before the
/// connection counts as lost (pings cross the network: they get more slack than sends).
fn health_check(config: &ProducerBuilder) -> (Duration, Duration) {
    let every =
        (config.send_timeout / 8).clamp(Duration::from_millis(50), Duration::from_millis(250));
    // generous: a false alarm costs a reconnect and duplicates of the messages in flight
    let limit = (config.send_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    (every, limit)
}

/// How long handing a message to the `pulsar` crate may take. It is instant (a queue with
/// room for the whole window) unless the crate is busy re-creating a lost producer, and then
/// wharf takes over.
fn send_limit(config: &ProducerBuilder) -> Duration {
    (config.send_timeout / 4).clamp(Duration::from_millis(200), Duration::from_millis(500))
}

/// The receipt of the oldest message still waiting for one (pending while there is none).
async fn oldest_receipt(
    receipts: &mut VecDeque<(u64, pulsar::producer::SendFuture)>,
) -> (u64, Result<pulsar::CommandSendReceipt, pulsar::Error>) {
    let result = std::future::poll_fn(|cx| match receipts.front_mut() {
        Some((_, receipt)) => std::pin::Pin::new(receipt).poll(cx),
        None => std::task::Poll::Pending,
    })
    .await;
    let id = receipts.pop_front().map(|(id, _)| id).unwrap_or(u64::MAX);
    (id, result)
}

fn to_message_id(
    (id, result): (u64, Result<pulsar::CommandSendReceipt, pulsar::Error>),
) -> (u64, Result<MessageId, pulsar::Error>) {
    let result = result.and_then(|receipt| {
        receipt
            .message_id
            .as_ref()
            .map(MessageId::from_proto)
            .ok_or_else(|| {
                pulsar::Error::Custom("the broker's receipt carried no message id".to_owned())
            })
    });
    (id, result)
}

/// One connection: a fresh client and producer, then sends and receipts until aborted.
pub(super) async fn incarnation(
    config: Arc<ProducerBuilder>,
    id: u64,
    events: mpsc::UnboundedSender<Event>,
    mut sends: mpsc::UnboundedReceiver<(u64, pulsar::producer::Message)>,
) {
    let connected = tokio::time::timeout(config.connect_timeout, connect(&config)).await;
    let (_client, mut producer) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => {
            let permanent = is_permanent(&error);
            let reason = format!("could not create the producer: {error}");
            let _ = events.send(Event::Broken {
                incarnation: id,
                reason,
                permanent,
            });
            return;
        }
        Err(_) => {
            let reason = format!("connecting took longer than {:?}", config.connect_timeout);
            let _ = events.send(Event::Broken {
                incarnation: id,
                reason,
                permanent: false,
            });
            return;
        }
    };
    if events.send(Event::Connected { incarnation: id }).is_err() {
        return;
    }
    let (check_every, check_limit) = health_check(&config);
    let send_limit = send_limit(&config);
    let mut health = tokio::time::interval_at(Instant::now() + check_every, check_every);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Receipts in send order: the broker acknowledges a producer's messages in order, so
    // waiting on the oldest one alone costs one wake-up per batch of receipts, not one per
    // message (a partitioned topic may report a later partition's receipt a little late).
    let mut receipts: VecDeque<(u64, pulsar::producer::SendFuture)> = VecDeque::new();
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            biased;
            _ = health.tick() => {
                // The pulsar crate re-creates a lost producer by itself and says nothing; a
                // ping that fails, or waits on such a re-creation, tells wharf the connection
                // was lost, so that it counts the reconnect, applies OnReconnect, and never
                // depends on the crate's recovery alone.
                let reason = match tokio::time::timeout(check_limit, producer.check_connection()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(error)) => format!("the connection check failed: {error}"),
                    Err(_) => format!("the connection did not answer a ping within {check_limit:?}"),
                };
                let _ = events.send(Event::Broken { incarnation: id, reason, permanent: false });
                return;
            }
            first = oldest_receipt(&mut receipts), if !receipts.is_empty() => {
                // one event for every receipt ready now: fewer wake-ups of the driver
                let mut ready = vec![to_message_id(first)];
                while let Some(next) = oldest_receipt(&mut receipts).now_or_never() {
                    ready.push(to_message_id(next));
                }
                let _ = events.send(Event::Receipts { incarnation: id, receipts: ready });
            }
            n = sends.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return; // the driver gave this connection up
                }
                for (message, payload) in batch.drain(..) {
                    match tokio::time::timeout(send_limit, producer.send_non_blocking(payload)).await {
                        Ok(Ok(receipt)) => receipts.push_back((message, receipt)),
                        Ok(Err(error)) => {
                            let receipts = vec![(message, Err(error))];
                            let _ = events.send(Event::Receipts { incarnation: id, receipts });
                        }
                        Err(_) => {
                            let reason = format!("the pulsar client did not take a message within {send_limit:?}");
                            let _ = events.send(Event::Broken { incarnation: id, reason, permanent: false });
                            return;
                        }
                    }
                }
            }
        }
    }
}
