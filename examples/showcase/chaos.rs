//! `--chaos`: the faults injected during the load (Kafka cut, Kafka broker killed and
//! restarted, Pulsar broker restart, SQS unreachable, a job worker killed) and how long each
//! stage took to recover.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::{App, get, lock};

#[derive(Debug, Clone)]
pub(crate) struct FaultReport {
    pub(crate) what: String,
    pub(crate) at: f64,
    pub(crate) outage: f64,
    /// Seconds from the end of the outage until the affected stage made progress again.
    pub(crate) recovered: Option<f64>,
    pub(crate) note: String,
}

/// Waits until `counter` moves past its value now; answers the seconds it took.
pub(crate) async fn progress_after(counter: impl Fn() -> u64, limit: Duration) -> Option<f64> {
    let base = counter();
    let since = Instant::now();
    while since.elapsed() < limit {
        if counter() > base {
            return Some(since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

pub(crate) struct Chaos {
    pub(crate) start: Instant,
    pub(crate) duration: Duration,
    pub(crate) tansu: Option<Arc<wharf_testkit::Tansu>>,
    pub(crate) pulsar: Option<Arc<wharf_testkit::PulsarLite>>,
    pub(crate) moto: Option<Arc<wharf_testkit::Moto>>,
    pub(crate) kill_worker: Arc<tokio::sync::Notify>,
    pub(crate) app: Arc<App>,
    pub(crate) reports: Arc<Mutex<Vec<FaultReport>>>,
}

impl Chaos {
    async fn wait_until(&self, fraction: f64) {
        let at = self.start + self.duration.mul_f64(fraction);
        tokio::time::sleep_until(at.into()).await;
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn report(&self, r: FaultReport) {
        println!(
            "  chaos: {} at {:.1} s, outage {:.1} s, {}",
            r.what,
            r.at,
            r.outage,
            r.recovered.map_or("NOT recovered".to_owned(), |s| format!(
                "recovered {s:.2} s after"
            ))
        );
        lock(&self.reports).push(r);
    }

    pub(crate) async fn run(self) {
        let outage = self
            .duration
            .mul_f64(0.12)
            .clamp(Duration::from_secs(1), Duration::from_secs(4));
        let limit = Duration::from_secs(60);
        let c = &self.app.counters;

        // 1. Kafka: every connection through the proxy cut, new ones refused (once orders
        //    flow: the consumer group's first join takes a few seconds).
        self.wait_until(0.15).await;
        let flowing = Instant::now();
        while get(&c.consumed) == 0 && flowing.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(proxy) = self.tansu.as_ref().and_then(|t| t.proxy()) {
            let at = self.now();
            println!(
                "  chaos: cutting every Kafka connection for {:.1} s",
                outage.as_secs_f64()
            );
            let down = proxy.down();
            tokio::time::sleep(outage).await;
            let up = proxy.restore();
            let recovered = progress_after(|| get(&c.consumed), limit).await;
            self.report(FaultReport {
                what: "Kafka connection cut (fault proxy)".into(),
                at,
                outage: self.now() - at - recovered.unwrap_or(0.0),
                recovered,
                note: match (down, up) {
                    (Ok(()), Ok(())) => "orders consumed again".into(),
                    (down, up) => format!("the fault proxy failed: {down:?} / {up:?}"),
                },
            });
        } else {
            println!("  chaos: Kafka fault skipped (an external Kafka was given)");
        }

        // 2. Pulsar: the broker is killed (SIGKILL) and restarted on the same port.
        self.wait_until(0.35).await;
        if let Some(broker) = self.pulsar.clone() {
            let at = self.now();
            println!(
                "  chaos: killing the Pulsar broker, restarting it after {:.1} s",
                outage.as_secs_f64()
            );
            let restarted = tokio::task::spawn_blocking(move || {
                broker.kill()?;
                std::thread::sleep(outage);
                broker.restart()
            })
            .await;
            let ok = matches!(restarted, Ok(Ok(())));
            let down_for = self.now() - at;
            let recovered = progress_after(|| get(&c.audit_acks), limit).await;
            self.report(FaultReport {
                what: "Pulsar broker killed and restarted".into(),
                at,
                outage: down_for,
                recovered,
                note: if ok {
                    "audit records acknowledged again".into()
                } else {
                    format!("restart failed: {restarted:?}")
                },
            });
        } else {
            println!("  chaos: Pulsar fault skipped (an external Pulsar was given)");
        }

        // 3. Kafka again: the broker is killed (SIGKILL) and restarted on the same port, with
        //    its data (a durable Tansu: topics, records and committed offsets in S3).
        self.wait_until(0.45).await;
        match self.tansu.clone().filter(|t| t.is_durable()) {
            Some(broker) => {
                let at = self.now();
                println!(
                    "  chaos: killing the Kafka broker, restarting it after {:.1} s",
                    outage.as_secs_f64()
                );
                let restarted = tokio::task::spawn_blocking(move || {
                    broker.kill()?;
                    std::thread::sleep(outage);
                    broker.restart()
                })
                .await;
                let ok = matches!(restarted, Ok(Ok(())));
                let down_for = self.now() - at;
                let recovered = progress_after(|| get(&c.consumed), limit).await;
                self.report(FaultReport {
                    what: "Kafka broker killed and restarted".into(),
                    at,
                    outage: down_for,
                    recovered,
                    note: if ok {
                        "orders consumed again".into()
                    } else {
                        format!("restart failed: {restarted:?}")
                    },
                });
            }
            None => println!("  chaos: Kafka broker kill skipped (an external Kafka was given)"),
        }

        // 4. SQS: unreachable (connections cut and refused) for a while.
        self.wait_until(0.55).await;
        if let Some(proxy) = self.moto.as_ref().and_then(|m| m.proxy()) {
            let at = self.now();
            println!("  chaos: SQS unreachable for {:.1} s", outage.as_secs_f64());
            let _ = proxy.down();
            tokio::time::sleep(outage).await;
            let _ = proxy.restore();
            let recovered = progress_after(|| get(&c.events), limit).await;
            self.report(FaultReport {
                what: "SQS unreachable (fault proxy)".into(),
                at,
                outage: outage.as_secs_f64(),
                recovered,
                note: "webhook events confirmed again".into(),
            });
        } else {
            println!("  chaos: SQS fault skipped (an external SQS was given)");
        }

        // 5. A job worker dies: its running jobs are aborted, its supervisor restarts it.
        self.wait_until(0.75).await;
        let at = self.now();
        let starts = get(&c.worker_b_starts);
        println!("  chaos: killing job worker worker-b (running jobs aborted)");
        self.kill_worker.notify_one();
        let recovered = progress_after(
            || u64::from(get(&c.worker_b_starts) > starts) * get(&c.jobs_done),
            limit,
        )
        .await;
        self.report(FaultReport {
            what: "job worker worker-b killed".into(),
            at,
            outage: 0.0,
            recovered,
            note: "restarted by its supervisor; aborted jobs ran again".into(),
        });
    }
}
