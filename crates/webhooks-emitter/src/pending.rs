//! An accepted event until it is resolved: sent, failed, or handed to the next worker.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;
use wharf_core::supervisor::panic_message;

use crate::Error;
use crate::accounting::{Accounting, Permits};
use crate::envelope::Prepared;
use crate::error::Cause;
use crate::report::{FailedEvent, Sent};

/// Where an `emit_sync` caller waits, and what it can tell on timeout.
pub(crate) struct SyncReply {
    pub(crate) tx: oneshot::Sender<Result<Sent, Error>>,
    pub(crate) progress: Arc<Mutex<Progress>>,
}

/// What an `emit_sync` caller can tell when its own timeout passes, shared with the worker.
/// The caller marks it `abandoned` under the same lock the worker takes to start an attempt,
/// so either the caller sees the attempt (and says `maybe_sent: true`) or the worker sees the
/// caller gone and never sends the event.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    pub(crate) attempts: u32,
    /// A finished attempt may have reached SQS.
    pub(crate) maybe_reached: bool,
    /// An attempt is under way (or ended without a verdict).
    pub(crate) in_flight: bool,
    pub(crate) last_error: Option<String>,
    /// The error behind `last_error`, when there was one.
    pub(crate) last_cause: Option<Cause>,
    /// The caller stopped waiting: the event must not be sent any more.
    pub(crate) abandoned: bool,
}

impl Progress {
    pub(crate) fn maybe_sent(&self) -> bool {
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
    /// The error behind `last_error`, when there was one.
    pub(crate) last_cause: Option<Cause>,
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
    /// An event accepted now, holding its room in the buffer until it is resolved.
    pub(crate) fn new(
        msg: Prepared,
        reply: Option<SyncReply>,
        deadline: Instant,
        acct: Arc<Accounting>,
        permit: Permits,
    ) -> Self {
        let now = Instant::now();
        Pending {
            msg,
            reply,
            deadline,
            accepted: now,
            attempts: 0,
            last_error: None,
            last_cause: None,
            maybe_reached: false,
            in_flight: false,
            queued_at: now,
            acct,
            _permit: permit,
            done: false,
        }
    }

    /// Drops an event that was refused before it was accepted: it is not counted as failed.
    pub(crate) fn refuse(mut self) {
        self.done = true;
    }

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
    /// and the transient error that ended it (with the error behind it, if any).
    pub(crate) fn end_attempt(&mut self, maybe_reached: bool, error: String, cause: Option<Cause>) {
        self.in_flight = false;
        self.maybe_reached |= maybe_reached;
        if let Some(r) = &self.reply
            && let Ok(mut p) = r.progress.lock()
        {
            p.in_flight = false;
            p.maybe_reached |= maybe_reached;
            p.last_error = Some(error.clone());
            p.last_cause = cause.clone();
        }
        self.last_error = Some(error);
        self.last_cause = cause;
    }

    pub(crate) fn succeed(mut self, message_id: String, sequence_number: Option<String>) {
        self.done = true;
        self.acct.on_sent();
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
        self.acct.on_failed(error.kind());
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
