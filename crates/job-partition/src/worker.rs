//! The worker: claims jobs under leases, runs them, heartbeats, reaps expired leases.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wharf_core::Backoff;
use wharf_core::supervisor::{ChildContext, ChildSpec, Shutdown, Started};

use crate::client::{Beat, Claimed, Jobs};
use crate::error::{Error, Result};
use crate::hooks::{Hooks, JobEvent, NoHooks};
use crate::job::{JobContext, Registry};
use crate::keys::check_name;

/// Settings of a worker process (shared by all its queues).
#[derive(Clone)]
struct Settings {
    lease: Duration,
    heartbeat_every: Duration,
    poll_interval: Duration,
    reap_every: Duration,
    shutdown_grace: Duration,
    batch: usize,
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    jobs: Jobs,
    registry: Registry,
    hooks: Arc<dyn Hooks>,
    queues: Vec<(String, String, usize)>,
    settings: Settings,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("registry", &self.registry)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Work on `queue` of `partition`, running at most `concurrency` of its jobs at once in
    /// this process (the queue's global limit, [`Jobs::set_limit`], holds across processes).
    pub fn queue(mut self, partition: &str, queue: &str, concurrency: usize) -> Self {
        self.queues
            .push((partition.to_owned(), queue.to_owned(), concurrency));
        self
    }

    /// How long a claimed job stays leased without a heartbeat (default 15 s). A crashed
    /// worker's jobs run again on another worker after this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How often leases are renewed and cancel requests are checked (default 250 ms, so a
    /// running job is cancelled well within a second).
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.settings.heartbeat_every = every;
        self
    }

    /// The longest wait between polls of an idle queue (default 100 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every;
        self
    }

    /// How long shutdown waits for running jobs before aborting them (default 10 s).
    /// Aborted jobs are put back at their place in their queue (the interrupted attempt is
    /// not counted); if Redis cannot be reached then, they run again once their leases expire.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    /// Most jobs claimed in one call (default 50).
    pub fn batch(mut self, batch: usize) -> Self {
        self.settings.batch = batch.max(1);
        self
    }

    /// Hooks called around each job.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Worker> {
        let s = &self.settings;
        if s.heartbeat_every.saturating_mul(3) > s.lease {
            return Err(Error::Config(format!(
                "heartbeat_every ({:?}) must be at most a third of the lease ({:?}), or leases expire under live workers",
                s.heartbeat_every, s.lease
            )));
        }
        for (p, q, c) in &self.queues {
            check_name("partition", p)?;
            check_name("queue", q)?;
            if *c == 0 {
                return Err(Error::Config(format!(
                    "concurrency of queue {p}/{q} must be at least 1"
                )));
            }
        }
        let id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Ok(Worker {
            inner: Arc::new(Inner {
                jobs: self.jobs,
                registry: self.registry,
                hooks: self.hooks,
                settings: self.settings,
                id,
            }),
            queues: self.queues,
        })
    }
}

struct Inner {
    jobs: Jobs,
    registry: Registry,
    hooks: Arc<dyn Hooks>,
    settings: Settings,
    id: String,
}

/// A worker process's job runner: any number of them, in any number of processes on any
/// number of machines, can work the same queues.
///
/// Run it with [`Worker::run`] (until a cancellation token fires), as a wharf-core
/// supervised child with [`Worker::child_spec`], or with [`Worker::start`] (spawned, with a
/// handle to add and remove queues at run time).
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
    queues: Vec<(String, String, usize)>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.id)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A builder for a worker that runs the job types of `registry`.
    pub fn builder(jobs: Jobs, registry: Registry) -> WorkerBuilder {
        WorkerBuilder {
            jobs,
            registry,
            hooks: Arc::new(NoHooks),
            queues: Vec::new(),
            settings: Settings {
                lease: Duration::from_secs(15),
                heartbeat_every: Duration::from_millis(250),
                poll_interval: Duration::from_millis(100),
                reap_every: Duration::from_secs(1),
                shutdown_grace: Duration::from_secs(10),
                batch: 50,
            },
        }
    }

    /// This worker's id (stored with the jobs it runs).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Runs until `shutdown` fires, then lets running jobs finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let handle = self.start_with(shutdown.child_token());
        shutdown.cancelled().await;
        handle.shutdown().await;
        Ok(())
    }

    /// A wharf-core supervisor child that runs this worker. Its setup phase checks that
    /// Redis answers (so later children can rely on it); its shutdown grace is the worker's
    /// plus 3 s. A restart starts the same queues again; jobs the old incarnation held run
    /// again once their leases expire.
    pub fn child_spec(self, id: impl Into<String>) -> ChildSpec {
        let grace = self.inner.settings.shutdown_grace + Duration::from_secs(3);
        ChildSpec::new(id, move |ctx: ChildContext| {
            let worker = self.clone();
            async move {
                worker.inner.jobs.ping().await?;
                Ok::<_, Error>(Started::task(async move { worker.run(ctx.token()).await }))
            }
        })
        .shutdown(Shutdown::Timeout(grace))
    }

    /// Starts the worker's queues on the current runtime.
    pub fn start(self) -> WorkerHandle {
        self.start_with(CancellationToken::new())
    }

    fn start_with(self, token: CancellationToken) -> WorkerHandle {
        let handle = WorkerHandle {
            inner: self.inner,
            token,
            loops: Arc::default(),
        };
        for (p, q, c) in self.queues {
            handle.spawn_queue(p, q, c);
        }
        handle
    }
}

