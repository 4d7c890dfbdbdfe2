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
//! [`Mailbox`] clone is gone), queued requests fail with [`Error::Stopped`].
//!
//! | call | when the mailbox is full | answer |
//! | --- | --- | --- |
//! | [`ServiceHandle::call`] | waits for room (within the call timeout) | the response |
//! | [`ServiceHandle::try_call`] | fails at once with [`TryCallError::Full`], which hands the request back | the response |
//!
//! ## A deadline on every call
//! Every call ends by its deadline, the handle's call timeout after the call began
//! ([`DEFAULT_CALL_TIMEOUT`], or [`ServiceHandle::with_call_timeout`]), whatever the service
//! does: it may hang in the middle of a request, block its thread, sit between two
//! incarnations, or keep its mailbox full. The call then fails with [`Error::Timeout`], whose
//! message says where the request stood:
//!
//! | when the deadline passed, the request was | the caller can assume |
//! | --- | --- |
//! | waiting for room in a full mailbox | it was never queued, and never will be |
//! | queued, not yet taken by the service | it was withdrawn: it will never be served |
//! | taken by the service, not answered | it may still take effect (its answer is discarded) |
//!
//! A call never ends before its deadline, and ends at most [`CALL_DEADLINE_SLACK`] after
//! it, plus the delays the operating system and the caller's runtime add to any timer
//! (scheduling the thread that enforces deadlines, then the caller's task).
//!
//! How it stays cheap: a call arms no timer. Its deadline travels with the request, which
//! always sits in one of its mailbox's lists (waiting for room, queued, taken), and one
//! thread per process (`wharf-deadlines`) looks at a mailbox when its earliest deadline
//! passes, on a 1 ms grid, and fails what has expired. A call whose deadline is later than
//! the one already scheduled for its mailbox (the usual case: same timeout, later start)
//! adds nothing to that schedule, so a call costs one clock read beyond the queueing
//! itself. A thread rather than a timer on some runtime, because the deadline must hold
//! when the service blocks its runtime or has no incarnation at all, and because it wakes
//! callers on any runtime (or on none: calls work under any executor).
//!
//! ## Deadlines under paused tokio time
//! Deadlines run on the system's monotonic clock (`std::time::Instant`), except for a call
//! made on a tokio runtime whose clock is paused (`tokio::time::pause()`,
//! `#[tokio::test(start_paused = true)]`): its deadline follows that clock, as
//! `tokio::time::timeout` would, so a test of a service under paused time sees a call
//! timeout pass when the runtime auto-advances to it, not after that much real time. Such a
//! call waits on a tokio timer of its own and, at its deadline, fails exactly as above
//! (withdrawn if still queued, never queued if waiting for room). Being a timer of the
//! caller's runtime, it shares that runtime's fate: a service that blocks the runtime's
//! only thread holds the paused clock too. A call tells a paused clock by reading tokio's
//! clock twice (a paused clock does not move between two reads in one poll); only a
//! current_thread runtime can pause its clock, so calls made elsewhere skip the check.
//!
//! ## A service with its own poll loop
//! [`Inbox::poll_recv`] takes requests from a `poll` function (a task that also polls other
//! mailboxes or sources), with the same order and bookkeeping as [`Inbox::recv`].
//! [`Responder::is_closed`] tells a service whether the caller still waits (its deadline
//! has not passed and it did not drop the call), so it can skip work nobody will see.
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
//!
//! [`Error::ServiceCrashed`]: crate::Error::ServiceCrashed
//! [`Error::Stopped`]: crate::Error::Stopped
//! [`Error::Timeout`]: crate::Error::Timeout

use std::sync::Arc;
use std::time::Duration;

mod clock;
mod deadlines;
mod handle;
mod inbox;
mod queue;
mod reply;
mod try_call_error;

pub use handle::ServiceHandle;
pub use inbox::{Inbox, Mailbox, Request};
pub use reply::Responder;
pub use try_call_error::TryCallError;

use inbox::Receivers;
use queue::Shared;

/// How long a call waits for its answer, by default (queueing included).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a call outlives its deadline, on a machine with a core free: deadlines are
/// checked on a 1 ms grid, and failing the expired calls of a mailbox takes microseconds.
/// The operating system's delay in running the deadline thread, and the caller's runtime's
/// delay in polling the woken caller, come on top, as they do for any timer.
pub const CALL_DEADLINE_SLACK: Duration = Duration::from_millis(2);

// The grid step is part of the slack.
const _: () = assert!(deadlines::GRANULARITY.as_nanos() < CALL_DEADLINE_SLACK.as_nanos());

/// A bounded mailbox for the service `service`: the callers' handle and the slot's end.
///
/// `capacity` bounds the requests queued (at least 1). The handle's calls time out after
/// [`DEFAULT_CALL_TIMEOUT`] ([`ServiceHandle::with_call_timeout`] to change it), on the
/// system's clock or, on a runtime whose tokio clock is paused, on that clock (see
/// [Deadlines under paused tokio time](self#deadlines-under-paused-tokio-time)).
pub fn mailbox<Req, Resp>(
    service: impl Into<String>,
    capacity: usize,
) -> (ServiceHandle<Req, Resp>, Mailbox<Req, Resp>)
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    deadlines::start();
    let capacity = capacity.max(1);
    let service: Arc<str> = Arc::from(service.into());
    let shared = Shared::new(capacity);
    let handle = ServiceHandle::new(Arc::clone(&service), Arc::clone(&shared));
    let mailbox = Mailbox {
        service,
        receivers: Arc::new(Receivers(shared)),
        attached: Arc::new(tokio::sync::Mutex::new(())),
    };
    (handle, mailbox)
}
