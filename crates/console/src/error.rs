//! What a page answers when it cannot show what was asked: 400, 403, 404 or 503, each a
//! page that says what went wrong and what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::layout::{Base, page};
use crate::state::State;

/// Why a page or an action failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// A parameter is not valid (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed here (403): read-only mode, a missing CSRF token.
    #[error("{0}")]
    Forbidden(String),
    /// No such partition, queue, job or page (404).
    #[error("{0}")]
    NotFound(String),
    /// A backend (Redis, a supervisor) failed or timed out (503).
    #[error("{0}")]
    Unavailable(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn heading(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Bad request",
            Self::Forbidden(_) => "Not allowed",
            Self::NotFound(_) => "Not found",
            Self::Unavailable(_) => "Unavailable",
        }
    }

    /// The error as a page of the console.
    pub(crate) fn into_page(self, state: &State, base: &Base) -> Response {
        let status = self.status();
        let body = page(
            state,
            base,
            self.heading(),
            html! {
                h1 { (self.heading()) }
                p.error-message { (self.to_string()) }
                p { a href=(base.link("/")) { "Back to the overview" } }
            },
        );
        (status, body).into_response()
    }
}

#[cfg(feature = "jobs")]
impl From<wharf_job_partition::Error> for PageError {
    fn from(e: wharf_job_partition::Error) -> Self {
        use wharf_job_partition::Error as E;
        match e {
            E::UnknownPartition { .. }
            | E::UnknownQueue { .. }
            | E::UnknownJob { .. }
            | E::UnknownSchedule { .. } => Self::NotFound(e.to_string()),
            E::Config(_) | E::InvalidRateLimit { .. } | E::InvalidSchedule { .. } => {
                Self::BadRequest(e.to_string())
            }
            other => {
                tracing::warn!(error = %other, "console: a jobs call failed");
                Self::Unavailable(other.to_string())
            }
        }
    }
}
