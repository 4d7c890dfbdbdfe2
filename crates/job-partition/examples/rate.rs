//! Rate limits: at most 3 starts per second for each customer, however many workers run
//! (start it twice, in two terminals: the limit still holds across both).
//!
//! ```sh
//! redis-server &   # or WHARF_REDIS_URL=redis://host:6379
//! cargo run -p wharf-job-partition --example rate
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_job_partition::{
    CancellationToken, Config, Job, JobContext, JobError, Jobs, RateLimit, Registry, Worker,
};

#[derive(Serialize, Deserialize)]
struct CallApi {
    customer: String,
    n: u32,
}

impl Job for CallApi {
    const NAME: &'static str = "call-api";

    fn rate_group(&self) -> Option<String> {
        Some(self.customer.clone())
    }

    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Seconds within the minute: at most 3 calls per customer in any second.
        let at = now.as_secs_f64() % 60.0;
        println!("at {at:6.3} s: call {} for {}", self.n, self.customer);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Jobs::connect(Config::from_env()).await?;
    let limit = RateLimit::new(3, Duration::from_secs(1))?;
    jobs.set_rate_limit("example", "api", Some(limit)).await?;
    for n in 0..9 {
        for customer in ["acme", "globex"] {
            let job = CallApi {
                customer: customer.into(),
                n,
            };
            jobs.enqueue("example", "api", &job).await?;
        }
    }
    let c = jobs.counts("example", "api").await?;
    println!("queued {}, rate limit {:?}", c.queued, c.rate_limit);

    let worker = Worker::builder(jobs.clone(), Registry::new().register::<CallApi>())
        .queue("example", "api", 8)
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    // 9 calls per customer at 3 a second: about 3 seconds.
    loop {
        let c = jobs.counts("example", "api").await?;
        if c.queued + c.rate_limited + c.running == 0 {
            break;
        }
        println!("waiting for their window: {}", c.rate_limited);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    run.await??;
    jobs.set_rate_limit("example", "api", None).await?;
    Ok(())
}
