//! The background worker: batching, sending, per-entry retries, draining.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wharf_core::supervisor::panic_message;

use crate::Error;
use crate::config::RetryPolicy;
use crate::error::Cause;
use crate::pending::Pending;
use crate::report::ShutdownReport;
use crate::shared::{Gate, Settings, Shared};
use crate::sqs::{self, BatchOutcome, RequestFailure};

/// SQS's limit on entries per SendMessageBatch.
pub(crate) const MAX_BATCH_ENTRIES: usize = 10;
/// How often pending `emit_sync` deadlines are checked while nothing else happens.
const EXPIRY_TICK: Duration = Duration::from_millis(20);

type Flight = BoxFuture<'static, (u64, Result<BatchOutcome, RequestFailure>)>;

struct Drain {
    started: Instant,
    deadline: Instant,
    sent_before: u64,
    final_: bool,
}

/// The settings the worker reads, copied out of `Settings` at setup.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub(crate) send: sqs::SendConfig,
    pub(crate) max_message_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) drain_timeout: Duration,
}

impl WorkerConfig {
    fn new(s: &Settings) -> Self {
        WorkerConfig {
            send: sqs::SendConfig::new(s),
            max_message_bytes: s.max_message_bytes,
            linger: s.linger,
            max_in_flight: s.max_in_flight,
            retry: s.retry,
            drain_timeout: s.drain_timeout,
        }
    }
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    /// Started by a child spec: its supervisor restarts it after a crash.
    supervised: bool,
    /// Ran to its end (drained); dropping it then is no death.
    finished: bool,
    /// Test-only fault injection (see `Emitter::crash_worker_for_tests`).
    crash: watch::Receiver<u64>,
    cfg: WorkerConfig,
    client: aws_sdk_sqs::Client,
    rx: Option<mpsc::UnboundedReceiver<Pending>>,
    /// Events to send, oldest first (retries go to the front).
    ready: VecDeque<Pending>,
    /// Events waiting for their retry backoff, by due time.
    waiting: BTreeMap<(Instant, u64), Pending>,
    seq: u64,
    in_flight: FuturesUnordered<Flight>,
    flights: HashMap<u64, Vec<Pending>>,
    pause_until: Option<Instant>,
    consecutive_failures: u32,
    next_expiry_check: Instant,
    drain: Option<Drain>,
    intake_limit: usize,
}

// One value per turn of the worker's loop, on its stack: boxing the event would cost an
// allocation per event for nothing (with `otel`, `Pending` is 8 bytes over the lint's limit).
#[allow(clippy::large_enum_variant)]
enum Wake {
    Cancel { final_: bool },
    Done(u64, Result<BatchOutcome, RequestFailure>),
    Event(Option<Pending>),
    Tick,
    Crash,
}

impl Worker {
    /// Setup phase: `None` when no queue is configured (the child answers `Ignore`).
    pub(crate) async fn setup(
        shared: Arc<Shared>,
        supervised: bool,
    ) -> Result<Option<Worker>, Error> {
        let Some(settings) = &shared.settings else {
            return Ok(None);
        };
        let client = shared
            .client
            .get_or_try_init(|| sqs::client(settings))
            .await?
            .clone();
        let rx = shared.rx.lock().ok().and_then(|mut slot| slot.take());
        let Some(rx) = rx else {
            return Err(Error::InvalidConfig {
                field: "child_spec",
                reason: "another worker of this emitter is already running; start it once \
                         (one child_spec or one start per emitter)"
                    .to_string(),
            });
        };
        shared.worker_started();
        let salvaged: Vec<Pending> = shared
            .salvage
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if !salvaged.is_empty() {
            tracing::warn!(
                events = salvaged.len(),
                "webhooks emitter restarted; taking over the events of the previous worker"
            );
        }
        let intake_limit = (settings.max_in_flight * MAX_BATCH_ENTRIES * 2).max(100);
        Ok(Some(Worker {
            supervised,
            finished: false,
            crash: shared.crash.subscribe(),
            cfg: WorkerConfig::new(settings),
            client,
            rx: Some(rx),
            ready: salvaged.into_iter().collect(),
            waiting: BTreeMap::new(),
            seq: 0,
            in_flight: FuturesUnordered::new(),
            flights: HashMap::new(),
            pause_until: None,
            consecutive_failures: 0,
            next_expiry_check: Instant::now(),
            drain: None,
            intake_limit,
            shared,
        }))
    }

