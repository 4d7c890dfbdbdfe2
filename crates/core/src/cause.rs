//! [`Cause`]: the error behind a failure, kept by an error enum that must stay `Clone`.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::error::BoxError;

/// The error behind a failure (a broker client's, serde_json's, a compressor's), kept by an
/// error enum as its `source`: the one shape every wharf crate uses for that.
///
/// Shared (an `Arc`), so that the enum keeping it stays `Clone`, and so that one error
/// (a dropped connection, say) can be the cause of every request it ended without a copy.
///
/// It dereferences to that error: downcast it to its type, or walk its own sources. It is
/// deliberately not an [`std::error::Error`] itself: that is what lets a `thiserror`
/// `#[source]` field of type `Cause` (or `Option<Cause>`) hand out, as
/// [`std::error::Error::source`], the error it holds rather than this wrapper, so a caller
/// downcasts the source straight to the client's error type:
///
/// ```
/// use std::error::Error as _;
/// use wharf_core::Cause;
///
/// #[derive(Debug, Clone, thiserror::Error)]
/// enum MyError {
///     #[error("could not read the settings: {source}")]
///     Settings {
///         #[source]
///         source: Cause,
///     },
/// }
///
/// let error = MyError::Settings {
///     source: Cause::new(std::io::Error::other("disk on fire")),
/// };
/// let io = error.source().and_then(|e| e.downcast_ref::<std::io::Error>());
/// assert_eq!(io.map(|e| e.to_string()).as_deref(), Some("disk on fire"));
/// ```
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// Keeps an error already boxed (a [`BoxError`]) as a cause, without boxing it again.
    pub fn from_boxed(error: BoxError) -> Self {
        Cause(Arc::from(error))
    }
}

impl<E> From<E> for Cause
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Cause::new(error)
    }
}

impl Deref for Cause {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, thiserror::Error)]
    enum Kept {
        #[error("always: {source}")]
        Always {
            #[source]
            source: Cause,
        },
        #[error("maybe")]
        Maybe {
            #[source]
            source: Option<Cause>,
        },
    }

    fn io(text: &str) -> std::io::Error {
        std::io::Error::other(text.to_owned())
    }

    fn source_text(error: &Kept) -> Option<String> {
        let source = std::error::Error::source(error)?;
        source
            .downcast_ref::<std::io::Error>()
            .map(|e| e.to_string())
    }

    #[test]
    fn the_source_of_an_error_is_the_error_its_cause_holds_not_the_cause() {
        let always = Kept::Always {
            source: Cause::new(io("disk on fire")),
        };
        assert_eq!(source_text(&always).as_deref(), Some("disk on fire"));
        let maybe = Kept::Maybe {
            source: Some(io("no disk").into()),
        };
        assert_eq!(source_text(&maybe).as_deref(), Some("no disk"));
        assert!(source_text(&Kept::Maybe { source: None }).is_none());
    }

    #[test]
    fn a_boxed_error_keeps_its_type_and_a_clone_shares_it() {
        let cause = Cause::from_boxed(Box::new(io("boxed")));
        let clone = cause.clone();
        assert!(Arc::ptr_eq(&cause.0, &clone.0));
        assert_eq!(
            clone
                .downcast_ref::<std::io::Error>()
                .map(|e| e.to_string()),
            Some("boxed".to_owned())
        );
        assert_eq!(cause.to_string(), "boxed");
    }
}
