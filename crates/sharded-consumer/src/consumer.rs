//! [`ShardedConsumer`]: runs a source through per-key actors; the handle for signals and
//! introspection.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wharf_core::BoxError;
use wharf_core::supervisor::{ChildContext, ChildSpec, Started};
use wharf_core::transport::Source;

use crate::budget::Budget;
use crate::config::{Config, ShardedConsumerBuilder};
use crate::dispatch::{Reader, Router};
use crate::shard::{Control, Shard, ShardParts};
use crate::stats::{Metrics, Stats, Totals};
use crate::turn::Request;
use crate::{Error, Handler, ShardKey, panic_text};

/// Batches an executor's inbox holds; with `batch_size` deliveries each.
const INBOX_BATCHES: usize = 4;
/// Requests (signals, starts) an executor's control mailbox holds.
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

/// What the handles reach of the run in progress. It exists only while a run does: the
/// control channels are made by each run and closed with it, so a request to a consumer that
/// is not running fails at once with [`Error::Stopped`], and one still queued when the run
/// ends fails then, instead of waiting out its timeout for a run that may never come.
struct RunLines<H: Handler> {
    controls: Vec<mpsc::Sender<Control<H>>>,
    budget: Arc<Budget>,
}

struct Inner<H: Handler> {
    config: Arc<Config>,
    handler: Arc<H>,
    router: Router,
    totals: Arc<Totals>,
    run: Mutex<Option<RunLines<H>>>,
}