    fn settings(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// Run phase: until cancelled (then drain) or, after `Emitter::shutdown`, until drained
    /// and cancelled.
    ///
    /// A panic inside is caught here. Under a supervisor it goes on to the supervisor (which
    /// restarts the worker; the next one takes over what this one held). A plain worker has
    /// nobody to restart it: its events are failed and `emit` refuses new ones.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let shared = Arc::clone(&self.shared);
        let supervised = self.supervised;
        let span = tracing::info_span!("wharf_webhooks_emitter", queue = %shared.acct.queue);
        let outcome = AssertUnwindSafe(self.run_to_end(cancel))
            .catch_unwind()
            .instrument(span)
            .await;
        // The worker is dropped by now: what it held is in `salvage`.
        if let Err(panic) = outcome {
            if supervised {
                std::panic::resume_unwind(panic);
            }
            shared.worker_died(&format!("it panicked: {}", panic_message(panic.as_ref())));
        }
    }

    async fn run_to_end(mut self, cancel: CancellationToken) {
        tracing::debug!("webhooks emitter worker running");
        let report = self.serve(&cancel).await;
        let _ = self.shared.report.send(Some(report));
        self.finished = true;
        cancel.cancelled().await;
    }

    async fn serve(&mut self, cancel: &CancellationToken) -> ShutdownReport {
        loop {
            let now = Instant::now();
            self.promote_due(now);
            if now >= self.next_expiry_check {
                self.expire(now);
                self.next_expiry_check = now + EXPIRY_TICK;
            }
            self.launch(now);
            self.shared.acct.update_gauge();
            if let Some(d) = &self.drain {
                if self.is_idle() {
                    return self.finish_drain(now);
                }
                if now >= d.deadline {
                    return self.finish_drain(now);
                }
            }
            let wake_at = self.next_wakeup(now);
            let intake = self.drain.is_none() && self.ready.len() < self.intake_limit;
            let draining = self.drain.is_some();
            let wake = tokio::select! {
                biased;
                _ = cancel.cancelled(), if !draining => Wake::Cancel { final_: false },
                _ = self.shared.closing.cancelled(), if !draining => Wake::Cancel { final_: true },
                Some((no, res)) = self.in_flight.next(), if !self.in_flight.is_empty() => Wake::Done(no, res),
                p = recv(&mut self.rx), if intake => Wake::Event(p),
                Ok(()) = self.crash.changed() => Wake::Crash,
                _ = tokio::time::sleep_until(wake_at) => Wake::Tick,
            };
            match wake {
                Wake::Cancel { final_ } => self.begin_drain(final_),
                Wake::Done(no, res) => self.complete(no, res),
                Wake::Event(Some(p)) => {
                    self.push_ready(p);
                    self.pull_more();
                }
                Wake::Event(None) | Wake::Tick => {}
                Wake::Crash => panic!("crash injected by a test (Emitter::crash_worker_for_tests)"),
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.waiting.is_empty() && self.flights.is_empty()
    }

    fn push_ready(&mut self, mut p: Pending) {
        p.queued_at = Instant::now();
        self.ready.push_back(p);
    }

    fn pull_more(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let now = Instant::now();
        while self.ready.len() < self.intake_limit {
            match rx.try_recv() {
                Ok(mut p) => {
                    p.queued_at = now;
                    self.ready.push_back(p);
                }
                Err(_) => break,
            }
        }
    }

    fn promote_due(&mut self, now: Instant) {
        // Due retries go to the front, oldest due first, ahead of newer events.
        let due: Vec<(Instant, u64)> = self
            .waiting
            .range(..(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in due.into_iter().rev() {
            if let Some(p) = self.waiting.remove(&key) {
                self.ready.push_front(p);
            }
        }
    }

    /// Fails `emit_sync` events whose deadline passed before they could be (re)sent, and
    /// drops those whose caller already gave up.
    fn expire(&mut self, now: Instant) {
        let expired = |p: &Pending| p.is_sync() && (p.deadline <= now || p.caller_gone());
        if self.ready.iter().any(expired) {
            let (gone, keep): (VecDeque<Pending>, VecDeque<Pending>) =
                std::mem::take(&mut self.ready)
                    .into_iter()
                    .partition(expired);
            self.ready = keep;
            gone.into_iter().for_each(timeout);
        }
        let keys: Vec<(Instant, u64)> = self
            .waiting
            .iter()
            .filter(|(_, p)| expired(p))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(p) = self.waiting.remove(&key) {
                timeout(p);
            }
        }
    }

    fn paused(&self, now: Instant) -> bool {
        self.pause_until.is_some_and(|t| now < t)
    }

    /// Starts as many requests as allowed: full batches at once, partial ones after linger
    /// (or at once while draining).
    fn launch(&mut self, now: Instant) {
        let max_in_flight = self.settings().max_in_flight;
        let linger = self.settings().linger;
        while self.in_flight.len() < max_in_flight && !self.ready.is_empty() && !self.paused(now) {
            let full = self.ready.len() >= MAX_BATCH_ENTRIES || self.front_batch_is_full();
            let lingered = self
                .ready
                .front()
                .is_some_and(|p| p.queued_at + linger <= now);
            if !(full || lingered || self.drain.is_some()) {
                break;
            }
            let batch = self.take_batch();
            if !batch.is_empty() {
                self.send(batch);
            }
        }
    }

    fn front_batch_is_full(&self) -> bool {
        let limit = self.settings().max_message_bytes;
        let bytes: usize = self
            .ready
            .iter()
            .take(MAX_BATCH_ENTRIES)
            .map(|p| p.msg.size)
            .sum();
        bytes > limit
    }

    fn take_batch(&mut self) -> Vec<Pending> {
        let limit = self.settings().max_message_bytes;
        let mut batch = Vec::with_capacity(MAX_BATCH_ENTRIES);
        let mut bytes = 0;
        while batch.len() < MAX_BATCH_ENTRIES {
            let Some(front) = self.ready.front() else {
                break;
            };
            if !batch.is_empty() && bytes + front.msg.size > limit {
                break;
            }
            let Some(p) = self.ready.pop_front() else {
                break;
            };
            bytes += p.msg.size;
            batch.push(p);
        }
        batch
    }

    fn send(&mut self, batch: Vec<Pending>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut kept = Vec::with_capacity(batch.len());
        for mut p in batch {
            match p.msg.entry(&kept.len().to_string()) {
                Ok(entry) => {
                    if !p.begin_attempt() {
                        // Its emit_sync caller gave up (and was told it was not sent).
                        timeout(p);
                        continue;
                    }
                    entries.push(entry);
                    kept.push(p);
                }
                Err(e) => {
                    let event_id = p.msg.id;
                    p.fail(Error::Rejected {
                        event_id,
                        code: "InvalidEntry".to_string(),
                        message: e.to_string(),
                        source: Some(Cause::new(e)),
                    });
                }
            }
        }
        if kept.is_empty() {
            return;
        }
        self.seq += 1;
        let no = self.seq;
        let bytes: usize = kept.iter().map(|p| p.msg.size).sum();
        let max_attempt = kept.iter().map(|p| p.attempts).max().unwrap_or(1);
        self.shared.acct.on_request(kept.len());
        let span = tracing::debug_span!(
            "send_batch",
            entries = kept.len(),
            bytes,
            attempt = max_attempt
        );
        let fut = sqs::send_batch(self.client.clone(), self.cfg.send.clone(), entries);
        let acct = Arc::clone(&self.shared.acct);
        let flight = async move {
            // The SDK runs the application's interceptors, credentials provider and HTTP
            // client (from `client` or `sdk_config`): a panic there fails this request only.
            let result = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    acct.on_callback_panic("sqs_client", None, &message);
                    Err(RequestFailure::panicked(message))
                }
            };
            (no, result)
        };
        self.in_flight.push(Box::pin(flight.instrument(span)));
        self.flights.insert(no, kept);
    }

    fn complete(&mut self, no: u64, result: Result<BatchOutcome, RequestFailure>) {
        let Some(batch) = self.flights.remove(&no) else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(outcome) => {
                self.consecutive_failures = 0;
                self.pause_until = None;
                self.settle(batch, outcome, now);
            }
            Err(failure) if failure.retryable => {
                self.consecutive_failures += 1;
                let pause = self.settings().retry.delay(self.consecutive_failures);
                self.pause_until = Some(now + pause);
                tracing::warn!(
                    error = %failure.message,
                    entries = batch.len(),
                    retry_in = ?pause,
                    "SendMessageBatch failed; retrying its events after backoff"
                );
                let mut back = Vec::new();
                for mut p in batch {
                    let cause = failure.cause.clone();
                    p.end_attempt(failure.maybe_reached, failure.message.clone(), cause);
                    if let Some(p) = self.give_up_if_late(p, now + pause) {
                        back.push(p);
                    }
                }
                self.shared.acct.on_retry(back.len() as u64);
                for mut p in back.into_iter().rev() {
                    p.queued_at = now;
                    self.ready.push_front(p);
                }
            }
            Err(failure) => {
                tracing::error!(error = %failure.message, entries = batch.len(), "SendMessageBatch rejected");
                for mut p in batch {
                    let cause = failure.cause.clone();
                    p.end_attempt(failure.maybe_reached, failure.message.clone(), cause);
                    let event_id = p.msg.id;
                    p.fail(Error::Rejected {
                        event_id,
                        code: failure.code.clone(),
                        message: failure.message.clone(),
                        source: failure.cause.clone(),
                    });
                }
            }
        }
    }

