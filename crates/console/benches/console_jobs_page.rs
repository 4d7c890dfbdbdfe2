//! The console's jobs pages with 1,000,000 jobs in Redis: server time of a queue's page, of
//! the first and the last page of its queued list, of a job's page and of a search (10,000
//! jobs looked at), measured through the router (`tower::ServiceExt::oneshot`, no socket),
//! against the bare Redis reads each page needs, made with the `redis` commands directly
//! through the same `Jobs` handle (`Jobs::raw`).
//!
//! `WHARF_BENCH_JOBS` sets how many jobs are seeded (default 1,000,000); `scripts/bench
//! console-jobs-page` runs it and writes target/wharf-bench/console-jobs-page.json.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use wharf_job_partition::{Config, Job, JobContext, JobError, Jobs, testing};
use wharf_testkit::bench::{Entry, median, write_report};

const ROUNDS: usize = 30;

#[derive(Serialize, Deserialize)]
struct Invoice {
    customer: u64,
    amount_cents: u64,
}

impl Job for Invoice {
    const NAME: &'static str = "invoice";
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

async fn page(app: &axum::Router, path: &str) -> f64 {
    let t = Instant::now();
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    ms
}

/// The bare reads of a list page: the ids, the count and the time, then every job's hash.
async fn raw_list(jobs: &Jobs, p: &str, offset: u64) -> f64 {
    let t = Instant::now();
    let key = format!("{{wharf:{p}}}:q:q:wait");
    let ids = jobs
        .raw(redis::cmd("ZRANGE").arg(&key).arg(offset).arg(offset + 49))
        .await
        .unwrap();
    let ids: Vec<String> = redis::from_redis_value(ids).unwrap();
    for id in ids {
        jobs.raw(redis::cmd("HGETALL").arg(format!("{{wharf:{p}}}:job:{id}")))
            .await
            .unwrap();
    }
    t.elapsed().as_secs_f64() * 1000.0
}

fn p95(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[(s.len() - 1) * 95 / 100]
}

fn main() {
    let n: u64 = std::env::var("WHARF_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let redis = wharf_testkit::RedisServer::start().expect("redis-server (run scripts/install)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let jobs = Jobs::connect(Config::new(redis.url()).response_timeout(Duration::from_secs(10)))
            .await
            .unwrap();
        let p = "bench";
        let t = Instant::now();
        let batch: Vec<Invoice> = (0..500)
            .map(|i| Invoice { customer: i, amount_cents: 1999 })
            .collect();
        let mut seeded = 0;
        while seeded < n {
            let take = (n - seeded).min(500) as usize;
            jobs.enqueue_bulk(p, "q", &batch[..take]).await.unwrap();
            seeded += take as u64;
        }
        // A few finished jobs, so the queue page's latency figures read real records.
        for (id, token) in testing::claim(&jobs, p, "q", 200, Duration::from_secs(60), "bench").await.unwrap() {
            testing::complete(&jobs, p, &id, &token).await.unwrap();
        }
        let left = n - 200;
        println!("seeded {n} jobs in {:.1} s", t.elapsed().as_secs_f64());
        let one = jobs.list(p, "q", wharf_job_partition::JobList::Queued, 0, 1).await.unwrap();
        let job_id = one.jobs[0].info.id.clone();

        let app = wharf_console::Console::builder().jobs(jobs.clone()).build();
        let last = left.saturating_sub(50);
        let cases: Vec<(&str, String, Option<u64>)> = vec![
            ("queue page", format!("/p/{p}/q/q"), None),
            ("queued list, first page (50)", format!("/p/{p}/q/q/list/queued"), Some(0)),
            ("queued list, last page (50)", format!("/p/{p}/q/q/list/queued?offset={last}"), Some(last)),
            ("job page", format!("/p/{p}/j/{job_id}"), None),
            ("search, 10,000 jobs looked at", format!("/p/{p}/q/q/list/queued?q=no-such-text"), None),
        ];
        let mut entries = Vec::new();
        println!("| page | median ms | p95 ms | bare Redis reads, median ms |");
        println!("|---|---|---|---|");
        for (label, path, raw_offset) in cases {
            page(&app, &path).await; // warm-up
            let mut ours = Vec::with_capacity(ROUNDS);
            let mut base = Vec::new();
            for _ in 0..ROUNDS {
                ours.push(page(&app, &path).await);
                if let Some(o) = raw_offset {
                    base.push(raw_list(&jobs, p, o).await);
                }
            }
            println!(
                "| {label} | {:.2} | {:.2} | {} |",
                median(&ours),
                p95(&ours),
                if base.is_empty() { "–".to_owned() } else { format!("{:.2}", median(&base)) }
            );
            entries.push(
                Entry {
                    name: "console-jobs-page".into(),
                    metric: format!("server time: {label}"),
                    unit: "ms".into(),
                    higher_is_better: false,
                    ours: median(&ours),
                    baseline: median(&base),
                    baseline_label: "the same Redis reads, one command at a time, without rendering".into(),
                    params: serde_json::json!({ "jobs": n, "rounds": ROUNDS, "p95_ms": p95(&ours) }),
                }
                .to_json(),
            );
        }
        if let Some(path) = write_report(&entries).unwrap() {
            println!("wrote {}", path.display());
        }
    });
}
