//! The actions: each has a confirmation page (GET) whose form POSTs with the CSRF token;
//! the POST acts and redirects (303) to the page that shows the result.

use std::collections::HashMap;
use std::time::Duration;

use axum::Form;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use wharf_job_partition::{
    CancelOutcome, Deleted, Enqueued, JobState, MAX_RATE, RateLimit, RunNow,
};

use super::pages::{check_id, job_actions, state_badge};
use super::{j_link, jobs_of, q_link, window_text};
use crate::error::PageError;
use crate::layout::Ctx;

/// The largest limit the form accepts.
const MAX_LIMIT: u64 = 1_000_000;

pub(crate) fn see_other(to: String) -> Result<Response, PageError> {
    let v = HeaderValue::from_str(&to)
        .map_err(|_| PageError::BadRequest("the page to return to is not a valid URL".into()))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response())
}

pub(crate) fn read_only(ctx: &Ctx) -> Result<(), PageError> {
    if ctx.state.security.read_only {
        return Err(PageError::Forbidden(
            "the console is read-only: actions are turned off".into(),
        ));
    }
    Ok(())
}

/// What every action's POST checks first: the console is not read-only, the form carries
/// this console's CSRF token, and it has jobs to act on.
pub(crate) fn post_guard<'a>(
    ctx: &'a Ctx,
    form: &HashMap<String, String>,
) -> Result<&'a super::JobsState, PageError> {
    read_only(ctx)?;
    ctx.state
        .security
        .check_csrf(form.get("csrf").map(String::as_str))?;
    jobs_of(ctx)
}

fn queue_action(a: &str) -> Result<(&'static str, &'static str), PageError> {
    Ok(match a {
        "pause" => (
            "Pause",
            "No new job of the queue starts, on any worker; running jobs finish.",
        ),
        "resume" => ("Resume", "Workers start the queue's jobs again."),
        "limit" => (
            "Set limit",
            "How many jobs of the queue may run at once across every worker (empty: no limit; 0: none starts).",
        ),
        "rate" => (
            "Set rate limit",
            "At most N job starts in any window, counted apart for each rate group, across every worker (empty: no rate limit). A job over the limit waits as rate-limited until its window allows it.",
        ),
        "retry-dead" => (
            "Retry all dead",
            "Every dead job of the queue goes back to it with fresh attempts.",
        ),
        "delete-dead" => (
            "Delete all dead",
            "Every dead job of the queue is deleted for good.",
        ),
        other => {
            return Err(PageError::NotFound(format!(
                "no queue action `{other}`: pause, resume, limit, rate, retry-dead, delete-dead"
            )));
        }
    })
}

