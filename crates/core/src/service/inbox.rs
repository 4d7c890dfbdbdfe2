//! The service's side of a mailbox: the slot's [`Mailbox`], each incarnation's [`Inbox`],
//! and the [`Request`]s it takes.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::AbortHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::queue::{Envelope, Shared};
use super::reply::Responder;
use crate::supervisor::ChildContext;

/// Keeps the queue served; when the last one goes (every `Mailbox` and `Inbox`), queued
/// requests fail with `Stopped`.
pub(super) struct Receivers<Req, Resp>(pub(super) Arc<Shared<Req, Resp>>);

impl<Req, Resp> Drop for Receivers<Req, Resp> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The slot's side of the mailbox: cloned into the service's start function, attached by
/// each incarnation.
pub struct Mailbox<Req, Resp> {
    pub(super) service: Arc<str>,
    pub(super) receivers: Arc<Receivers<Req, Resp>>,
    /// Held by the attached incarnation.
    pub(super) attached: Arc<Mutex<()>>,
}

impl<Req, Resp> Clone for Mailbox<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            receivers: Arc::clone(&self.receivers),
            attached: Arc::clone(&self.attached),
        }
    }
}

impl<Req, Resp> fmt::Debug for Mailbox<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Mailbox<Req, Resp> {
    /// Takes the mailbox for this incarnation. Waits while an earlier incarnation still
    /// holds it (it is released when that incarnation's task ends, however it ends).
    pub async fn attach(&self) -> Inbox<Req, Resp> {
        Inbox {
            service: Arc::clone(&self.service),
            receivers: Arc::clone(&self.receivers),
            _attached: Arc::clone(&self.attached).lock_owned().await,
            stop: None,
        }
    }
}

/// One incarnation's exclusive view of the mailbox.
pub struct Inbox<Req, Resp> {
    service: Arc<str>,
    receivers: Arc<Receivers<Req, Resp>>,
    _attached: OwnedMutexGuard<()>,
    /// How `recv_until` learns that the supervisor asks this incarnation to stop.
    stop: Option<StopWatch>,
}

/// Watches a child's cancellation for [`Inbox::recv_until`].
///
/// Polling the token's future on every request would cost a third of a round trip (it
/// takes two locks), so a small task waits on it instead, raises a flag and wakes the
/// incarnation; `recv_until` reads the flag.
enum StopWatch {
    Task {
        stop: Arc<AtomicBool>,
        task: AbortHandle,
    },
    /// Outside a tokio runtime, nothing can run that task: poll the token's future.
    Polled(Pin<Box<WaitForCancellationFutureOwned>>),
}

impl StopWatch {
    fn start<Req, Resp>(token: CancellationToken, shared: &Shared<Req, Resp>) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self::Polled(Box::pin(token.cancelled_owned()));
        };
        let stop = Arc::new(AtomicBool::new(token.is_cancelled()));
        let raised = Arc::clone(&stop);
        let mailbox = shared.watched();
        let task = runtime.spawn(async move {
            token.cancelled().await;
            raised.store(true, Ordering::SeqCst);
            if let Some(mailbox) = mailbox.upgrade() {
                mailbox.wake_consumer();
            }
        });
        Self::Task {
            stop,
            task: task.abort_handle(),
        }
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        if let Self::Task { task, .. } = self {
            task.abort();
        }
    }
}

impl<Req, Resp> fmt::Debug for Inbox<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Inbox<Req, Resp> {
    /// The next request, in arrival order; `None` once every handle is gone and the
    /// queue is empty.
    pub async fn recv(&mut self) -> Option<Request<Req, Resp>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) for a service that runs its own poll loop: the next request, in
    /// arrival order; when nothing is queued, `Pending` with `cx`'s waker registered (the
    /// next request, or the last handle going, wakes it). `Ready(None)` once every handle is
    /// gone and the queue is empty.
    ///
    /// Like tokio's channels, it spends the task's cooperative budget on every request it
    /// returns, and answers `Pending` (waking the task at once) when the budget is spent, so
    /// that a loop draining a long queue lets its runtime run other tasks now and then.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Request<Req, Resp>>> {
        let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let taken = self.receivers.0.poll_take(cx);
        if taken.is_ready() {
            budget.made_progress();
        }
        taken.map(|envelope| envelope.map(Request::taken))
    }

    /// Like [`recv`](Self::recv), but `None` as soon as the supervisor asks the child to
    /// stop. Requests still queued then stay queued for the next incarnation.
    pub async fn recv_until(&mut self, ctx: &ChildContext) -> Option<Request<Req, Resp>> {
        let shared = &self.receivers.0;
        let stop = self
            .stop
            .get_or_insert_with(|| StopWatch::start(ctx.token(), shared));
        // As in `recv`; it also lets the stop watcher run on a busy worker.
        tokio::task::coop::consume_budget().await;
        let envelope = match stop {
            StopWatch::Task { stop, .. } => {
                poll_fn(|cx| {
                    if stop.load(Ordering::SeqCst) {
                        return Poll::Ready(None);
                    }
                    let taken = shared.poll_take(cx);
                    // The watcher raises the flag before it wakes a registered consumer.
                    if taken.is_pending() && stop.load(Ordering::SeqCst) {
                        return Poll::Ready(None);
                    }
                    taken
                })
                .await
            }
            StopWatch::Polled(cancelled) => {
                tokio::select! {
                    biased;
                    _ = cancelled.as_mut() => None,
                    envelope = poll_fn(|cx| shared.poll_take(cx)) => envelope,
                }
            }
        };
        envelope.map(Request::taken)
    }
}

/// A request taken by the service, with the means to answer it.
pub struct Request<Req, Resp> {
    request: Req,
    reply: Responder<Resp>,
}

impl<Req, Resp> fmt::Debug for Request<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request").finish_non_exhaustive()
    }
}

impl<Req, Resp> Request<Req, Resp> {
    fn taken(envelope: Envelope<Req, Resp>) -> Self {
        let Envelope { request, mut reply } = envelope;
        reply.taken = true;
        Self { request, reply }
    }

    /// The request itself.
    pub fn get(&self) -> &Req {
        &self.request
    }

    /// Splits into the request and its responder.
    pub fn into_parts(self) -> (Req, Responder<Resp>) {
        (self.request, self.reply)
    }

    /// Answers the request; `false` if the caller no longer waits (it timed out).
    pub fn reply(self, response: Resp) -> bool {
        self.reply.send(response)
    }
}
