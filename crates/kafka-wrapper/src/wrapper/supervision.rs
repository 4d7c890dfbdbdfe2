//! The supervision loop: builds a generation of clients from the registered specs,
//! watches it (fatal errors, reachability, stalled consumers), tears it down and builds
//! the next one after a backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::consumer::{ConsumerInstance, PartitionLag, StallWatch};
use crate::error::{Error, Result};
use crate::health::{Health, HealthContext};
use crate::log_gate::gated_warn;
use crate::producer::{Producer, ProducerInstance};
use crate::reachability::Reachability;

use super::{Generation, Inner, Registry, WrapperState};

/// The name of the supervision loop's own warning budget (rebuilds).
const WRAPPER: &str = "kafka_wrapper";

impl Inner {
    /// Starts the supervision loop with a fresh generation, unless it is running. Used at
    /// start, and to run again after a shutdown or after it gave up (registrations kept).
    pub(super) fn spawn_run(self: &Arc<Self>) {
        let mut task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let token = CancellationToken::new();
        if let Ok(mut t) = self.shutdown.lock() {
            *t = token.clone();
        }
        self.build_generation(self.next_generation.fetch_add(1, Ordering::Relaxed));
        *task = Some(tokio::spawn(
            Inner::run(self.clone(), token).instrument(tracing::info_span!("kafka_wrapper")),
        ));
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn context(&self, health: &Arc<Health>, name: &str) -> HealthContext {
        HealthContext::new(health.clone(), self.gates.get(name))
    }

    /// Builds generation `number`: the admin client and every registered producer and
    /// consumer. A spec that fails to build is logged and skipped (it is retried at the
    /// next rebuild).
    pub(super) fn build_generation(&self, number: u64) {
        let health = Arc::new(Health::default());
        let mut reg = self.lock();
        match self
            .config
            .client_config(&[], &BTreeMap::new())
            .create_with_context(self.context(&health, "admin"))
        {
            Ok(a) => {
                self.admin.send_replace(Some(Arc::new(a)));
            }
            Err(e) => tracing::error!(error = %e, "could not build the admin client"),
        }
        let mut g = Generation {
            health,
            producers: HashMap::new(),
            consumers: HashMap::new(),
        };
        for (name, p) in &reg.producers {
            match ProducerInstance::build(
                &self.config,
                &p.shared.spec,
                self.context(&g.health, name),
            ) {
                Ok(i) => {
                    let i = Arc::new(i);
                    g.producers.insert(name.clone(), i.clone());
                    p.install(i);
                }
                Err(e) => tracing::error!(producer = %name, error = %e, "could not build producer"),
            }
        }
        for (name, c) in &reg.consumers {
            match ConsumerInstance::start(
                &self.config,
                c.shared.clone(),
                self.context(&g.health, name),
            ) {
                Ok(i) => {
                    g.consumers.insert(name.clone(), i);
                }
                Err(e) => tracing::error!(consumer = %name, error = %e, "could not start consumer"),
            }
        }
        reg.generation = Some(g);
        drop(reg);
        self.state.send_replace(WrapperState::Running(number));
        metrics::gauge!(crate::metrics::GENERATION).set(number as f64);
        tracing::info!(generation = number, "Kafka clients built");
    }

    /// Takes the current generation down: producers flush, consumers drain and commit.
    pub(super) async fn teardown(&self) {
        let g = {
            let mut reg = self.lock();
            for p in reg.producers.values() {
                p.shared.slot.send_replace(None);
            }
            for c in reg.consumers.values() {
                c.shared.control.send_replace(None);
            }
            reg.generation.take()
        };
        self.admin.send_replace(None);
        let Some(g) = g else { return };
        let grace = self.config.shutdown_grace;
        let consumers = g.consumers.into_values().map(ConsumerInstance::shutdown);
        let producers = g
            .producers
            .into_values()
            .map(|p| tokio::task::spawn_blocking(move || p.retire(grace)));
        futures::future::join_all(consumers).await;
        futures::future::join_all(producers).await;
    }

    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let mut attempt: u32 = 0;
        loop {
            let (failure, was_healthy) = self.monitor(&shutdown).await;
            let Some(failure) = failure else {
                self.teardown().await;
                self.stopped();
                return Ok(());
            };
            attempt = if was_healthy {
                1
            } else {
                attempt.saturating_add(1)
            };
            let gives_up = self.config.max_rebuilds.is_some_and(|max| attempt > max);
            if !gives_up {
                // Said as soon as it is decided: the teardown may take up to the grace and
                // a request timeout or two while Kafka does not answer.
                self.state
                    .send_replace(WrapperState::Rebuilding(failure.clone()));
            }
            self.teardown().await;
            let total = self.rebuilds.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!(crate::metrics::REBUILDS).increment(1);
            gated_warn!(self.gates.get(WRAPPER), "rebuilding Kafka clients", reason = %failure, attempt, total);
            if gives_up {
                self.stopped();
                tracing::error!(reason = %failure, attempts = attempt - 1, "giving up rebuilding Kafka clients");
                return Err(Error::RebuildsExhausted {
                    attempts: attempt - 1,
                    last_failure: failure,
                });
            }
            // `attempt` counts from 1; the backoff's attempts from 0.
            let delay = self.config.rebuild_backoff.delay(attempt.saturating_sub(1));
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.stopped();
                    return Ok(());
                }
                _ = tokio::time::sleep(delay) => {}
            }
            self.build_generation(self.next_generation.fetch_add(1, Ordering::Relaxed));
        }
    }

    /// The loop ends (shut down, or gave up): records purged by the last teardown have no
    /// client to go to, so their callbacks are told.
    pub(super) fn stopped(&self) {
        let producers: Vec<Producer> = self.lock().producers.values().cloned().collect();
        for p in producers {
            p.fail_pending();
        }
        self.state.send_replace(WrapperState::Stopped);
    }

    /// Watches the current generation until it fails (`Some(reason)`) or the wrapper shuts
    /// down (`None`). The flag says whether a broker answered during this generation.
    ///
    /// Reachability is judged on this loop's own clock (see [`Reachability`]): a metadata
    /// probe every `health_interval`, none overlapping, each waiting at most what is left of
    /// `unreachable_after`; the brokers are unreachable once no probe has succeeded for
    /// `unreachable_after`, counted from the start of the last one that did, whatever a
    /// probe still pending is doing. After each successful probe, the watermarks of every
    /// assigned partition are read (within one request timeout) for the stall check.
    pub(super) async fn monitor(&self, shutdown: &CancellationToken) -> (Option<String>, bool) {
        let Some(health) = self.lock().generation.as_ref().map(|g| g.health.clone()) else {
            return (Some("no generation".to_owned()), false);
        };
        let mut reach = Reachability::new(Instant::now(), self.config.unreachable_after);
        let mut probe: Option<JoinHandle<(Instant, Result<()>)>> = None;
        let mut marks: Option<JoinHandle<Highs>> = None;
        let mut next_probe = tokio::time::Instant::now();
        let mut next_flush = tokio::time::Instant::now();
        let mut stalls = StallWatch::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return (None, reach.ever_ok()),
                _ = health.wake.notified() => {}
                _ = tokio::time::sleep_until(reach.deadline().into()) => {}
                _ = tokio::time::sleep_until(next_probe), if probe.is_none() => {}
                _ = tokio::time::sleep_until(next_flush) => {}
                done = finished(&mut probe) => {
                    probe = None;
                    match done {
                        Ok((started, Ok(()))) => {
                            reach.succeeded(started);
                            if marks.is_none() {
                                marks = self.read_watermarks();
                            }
                        }
                        Ok((_, Err(e))) => {
                            tracing::debug!(error = %e, "broker probe failed");
                            reach.failed(e.to_string());
                        }
                        Err(e) => reach.failed(format!("the probe's task failed: {e}")),
                    }
                }
                done = finished(&mut marks) => {
                    marks = None;
                    if let Ok(highs) = done
                        && let Some(stalled) = self.check_consumers(&highs, &mut stalls)
                    {
                        return (Some(stalled), reach.ever_ok());
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= next_flush {
                self.gates.flush();
                next_flush = now + self.config.health_interval;
            }
            if let Some(f) = health.failure() {
                return (Some(f), reach.ever_ok());
            }
            if let Some(why) = reach.verdict(Instant::now()) {
                // A pending probe is abandoned: it ends by itself within what was left of
                // the budget when it began, which is now gone.
                return (Some(why), reach.ever_ok());
            }
            if probe.is_none() && now >= next_probe {
                probe = Some(self.probe_reachability(reach.deadline()));
                next_probe = now + self.config.health_interval;
            }
        }
    }

    /// Asks the brokers for metadata, waiting for the answer until `until` at the latest;
    /// the task answers when the request began and how it went.
    pub(super) fn probe_reachability(&self, until: Instant) -> JoinHandle<(Instant, Result<()>)> {
        let admin = self.admin.borrow().clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let Some(admin) = admin else {
                return (started, Err(Error::Stopped("admin".to_owned())));
            };
            let result = admin
                .inner()
                .fetch_metadata(None, until.saturating_duration_since(started))
                .map(|_| ())
                .map_err(|source| Error::Kafka {
                    what: "metadata".to_owned(),
                    source,
                });
            (started, result)
        })
    }

    /// Reads the watermarks of every partition assigned to a consumer, all within one request
    /// timeout; partitions whose watermarks could not be read are left out. `None` when there
    /// is no admin client.
    pub(super) fn read_watermarks(&self) -> Option<JoinHandle<Highs>> {
        let admin = self.admin.borrow().clone()?;
        let parts: Vec<(String, i32)> = {
            let reg = self.lock();
            let mut v: Vec<(String, i32)> = reg
                .consumers
                .values()
                .flat_map(|c| c.assignment())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let until = Instant::now() + self.config.request_timeout;
        Some(tokio::task::spawn_blocking(move || {
            let mut highs = HashMap::new();
            for (t, p) in parts {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if let Ok(marks) = admin.inner().fetch_watermarks(&t, p, left) {
                    highs.insert((t, p), marks);
                }
            }
            highs
        }))
    }

    /// Updates every consumer's lag; returns why a consumer is stalled, if one is (see
    /// [`StallWatch`]: a partition whose worker waits for messages the broker has, and none
    /// arrive for `stall_after`).
    pub(super) fn check_consumers(
        &self,
        highs: &HashMap<(String, i32), (i64, i64)>,
        stalls: &mut StallWatch,
    ) -> Option<String> {
        let reg = self.lock();
        let g = reg.generation.as_ref()?;
        let now = Instant::now();
        let mut stalled = None;
        stalls.retain(|name| g.consumers.contains_key(name));
        for (name, instance) in &g.consumers {
            let Some(handle) = reg.consumers.get(name) else {
                continue;
            };
            let views = instance.views(highs);
            let lag: Vec<PartitionLag> = views.iter().map(|v| v.lag()).collect();
            for l in &lag {
                metrics::gauge!(crate::metrics::CONSUMER_LAG, "consumer" => name.clone(), "topic" => l.topic.clone(), "partition" => l.partition.to_string())
                    .set(l.lag as f64);
            }
            if let Ok(mut s) = handle.shared.lag.lock() {
                *s = lag;
            }
            // Partitions the user paused are meant to receive nothing: not a stall.
            let all_paused = handle.shared.all_paused.load(Ordering::Acquire);
            let paused = handle
                .shared
                .user_paused
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default();
            let is_paused = |t: &str, p: i32| all_paused || paused.contains(&(t.to_owned(), p));
            let reason = stalls.check(name, &views, is_paused, now, self.config.stall_after);
            if stalled.is_none() {
                stalled = reason;
            }
        }
        stalled
    }
}

/// Low and high watermarks by (topic, partition).
type Highs = HashMap<(String, i32), (i64, i64)>;

/// The outcome of a task in `slot`, or never if there is none.
async fn finished<T>(
    slot: &mut Option<JoinHandle<T>>,
) -> std::result::Result<T, tokio::task::JoinError> {
    match slot {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}
