//! [`ShardedConsumer`]: runs a source through per-key actors; the handle for signals and
//! introspection.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wharf_core::BoxError;
use wharf_core::supervisor::{ChildContext, ChildSpec, Started};
use wharf_core::transport::Source;

use crate::budget::Budget;
use crate::config::{Config, ShardedConsumerBuilder};
use crate::dispatch::{Reader, Router};
use crate::mailbox::{Answer, Ask, Control, Life, Line, SpecHold};
use crate::shard::{Shard, ShardParts};
use crate::stats::{Metrics, Stats, Totals};
use crate::{Error, Handler, ShardKey};
use wharf_core::supervisor::panic_message;

/// Batches an executor's inbox holds; with `batch_size` deliveries each.
const INBOX_BATCHES: usize = 4;
/// Requests (signals, starts, inspections) an executor's mailbox holds.
const CONTROL_CAPACITY: usize = 1024;

/// What [`ShardedConsumer::key_info`] reports about one key's actor.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The actor has a state (its `init` ran) or is running a turn.
    pub started: bool,
    /// A handler call for the key is in progress.
    pub running: bool,
    /// Messages waiting behind the current one.
    pub queued: usize,
    /// The key's oldest message waits to be tried again (or dead-lettered).
    pub waiting_retry: bool,
    /// Signals waiting for the key.
    pub signals_waiting: usize,
}

/// What the handles reach: the request mailboxes of the consumer's current [`Life`] and the
/// run in progress.
struct Lines<H: Handler> {
    /// The callers' ends of the mailboxes, one per executor; empty before the first life.
    /// Once that life has ended their mailboxes are closed, so a request answers
    /// [`Error::Stopped`] at once.
    handles: Vec<Line<H>>,
    /// The life those mailboxes belong to, while a child spec or a run keeps it.
    life: Weak<Life<H>>,
    /// The in-flight budget of the run in progress; `None` when not running.
    run: Option<Arc<Budget>>,
}

struct Inner<H: Handler> {
    config: Arc<Config>,
    handler: Arc<H>,
    router: Router,
    totals: Arc<Totals>,
    lines: Mutex<Lines<H>>,
}

/// One stateful, ordered actor per sharding key, over any wharf [`Source`].
///
/// Build it with [`builder`](Self::builder), then [`run`](Self::run) it on a source (or let a
/// supervisor do it: [`child_spec`](Self::child_spec)). Clones share the consumer: keep one
/// to send [`signal`](Self::signal)s, start actors ([`get_or_start`](Self::get_or_start)) and
/// read [`stats`](Self::stats) while it runs. A clone stays valid across runs: under a
/// supervisor, requests sent between two runs (crash, backoff, restart) wait in a bounded
/// mailbox and are served by the next run, in order; a consumer that is not running and
/// cannot run again answers [`Error::Stopped`] at once.
///
/// See the [crate docs](crate) for the design and the guarantees.
pub struct ShardedConsumer<H: Handler> {
    inner: Arc<Inner<H>>,
}

impl<H: Handler> Clone for ShardedConsumer<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<H: Handler> fmt::Debug for ShardedConsumer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedConsumer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> ShardedConsumer<H> {
    /// Starts building a consumer named `name` (used in logs and metric labels) around
    /// `handler`.
    pub fn builder(name: impl Into<String>, handler: H) -> ShardedConsumerBuilder<H> {
        ShardedConsumerBuilder::new(name.into(), handler)
    }

