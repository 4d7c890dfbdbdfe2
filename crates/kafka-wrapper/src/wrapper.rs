//! `KafkaWrapper`: one client configuration, a registry of producer and consumer specs, and
//! a supervision loop that rebuilds all of them when the client fails.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::admin::{Admin, AdminSlot};
use crate::config::KafkaConfig;
use crate::consumer::{ConsumerHandle, ConsumerInstance, ConsumerSpec, PartitionLag, StallWatch};
use crate::error::{Error, Result};
use crate::health::{Health, HealthContext};
use crate::log_gate::{LogGates, gated_warn};
use crate::producer::{Producer, ProducerInstance, ProducerSpec};
use crate::reachability::Reachability;

/// Where the wrapper is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrapperState {
    /// Generation `n` of the clients is running (0 is the first).
    Running(u64),
    /// The clients failed for this reason and are being rebuilt: set as soon as the failure
    /// is judged, then the generation is torn down (producers flush, consumers drain and
    /// commit, within their bounds) and the next one is built after a backoff.
    Rebuilding(String),
    /// Shut down, or gave up after `max_rebuilds`.
    Stopped,
}

struct Generation {
    health: Arc<Health>,
    producers: HashMap<String, Arc<ProducerInstance>>,
    consumers: HashMap<String, ConsumerInstance>,
}

#[derive(Default)]
struct Registry {
    producers: BTreeMap<String, Producer>,
    consumers: BTreeMap<String, ConsumerHandle>,
    generation: Option<Generation>,
}

struct Inner {
    config: KafkaConfig,
    registry: Mutex<Registry>,
    admin: Arc<AdminSlot>,
    state: watch::Sender<WrapperState>,
    /// Cancelled to stop the current run of the supervision loop.
    shutdown: Mutex<CancellationToken>,
    next_generation: AtomicU64,
    rebuilds: AtomicU64,
    task: Mutex<Option<JoinHandle<Result<()>>>>,
    /// Consumers being removed that are still draining, by name, with their group: a
    /// consumer registered under the same name, or in the same group, starts once they left
    /// the group. A join that overlaps a member's leave is an extra rebalance at best, and
    /// Tansu never completes it (reproduced in tests/readd.rs).
    retiring: Mutex<HashMap<String, Retiring>>,
    /// Every client's warning budget, by name, across generations.
    gates: LogGates,
}

/// The name of the supervision loop's own warning budget (rebuilds).
const WRAPPER: &str = "kafka_wrapper";

/// A consumer on its way out: its group, and whether it is gone.
struct Retiring {
    group: Option<String>,
    done: watch::Receiver<bool>,
}

/// Supervised Kafka producers and consumers that rebuild themselves.
///
/// Start it once with the client configuration, then register producers and consumers at
/// any time. When the client fails (a fatal librdkafka error, no broker reachable for
/// [`unreachable_after`](KafkaConfig::unreachable_after), a consumer that receives nothing
/// while the broker holds messages for it, for [`stall_after`](KafkaConfig::stall_after))
/// the wrapper tears everything
/// down (flushing producers, draining and committing consumers) and rebuilds every
/// registered producer and consumer from its spec, with exponential backoff, without limit
/// unless [`max_rebuilds`](KafkaConfig::max_rebuilds) is set. It starts even when Kafka is
/// down. Handles ([`Producer`], [`ConsumerHandle`], [`Admin`]) stay valid across rebuilds.
#[derive(Clone)]
pub struct KafkaWrapper {
    inner: Arc<Inner>,
}

