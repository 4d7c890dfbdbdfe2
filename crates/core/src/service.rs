//! Handles that outlive restarts: a supervised service's callers keep working while it
//! crashes and comes back.
//!
//! [`mailbox`] makes a bounded mailbox that belongs to the service's supervised *slot*, not
//! to one incarnation of its task. Callers hold a cloneable [`ServiceHandle`]; each
//! incarnation of the task [`attach`](Mailbox::attach)es to the [`Mailbox`] and serves
//! requests from it. When the task crashes:
//! - the request it was handling fails with [`Error::ServiceCrashed`]: it may or may not
//!   have taken effect, and only the caller can decide whether to send it again;
//! - requests still queued stay queued and are served by the next incarnation, in order;
//! - callers keep the same handle; nothing is silently dropped.
//!
//! When the service stops for good (its supervisor shut down or gave up, so every
//! [`Mailbox`] clone is gone), queued requests fail with [`Error::Stopped`]. Every call is
//! bounded by the handle's call timeout ([`Error::Timeout`]).
//!
//! | call | when the mailbox is full | answer |
//! | --- | --- | --- |
//! | [`ServiceHandle::call`] | waits for room (within the call timeout) | the response |
//! | [`ServiceHandle::try_call`] | fails at once with [`Error::MailboxFull`] | the response |
//!
//! ## Example: a counter that survives its crashes
//! ```
//! use std::time::Duration;
//! use wharf_core::Backoff;
//! use wharf_core::service::mailbox;
//! use wharf_core::supervisor::{ChildSpec, Started, Supervisor};
//!
//! enum Cmd { Add(u64), Crash }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wharf_core::Error> {
//! let (counter, mailbox) = mailbox::<Cmd, u64>("counter", 64);
//! let spec = ChildSpec::new("counter", move |ctx| {
//!     let mailbox = mailbox.clone();
//!     async move {
//!         let mut inbox = mailbox.attach().await; // setup: take the slot's mailbox
//!         let mut total = 0u64;                   // state is rebuilt on every start
//!         Ok::<_, std::io::Error>(Started::task(async move {
//!             while let Some(request) = inbox.recv_until(&ctx).await {
//!                 let (cmd, reply) = request.into_parts();
//!                 match cmd {
//!                     Cmd::Add(n) => { total += n; reply.send(total); }
//!                     Cmd::Crash => panic!("asked to crash"),
//!                 }
//!             }
//!             Ok::<_, std::io::Error>(())
//!         }))
//!     }
//! });
//! let root = Supervisor::builder("root").backoff(Backoff::none()).child(spec).start().await?;
//! assert_eq!(counter.call(Cmd::Add(2)).await?, 2);
//! assert!(counter.call(Cmd::Crash).await.is_err()); // in flight at the crash
//! assert_eq!(counter.call(Cmd::Add(5)).await?, 5);  // served by the next incarnation
//! root.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::error::Error;
use crate::supervisor::ChildContext;

/// How long a call waits for its answer, by default (queueing included).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A bounded mailbox for the service `service`: the callers' handle and the slot's end.
///
/// `capacity` bounds the requests queued (at least 1).
pub fn mailbox<Req, Resp>(
    service: impl Into<String>,
    capacity: usize,
) -> (ServiceHandle<Req, Resp>, Mailbox<Req, Resp>) {
    let capacity = capacity.max(1);
    let service: Arc<str> = Arc::from(service.into());
    let (tx, rx) = mpsc::channel(capacity);
    let handle = ServiceHandle {
        service: Arc::clone(&service),
        tx,
        capacity,
        call_timeout: DEFAULT_CALL_TIMEOUT,
    };
    let mailbox = Mailbox {
        service,
        rx: Arc::new(Mutex::new(rx)),
    };
    (handle, mailbox)
}

struct Envelope<Req, Resp> {
    request: Req,
    reply: Responder<Resp>,
}

/// Why a request got no answer; the caller turns it into an [`Error`] with the service's
/// name (kept out of the envelope so a call touches no shared reference count).
#[derive(Debug, Clone, Copy)]
enum Unanswered {
    /// Taken by the service, which panicked while handling it.
    Panicked,
    /// Taken by the service, which returned or was stopped before answering.
    Ended,
    /// Never taken: the service stopped for good while it was queued.
    Stopped,
}

type Reply<Resp> = Result<Resp, Unanswered>;

/// The callers' side: cloneable, valid across every restart of the service.
pub struct ServiceHandle<Req, Resp> {
    service: Arc<str>,
    tx: mpsc::Sender<Envelope<Req, Resp>>,
    capacity: usize,
    call_timeout: Duration,
}

impl<Req, Resp> Clone for ServiceHandle<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            tx: self.tx.clone(),
            capacity: self.capacity,
            call_timeout: self.call_timeout,
        }
    }
}

