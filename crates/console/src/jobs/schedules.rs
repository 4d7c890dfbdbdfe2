//! A partition's schedules (recurring jobs) and their actions: pause, resume, remove.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::actions::{post_guard, read_only, see_other};
use super::{jobs_of, p_link, q_link};
use crate::error::PageError;
use crate::layout::{Ctx, enc, now_ms, relative, time};

/// The schedules page of a partition.
pub(crate) fn s_link(ctx: &Ctx, p: &str) -> String {
    ctx.link(&format!("/p/{}/schedules", enc(p)))
}

fn ms(t: Option<SystemTime>) -> Option<i64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

fn at(now: i64, t: Option<SystemTime>) -> Markup {
    match ms(t) {
        Some(t) => html! { span title=(time(t)) { (relative(now, t)) } },
        None => html! { span.muted { "–" } },
    }
}

fn notice(q: &HashMap<String, String>) -> Markup {
    let text = match q.get("done").map(String::as_str) {
        Some("pause") => "The schedule is paused: no tick fires until it is resumed.",
        Some("resume") => "The schedule is resumed from its next tick.",
        Some("remove") => "The schedule was removed (jobs it enqueued stay).",
        _ => return html! {},
    };
    html! { div.notice role="status" { (text) } }
}

/// GET `/p/{p}/schedules`: every schedule of the partition.
pub(crate) async fn page(
    ctx: Ctx,
    Path(p): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        js.jobs.check_partition(&p).await?;
        let list = js.jobs.schedules(&p).await?;
        let now = now_ms();
        let ro = ctx.state.security.read_only;
        let act = |name: &str, a: &str| format!("{}/{}/do/{a}", s_link(&ctx, &p), enc(name));
        Ok(ctx
            .page(
                "Schedules",
                html! {
                    div.crumbs { a href=(ctx.link("/jobs")) { "Jobs" } " / " a href=(p_link(&ctx, &p)) { (p) } }
                    h1 { "Schedules of " (p) }
                    (notice(&params))
                    p.muted { "Recurring jobs: each tick enqueues its job once, however many schedulers run. Soonest next tick first, paused last." }
                    table.schedules {
                        thead { tr {
                            th { "Name" } th { "When" } th { "Queue" } th { "Job" } th.num { "Fired" }
                            th { "Next tick" } th { "Last tick" } th { "State" }
                            @if !ro { th { "Actions" } }
                        } }
                        tbody {
                            @for s in &list {
                                tr {
                                    td { code { (s.name) } }
                                    td { (s.when) }
                                    td { a href=(q_link(&ctx, &p, &s.queue)) { (s.queue) } }
                                    td { (s.job) }
                                    td.num { (s.fired) }
                                    td { @if s.paused { span.muted { "paused" } } @else { (at(now, s.next_at)) } }
                                    td { (at(now, s.last_at)) }
                                    td { @if s.paused { span.badge.state-dead { "paused" } } @else { span.badge.state-completed { "active" } } }
                                    @if !ro {
                                        td.row-actions {
                                            @if s.paused { a.button href=(act(&s.name, "resume")) { "Resume" } }
                                            @else { a.button href=(act(&s.name, "pause")) { "Pause" } }
                                            " "
                                            a.button.danger href=(act(&s.name, "remove")) { "Remove" }
                                        }
                                    }
                                }
                            }
                            @if list.is_empty() {
                                tr { td colspan="9" .muted { "No schedule in this partition: create one with Jobs::schedule." } }
                            }
                        }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

fn action(a: &str) -> Result<(&'static str, &'static str), PageError> {
    Ok(match a {
        "pause" => (
            "Pause",
            "No tick of the schedule fires until it is resumed; ticks that come due meanwhile are dropped.",
        ),
        "resume" => (
            "Resume",
            "The schedule fires again from its next tick after now (ticks missed while paused do not fire).",
        ),
        "remove" => (
            "Remove",
            "The schedule is deleted for good; jobs its ticks already enqueued stay.",
        ),
        other => {
            return Err(PageError::NotFound(format!(
                "no schedule action `{other}`: pause, resume, remove"
            )));
        }
    })
}

/// GET `/p/{p}/schedules/{name}/do/{action}`: the confirmation.
pub(crate) async fn confirm(
    ctx: Ctx,
    Path((p, name, a)): Path<(String, String, String)>,
) -> Response {
    let r = async {
        read_only(&ctx)?;
        let js = jobs_of(&ctx)?;
        let (label, what) = action(&a)?;
        let s = js
            .jobs
            .schedules(&p)
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                PageError::NotFound(format!("no schedule `{name}` in partition `{p}`"))
            })?;
        Ok(ctx
            .page(
                label,
                html! {
                    h1 { (label) ": schedule " code { (name) } }
                    div.confirm {
                        p { (s.when) ", job " (s.job) " into queue " (s.queue) }
                        p { (what) }
                        form method="post" {
                            (ctx.csrf_field())
                            button.primary.danger[a == "remove"] type="submit" { (label) }
                            " "
                            a href=(s_link(&ctx, &p)) { "Back" }
                        }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// POST `/p/{p}/schedules/{name}/do/{action}`.
pub(crate) async fn act(
    ctx: Ctx,
    Path((p, name, a)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let r = async {
        let js = post_guard(&ctx, &form)?;
        action(&a)?;
        match a.as_str() {
            "pause" => js.jobs.pause_schedule(&p, &name).await?,
            "resume" => js.jobs.resume_schedule(&p, &name).await?,
            _ => js.jobs.remove_schedule(&p, &name).await?,
        }
        tracing::info!(partition = %p, schedule = %name, action = %a, "console: schedule action");
        see_other(format!("{}?done={a}", s_link(&ctx, &p)))
    }
    .await;
    ctx.answer(r)
}
