//! The `Emitter` handle: accepting events, the shared buffer, supervision and shutdown.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wharf_core::supervisor::{ChildSpec, Restart, Shutdown, Started, panic_message};

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
    /// Panics caught in code the application handed to the emitter (the failure hook, and an
    /// SQS client's interceptors, credentials provider or HTTP client). Each was logged; none
    /// stopped the emitter or lost a count.
    pub callback_panics: u64,
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
    callback_panics: AtomicU64,
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

    /// Counts and logs a panic caught in the application's code (`callback` names which).
    pub(crate) fn on_callback_panic(
        &self,
        callback: &'static str,
        event_id: Option<EventId>,
        message: &str,
    ) {
        self.callback_panics.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::CALLBACK_PANICS, "queue" => self.queue.clone(), "callback" => callback)
            .increment(1);
        tracing::error!(
            queue = %self.queue,
            callback,
            event_id = event_id.map(tracing::field::display),
            panic = message,
            "a callback of the webhooks emitter panicked; the panic was caught and counted, \
             the emitter carries on"
        );
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

/// What an `emit_sync` caller can tell when its own timeout passes, shared with the worker.
/// The caller marks it `abandoned` under the same lock the worker takes to start an attempt,
/// so either the caller sees the attempt (and says `maybe_sent: true`) or the worker sees the
/// caller gone and never sends the event.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    attempts: u32,
    /// A finished attempt may have reached SQS.
    maybe_reached: bool,
    /// An attempt is under way (or ended without a verdict).
    in_flight: bool,
    last_error: Option<String>,
    /// The caller stopped waiting: the event must not be sent any more.
    abandoned: bool,
}

impl Progress {
    fn maybe_sent(&self) -> bool {
        self.maybe_reached || self.in_flight
    }
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
    /// An attempt that has ended may have reached SQS.
    maybe_reached: bool,
    /// An attempt is under way, or ended without a verdict (its worker crashed or was
    /// stopped): it may have reached SQS too.
    in_flight: bool,
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
        self.reply.as_ref().is_some_and(|r| {
            r.tx.is_closed() || r.progress.lock().map(|p| p.abandoned).unwrap_or(true)
        })
    }

    /// Whether a request carrying this event may have reached SQS. `false` is a promise that
    /// none did: no attempt was made, or each one failed in a way that proves it never left.
    pub(crate) fn maybe_sent(&self) -> bool {
        self.maybe_reached || self.in_flight
    }

    /// Records the start of an attempt, before its request exists. Returns false, and records
    /// nothing, if the `emit_sync` caller already gave up: the event must then not be sent,
    /// because the caller was told `maybe_sent` as it stood.
    #[must_use]
    pub(crate) fn begin_attempt(&mut self) -> bool {
        if let Some(r) = &self.reply {
            let Ok(mut p) = r.progress.lock() else {
                return false;
            };
            if p.abandoned || r.tx.is_closed() {
                return false;
            }
            // An attempt that ended without a verdict (a crashed worker) may have arrived.
            p.maybe_reached |= p.in_flight;
            p.in_flight = true;
            p.attempts = self.attempts + 1;
        }
        self.maybe_reached |= self.in_flight;
        self.in_flight = true;
        self.attempts += 1;
        true
    }

    /// Records the end of the attempt under way: whether its request may have reached SQS,
    /// and the transient error that ended it.
    pub(crate) fn end_attempt(&mut self, maybe_reached: bool, error: String) {
        self.in_flight = false;
        self.maybe_reached |= maybe_reached;
        if let Some(r) = &self.reply
            && let Ok(mut p) = r.progress.lock()
        {
            p.in_flight = false;
            p.maybe_reached |= maybe_reached;
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
            let failed = FailedEvent {
                event_id: self.msg.id,
                event: self.msg.event.clone(),
                provider_id: self.msg.provider_id.clone(),
                body: std::mem::take(&mut self.msg.body),
                error,
            };
            // The hook is the application's code: a panic in it must not unwind through the
            // worker (nor abort the process when this runs in a drop during unwinding).
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&failed))) {
                self.acct.on_callback_panic(
                    "failure_hook",
                    Some(self.msg.id),
                    &panic_message(panic.as_ref()),
                );
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let id = self.msg.id;
            let maybe_sent = self.maybe_sent();
            self.report_failure(Error::NotSent {
                event_id: id,
                reason: "the emitter was dropped before the event was sent".to_string(),
                maybe_sent,
            });
        }
    }
}

/// Whether `emit` may put events into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Accepting, as long as a worker runs or can be started (see [`Life::admit`]).
    Open,
    /// Drained by its supervisor; a restart reopens it.
    Paused,
    /// Shut down for good by `Emitter::shutdown`.
    Closed,
}

/// The gate and whether a worker runs or may run: what decides if an event is accepted.
/// Changed under the write lock; `enqueue` holds the read lock while it checks and queues, so
/// an event is either queued before a change (and taken care of by it) or refused after it.
#[derive(Debug)]
pub(crate) struct Life {
    pub(crate) gate: Gate,
    /// A worker is set up and has not ended.
    pub(crate) running: bool,
    /// A worker was set up at least once.
    started: bool,
    /// Live child specs: a supervisor holding one may start or restart the worker, which
    /// takes over what is buffered.
    specs: usize,
    /// Why no worker will run again (set when an unsupervised worker died, or when the last
    /// child spec went away while no worker ran); cleared by the next start.
    died: Option<String>,
}

