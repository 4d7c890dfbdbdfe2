//! The `Emitter` handle: accepting events, the shared buffer, supervision and shutdown.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wharf_core::supervisor::{ChildSpec, Restart, Shutdown, Started};

use crate::config::{EmitterBuilder, FailureHook, FullPolicy, QueueUrl, RetryPolicy};
use crate::envelope::{self, EncodeOptions, Prepared};
use crate::metrics as m;
use crate::worker::Worker;
use crate::{Error, Event, EventId};

/// What `emit_sync` resolves to: the event's id and what SQS answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// The event's id (the envelope's `id`).
    pub event_id: EventId,
    /// The `MessageId` SQS assigned.
    pub message_id: String,
    /// The `SequenceNumber` on FIFO queues.
    pub sequence_number: Option<String>,
}

/// An event given to `emit` that failed permanently, as passed to the failure hook.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailedEvent {
    /// The event's id.
    pub event_id: EventId,
    /// The event type.
    pub event: String,
    /// The provider id.
    pub provider_id: String,
    /// The message body that was (to be) sent, so it can be stored and replayed.
    pub body: String,
    /// Why it failed.
    pub error: Error,
}

/// Counts since the emitter was built (also exported as `metrics` counters, see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Events accepted by `emit`/`emit_sync`.
    pub emitted: u64,
    /// Events SQS confirmed.
    pub sent: u64,
    /// Retries of single events (an event retried three times counts three).
    pub retried: u64,
    /// Events that failed permanently after being accepted.
    pub failed: u64,
    /// SendMessageBatch requests made.
    pub requests: u64,
    /// Events accepted and not yet resolved (sent or failed).
    pub buffered: u64,
}

/// What a graceful shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events confirmed by SQS during the drain.
    pub sent: u64,
    /// Events that could not be sent before the deadline; each went to its `emit_sync`
    /// caller or to the failure hook, and to the failed counter.
    pub unsent: u64,
    /// How long the drain took.
    pub elapsed: Duration,
}

/// Counters and the failure hook, shared with every pending event.
pub(crate) struct Accounting {
    pub(crate) queue: String,
    emitted: AtomicU64,
    sent: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    hook: Option<FailureHook>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) capacity: usize,
    pub(crate) byte_permits: Arc<Semaphore>,
    pub(crate) byte_capacity_kib: usize,
}

impl Accounting {
    pub(crate) fn sent_count(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn on_retry(&self, n: u64) {
        self.retried.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(m::RETRIED, "queue" => self.queue.clone()).increment(n);
    }

    pub(crate) fn on_request(&self, entries: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::REQUESTS, "queue" => self.queue.clone()).increment(1);
        metrics::histogram!(m::BATCH_SIZE, "queue" => self.queue.clone()).record(entries as f64);
    }

    pub(crate) fn buffered(&self) -> u64 {
        self.capacity
            .saturating_sub(self.permits.available_permits()) as u64
    }

    pub(crate) fn update_gauge(&self) {
        metrics::gauge!(m::BUFFERED, "queue" => self.queue.clone()).set(self.buffered() as f64);
    }
}

/// Where an `emit_sync` caller waits, and what it can tell on timeout.
pub(crate) struct SyncReply {
    tx: oneshot::Sender<Result<Sent, Error>>,
    progress: Arc<Mutex<Progress>>,
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    attempts: u32,
    in_flight: bool,
    last_error: Option<String>,
}

/// An accepted event until it is resolved. Dropping one unresolved counts it as failed, so
/// no event vanishes uncounted (a worker crash moves pending events to the next incarnation
/// first; see `Worker`'s `Drop`).
pub(crate) struct Pending {
    pub(crate) msg: Prepared,
    reply: Option<SyncReply>,
    /// The `emit_sync` deadline, or the retry policy's give-up time for `emit`.
    pub(crate) deadline: Instant,
    pub(crate) accepted: Instant,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    /// When it last became ready to send (for linger) or when its retry is due.
    pub(crate) queued_at: Instant,
    acct: Arc<Accounting>,
    _permit: Permits,
    done: bool,
}