/// A started worker: add or remove queues at run time, shut it down.
pub struct WorkerHandle {
    inner: Arc<Inner>,
    token: CancellationToken,
    loops: Arc<Mutex<HashMap<(String, String), QueueLoop>>>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

struct QueueLoop {
    token: CancellationToken,
    join: JoinHandle<()>,
}

impl WorkerHandle {
    /// Starts working on another queue (replacing the loop of the same queue, if any).
    pub fn add_queue(&self, partition: &str, queue: &str, concurrency: usize) -> Result<()> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        if concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        self.spawn_queue(partition.to_owned(), queue.to_owned(), concurrency);
        Ok(())
    }

    /// Stops working on a queue: claims stop, running jobs finish within the grace period.
    pub async fn remove_queue(&self, partition: &str, queue: &str) {
        let l = self
            .loops
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&(partition.to_owned(), queue.to_owned())));
        if let Some(l) = l {
            l.token.cancel();
            let _ = l.join.await;
        }
    }

    fn spawn_queue(&self, partition: String, queue: String, concurrency: usize) {
        let token = self.token.child_token();
        let run = QueueRunner {
            inner: Arc::clone(&self.inner),
            partition: partition.clone(),
            queue: queue.clone(),
            sem: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            running: Arc::default(),
            token: token.clone(),
        };
        let span = tracing::info_span!("wharf_jobs_queue", partition = %partition, queue = %queue);
        let join = tokio::spawn(run.run().instrument(span));
        let old = self
            .loops
            .lock()
            .ok()
            .and_then(|mut m| m.insert((partition, queue), QueueLoop { token, join }));
        if let Some(old) = old {
            old.token.cancel();
        }
    }

    /// Stops claiming, lets running jobs finish within the grace period, aborts the rest
    /// (their leases expire and other workers run them again).
    pub async fn shutdown(self) {
        self.token.cancel();
        let loops: Vec<QueueLoop> = self
            .loops
            .lock()
            .map(|mut m| m.drain().map(|(_, l)| l).collect())
            .unwrap_or_default();
        for l in loops {
            let _ = l.join.await;
        }
    }
}

/// What stopped a running job before it finished by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancel,
    Lost,
    Shutdown,
}

struct Running {
    token: String,
    stop: CancellationToken,
    why: Arc<Mutex<Option<Stop>>>,
}

type RunningMap = Arc<Mutex<HashMap<String, Running>>>;

struct QueueRunner {
    inner: Arc<Inner>,
    partition: String,
    queue: String,
    sem: Arc<Semaphore>,
    concurrency: usize,
    running: RunningMap,
    token: CancellationToken,
}

fn stop_job(running: &RunningMap, id: &str, why: Stop) {
    if let Ok(m) = running.lock()
        && let Some(r) = m.get(id)
    {
        if let Ok(mut w) = r.why.lock() {
            w.get_or_insert(why);
        }
        r.stop.cancel();
    }
}

impl QueueRunner {
    async fn run(self) {
        let beat = tokio::spawn(
            heartbeat_loop(
                Arc::clone(&self.inner),
                self.partition.clone(),
                self.queue.clone(),
                Arc::clone(&self.running),
            )
            .in_current_span(),
        );
        self.claim_loop().await;
        // Shutdown: wait for running jobs up to the grace period, then abort them.
        let grace = self.inner.settings.shutdown_grace;
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(grace, self.sem.acquire_many(all)).await;
        if drained.is_err() {
            let ids: Vec<String> = self
                .running
                .lock()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            tracing::warn!(
                jobs = ids.len(),
                "shutdown grace passed: aborting running jobs; they run again once their leases expire"
            );
            for id in ids {
                stop_job(&self.running, &id, Stop::Shutdown);
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.sem.acquire_many(all)).await;
        }
        beat.abort();
    }