impl fmt::Debug for KafkaWrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaWrapper")
            .field("config", &self.inner.config)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl KafkaWrapper {
    /// Starts the wrapper: checks the configuration (an invalid librdkafka property is an
    /// [`Error::Config`], wrapper settings that contradict each other an [`Error::Setting`])
    /// and starts the first generation of clients. Kafka being down is not an error.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        // Validate now, so a typo fails here rather than in every rebuild.
        let probe = HealthContext::new(
            Arc::new(Health::default()),
            Arc::new(crate::log_gate::LogGate::new(
                "config-check",
                crate::log_gate::WINDOW,
            )),
        );
        let _: AdminClient<HealthContext> = config
            .client_config(&[], &BTreeMap::new())
            .create_with_context(probe)
            .map_err(Error::Config)?;
        let (admin, _) = watch::channel(None);
        let (state, _) = watch::channel(WrapperState::Running(0));
        let inner = Arc::new(Inner {
            config,
            registry: Mutex::new(Registry::default()),
            admin: Arc::new(admin),
            state,
            shutdown: Mutex::new(CancellationToken::new()),
            next_generation: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
            task: Mutex::new(None),
            retiring: Mutex::new(HashMap::new()),
            gates: LogGates::default(),
        });
        inner.spawn_run();
        Ok(Self { inner })
    }

    /// The configuration the wrapper was started with.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// Registers a producer and starts it in the current generation.
    pub fn add_producer(&self, spec: ProducerSpec) -> Result<Producer> {
        let mut reg = self.inner.lock();
        if reg.producers.contains_key(&spec.name) || reg.consumers.contains_key(&spec.name) {
            return Err(Error::Duplicate(spec.name));
        }
        let producer = Producer::new(spec);
        if let Some(g) = reg.generation.as_mut() {
            let instance = Arc::new(ProducerInstance::build(
                &self.inner.config,
                &producer.shared.spec,
                self.inner.context(&g.health, &producer.shared.spec.name),
            )?);
            g.producers
                .insert(producer.name().to_owned(), instance.clone());
            producer.install(instance);
        }
        reg.producers
            .insert(producer.name().to_owned(), producer.clone());
        Ok(producer)
    }

    /// Unregisters a producer: queued messages get up to the shutdown grace to be delivered,
    /// then fail; later sends fail with [`Error::Stopped`].
    pub async fn remove_producer(&self, name: &str) -> Result<()> {
        let (producer, instance) = {
            let mut reg = self.inner.lock();
            let p = reg
                .producers
                .remove(name)
                .ok_or_else(|| Error::Stopped(name.to_owned()))?;
            let i = reg
                .generation
                .as_mut()
                .and_then(|g| g.producers.remove(name));
            (p, i)
        };
        producer.shared.stopped.store(true, Ordering::Release);
        producer.shared.slot.send_replace(None);
        if let Some(i) = instance {
            let grace = self.inner.config.shutdown_grace;
            let _ = tokio::task::spawn_blocking(move || i.retire(grace)).await;
        }
        producer.fail_pending();
        Ok(())
    }

    /// Registers a consumer and starts it in the current generation.
    ///
    /// A consumer that another one under the same name, or in the same group, is leaving
    /// (a dropped [`KafkaSource`](crate::KafkaSource), a `remove_consumer` under way)
    /// starts once that one left the group, waiting at most twice the shutdown grace.
    pub fn add_consumer(&self, spec: ConsumerSpec) -> Result<ConsumerHandle> {
        let group = spec.group_id().map(str::to_owned);
        let related = |name: &str, other: Option<&str>| {
            name == spec.name || (group.is_some() && other == group.as_deref())
        };
        // Released sources under this name or of this group are retired first, so that
        // the new consumer waits for them below.
        let released: Vec<String> = self
            .inner
            .lock()
            .consumers
            .iter()
            .filter(|(n, h)| {
                h.shared.released.load(Ordering::Acquire) && related(n, h.shared.spec.group_id())
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in released {
            self.retire_consumer(&name);
        }
        let mut reg = self.inner.lock();
        if reg.producers.contains_key(&spec.name) || reg.consumers.contains_key(&spec.name) {
            return Err(Error::Duplicate(spec.name));
        }
        let waits: Vec<watch::Receiver<bool>> = match self.inner.retiring.lock() {
            Ok(mut r) => {
                // An entry whose remover went away (its future dropped) is stale.
                r.retain(|_, e| e.done.has_changed().is_ok());
                r.iter()
                    .filter(|(n, e)| related(n, e.group.as_deref()))
                    .map(|(_, e)| e.done.clone())
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let handle = ConsumerHandle::new(spec);
        let runtime = tokio::runtime::Handle::try_current().ok();
        if let (false, Some(rt)) = (waits.is_empty(), runtime) {
            // Start once the predecessors are gone (bounded by twice the grace).
            let (w, h) = (self.clone(), handle.clone());
            let wait = self.inner.config.shutdown_grace * 2;
            rt.spawn(async move {
                let all = futures::future::join_all(
                    waits.into_iter().map(|mut d| async move {
                        let _ = d.wait_for(|gone| *gone).await;
                    }),
                );
                if tokio::time::timeout(wait, all).await.is_err() {
                    tracing::warn!(consumer = %h.name(), "a consumer of the same name or group is still leaving after twice the shutdown grace; starting anyway");
                }
                w.start_registered(&h);
            });
        } else if let Some(g) = reg.generation.as_mut() {
            let instance = ConsumerInstance::start(
                &self.inner.config,
                handle.shared.clone(),
                self.inner.context(&g.health, handle.name()),
            )?;
            g.consumers.insert(handle.name().to_owned(), instance);
        }
        reg.consumers
            .insert(handle.name().to_owned(), handle.clone());
        Ok(handle)
    }

    /// Starts `handle`'s consumer in the current generation if it is still registered and
    /// not running.
    fn start_registered(&self, handle: &ConsumerHandle) {
        let mut reg = self.inner.lock();
        let registered = reg
            .consumers
            .get(handle.name())
            .is_some_and(|h| Arc::ptr_eq(&h.shared, &handle.shared));
        let Some(g) = reg.generation.as_mut() else {
            return;
        };
        if !registered || g.consumers.contains_key(handle.name()) {
            return;
        }
        match ConsumerInstance::start(
            &self.inner.config,
            handle.shared.clone(),
            self.inner.context(&g.health, handle.name()),
        ) {
            Ok(i) => {
                g.consumers.insert(handle.name().to_owned(), i);
            }
            Err(e) => {
                tracing::error!(consumer = %handle.name(), error = %e, "could not start consumer")
            }
        }
    }

    /// Removes a consumer without waiting for it to drain (for `Drop`): its name is free at
    /// once, and it shuts down in the background.
    pub(crate) fn retire_consumer(&self, name: &str) {
        self.retire_consumer_if(name, None);
    }

    /// [`retire_consumer`](Self::retire_consumer), but only if `name` is still registered to
    /// `expected` (not to a newer registration under the same name).
    pub(crate) fn retire_consumer_if(
        &self,
        name: &str,
        expected: Option<&Arc<crate::consumer::ConsumerShared>>,
    ) {
        let Ok(Some((instance, leaving))) = self.detach_consumer(name, expected) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // dropping the instance tells its thread to stop and clean up
        };
        rt.spawn(async move {
            instance.shutdown().await;
            drop(leaving);
        });
    }

    /// Unregisters a consumer: it stops fetching, finishes in-flight messages (up to the
    /// shutdown grace), commits, and leaves its group.
    pub async fn remove_consumer(&self, name: &str) -> Result<()> {
        if let Some((instance, _leaving)) = self.detach_consumer(name, None)? {
            instance.shutdown().await;
        }
        Ok(())
    }

    /// Takes a consumer out of the registry (its name is free again) and returns its running
    /// instance, for the caller to shut down, with the guard that records it as leaving its
    /// group until then. With `expected`, only if `name` is still registered to it.
    ///
    /// The check, the removal and the record are one critical section (the registry's
    /// lock, the order `add_consumer` takes the locks in): a consumer added at the same time
    /// sees the old one either registered (and retires it itself) or leaving (and waits for
    /// it), never neither. With a gap between them, a dropped source's clean-up could remove
    /// the registration that replaced it (which then never started), or a new member could
    /// join while the old one was leaving (a join Tansu never completes).
    fn detach_consumer(
        &self,
        name: &str,
        expected: Option<&Arc<crate::consumer::ConsumerShared>>,
    ) -> Result<Option<(ConsumerInstance, Leaving)>> {
        let mut reg = self.inner.lock();
        let h = reg
            .consumers
            .get(name)
            .ok_or_else(|| Error::Stopped(name.to_owned()))?;
        if expected.is_some_and(|e| !Arc::ptr_eq(&h.shared, e)) {
            return Ok(None);
        }
        if let Some(h) = reg.consumers.remove(name) {
            h.shared.control.send_replace(None);
        }
        let instance = reg
            .generation
            .as_mut()
            .and_then(|g| g.consumers.remove(name));
        Ok(instance.map(|i| {
            let leaving = self.leaving(name, i.group_id());
            (i, leaving)
        }))
    }

    /// Records that consumer `name` of `group` is leaving, until the returned guard drops.
    /// Called with the registry locked (see [`detach_consumer`](Self::detach_consumer)).
    fn leaving(&self, name: &str, group: Option<String>) -> Leaving {
        let (tx, done) = watch::channel(false);
        if let Ok(mut r) = self.inner.retiring.lock() {
            r.insert(name.to_owned(), Retiring { group, done });
        }
        Leaving {
            inner: self.inner.clone(),
            name: name.to_owned(),
            tx,
        }
    }

    /// The handle of a registered producer.
    pub fn producer(&self, name: &str) -> Option<Producer> {
        self.inner.lock().producers.get(name).cloned()
    }

    /// The handle of a registered consumer.
    pub fn consumer(&self, name: &str) -> Option<ConsumerHandle> {
        self.inner.lock().consumers.get(name).cloned()
    }

    /// Topic administration through the wrapper's client.
    pub fn admin(&self) -> Admin {
        Admin {
            slot: self.inner.admin.clone(),
            config: self.inner.config.clone(),
        }
    }

    /// How many times the clients were rebuilt.
    pub fn rebuilds(&self) -> u64 {
        self.inner.rebuilds.load(Ordering::Relaxed)
    }

    /// The current state; [`watch_state`](Self::watch_state) to follow changes.
    pub fn state(&self) -> WrapperState {
        self.inner.state.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch_state(&self) -> watch::Receiver<WrapperState> {
        self.inner.state.subscribe()
    }

    /// Rebuilds every client now, as if it had failed (for operators and tests).
    pub fn force_rebuild(&self, reason: &str) {
        if let Some(g) = self.inner.lock().generation.as_ref() {
            g.health.fail(format!("forced: {reason}"));
        }
    }

    /// Stops everything: producers flush, consumers drain and commit (each up to the
    /// shutdown grace). Returns the supervision loop's result ([`Error::RebuildsExhausted`]
    /// if it had given up).
    pub async fn shutdown(&self) -> Result<()> {
        if let Ok(t) = self.inner.shutdown.lock() {
            t.cancel();
        }
        self.join().await
    }

    /// This wrapper as a child of a wharf-core supervisor.
    ///
    /// Starting the child starts the supervision loop if it is not running (after a
    /// shutdown, or after it gave up with [`Error::RebuildsExhausted`]), keeping every
    /// registration and handle. The child runs until the loop gives up (an `Err` exit, so
    /// the parent's restart policy and intensity apply) or until the parent stops it, which
    /// shuts the wrapper down gracefully: give the child a
    /// [`Shutdown::Timeout`](wharf_core::supervisor::Shutdown) above the shutdown grace.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use wharf_core::supervisor::{Shutdown, Supervisor};
    /// use wharf_kafka_wrapper::{KafkaConfig, KafkaWrapper};
    ///
    /// let kafka = KafkaWrapper::start(KafkaConfig::from_env()).await?;
    /// let tree = Supervisor::builder("app")
    ///     .child(kafka.child_spec("kafka").shutdown(Shutdown::Timeout(Duration::from_secs(15))))
    ///     .start()
    ///     .await?;
    /// # tree.shutdown().await?; Ok(()) }
    /// ```
    pub fn child_spec(&self, id: impl Into<String>) -> wharf_core::supervisor::ChildSpec {
        let w = self.clone();
        wharf_core::supervisor::ChildSpec::new(
            id,
            move |ctx: wharf_core::supervisor::ChildContext| {
                let w = w.clone();
                async move {
                    w.inner.spawn_run();
                    let mut state = w.watch_state();
                    Ok::<_, Error>(wharf_core::supervisor::Started::task(async move {
                        let stopped = async move {
                            let _ = state.wait_for(|s| *s == WrapperState::Stopped).await;
                        };
                        tokio::select! {
                            _ = ctx.cancelled() => w.shutdown().await,
                            _ = stopped => w.join().await,
                        }
                    }))
                }
            },
        )
    }

    /// Waits until the wrapper stops (shut down, or gave up rebuilding).
    pub async fn join(&self) -> Result<()> {
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        match task {
            Some(t) => t
                .await
                .unwrap_or_else(|e| Err(Error::Stopped(format!("kafka wrapper ({e})")))),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// Starts the supervision loop with a fresh generation, unless it is running. Used at
    /// start, and to run again after a shutdown or after it gave up (registrations kept).
    fn spawn_run(self: &Arc<Self>) {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn context(&self, health: &Arc<Health>, name: &str) -> HealthContext {
        HealthContext::new(health.clone(), self.gates.get(name))
    }

    /// Builds generation `number`: the admin client and every registered producer and
    /// consumer. A spec that fails to build is logged and skipped (it is retried at the
    /// next rebuild).
    fn build_generation(&self, number: u64) {
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
        metrics::gauge!("wharf_kafka_generation").set(number as f64);
        tracing::info!(generation = number, "Kafka clients built");
    }

    /// Takes the current generation down: producers flush, consumers drain and commit.
    async fn teardown(&self) {
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

    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
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
            metrics::counter!("wharf_kafka_rebuilds_total").increment(1);
            gated_warn!(self.gates.get(WRAPPER), "rebuilding Kafka clients", reason = %failure, attempt, total);
            if gives_up {
                self.stopped();
                tracing::error!(reason = %failure, attempts = attempt - 1, "giving up rebuilding Kafka clients");
                return Err(Error::RebuildsExhausted {
                    attempts: attempt - 1,
                    last_failure: failure,
                });
            }
            let delay = backoff(self.config.backoff_min, self.config.backoff_max, attempt);
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
    fn stopped(&self) {
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
    async fn monitor(&self, shutdown: &CancellationToken) -> (Option<String>, bool) {
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
    fn probe_reachability(&self, until: Instant) -> JoinHandle<(Instant, Result<()>)> {
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
    fn read_watermarks(&self) -> Option<JoinHandle<Highs>> {
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
    fn check_consumers(
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
                metrics::gauge!("wharf_kafka_consumer_lag", "consumer" => name.clone(), "topic" => l.topic.clone(), "partition" => l.partition.to_string())
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

/// Exponential backoff with ±20% jitter.
fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = min.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    let base = exp.min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    base.mul_f64(jitter)
}

/// Marks a consumer as gone when dropped (after its shutdown, or if that was abandoned).
struct Leaving {
    inner: Arc<Inner>,
    name: String,
    tx: watch::Sender<bool>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        let _ = self.tx.send(true);
        if let Ok(mut r) = self.inner.retiring.lock() {
            // Only this consumer's entry: a later one under the same name stays.
            if r.get(&self.name)
                .is_some_and(|e| e.done.same_channel(&self.tx.subscribe()))
            {
                r.remove(&self.name);
            }
        }
    }
}