impl Life {
    /// Whether a new event may be queued now, and if not, why.
    fn admit(&self, queue: &str) -> Result<(), Error> {
        let queue = queue.to_string();
        match self.gate {
            Gate::Paused | Gate::Closed => return Err(Error::Stopped { queue }),
            Gate::Open => {}
        }
        if self.running {
            return Ok(());
        }
        if let Some(reason) = &self.died {
            return Err(Error::WorkerDied {
                queue,
                reason: reason.clone(),
            });
        }
        if self.specs > 0 {
            // Between a crash and the restart, or before the supervisor's first start: the
            // next worker takes the event over.
            return Ok(());
        }
        if !self.started {
            return Err(Error::NotStarted { queue });
        }
        Err(Error::WorkerDied {
            queue,
            reason: "no worker runs and none will be started".to_string(),
        })
    }
}

/// Held by every child spec's start function: while one lives, a supervisor may (re)start the
/// worker. When the last one goes (the supervisor stopped for good, or the spec was never
/// used) and no worker runs, whatever is still buffered can never be sent and is failed.
struct SpecGuard(Arc<Shared>);

impl SpecGuard {
    fn new(shared: Arc<Shared>) -> Self {
        if let Ok(mut life) = shared.life.write() {
            life.specs += 1;
        }
        SpecGuard(shared)
    }
}

