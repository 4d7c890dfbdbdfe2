//! The running service: the supervision tree with states, restart counts and last exits.

use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use wharf_core::supervisor::{ChildState, TreeSnapshot};

use crate::error::PageError;
use crate::layout::Ctx;

fn state_name(s: ChildState) -> &'static str {
    match s {
        ChildState::Starting => "Starting",
        ChildState::Running => "Running",
        ChildState::Restarting => "Restarting",
        ChildState::Ignored => "Ignored",
        ChildState::Stopped => "Stopped",
        _ => "Unknown",
    }
}

fn count(tree: &TreeSnapshot, running: &mut usize, total: &mut usize) {
    for c in &tree.children {
        *total += 1;
        if matches!(c.state, ChildState::Running) {
            *running += 1;
        }
        if let Some(sub) = &c.subtree {
            count(sub, running, total);
        }
    }
}

fn render(tree: &TreeSnapshot, root: bool) -> Markup {
    html! {
        ul.tree.root[root] {
            @for c in &tree.children {
                li {
                    span.node {
                        strong { (c.id) }
                        span class=(format!("badge state-{}", state_name(c.state))) { (state_name(c.state)) }
                        span.muted { "restarts " (c.restarts) }
                        @if let Some(sub) = &c.subtree {
                            span.badge { "supervisor · " (sub.restarts) " restarts inside" }
                        }
                        @if let Some(exit) = &c.last_exit {
                            span.exit { "last exit: " (exit) }
                        }
                    }
                    @if let Some(sub) = &c.subtree {
                        (render(sub, false))
                    }
                }
            }
        }
    }
}

/// The tree page.
pub(crate) async fn tree(ctx: Ctx) -> Response {
    let r = async {
        let Some(sup) = &ctx.state.supervisor else {
            return Err(PageError::NotFound(
                "this console was built without a supervision tree".into(),
            ));
        };
        let snap = sup.snapshot().await.map_err(|e| {
            PageError::Unavailable(format!("the supervisor `{}` did not answer: {e}", sup.id()))
        })?;
        let (mut running, mut total) = (0, 0);
        count(&snap, &mut running, &mut total);
        Ok(ctx
            .page(
                "Supervision",
                html! {
                    h1 { "Supervision tree" }
                    div.cards {
                        div.card { div.n { (snap.id) } div.l { "root supervisor" } }
                        div.card { div.n { (running) " / " (total) } div.l { "children running" } }
                        div.card { div.n { (snap.restarts) } div.l { "restarts by the root" } }
                    }
                    (render(&snap, true))
                },
            )
            .into_response())
    }
    .await;
    ctx.answer(r)
}

/// The overview's summary of the tree.
pub(crate) async fn overview_section(ctx: &Ctx) -> Markup {
    let Some(sup) = &ctx.state.supervisor else {
        return html! {};
    };
    let snap = match sup.snapshot().await {
        Ok(snap) => snap,
        Err(e) => {
            return html! {
                h2 { "Supervision" }
                p.error-message { "the supervisor did not answer: " (e) }
            };
        }
    };
    let (mut running, mut total) = (0, 0);
    count(&snap, &mut running, &mut total);
    html! {
        h2 { a href=(ctx.link("/service/tree")) { "Supervision" } }
        div.cards {
            div.card { div.n { (snap.id) } div.l { "root supervisor" } }
            div.card { div.n { (running) " / " (total) } div.l { "children running" } }
            div.card { div.n { (snap.restarts) } div.l { "restarts" } }
        }
    }
}
