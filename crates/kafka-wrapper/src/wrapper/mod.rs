//! `KafkaWrapper`: one client configuration, a registry of producer and consumer specs, and
//! a supervision loop that rebuilds all of them when the client fails. This file holds the
//! public API and the registry; the loop itself is in `supervision.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::admin::AdminClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, AdminSlot};
use crate::config::KafkaConfig;
use crate::consumer::{ConsumerHandle, ConsumerInstance, ConsumerSpec};
use crate::error::{Error, Result};
use crate::health::{Health, HealthContext};
use crate::log_gate::LogGates;
use crate::producer::{Producer, ProducerInstance, ProducerSpec};

mod supervision;

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