impl Drop for SpecGuard {
    fn drop(&mut self) {
        let orphaned = match self.0.life.write() {
            Ok(mut life) => {
                life.specs = life.specs.saturating_sub(1);
                let orphaned = life.specs == 0 && !life.running;
                if orphaned && life.gate == Gate::Open {
                    life.died = Some(if life.started {
                        "its supervisor stopped without restarting it".to_string()
                    } else {
                        "its child spec was dropped before a supervisor started it".to_string()
                    });
                }
                orphaned
            }
            Err(_) => false,
        };
        if orphaned {
            self.0.fail_parked(
                "no worker runs and none will: the emitter's child spec is gone (its supervisor \
                 stopped)",
            );
        }
    }
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
    pub(crate) life: RwLock<Life>,
    pub(crate) closing: CancellationToken,
    pub(crate) report: watch::Sender<Option<ShutdownReport>>,
    pub(crate) client: tokio::sync::OnceCell<aws_sdk_sqs::Client>,
    /// Test-only fault injection: a bump makes the running worker panic.
    pub(crate) crash: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn set_gate(&self, gate: Gate) {
        if let Ok(mut life) = self.life.write() {
            // Closed is final.
            if life.gate != Gate::Closed {
                life.gate = gate;
            }
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.life.read().map(|l| l.running).unwrap_or(false)
    }

    /// A worker finished its setup: it takes the buffer over.
    pub(crate) fn worker_started(&self) {
        if let Ok(mut life) = self.life.write() {
            if life.gate != Gate::Closed {
                life.gate = Gate::Open;
            }
            life.running = true;
            life.started = true;
            life.died = None;
        }
    }

    /// A worker ended (its `Drop`): what it held is in `salvage` by now.
    pub(crate) fn worker_ended(&self) {
        if let Ok(mut life) = self.life.write() {
            life.running = false;
        }
    }

    /// A worker that nothing restarts died: refuse new events from now on and fail every
    /// event still buffered, so none waits forever.
    pub(crate) fn worker_died(&self, reason: &str) {
        if let Ok(mut life) = self.life.write() {
            if life.running {
                return; // a new worker took over meanwhile
            }
            if life.gate == Gate::Open {
                life.died = Some(reason.to_string());
            }
        }
        tracing::error!(
            queue = %self.acct.queue,
            reason,
            "the webhooks emitter's worker died and nothing restarts it; its buffered events are \
             failed and new events are refused (use Emitter::child_spec under a supervisor to \
             have it restarted)"
        );
        self.fail_parked(&format!(
            "the emitter's worker died ({reason}) and nothing restarts it"
        ));
    }

    /// Fails every event waiting for a worker (in the channel or salvaged from a crashed
    /// worker); returns how many.
    pub(crate) fn fail_parked(&self, reason: &str) -> u64 {
        let mut parked: Vec<Pending> = self
            .salvage
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if let Ok(mut slot) = self.rx.lock()
            && let Some(rx) = slot.as_mut()
        {
            while let Ok(p) = rx.try_recv() {
                parked.push(p);
            }
        }
        let unsent = parked.len() as u64;
        for p in parked {
            let event_id = p.msg.id;
            let maybe_sent = p.maybe_sent();
            p.fail(Error::NotSent {
                event_id,
                reason: reason.to_string(),
                maybe_sent,
            });
        }
        if unsent > 0 {
            tracing::warn!(unsent, queue = %self.acct.queue, reason, "webhooks emitter failed events no worker will send");
        }
        self.acct.update_gauge();
        unsent
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
            callback_panics: AtomicU64::new(0),
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
                life: RwLock::new(Life {
                    gate: Gate::Open,
                    running: false,
                    started: false,
                    specs: 0,
                    died: None,
                }),
                closing: CancellationToken::new(),
                report: watch::channel(None).0,
                client: tokio::sync::OnceCell::new(),
                crash: watch::channel(0).0,
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
            callback_panics: a.callback_panics.load(Ordering::Relaxed),
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
        let answer = tokio::time::timeout_at(deadline, rx).await;
        // Give up under the lock the worker takes to start an attempt: from here on it will
        // not send the event, so `maybe_sent` below stays true to what happened.
        let (attempts, maybe_sent, last_error) = match progress.lock() {
            Ok(mut p) => {
                p.abandoned = true;
                (p.attempts, p.maybe_sent(), p.last_error.clone())
            }
            Err(_) => (0, true, None),
        };
        match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::NotSent {
                event_id,
                reason: "the emitter stopped before answering".to_string(),
                maybe_sent,
            }),
            Err(_) => Err(Error::Timeout {
                event_id,
                after: timeout,
                attempts,
                maybe_sent,
                last_error: last_error.unwrap_or_else(|| "none".to_string()),
            }),
        }
    }

    fn prepare(&self, event: Event) -> Result<Prepared, Error> {
        if self.shared.settings.is_none() {
            return Err(Error::Disabled);
        }
        // Fail fast, before encoding; `enqueue` checks again, atomically with queuing.
        self.admit()?;
        envelope::prepare(event, &self.shared.encode)
    }

    fn admit(&self) -> Result<(), Error> {
        match self.shared.life.read() {
            Ok(life) => life.admit(&self.shared.acct.queue),
            Err(_) => Err(self.stopped()),
        }
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
            maybe_reached: false,
            in_flight: false,
            queued_at: now,
            acct: Arc::clone(&self.shared.acct),
            _permit: permit,
            done: false,
        };
        // The read lock makes "check, then queue" atomic with respect to a drain (which takes
        // the write lock to close the gate, then empties the channel) and to a worker's death
        // (which takes it to refuse new events, then fails what is in the channel).
        let life = self.shared.life.read().map_err(|_| self.stopped())?;
        if let Err(refused) = life.admit(&self.shared.acct.queue) {
            pending.done = true;
            return Err(refused);
        }
        if let Err(mpsc::error::SendError(mut p)) = self.shared.tx.send(pending) {
            p.done = true;
            return Err(self.stopped());
        }
        drop(life);
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
    ///
    /// While the spec exists, events are accepted even when no worker runs (between a crash
    /// and its restart, or before the supervisor first starts it): the next worker takes them
    /// over. Once the spec is gone (its supervisor stopped for good) with no worker running,
    /// what is still buffered is failed and `emit` answers [`Error::WorkerDied`].
    pub fn child_spec(&self, id: impl Into<String>) -> ChildSpec {
        let guard = SpecGuard::new(Arc::clone(&self.shared));
        let grace = self
            .shared
            .settings
            .as_ref()
            .map(|s| {
                s.drain_timeout
                    + s.request_timeout.min(Duration::from_secs(5))
                    + Duration::from_secs(1)
            })
            .unwrap_or(Duration::from_secs(1));
        ChildSpec::new(id, move |ctx| {
            let shared = Arc::clone(&guard.0);
            async move {
                let Some(worker) = Worker::setup(shared, true).await? else {
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

    /// Starts the worker as a plain tokio task, without a supervisor. Does nothing for a
    /// disabled emitter. Stop it with [`shutdown`](Self::shutdown).
    ///
    /// Nothing restarts a plain worker: if it dies (a panic, its runtime shutting down), the
    /// events it held are failed (caller's error or failure hook, and the failed counter) and
    /// `emit` answers [`Error::WorkerDied`] until `start` is called again. Prefer
    /// [`child_spec`](Self::child_spec).
    pub async fn start(&self) -> Result<(), Error> {
        let Some(worker) = Worker::setup(Arc::clone(&self.shared), false).await? else {
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
        if self.shared.is_running() {
            let limit = settings.drain_timeout + settings.request_timeout + Duration::from_secs(2);
            if let Ok(Ok(())) = tokio::time::timeout(limit, reports.changed()).await
                && let Some(report) = *reports.borrow()
            {
                return report;
            }
        }
        // No worker ran (never started, stopped by its supervisor, or it did not answer):
        // whatever is still buffered cannot be sent, and is counted.
        let unsent = self
            .shared
            .fail_parked("the emitter was shut down while its worker was not running");
        ShutdownReport {
            sent: 0,
            unsent,
            elapsed: Duration::ZERO,
        }
    }

    /// Test-only fault injection: makes the running worker panic at its next wake-up, as a
    /// bug in it would (to test what a worker's death does to the buffer and to `emit`).
    /// Not for production use.
    #[doc(hidden)]
    pub fn crash_worker_for_tests(&self) {
        self.shared.crash.send_modify(|n| *n += 1);
    }
}
