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

/// Waits until `counter` moves past its value now, or until `caught_up` says the stage has
/// nothing left to do (the load ended and it is through everything it was given, so there is
/// no progress left to see); answers the seconds it took and whether it was the latter.
pub(crate) async fn progress_after(
    counter: impl Fn() -> u64,
    caught_up: impl Fn() -> bool,
    limit: Duration,
) -> Option<(f64, bool)> {
    let base = counter();
    let since = Instant::now();
    while since.elapsed() < limit {
        if counter() > base {
            return Some((since.elapsed().as_secs_f64(), false));
        }
        if caught_up() {
            return Some((since.elapsed().as_secs_f64(), true));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The note of a fault report: `what` moved again, or the stage had nothing left to do.
fn recovery_note(recovered: Option<(f64, bool)>, what: &str) -> String {
    match recovered {
        Some((_, true)) => format!("{what}: nothing left to do, every order already through"),
        _ => what.to_owned(),
    }
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
    /// Whether the load has ended and every order it queued was produced or failed.
    fn load_over(&self) -> bool {
        let c = &self.app.counters;
        self.start.elapsed() >= self.duration
            && get(&c.produce_queued) <= get(&c.produced) + get(&c.produce_failed)
    }

    /// Whether the consumer is through every order produced, after the load ended.
    fn orders_through(&self) -> bool {
        let c = &self.app.counters;
        self.load_over() && get(&c.consumed) >= get(&c.produced)
    }

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
            // Any delivery counts (a redelivery too): the consumer reads Kafka again.
            let deliveries = || get(&c.consumed) + get(&c.redelivered);
            let recovered = progress_after(deliveries, || self.orders_through(), limit).await;
            self.report(FaultReport {
                what: "Kafka connection cut (fault proxy)".into(),
                at,
                outage: self.now() - at - recovered.map_or(0.0, |r| r.0),
                recovered: recovered.map(|r| r.0),
                note: match (down, up) {
                    (Ok(()), Ok(())) => recovery_note(recovered, "orders consumed again"),
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
            let audited = || self.load_over() && get(&c.audit_acks) >= get(&c.produced);
            let recovered = progress_after(|| get(&c.audit_acks), audited, limit).await;
            self.report(FaultReport {
                what: "Pulsar broker killed and restarted".into(),
                at,
                outage: down_for,
                recovered: recovered.map(|r| r.0),
                note: if ok {
                    recovery_note(recovered, "audit records acknowledged again")
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
                let deliveries = || get(&c.consumed) + get(&c.redelivered);
                let recovered = progress_after(deliveries, || self.orders_through(), limit).await;
                self.report(FaultReport {
                    what: "Kafka broker killed and restarted".into(),
                    at,
                    outage: down_for,
                    recovered: recovered.map(|r| r.0),
                    note: if ok {
                        recovery_note(recovered, "orders consumed again")
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
            let emitted = || self.load_over() && get(&c.events) >= get(&c.produced);
            let recovered = progress_after(|| get(&c.events), emitted, limit).await;
            self.report(FaultReport {
                what: "SQS unreachable (fault proxy)".into(),
                at,
                outage: outage.as_secs_f64(),
                recovered: recovered.map(|r| r.0),
                note: recovery_note(recovered, "webhook events confirmed again"),
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
        // Only progress counts here: the worker must be seen restarted and working.
        let recovered = progress_after(
            || u64::from(get(&c.worker_b_starts) > starts) * get(&c.jobs_done),
            || false,
            limit,
        )
        .await;
        self.report(FaultReport {
            what: "job worker worker-b killed".into(),
            at,
            outage: 0.0,
            recovered: recovered.map(|r| r.0),
            note: "restarted by its supervisor; aborted jobs ran again".into(),
        });
    }
}
