//! One connection attempt (an *incarnation*): a fresh `pulsar` client and producer, then
//! sends and receipts until the driver gives it up.
//!
//! The driver holds an [`Incarnation`] (the attempt's handle: dropping it aborts the task),
//! hands it messages and hears back through [`Event`]s. The task never decides a message's
//! outcome: it reports receipts and breakage, and the driver decides.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;
use wharf_core::Cause;

use super::client::{Connected, Watched, connect, is_permanent};
use crate::MessageId;
use crate::config::ProducerBuilder;

/// A message handed to an incarnation: the driver's id for it, and the `pulsar` message.
type Outgoing = (u64, pulsar::producer::Message);

/// What an incarnation reports to the driver.
pub(super) enum Event {
    Connected {
        incarnation: u64,
    },
    Broken {
        incarnation: u64,
        broken: Broken,
    },
    Receipts {
        incarnation: u64,
        receipts: Vec<(u64, Result<MessageId, pulsar::Error>)>,
    },
}

/// Why an incarnation gave its connection up.
pub(super) enum Broken {
    /// Another connection may work: a timeout, a failed ping or send, a broker that went
    /// away. `cause` is the `pulsar` crate's error, when there is one.
    Transient {
        reason: String,
        cause: Option<Cause>,
    },
    /// The broker refused the producer for a reason reconnecting cannot fix.
    Refused { reason: String, cause: Cause },
}

impl Broken {
    fn transient(reason: String) -> Self {
        Broken::Transient {
            reason,
            cause: None,
        }
    }

    /// `error` ended what the incarnation was doing (`context`): refused for good, or worth
    /// another connection.
    fn from_error(context: &str, error: pulsar::Error) -> Self {
        let reason = format!("{context}: {error}");
        let permanent = is_permanent(&error);
        let cause = Cause::new(error);
        if permanent {
            Broken::Refused { reason, cause }
        } else {
            Broken::Transient {
                reason,
                cause: Some(cause),
            }
        }
    }
}

/// The driver's handle on the current connection attempt.
pub(super) struct Incarnation {
    pub(super) id: u64,
    /// Its client and producer are up (it reported `Connected`).
    pub(super) up: bool,
    pub(super) sends: mpsc::UnboundedSender<Outgoing>,
    task: JoinHandle<()>,
}

impl Incarnation {
    /// Starts connection attempt `id` in a task of its own, reporting to `events`.
    pub(super) fn start(
        config: Arc<ProducerBuilder>,
        id: u64,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let (sends, rx) = mpsc::unbounded_channel();
        let span = tracing::debug_span!("pulsar_connection", incarnation = id);
        let task = tokio::spawn(run(config, id, events, rx).instrument(span));
        Incarnation {
            id,
            up: false,
            sends,
            task,
        }
    }
}

impl Drop for Incarnation {
    /// Aborts the attempt, dropping its client and producer.
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

/// One connection: a fresh client and producer, then sends and receipts until the connection
/// breaks or the driver gives it up (and aborts the task).
async fn run(
    config: Arc<ProducerBuilder>,
    id: u64,
    events: mpsc::UnboundedSender<Event>,
    sends: mpsc::UnboundedReceiver<Outgoing>,
) {
    let report = |broken| {
        let _ = events.send(Event::Broken {
            incarnation: id,
            broken,
        });
    };
    // the client lives as long as its producer is served
    let (client, producer, mut opened) = match open(&config).await {
        Ok(connected) => connected,
        Err(broken) => return report(broken),
    };
    // the connections opened so far are this producer's: only a later one is news
    opened.borrow_and_update();
    if events.send(Event::Connected { incarnation: id }).is_err() {
        return;
    }
    if let Some(broken) = serve(&config, id, &client, producer, opened, &events, sends).await {
        report(broken);
    }
}

/// A fresh client and producer, within the connect timeout.
async fn open(config: &ProducerBuilder) -> Result<Connected, Broken> {
    match tokio::time::timeout(config.connect_timeout, connect(config)).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(error)) => Err(Broken::from_error("could not create the producer", error)),
        Err(_) => Err(Broken::transient(format!(
            "connecting took longer than {:?}",
            config.connect_timeout
        ))),
    }
}

/// The `pulsar` crate opened another connection since the producer was created (`opened` is
/// the count from [`connect`]): it lost one and is re-creating the producer by itself.
/// Pending (never ready) otherwise, so it can stand in a `select!`.
async fn reopened(opened: &mut watch::Receiver<u64>) -> Broken {
    if opened.changed().await.is_err() {
        // the client is gone, which only the end of this incarnation does
        std::future::pending::<()>().await;
    }
    Broken::transient(format!(
        "the pulsar client lost its connection and opened another by itself ({} opened)",
        *opened.borrow_and_update()
    ))
}

