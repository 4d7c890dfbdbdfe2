//! The router: every page and action, behind the security guard.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;

use crate::error::PageError;
use crate::layout::Ctx;
use crate::state::State;

const CSS: &str = include_str!("../assets/console.css");

pub(crate) fn router(state: Arc<State>) -> Router {
    let r = Router::new()
        .route("/", get(overview))
        .route("/assets/console.css", get(css));
    #[cfg(feature = "jobs")]
    let r = crate::jobs::routes(r);
    #[cfg(feature = "supervision")]
    let r = r.route("/service/tree", get(crate::service::tree));
    let r = r.route("/service/clients", get(crate::clients::page));
    r.fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::security::guard,
        ))
        .with_state(state)
}

async fn css() -> Response {
    let mut r = CSS.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

async fn not_found(ctx: Ctx) -> Response {
    ctx.answer(Err(PageError::NotFound(
        "no such page in the console".into(),
    )))
}

async fn overview(ctx: Ctx) -> Response {
    #[cfg(feature = "jobs")]
    let jobs = crate::jobs::overview_section(&ctx).await;
    #[cfg(not(feature = "jobs"))]
    let jobs = html! {};
    #[cfg(feature = "supervision")]
    let tree = crate::service::overview_section(&ctx).await;
    #[cfg(not(feature = "supervision"))]
    let tree = html! {};
    ctx.page(
        "Overview",
        html! {
            h1 { "Overview" }
            (jobs)
            (tree)
        },
    )
    .into_response()
}
