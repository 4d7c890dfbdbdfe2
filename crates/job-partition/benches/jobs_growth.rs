//! `jobs-growth`: Redis memory per waiting job and the processing rate of 2 worker
//! processes with 10,000, 100,000 and 1,000,000 jobs waiting. The code lives with
//! `jobs-throughput` (same no-op job, worker processes and Redis); see its `growth_main`.
#![allow(missing_docs)]

#[path = "jobs_throughput.rs"]
#[allow(dead_code)]
mod throughput;

fn main() {
    throughput::growth_main();
}
