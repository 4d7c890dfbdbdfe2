//! The crate's one error enum.

use std::time::Duration;

/// A boxed error with the bounds wharf needs to move it between tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `wharf-core`.
///
/// Each variant names the cause and carries what a caller needs to act on it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ----- supervision -----
    /// A child's start function failed, so its supervisor could not start.
    #[error("child `{child}` failed to start: {cause}")]
    StartFailed {
        /// Id of the child whose start failed.
        child: String,
        /// What the start function returned (or the panic message).
        #[source]
        cause: BoxError,
    },
    /// A supervisor saw more restarts than its intensity allows and gave up; its parent decides.
    #[error(
        "supervisor `{supervisor}` exceeded its restart intensity ({max_restarts} restarts in {period:?}); \
         it stopped its children and escalated. Last failure: {last_failure}"
    )]
    IntensityExceeded {
        /// Id of the supervisor that gave up.
        supervisor: String,
        /// The configured maximum number of restarts within `period`.
        max_restarts: u32,
        /// The configured period.
        period: Duration,
        /// Description of the exit that tipped it over.
        last_failure: String,
    },
    /// A child id was used twice in one supervisor.
    #[error("a child with id `{0}` already exists in this supervisor; child ids must be unique")]
    DuplicateChild(String),
    /// No child with that id exists.
    #[error("no child with id `{0}`")]
    UnknownChild(String),
    /// A dynamic supervisor is at its bound on the number of children.
    #[error(
        "dynamic supervisor `{supervisor}` already runs its maximum of {max} children; \
         terminate one or raise `max_children`"
    )]
    TooManyChildren {
        /// Id of the dynamic supervisor.
        supervisor: String,
        /// The configured bound.
        max: usize,
    },
    /// The supervisor (or service) is shutting down or has stopped, so it took no request.
    #[error("`{0}` has stopped and accepts no more requests")]
    Stopped(String),

    // ----- supervised services (handles that outlive restarts) -----
    /// The service crashed while it handled this very request; the request may or may not
    /// have taken effect. Queued requests are served by the next incarnation.
    #[error(
        "service `{service}` crashed while handling this request ({reason}); it is being restarted, \
         and this request may or may not have taken effect"
    )]
    ServiceCrashed {
        /// Id of the service.
        service: String,
        /// Why it crashed.
        reason: String,
    },
    /// The service's bounded mailbox is full and the caller asked not to wait.
    ///
    /// [`try_call`](crate::service::ServiceHandle::try_call) fails with
    /// [`TryCallError::Full`](crate::service::TryCallError::Full), which hands the request
    /// back; this is what it becomes once converted into `Error` (by `?`), the request dropped.
    #[error(
        "the mailbox of `{service}` is full ({capacity} requests queued); retry later, wait for \
         room with `call`, or raise its capacity"
    )]
    MailboxFull {
        /// Id of the service.
        service: String,
        /// The mailbox capacity.
        capacity: usize,
    },
    /// A wait did not finish in time.
    #[error("`{what}` did not complete within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The limit that passed.
        after: Duration,
    },
    // ----- transport (in-memory) -----
    /// The in-memory queue was closed, so it took no message.
    #[error(
        "the in-memory queue is closed and accepts no more messages; publish before calling `close()`, \
         or publish to a new queue"
    )]
    QueueClosed,
    /// The in-memory queue is full and the caller asked not to wait (`try_publish`).
    #[error(
        "the in-memory queue is full ({capacity} messages queued or in flight), so the message was not \
         published; wait with `publish`, have consumers ack faster, or raise the capacity"
    )]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The in-memory queue stayed full for the whole publish timeout.
    #[error(
        "the in-memory queue stayed full ({capacity} messages queued or in flight) for {after:?}, so the \
         message was not published; consumers must ack deliveries faster, or raise the capacity or the \
         publisher's timeout"
    )]
    PublishTimedOut {
        /// The queue's capacity.
        capacity: usize,
        /// The publisher's timeout, which passed.
        after: Duration,
    },
    /// A transport could not record an acknowledgement.
    #[error(
        "could not acknowledge delivery {delivery}: {cause}; the broker may deliver the message again, \
         so the handler must be idempotent"
    )]
    AckFailed {
        /// The delivery: the broker's id for the message, and the attempt.
        delivery: String,
        /// What the transport reported.
        #[source]
        cause: BoxError,
    },
    /// A transport could not record a negative acknowledgement.
    #[error(
        "could not negatively acknowledge delivery {delivery}: {cause}; the broker will deliver the \
         message again when its lease on it expires, possibly before the requested delay"
    )]
    NackFailed {
        /// The delivery: the broker's id for the message, and the attempt.
        delivery: String,
        /// What the transport reported.
        #[source]
        cause: BoxError,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
