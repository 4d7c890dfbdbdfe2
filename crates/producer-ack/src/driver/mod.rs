//! The background task behind a [`Producer`](crate::Producer): owns the window's messages,
//! their deadlines and the connection, and makes sure every message ends exactly once.
//!
//! Two tasks per producer:
//! - the **driver** (this file's [`Driver`]) keeps every message not yet resolved, in order,
//!   expires them at their deadline, and decides when the connection is broken;
//! - one **incarnation** per connection attempt ([`incarnation`]) builds a fresh `pulsar`
//!   client and producer ([`client`]), sends what the driver hands it and reports receipts.
//!   When the driver judges the connection broken it aborts the incarnation and, after a
//!   backoff, starts a new one, to which it re-sends the unacknowledged messages in order.
//!
//! The driver never awaits the network itself, so deadlines fire whatever the connection
//! does. A fresh client per incarnation (not the `pulsar` crate's own reconnect alone) is
//! what gets a producer out of a connection that the crate keeps as "valid" after a broker
//! restart.

mod client;
mod envelope;
mod incarnation;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use wharf_core::supervisor::panic_message;
use wharf_core::{Backoff, Cause};

use crate::config::{OnReconnect, ProducerBuilder};
use crate::metrics as m;
use crate::producer::Shared;
use crate::{Error, MessageId};
use client::is_permanent;
pub(crate) use envelope::{Command, Envelope};
use incarnation::{Broken, Event, Incarnation};

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
        let Err(panic) = run.catch_unwind().await else {
            break Ok(());
        };
        let panic = panic_message(panic.as_ref());
        let now = Instant::now();
        crashes.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        crashes.push(now);
        tracing::error!(
            crashes = crashes.len(),
            panic,
            "the producer's task panicked; restarting it"
        );
        if crashes.len() > 5 {
            tracing::error!(
                "the producer's task panicked more than 5 times in a minute; stopping it"
            );
            break Err(format!(
                "the producer's task panicked more than 5 times in a minute (last: {panic})"
            ));
        }
    };
    shared.connected.store(false, Ordering::Relaxed);
    outcome
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
    /// Delays between connection attempts: the builder's `reconnect_backoff`.
    backoff: Backoff,
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
        metrics::gauge!(m::WINDOW, "topic" => topic.clone()).set(config.window as f64);
        let metrics = Metrics {
            produced: metrics::counter!(m::PRODUCED, "topic" => topic.clone()),
            acknowledged: metrics::counter!(m::ACKNOWLEDGED, "topic" => topic.clone()),
            failed: metrics::counter!(m::FAILED, "topic" => topic.clone()),
            pending: metrics::gauge!(m::PENDING, "topic" => topic.clone()),
            reconnects: metrics::counter!(m::RECONNECTS, "topic" => topic),
        };
        let backoff = config.reconnect_backoff_policy();
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
            backoff,
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
                broken,
            } if Some(incarnation) == current => self.on_broken(broken),
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

    fn on_broken(&mut self, broken: Broken) {
        let (reason, cause) = match broken {
            Broken::Refused { reason, cause } => {
                self.fail_all(|topic| Error::Rejected {
                    topic,
                    reason: reason.clone(),
                    source: cause.clone(),
                });
                (reason, Some(cause))
            }
            Broken::Transient { reason, cause } => (reason, cause),
        };
        self.teardown(&reason, cause.as_ref());
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
                        source: Cause::new(error),
                    }));
                }
            }
            Err(error) => {
                if self.pending.contains_key(&id) {
                    self.teardown(&error.to_string(), Some(&Cause::new(error)));
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

    /// Gives the connection up and schedules the next attempt; `cause` is the `pulsar`
    /// crate's error behind `reason`, when there is one.
    fn teardown(&mut self, reason: &str, cause: Option<&Cause>) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let was_up = connection.up;
        drop(connection); // aborts the incarnation, dropping its client and producer
        self.shared.connected.store(false, Ordering::Relaxed);
        let delay = self.backoff.delay(self.attempt);
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
            self.fail_sent(reason, cause);
        }
    }

    /// `OnReconnect::Fail`: every message handed to the lost connection fails with
    /// `ConnectionLost`; those not sent yet wait for the next one.
    fn fail_sent(&mut self, reason: &str, cause: Option<&Cause>) {
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
                    source: cause.cloned(),
                }));
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
        let events = self.events_tx.clone();
        self.connection = Some(Incarnation::start(self.config.clone(), id, events));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::PulsarMessage;
    use crate::ack::{Notify, WindowPermit};
    use pulsar::error::ConnectionError;
    use pulsar::message::proto::ServerError;

    type Outcome = oneshot::Receiver<Result<MessageId, Error>>;

    /// A driver on an unreachable broker with one message in its window, handed to the
    /// current connection attempt (which the test pretends is up).
    fn driver_with_a_sent_message(on_reconnect: OnReconnect) -> (Driver, Outcome) {
        let config = ProducerBuilder::new("pulsar://127.0.0.1:1", "t").on_reconnect(on_reconnect);
        let window = Arc::new(Semaphore::new(8));
        let mut driver = Driver::new(Arc::new(config), window, Arc::default());
        let (tx, outcome) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(30);
        let envelope = Envelope::new(
            Arc::from("t"),
            PulsarMessage::new("m"),
            deadline,
            Notify::Reply(tx),
            WindowPermit(None),
        );
        driver.on_command(Command::Produce(envelope));
        driver.connect();
        driver.connection.as_mut().expect("an attempt").up = true;
        driver.flush();
        (driver, outcome)
    }

    fn refusal() -> pulsar::Error {
        pulsar::Error::Connection(ConnectionError::PulsarError(
            Some(ServerError::AuthorizationError),
            Some("not authorized".to_owned()),
        ))
    }

    fn the_pulsar_error_behind(error: &Error) -> &pulsar::Error {
        std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<pulsar::Error>())
            .unwrap_or_else(|| panic!("no pulsar error behind {error:?}"))
    }

    #[tokio::test]
    async fn a_message_the_broker_refuses_fails_with_the_pulsar_error_as_its_source() {
        let (mut driver, mut outcome) = driver_with_a_sent_message(OnReconnect::Resend);
        let receipts = vec![(0, Err(refusal()))];
        driver.on_event(Event::Receipts {
            incarnation: 1,
            receipts,
        });
        let error = outcome.try_recv().expect("resolved").expect_err("refused");
        assert!(matches!(error, Error::Rejected { .. }), "{error:?}");
        let source = the_pulsar_error_behind(&error);
        assert!(source.to_string().contains("not authorized"), "{source}");
    }

    #[tokio::test]
    async fn a_producer_the_broker_refuses_fails_its_messages_with_the_pulsar_error_as_source() {
        let (mut driver, mut outcome) = driver_with_a_sent_message(OnReconnect::Resend);
        let broken = Broken::Refused {
            reason: "could not create the producer: not authorized".to_owned(),
            cause: Cause::new(refusal()),
        };
        driver.on_event(Event::Broken {
            incarnation: 1,
            broken,
        });
        let error = outcome.try_recv().expect("resolved").expect_err("refused");
        assert!(matches!(error, Error::Rejected { .. }), "{error:?}");
        the_pulsar_error_behind(&error);
    }

    #[tokio::test]
    async fn a_connection_the_pulsar_crate_reports_lost_fails_sent_messages_with_its_error() {
        let (mut driver, mut outcome) = driver_with_a_sent_message(OnReconnect::Fail);
        let lost = pulsar::Error::Connection(ConnectionError::Disconnected);
        driver.on_event(Event::Receipts {
            incarnation: 1,
            receipts: vec![(0, Err(lost))],
        });
        let error = outcome.try_recv().expect("resolved").expect_err("lost");
        assert!(matches!(error, Error::ConnectionLost { .. }), "{error:?}");
        let source = the_pulsar_error_behind(&error);
        assert!(
            matches!(
                source,
                pulsar::Error::Connection(ConnectionError::Disconnected)
            ),
            "{source:?}"
        );
    }
}
