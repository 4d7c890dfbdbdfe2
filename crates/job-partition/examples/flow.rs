//! Flows and batches: a parent job that runs once its children (in two other partitions)
//! have completed, reading their results; and a batch whose callback runs once the last of
//! its jobs has settled, with the counts.
//!
//! ```sh
//! redis-server &   # or WHARF_REDIS_URL=redis://host:6379
//! cargo run -p wharf-job-partition --example flow
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_job_partition::{
    Batch, CancellationToken, ChildFailure, Config, Flow, Job, JobContext, JobError, JobState,
    Jobs, Registry, Worker,
};

/// Counts the stock of one item in one warehouse (a child, in the warehouse's partition).
#[derive(Serialize, Deserialize)]
struct CountStock {
    item: String,
}

impl Job for CountStock {
    const NAME: &'static str = "count-stock";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let units = self.item.len() as u64 * 10;
        println!("{}: {} units of {}", ctx.partition(), units, self.item);
        ctx.set_result(&units)?;
        Ok(())
    }
}

/// Runs once every warehouse has counted (the parent).
#[derive(Serialize, Deserialize)]
struct Restock {
    item: String,
}

impl Job for Restock {
    const NAME: &'static str = "restock";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let kids = ctx.children::<u64>().await?;
        let total: u64 = kids.results.values().flatten().sum();
        println!(
            "restock {}: {total} units in {} warehouses ({} failed)",
            self.item,
            kids.results.len(),
            kids.failed.len()
        );
        Ok(())
    }
}

/// A batch's callback: reports the counts.
#[derive(Serialize, Deserialize)]
struct Report;

impl Job for Report {
    const NAME: &'static str = "report";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        if let Some(c) = ctx.batch().await? {
            println!(
                "batch settled: {} of {} succeeded, {} failed",
                c.succeeded, c.total, c.failed
            );
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Jobs::connect(Config::from_env()).await?;
    let item = "lamp".to_owned();
    // The parent in partition `shop`, its children in `eu` and `us`.
    let flow = Flow::new(&Restock { item: item.clone() })
        .child("eu", "stock", &CountStock { item: item.clone() })
        .child("us", "stock", &CountStock { item: item.clone() })
        .on_child_failure(ChildFailure::Report);
    let flow = jobs.enqueue_flow("shop", "restock", flow).await?;
    let batch = ["chair", "desk", "shelf"]
        .into_iter()
        .fold(Batch::new(), |b, item| {
            b.job("eu", "stock", &CountStock { item: item.into() })
        })
        .on_complete("reports", &Report);
    let batch = jobs.enqueue_batch("shop", batch).await?;

    let registry = Registry::new()
        .register::<CountStock>()
        .register::<Restock>()
        .register::<Report>();
    let worker = Worker::builder(jobs.clone(), registry)
        .queue("eu", "stock", 4)
        .queue("us", "stock", 4)
        .queue("shop", "restock", 1)
        .queue("shop", "reports", 1)
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let callback = batch.on_complete.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let parent = jobs.job("shop", &flow.parent).await?.map(|j| j.state);
        let report = jobs.job("shop", &callback).await?.map(|j| j.state);
        if parent == Some(JobState::Completed) && report == Some(JobState::Completed) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the flow did not finish within 30 s: is Redis reachable?".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    run.await??;
    Ok(())
}
