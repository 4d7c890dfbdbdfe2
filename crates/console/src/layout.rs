//! The page shell (header, navigation, stylesheet) and small rendering helpers.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State as AxState};
use axum::http::request::Parts;
use axum::response::Response;
use maud::{DOCTYPE, Markup, html};

use crate::error::PageError;
use crate::state::State;

/// The path the console is mounted under (empty at the root).
#[derive(Debug, Clone, Default)]
pub(crate) struct Base(pub(crate) String);

impl Base {
    /// A link to a console path (starting with `/`).
    pub(crate) fn link(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// What a handler needs to render: the state and the mount point.
pub(crate) struct Ctx {
    pub(crate) state: Arc<State>,
    pub(crate) base: Base,
}

impl FromRequestParts<Arc<State>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<State>,
    ) -> Result<Self, Self::Rejection> {
        let AxState(state) = AxState::<Arc<State>>::from_request_parts(parts, state).await?;
        let base = parts.extensions.get::<Base>().cloned().unwrap_or_default();
        Ok(Self { state, base })
    }
}

impl Ctx {
    /// A page of the console.
    pub(crate) fn page(&self, title: &str, body: Markup) -> Markup {
        page(&self.state, &self.base, title, body)
    }

    /// A page, or the error page.
    pub(crate) fn answer(&self, r: Result<Response, PageError>) -> Response {
        r.unwrap_or_else(|e| e.into_page(&self.state, &self.base))
    }

    /// The hidden field every form carries.
    pub(crate) fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.state.security.csrf); }
    }

    pub(crate) fn link(&self, path: &str) -> String {
        self.base.link(path)
    }
}

/// The shell around every page.
pub(crate) fn page(state: &State, base: &Base, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (state.title) " console" }
                link rel="stylesheet" href=(base.link("/assets/console.css"));
            }
            body {
                header.top {
                    a.brand href=(base.link("/")) { (state.title) " console" }
                    nav {
                        a href=(base.link("/")) { "Overview" }
                        @if has_jobs(state) {
                            a href=(base.link("/jobs")) { "Jobs" }
                        }
                        @if has_supervisor(state) {
                            a href=(base.link("/service/tree")) { "Supervision" }
                        }
                        @if !state.panels.is_empty() {
                            a href=(base.link("/service/clients")) { "Clients" }
                        }
                    }
                    @if state.security.read_only {
                        span.badge.read-only { "read-only" }
                    }
                }
                main { (body) }
            }
        }
    }
}

#[allow(unused_variables)]
fn has_jobs(state: &State) -> bool {
    #[cfg(feature = "jobs")]
    return state.jobs.is_some();
    #[cfg(not(feature = "jobs"))]
    false
}

#[allow(unused_variables)]
pub(crate) fn has_supervisor(state: &State) -> bool {
    #[cfg(feature = "supervision")]
    return state.supervisor.is_some();
    #[cfg(not(feature = "supervision"))]
    false
}

/// Percent-encodes a path segment.
pub(crate) fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A time (milliseconds since the Unix epoch) as `2026-12-06 21:15:03 UTC`.
pub(crate) fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// This machine's clock, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A duration in milliseconds, short (`850 ms`, `12.5 s`, `3 min`, `2 h`).
pub(crate) fn duration(ms: i64) -> String {
    let a = ms.unsigned_abs();
    if a < 1_000 {
        format!("{a} ms")
    } else if a < 60_000 {
        format!("{:.1} s", a as f64 / 1000.0)
    } else if a < 3_600_000 {
        format!("{} min", a / 60_000)
    } else if a < 172_800_000 {
        format!("{:.1} h", a as f64 / 3_600_000.0)
    } else {
        format!("{} d", a / 86_400_000)
    }
}

/// `t` relative to `now`: `in 5.0 s` or `3 min ago`.
pub(crate) fn relative(now: i64, t: i64) -> String {
    if t >= now {
        format!("in {}", duration(t - now))
    } else {
        format!("{} ago", duration(now - t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_796_591_703_000), "2026-12-06 21:15:03 UTC");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(enc("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(enc("job-1.x_y"), "job-1.x_y");
    }
}
