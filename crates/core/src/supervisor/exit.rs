//! How a child's incarnation ended, and how to describe it.

use std::any::Any;
use std::fmt;

use crate::error::BoxError;

/// How one incarnation of a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The run phase returned `Ok(())`.
    Normal,
    /// The run phase returned an error (its message and sources).
    Error(String),
    /// The run phase panicked (the panic message).
    Panic(String),
    /// The task was aborted (by its supervisor, after its grace period).
    Aborted,
}

impl Exit {
    pub(crate) fn is_abnormal(&self) -> bool {
        matches!(self, Exit::Error(_) | Exit::Panic(_))
    }

    /// A short label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Exit::Normal => "normal",
            Exit::Error(_) => "error",
            Exit::Panic(_) => "panic",
            Exit::Aborted => "aborted",
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Normal => f.write_str("exited normally"),
            Exit::Error(e) => write!(f, "failed: {e}"),
            Exit::Panic(m) => write!(f, "panicked: {m}"),
            Exit::Aborted => f.write_str("was aborted"),
        }
    }
}

/// The message of a caught panic (its `&str` or `String` payload), for logs and errors.
///
/// ```
/// let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
/// assert_eq!(wharf_core::supervisor::panic_message(caught.as_ref()), "boom 7");
/// ```
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// An error and its chain of sources, on one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A boxed error and its chain of sources, on one line.
pub(crate) fn box_error_chain(err: &BoxError) -> String {
    error_chain(err.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_recovered_from_str_and_string() {
        let a: Box<dyn Any + Send> = Box::new("boom");
        let b: Box<dyn Any + Send> = Box::new(String::from("bang 7"));
        let c: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(a.as_ref()), "boom");
        assert_eq!(panic_message(b.as_ref()), "bang 7");
        assert!(panic_message(c.as_ref()).contains("non-string"));
    }

    #[test]
    fn error_chains_include_sources() {
        let inner = std::io::Error::other("connection refused");
        let outer = crate::Error::StartFailed {
            child: "db".into(),
            cause: Box::new(inner),
        };
        let text = error_chain(&outer);
        assert!(text.contains("child `db` failed to start"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}
