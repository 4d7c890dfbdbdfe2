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

mod client;
mod envelope;
mod incarnation;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{OnReconnect, ProducerBuilder};
use crate::metrics as names;
use crate::producer::Shared;
use crate::{Error, MessageId};
use client::is_permanent;
pub(crate) use envelope::{Command, Envelope};
use incarnation::{Event, Incarnation, incarnation};

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
}