    pub(crate) fn new(config: Config, handler: H) -> Self {
        Self {
            inner: Arc::new(Inner {
                router: Router::new(config.shards),
                config: Arc::new(config),
                handler: Arc::new(handler),
                totals: Arc::new(Totals::default()),
                lines: Mutex::new(Lines {
                    handles: Vec::new(),
                    life: Weak::new(),
                    run: None,
                }),
            }),
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Consumes `source` until it ends or `stop` is cancelled.
    ///
    /// - **Source ended** (`recv` returned `None`): the messages already received are
    ///   handled to the end, every actor is stopped ([`StopReason::Shutdown`](crate::StopReason::Shutdown)),
    ///   and `run` returns `Ok(())`.
    /// - **`stop` cancelled**: no new message is started; the handler calls in progress
    ///   finish and are settled; every other received message is released (dropped without
    ///   ack, so the source delivers it again, newest first so that a queue that puts them
    ///   back at its front keeps each key's order); actors are stopped; `Ok(())`.
    ///
    /// Every handler call in progress is bounded by the
    /// [`handler_timeout`](ShardedConsumerBuilder::handler_timeout) (30 s by default), so a
    /// stop waits at most that long for them, plus a `terminate` per actor, each bounded the
    /// same way. With the timeout disabled, bound `run` in time from outside (a
    /// supervisor's shutdown grace does). Dropping the future aborts the executors at once;
    /// their unsettled deliveries are released.
    ///
    /// While a run is in progress, [`is_running`](Self::is_running) is `true` and requests
    /// ([`signal`](Self::signal), [`get_or_start`](Self::get_or_start),
    /// [`key_info`](Self::key_info)) are served. Once it stops, the requests it did not
    /// serve wait for the next run if a [`child_spec`](Self::child_spec) of this consumer
    /// lives (a supervisor may start one); otherwise they, and every later request, answer
    /// [`Error::Stopped`] at once. The run begins when this future is first polled: to send
    /// requests right after starting one, use [`spawn`](Self::spawn), which is running when
    /// it returns.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] if this consumer is already running;
    /// [`Error::DeadLetterFailed`] if a message could not be dead-lettered (the consumer
    /// then stops as above, leaving the message unacknowledged);
    /// [`Error::Internal`] if an executor task failed.
    pub async fn run<S: Source>(&self, source: S, stop: CancellationToken) -> Result<(), Error> {
        let begun = self.begin()?;
        self.drive(begun, source, stop).await
    }

    /// Starts a [`run`](Self::run) on a task of its own and returns its handle. When it
    /// returns `Ok`, the consumer is running: requests sent from then on are served (no
    /// race with the task's first poll). Await the handle for the run's result; dropping it
    /// leaves the run going (cancel `stop` to end it).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] if this consumer is already running (nothing is spawned).
    /// The run's own errors come out of the handle, as from [`run`](Self::run).
    pub fn spawn<S: Source + 'static>(
        &self,
        source: S,
        stop: CancellationToken,
    ) -> Result<JoinHandle<Result<(), Error>>, Error> {
        let begun = self.begin()?;
        let consumer = self.clone();
        Ok(tokio::spawn(async move {
            consumer.drive(begun, source, stop).await
        }))
    }

    /// Makes the run's in-flight budget and publishes it: from here on the consumer is
    /// running, until the returned [`Begun`] is dropped. The run holds the current life (or
    /// begins one), so requests sent from now on reach its mailboxes.
    fn begin(&self) -> Result<Begun<H>, Error> {
        let config = &self.inner.config;
        let metrics = Metrics::new(&config.name);
        let mut lines = self.lock_lines();
        if lines.run.is_some() {
            return Err(Error::AlreadyRunning {
                consumer: config.name.to_string(),
            });
        }
        let life = self.life_in(&mut lines);
        let budget = Arc::new(Budget::new(config.max_in_flight, metrics.in_flight.clone()));
        lines.run = Some(budget.clone());
        Ok(Begun {
            life,
            budget,
            metrics,
            running: Running(self.clone()),
        })
    }

    /// The current life, or a new one (with new mailboxes) when the last has ended.
    fn life_in(&self, lines: &mut Lines<H>) -> Arc<Life<H>> {
        if let Some(life) = lines.life.upgrade() {
            return life;
        }
        let config = &self.inner.config;
        let (life, handles) = Life::new(
            &config.name,
            config.shards,
            CONTROL_CAPACITY,
            config.signal_timeout,
        );
        lines.handles = handles;
        lines.life = Arc::downgrade(&life);
        life
    }

    async fn drive<S: Source>(
        &self,
        begun: Begun<H>,
        mut source: S,
        stop: CancellationToken,
    ) -> Result<(), Error> {
        let Begun {
            life,
            budget,
            metrics,
            // However the run ends (returns, or its future is dropped), the handles learn it.
            running: _running,
        } = begun;
        // Waits only while an aborted run's executors still hold the mailboxes.
        let receivers = life.attach().await;
        let inner = &self.inner;
        let config = inner.config.clone();
        // Ours to cancel too: a failing executor stops the whole run.
        let stop = stop.child_token();
        let span = tracing::info_span!("sharded_consumer", consumer = %config.name);
        tracing::info!(parent: &span, executors = config.shards, "sharded consumer started");

        let mut outboxes = Vec::with_capacity(receivers.len());
        let mut executors = Executors(Vec::with_capacity(receivers.len()));
        for (index, controls) in receivers.into_iter().enumerate() {
            // The run's own channel, not a `wharf_core::service` mailbox like `controls`:
            // deliveries must not outlive the run that received them (un-acked, the source
            // delivers them again to the next run), so nothing here needs to survive a restart.
            let (tx, inbox) = mpsc::channel(INBOX_BATCHES);
            outboxes.push(tx);
            let shard = Shard::new(ShardParts {
                index,
                handler: inner.handler.clone(),
                config: config.clone(),
                inbox,
                controls,
                life: life.clone(),
                stop: stop.clone(),
                totals: inner.totals.clone(),
                metrics: metrics.clone(),
                budget: budget.clone(),
            });
            let stop = stop.clone();
            let name = config.name.to_string();
            let task = async move {
                let ended = AssertUnwindSafe(shard.run()).catch_unwind().await;
                let ended = ended.unwrap_or_else(|panic| {
                    Err(Error::Internal {
                        consumer: name,
                        reason: format!("an executor panicked: {}", panic_message(panic.as_ref())),
                    })
                });
                if ended.is_err() {
                    stop.cancel();
                }
                ended
            };
            executors
                .0
                .push(tokio::spawn(task.instrument(span.clone())));
        }

        let reader = Reader::new(
            config.clone(),
            inner.router.clone(),
            budget,
            outboxes,
            stop.clone(),
            metrics,
        );
        reader.run(&mut source).instrument(span.clone()).await;

        let mut first_error = None;
        for task in std::mem::take(&mut executors.0) {
            let ended = match task.await {
                Ok(ended) => ended,
                Err(join) => Err(Error::Internal {
                    consumer: config.name.to_string(),
                    reason: format!("an executor task ended abnormally: {join}"),
                }),
            };
            if let Err(error) = ended {
                first_error.get_or_insert(error);
            }
        }
        tracing::info!(parent: &span, failed = first_error.is_some(), "sharded consumer stopped");
        first_error.map_or(Ok(()), Err)
    }

    /// A child for a wharf-core supervisor: each start builds a source with `make_source`
    /// (the setup phase: a failure fails the start) and runs the consumer on it until the
    /// supervisor stops it (see [`run`](Self::run)). The consumer is running once the setup
    /// has answered, so children started after it can send it requests at once. A run that
    /// fails is restarted by the supervisor's policy; unacknowledged messages are delivered
    /// again.
    ///
    /// Requests outlive restarts: while the returned spec (or a clone) lives, requests the
    /// stopping run did not serve (queued, or waiting for their key) and those sent between
    /// two runs (crash, backoff, restart) wait in the consumer's bounded mailboxes, each
    /// within its own timeout, and the next run serves them first, in order. A request that
    /// a run had *started* when it was aborted fails with [`Error::Interrupted`]. Once the
    /// spec is gone (its supervisor shut down or gave up) and no run is in progress, waiting
    /// requests and new ones answer [`Error::Stopped`] at once. A spec the supervisor keeps
    /// but will not start again (a `Transient` or `Temporary` child that ended) still counts:
    /// requests then wait out their timeout.
    ///
    /// Give the child a shutdown grace longer than the
    /// [`handler_timeout`](ShardedConsumerBuilder::handler_timeout).
    pub fn child_spec<S, F, Fut, E>(&self, id: impl Into<String>, make_source: F) -> ChildSpec
    where
        S: Source + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let consumer = self.clone();
        let make_source = Arc::new(make_source);
        // While the spec lives, so do the mailboxes: a supervisor may run the consumer again.
        let hold = {
            let mut lines = self.lock_lines();
            SpecHold::new(self.life_in(&mut lines))
        };
        ChildSpec::new(id, move |ctx: ChildContext| {
            let consumer = consumer.clone();
            let make_source = make_source.clone();
            let life = Arc::downgrade(hold.life());
            async move {
                let source = make_source().await.map_err(Into::into)?;
                // Running once the setup answers, so that the children started after this
                // one can send it requests at once. The spec keeps its life, so the run
                // serves the mailboxes the handles reach.
                let begun = consumer.begin()?;
                debug_assert!(Weak::ptr_eq(&life, &Arc::downgrade(&begun.life)));
                let stop = ctx.token();
                Ok::<_, BoxError>(Started::task(async move {
                    consumer.drive(begun, source, stop).await
                }))
            }
        })
    }