    async fn claim_loop(&self) {
        let s = &self.inner.settings;
        let errors = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0u32;
        let mut idle = Duration::from_millis(2);
        loop {
            // Wait for a free slot (or shutdown).
            let first = tokio::select! {
                _ = self.token.cancelled() => return,
                p = Arc::clone(&self.sem).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let mut permits = vec![first];
            while permits.len() < s.batch {
                match Arc::clone(&self.sem).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let claimed = self
                .inner
                .jobs
                .claim(
                    &self.partition,
                    &self.queue,
                    permits.len(),
                    s.lease,
                    &self.inner.id,
                )
                .await;
            let claimed = match claimed {
                Ok(c) => {
                    failures = 0;
                    c
                }
                Err(e) => {
                    let d = errors.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "claim failed");
                    drop(permits);
                    if self.sleep(d).await {
                        return;
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permits);
                if self.sleep(idle).await {
                    return;
                }
                idle = (idle * 2).min(s.poll_interval);
                continue;
            }
            idle = Duration::from_millis(2);
            for job in claimed {
                let Some(permit) = permits.pop() else { break };
                self.spawn_job(job, permit);
            }
        }
    }

    /// Sleeps; true if shutdown fired meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.token.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }

    fn spawn_job(&self, job: Claimed, permit: tokio::sync::OwnedSemaphorePermit) {
        let stop = CancellationToken::new();
        let why = Arc::new(Mutex::new(None));
        if let Ok(mut m) = self.running.lock() {
            m.insert(
                job.id.clone(),
                Running {
                    token: job.token.clone(),
                    stop: stop.clone(),
                    why: Arc::clone(&why),
                },
            );
        }
        let ctx = JobRun {
            inner: Arc::clone(&self.inner),
            partition: self.partition.clone(),
            queue: self.queue.clone(),
            running: Arc::clone(&self.running),
        };
        let span =
            tracing::info_span!("wharf_job", id = %job.id, job = %job.name, attempt = job.attempt);
        tokio::spawn(
            async move {
                let id = job.id.clone();
                ctx.execute(job, stop, why).await;
                if let Ok(mut m) = ctx.running.lock() {
                    m.remove(&id);
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn heartbeat_loop(inner: Arc<Inner>, partition: String, queue: String, running: RunningMap) {
    let s = &inner.settings;
    let mut last_ok = Instant::now();
    // Lease checks run here, not in the claim loop, so they go on while every slot is busy.
    let mut last_reap = Instant::now()
        .checked_sub(s.reap_every)
        .unwrap_or_else(Instant::now);
    let mut tick = tokio::time::interval(s.heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Keep beating during shutdown's grace period: the loop ends when the queue loop
        // aborts it.
        tick.tick().await;
        if last_reap.elapsed() >= s.reap_every {
            last_reap = Instant::now();
            match inner.jobs.reap(&partition, &queue).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(jobs = n, "requeued jobs whose worker lost its lease"),
                Err(e) => tracing::warn!(error = %e, "lease check failed; will retry"),
            }
        }
        let snapshot: Vec<(String, String)> = running
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(id, r)| (id.clone(), r.token.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if snapshot.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        match inner.jobs.heartbeat(&partition, s.lease, &snapshot).await {
            Ok(beats) => {
                last_ok = Instant::now();
                for ((id, _), beat) in snapshot.iter().zip(beats) {
                    match beat {
                        Beat::Ok => {}
                        Beat::CancelAsked => stop_job(&running, id, Stop::Cancel),
                        Beat::Lost => stop_job(&running, id, Stop::Lost),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; leases may expire");
                // Past the lease, another worker may already run these jobs: stop ours.
                if last_ok.elapsed() >= s.lease {
                    for (id, _) in &snapshot {
                        stop_job(&running, id, Stop::Lost);
                    }
                }
            }
        }
    }
}

/// What one job's run came to.
enum Outcome {
    Done,
    Failed(String),
    Stopped(Stop),
}

struct JobRun {
    inner: Arc<Inner>,
    partition: String,
    queue: String,
    running: RunningMap,
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the job's task was cancelled".into();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".into());
    format!("the job panicked: {msg}")
}

impl JobRun {
    fn count(&self, state: &'static str) {
        metrics::counter!("wharf_jobs_total", "partition" => self.partition.clone(),
            "queue" => self.queue.clone(), "state" => state)
        .increment(1);
    }

    async fn execute(&self, job: Claimed, stop: CancellationToken, why: Arc<Mutex<Option<Stop>>>) {
        let ev = JobEvent {
            partition: &self.partition,
            queue: &self.queue,
            id: &job.id,
            name: &job.name,
            attempt: job.attempt,
        };
        let hooks = &self.inner.hooks;
        let decoded = match self
            .inner
            .registry
            .decode(&job.name, &job.args, job.attempt)
        {
            Ok(d) => d,
            Err(reason) => {
                tracing::error!(%reason, "job cannot run: sent to the dead set");
                self.record_failure(&job, &reason, None).await;
                hooks.on_dead(&ev, &reason);
                return;
            }
        };
        hooks.before(&ev);
        let started = Instant::now();
        let ctx = JobContext {
            id: job.id.clone(),
            partition: self.partition.clone(),
            queue: self.queue.clone(),
            attempt: job.attempt,
            cancel: stop.child_token(),
        };
        let mut task = tokio::spawn((decoded.run)(ctx));
        let timeout = decoded.policy.timeout;
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            r = &mut task => match r {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Err(e) => Outcome::Failed(panic_message(e)),
            },
            _ = deadline => {
                stop.cancel();
                task.abort();
                self.count("timed_out");
                Outcome::Failed(format!(
                    "max_execution_time of {:?} passed: the job's task was aborted",
                    timeout.unwrap_or_default()
                ))
            }
            _ = stop.cancelled() => {
                task.abort();
                let w = why.lock().ok().and_then(|w| *w).unwrap_or(Stop::Shutdown);
                Outcome::Stopped(w)
            }
        };
        let elapsed = started.elapsed();
        metrics::histogram!("wharf_job_duration_seconds", "partition" => self.partition.clone(),
            "queue" => self.queue.clone())
        .record(elapsed.as_secs_f64());
        match outcome {
            Outcome::Done => {
                if self.finish(&job, "completed").await {
                    self.count("completed");
                    hooks.after(&ev, elapsed);
                }
            }
            Outcome::Failed(msg) => {
                let p = decoded.policy;
                let retry =
                    (p.retryable && job.attempt < p.max_attempts).then_some(decoded.retry_delay);
                tracing::warn!(error = %msg, will_retry = retry.is_some(), "job failed");
                match self.record_failure(&job, &msg, retry).await {
                    Some(true) => hooks.on_error(&ev, &msg, true),
                    Some(false) => {
                        hooks.on_error(&ev, &msg, false);
                        hooks.on_dead(&ev, &msg);
                    }
                    None => {}
                }
            }
            Outcome::Stopped(Stop::Cancel) => {
                // Wait for the aborted task to be gone before reporting.
                let _ = task.await;
                hooks.on_cancel(&ev);
                if self.finish(&job, "cancelled").await {
                    self.count("cancelled");
                }
            }
            Outcome::Stopped(Stop::Lost) => {
                self.count("lost_lease");
                tracing::warn!("lease lost: another worker may run this job; stopped it here");
            }
            Outcome::Stopped(Stop::Shutdown) => {
                let _ = task.await;
                let released = self
                    .inner
                    .jobs
                    .release(&self.partition, &job.id, &job.token)
                    .await;
                match released {
                    Ok(true) => tracing::info!("aborted at shutdown and put back in its queue"),
                    Ok(false) => tracing::info!("aborted at shutdown; its lease was already lost"),
                    Err(e) => {
                        tracing::warn!(error = %e, "aborted at shutdown; it runs again when its lease expires")
                    }
                }
            }
        }
    }

    /// Marks a job finished; false when the lease was lost (fenced off) or Redis failed.
    async fn finish(&self, job: &Claimed, outcome: &'static str) -> bool {
        let r = self
            .with_retries("complete", || {
                self.inner
                    .jobs
                    .complete(&self.partition, &job.id, &job.token, outcome)
            })
            .await;
        match r {
            Some(true) => true,
            Some(false) => {
                self.count("lost_lease");
                tracing::warn!(
                    "the job's lease was lost before it finished: its result was not recorded (another worker runs it)"
                );
                false
            }
            None => false,
        }
    }

    /// Records a failure; Some(true) retry scheduled, Some(false) dead, None lost or error.
    async fn record_failure(
        &self,
        job: &Claimed,
        msg: &str,
        retry: Option<Duration>,
    ) -> Option<bool> {
        let r = self
            .with_retries("fail", || {
                self.inner
                    .jobs
                    .fail(&self.partition, &job.id, &job.token, msg, retry)
            })
            .await?;
        match r {
            1 => {
                self.count("retried");
                Some(true)
            }
            2 => {
                self.count("dead");
                Some(false)
            }
            _ => {
                self.count("lost_lease");
                None
            }
        }
    }

    /// Retries a finishing call while Redis is unreachable, for at most one lease (after
    /// that another worker owns the job anyway).
    async fn with_retries<T, F, Fut>(&self, op: &str, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let until = Instant::now() + self.inner.settings.lease;
        let backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2));
        let mut n = 0;
        loop {
            match f().await {
                Ok(v) => return Some(v),
                Err(e) if Instant::now() < until => {
                    tracing::warn!(error = %e, op, "could not record the job's result; retrying");
                    tokio::time::sleep(backoff.delay(n)).await;
                    n += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, op, "gave up recording the job's result; it runs again after its lease expires");
                    return None;
                }
            }
        }
    }
}