/// GET `/p/{p}/q/{q}/do/{action}`: the confirmation.
pub(crate) async fn queue_confirm(
    ctx: Ctx,
    Path((p, q, a)): Path<(String, String, String)>,
) -> Response {
    let r = async {
        read_only(&ctx)?;
        let js = jobs_of(&ctx)?;
        let (label, what) = queue_action(&a)?;
        js.jobs.check_queue(&p, &q).await?;
        let c = js.jobs.counts(&p, &q).await?;
        let danger = a == "delete-dead";
        Ok(ctx
            .page(
                label,
                html! {
                    h1 { (label) ": queue " (q) }
                    div.confirm {
                        p { (what) }
                        @if a.ends_with("-dead") { p { strong { (c.dead) } " dead jobs now." } }
                        form method="post" {
                            (ctx.csrf_field())
                            @if a == "limit" {
                                label { "Limit " input type="number" name="limit" min="0" max=(MAX_LIMIT) value=(c.limit.map(|l| l.to_string()).unwrap_or_default()); }
                                " "
                            }
                            @if a == "rate" {
                                label { "Starts " input type="number" name="max" min="1" max=(MAX_RATE) value=(c.rate_limit.map(|r| r.max().to_string()).unwrap_or_default()); }
                                " "
                                label { "per window " input type="text" name="window" size="8" placeholder="1s, 500ms, 5m, 1h, 1d" value=(c.rate_limit.map(|r| window_text(r.window())).unwrap_or_default()); }
                                " "
                            }
                            button.primary.danger[danger] type="submit" { (label) }
                            " "
                            a href=(q_link(&ctx, &p, &q)) { "Back" }
                        }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// POST `/p/{p}/q/{q}/do/{action}`.
pub(crate) async fn queue_act(
    ctx: Ctx,
    Path((p, q, a)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let r = async {
        let js = post_guard(&ctx, &form)?;
        queue_action(&a)?;
        js.jobs.check_queue(&p, &q).await?;
        let back = q_link(&ctx, &p, &q);
        let done = match a.as_str() {
            "pause" => {
                js.jobs.pause(&p, &q).await?;
                "done=pause".to_owned()
            }
            "resume" => {
                js.jobs.resume(&p, &q).await?;
                "done=resume".to_owned()
            }
            "limit" => {
                let v = form.get("limit").map(|v| v.trim()).unwrap_or("");
                let limit = if v.is_empty() {
                    None
                } else {
                    match v.parse::<u64>() {
                        Ok(n) if n <= MAX_LIMIT => Some(n as u32),
                        _ => {
                            return Err(PageError::BadRequest(format!(
                                "the limit must be empty (no limit) or a whole number from 0 to {MAX_LIMIT} (got `{v}`)"
                            )));
                        }
                    }
                };
                js.jobs.set_limit(&p, &q, limit).await?;
                "done=limit".to_owned()
            }
            "rate" => {
                js.jobs.set_rate_limit(&p, &q, rate_form(&form)?).await?;
                "done=rate".to_owned()
            }
            "retry-dead" => {
                let r = js.jobs.retry_all_dead(&p, &q).await?;
                format!("done=retry-dead&n={}&dup={}", r.retried, r.duplicates)
            }
            _ => {
                let n = js.jobs.purge_dead(&p, &q).await?;
                format!("done=delete-dead&n={n}")
            }
        };
        tracing::info!(partition = %p, queue = %q, action = %a, "console: queue action");
        see_other(format!("{back}?{done}"))
    }
    .await;
    ctx.answer(r)
}

/// The rate limit a form asks for: both fields empty is none; otherwise `max` is a whole
/// number and `window` a number with a unit (`ms`, `s`, `m`, `h`, `d`), checked by
/// [`RateLimit::new`].
fn rate_form(form: &HashMap<String, String>) -> Result<Option<RateLimit>, PageError> {
    let max = form.get("max").map(|v| v.trim()).unwrap_or("");
    let window = form.get("window").map(|v| v.trim()).unwrap_or("");
    if max.is_empty() && window.is_empty() {
        return Ok(None);
    }
    let n = max.parse::<u32>().map_err(|_| {
        PageError::BadRequest(format!(
            "the starts per window must be a whole number from 1 to {MAX_RATE} (got `{max}`); leave both fields empty to remove the rate limit"
        ))
    })?;
    let w = parse_window(window).ok_or_else(|| {
        PageError::BadRequest(format!(
            "the window must be a whole number with a unit: ms, s, m, h or d, for example 500ms or 1m (got `{window}`)"
        ))
    })?;
    Ok(Some(RateLimit::new(n, w)?))
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`; None for anything else (or an overflow).
pub(crate) fn parse_window(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let per = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(per)?))
}

fn job_action_text(a: &str) -> Result<(&'static str, &'static str), PageError> {
    Ok(match a {
        "cancel" => (
            "Cancel",
            "A waiting job is removed; a running job is stopped by its worker within about a second.",
        ),
        "retry" => (
            "Retry",
            "The dead job goes back to its queue with fresh attempts.",
        ),
        "delete" => (
            "Delete",
            "The job and its record are deleted for good; its keys are released.",
        ),
        "run-now" => (
            "Run now",
            "The job stops waiting for its time and joins the end of its queue's ready list.",
        ),
        other => {
            return Err(PageError::NotFound(format!(
                "no job action `{other}`: cancel, retry, delete, run-now"
            )));
        }
    })
}

/// GET `/p/{p}/j/{id}/do/{action}`: the confirmation.
pub(crate) async fn job_confirm(
    ctx: Ctx,
    Path((p, id, a)): Path<(String, String, String)>,
) -> Response {
    let r = async {
        read_only(&ctx)?;
        let js = jobs_of(&ctx)?;
        check_id(&id)?;
        let (label, what) = job_action_text(&a)?;
        let j = js.jobs.job_record(&p, &id).await?;
        let allowed = job_actions(j.info.state).iter().any(|(x, _)| *x == a);
        Ok(ctx
            .page(
                label,
                html! {
                    h1 { (label) ": job " code { (id) } }
                    div.confirm {
                        p { (j.info.name) " in queue " (j.info.queue) ", now " (state_badge(j.info.state)) }
                        p { (what) }
                        @if allowed {
                            form method="post" {
                                (ctx.csrf_field())
                                button.primary.danger[a == "delete" || a == "cancel"] type="submit" { (label) }
                                " "
                                a href=(j_link(&ctx, &p, &id)) { "Back" }
                            }
                        } @else {
                            p.error-message { "Not possible for a job in this state." }
                            a href=(j_link(&ctx, &p, &id)) { "Back" }
                        }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// POST `/p/{p}/j/{id}/do/{action}`.
pub(crate) async fn job_act(
    ctx: Ctx,
    Path((p, id, a)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let r = async {
        let js = post_guard(&ctx, &form)?;
        check_id(&id)?;
        job_action_text(&a)?;
        let j = js.jobs.job_record(&p, &id).await?;
        let back = j_link(&ctx, &p, &id);
        let conflict = |what: String| PageError::BadRequest(what);
        let to = match a.as_str() {
            "cancel" => match js.jobs.cancel(&p, &id).await? {
                CancelOutcome::Cancelled | CancelOutcome::Cancelling => {
                    format!("{back}?done=cancel")
                }
                CancelOutcome::AlreadyFinished(s) => {
                    return Err(conflict(format!(
                        "the job already finished ({s}): nothing to cancel"
                    )));
                }
                _ => return Err(PageError::NotFound(format!("no job `{id}` any more"))),
            },
            "retry" => {
                if j.info.state != JobState::Dead {
                    return Err(conflict(format!(
                        "only a dead job can be retried; this one is {}",
                        j.info.state.as_str()
                    )));
                }
                match js.jobs.retry_dead(&p, &id).await? {
                    Enqueued::Queued(_) => format!("{back}?done=retry"),
                    Enqueued::Duplicate(_) => format!("{back}?done=retry-dup"),
                }
            }
            "delete" => match js.jobs.delete(&p, &id).await? {
                Deleted::Deleted => format!("{}?done=deleted", q_link(&ctx, &p, &j.info.queue)),
                _ => return Err(conflict("the job is running: cancel it first".into())),
            },
            _ => match js.jobs.run_now(&p, &id).await? {
                RunNow::Queued => format!("{back}?done=run-now"),
                RunNow::NotScheduled(s) => {
                    return Err(conflict(format!(
                        "only a scheduled or retrying job can run now; this one is {}",
                        s.as_str()
                    )));
                }
                _ => return Err(conflict("the job could not run now".into())),
            },
        };
        tracing::info!(partition = %p, job = %id, action = %a, "console: job action");
        see_other(to)
    }
    .await;
    ctx.answer(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_a_number_and_a_unit() {
        assert_eq!(parse_window("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_window("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_window("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_window("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_window("1d"), Some(Duration::from_secs(86_400)));
        for bad in [
            "",
            "s",
            "10",
            "1.5s",
            "-1s",
            "1 week",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
        assert_eq!(window_text(Duration::from_secs(300)), "5m");
        assert_eq!(window_text(Duration::from_millis(1500)), "1500ms");
    }
}
