//! The background task behind a [`Producer`](crate::Producer): owns the window's messages,
//! their deadlines and the connection, and makes sure every message ends exactly once.
//!
//! Two tasks per producer:
//! - the **driver** (this file's [`Driver`]) keeps every message not yet resolved, in order,
//!   expires them at their deadline, and decides when the connection is broken;
//! - one **incarnation** per connection attempt ([`incarnation`]) builds a fresh `pulsar`
//!   client and producer, sends what the driver hands it and reports receipts. When the
//!   driver judges the connection broken it aborts the incarnation and, after a backoff,
//!   starts a new one, to which it re-sends the unacknowledged messages in order.
//!
//! The driver never awaits the network itself, so deadlines fire whatever the connection
//! does. A fresh client per incarnation (not the `pulsar` crate's own reconnect alone) is
//! what gets a producer out of a connection that the crate keeps as "valid" after a broker
//! restart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use pulsar::error::{ConnectionError, ProducerError, ServiceDiscoveryError};
use pulsar::{Pulsar, TokioExecutor};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::ack::{Notify, Slot};
use crate::config::{OnReconnect, ProducerBuilder};
use crate::producer::Shared;
use crate::{Error, Message, MessageId};

/// Metric names (all labelled with `topic`).
pub(crate) mod names {
    pub(crate) const PRODUCED: &str = "wharf_producer_ack_produced_total";
    pub(crate) const ACKNOWLEDGED: &str = "wharf_producer_ack_acknowledged_total";
    pub(crate) const FAILED: &str = "wharf_producer_ack_failed_total";
    pub(crate) const PENDING: &str = "wharf_producer_ack_pending";
    pub(crate) const RECONNECTS: &str = "wharf_producer_ack_reconnects_total";
}

/// What handles send to the driver.
#[derive(Debug)]
// Produce is the hot path and Close is rare: boxing the envelope would cost an allocation
// per message to save a few bytes per channel slot.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Produce(Envelope),
    Close(oneshot::Sender<()>),
}

/// One message on its way, with whom to tell and its place in the window.
///
/// Dropped without an outcome (task stopped or crashed), it tells its caller
/// [`Error::Closed`]: that is what makes "exactly once" hold even on a panic.
#[derive(Debug)]
pub(crate) struct Envelope {
    topic: Arc<str>,
    message: Message,
    deadline: Instant,
    notify: Option<Notify>,
    slot: Option<Slot>,
    /// The incarnation it was last handed to, if any.
    sent_in: Option<u64>,
}

impl Envelope {
    pub(crate) fn new(
        topic: Arc<str>,
        message: Message,
        deadline: Instant,
        notify: Notify,
        slot: Slot,
    ) -> Self {
        Envelope {
            topic,
            message,
            deadline,
            notify: Some(notify),
            slot: Some(slot),
            sent_in: None,
        }
    }

    fn resolve(mut self, result: Result<MessageId, Error>) {
        if let (Some(notify), Some(slot)) = (self.notify.take(), self.slot.take()) {
            notify.deliver(result, slot);
        }
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        if let (Some(notify), Some(slot)) = (self.notify.take(), self.slot.take()) {
            let error = Error::Closed {
                topic: self.topic.to_string(),
                reason: "the producer's task stopped".to_owned(),
            };
            notify.deliver(Err(error), slot);
        }
    }
}