    /// Whether a [`run`](Self::run) of this consumer is in progress (it may be stopping).
    pub fn is_running(&self) -> bool {
        self.lock_lines().run.is_some()
    }

    /// Sends `signal` to the actor of `key` (starting it with `init` if needed) and waits
    /// for [`Handler::handle_signal`]'s answer, at most the consumer's
    /// [`signal_timeout`](ShardedConsumerBuilder::signal_timeout).
    ///
    /// The signal runs between two messages of the key, with no ordering promise against
    /// messages already queued. Signals to one key run in the order they were sent.
    ///
    /// Under a supervisor ([`child_spec`](Self::child_spec)), a signal sent while the
    /// consumer restarts, or still waiting when its run stops, is served by the next run.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Stopped`] at once when the consumer is not running
    /// and cannot run again (never started and no child spec, a run that ended without a
    /// child spec, a supervisor that shut down or gave up), and as soon as that becomes true
    /// for a signal still waiting; [`Error::Timeout`] (the signal is skipped if it had not
    /// started yet); [`Error::SignalQueueFull`]; [`Error::ActorFailed`] (the handler failed,
    /// panicked or exceeded its [`handler_timeout`](ShardedConsumerBuilder::handler_timeout);
    /// the actor was restarted); [`Error::Interrupted`] (the run was aborted while the
    /// signal ran).
    pub async fn signal(
        &self,
        key: impl Into<ShardKey>,
        signal: H::Signal,
    ) -> Result<H::Reply, Error> {
        self.signal_within(key, signal, self.inner.config.signal_timeout)
            .await
    }