/// One stateful, ordered actor per sharding key, over any wharf [`Source`].
///
/// Build it with [`builder`](Self::builder), then [`run`](Self::run) it on a source (or let a
/// supervisor do it: [`child_spec`](Self::child_spec)). Clones share the consumer: keep one
/// to send [`signal`](Self::signal)s, start actors ([`get_or_start`](Self::get_or_start)) and
/// read [`stats`](Self::stats) while it runs. A clone stays valid across runs; between two
/// runs (a supervisor restarting it) requests answer [`Error::Stopped`] at once: retry them.
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
                run: Mutex::new(None),
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
    /// [`key_info`](Self::key_info)) are served; otherwise they answer [`Error::Stopped`] at
    /// once. The run begins when this future is first polled: to send requests right after
    /// starting one, use [`spawn`](Self::spawn), which is running when it returns.
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

    /// Makes the run's control lines and in-flight budget and publishes them to the handles:
    /// from here on the consumer is running, until the returned [`Begun`] is dropped.
    fn begin(&self) -> Result<Begun<H>, Error> {
        let config = &self.inner.config;
        let metrics = Metrics::new(&config.name);
        let (senders, controls): (Vec<_>, Vec<_>) = (0..config.shards)
            .map(|_| mpsc::channel(CONTROL_CAPACITY))
            .unzip();
        let mut run = self.lock_run();
        if run.is_some() {
            return Err(Error::AlreadyRunning {
                consumer: config.name.to_string(),
            });
        }
        let budget = Arc::new(Budget::new(config.max_in_flight, metrics.in_flight.clone()));
        *run = Some(RunLines {
            controls: senders,
            budget: budget.clone(),
        });
        Ok(Begun {
            controls,
            budget,
            metrics,
            running: Running(self.clone()),
        })
    }

    async fn drive<S: Source>(
        &self,
        begun: Begun<H>,
        mut source: S,
        stop: CancellationToken,
    ) -> Result<(), Error> {
        let Begun {
            controls: receivers,
            budget,
            metrics,
            // However the run ends (returns, or its future is dropped), the handles learn it.
            running: _running,
        } = begun;
        let inner = &self.inner;
        let config = inner.config.clone();
        // Ours to cancel too: a failing executor stops the whole run.
        let stop = stop.child_token();
        let span = tracing::info_span!("sharded_consumer", consumer = %config.name);
        tracing::info!(parent: &span, executors = config.shards, "sharded consumer started");

        let mut outboxes = Vec::with_capacity(receivers.len());
        let mut executors = Executors(Vec::with_capacity(receivers.len()));
        for (index, controls) in receivers.into_iter().enumerate() {
            let (tx, inbox) = mpsc::channel(INBOX_BATCHES);
            outboxes.push(tx);
            let shard = Shard::new(ShardParts {
                index,
                handler: inner.handler.clone(),
                config: config.clone(),
                inbox,
                controls,
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
                        reason: format!("an executor panicked: {}", panic_text(panic.as_ref())),
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
    /// again. Between two runs, requests answer [`Error::Stopped`] at once.
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
        ChildSpec::new(id, move |ctx: ChildContext| {
            let consumer = consumer.clone();
            let make_source = make_source.clone();
            async move {
                let source = make_source().await.map_err(Into::into)?;
                // Running once the setup answers, so that the children started after this
                // one can send it requests at once.
                let begun = consumer.begin()?;
                let stop = ctx.token();
                Ok::<_, BoxError>(Started::task(async move {
                    consumer.drive(begun, source, stop).await
                }))
            }
        })
    }

    /// Whether a [`run`](Self::run) of this consumer is in progress (it may be stopping).
    pub fn is_running(&self) -> bool {
        self.lock_run().is_some()
    }

    /// Sends `signal` to the actor of `key` (starting it with `init` if needed) and waits
    /// for [`Handler::handle_signal`]'s answer, at most the consumer's
    /// [`signal_timeout`](ShardedConsumerBuilder::signal_timeout).
    ///
    /// The signal runs between two messages of the key, with no ordering promise against
    /// messages already queued.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Stopped`] at once when the consumer is not running,
    /// and as soon as it stops when the signal was still waiting; [`Error::Timeout`] (the
    /// signal is skipped if it had not started yet); [`Error::SignalQueueFull`];
    /// [`Error::ActorFailed`] (the handler failed, panicked or exceeded its
    /// [`handler_timeout`](ShardedConsumerBuilder::handler_timeout); the actor was
    /// restarted).
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
        let (reply, answer) = oneshot::channel();
        let request = Request::Signal { signal, reply };
        self.ask(key, request, answer, timeout).await?
    }

    /// Makes sure the actor of `key` is running (its `init` done), starting it if needed,
    /// and returns a handle to it.
    ///
    /// # Errors
    ///
    /// [`Error::ActorFailed`] if `init` failed, and the errors of [`signal`](Self::signal).
    pub async fn get_or_start(&self, key: impl Into<ShardKey>) -> Result<KeyActor<H>, Error> {
        let key = self.check(key.into())?;
        let (reply, answer) = oneshot::channel();
        let request = Request::Start { reply };
        self.ask(
            key.clone(),
            request,
            answer,
            self.inner.config.signal_timeout,
        )
        .await??;
        Ok(KeyActor {
            consumer: self.clone(),
            key,
        })
    }

    /// What the registry holds for `key`; `None` when the key has no actor (never seen, or
    /// stopped).
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] at once if the consumer is not running; [`Error::Timeout`] if it
    /// does not answer within its signal timeout (overloaded).
    pub async fn key_info(&self, key: impl Into<ShardKey>) -> Result<Option<KeyInfo>, Error> {
        let key = key.into();
        let timeout = self.inner.config.signal_timeout;
        let (reply, answer) = oneshot::channel();
        let Some(line) = self.control_line(&key) else {
            return Err(self.stopped());
        };
        let asked = async {
            line.send(Control::Inspect {
                key: key.clone(),
                reply,
            })
            .await
            .ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(self.stopped()),
            Err(_) => Err(Error::Timeout {
                key: key.to_string(),
                after: timeout,
            }),
        }
    }

    /// The consumer's counts now. `in_flight` is 0 when the consumer is not running.
    pub fn stats(&self) -> Stats {
        let in_flight = self.lock_run().as_ref().map_or(0, |run| run.budget.used());
        self.inner.totals.snapshot(in_flight)
    }

    /// The control line of `key`'s executor in the run in progress; `None` when the
    /// consumer is not running.
    fn control_line(&self, key: &ShardKey) -> Option<mpsc::Sender<Control<H>>> {
        let run = self.lock_run();
        let run = run.as_ref()?;
        run.controls
            .get(self.inner.router.executor_of(key))
            .cloned()
    }

    async fn ask<T>(
        &self,
        key: ShardKey,
        request: Request<H>,
        answer: oneshot::Receiver<Result<T, Error>>,
        timeout: Duration,
    ) -> Result<Result<T, Error>, Error> {
        let Some(line) = self.control_line(&key) else {
            return Err(self.stopped());
        };
        let timed_out = || Error::Timeout {
            key: key.to_string(),
            after: timeout,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let control = Control::Request {
            key: key.clone(),
            request,
        };
        match tokio::time::timeout_at(deadline, line.send(control)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.stopped()),
            Err(_) => return Err(timed_out()),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(timed_out()),
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

    fn lock_run(&self) -> std::sync::MutexGuard<'_, Option<RunLines<H>>> {
        self.inner
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A run that has begun (the handles reach it) and not yet been driven.
struct Begun<H: Handler> {
    controls: Vec<mpsc::Receiver<Control<H>>>,
    budget: Arc<Budget>,
    metrics: Metrics,
    running: Running<H>,
}

/// Marks the end of a run, however it ends: the handles stop reaching it (requests answer
/// [`Error::Stopped`]), and its in-flight count stops being reported.
struct Running<H: Handler>(ShardedConsumer<H>);

impl<H: Handler> Drop for Running<H> {
    fn drop(&mut self) {
        if let Some(run) = self.0.lock_run().take() {
            run.budget.retire();
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