/// What an incarnation reports to the driver.
enum Event {
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

/// Runs the driver, and starts a fresh one if it panics (at most 5 times a minute). A panic
/// drops the driver's messages, whose callers hear [`Error::Closed`]; the handles stay valid.
///
/// `Ok` once the producer was closed (its window is closed too); `Err` after too many
/// panics, leaving the window open so that a parent supervisor can run it again.
pub(crate) async fn supervise(
    config: Arc<ProducerBuilder>,
    commands: &mut mpsc::Receiver<Command>,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    use futures::FutureExt;
    let mut crashes: Vec<Instant> = Vec::new();
    let outcome = loop {
        let driver = Driver::new(config.clone(), window.clone(), shared.clone());
        let run = std::panic::AssertUnwindSafe(driver.run(commands));
        if run.catch_unwind().await.is_ok() {
            break Ok(());
        }
        let now = Instant::now();
        crashes.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        crashes.push(now);
        tracing::error!(
            crashes = crashes.len(),
            "the producer's task panicked; restarting it"
        );
        if crashes.len() > 5 {
            tracing::error!(
                "the producer's task panicked more than 5 times in a minute; stopping it"
            );
            break Err("the producer's task panicked more than 5 times in a minute".to_owned());
        }
    };
    shared.connected.store(false, Ordering::Relaxed);
    outcome
}

/// The current connection attempt.
struct Incarnation {
    id: u64,
    up: bool,
    sends: mpsc::UnboundedSender<(u64, pulsar::producer::Message)>,
    task: JoinHandle<()>,
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Metrics {
    produced: metrics::Counter,
    acknowledged: metrics::Counter,
    failed: metrics::Counter,
    pending: metrics::Gauge,
    reconnects: metrics::Counter,
}

struct Driver {
    config: Arc<ProducerBuilder>,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
    /// Messages not resolved yet, by id (= arrival order).
    pending: BTreeMap<u64, Envelope>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_id: u64,
    connection: Option<Incarnation>,
    incarnations: u64,
    retry_at: Option<Instant>,
    attempt: u32,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    closing: Vec<oneshot::Sender<()>>,
    closed: bool,
    metrics: Metrics,
}

impl Driver {
    fn new(config: Arc<ProducerBuilder>, window: Arc<Semaphore>, shared: Arc<Shared>) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let topic = config.topic.clone();
        let metrics = Metrics {
            produced: metrics::counter!(names::PRODUCED, "topic" => topic.clone()),
            acknowledged: metrics::counter!(names::ACKNOWLEDGED, "topic" => topic.clone()),
            failed: metrics::counter!(names::FAILED, "topic" => topic.clone()),
            pending: metrics::gauge!(names::PENDING, "topic" => topic.clone()),
            reconnects: metrics::counter!(names::RECONNECTS, "topic" => topic),
        };
        Driver {
            config,
            window,
            shared,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_id: 0,
            connection: None,
            incarnations: 0,
            retry_at: Some(Instant::now()),
            attempt: 0,
            events_tx,
            events,
            closing: Vec::new(),
            closed: false,
            metrics,
        }
    }

