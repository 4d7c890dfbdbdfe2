//! The read-only jobs pages.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use wharf_job_partition::{Filter, JobList, JobRecord, JobState, MAX_PAGE};

use super::{all_counts, counts_table, j_link, jobs_of, p_link, q_link, rate_text, s_link};
use crate::error::PageError;
use crate::layout::{Ctx, duration, enc, relative, time};

/// Jobs per page unless `limit` says otherwise.
const DEFAULT_PAGE: u64 = 50;
/// Characters of arguments shown in a list.
const ARGS_PREVIEW: usize = 90;

type Params = Query<HashMap<String, String>>;

/// A number parameter: absent is `default`; not a number or above `max` is a 400.
pub(crate) fn num(
    q: &HashMap<String, String>,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, PageError> {
    match q.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(PageError::BadRequest(format!(
                "parameter `{key}` must be a whole number from 0 to {max} (got `{v}`)"
            ))),
        },
    }
}

/// A text parameter: absent or empty is None; longer than 512 bytes is a 400.
fn text<'a>(q: &'a HashMap<String, String>, key: &str) -> Result<Option<&'a str>, PageError> {
    match q.get(key).map(|v| v.as_str()).filter(|v| !v.is_empty()) {
        Some(v) if v.len() > 512 => Err(PageError::BadRequest(format!(
            "parameter `{key}` is longer than 512 bytes"
        ))),
        v => Ok(v),
    }
}

pub(crate) fn state_badge(s: JobState) -> Markup {
    html! { span class=(format!("badge state-{}", s.as_str())) { (s.as_str()) } }
}

fn crumbs(ctx: &Ctx, p: &str, q: Option<&str>) -> Markup {
    html! {
        div.crumbs {
            a href=(ctx.link("/jobs")) { "Jobs" } " / "
            a href=(p_link(ctx, p)) { (p) }
            @if let Some(q) = q { " / " a href=(q_link(ctx, p, q)) { (q) } }
        }
    }
}

/// A message after an action (only known ones: nothing from the URL is echoed as is).
pub(crate) fn notice(q: &HashMap<String, String>) -> Markup {
    let n = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let text = match q.get("done").map(String::as_str) {
        Some("cancel") => {
            "Cancel asked: a waiting job is removed; a running job stops within about a second."
                .to_owned()
        }
        Some("retry") => "The job is back in its queue with fresh attempts.".to_owned(),
        Some("retry-dup") => "Not retried: another pending job holds its queue key.".to_owned(),
        Some("run-now") => "The job moved to the end of its queue's ready list.".to_owned(),
        Some("deleted") => "The job was deleted.".to_owned(),
        Some("pause") => "The queue is paused: running jobs finish, no new one starts.".to_owned(),
        Some("resume") => "The queue is resumed.".to_owned(),
        Some("limit") => "The queue's limit is set.".to_owned(),
        Some("rate") => "The queue's rate limit is changed.".to_owned(),
        Some("retry-dead") => format!(
            "{} dead jobs are back in the queue; {} stay dead (their queue key is taken).",
            n("n"),
            n("dup")
        ),
        Some("delete-dead") => format!("{} dead jobs were deleted.", n("n")),
        _ => return html! {},
    };
    html! { div.notice role="status" { (text) } }
}

