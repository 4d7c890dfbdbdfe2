//! Trace context through Redis (feature `otel`): a job enqueued inside a span runs in a
//! child span of the same trace; a job whose stored context is missing, malformed or
//! oversized runs all the same, its span under the worker's queue span as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SpanData;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wharf_job_partition::{Job, JobContext, JobError, JobState, Jobs, Registry, Worker};
use wharf_testkit::eventually_some;
use wharf_testkit::trace::recorder;

/// Opens one span of its own, `inside_job`; what matters is where its spans sit.
#[derive(Serialize, Deserialize, Debug)]
struct Noop;

impl Job for Noop {
    const NAME: &'static str = "noop";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        // What the job's code does (an HTTP call, a produce) runs in the run's span.
        tracing::info_span!("inside_job", id = %ctx.id()).in_scope(|| ());
        Ok(())
    }
}

fn worker(jobs: &Jobs, p: &str) -> wharf_job_partition::WorkerHandle {
    Worker::builder(jobs.clone(), Registry::new().register::<Noop>())
        .queue(p, "q", 2)
        .build()
        .unwrap()
        .start()
}

/// The finished `wharf_job` span of job `id`, once it has been exported.
async fn job_span(id: &str) -> SpanData {
    span_named("wharf_job", id).await
}

/// The finished span `name` with attribute `id` = `id`, once it has been exported.
async fn span_named(name: &str, id: &str) -> SpanData {
    eventually_some(
        &format!("the {name} span of {id}"),
        Duration::from_secs(20),
        || async {
            recorder().spans().into_iter().find(|s| {
                s.name == name
                    && s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "id" && kv.value.as_str() == id)
            })
        },
    )
    .await
    .unwrap()
}

async fn stored_trace(jobs: &Jobs, p: &str, id: &str) -> Option<String> {
    cmd(
        jobs,
        redis::cmd("HGET")
            .arg(format!("{{wharf:{p}}}:job:{id}"))
            .arg("trace"),
    )
    .await
}

async fn completed(jobs: &Jobs, p: &str, id: &str) -> bool {
    jobs.job(p, id).await.unwrap().map(|j| j.state) == Some(JobState::Completed)
}

#[tokio::test]
async fn a_job_enqueued_inside_a_span_runs_in_a_child_span_of_the_same_trace() {
    recorder();
    let jobs = jobs().await;
    let p = partition("trace-child");
    let span = tracing::info_span!("place_order");
    let sc = span.context().span().span_context().clone();
    let id = jobs
        .enqueue(&p, "q", &Noop)
        .instrument(span.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    drop(span);
    let stored = stored_trace(&jobs, &p, &id).await.unwrap();
    assert!(
        stored.starts_with(&format!("00-{}-{}-", sc.trace_id(), sc.span_id())),
        "{stored}"
    );

    let w = worker(&jobs, &p);
    let run = job_span(&id).await;
    w.shutdown().await;
    assert_eq!(run.span_context.trace_id(), sc.trace_id());
    assert_eq!(run.parent_span_id, sc.span_id());
    assert!(run.parent_span_is_remote);
    // The job's own code runs inside the run's span (its task carries it), so what it sends
    // on continues the same trace.
    let inside = span_named("inside_job", &id).await;
    assert_eq!(inside.span_context.trace_id(), sc.trace_id());
    assert_eq!(inside.parent_span_id, run.span_context.span_id());
}

#[tokio::test]
async fn a_job_enqueued_outside_any_span_stores_nothing_and_runs_as_before() {
    recorder();
    let jobs = jobs().await;
    let p = partition("trace-none");
    let id = jobs.enqueue(&p, "q", &Noop).await.unwrap().id().to_owned();
    assert_eq!(stored_trace(&jobs, &p, &id).await, None);

    let w = worker(&jobs, &p);
    let run = job_span(&id).await;
    w.shutdown().await;
    assert!(completed(&jobs, &p, &id).await);
    assert!(
        !run.parent_span_is_remote,
        "without a stored context the job's span stays under the worker's queue span"
    );
}

/// Enqueues a job outside any span, overwrites its stored context with `stored`, and runs
/// it: it must complete, with no remote parent, and a debug event must name the problem.
async fn runs_despite(tag: &str, stored: &str, problem: &str) {
    recorder();
    let jobs = jobs().await;
    let p = partition(tag);
    let id = jobs.enqueue(&p, "q", &Noop).await.unwrap().id().to_owned();
    let _: i64 = cmd(
        &jobs,
        redis::cmd("HSET")
            .arg(format!("{{wharf:{p}}}:job:{id}"))
            .arg("trace")
            .arg(stored),
    )
    .await;

    let w = worker(&jobs, &p);
    let run = job_span(&id).await;
    w.shutdown().await;
    assert!(completed(&jobs, &p, &id).await, "the job must still run");
    assert!(!run.parent_span_is_remote);
    let marker: String = stored.chars().take_while(|c| *c != ' ').take(20).collect();
    let events = recorder().events();
    assert!(
        events.iter().any(|e| e.level == tracing::Level::DEBUG
            && e.target == "wharf_core::trace"
            && e.fields.contains(problem)
            && e.fields.contains(&marker)),
        "no debug event about {marker}: {events:?}"
    );
}

#[tokio::test]
async fn a_malformed_stored_context_is_ignored_with_a_debug_event() {
    let marker = format!("garbage{:08x}", rand::random::<u32>());
    runs_despite("trace-bad", &format!("{marker} vendor=x"), "malformed").await;
}

#[tokio::test]
async fn an_oversized_stored_context_is_ignored_with_a_debug_event() {
    let marker = format!("huge{:08x}", rand::random::<u32>());
    runs_despite(
        "trace-huge",
        &format!("{marker}{}", "a".repeat(10_000)),
        "too long",
    )
    .await;
}