    async fn run(mut self, commands: &mut mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(256);
        let mut commands_open = true;
        loop {
            if self.closed && self.pending.is_empty() {
                break;
            }
            let deadline = self.deadlines.first().map(|(d, _)| *d);
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => {
                    self.on_event(event);
                    while let Ok(event) = self.events.try_recv() {
                        self.on_event(event);
                    }
                }
                n = commands.recv_many(&mut batch, 256), if commands_open => {
                    if n == 0 {
                        commands_open = false;
                        self.begin_close();
                    }
                    for command in batch.drain(..) {
                        self.on_command(command);
                    }
                    self.flush();
                }
                () = sleep_until(deadline), if deadline.is_some() => self.expire(),
                () = sleep_until(retry_at), if retry_at.is_some() => self.connect(),
            }
            self.metrics.pending.set(self.pending.len() as f64);
        }
        self.connection = None;
        self.shared.connected.store(false, Ordering::Relaxed);
        for tx in self.closing.drain(..) {
            let _ = tx.send(());
        }
        tracing::debug!("producer stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Produce(mut envelope) => {
                self.metrics.produced.increment(1);
                if self.closed {
                    // queued before the close: it still gets sent, like any message in the window
                }
                let id = self.next_id;
                self.next_id += 1;
                self.deadlines.insert((envelope.deadline, id));
                envelope.sent_in = None;
                self.pending.insert(id, envelope);
            }
            Command::Close(tx) => {
                self.closing.push(tx);
                self.begin_close();
            }
        }
    }

    fn begin_close(&mut self) {
        self.closed = true;
        // new submits fail at once with Closed; queued ones still arrive
        self.window.close();
    }

    /// Hands every message not yet sent on the live connection to it, in id order.
    fn flush(&mut self) {
        let Some(connection) = self.connection.as_ref().filter(|c| c.up) else {
            return;
        };
        let incarnation = connection.id;
        // new messages sit at the end: walk back from there to the first one already sent
        let mut unsent = Vec::new();
        for (id, envelope) in self.pending.iter_mut().rev() {
            if envelope.sent_in == Some(incarnation) {
                break;
            }
            envelope.sent_in = Some(incarnation);
            unsent.push((*id, envelope.message.to_pulsar()));
        }
        for item in unsent.into_iter().rev() {
            if connection.sends.send(item).is_err() {
                // the incarnation ended; its Broken event is on its way
                break;
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let current = self.connection.as_ref().map(|c| c.id);
        match event {
            Event::Connected { incarnation } if Some(incarnation) == current => {
                if let Some(connection) = self.connection.as_mut() {
                    connection.up = true;
                }
                self.attempt = 0;
                self.shared.connected.store(true, Ordering::Relaxed);
                tracing::info!(
                    incarnation,
                    resend = self.pending.len(),
                    "connected to Pulsar"
                );
                self.resend_all();
            }
            Event::Broken {
                incarnation,
                reason,
                permanent,
            } if Some(incarnation) == current => {
                if permanent {
                    self.fail_all(|topic| Error::Rejected {
                        topic,
                        reason: reason.clone(),
                    });
                }
                self.teardown(&reason);
            }
            Event::Receipts {
                incarnation,
                receipts,
            } => {
                for (id, result) in receipts {
                    self.on_receipt(incarnation, current, id, result);
                }
            }
            _ => {} // news from a connection already given up
        }
    }

    fn on_receipt(
        &mut self,
        incarnation: u64,
        current: Option<u64>,
        id: u64,
        result: Result<MessageId, pulsar::Error>,
    ) {
        match result {
            // stored, even if reported by an older connection: done
            Ok(message_id) => {
                if let Some(envelope) = self.remove(id) {
                    self.metrics.acknowledged.increment(1);
                    envelope.resolve(Ok(message_id));
                }
            }
            Err(_) if Some(incarnation) != current => {} // stale: the message is re-sent
            Err(error) if is_permanent(&error) => {
                if let Some(envelope) = self.remove(id) {
                    self.metrics.failed.increment(1);
                    let topic = envelope.topic.to_string();
                    envelope.resolve(Err(Error::Rejected {
                        topic,
                        reason: error.to_string(),
                    }));
                }
            }
            Err(error) => {
                if self.pending.contains_key(&id) {
                    self.teardown(&error.to_string());
                }
            }
        }
    }

    /// After a (re)connect: every message not resolved goes out again, in order.
    fn resend_all(&mut self) {
        for envelope in self.pending.values_mut() {
            envelope.sent_in = None;
        }
        self.flush();
    }

    /// Gives the connection up and schedules the next attempt.
    fn teardown(&mut self, reason: &str) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let was_up = connection.up;
        drop(connection); // aborts the incarnation, dropping its client and producer
        self.shared.connected.store(false, Ordering::Relaxed);
        let delay = backoff(&self.config, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.retry_at = Some(Instant::now() + delay);
        if was_up {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            self.metrics.reconnects.increment(1);
            tracing::warn!(reason, retry_in = ?delay, pending = self.pending.len(), "lost the connection to Pulsar; reconnecting");
        } else {
            tracing::warn!(reason, retry_in = ?delay, attempt = self.attempt, "could not connect to Pulsar; retrying");
        }
        if self.config.on_reconnect == OnReconnect::Fail {
            let lost: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, e)| e.sent_in.is_some())
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                if let Some(envelope) = self.remove(id) {
                    self.metrics.failed.increment(1);
                    let topic = envelope.topic.to_string();
                    envelope.resolve(Err(Error::ConnectionLost {
                        topic,
                        reason: reason.to_owned(),
                    }));
                }
            }
        }
    }

    fn connect(&mut self) {
        self.retry_at = None;
        if self.closed && self.pending.is_empty() {
            return;
        }
        self.incarnations += 1;
        let id = self.incarnations;
        let (sends, rx) = mpsc::unbounded_channel();
        let span = tracing::debug_span!("pulsar_connection", incarnation = id);
        let task = tokio::spawn(
            incarnation(self.config.clone(), id, self.events_tx.clone(), rx).instrument(span),
        );
        self.connection = Some(Incarnation {
            id,
            up: false,
            sends,
            task,
        });
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(envelope) = self.pending.remove(&id) {
                self.metrics.failed.increment(1);
                let topic = envelope.topic.to_string();
                envelope.resolve(Err(Error::Timeout {
                    topic,
                    after: self.config.send_timeout,
                    connected: self.connection.as_ref().is_some_and(|c| c.up),
                }));
            }
        }
    }

    fn fail_all(&mut self, error: impl Fn(String) -> Error) {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            if let Some(envelope) = self.remove(id) {
                self.metrics.failed.increment(1);
                let topic = envelope.topic.to_string();
                envelope.resolve(Err(error(topic)));
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Envelope> {
        let envelope = self.pending.remove(&id)?;
        self.deadlines.remove(&(envelope.deadline, id));
        Some(envelope)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with up to 50 % jitter, from the builder's bounds.
fn backoff(config: &ProducerBuilder, attempt: u32) -> Duration {
    let base = config
        .backoff_min
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(config.backoff_max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = f64::from(nanos % 1000) / 2000.0; // 0 .. 0.5
    base.mul_f64(1.0 - jitter)
}

/// The `pulsar` crate's per-message receipt timeout: a fraction of the send timeout, so a
/// connection that swallows receipts is detected (and the messages re-sent on a new one)
/// well before the messages themselves time out.
fn operation_timeout(config: &ProducerBuilder) -> Duration {
    (config.send_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
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
async fn incarnation(
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

async fn connect(
    config: &ProducerBuilder,
) -> Result<(Pulsar<TokioExecutor>, pulsar::Producer<TokioExecutor>), pulsar::Error> {
    let mut builder = Pulsar::builder(config.service_url.clone(), TokioExecutor)
        .with_connection_retry_options(pulsar::ConnectionRetryOptions {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            // wharf retries with its own backoff and a fresh client
            max_retries: 1,
            connection_timeout: config.connect_timeout,
            keep_alive: Duration::from_secs(30),
            ..Default::default()
        })
        .with_operation_retry_options(pulsar::OperationRetryOptions {
            operation_timeout: operation_timeout(config),
            retry_delay: Duration::from_millis(200),
            max_retries: Some(3),
        })
        // wharf's window bounds what is in flight: the crate's queue must never say SlowDown
        .with_outbound_channel_size(config.window + 16);
    if let Some(token) = &config.auth_token {
        builder = builder.with_auth(pulsar::Authentication {
            name: "token".to_owned(),
            data: token.0.clone().into_bytes(),
        });
    }
    if let Some(path) = &config.tls.ca_file {
        builder = builder.with_certificate_chain_file(path).map_err(|e| {
            pulsar::Error::Custom(format!(
                "cannot read the TLS CA file {}: {e}",
                path.display()
            ))
        })?;
    }
    if config.tls.allow_insecure {
        builder = builder.with_allow_insecure_connection(true);
    }
    if let Some(verify) = config.tls.verify_hostname {
        builder = builder.with_tls_hostname_verification_enabled(verify);
    }
    let client = builder.build().await?;
    let mut options = pulsar::ProducerOptions {
        block_queue_if_full: true,
        compression: Some(config.compression.to_pulsar()),
        ..Default::default()
    };
    if let Some(batching) = config.batching {
        options.batch_size = Some(batching.max_messages);
        options.batch_byte_size = Some(batching.max_bytes);
        options.batch_timeout = Some(batching.max_delay);
    }
    let mut producer = client
        .producer()
        .with_topic(config.topic.clone())
        .with_options(options);
    if let Some(name) = &config.producer_name {
        producer = producer.with_name(name.clone());
    }
    let producer = producer.build().await?;
    Ok((client, producer))
}

/// Errors that re-connecting cannot fix.
fn is_permanent(error: &pulsar::Error) -> bool {
    use pulsar::message::proto::ServerError as E;
    let kind = match error {
        pulsar::Error::Producer(ProducerError::Fenced) => return true,
        pulsar::Error::Connection(ConnectionError::PulsarError(kind, _))
        | pulsar::Error::Producer(ProducerError::Connection(ConnectionError::PulsarError(
            kind,
            _,
        )))
        | pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::Query(kind, _)) => kind,
        pulsar::Error::Connection(ConnectionError::Authentication(_)) => return true,
        _ => return false,
    };
    matches!(
        kind,
        Some(
            E::TopicNotFound
                | E::TopicTerminatedError
                | E::AuthenticationError
                | E::AuthorizationError
                | E::ProducerFenced
                | E::IncompatibleSchema
                | E::NotAllowedError
                | E::InvalidTopicName
                | E::ProducerBlockedQuotaExceededException
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_min_to_max_with_at_most_half_jitter() {
        let config = ProducerBuilder::new("pulsar://127.0.0.1:1", "t")
            .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(2));
        let first = backoff(&config, 0);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        let later = backoff(&config, 30);
        assert!(
            later >= Duration::from_secs(1) && later <= Duration::from_secs(2),
            "{later:?}"
        );
    }

    #[test]
    fn an_envelope_dropped_without_an_outcome_tells_its_caller_closed() {
        let (tx, mut rx) = oneshot::channel();
        let envelope = Envelope::new(
            Arc::from("t"),
            Message::new("m"),
            Instant::now(),
            Notify::Reply(tx),
            Slot(None),
        );
        drop(envelope);
        assert!(matches!(rx.try_recv(), Ok(Err(Error::Closed { .. }))));
    }

    #[test]
    fn permanent_errors_are_those_reconnecting_cannot_fix() {
        use pulsar::message::proto::ServerError;
        let refused = pulsar::Error::Connection(ConnectionError::PulsarError(
            Some(ServerError::AuthorizationError),
            None,
        ));
        assert!(is_permanent(&refused));
        assert!(!is_permanent(&pulsar::Error::Connection(
            ConnectionError::Disconnected
        )));
    }
}
