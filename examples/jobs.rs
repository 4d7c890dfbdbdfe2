//! Background jobs on Redis with wharf-job-partition, worked by a supervised worker.
//!
//! ```text
//! app (one_for_one)
//! └── worker   claims jobs of partition "acme" under leases, heartbeats, reaps crashed leases
//! ```
//!
//! The program sets a global limit of 2 running reports (across every worker process),
//! enqueues reports for three customers (one customer's reports never run at once: an
//! execution key), shows a queue key answering Duplicate, a flaky job retried with backoff,
//! a scheduled job, and a long job cancelled while it runs. Then it prints the counts.
//!
//! Run it: `cargo run --example jobs --features job-partition`. It uses `WHARF_REDIS_URL`
//! when set, otherwise starts a `redis-server` of its own through wharf-testkit.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wharf::core::supervisor::Supervisor;
use wharf::job_partition::{
    Config, Enqueued, Job, JobContext, JobError, JobState, Jobs, Registry, Worker,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PARTITION: &str = "acme";

/// Renders a report; one at a time per customer, anywhere.
#[derive(Serialize, Deserialize)]
struct Report {
    customer: String,
    month: u32,
}

impl Job for Report {
    const NAME: &'static str = "report";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!(
            "  report {} for {} (attempt {})",
            self.month,
            self.customer,
            ctx.attempt()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    fn execution_key(&self) -> Option<String> {
        Some(format!("customer:{}", self.customer))
    }

    fn queue_key(&self) -> Option<String> {
        Some(format!("report:{}:{}", self.customer, self.month))
    }
}

/// Fails on its first attempt, succeeds on the second.
#[derive(Serialize, Deserialize)]
struct Flaky;

impl Job for Flaky {
    const NAME: &'static str = "flaky";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            return Err("the mail server said 421, try later".into());
        }
        println!("  flaky job succeeded on attempt {}", ctx.attempt());
        Ok(())
    }

    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::from_millis(300)
    }
}

/// Would run for a minute; cancelled while it runs.
#[derive(Serialize, Deserialize)]
struct Export;

impl Job for Export {
    const NAME: &'static str = "export";

    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Where Redis is: the environment's, or one started here.
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

    let jobs = Jobs::connect(Config::new(url)).await?;
    jobs.purge(PARTITION, "reports").await?;
    jobs.set_limit(PARTITION, "reports", Some(2)).await?;

    let registry = Registry::new()
        .register::<Report>()
        .register::<Flaky>()
        .register::<Export>();
    let worker = Worker::builder(jobs.clone(), registry)
        .queue(PARTITION, "reports", 8)
        .queue(PARTITION, "mail", 4)
        .queue(PARTITION, "exports", 1)
        .build()?;
    let app = Supervisor::builder("app")
        .child(worker.child_spec("worker"))
        .start()
        .await?;

    let before_reports = jobs.counts(PARTITION, "reports").await?.completed_total;
    let before_mail = jobs.counts(PARTITION, "mail").await?.completed_total;
    println!("enqueueing 9 reports for 3 customers (at most 2 run at once, one per customer)");
    let reports: Vec<Report> = ["ada", "bob", "cyd"]
        .into_iter()
        .flat_map(|c| {
            (1..=3).map(move |m| Report {
                customer: c.into(),
                month: m,
            })
        })
        .collect();
    jobs.enqueue_bulk(PARTITION, "reports", &reports).await?;
    let again = jobs
        .enqueue(
            PARTITION,
            "reports",
            &Report {
                customer: "ada".into(),
                month: 1,
            },
        )
        .await?;
    if let Enqueued::Duplicate(holder) = &again {
        println!("the same report again: Duplicate of job {holder}");
    }
    jobs.enqueue(PARTITION, "mail", &Flaky).await?;
    jobs.enqueue_in(PARTITION, "mail", &Flaky, Duration::from_millis(500))
        .await?;

    let export = jobs.enqueue(PARTITION, "exports", &Export).await?;
    wait_for(&jobs, export.id(), JobState::Running).await?;
    let asked = Instant::now();
    println!(
        "cancelling the running export: {:?}",
        jobs.cancel(PARTITION, export.id()).await?
    );
    wait_for(&jobs, export.id(), JobState::Cancelled).await?;
    println!("export cancelled after {:?}", asked.elapsed());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = jobs.counts(PARTITION, "reports").await?;
        let m = jobs.counts(PARTITION, "mail").await?;
        if r.completed_total >= before_reports + 9 && m.completed_total >= before_mail + 2 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("jobs did not finish in time: reports {r:?}, mail {m:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for queue in jobs.queues(PARTITION).await? {
        let c = jobs.counts(PARTITION, &queue).await?;
        println!(
            "{queue:<8} completed {:>2}  retried {}  cancelled {}  dead {}  limit {:?}",
            c.completed_total, c.retried_total, c.cancelled_total, c.dead_total, c.limit
        );
    }
    app.shutdown().await?;
    Ok(())
}

async fn wait_for(jobs: &Jobs, id: &str, state: JobState) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs.job(PARTITION, id).await?.map(|j| j.state) != Some(state) {
        if Instant::now() > deadline {
            return Err(format!("job {id} did not reach {state:?} in time").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
