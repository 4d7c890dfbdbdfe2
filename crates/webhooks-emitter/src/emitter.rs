//! The `Emitter` handle: accepting events, supervision and shutdown.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wharf_core::supervisor::{ChildSpec, Restart, Shutdown, Started};

use crate::accounting::{Accounting, Permits};
use crate::config::{EmitterBuilder, FullPolicy, QueueUrl};
use crate::envelope::{self, EncodeOptions, Prepared};
use crate::pending::{Pending, Progress, SyncReply};
use crate::report::{Sent, ShutdownReport, Stats};
use crate::shared::{Gate, Life, Settings, Shared, SpecGuard};
use crate::worker::Worker;
use crate::{Error, Event, EventId};

/// The buffer had no room for an event (within the full policy's wait).
struct Full {
    /// How long the call waited for room.
    waited: Duration,
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
        let acct = Arc::new(Accounting::new(
            queue_name,
            b.on_failure,
            b.buffer_capacity,
            b.buffer_bytes,
        ));
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
        self.shared.acct.stats()
    }

    /// Accepts an event for background sending and returns its id at once; never waits on
    /// the network. With [`FullPolicy::Wait`] it may wait for room in the buffer (bounded).
    ///
    /// `Ok` means accepted and buffered, not sent: a later permanent failure goes to the
    /// failure hook, an error log line and the [`metrics::FAILED`](crate::metrics::FAILED)
    /// counter. Errors: [`Error::Disabled`], [`Error::Stopped`], [`Error::BufferFull`]
    /// (which hands the event back: [`Error::into_event`]) and every bad-input error (nothing
    /// was sent).
    pub async fn emit(&self, event: Event) -> Result<EventId, Error> {
        let msg = self.prepare(&event)?;
        let permit = match self.permit(None, msg.kib()).await {
            Ok(permit) => permit,
            Err(full) => return Err(self.full(full, event)),
        };
        drop(event); // encoded into `msg`
        self.enqueue(msg, None, None, permit)
    }

    /// Like [`emit`](Self::emit) but never waits, whatever the full policy; callable from
    /// synchronous code.
    pub fn try_emit(&self, event: Event) -> Result<EventId, Error> {
        let msg = self.prepare(&event)?;
        let permit = match self.try_permit(Duration::ZERO, msg.kib()) {
            Ok(permit) => permit,
            Err(full) => return Err(self.full(full, event)),
        };
        drop(event); // encoded into `msg`
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
        let msg = self.prepare(&event)?;
        let event_id = msg.id;
        let permit = match self.permit(Some(deadline), msg.kib()).await {
            Ok(permit) => permit,
            Err(full) => return Err(self.full(full, event)),
        };
        drop(event); // encoded into `msg`
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
        let seen = match progress.lock() {
            Ok(mut p) => {
                p.abandoned = true;
                p.clone()
            }
            Err(_) => Progress {
                maybe_reached: true,
                ..Progress::default()
            },
        };
        match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::NotSent {
                event_id,
                reason: "the emitter stopped before answering".to_string(),
                maybe_sent: seen.maybe_sent(),
            }),
            Err(_) => Err(Error::Timeout {
                event_id,
                after: timeout,
                attempts: seen.attempts,
                maybe_sent: seen.maybe_sent(),
                last_error: seen.last_error.unwrap_or_else(|| "none".to_string()),
                source: seen.last_cause,
            }),
        }
    }

    fn prepare(&self, event: &Event) -> Result<Prepared, Error> {
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

    /// The buffer's refusal of `event`, which goes back to the caller.
    fn full(&self, full: Full, event: Event) -> Error {
        Error::BufferFull {
            event: Box::new(event),
            capacity: self.shared.acct.capacity,
            bytes: self.shared.acct.byte_capacity_kib * 1024,
            waited: full.waited,
        }
    }

    fn try_permit(&self, waited: Duration, kib: u32) -> Result<Permits, Full> {
        self.shared.acct.try_room(kib).ok_or(Full { waited })
    }

    async fn permit(&self, deadline: Option<Instant>, kib: u32) -> Result<Permits, Full> {
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
        match tokio::time::timeout_at(until, self.shared.acct.room(kib)).await {
            Ok(Some(p)) => Ok(p),
            _ => Err(Full {
                waited: start.elapsed(),
            }),
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
        let give_up = self
            .shared
            .settings
            .as_ref()
            .map(|s| s.retry.give_up_after)
            .unwrap_or_default();
        let deadline = deadline.unwrap_or_else(|| Instant::now() + give_up);
        let acct = Arc::clone(&self.shared.acct);
        let pending = Pending::new(msg, reply, deadline, acct, permit);
        // The read lock makes "check, then queue" atomic with respect to a drain (which takes
        // the write lock to close the gate, then empties the channel) and to a worker's death
        // (which takes it to refuse new events, then fails what is in the channel).
        let life = self.shared.life.read().map_err(|_| self.stopped())?;
        if let Err(refused) = life.admit(&self.shared.acct.queue) {
            pending.refuse();
            return Err(refused);
        }
        if let Err(mpsc::error::SendError(p)) = self.shared.tx.send(pending) {
            p.refuse();
            return Err(self.stopped());
        }
        drop(life);
        self.shared.acct.on_emitted();
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
