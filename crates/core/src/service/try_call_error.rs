//! What [`ServiceHandle::try_call`](super::ServiceHandle::try_call) fails with: the request
//! back when it was never queued.

use std::fmt;

use crate::error::Error;

/// Why a [`try_call`](super::ServiceHandle::try_call) failed.
///
/// A request the mailbox refused (it was full, or the service had stopped for good) was
/// never queued, so it comes back unchanged, as tokio's `TrySendError` hands back its
/// value: [`into_inner`](Self::into_inner) takes it, to retry later or send elsewhere
/// without a clone. A request that was queued is gone: the call's other failures
/// (the service crashed while handling it, stopped before serving it, the call timed out)
/// come as [`TryCallError::Failed`] with the [`Error`] a [`call`](super::ServiceHandle::call)
/// would give.
///
/// Converts into [`Error`] (dropping the request), so `?` works in a function that returns
/// `wharf_core::Error`: `Full` becomes [`Error::MailboxFull`], `Stopped` becomes
/// [`Error::Stopped`].
///
/// ```
/// use wharf_core::service::{TryCallError, mailbox};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A mailbox with room for one request, and no service taking them yet.
/// let (handle, _mailbox) = mailbox::<String, ()>("mailer", 1);
/// let first = handle.clone();
/// let queued = tokio::spawn(async move { first.call("first".to_owned()).await });
/// while handle.queued() < 1 {
///     tokio::task::yield_now().await;
/// }
/// match handle.try_call("second".to_owned()).await {
///     Err(TryCallError::Full { request, .. }) => assert_eq!(request, "second"),
///     other => panic!("expected a full mailbox, got {other:?}"),
/// }
/// # queued.abort();
/// # }
/// ```
#[non_exhaustive]
#[derive(thiserror::Error)]
pub enum TryCallError<Req> {
    /// The mailbox was full, so the request was not queued; it is here, unchanged.
    #[error(
        "the mailbox of `{service}` is full ({capacity} requests queued), so the request was not \
         queued; `TryCallError::into_inner` hands it back to retry later, or wait for room with \
         `call`, or raise the mailbox's capacity"
    )]
    Full {
        /// The request, unchanged.
        request: Req,
        /// Id of the service.
        service: String,
        /// The mailbox capacity.
        capacity: usize,
    },
    /// The service had stopped for good (its supervisor shut down or gave up), so the
    /// request was not queued; it is here, unchanged.
    #[error(
        "`{service}` has stopped and accepts no more requests, so the request was not queued; \
         `TryCallError::into_inner` hands it back to send elsewhere"
    )]
    Stopped {
        /// The request, unchanged.
        request: Req,
        /// Id of the service.
        service: String,
    },
    /// The request was queued and the call failed after that, as a
    /// [`call`](super::ServiceHandle::call) would: the request is gone.
    #[error(transparent)]
    Failed(Error),
}

impl<Req> TryCallError<Req> {
    /// The request the mailbox refused, to retry or reroute without a clone; `None` when it
    /// had been queued ([`TryCallError::Failed`]).
    pub fn into_inner(self) -> Option<Req> {
        match self {
            TryCallError::Full { request, .. } | TryCallError::Stopped { request, .. } => {
                Some(request)
            }
            TryCallError::Failed(_) => None,
        }
    }

    /// The request the mailbox refused, if it did.
    pub fn request(&self) -> Option<&Req> {
        match self {
            TryCallError::Full { request, .. } | TryCallError::Stopped { request, .. } => {
                Some(request)
            }
            TryCallError::Failed(_) => None,
        }
    }

    /// Whether the mailbox was full (the request is then in the error).
    pub fn is_full(&self) -> bool {
        matches!(self, TryCallError::Full { .. })
    }

    /// The [`Error`] a [`call`](super::ServiceHandle::call) would have given, dropping the
    /// request: `Full` is [`Error::MailboxFull`], `Stopped` is [`Error::Stopped`].
    pub fn into_error(self) -> Error {
        match self {
            TryCallError::Full {
                service, capacity, ..
            } => Error::MailboxFull { service, capacity },
            TryCallError::Stopped { service, .. } => Error::Stopped(service),
            TryCallError::Failed(error) => error,
        }
    }
}

impl<Req> From<TryCallError<Req>> for Error {
    fn from(error: TryCallError<Req>) -> Self {
        error.into_error()
    }
}

/// Written by hand so that `Req` need not be `Debug` (as tokio's `TrySendError` does): the
/// request shows as `..`.
impl<Req> fmt::Debug for TryCallError<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryCallError::Full {
                service, capacity, ..
            } => f
                .debug_struct("Full")
                .field("service", service)
                .field("capacity", capacity)
                .finish_non_exhaustive(),
            TryCallError::Stopped { service, .. } => f
                .debug_struct("Stopped")
                .field("service", service)
                .finish_non_exhaustive(),
            TryCallError::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_comes_back_unchanged_and_converts_to_the_matching_error() {
        let full = TryCallError::Full {
            request: vec![1u8, 2, 3],
            service: "svc".to_owned(),
            capacity: 4,
        };
        assert_eq!(full.request(), Some(&vec![1u8, 2, 3]));
        assert_eq!(full.into_inner(), Some(vec![1u8, 2, 3]));

        let stopped = TryCallError::Stopped {
            request: 7u32,
            service: "svc".to_owned(),
        };
        assert!(matches!(Error::from(stopped), Error::Stopped(s) if s == "svc"));
    }

    #[test]
    fn a_call_that_failed_after_queueing_has_no_request() {
        let failed = TryCallError::<u32>::Failed(Error::Stopped("svc".to_owned()));
        assert!(failed.request().is_none());
        assert!(failed.into_inner().is_none());
    }

    #[test]
    fn a_full_error_says_what_to_do_and_hides_the_request_in_debug() {
        let full = TryCallError::Full {
            request: "secret",
            service: "svc".to_owned(),
            capacity: 4,
        };
        assert!(full.to_string().contains("into_inner"), "{full}");
        assert!(!format!("{full:?}").contains("secret"), "{full:?}");
        assert!(matches!(
            full.into_error(),
            Error::MailboxFull { capacity: 4, .. }
        ));
    }
}
