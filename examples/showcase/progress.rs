//! The live progress lines, once a second while the load runs and while the last tickets
//! drain.

use std::time::{Duration, Instant};

use crate::app::{App, get, lock};
use crate::readback::SqsReaders;

/// Prints a progress line with the rates since the previous one.
pub(crate) struct Progress<'a> {
    app: &'a App,
    sqs: &'a SqsReaders,
    load_start: Instant,
    quiet: bool,
    /// Orders in and jobs done at the previous line, and when it was printed.
    last: (u64, u64, Instant),
}

impl<'a> Progress<'a> {
    pub(crate) fn new(app: &'a App, sqs: &'a SqsReaders, load_start: Instant, quiet: bool) -> Self {
        Self {
            app,
            sqs,
            load_start,
            quiet,
            last: (0, 0, Instant::now()),
        }
    }

    pub(crate) fn print(&mut self, label: &str) {
        let c = &self.app.counters;
        let last = self.last;
        let (orders, jobs_done) = (get(&c.produced), get(&c.jobs_done));
        let dt = last.2.elapsed().as_secs_f64().max(0.001);
        if !self.quiet {
            println!(
                "[{:>5.1}s] {label:<5} orders in {:>6} ({:>4.0}/s) | consumed {:>6} | jobs done {:>6} ({:>4.0}/s) | events {:>6} | audit acks {:>6} | SQS read {:>6}",
                self.load_start.elapsed().as_secs_f64(),
                orders,
                (orders - last.0) as f64 / dt,
                get(&c.consumed),
                jobs_done,
                (jobs_done - last.1) as f64 / dt,
                get(&c.events),
                get(&c.audit_acks),
                self.sqs.orders_seen(),
            );
        }
        self.last = (orders, jobs_done, Instant::now());
    }

    /// A line a second until the load has run for `duration`.
    pub(crate) async fn during_load(&mut self, duration: Duration) {
        while self.load_start.elapsed() < duration {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.print("load");
        }
    }

    /// Waits until every produced order has its ticket, at most `limit`, with a line a
    /// second; answers how long it took.
    pub(crate) async fn drain(&mut self, limit: Duration) -> Duration {
        let c = &self.app.counters;
        let drain_start = Instant::now();
        let mut tick = Instant::now();
        loop {
            let queued = get(&c.produce_queued);
            let settled = get(&c.produced) + get(&c.produce_failed);
            let all_done = settled >= queued && {
                let produced = lock(&self.app.produced);
                let tickets = lock(&self.app.tickets);
                produced
                    .iter()
                    .all(|o| tickets.get(o).is_some_and(|t| t.issued > 0))
            };
            if all_done || drain_start.elapsed() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tick.elapsed() >= Duration::from_secs(1) {
                self.print("drain");
                tick = Instant::now();
            }
        }
        self.print("done");
        drain_start.elapsed()
    }
}
