//! The jobs pages (feature `jobs`): partitions and queues with counts and throughput, job
//! lists with paging and search, a job's page, workers, execution keys, and the actions.
//!
//! - `throughput`: the in-memory ring of counter samples and its chart.
//! - `pages`: the read-only pages.
//! - `actions`: confirmation pages and the POSTs that act.
//! - `schedules`: a partition's schedules and their actions.

mod actions;
mod pages;
mod schedules;
mod throughput;

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use maud::{Markup, html};
use wharf_job_partition::{Jobs, QueueCounts};

use crate::error::PageError;
use crate::layout::{Ctx, enc};
use crate::state::State;
pub(crate) use schedules::s_link;
pub(crate) use throughput::Throughput;

/// Partitions shown (and sampled) at most.
const MAX_PARTITIONS: usize = 100;
/// Queues shown (and sampled) at most, over every partition.
const MAX_QUEUES: usize = 1_000;

/// The jobs handle and the throughput samples.
pub(crate) struct JobsState {
    pub(crate) jobs: Jobs,
    pub(crate) throughput: Arc<Throughput>,
    every: Duration,
}

impl JobsState {
    pub(crate) fn new(jobs: Jobs, every: Duration) -> Self {
        Self {
            jobs,
            throughput: Arc::new(Throughput::new(every)),
            every,
        }
    }

    /// Samples every queue's counters every `every`, while the console lives (needs a tokio
    /// runtime; without one the charts stay empty).
    pub(crate) fn start_sampler(&self, state: Weak<State>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("console built outside a tokio runtime: throughput charts stay empty");
            return;
        };
        let every = self.every;
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = state.upgrade() else { return };
                let Some(js) = &state.jobs else { return };
                match all_counts(&js.jobs).await {
                    Ok(all) => js.throughput.record(&all),
                    Err(e) => tracing::debug!(error = %e, "console: could not sample counts"),
                }
            }
        });
    }
}

/// The jobs state, or 404 when the console has no jobs.
pub(crate) fn jobs_of(ctx: &Ctx) -> Result<&JobsState, PageError> {
    ctx.state
        .jobs
        .as_ref()
        .ok_or_else(|| PageError::NotFound("this console was built without jobs".into()))
}

/// Every queue's counts: (partition, queue, counts), bounded.
pub(crate) async fn all_counts(
    jobs: &Jobs,
) -> Result<Vec<(String, String, QueueCounts)>, wharf_job_partition::Error> {
    let mut out = Vec::new();
    for p in jobs.partitions().await?.into_iter().take(MAX_PARTITIONS) {
        for q in jobs.queues(&p).await? {
            if out.len() >= MAX_QUEUES {
                return Ok(out);
            }
            let c = jobs.counts(&p, &q).await?;
            out.push((p.clone(), q, c));
        }
    }
    Ok(out)
}

pub(crate) fn routes(r: Router<Arc<State>>) -> Router<Arc<State>> {
    r.route("/jobs", get(pages::index))
        .route("/p/{p}", get(pages::partition))
        .route("/p/{p}/workers", get(pages::workers))
        .route("/p/{p}/keys", get(pages::keys))
        .route("/p/{p}/schedules", get(schedules::page))
        .route(
            "/p/{p}/schedules/{name}/do/{action}",
            get(schedules::confirm).post(schedules::act),
        )
        .route("/p/{p}/q/{q}", get(pages::queue))
        .route("/p/{p}/q/{q}/list/{list}", get(pages::list))
        .route(
            "/p/{p}/q/{q}/do/{action}",
            get(actions::queue_confirm).post(actions::queue_act),
        )
        .route("/p/{p}/j/{id}", get(pages::job))
        .route(
            "/p/{p}/j/{id}/do/{action}",
            get(actions::job_confirm).post(actions::job_act),
        )
}

/// Links to a partition, a queue, a list, a job.
pub(crate) fn p_link(ctx: &Ctx, p: &str) -> String {
    ctx.link(&format!("/p/{}", enc(p)))
}
pub(crate) fn q_link(ctx: &Ctx, p: &str, q: &str) -> String {
    ctx.link(&format!("/p/{}/q/{}", enc(p), enc(q)))
}
pub(crate) fn j_link(ctx: &Ctx, p: &str, id: &str) -> String {
    ctx.link(&format!("/p/{}/j/{}", enc(p), enc(id)))
}

/// A rate limit as text: "10 starts per 1s".
pub(crate) fn rate_text(r: &wharf_job_partition::RateLimit) -> String {
    let starts = if r.max() == 1 { "start" } else { "starts" };
    format!("{} {starts} per {}", r.max(), window_text(r.window()))
}

/// A window as the form takes it: `250ms`, `30s`, `5m`, `2h`, `1d` (the largest exact unit).
pub(crate) fn window_text(w: Duration) -> String {
    let ms = w.as_millis() as u64;
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// The counts table of some queues.
pub(crate) fn counts_table(ctx: &Ctx, rows: &[(String, String, QueueCounts)]) -> Markup {
    html! {
        table.counts {
            thead { tr {
                th { "Partition" } th { "Queue" }
                th.num { "Queued" } th.num { "Scheduled" } th.num { "Parked" }
                th.num { "Running" } th.num { "Dead" } th.num { "Completed (total)" }
                th { "Settings" }
            } }
            tbody {
                @for (p, q, c) in rows {
                    tr {
                        td { a href=(p_link(ctx, p)) { (p) } }
                        td { a href=(q_link(ctx, p, q)) { (q) } }
                        td.num { (c.queued) } td.num { (c.scheduled) } td.num { (c.parked) }
                        td.num { (c.running) } td.num { (c.dead) } td.num { (c.completed_total) }
                        td {
                            @if c.paused { span.badge.state-dead { "paused" } " " }
                            @if let Some(l) = c.limit { span.badge { "limit " (l) } " " }
                            @if let Some(r) = c.rate_limit { span.badge { "rate " (rate_text(&r)) } }
                        }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="9" .muted { "No queue yet: enqueue a job and it shows here." } }
                }
            }
        }
    }
}

/// The overview's jobs section: totals, the last hour's chart and every queue.
pub(crate) async fn overview_section(ctx: &Ctx) -> Markup {
    let Some(js) = &ctx.state.jobs else {
        return html! {};
    };
    match all_counts(&js.jobs).await {
        Ok(rows) => {
            let sum = |f: fn(&QueueCounts) -> u64| rows.iter().map(|(_, _, c)| f(c)).sum::<u64>();
            html! {
                h2 { a href=(ctx.link("/jobs")) { "Jobs" } }
                div.cards {
                    div.card { div.n { (sum(|c| c.queued)) } div.l { "queued" } }
                    div.card { div.n { (sum(|c| c.scheduled)) } div.l { "scheduled" } }
                    div.card { div.n { (sum(|c| c.running)) } div.l { "running" } }
                    div.card { div.n { (sum(|c| c.dead)) } div.l { "dead" } }
                }
                h2 { "Throughput, last hour (per minute)" }
                (js.throughput.chart(None))
                h2 { "Queues" }
                (counts_table(ctx, &rows))
            }
        }
        Err(e) => html! { p.error-message { "Redis did not answer: " (e) } },
    }
}