    /// Resolves each entry of a batch SQS answered: sent, retried alone, or rejected.
    fn settle(&mut self, batch: Vec<Pending>, outcome: BatchOutcome, now: Instant) {
        let mut slots: Vec<Option<Pending>> = batch.into_iter().map(Some).collect();
        let mut take = |id: &str| {
            id.parse::<usize>()
                .ok()
                .and_then(|i| slots.get_mut(i)?.take())
        };
        for ok in outcome.successful {
            if let Some(p) = take(&ok.id) {
                p.succeed(ok.message_id, ok.sequence_number);
            }
        }
        let mut retry = Vec::new();
        for failed in outcome.failed {
            let Some(mut p) = take(&failed.id) else {
                continue;
            };
            let error = format!("{}: {}", failed.code, failed.message);
            // SQS answered that this entry failed: this attempt did not store it.
            p.end_attempt(false, error.clone(), None);
            if failed.retryable() {
                retry.push(p);
            } else {
                let event_id = p.msg.id;
                p.fail(Error::Rejected {
                    event_id,
                    code: failed.code,
                    message: failed.message,
                    source: None,
                });
            }
        }
        // An entry the response does not mention is treated as a transient failure, one SQS
        // may have carried out.
        for mut p in slots.into_iter().flatten() {
            p.end_attempt(
                true,
                "entry missing from the SendMessageBatch response".to_string(),
                None,
            );
            retry.push(p);
        }
        for p in retry {
            self.retry_alone(p, now);
        }
    }