    /// [`signal`](Self::signal) with its own timeout.
    ///
    /// # Errors
    ///
    /// As [`signal`](Self::signal).
    pub async fn signal_within(
        &self,
        key: impl Into<ShardKey>,
        signal: H::Signal,
        timeout: Duration,
    ) -> Result<H::Reply, Error> {
        let key = self.check(key.into())?;
        match self.ask(&key, Ask::Signal(signal), timeout).await? {
            Answer::Signal(answer) => answer,
            _ => Err(self.mixed_up()),
        }
    }

    /// Makes sure the actor of `key` is running (its `init` done), starting it if needed,
    /// and returns a handle to it.
    ///
    /// # Errors
    ///
    /// [`Error::ActorFailed`] if `init` failed, and the errors of [`signal`](Self::signal).
    pub async fn get_or_start(&self, key: impl Into<ShardKey>) -> Result<KeyActor<H>, Error> {
        let key = self.check(key.into())?;
        match self
            .ask(&key, Ask::Start, self.inner.config.signal_timeout)
            .await?
        {
            Answer::Started(started) => started?,
            _ => return Err(self.mixed_up()),
        }
        Ok(KeyActor {
            consumer: self.clone(),
            key,
        })
    }

    /// What the registry holds for `key`; `None` when the key has no actor (never seen, or
    /// stopped).
    ///
    /// Like [`signal`](Self::signal), the request waits for the next run under a supervisor.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] at once if the consumer is not running and cannot run again (as
    /// for [`signal`](Self::signal)); [`Error::Timeout`] if it does not answer within its
    /// signal timeout (overloaded, or a supervised consumer that was not restarted in time).
    pub async fn key_info(&self, key: impl Into<ShardKey>) -> Result<Option<KeyInfo>, Error> {
        let key = key.into();
        match self
            .ask(&key, Ask::Inspect, self.inner.config.signal_timeout)
            .await?
        {
            Answer::Info(info) => Ok(info),
            _ => Err(self.mixed_up()),
        }
    }

    /// The consumer's counts now. `in_flight` is 0 when the consumer is not running.
    pub fn stats(&self) -> Stats {
        let in_flight = self.lock_lines().run.as_ref().map_or(0, |run| run.used());
        self.inner.totals.snapshot(in_flight)
    }

