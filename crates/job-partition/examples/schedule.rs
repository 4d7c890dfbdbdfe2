//! Recurring jobs: a cron schedule in a time zone and an interval schedule, fired by the
//! scheduler inside a worker (start it twice, in two terminals: each tick still runs once).
//!
//! ```sh
//! redis-server &   # or WHARF_REDIS_URL=redis://host:6379
//! cargo run -p wharf-job-partition --example schedule
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_job_partition::{
    CancellationToken, Config, Job, JobContext, JobError, Jobs, Missed, Registry, Schedule, Worker,
};

#[derive(Serialize, Deserialize)]
struct Report {
    kind: String,
}

impl Job for Report {
    const NAME: &'static str = "report";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!("{} report (job {})", self.kind, ctx.id());
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Jobs::connect(Config::from_env()).await?;
    // Every 2 seconds, at whole seconds, Berlin time; a missed tick runs once.
    let cron = Schedule::cron_in("*/2 * * * * *", "Europe/Berlin")?.missed(Missed::RunOnce);
    // Every 3 seconds from now; ticks missed while no scheduler ran are dropped.
    let every = Schedule::every(Duration::from_secs(3))?.missed(Missed::Skip);
    let report = |kind: &str| Report { kind: kind.into() };
    jobs.schedule("example", "reports", "cron", &cron, &report("cron"))
        .await?;
    jobs.schedule("example", "reports", "every", &every, &report("interval"))
        .await?;
    for s in jobs.schedules("example").await? {
        println!("schedule {}: {} (fired {})", s.name, s.when, s.fired);
    }

    let worker = Worker::builder(jobs.clone(), Registry::new().register::<Report>())
        .queue("example", "reports", 4)
        .schedules("example")
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.cancel();
    run.await??;

    jobs.remove_schedule("example", "cron").await?;
    jobs.remove_schedule("example", "every").await?;
    Ok(())
}
