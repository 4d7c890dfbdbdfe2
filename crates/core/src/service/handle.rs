//! The callers' side of a mailbox.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::DEFAULT_CALL_TIMEOUT;
use super::queue::{Envelope, Refused, Shared, Wait};
use super::reply::{Outcome, ReplyCell, Responder, Stage, Unanswered};
use super::{TryCallError, clock, deadlines};
use crate::error::Error;

/// Keeps the queue open for requests; the last one to go tells the service.
struct Senders<Req, Resp>(Arc<Shared<Req, Resp>>);

impl<Req, Resp> Drop for Senders<Req, Resp> {
    fn drop(&mut self) {
        self.0.handles_gone();
    }
}

/// The callers' side: cloneable, valid across every restart of the service.
pub struct ServiceHandle<Req, Resp> {
    service: Arc<str>,
    shared: Arc<Shared<Req, Resp>>,
    senders: Arc<Senders<Req, Resp>>,
    call_timeout: Duration,
}

impl<Req, Resp> Clone for ServiceHandle<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            shared: Arc::clone(&self.shared),
            senders: Arc::clone(&self.senders),
            call_timeout: self.call_timeout,
        }
    }
}

impl<Req, Resp> fmt::Debug for ServiceHandle<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("service", &self.service)
            .field("capacity", &self.shared().capacity())
            .field("queued", &self.queued())
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl<Req, Resp> ServiceHandle<Req, Resp> {
    pub(super) fn new(service: Arc<str>, shared: Arc<Shared<Req, Resp>>) -> Self {
        Self {
            service,
            senders: Arc::new(Senders(Arc::clone(&shared))),
            shared,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    fn shared(&self) -> &Shared<Req, Resp> {
        &self.shared
    }

    /// A handle whose calls wait at most `timeout` (queueing included). A timeout too large
    /// for the clock to add (`Duration::MAX`) means no deadline at all.
    ///
    /// The timeout runs on the system's clock, or, for a call made on a tokio runtime whose
    /// clock is paused (`tokio::time::pause()`, `start_paused`), on that paused clock: see
    /// [the module docs](super#deadlines-under-paused-tokio-time).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The timeout of this handle's calls.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Requests queued and not yet taken by the service.
    pub fn queued(&self) -> usize {
        self.shared().queued()
    }

    /// Sends a request and waits for the response; waits for room when the mailbox is full.
    ///
    /// Errors: [`Error::ServiceCrashed`] if the service crashed while handling this request;
    /// [`Error::Stopped`] if it stopped for good; [`Error::Timeout`] once the call timeout
    /// has passed (within [`CALL_DEADLINE_SLACK`](super::CALL_DEADLINE_SLACK)), whatever
    /// the service does. The timeout's message says where the request stood: never queued
    /// (the mailbox stayed full), withdrawn from the queue (never served), or taken by the
    /// service (it may still take effect; its answer is then discarded).
    pub async fn call(&self, request: Req) -> Result<Resp, Error> {
        self.exchange(request, Wait::ForRoom)
            .await
            .map_err(TryCallError::into_error)
    }

    /// Like [`call`](Self::call), but does not wait for room: when the mailbox is full, fails
    /// at once with [`TryCallError::Full`], which hands the request back
    /// ([`TryCallError::into_inner`]) to retry or reroute without a clone.
    ///
    /// Errors: [`TryCallError::Full`] (mailbox full) and [`TryCallError::Stopped`] (the
    /// service stopped for good) when the request was not queued, with the request;
    /// [`TryCallError::Failed`] with the [`Error`] [`call`](Self::call) would give when the
    /// call failed after the request was queued. `?` converts it into [`Error`] (the
    /// request dropped).
    pub async fn try_call(&self, request: Req) -> Result<Resp, TryCallError<Req>> {
        self.exchange(request, Wait::No).await
    }

    async fn exchange(&self, request: Req, wait: Wait) -> Result<Resp, TryCallError<Req>> {
        if deadlines::running() && !clock::tokio_paused() {
            let deadline = Instant::now().checked_add(self.call_timeout);
            let pending = match self.enqueue(request, wait, deadline) {
                Ok(pending) => pending,
                Err(refused) => return Err(self.refused(refused)),
            };
            return self.answer(pending.await);
        }
        // Boxed: its timer would make every call's future larger.
        Box::pin(self.exchange_on_a_tokio_timer(request, wait)).await
    }

    /// A call whose deadline is a tokio timer of its own: on a runtime whose clock is paused
    /// (the deadline then follows that clock, and the runtime's auto-advance reaches it), or
    /// when the system refused the deadline thread. At the deadline the call is failed as
    /// the deadline thread would: withdrawn if still queued or waiting for room.
    async fn exchange_on_a_tokio_timer(
        &self,
        request: Req,
        wait: Wait,
    ) -> Result<Resp, TryCallError<Req>> {
        let began = tokio::time::Instant::now();
        let mut pending = match self.enqueue(request, wait, None) {
            Ok(pending) => pending,
            Err(refused) => return Err(self.refused(refused)),
        };
        let Some(deadline) = began.checked_add(self.call_timeout) else {
            // Too far for the clock to add: no deadline at all.
            return self.answer(pending.await);
        };
        if let Ok(outcome) = tokio::time::timeout_at(deadline, &mut pending).await {
            return self.answer(outcome);
        }
        self.shared.expire_call(&pending.cell);
        // Failed just now, unless an outcome came first: ready at once either way.
        self.answer(pending.await)
    }

    /// Puts the request in the mailbox; the call to wait on.
    fn enqueue(
        &self,
        request: Req,
        wait: Wait,
        deadline: Option<Instant>,
    ) -> Result<PendingCall<'_, Req, Resp>, (Req, Refused)> {
        let cell = ReplyCell::new(deadline);
        let envelope = Envelope {
            request,
            reply: Responder::new(Arc::clone(&cell)),
        };
        let stage = self
            .shared
            .enqueue(envelope, wait)
            .map_err(|(envelope, refused)| (envelope.request, refused))?;
        Ok(PendingCall {
            shared: &self.shared,
            cell,
            stage,
            received: false,
        })
    }

    /// The request back, with why the mailbox refused it.
    #[cold]
    fn refused(&self, (request, refused): (Req, Refused)) -> TryCallError<Req> {
        let service = self.service.to_string();
        match refused {
            Refused::Stopped => TryCallError::Stopped { request, service },
            Refused::Full => TryCallError::Full {
                request,
                service,
                capacity: self.shared.capacity(),
            },
        }
    }

    #[inline]
    fn answer(&self, outcome: Outcome<Resp>) -> Result<Resp, TryCallError<Req>> {
        outcome.map_err(|why| TryCallError::Failed(self.unanswered(why)))
    }

    #[cold]
    fn unanswered(&self, why: Unanswered) -> Error {
        let reason = match why {
            Unanswered::Panicked => "it panicked",
            Unanswered::Ended => "it returned or was stopped before answering",
            Unanswered::Stopped => return Error::Stopped(self.service.to_string()),
            Unanswered::TimedOut(stage) => return self.timeout_error(stage),
        };
        Error::ServiceCrashed {
            service: self.service.to_string(),
            reason: reason.to_owned(),
        }
    }

    fn timeout_error(&self, stage: Stage) -> Error {
        let stood = match stage {
            Stage::WaitingForRoom => "the mailbox stayed full, so the request was never queued",
            Stage::Queued => "the request was still queued: withdrawn, it will never be served",
            Stage::Taken => {
                "the service had taken the request without answering: it may still take effect"
            }
        };
        Error::Timeout {
            what: format!("a call to service `{}`; {stood}", self.service),
            after: self.call_timeout,
        }
    }
}

/// A call whose request is in the mailbox: waits for its outcome, and gives up cleanly when
/// dropped before it.
struct PendingCall<'a, Req, Resp> {
    shared: &'a Shared<Req, Resp>,
    cell: Arc<ReplyCell<Resp>>,
    stage: Stage,
    received: bool,
}

impl<Req, Resp> Future for PendingCall<'_, Req, Resp> {
    type Output = Outcome<Resp>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = std::task::ready!(self.cell.poll_outcome(cx));
        self.received = true;
        Poll::Ready(outcome)
    }
}

impl<Req, Resp> PendingCall<'_, Req, Resp> {
    #[cold]
    fn give_up(&self) {
        self.cell.abandon();
        if self.stage == Stage::WaitingForRoom {
            // Not queued yet: withdraw it, as a send dropped before it had room never sent.
            self.shared.withdraw(&self.cell);
        }
    }
}

impl<Req, Resp> Drop for PendingCall<'_, Req, Resp> {
    #[inline]
    fn drop(&mut self) {
        if !self.received {
            self.give_up();
        }
    }
}
