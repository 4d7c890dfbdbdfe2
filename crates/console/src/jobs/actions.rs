//! The actions: each has a confirmation page (GET) whose form POSTs with the CSRF token;
//! the POST acts and redirects (303) to the page that shows the result.

use std::collections::HashMap;

use axum::Form;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use wharf_job_partition::{CancelOutcome, Deleted, Enqueued, JobState, RunNow};

use super::pages::{check_id, job_actions, state_badge};
use super::{j_link, jobs_of, q_link};
use crate::error::PageError;
use crate::layout::Ctx;

/// The largest limit the form accepts.
const MAX_LIMIT: u64 = 1_000_000;

fn see_other(to: String) -> Result<Response, PageError> {
    let v = HeaderValue::from_str(&to)
        .map_err(|_| PageError::BadRequest("the page to return to is not a valid URL".into()))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response())
}

fn read_only(ctx: &Ctx) -> Result<(), PageError> {
    if ctx.state.security.read_only {
        return Err(PageError::Forbidden(
            "the console is read-only: actions are turned off".into(),
        ));
    }
    Ok(())
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
                "no queue action `{other}`: pause, resume, limit, retry-dead, delete-dead"
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
        read_only(&ctx)?;
        ctx.state.security.check_csrf(form.get("csrf").map(String::as_str))?;
        let js = jobs_of(&ctx)?;
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
        read_only(&ctx)?;
        ctx.state
            .security
            .check_csrf(form.get("csrf").map(String::as_str))?;
        let js = jobs_of(&ctx)?;
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