/// `/jobs`: every partition's queues.
pub(crate) async fn index(ctx: Ctx) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        let rows = all_counts(&js.jobs).await?;
        Ok(ctx
            .page(
                "Jobs",
                html! {
                    h1 { "Jobs" }
                    h2 { "Throughput, last hour (per minute)" }
                    (js.throughput.chart(None))
                    h2 { "Queues" }
                    (counts_table(&ctx, &rows))
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// `/p/{p}`: a partition's queues, and links to its workers and keys.
pub(crate) async fn partition(ctx: Ctx, Path(p): Path<String>) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        js.jobs.check_partition(&p).await?;
        let mut rows = Vec::new();
        for q in js.jobs.queues(&p).await?.into_iter().take(super::MAX_QUEUES) {
            let c = js.jobs.counts(&p, &q).await?;
            rows.push((p.clone(), q, c));
        }
        Ok(ctx
            .page(
                &p,
                html! {
                    div.crumbs { a href=(ctx.link("/jobs")) { "Jobs" } }
                    h1 { "Partition " (p) }
                    div.actions {
                        a.button href=(ctx.link(&format!("/p/{}/workers", enc(&p)))) { "Workers" }
                        a.button href=(ctx.link(&format!("/p/{}/keys", enc(&p)))) { "Execution keys" }
                        a.button href=(s_link(&ctx, &p)) { "Schedules" }
                    }
                    (counts_table(&ctx, &rows))
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

fn tabs(
    ctx: &Ctx,
    p: &str,
    q: &str,
    on: Option<JobList>,
    c: &wharf_job_partition::QueueCounts,
) -> Markup {
    let count = |l: JobList| match l {
        JobList::Queued => c.queued,
        JobList::Scheduled => c.scheduled,
        JobList::Parked => c.parked,
        JobList::Running => c.running,
        JobList::Finished => c.finished_kept,
        JobList::RateLimited => c.rate_limited,
        _ => c.dead,
    };
    html! {
        nav.tabs {
            @for l in JobList::ALL {
                a class=@if Some(l) == on { "on" } @else { "" }
                    href=(format!("{}/list/{}", q_link(ctx, p, q), l.as_str())) {
                    (l.as_str()) " (" (count(l)) ")"
                }
            }
        }
    }
}

fn percentile(sorted: &[i64], pct: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    sorted.get((sorted.len() - 1) * pct / 100).copied()
}

/// `/p/{p}/q/{q}`: a queue's counts, settings, actions, throughput and latency.
pub(crate) async fn queue(
    ctx: Ctx,
    Path((p, q)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        js.jobs.check_queue(&p, &q).await?;
        let c = js.jobs.counts(&p, &q).await?;
        // Latency from the newest finished jobs (their timeline is kept within retention).
        let recent = js.jobs.list(&p, &q, JobList::Finished, 0, 200).await?;
        let mut waits: Vec<i64> = Vec::new();
        let mut runs: Vec<i64> = Vec::new();
        for j in &recent.jobs {
            if let (Some(e), Some(s)) = (j.enqueued_at_ms, j.started_at_ms) {
                waits.push(s - e);
            }
            if let (Some(s), Some(f)) = (j.started_at_ms, j.finished_at_ms) {
                runs.push(f - s);
            }
        }
        waits.sort_unstable();
        runs.sort_unstable();
        let lat = |v: &[i64], pct| percentile(v, pct).map(duration).unwrap_or_else(|| "–".into());
        let act = |a: &str| format!("{}/do/{a}", q_link(&ctx, &p, &q));
        let ro = ctx.state.security.read_only;
        Ok(ctx
            .page(
                &q,
                html! {
                    (crumbs(&ctx, &p, None))
                    h1 { "Queue " (q) }
                    (notice(&params))
                    div.cards {
                        div.card { div.n { (c.queued) } div.l { "queued" } }
                        div.card { div.n { (c.scheduled) } div.l { "scheduled" } }
                        div.card { div.n { (c.parked) } div.l { "parked" } }
                        div.card { div.n { (c.running) } div.l { "running" } }
                        div.card { div.n { (c.dead) } div.l { "dead" } }
                        div.card { div.n { (c.rate_limited) } div.l { "rate-limited" } }
                        div.card { div.n { (c.completed_total) } div.l { "completed (total)" } }
                        div.card { div.n { (c.lease_expired_total) } div.l { "leases expired" } }
                    }
                    (tabs(&ctx, &p, &q, None, &c))
                    h2 { "Settings" }
                    table.kv {
                        tr { th { "State" } td { @if c.paused { span.badge.state-dead { "paused" } } @else { span.badge.state-completed { "active" } } } }
                        tr { th { "Limit (across workers)" } td { @match c.limit { Some(l) => (l), None => "none" } } }
                        tr { th { "Rate limit (per rate group)" } td { @match c.rate_limit { Some(r) => { "at most " (rate_text(&r)) ", for each rate group" }, None => "none" } } }
                        tr { th { "Rate-limited jobs" } td { a href=(format!("{}/list/ratelimited", q_link(&ctx, &p, &q))) { (c.rate_limited) } } }
                    }
                    @if !ro {
                        div.actions {
                            @if c.paused { a.button href=(act("resume")) { "Resume" } }
                            @else { a.button href=(act("pause")) { "Pause" } }
                            a.button href=(act("limit")) { "Set limit" }
                            a.button href=(act("rate")) { "Set rate limit" }
                            a.button href=(act("retry-dead")) { "Retry all dead" }
                            a.button.danger href=(act("delete-dead")) { "Delete all dead" }
                        }
                    }
                    h2 { "Throughput, last hour (per minute)" }
                    (js.throughput.chart(Some((&p, &q))))
                    h2 { "Latency (newest " (recent.jobs.len()) " finished jobs)" }
                    table.kv {
                        tr { th { "Wait (enqueued → started)" } td { "p50 " (lat(&waits, 50)) " · p95 " (lat(&waits, 95)) } }
                        tr { th { "Run (started → finished)" } td { "p50 " (lat(&runs, 50)) " · p95 " (lat(&runs, 95)) } }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

fn preview(args: &str) -> String {
    if args.chars().count() <= ARGS_PREVIEW {
        return args.to_owned();
    }
    let mut s: String = args.chars().take(ARGS_PREVIEW).collect();
    s.push('…');
    s
}

fn when(list: JobList, j: &JobRecord, now: i64) -> Markup {
    let t = |v: Option<i64>| match v {
        Some(t) => html! { span title=(time(t)) { (relative(now, t)) } },
        None => html! { span.muted { "–" } },
    };
    match list {
        JobList::Scheduled => t(j.run_at_ms),
        JobList::Running => html! {
            (j.worker.as_deref().unwrap_or("?")) " · started " (t(j.started_at_ms))
            " · lease " (t(j.lease_expires_at_ms))
        },
        JobList::Finished | JobList::Dead => t(j.finished_at_ms),
        _ => t(j.enqueued_at_ms),
    }
}

fn when_heading(list: JobList) -> &'static str {
    match list {
        JobList::Scheduled => "Due",
        JobList::Running => "Worker · started · lease",
        JobList::Finished | JobList::Dead => "Finished",
        _ => "Enqueued",
    }
}

/// `/p/{p}/q/{q}/list/{list}`: a page of a list, or a search in it.
pub(crate) async fn list(
    ctx: Ctx,
    Path((p, q, l)): Path<(String, String, String)>,
    Query(params): Params,
) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        let list = JobList::parse(&l).ok_or_else(|| {
            PageError::NotFound(format!(
                "no list `{l}`: the lists are queued, scheduled, parked, running, finished, dead and ratelimited"
            ))
        })?;
        let offset = num(&params, "offset", 0, u64::MAX / 2)?;
        let limit = num(&params, "limit", DEFAULT_PAGE, MAX_PAGE as u64)?.max(1);
        let xkey = text(&params, "xkey")?;
        let search = text(&params, "q")?;
        let name = text(&params, "name")?;
        js.jobs.check_queue(&p, &q).await?;
        let c = js.jobs.counts(&p, &q).await?;
        let searching = xkey.is_some() || search.is_some() || name.is_some();
        let here = format!("{}/list/{}", q_link(&ctx, &p, &q), list.as_str());
        let (rows, now, pager) = if searching {
            let mut f = Filter::new();
            if let Some(k) = xkey {
                f = f.execution_key(k);
            }
            if let Some(s) = search {
                f = f.args_contain(s);
            }
            if let Some(n) = name {
                f = f.name(n);
            }
            let found = js.jobs.search(&p, &q, list, &f, offset, limit as usize).await?;
            let keep = |k: &str, v: Option<&str>| v.map(|v| format!("&{k}={}", enc(v))).unwrap_or_default();
            let more = found.next_offset.map(|n| {
                format!("{here}?offset={n}&limit={limit}{}{}{}", keep("xkey", xkey), keep("q", search), keep("name", name))
            });
            let pager = html! {
                div.pager {
                    span.muted { (found.jobs.len()) " found among " (found.scanned) " jobs looked at from position " (offset) }
                    @if let Some(m) = more { a.button href=(m) { "Continue the search →" } }
                }
            };
            (found.jobs, found.now_ms, pager)
        } else {
            let page = js.jobs.list(&p, &q, list, offset, limit as usize).await?;
            let last = (offset + page.jobs.len() as u64).min(page.total);
            let prev = (offset > 0).then(|| format!("{here}?offset={}&limit={limit}", offset.saturating_sub(limit)));
            let next = (last < page.total).then(|| format!("{here}?offset={last}&limit={limit}"));
            let pager = html! {
                div.pager {
                    @if let Some(pv) = prev { a.button href=(pv) { "← Previous" } }
                    span.muted {
                        @if page.jobs.is_empty() { "none" }
                        @else { (offset + 1) "–" (last) " of " (page.total) }
                    }
                    @if let Some(nx) = next { a.button href=(nx) { "Next →" } }
                }
            };
            (page.jobs, page.now_ms, pager)
        };
        Ok(ctx
            .page(
                &format!("{q} · {}", list.as_str()),
                html! {
                    (crumbs(&ctx, &p, Some(&q)))
                    h1 { "Queue " (q) ": " (list.as_str()) }
                    (tabs(&ctx, &p, &q, Some(list), &c))
                    form.filters method="get" action=(here) {
                        input type="text" name="q" placeholder="text in arguments" value=(search.unwrap_or(""));
                        input type="text" name="xkey" placeholder="execution key" value=(xkey.unwrap_or(""));
                        input type="text" name="name" placeholder="job name" value=(name.unwrap_or(""));
                        button type="submit" { "Search" }
                        @if searching { a href=(here) { "clear" } }
                    }
                    (pager.clone())
                    table.jobs {
                        thead { tr {
                            th { "Id" } th { "Name" } th { "State" } th.num { "Attempts" }
                            th { "Arguments" } th { (when_heading(list)) }
                            @if list == JobList::Dead || list == JobList::Scheduled { th { "Last error" } }
                        } }
                        tbody {
                            @for j in &rows {
                                tr {
                                    td { a href=(j_link(&ctx, &p, &j.info.id)) { code { (j.info.id) } } }
                                    td { (j.info.name) }
                                    td { (state_badge(j.info.state)) }
                                    td.num { (j.info.attempts) }
                                    td { code { (preview(&j.info.args)) } }
                                    td { (when(list, j, now)) }
                                    @if list == JobList::Dead || list == JobList::Scheduled {
                                        td { @if let Some(e) = &j.info.error { (preview(e)) } }
                                    }
                                }
                            }
                            @if rows.is_empty() {
                                tr { td colspan="7" .muted { "No job here." } }
                            }
                        }
                    }
                    (pager)
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// Checks a job id from a URL: 1 to 200 bytes, no control characters.
pub(crate) fn check_id(id: &str) -> Result<(), PageError> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(PageError::BadRequest(
            "a job id is 1 to 200 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// The actions that make sense for a job in this state.
pub(crate) fn job_actions(state: JobState) -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    if matches!(state, JobState::Scheduled | JobState::Retrying) {
        v.push(("run-now", "Run now"));
    }
    if state == JobState::Dead {
        v.push(("retry", "Retry"));
    }
    if !matches!(
        state,
        JobState::Completed | JobState::Cancelled | JobState::Dead
    ) {
        v.push(("cancel", "Cancel"));
    }
    if !matches!(state, JobState::Running | JobState::Stopping) {
        v.push(("delete", "Delete"));
    }
    v
}

/// `/p/{p}/j/{id}`: a job's full story.
pub(crate) async fn job(
    ctx: Ctx,
    Path((p, id)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        check_id(&id)?;
        let j = js.jobs.job_record(&p, &id).await?;
        // A flow's parent: its children with their outcomes.
        let flow = js.jobs.flow(&p, &id).await?;
        let now = crate::layout::now_ms();
        let args = serde_json::from_str::<serde_json::Value>(&j.info.args)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| j.info.args.clone());
        let at = |t: Option<i64>| match t {
            Some(t) => html! { (time(t)) " " span.muted { "(" (relative(now, t)) ")" } },
            None => html! { span.muted { "–" } },
        };
        let ro = ctx.state.security.read_only;
        let info = &j.info;
        Ok(ctx
            .page(
                &format!("job {id}"),
                html! {
                    (crumbs(&ctx, &p, Some(&info.queue)))
                    h1 { "Job " code { (id) } " " (state_badge(info.state)) }
                    (notice(&params))
                    @if !ro {
                        div.actions {
                            @for (a, label) in job_actions(info.state) {
                                a.button.danger[a == "delete" || a == "cancel"] href=(format!("{}/do/{a}", j_link(&ctx, &p, &id))) { (label) }
                            }
                        }
                    }
                    table.kv {
                        tr { th { "Name" } td { (info.name) } }
                        tr { th { "Queue" } td { a href=(q_link(&ctx, &p, &info.queue)) { (info.queue) } } }
                        tr { th { "Attempts started" } td { (info.attempts) } }
                        tr { th { "Priority" } td { (info.priority) " " span.muted { "(0 first)" } } }
                        tr { th { "Queue key" } td { @if let Some(k) = &info.queue_key { code { (k) } } @else { span.muted { "none" } } } }
                        tr { th { "Execution key" } td {
                            @if let Some(k) = &info.execution_key {
                                a href=(format!("{}?key={}", ctx.link(&format!("/p/{}/keys", enc(&p))), enc(k))) { code { (k) } }
                            } @else { span.muted { "none" } }
                        } }
                        tr { th { "Leases lost" } td { (info.lease_expiries) } }
                        @if info.cancel_requested { tr { th { "Cancel" } td { "asked, the worker is stopping it" } } }
                        @if let Some(s) = &info.stopping { tr { th { "Stopping" } td { (s) } } }
                        @if let Some((fp, fid)) = &info.flow_parent {
                            tr { th { "Flow parent" } td { a href=(j_link(&ctx, fp, fid)) { code { (fid) } } " " span.muted { "in " (fp) } } }
                        }
                        @if let Some((bp, bid)) = &info.batch {
                            tr { th { "Batch" } td { code { (bid) } " " span.muted { "in " (bp) } } }
                        }
                    }
                    @if let Some(f) = &flow {
                        h2 { "Children (" (f.done) "/" (f.total) " settled, " (f.failed) " failed)" }
                        table {
                            thead { tr { th { "Child" } th { "Partition" } th { "Queue" } th { "Outcome" } } }
                            tbody {
                                @for (m, st) in &f.children {
                                    tr {
                                        td { a href=(j_link(&ctx, &m.partition, &m.id)) { code { (m.id) } } }
                                        td { (m.partition) }
                                        td { (m.queue) }
                                        td { @if let Some(s) = st { (state_badge(*s)) } @else { span.muted { "pending" } } }
                                    }
                                }
                            }
                        }
                    }
                    h2 { "Timeline" }
                    table.kv {
                        tr { th { "Enqueued" } td { (at(j.enqueued_at_ms)) } }
                        @if j.run_at_ms.is_some() { tr { th { "Due" } td { (at(j.run_at_ms)) } } }
                        tr { th { "Latest attempt started" } td { (at(j.started_at_ms)) } }
                        tr { th { "Finished" } td { (at(j.finished_at_ms)) } }
                    }
                    @if j.worker.is_some() || j.lease_expires_at_ms.is_some() {
                        h2 { "Worker and lease" }
                        table.kv {
                            tr { th { "Worker" } td { code { (j.worker.as_deref().unwrap_or("?")) } " " a href=(ctx.link(&format!("/p/{}/workers", enc(&p)))) { "all workers" } } }
                            tr { th { "Lease expires" } td { (at(j.lease_expires_at_ms)) } }
                        }
                    }
                    h2 { "Arguments" }
                    pre { (args) }
                    @if let Some(progress) = &info.progress {
                        h2 { "Progress" }
                        pre { (pretty(progress)) }
                    }
                    @if let Some(result) = &info.result {
                        h2 { "Result" }
                        pre { (pretty(result)) }
                    }
                    @if let Some(e) = &info.error {
                        h2 { "Last error" }
                        pre.error { (e) }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// A stored JSON value, indented (as it is when it does not parse).
fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_owned())
}

/// `/p/{p}/workers`: live workers (seen through their leases) and the jobs each runs.
pub(crate) async fn workers(ctx: Ctx, Path(p): Path<String>) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        let workers = js.jobs.workers(&p).await?;
        Ok(ctx
            .page(
                "Workers",
                html! {
                    div.crumbs { a href=(ctx.link("/jobs")) { "Jobs" } " / " a href=(p_link(&ctx, &p)) { (p) } }
                    h1 { "Workers of " (p) }
                    p.muted { "A worker shows here while it holds a lease (runs a job of this partition)." }
                    table {
                        thead { tr { th { "Worker" } th { "Health" } th.num { "Jobs" } th { "Renewed" } th { "Running" } } }
                        tbody {
                            @for w in &workers {
                                tr {
                                    td { code { (w.worker) } }
                                    td { @if w.stalled { span.badge.state-dead { "stalled" } } @else { span.badge.state-completed { "alive" } } }
                                    td.num { (w.jobs.len()) }
                                    td { (duration(w.renewed_ms_ago)) " ago" }
                                    td {
                                        @for (q, l) in &w.jobs {
                                            div {
                                                a href=(q_link(&ctx, &p, q)) { (q) } " · "
                                                a href=(j_link(&ctx, &p, &l.id)) { code { (l.id) } } " " (l.name)
                                                span.muted { " · lease " (relative(0, l.expires_in_ms)) }
                                            }
                                        }
                                    }
                                }
                            }
                            @if workers.is_empty() { tr { td colspan="5" .muted { "No worker holds a lease now." } } }
                        }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// `/p/{p}/keys`: execution keys held and who waits on each (`?key=` for one key).
pub(crate) async fn keys(ctx: Ctx, Path(p): Path<String>, Query(params): Params) -> Response {
    let r = async {
        let js = jobs_of(&ctx)?;
        js.jobs.check_partition(&p).await?;
        let keys = match text(&params, "key")? {
            Some(k) => vec![js.jobs.execution_key(&p, k).await?],
            None => js.jobs.execution_keys(&p, 500).await?,
        };
        Ok(ctx
            .page(
                "Execution keys",
                html! {
                    div.crumbs { a href=(ctx.link("/jobs")) { "Jobs" } " / " a href=(p_link(&ctx, &p)) { (p) } }
                    h1 { "Execution keys of " (p) }
                    p.muted { "Keys of running and parked jobs: the holder runs (or is next), the others wait in this order." }
                    table {
                        thead { tr { th { "Key" } th { "Holder" } th.num { "Waiting" } th { "Next waiters" } } }
                        tbody {
                            @for k in &keys {
                                tr {
                                    td { code { (k.key) } }
                                    td { @if let Some(h) = &k.holder { a href=(j_link(&ctx, &p, h)) { code { (h) } } } @else { span.muted { "free" } } }
                                    td.num { (k.waiting) }
                                    td { @for w in &k.waiters { a href=(j_link(&ctx, &p, w)) { code { (w) } } " " } }
                                }
                            }
                            @if keys.is_empty() { tr { td colspan="4" .muted { "No execution key is held or waited for." } } }
                        }
                    }
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}