impl<Req, Resp> fmt::Debug for ServiceHandle<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("service", &self.service)
            .field("capacity", &self.capacity)
            .field("queued", &self.queued())
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl<Req, Resp> ServiceHandle<Req, Resp> {
    /// A handle whose calls wait at most `timeout` (queueing included).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Requests queued and not yet taken by the service.
    pub fn queued(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    fn envelope(&self, request: Req) -> (Envelope<Req, Resp>, oneshot::Receiver<Reply<Resp>>) {
        let (tx, rx) = oneshot::channel();
        let reply = Responder {
            tx: Some(tx),
            taken: false,
        };
        (Envelope { request, reply }, rx)
    }

    fn answer(&self, reply: Result<Reply<Resp>, oneshot::error::RecvError>) -> Result<Resp, Error> {
        let reason = match reply {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(Unanswered::Panicked)) => "it panicked",
            Ok(Err(Unanswered::Ended)) => "it returned or was stopped before answering",
            Ok(Err(Unanswered::Stopped)) | Err(_) => {
                return Err(Error::Stopped(self.service.to_string()));
            }
        };
        Err(Error::ServiceCrashed {
            service: self.service.to_string(),
            reason: reason.to_owned(),
        })
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            what: format!("a call to service `{}`", self.service),
            after: self.call_timeout,
        }
    }

    /// Sends a request and waits for the response; waits for room when the mailbox is full.
    ///
    /// Errors: [`Error::ServiceCrashed`] if the service crashed while handling this request;
    /// [`Error::Stopped`] if it stopped for good; [`Error::Timeout`] after the call timeout
    /// (the request may still be served later, its answer then discarded).
    pub async fn call(&self, request: Req) -> Result<Resp, Error> {
        let (envelope, reply) = self.envelope(request);
        let exchange = async {
            self.tx
                .send(envelope)
                .await
                .map_err(|_| Error::Stopped(self.service.to_string()))?;
            self.answer(reply.await)
        };
        tokio::time::timeout(self.call_timeout, exchange)
            .await
            .map_err(|_| self.timeout_error())?
    }

    /// Like [`call`](Self::call), but fails at once with [`Error::MailboxFull`] instead of
    /// waiting for room.
    pub async fn try_call(&self, request: Req) -> Result<Resp, Error> {
        let (envelope, reply) = self.envelope(request);
        self.tx.try_send(envelope).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Error::MailboxFull {
                service: self.service.to_string(),
                capacity: self.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => Error::Stopped(self.service.to_string()),
        })?;
        let reply = tokio::time::timeout(self.call_timeout, reply)
            .await
            .map_err(|_| self.timeout_error())?;
        self.answer(reply)
    }
}

/// The slot's side of the mailbox: cloned into the service's start function, attached by
/// each incarnation.
pub struct Mailbox<Req, Resp> {
    service: Arc<str>,
    rx: Arc<Mutex<mpsc::Receiver<Envelope<Req, Resp>>>>,
}

impl<Req, Resp> Clone for Mailbox<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            rx: Arc::clone(&self.rx),
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
            rx: Arc::clone(&self.rx).lock_owned().await,
            cancelled: None,
        }
    }
}

/// One incarnation's exclusive view of the mailbox.
pub struct Inbox<Req, Resp> {
    service: Arc<str>,
    rx: OwnedMutexGuard<mpsc::Receiver<Envelope<Req, Resp>>>,
    // Registered once and polled on every wait: re-registering a cancellation waiter per
    // request would cost about a third of a round trip.
    cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
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
        let Envelope { request, mut reply } = self.rx.recv().await?;
        reply.taken = true;
        Some(Request { request, reply })
    }

    /// [`recv`](Self::recv) for a service that runs its own poll loop: registers `cx`'s
    /// waker when nothing is queued. `Ready(None)` once every handle is gone and the queue
    /// is empty.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Request<Req, Resp>>> {
        self.rx.poll_recv(cx).map(|envelope| {
            let Envelope { request, mut reply } = envelope?;
            reply.taken = true;
            Some(Request { request, reply })
        })
    }

    /// Like [`recv`](Self::recv), but `None` as soon as the supervisor asks the child to
    /// stop. Requests still queued then stay queued for the next incarnation.
    pub async fn recv_until(&mut self, ctx: &ChildContext) -> Option<Request<Req, Resp>> {
        let cancelled = self
            .cancelled
            .get_or_insert_with(|| Box::pin(ctx.token().cancelled_owned()));
        tokio::select! {
            biased;
            _ = cancelled.as_mut() => None,
            envelope = self.rx.recv() => {
                let Envelope { request, mut reply } = envelope?;
                reply.taken = true;
                Some(Request { request, reply })
            }
        }
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

/// Answers one request exactly once. Dropped without an answer (the service crashed, or
/// returned without replying), it tells the caller so with [`Error::ServiceCrashed`].
pub struct Responder<Resp> {
    tx: Option<oneshot::Sender<Reply<Resp>>>,
    taken: bool,
}

impl<Resp> fmt::Debug for Responder<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.tx.is_none())
            .finish()
    }
}

impl<Resp> Responder<Resp> {
    /// Whether the caller stopped waiting (it timed out or was dropped): a service may then
    /// skip the work the request asked for.
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// Sends the response; `false` if the caller no longer waits (it timed out).
    pub fn send(mut self, response: Resp) -> bool {
        match self.tx.take() {
            Some(tx) => tx.send(Ok(response)).is_ok(),
            None => false,
        }
    }
}

impl<Resp> Drop for Responder<Resp> {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let why = if !self.taken {
            Unanswered::Stopped
        } else if std::thread::panicking() {
            Unanswered::Panicked
        } else {
            Unanswered::Ended
        };
        let _ = tx.send(Err(why));
    }
}