    /// Sends `ask` to the mailbox of `key`'s executor and waits for the answer, at most
    /// `timeout` (queueing included).
    async fn ask(
        &self,
        key: &ShardKey,
        ask: Ask<H>,
        timeout: Duration,
    ) -> Result<Answer<H>, Error> {
        let line = {
            let lines = self.lock_lines();
            lines
                .handles
                .get(self.inner.router.executor_of(key))
                .cloned()
        };
        // No mailbox yet: never run, no child spec.
        let Some(line) = line else {
            return Err(self.stopped());
        };
        let control = Control {
            key: key.clone(),
            ask,
        };
        let line = if timeout == self.inner.config.signal_timeout {
            line
        } else {
            line.with_call_timeout(timeout)
        };
        line.call(control)
            .await
            .map_err(|error| self.unanswered(key, timeout, error))
    }

    /// Why the mailbox gave no answer, in this crate's terms.
    fn unanswered(&self, key: &ShardKey, timeout: Duration, error: wharf_core::Error) -> Error {
        let consumer = self.inner.config.name.to_string();
        match error {
            // The mailbox is closed, or was closed with the request in it: nothing can run
            // the consumer any more.
            wharf_core::Error::Stopped(_) => Error::Stopped { consumer },
            wharf_core::Error::Timeout { .. } => Error::Timeout {
                key: key.to_string(),
                after: timeout,
            },
            // Taken and started by a run that ended without answering (aborted, or an
            // executor panicked).
            wharf_core::Error::ServiceCrashed { reason, .. } => Error::Interrupted {
                consumer,
                key: key.to_string(),
                reason,
            },
            other => Error::Internal {
                consumer,
                reason: format!("unexpected answer from a request mailbox: {other}"),
            },
        }
    }

    /// An executor answered a request with another kind's answer: a bug.
    fn mixed_up(&self) -> Error {
        Error::Internal {
            consumer: self.inner.config.name.to_string(),
            reason: "an executor answered a request with the answer to another kind of request"
                .to_owned(),
        }
    }

    fn check(&self, key: ShardKey) -> Result<ShardKey, Error> {
        self.inner
            .config
            .decoder
            .check(key)
            .map_err(|rejected| Error::InvalidKey {
                reason: rejected.into_reason(),
            })
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            consumer: self.inner.config.name.to_string(),
        }
    }

    fn lock_lines(&self) -> std::sync::MutexGuard<'_, Lines<H>> {
        self.inner
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A run that has begun (the handles reach it) and not yet been driven.
struct Begun<H: Handler> {
    /// Held for the whole run: the mailboxes stay open while it runs.
    life: Arc<Life<H>>,
    budget: Arc<Budget>,
    metrics: Metrics,
    running: Running<H>,
}

/// Marks the end of a run, however it ends: the consumer is no longer running, and its
/// in-flight count stops being reported.
struct Running<H: Handler>(ShardedConsumer<H>);

impl<H: Handler> Drop for Running<H> {
    fn drop(&mut self) {
        if let Some(budget) = self.0.lock_lines().run.take() {
            budget.retire();
        }
    }
}

/// A handle to one key's actor, from [`ShardedConsumer::get_or_start`].
pub struct KeyActor<H: Handler> {
    consumer: ShardedConsumer<H>,
    key: ShardKey,
}

impl<H: Handler> KeyActor<H> {
    /// The key.
    pub fn key(&self) -> &ShardKey {
        &self.key
    }

    /// [`ShardedConsumer::signal`] to this key.
    ///
    /// # Errors
    ///
    /// As [`ShardedConsumer::signal`].
    pub async fn signal(&self, signal: H::Signal) -> Result<H::Reply, Error> {
        self.consumer.signal(self.key.clone(), signal).await
    }

    /// [`ShardedConsumer::key_info`] for this key.
    ///
    /// # Errors
    ///
    /// As [`ShardedConsumer::key_info`].
    pub async fn info(&self) -> Result<Option<KeyInfo>, Error> {
        self.consumer.key_info(self.key.clone()).await
    }
}

impl<H: Handler> Clone for KeyActor<H> {
    fn clone(&self) -> Self {
        Self {
            consumer: self.consumer.clone(),
            key: self.key.clone(),
        }
    }
}

impl<H: Handler> fmt::Debug for KeyActor<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyActor")
            .field("consumer", &self.consumer.name())
            .field("key", &self.key)
            .finish()
    }
}

/// Aborts the executors if `run` is dropped before it joined them.
struct Executors(Vec<JoinHandle<Result<(), Error>>>);

impl Drop for Executors {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