    fn retry_alone(&mut self, p: Pending, now: Instant) {
        tracing::debug!(event_id = %p.msg.id, error = p.last_error.as_deref().unwrap_or(""), "batch entry failed transiently; retrying it alone");
        let due = now + self.settings().retry.delay(p.attempts);
        let Some(mut p) = self.give_up_if_late(p, due) else {
            return;
        };
        self.shared.acct.on_retry(1);
        p.queued_at = due;
        self.seq += 1;
        self.waiting.insert((due, self.seq), p);
    }

    /// Fails an event whose next attempt would come after its deadline.
    fn give_up_if_late(&self, p: Pending, next_attempt: Instant) -> Option<Pending> {
        if next_attempt < p.deadline {
            return Some(p);
        }
        if p.is_sync() {
            timeout(p);
        } else {
            let error = Error::RetriesExhausted {
                event_id: p.msg.id,
                attempts: p.attempts,
                maybe_sent: p.maybe_sent(),
                elapsed: p.accepted.elapsed(),
                last_error: p.last_error.clone().unwrap_or_default(),
                source: p.last_cause.clone(),
            };
            p.fail(error);
        }
        None
    }

    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = now + Duration::from_secs(1);
        let mut consider = |t: Instant| at = at.min(t);
        if let Some(p) = self.ready.front()
            && self.in_flight.len() < self.settings().max_in_flight
        {
            consider(p.queued_at + self.settings().linger);
        }
        if let Some(((due, _), _)) = self.waiting.first_key_value() {
            consider(*due);
        }
        if let Some(t) = self.pause_until {
            consider(t);
        }
        if !self.ready.is_empty() || !self.waiting.is_empty() {
            consider(self.next_expiry_check);
        }
        if let Some(d) = &self.drain {
            consider(d.deadline);
        }
        at.max(now)
    }

    fn begin_drain(&mut self, final_: bool) {
        self.shared
            .set_gate(if final_ { Gate::Closed } else { Gate::Paused });
        // The gate's write lock is released: no emit can queue anything from here on.
        self.pull_all();
        let now = Instant::now();
        let drain_timeout = self.settings().drain_timeout;
        tracing::info!(
            buffered = self.ready.len() + self.waiting.len() + self.flights.values().map(Vec::len).sum::<usize>(),
            deadline = ?drain_timeout,
            "webhooks emitter draining"
        );
        self.drain = Some(Drain {
            started: now,
            deadline: now + drain_timeout,
            sent_before: self.shared.acct.sent_count(),
            final_,
        });
    }

    fn pull_all(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let now = Instant::now();
        while let Ok(mut p) = rx.try_recv() {
            p.queued_at = now;
            self.ready.push_back(p);
        }
    }

    fn finish_drain(&mut self, now: Instant) -> ShutdownReport {
        let Some(drain) = self.drain.take() else {
            return ShutdownReport::default();
        };
        // Requests still in flight are abandoned; their events may or may not have arrived.
        self.in_flight = FuturesUnordered::new();
        let mut unsent = 0u64;
        for (_, batch) in self.flights.drain() {
            for p in batch {
                unsent += 1;
                abandon(p);
            }
        }
        for p in self
            .ready
            .drain(..)
            .chain(std::mem::take(&mut self.waiting).into_values())
        {
            unsent += 1;
            abandon(p);
        }
        let report = ShutdownReport {
            sent: self
                .shared
                .acct
                .sent_count()
                .saturating_sub(drain.sent_before),
            unsent,
            elapsed: now.saturating_duration_since(drain.started),
        };
        if unsent > 0 {
            tracing::warn!(sent = report.sent, unsent, elapsed = ?report.elapsed, final_ = drain.final_, "webhooks emitter drained; some events could not be sent");
        } else {
            tracing::info!(sent = report.sent, elapsed = ?report.elapsed, final_ = drain.final_, "webhooks emitter drained");
        }
        self.shared.acct.update_gauge();
        report
    }
}

