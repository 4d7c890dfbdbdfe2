//! A job's context with wharf-job-partition: the application's state given to the worker
//! (no global static), progress reported from inside a job, a result, and a caller that
//! awaits the job's outcome by id (as another process would, with its own `Jobs`).
//!
//! Run it: `cargo run --example jobs_context --features job-partition`. It uses
//! `WHARF_REDIS_URL` when set, otherwise starts a `redis-server` of its own through
//! wharf-testkit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf::job_partition::{
    CancellationToken, Config, Job, JobContext, JobError, JobOutcome, Jobs, Registry, Worker,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PARTITION: &str = "acme";

/// What every job gets: in a real service, a database pool or an HTTP client.
struct App {
    price_cents: u64,
    invoices_written: AtomicU64,
}

/// Totals an order's lines, reporting progress, and returns the invoice as its result.
#[derive(Serialize, Deserialize)]
struct Invoice {
    order: u64,
    lines: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct InvoiceResult {
    order: u64,
    total_cents: u64,
}

impl Job<App> for Invoice {
    const NAME: &'static str = "invoice";

    async fn perform(self, ctx: JobContext<App>) -> Result<(), JobError> {
        let app = ctx.state();
        for line in 1..=self.lines {
            tokio::time::sleep(Duration::from_millis(50)).await; // the work of one line
            ctx.set_progress(&serde_json::json!({ "line": line, "of": self.lines }))
                .await?;
        }
        app.invoices_written.fetch_add(1, Ordering::Relaxed);
        ctx.set_result(&InvoiceResult {
            order: self.order,
            total_cents: self.lines * app.price_cents,
        })?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut _owned = None;
    let url = match std::env::var("WHARF_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let server = wharf_testkit::RedisServer::start()?;
            let url = server.url();
            _owned = Some(server);
            println!("started redis-server at {url}");
            url
        }
    };

    // The worker's side: the state is given once, with the registry.
    let jobs = Jobs::connect(Config::new(url.clone())).await?;
    let app = App {
        price_cents: 1250,
        invoices_written: AtomicU64::new(0),
    };
    let registry = Registry::with_state(app).register::<Invoice>();
    let stop = CancellationToken::new();
    let worker = Worker::builder(jobs.clone(), registry)
        .queue(PARTITION, "invoices", 4)
        .build()?;
    let running = tokio::spawn(worker.run(stop.clone()));

    // The caller's side: another handle, as in another process.
    let caller = Jobs::connect(Config::new(url)).await?;
    let id = caller
        .enqueue(PARTITION, "invoices", &Invoice { order: 7, lines: 6 })
        .await?
        .id()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(150)).await;
    if let Some(info) = caller.job(PARTITION, &id).await? {
        println!("job {id}: {:?}, progress {:?}", info.state, info.progress);
    }
    match caller
        .wait_for(PARTITION, &id, Duration::from_secs(10))
        .await?
    {
        outcome @ JobOutcome::Completed { .. } => {
            let invoice: Option<InvoiceResult> = outcome.result()?;
            println!("completed: {invoice:?}");
        }
        JobOutcome::Dead { error } => println!("failed for good: {error}"),
        JobOutcome::TimedOut => println!("not finished within 10 s"),
        other => println!("{other:?}"),
    }

    stop.cancel();
    running.await??;
    Ok(())
}
