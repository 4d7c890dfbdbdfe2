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
    #[error("the mailbox of `{service}` is full ({capacity} requests queued); retry later or raise its capacity")]
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
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