impl Drop for Worker {
    /// On any exit (including a panic or an abort by the supervisor) the receiving end goes
    /// back to its slot and unresolved events to the salvage list, for the next incarnation.
    /// A plain (unsupervised) worker dropped before it finished has no next incarnation: its
    /// events are failed. (After a panic, `run` does that, with the panic's message.)
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take()
            && let Ok(mut slot) = self.shared.rx.lock()
        {
            *slot = Some(rx);
        }
        let mut left: Vec<Pending> = self.flights.drain().flat_map(|(_, b)| b).collect();
        left.extend(self.ready.drain(..));
        left.extend(std::mem::take(&mut self.waiting).into_values());
        if !left.is_empty()
            && let Ok(mut salvage) = self.shared.salvage.lock()
        {
            salvage.extend(left);
        }
        self.shared.worker_ended();
        if !self.supervised && !self.finished && !std::thread::panicking() {
            self.shared.worker_died(
                "its task was dropped before the emitter was shut down (aborted, or its runtime \
                 shut down)",
            );
        }
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<Pending>>) -> Option<Pending> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn timeout(p: Pending) {
    let event_id = p.msg.id;
    let after = p.deadline.saturating_duration_since(p.accepted);
    let error = Error::Timeout {
        event_id,
        after,
        attempts: p.attempts,
        maybe_sent: p.maybe_sent(),
        last_error: p.last_error.clone().unwrap_or_else(|| "none".to_string()),
        source: p.last_cause.clone(),
    };
    p.fail(error);
}