/// An event's room in the buffer: one slot and its size in KiB, released when it is resolved.
#[derive(Debug)]
pub(crate) struct Permits {
    _count: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.msg.id)
            .field("event", &self.msg.event)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Pending {
    pub(crate) fn is_sync(&self) -> bool {
        self.reply.is_some()
    }

    /// The caller of `emit_sync` stopped waiting (it timed out itself).
    pub(crate) fn caller_gone(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| r.tx.is_closed())
    }

    pub(crate) fn on_attempt(&mut self) {
        self.attempts += 1;
        if let Some(r) = &self.reply
            && let Ok(mut p) = r.progress.lock()
        {
            p.attempts = self.attempts;
            p.in_flight = true;
        }
    }

    pub(crate) fn on_transient(&mut self, error: String) {
        if let Some(r) = &self.reply
            && let Ok(mut p) = r.progress.lock()
        {
            p.in_flight = false;
            p.last_error = Some(error.clone());
        }
        self.last_error = Some(error);
    }

    pub(crate) fn succeed(mut self, message_id: String, sequence_number: Option<String>) {
        self.done = true;
        self.acct.sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::SENT, "queue" => self.acct.queue.clone()).increment(1);
        if let Some(reply) = self.reply.take() {
            let _ = reply.tx.send(Ok(Sent {
                event_id: self.msg.id,
                message_id,
                sequence_number,
            }));
        }
    }

    pub(crate) fn fail(mut self, error: Error) {
        self.done = true;
        self.report_failure(error);
    }

    fn report_failure(&mut self, error: Error) {
        self.acct.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::FAILED, "queue" => self.acct.queue.clone(), "reason" => error.kind())
            .increment(1);
        if let Some(reply) = self.reply.take() {
            // The caller learns it; if it already gave up, it was told `Timeout`.
            let _ = reply.tx.send(Err(error));
            return;
        }
        tracing::error!(
            event_id = %self.msg.id,
            event = %self.msg.event,
            queue = %self.acct.queue,
            error = %error,
            "webhook event failed permanently"
        );
        if let Some(hook) = &self.acct.hook {
            hook(&FailedEvent {
                event_id: self.msg.id,
                event: self.msg.event.clone(),
                provider_id: self.msg.provider_id.clone(),
                body: std::mem::take(&mut self.msg.body),
                error,
            });
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let id = self.msg.id;
            self.report_failure(Error::NotSent {
                event_id: id,
                reason: "the emitter was dropped before the event was sent".to_string(),
                maybe_sent: false,
            });
        }
    }
}

/// Whether `emit` may put events into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Accepting (also before the worker first starts: events wait in the buffer).
    Open,
    /// Drained by its supervisor; a restart reopens it.
    Paused,
    /// Shut down for good by `Emitter::shutdown`.
    Closed,
}

/// Resolved settings the worker needs.
pub(crate) struct Settings {
    pub(crate) queue: QueueUrl,
    pub(crate) max_message_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) drain_timeout: Duration,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) credentials: Option<aws_sdk_sqs::config::Credentials>,
    pub(crate) sdk_config: Option<aws_config::SdkConfig>,
    pub(crate) client: Option<aws_sdk_sqs::Client>,
}

pub(crate) struct Shared {
    pub(crate) settings: Option<Settings>,
    encode: EncodeOptions,
    full_policy: FullPolicy,
    sync_timeout: Duration,
    pub(crate) acct: Arc<Accounting>,
    tx: mpsc::UnboundedSender<Pending>,
    /// The receiving end, parked here while no worker runs, so events queued during a
    /// restart are served by the next incarnation.
    pub(crate) rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    /// Events a crashed worker held (in batches, retries, requests in flight).
    pub(crate) salvage: Mutex<Vec<Pending>>,
    pub(crate) gate: RwLock<Gate>,
    pub(crate) closing: CancellationToken,
    pub(crate) running: AtomicBool,
    pub(crate) report: watch::Sender<Option<ShutdownReport>>,
    pub(crate) client: tokio::sync::OnceCell<aws_sdk_sqs::Client>,
}

impl Shared {
    pub(crate) fn set_gate(&self, gate: Gate) {
        if let Ok(mut g) = self.gate.write() {
            // Closed is final.
            if *g != Gate::Closed {
                *g = gate;
            }
        }
    }

    pub(crate) fn gate(&self) -> Gate {
        self.gate.read().map(|g| *g).unwrap_or(Gate::Closed)
    }
}