/// Hands the driver's messages to `producer` and reports their receipts, until the
/// connection breaks (`Some`) or the driver gives it up (`None`).
///
/// A connection the `pulsar` crate replaces by itself counts as broken the moment it opens
/// the new one, whatever wharf is waiting on then (a ping and a hand-over wait on the crate's
/// re-creation): the driver hears of the loss before any receipt that could have come over
/// the new connection, so `OnReconnect` applies to every message handed to the lost one.
/// Dropping the producer then closes it, which stops the crate's re-creation before it
/// re-sends them, unless it got past that point.
async fn serve(
    config: &ProducerBuilder,
    id: u64,
    client: &pulsar::Pulsar<Watched>,
    mut producer: pulsar::Producer<Watched>,
    mut opened: watch::Receiver<u64>,
    events: &mpsc::UnboundedSender<Event>,
    mut sends: mpsc::UnboundedReceiver<Outgoing>,
) -> Option<Broken> {
    let (check_every, check_limit) = health_check(config);
    let send_limit = send_limit(config);
    let mut health = tokio::time::interval_at(Instant::now() + check_every, check_every);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Receipts in send order: the broker acknowledges a producer's messages in order, so
    // waiting on the oldest one alone costs one wake-up per batch of receipts, not one per
    // message (a partitioned topic may report a later partition's receipt a little late).
    let mut receipts: VecDeque<(u64, pulsar::producer::SendFuture)> = VecDeque::new();
    let mut batch = Vec::with_capacity(256);
    // One wait for a re-made connection for the whole incarnation, raced by every await
    // below (a new wait per loop turn would register a waker per message and per receipt);
    // it ends the incarnation once ready, so it is never polled after completing.
    let reopen = reopened(&mut opened);
    tokio::pin!(reopen);
    loop {
        tokio::select! {
            biased;
            broken = &mut reopen => return Some(broken),
            _ = health.tick() => {
                let checked = tokio::select! {
                    biased;
                    broken = &mut reopen => Err(broken),
                    checked = ping(client, &producer, check_limit) => checked,
                };
                if let Err(broken) = checked {
                    return Some(broken);
                }
            }
            first = oldest_receipt(&mut receipts), if !receipts.is_empty() => {
                // one event for every receipt ready now: fewer wake-ups of the driver
                let mut ready = vec![to_message_id(first)];
                while let Some(next) = oldest_receipt(&mut receipts).now_or_never() {
                    ready.push(to_message_id(next));
                }
                if let Some(broken) = (&mut reopen).now_or_never() {
                    // some may have come over the crate's new connection: the loss goes first
                    let _ = events.send(Event::Broken { incarnation: id, broken });
                    let _ = events.send(Event::Receipts { incarnation: id, receipts: ready });
                    return None;
                }
                let _ = events.send(Event::Receipts { incarnation: id, receipts: ready });
            }
            n = sends.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return None; // the driver gave this connection up
                }
                for (message, payload) in batch.drain(..) {
                    let handed = tokio::select! {
                        biased;
                        broken = &mut reopen => return Some(broken),
                        handed = tokio::time::timeout(send_limit, producer.send_non_blocking(payload)) => handed,
                    };
                    match handed {
                        Ok(Ok(receipt)) => receipts.push_back((message, receipt)),
                        Ok(Err(error)) => {
                            let receipts = vec![(message, Err(error))];
                            let _ = events.send(Event::Receipts { incarnation: id, receipts });
                        }
                        Err(_) => {
                            let reason = format!("the pulsar client did not take a message within {send_limit:?}");
                            return Some(Broken::transient(reason));
                        }
                    }
                }
            }
        }
    }
}

/// A ping that fails or gets no answer within `limit` tells wharf the connection was lost:
/// a frozen broker or a silent partition. (A connection the crate replaced by itself is told
/// by [`reopened`], which `serve` races with the ping: the crate holds pings behind its
/// re-creation.)
///
/// A producer on a partitioned topic is not pinged through the `pulsar` crate's
/// `check_connection`: that pings every partition's producer at once, and a connection of the
/// crate (6.9) keeps one ping waiting for its pong, so on a connection shared by two
/// partitions the second ping drops the first, which fails as `Disconnected` and marks the
/// connection failed. Every check then broke a healthy connection (a reconnect every quarter
/// of a second, and duplicates). It asks the broker for the topic's partition count instead:
/// one request and its answer over the client's connection to the service URL.
async fn ping(
    client: &pulsar::Pulsar<Watched>,
    producer: &pulsar::Producer<Watched>,
    limit: Duration,
) -> Result<(), Broken> {
    let check = async {
        if producer.partitions().is_some() {
            client
                .lookup_partitioned_topic_number(producer.topic())
                .await
                .map(drop)
        } else {
            producer.check_connection().await
        }
    };
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => Ok(()),
        // a failed ping is never taken for a refusal: the next connection decides
        Ok(Err(error)) => Err(Broken::Transient {
            reason: format!("the connection check failed: {error}"),
            cause: Some(Cause::new(error)),
        }),
        Err(_) => Err(Broken::transient(format!(
            "the connection did not answer a ping within {limit:?}"
        ))),
    }
}