fn abandon(p: Pending) {
    let event_id = p.msg.id;
    // A request still in flight may arrive: `maybe_sent` counts it.
    let maybe_sent = p.maybe_sent();
    p.fail(Error::NotSent {
        event_id,
        reason: "the shutdown deadline passed before it could be sent".to_string(),
        maybe_sent,
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sqs::{FailedEntry, OkEntry};
    use crate::{Emitter, Event};

    /// A worker whose client is never called: `settle` is fed SQS answers directly.
    async fn worker_with_batch(n: usize) -> (Emitter, Worker, Vec<Pending>) {
        let emitter = Emitter::builder()
            .queue_url("http://127.0.0.1:1/123456789012/unit")
            .endpoint_url("http://127.0.0.1:1")
            .region("us-east-1")
            .credentials("unit", "unit")
            .build()
            .unwrap();
        // A live child spec: events are accepted before its worker starts.
        let spec = emitter.child_spec("unit");
        for i in 0..n {
            emitter
                .try_emit(Event::from_json("p", "e", serde_json::json!({ "i": i })))
                .unwrap();
        }
        let mut worker = Worker::setup(emitter.shared_for_tests(), true)
            .await
            .unwrap()
            .unwrap();
        worker.pull_all();
        let mut batch = worker.take_batch();
        for p in &mut batch {
            assert!(p.begin_attempt());
        }
        drop(spec);
        (emitter, worker, batch)
    }

    #[tokio::test]
    async fn failed_entries_are_retried_alone_and_sender_faults_fail_alone() {
        let (emitter, mut worker, batch) = worker_with_batch(3).await;
        let outcome = BatchOutcome {
            successful: vec![OkEntry {
                id: "0".into(),
                message_id: "m-0".into(),
                sequence_number: None,
            }],
            failed: vec![
                FailedEntry {
                    id: "1".into(),
                    sender_fault: true,
                    code: "ThrottlingException".into(),
                    message: "slow down".into(),
                },
                FailedEntry {
                    id: "2".into(),
                    sender_fault: true,
                    code: "InvalidParameterValue".into(),
                    message: "bad".into(),
                },
            ],
        };
        let now = Instant::now();
        worker.settle(batch, outcome, now);

        let stats = emitter.stats();
        assert_eq!((stats.sent, stats.failed, stats.retried), (1, 1, 1));
        assert!(worker.ready.is_empty(), "the retry waits for its backoff");
        assert_eq!(worker.waiting.len(), 1);
        let ((due, _), p) = worker.waiting.first_key_value().unwrap();
        assert!(*due > now, "backoff before the retry");
        assert_eq!(p.attempts, 1);

        worker.promote_due(now + Duration::from_secs(60));
        let retry = worker.take_batch();
        assert_eq!(retry.len(), 1, "only the throttled entry goes out again");
        drop(retry);
    }

    #[tokio::test]
    async fn a_batch_that_fails_as_a_whole_goes_back_to_the_front_and_pauses_sending() {
        let (emitter, mut worker, batch) = worker_with_batch(2).await;
        let ids: Vec<_> = batch.iter().map(|p| p.msg.id).collect();
        worker.flights.insert(7, batch);
        worker.complete(
            7,
            Err(RequestFailure {
                retryable: true,
                maybe_reached: false,
                code: "Transport".into(),
                message: "connection refused".into(),
                cause: None,
            }),
        );
        assert_eq!(
            worker.ready.iter().map(|p| p.msg.id).collect::<Vec<_>>(),
            ids,
            "same order"
        );
        assert!(worker.paused(Instant::now()));
        assert_eq!(emitter.stats().retried, 2);
        assert_eq!(emitter.stats().failed, 0);
    }

    #[tokio::test]
    async fn an_emit_event_past_its_give_up_time_fails_as_retries_exhausted() {
        let (emitter, worker, mut batch) = worker_with_batch(1).await;
        let p = batch.pop().unwrap();
        let late = p.deadline + Duration::from_secs(1);
        let kept = worker.give_up_if_late(p, late);
        assert!(kept.is_none());
        assert_eq!(emitter.stats().failed, 1);
    }
}