/// A cloneable handle to one SQS queue's emitter. See the crate docs for the whole story.
///
/// Clones share one buffer and one background worker. The handle lives as long as you keep
/// it, across restarts of the supervised worker.
#[derive(Clone)]
pub struct Emitter {
    shared: Arc<Shared>,
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("queue", &self.queue_name())
            .field("enabled", &self.is_enabled())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Emitter {
    /// A builder with the defaults.
    pub fn builder() -> EmitterBuilder {
        EmitterBuilder::new()
    }

    /// An emitter configured from the environment like the original (see
    /// [`EmitterBuilder::from_env`]); disabled when `SQS_QUEUE_URL` is unset or empty.
    pub fn from_env() -> Result<Emitter, Error> {
        EmitterBuilder::from_env().build()
    }

    pub(crate) fn from_parts(b: EmitterBuilder, queue: Option<QueueUrl>) -> Emitter {
        let fifo = b
            .fifo
            .unwrap_or_else(|| queue.as_ref().is_some_and(|q| q.fifo));
        let encode = EncodeOptions {
            max_message_bytes: b.max_message_bytes,
            compression: b.compression,
            compress_above: b.compress_above,
            denied_fields: b.denied_fields,
            group_key: b.group_key,
            fifo,
        };
        let max_in_flight = b.max_in_flight.unwrap_or(if fifo { 1 } else { 4 });
        let queue_name = queue.as_ref().map(|q| q.name.clone()).unwrap_or_default();
        let settings = queue.map(|queue| Settings {
            queue,
            max_message_bytes: b.max_message_bytes,
            linger: b.linger,
            max_in_flight,
            request_timeout: b.request_timeout,
            connect_timeout: b.connect_timeout,
            retry: b.retry,
            drain_timeout: b.drain_timeout,
            region: b.region,
            endpoint_url: b.endpoint_url,
            credentials: b.credentials,
            sdk_config: b.sdk_config,
            client: b.client,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let acct = Arc::new(Accounting {
            queue: queue_name,
            emitted: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            hook: b.on_failure,
            permits: Arc::new(Semaphore::new(b.buffer_capacity)),
            capacity: b.buffer_capacity,
            byte_permits: Arc::new(Semaphore::new(b.buffer_bytes / 1024)),
            byte_capacity_kib: b.buffer_bytes / 1024,
        });
        Emitter {
            shared: Arc::new(Shared {
                settings,
                encode,
                full_policy: b.full_policy,
                sync_timeout: b.sync_timeout,
                acct,
                tx,
                rx: Mutex::new(Some(rx)),
                salvage: Mutex::new(Vec::new()),
                gate: RwLock::new(Gate::Open),
                closing: CancellationToken::new(),
                running: AtomicBool::new(false),
                report: watch::channel(None).0,
                client: tokio::sync::OnceCell::new(),
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn shared_for_tests(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Whether a queue is configured. A disabled emitter answers [`Error::Disabled`] to
    /// every emit and its child spec answers `Started::Ignore`.
    pub fn is_enabled(&self) -> bool {
        self.shared.settings.is_some()
    }

    /// The queue's name (empty when disabled).
    pub fn queue_name(&self) -> &str {
        &self.shared.acct.queue
    }

    /// Whether events go out with FIFO parameters.
    pub fn is_fifo(&self) -> bool {
        self.shared.encode.fifo
    }

    /// Counts since the emitter was built.
    pub fn stats(&self) -> Stats {
        let a = &self.shared.acct;
        Stats {
            emitted: a.emitted.load(Ordering::Relaxed),
            sent: a.sent.load(Ordering::Relaxed),
            retried: a.retried.load(Ordering::Relaxed),
            failed: a.failed.load(Ordering::Relaxed),
            requests: a.requests.load(Ordering::Relaxed),
            buffered: a.buffered(),
        }
    }

    /// Accepts an event for background sending and returns its id at once; never waits on
    /// the network. With [`FullPolicy::Wait`] it may wait for room in the buffer (bounded).
    ///
    /// `Ok` means accepted and buffered, not sent: a later permanent failure goes to the
    /// failure hook, an error log line and the `wharf_webhooks_failed_total` counter.
    /// Errors: [`Error::Disabled`], [`Error::Stopped`], [`Error::BufferFull`] and every
    /// bad-input error (nothing was sent).
    pub async fn emit(&self, event: Event) -> Result<EventId, Error> {
        let msg = self.prepare(event)?;
        let permit = self.permit(None, msg.kib()).await?;
        self.enqueue(msg, None, None, permit)
    }

    /// Like [`emit`](Self::emit) but never waits, whatever the full policy; callable from
    /// synchronous code.
    pub fn try_emit(&self, event: Event) -> Result<EventId, Error> {
        let msg = self.prepare(event)?;
        let permit = self.try_permit(Duration::ZERO, msg.kib())?;
        self.enqueue(msg, None, None, permit)
    }

    /// Sends an event and resolves to SQS's `MessageId`, or to a typed error, within the
    /// configured `sync_timeout` (which covers waiting for room, batching, every retry and
    /// backoff). Never hangs.
    pub async fn emit_sync(&self, event: Event) -> Result<Sent, Error> {
        self.emit_sync_timeout(event, self.shared.sync_timeout)
            .await
    }

    /// [`emit_sync`](Self::emit_sync) with its own timeout.
    pub async fn emit_sync_timeout(&self, event: Event, timeout: Duration) -> Result<Sent, Error> {
        let start = Instant::now();
        let deadline = start + timeout;
        let msg = self.prepare(event)?;
        let event_id = msg.id;
        let permit = self.permit(Some(deadline), msg.kib()).await?;
        let (tx, rx) = oneshot::channel();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let reply = SyncReply {
            tx,
            progress: Arc::clone(&progress),
        };
        self.enqueue(msg, Some(reply), Some(deadline), permit)?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::NotSent {
                event_id,
                reason: "the emitter stopped before answering".to_string(),
                maybe_sent: true,
            }),
            Err(_) => {
                let p = progress
                    .lock()
                    .map(|p| (p.attempts, p.in_flight, p.last_error.clone()));
                let (attempts, in_flight, last) = p.unwrap_or((0, true, None));
                Err(Error::Timeout {
                    event_id,
                    after: timeout,
                    attempts,
                    maybe_sent: in_flight,
                    last_error: last.unwrap_or_else(|| "none".to_string()),
                })
            }
        }
    }

    fn prepare(&self, event: Event) -> Result<Prepared, Error> {
        match self.shared.gate() {
            _ if self.shared.settings.is_none() => return Err(Error::Disabled),
            Gate::Open => {}
            Gate::Paused | Gate::Closed => return Err(self.stopped()),
        }
        envelope::prepare(event, &self.shared.encode)
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            queue: self.shared.acct.queue.clone(),
        }
    }

    fn full(&self, waited: Duration) -> Error {
        Error::BufferFull {
            capacity: self.shared.acct.capacity,
            bytes: self.shared.acct.byte_capacity_kib * 1024,
            waited,
        }
    }

    fn try_permit(&self, waited: Duration, kib: u32) -> Result<Permits, Error> {
        let count = Arc::clone(&self.shared.acct.permits)
            .try_acquire_owned()
            .map_err(|_| self.full(waited))?;
        let bytes = Arc::clone(&self.shared.acct.byte_permits)
            .try_acquire_many_owned(kib)
            .map_err(|_| self.full(waited))?;
        Ok(Permits {
            _count: count,
            _bytes: bytes,
        })
    }

    async fn permit(&self, deadline: Option<Instant>, kib: u32) -> Result<Permits, Error> {
        let wait = match self.shared.full_policy {
            FullPolicy::Error => return self.try_permit(Duration::ZERO, kib),
            FullPolicy::Wait(d) => d,
        };
        if let Ok(p) = self.try_permit(Duration::ZERO, kib) {
            return Ok(p);
        }
        let start = Instant::now();
        let mut until = start + wait;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let count = Arc::clone(&self.shared.acct.permits);
        let bytes = Arc::clone(&self.shared.acct.byte_permits);
        let both = async move {
            let count = count.acquire_owned().await?;
            let bytes = bytes.acquire_many_owned(kib).await?;
            Ok::<_, tokio::sync::AcquireError>(Permits {
                _count: count,
                _bytes: bytes,
            })
        };
        match tokio::time::timeout_at(until, both).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(self.full(start.elapsed())),
        }
    }

    fn enqueue(
        &self,
        msg: Prepared,
        reply: Option<SyncReply>,
        deadline: Option<Instant>,
        permit: Permits,
    ) -> Result<EventId, Error> {
        let id = msg.id;
        let now = Instant::now();
        let give_up = self
            .shared
            .settings
            .as_ref()
            .map(|s| s.retry.give_up_after)
            .unwrap_or_default();
        let mut pending = Pending {
            msg,
            reply,
            deadline: deadline.unwrap_or(now + give_up),
            accepted: now,
            attempts: 0,
            last_error: None,
            queued_at: now,
            acct: Arc::clone(&self.shared.acct),
            _permit: permit,
            done: false,
        };
        // The read lock makes "check the gate, then queue" atomic with respect to a drain,
        // which takes the write lock to close the gate and then empties the queue.
        let gate = self.shared.gate.read().map_err(|_| self.stopped())?;
        if *gate != Gate::Open {
            pending.done = true;
            return Err(self.stopped());
        }
        if let Err(mpsc::error::SendError(mut p)) = self.shared.tx.send(pending) {
            p.done = true;
            return Err(self.stopped());
        }
        drop(gate);
        self.shared.acct.emitted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::EMITTED, "queue" => self.shared.acct.queue.clone()).increment(1);
        self.shared.acct.update_gauge();
        tracing::trace!(event_id = %id, queue = %self.shared.acct.queue, "webhook event buffered");
        Ok(id)
    }

    /// The supervised child that sends this emitter's events, with id `id`.
    ///
    /// Its start (setup) answers `Started::Ignore` when no queue is configured, and otherwise
    /// builds the SQS client without touching the network, so the tree starts even while SQS
    /// is unreachable; events wait in the buffer. On shutdown (cancellation) it drains the
    /// buffer within `drain_timeout`, reports the count not sent, and the supervisor's grace
    /// period is set a little longer than that. Restart is `Permanent`; events held by a
    /// crashed incarnation are taken over by the next one.
    pub fn child_spec(&self, id: impl Into<String>) -> ChildSpec {
        let shared = Arc::clone(&self.shared);
        let grace = shared
            .settings
            .as_ref()
            .map(|s| {
                s.drain_timeout
                    + s.request_timeout.min(Duration::from_secs(5))
                    + Duration::from_secs(1)
            })
            .unwrap_or(Duration::from_secs(1));
        ChildSpec::new(id, move |ctx| {
            let shared = Arc::clone(&shared);
            async move {
                let Some(worker) = Worker::setup(shared).await? else {
                    return Ok::<_, Error>(Started::Ignore);
                };
                let token = ctx.token();
                Ok(Started::task(async move {
                    worker.run(token).await;
                    Ok::<_, Error>(())
                }))
            }
        })
        .restart(Restart::Permanent)
        .shutdown(Shutdown::Timeout(grace))
    }

    /// Starts the worker as a plain tokio task, without a supervisor (a panic is then not
    /// restarted: prefer [`child_spec`](Self::child_spec)). Does nothing for a disabled
    /// emitter. Stop it with [`shutdown`](Self::shutdown).
    pub async fn start(&self) -> Result<(), Error> {
        let Some(worker) = Worker::setup(Arc::clone(&self.shared)).await? else {
            tracing::info!("webhooks emitter disabled: no SQS queue configured");
            return Ok(());
        };
        let token = self.shared.closing.clone();
        tokio::spawn(worker.run(token));
        Ok(())
    }

    /// Stops taking events, sends everything buffered within `drain_timeout`, and reports
    /// what could not be sent. Every unsent event went to its `emit_sync` caller or the
    /// failure hook, and to the failed counter. Idempotent; later emits get
    /// [`Error::Stopped`].
    pub async fn shutdown(&self) -> ShutdownReport {
        let mut reports = self.shared.report.subscribe();
        reports.borrow_and_update();
        self.shared.set_gate(Gate::Closed);
        self.shared.closing.cancel();
        let Some(settings) = &self.shared.settings else {
            return ShutdownReport::default();
        };
        if self.shared.running.load(Ordering::SeqCst) {
            let limit = settings.drain_timeout + settings.request_timeout + Duration::from_secs(2);
            if let Ok(Ok(())) = tokio::time::timeout(limit, reports.changed()).await
                && let Some(report) = *reports.borrow()
            {
                return report;
            }
        }
        // No worker ran (never started, stopped by its supervisor, or it did not answer):
        // whatever is still buffered cannot be sent, and is counted.
        self.fail_parked("the emitter was shut down while its worker was not running")
    }

    fn fail_parked(&self, reason: &str) -> ShutdownReport {
        let mut parked: Vec<Pending> = self
            .shared
            .salvage
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if let Ok(mut slot) = self.shared.rx.lock()
            && let Some(rx) = slot.as_mut()
        {
            while let Ok(p) = rx.try_recv() {
                parked.push(p);
            }
        }
        let unsent = parked.len() as u64;
        for p in parked {
            let event_id = p.msg.id;
            p.fail(Error::NotSent {
                event_id,
                reason: reason.to_string(),
                maybe_sent: false,
            });
        }
        if unsent > 0 {
            tracing::warn!(unsent, queue = %self.shared.acct.queue, "webhooks emitter shut down with events it could not send");
        }
        self.shared.acct.update_gauge();
        ShutdownReport {
            sent: 0,
            unsent,
            elapsed: Duration::ZERO,
        }
    }
}
