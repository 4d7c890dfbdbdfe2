//! Authentication, read-only mode, CSRF tokens and the headers every answer carries.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::PageError;
use crate::layout::Base;
use crate::state::State;

/// A credential the console accepts.
pub(crate) enum Auth {
    Bearer(String),
    Basic { user: String, password: String },
}

/// How the console is secured.
pub(crate) struct Security {
    auth: Vec<Auth>,
    pub(crate) read_only: bool,
    /// The token every form carries and every POST must return (random per console).
    pub(crate) csrf: String,
}

impl Security {
    pub(crate) fn new(auth: Vec<Auth>, read_only: bool) -> Self {
        let bytes: [u8; 32] = rand::random();
        let csrf = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            auth,
            read_only,
            csrf,
        }
    }

    fn allows(&self, authorization: Option<&str>) -> bool {
        if self.auth.is_empty() {
            return true;
        }
        let Some(given) = authorization else {
            return false;
        };
        self.auth.iter().any(|a| match a {
            Auth::Bearer(token) => given
                .strip_prefix("Bearer ")
                .is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())),
            Auth::Basic { user, password } => given
                .strip_prefix("Basic ")
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .is_some_and(|g| same(&g, format!("{user}:{password}").as_bytes())),
        })
    }

    fn wants_basic(&self) -> bool {
        self.auth.iter().any(|a| matches!(a, Auth::Basic { .. }))
    }

    /// Fails unless a POST carries this console's CSRF token.
    pub(crate) fn check_csrf(&self, given: Option<&str>) -> Result<(), PageError> {
        match given {
            Some(g) if same(g.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(PageError::Forbidden(
                "the form's CSRF token is missing or wrong: reload the page and submit it again"
                    .into(),
            )),
        }
    }
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The prefix the console is mounted under, from the full and the nested path.
fn mount_prefix(original: &str, inner: &str) -> String {
    if let Some(p) = original.strip_suffix(inner) {
        return p.to_owned();
    }
    original.trim_end_matches('/').to_owned()
}

/// Every request: the mount point, authentication, read-only, and safe headers.
pub(crate) async fn guard(
    AxState(state): AxState<Arc<State>>,
    OriginalUri(original): OriginalUri,
    mut req: Request,
    next: Next,
) -> Response {
    let inner = req.uri().path().to_owned();
    let base = Base(mount_prefix(original.path(), &inner));
    let sec = &state.security;
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut resp = if !sec.allows(authorization) {
        let mut r = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
        if sec.wants_basic() {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wharf console\", charset=\"UTF-8\""),
            );
        }
        r
    } else if sec.read_only && req.method() == Method::POST {
        PageError::Forbidden("the console is read-only: actions are turned off".into())
            .into_page(&state, &base)
    } else {
        req.extensions_mut().insert(base);
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_prefix_is_what_the_nesting_stripped() {
        assert_eq!(mount_prefix("/console/p/a", "/p/a"), "/console");
        assert_eq!(mount_prefix("/console", "/"), "/console");
        assert_eq!(mount_prefix("/console/", "/"), "/console");
        assert_eq!(mount_prefix("/p/a", "/p/a"), "");
    }

    #[test]
    fn credentials_must_match_exactly() {
        let s = Security::new(
            vec![
                Auth::Bearer("t0k".into()),
                Auth::Basic {
                    user: "ops".into(),
                    password: "pw".into(),
                },
            ],
            false,
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ops:pw")
        );
        assert!(s.allows(Some("Bearer t0k")));
        assert!(s.allows(Some(&basic)));
        assert!(!s.allows(Some("Bearer t0")));
        assert!(!s.allows(Some("Basic b3BzOnB4")));
        assert!(!s.allows(None));
    }
}
