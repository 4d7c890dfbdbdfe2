//! The loop shared by static and dynamic supervisors: start, watch, restart, stop.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::{BoxError, Error};
use crate::metrics as m;
use crate::supervisor::Strategy;
use crate::supervisor::child_spec::{ChildContext, ChildSpec, Restart, Shutdown, Started};
use crate::supervisor::exit::{Exit, box_error_chain, panic_message};
use crate::supervisor::handle::{Command, Outcome};
use crate::supervisor::introspect::{ChildId, ChildInfo, ChildState};

/// How long to wait for a task to finish once it has been aborted. A task that blocks its
/// thread cannot be aborted; past this the supervisor logs it and moves on.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// A supervisor's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) id: Arc<str>,
    pub(crate) strategy: Strategy,
    pub(crate) max_restarts: u32,
    pub(crate) period: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_children: Option<usize>,
    pub(crate) dynamic: bool,
}

/// The end of one incarnation of a child.
struct Finished {
    key: u64,
    generation: u64,
    exit: Exit,
}

/// What a child's task reports once its setup is done.
enum Setup {
    Ready,
    Ignore,
    Failed(BoxError),
}

struct RunningTask {
    token: CancellationToken,
    abort: AbortHandle,
    generation: u64,
    since: Instant,
}

enum SlotState {
    Running(RunningTask),
    Ignored,
    /// one_for_one: waits for its backoff.
    Restarting {
        at: Instant,
    },
    /// one_for_all / rest_for_one: waits for its group's restart.
    Grouped,
    Stopped,
}

struct Slot {
    key: u64,
    spec: ChildSpec,
    state: SlotState,
    restarts: u32,
    failures_in_row: u32,
    last_exit: Option<String>,
    generation: u64,
}

/// A supervisor's state while it runs.
pub(crate) struct Engine {
    cfg: Config,
    slots: Vec<Slot>,
    next_key: u64,
    tasks: JoinSet<Finished>,
    task_keys: HashMap<tokio::task::Id, (u64, u64)>,
    deferred: VecDeque<Finished>,
    restart_log: VecDeque<Instant>,
    total_restarts: u64,
    group_at: Option<Instant>,
}

/// Escalation: the supervisor gave up.
struct Escalate(Outcome);

impl Engine {
    pub(crate) fn new(cfg: Config) -> Self {
        Self {
            cfg,
            slots: Vec::new(),
            next_key: 0,
            tasks: JoinSet::new(),
            task_keys: HashMap::new(),
            deferred: VecDeque::new(),
            restart_log: VecDeque::new(),
            total_restarts: 0,
            group_at: None,
        }
    }

    /// Starts `specs` one after the other; the first failure stops the ones already
    /// started (in reverse order) and names the child that failed.
    pub(crate) async fn start_all(cfg: Config, specs: &[ChildSpec]) -> Result<Self, Error> {
        let mut engine = Engine::new(cfg);
        for spec in specs {
            if engine.slots.iter().any(|s| s.spec.id == spec.id) {
                engine.stop_all().await;
                return Err(Error::DuplicateChild(spec.id.to_string()));
            }
            let idx = engine.push(spec.clone());
            if let Err(cause) = engine.start_slot(idx).await {
                engine.stop_all().await;
                return Err(Error::StartFailed {
                    child: spec.id.to_string(),
                    cause,
                });
            }
        }
        Ok(engine)
    }

    fn push(&mut self, spec: ChildSpec) -> usize {
        let key = self.next_key;
        self.next_key += 1;
        self.slots.push(Slot {
            key,
            spec,
            state: SlotState::Stopped,
            restarts: 0,
            failures_in_row: 0,
            last_exit: None,
            generation: 0,
        });
        self.slots.len() - 1
    }

    fn index_of(&self, key: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.key == key)
    }

    /// Runs until shut down, cancelled, or escalated; every child is stopped on return.
    pub(crate) async fn run(
        mut self,
        cmds: &mut mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) -> Outcome {
        let mut cmds_open = true;
        loop {
            if let Some(finished) = self.deferred.pop_front() {
                if let Err(Escalate(outcome)) = self.on_exit(finished).await {
                    return self.escalate(outcome).await;
                }
                continue;
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.stop_all().await;
                    return Outcome::Shutdown;
                }
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let finished = self.finished(joined);
                    if let Err(Escalate(outcome)) = self.on_exit(finished).await {
                        return self.escalate(outcome).await;
                    }
                }
                cmd = cmds.recv(), if cmds_open => match cmd {
                    None => cmds_open = false,
                    Some(Command::Shutdown(reply)) => {
                        self.stop_all().await;
                        let _ = reply.send(());
                        return Outcome::Shutdown;
                    }
                    Some(other) => self.on_command(other).await,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    if let Err(Escalate(outcome)) = self.run_due_restarts().await {
                        return self.escalate(outcome).await;
                    }
                }
            }
        }
    }

    async fn escalate(mut self, outcome: Outcome) -> Outcome {
        tracing::error!(supervisor = %self.cfg.id, ?outcome, "restart intensity exceeded: stopping all children and escalating");
        metrics::counter!(m::ESCALATIONS, "supervisor" => self.cfg.id.to_string()).increment(1);
        self.stop_all().await;
        outcome
    }

    fn next_wake(&self) -> Option<Instant> {
        let singles = self.slots.iter().filter_map(|s| match s.state {
            SlotState::Restarting { at } => Some(at),
            _ => None,
        });
        singles.chain(self.group_at).min()
    }

    // ----- starting -----

    /// Runs a child's setup in its own task and waits for the answer.
    async fn start_slot(&mut self, idx: usize) -> Result<(), BoxError> {
        let slot = &mut self.slots[idx];
        slot.generation += 1;
        let (key, generation) = (slot.key, slot.generation);
        let token = CancellationToken::new();
        let ctx = ChildContext::new(Arc::clone(&slot.spec.id), token.clone(), slot.restarts);
        let setup = (slot.spec.start)(ctx);
        let start_timeout = slot.spec.start_timeout;
        let child = Arc::clone(&slot.spec.id);

        let (ready_tx, ready_rx) = oneshot::channel();
        let abort = self
            .tasks
            .spawn(child_task(key, generation, setup, ready_tx));
        self.task_keys.insert(abort.id(), (key, generation));

        let answer = match start_timeout {
            None => ready_rx.await,
            Some(limit) => match tokio::time::timeout(limit, ready_rx).await {
                Ok(answer) => answer,
                Err(_) => {
                    abort.abort();
                    self.wait_for(key, generation, Some(Instant::now() + ABORT_WAIT))
                        .await;
                    return Err(format!("its setup did not finish within {limit:?}").into());
                }
            },
        };
        let slot = &mut self.slots[idx];
        match answer {
            Ok(Setup::Ready) => {
                slot.state = SlotState::Running(RunningTask {
                    token,
                    abort,
                    generation,
                    since: Instant::now(),
                });
                tracing::info!(supervisor = %self.cfg.id, %child, incarnation = slot.restarts, "child started");
                metrics::counter!(m::CHILD_STARTS,
                    "supervisor" => self.cfg.id.to_string(), "child" => child.to_string())
                .increment(1);
                Ok(())
            }
            Ok(Setup::Ignore) => {
                slot.state = SlotState::Ignored;
                tracing::info!(supervisor = %self.cfg.id, %child, "child ignored: its start answered Ignore");
                Ok(())
            }
            Ok(Setup::Failed(cause)) => Err(cause),
            Err(_) => Err("its task ended before its setup answered".into()),
        }
    }

    // ----- exits -----

    fn finished(&mut self, joined: Result<(tokio::task::Id, Finished), JoinError>) -> Finished {
        match joined {
            Ok((id, finished)) => {
                self.task_keys.remove(&id);
                finished
            }
            Err(err) => {
                let (key, generation) = self
                    .task_keys
                    .remove(&err.id())
                    .unwrap_or((u64::MAX, u64::MAX));
                let exit = if err.is_panic() {
                    Exit::Panic(panic_message(err.into_panic().as_ref()))
                } else {
                    Exit::Aborted
                };
                Finished {
                    key,
                    generation,
                    exit,
                }
            }
        }
    }

    /// Waits until the given incarnation has ended, keeping other exits for later.
    /// Returns false if `deadline` passed first.
    async fn wait_for(&mut self, key: u64, generation: u64, deadline: Option<Instant>) -> bool {
        // Its end may already have been collected, by an earlier wait for another task (a
        // member that died while a later one's setup was cut at its start timeout): the
        // set will not yield it again.
        if let Some(at) = self
            .deferred
            .iter()
            .position(|f| f.key == key && f.generation == generation)
        {
            self.deferred.remove(at);
            return true;
        }
        loop {
            let joined = match deadline {
                None => self.tasks.join_next_with_id().await,
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                        Ok(joined) => joined,
                        Err(_) => return false,
                    }
                }
            };
            let Some(joined) = joined else { return true };
            let finished = self.finished(joined);
            if finished.key == key && finished.generation == generation {
                return true;
            }
            self.deferred.push_back(finished);
        }
    }

    async fn on_exit(&mut self, finished: Finished) -> Result<(), Escalate> {
        let Some(idx) = self.index_of(finished.key) else {
            return Ok(());
        };
        let slot = &mut self.slots[idx];
        let lived = match &slot.state {
            SlotState::Running(run) if run.generation == finished.generation => run.since.elapsed(),
            // A stale exit: an ignored or failed setup, or an incarnation already replaced.
            _ => return Ok(()),
        };
        // This incarnation is over, whatever happens next.
        slot.state = SlotState::Stopped;
        let exit = finished.exit;
        let child = slot.spec.id.to_string();
        slot.last_exit = Some(exit.to_string());
        metrics::counter!(m::CHILD_EXITS,
            "supervisor" => self.cfg.id.to_string(), "child" => child.clone(), "reason" => exit.label())
        .increment(1);
        if exit.is_abnormal() || exit == Exit::Aborted {
            tracing::warn!(supervisor = %self.cfg.id, %child, exit = %exit, "child exited abnormally");
        } else {
            tracing::info!(supervisor = %self.cfg.id, %child, "child exited normally");
        }

        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => exit != Exit::Normal,
            Restart::Temporary => false,
        };
        if !restart {
            if self.cfg.dynamic {
                self.slots.remove(idx);
            }
            return Ok(());
        }
        if lived >= self.cfg.period {
            slot.failures_in_row = 0;
        }
        let delay = self.cfg.backoff.delay(slot.failures_in_row);
        slot.failures_in_row = slot.failures_in_row.saturating_add(1);
        let description = format!("child `{child}` {exit}");
        self.note_restart(description)?;

        match self.cfg.strategy {
            Strategy::OneForOne => {
                self.slots[idx].state = SlotState::Restarting {
                    at: Instant::now() + delay,
                };
            }
            Strategy::OneForAll => self.begin_group(0, idx, delay).await,
            Strategy::RestForOne => self.begin_group(idx, idx, delay).await,
        }
        if !delay.is_zero() {
            tracing::info!(supervisor = %self.cfg.id, %child, ?delay, "restart scheduled after backoff");
        }
        Ok(())
    }

    /// Counts a restart against the intensity; too many within the period escalates.
    fn note_restart(&mut self, description: String) -> Result<(), Escalate> {
        let now = Instant::now();
        self.restart_log.push_back(now);
        while let Some(first) = self.restart_log.front() {
            if now.duration_since(*first) > self.cfg.period {
                self.restart_log.pop_front();
            } else {
                break;
            }
        }
        if self.restart_log.len() > self.cfg.max_restarts as usize {
            return Err(Escalate(Outcome::Escalated {
                max_restarts: self.cfg.max_restarts,
                period: self.cfg.period,
                last_failure: description,
            }));
        }
        Ok(())
    }

    /// one_for_all / rest_for_one: stops the other children of the group (reverse order)
    /// and schedules the group's restart.
    ///
    /// Every non-temporary child of the group starts again, whether it was running or had
    /// ended, as OTP's `supervisor` does: a child that ended normally keeps its spec there
    /// (a transient one is not restarted *alone*), and `restart_multiple_children` starts
    /// every spec of the group; temporary children are dropped from the group instead.
    async fn begin_group(&mut self, from: usize, failed: usize, delay: Duration) {
        self.slots[failed].state = SlotState::Grouped;
        for idx in (from..self.slots.len()).rev() {
            if idx == failed {
                continue;
            }
            if matches!(self.slots[idx].state, SlotState::Running(_)) {
                self.stop_slot(idx).await;
            }
            let slot = &mut self.slots[idx];
            let rejoin = match slot.state {
                // Stopped by us just now, or ended by itself earlier (a transient child
                // that exited normally): restarted with the group, unless temporary.
                SlotState::Stopped => slot.spec.restart != Restart::Temporary,
                // Ignored children run their start again with the group, as in OTP.
                SlotState::Ignored | SlotState::Restarting { .. } | SlotState::Grouped => true,
                SlotState::Running(_) => false,
            };
            if rejoin {
                slot.state = SlotState::Grouped;
            }
        }
        let at = Instant::now() + delay;
        self.group_at = Some(self.group_at.map_or(at, |old| old.max(at)));
    }

    async fn run_due_restarts(&mut self) -> Result<(), Escalate> {
        let now = Instant::now();
        let due: Vec<u64> = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Restarting { at } if at <= now))
            .map(|s| s.key)
            .collect();
        for key in due {
            if let Some(idx) = self.index_of(key) {
                self.restart_one(idx).await?;
            }
        }
        if self.group_at.is_some_and(|at| at <= now) {
            self.group_at = None;
            self.restart_group().await?;
        }
        Ok(())
    }

    fn count_restart(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        slot.restarts = slot.restarts.saturating_add(1);
        self.total_restarts += 1;
        tracing::info!(supervisor = %self.cfg.id, child = %slot.spec.id, restarts = slot.restarts, "restarting child");
        metrics::counter!(m::RESTARTS,
            "supervisor" => self.cfg.id.to_string(), "child" => slot.spec.id.to_string())
        .increment(1);
    }

    async fn restart_one(&mut self, idx: usize) -> Result<(), Escalate> {
        self.count_restart(idx);
        let Err(cause) = self.start_slot(idx).await else {
            return Ok(());
        };
        let slot = &mut self.slots[idx];
        let text = format!("restart failed: {}", box_error_chain(&cause));
        tracing::warn!(supervisor = %self.cfg.id, child = %slot.spec.id, error = %text, "child restart failed");
        slot.last_exit = Some(text.clone());
        let delay = self.cfg.backoff.delay(slot.failures_in_row);
        slot.failures_in_row = slot.failures_in_row.saturating_add(1);
        slot.state = SlotState::Restarting {
            at: Instant::now() + delay,
        };
        let description = format!("child `{}` {text}", slot.spec.id);
        self.note_restart(description)
    }

    async fn restart_group(&mut self) -> Result<(), Escalate> {
        let members: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i].state, SlotState::Grouped))
            .collect();
        for (n, &idx) in members.iter().enumerate() {
            self.count_restart(idx);
            let Err(cause) = self.start_slot(idx).await else {
                continue;
            };
            // Undo the part of the group already started, then try the whole group again.
            for &started in members[..n].iter().rev() {
                self.stop_slot(started).await;
                self.slots[started].state = SlotState::Grouped;
            }
            let slot = &mut self.slots[idx];
            slot.state = SlotState::Grouped;
            let text = format!("restart failed: {}", box_error_chain(&cause));
            slot.last_exit = Some(text.clone());
            let delay = self.cfg.backoff.delay(slot.failures_in_row);
            slot.failures_in_row = slot.failures_in_row.saturating_add(1);
            self.group_at = Some(Instant::now() + delay);
            let description = format!("child `{}` {text}", slot.spec.id);
            return self.note_restart(description);
        }
        Ok(())
    }

    // ----- stopping -----

    /// Stops one child with its shutdown policy; its slot ends `Stopped`.
    async fn stop_slot(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        let SlotState::Running(run) = mem::replace(&mut slot.state, SlotState::Stopped) else {
            if matches!(
                slot.state,
                SlotState::Restarting { .. } | SlotState::Grouped
            ) {
                slot.state = SlotState::Stopped;
            }
            return;
        };
        let key = slot.key;
        let child = Arc::clone(&slot.spec.id);
        let policy = slot.spec.shutdown;
        let mut done = false;
        match policy {
            Shutdown::Brutal => run.abort.abort(),
            Shutdown::Timeout(grace) => {
                run.token.cancel();
                done = self
                    .wait_for(key, run.generation, Some(Instant::now() + grace))
                    .await;
                if !done {
                    tracing::warn!(supervisor = %self.cfg.id, %child, ?grace, "child ignored its cancellation for its whole grace period: aborting it");
                    run.abort.abort();
                }
            }
            Shutdown::Infinity => {
                run.token.cancel();
                done = self.wait_for(key, run.generation, None).await;
            }
        }
        if !done
            && !self
                .wait_for(key, run.generation, Some(Instant::now() + ABORT_WAIT))
                .await
        {
            tracing::error!(supervisor = %self.cfg.id, %child, "child did not stop even when aborted: it blocks its thread (a synchronous loop?)");
        }
        metrics::counter!(m::CHILD_EXITS,
            "supervisor" => self.cfg.id.to_string(), "child" => child.to_string(), "reason" => "shutdown")
        .increment(1);
        tracing::info!(supervisor = %self.cfg.id, %child, "child stopped by its supervisor");
    }

    /// Stops every child in reverse start order.
    pub(crate) async fn stop_all(&mut self) {
        self.group_at = None;
        for idx in (0..self.slots.len()).rev() {
            self.stop_slot(idx).await;
        }
        // Anything left (setups that were aborted) goes with the set.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    // ----- commands -----

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Snapshot(reply) => {
                let _ = reply.send((self.total_restarts, self.infos()));
            }
            Command::StartChild(spec, reply) => {
                let _ = reply.send(self.start_child(spec).await);
            }
            Command::TerminateChild(child, reply) => {
                let _ = reply.send(self.terminate_child(child).await);
            }
            Command::Shutdown(reply) => {
                // Handled by the loop; kept for exhaustiveness.
                let _ = reply.send(());
            }
        }
    }

    async fn start_child(&mut self, spec: ChildSpec) -> Result<ChildId, Error> {
        if let Some(max) = self.cfg.max_children
            && self.slots.len() >= max
        {
            return Err(Error::TooManyChildren {
                supervisor: self.cfg.id.to_string(),
                max,
            });
        }
        if !self.cfg.dynamic && self.slots.iter().any(|s| s.spec.id == spec.id) {
            return Err(Error::DuplicateChild(spec.id.to_string()));
        }
        let id = spec.id.to_string();
        let idx = self.push(spec);
        let key = self.slots[idx].key;
        let outcome = self.start_slot(idx).await;
        let ignored = matches!(self.slots[idx].state, SlotState::Ignored);
        match outcome {
            Ok(()) if !(ignored && self.cfg.dynamic) => Ok(ChildId(key)),
            Ok(()) => {
                self.slots.remove(idx);
                Err(Error::StartFailed {
                    child: id,
                    cause: "its start answered Ignore, so there is nothing to run".into(),
                })
            }
            Err(cause) => {
                self.slots.remove(idx);
                Err(Error::StartFailed { child: id, cause })
            }
        }
    }

    async fn terminate_child(&mut self, child: ChildId) -> Result<(), Error> {
        let Some(idx) = self.index_of(child.0) else {
            return Err(Error::UnknownChild(child.to_string()));
        };
        self.stop_slot(idx).await;
        self.slots.remove(idx);
        Ok(())
    }

    fn infos(&self) -> Vec<ChildInfo> {
        self.slots
            .iter()
            .map(|s| ChildInfo {
                child_id: ChildId(s.key),
                id: s.spec.id.to_string(),
                state: match s.state {
                    SlotState::Running(_) => ChildState::Running,
                    SlotState::Ignored => ChildState::Ignored,
                    SlotState::Restarting { .. } | SlotState::Grouped => ChildState::Restarting,
                    SlotState::Stopped => ChildState::Stopped,
                },
                restarts: s.restarts,
                last_exit: s.last_exit.clone(),
                is_supervisor: s.spec.nested.is_some(),
                nested: s.spec.nested.clone(),
            })
            .collect()
    }
}

/// The body of every child task: setup (reported through `ready`), then the run phase.
/// Panics in either phase are caught here so their messages are kept.
async fn child_task(
    key: u64,
    generation: u64,
    setup: BoxFuture<'static, Result<Started, BoxError>>,
    ready: oneshot::Sender<Setup>,
) -> Finished {
    let done = |exit| Finished {
        key,
        generation,
        exit,
    };
    let run = match AssertUnwindSafe(setup).catch_unwind().await {
        Ok(Ok(Started::Run(run))) => {
            if ready.send(Setup::Ready).is_err() {
                return done(Exit::Aborted);
            }
            run
        }
        Ok(Ok(Started::Ignore)) => {
            let _ = ready.send(Setup::Ignore);
            return done(Exit::Normal);
        }
        Ok(Err(cause)) => {
            let _ = ready.send(Setup::Failed(cause));
            return done(Exit::Normal);
        }
        Err(panic) => {
            let message = format!("panicked during setup: {}", panic_message(panic.as_ref()));
            let _ = ready.send(Setup::Failed(message.into()));
            return done(Exit::Normal);
        }
    };
    let exit = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(())) => Exit::Normal,
        Ok(Err(err)) => Exit::Error(box_error_chain(&err)),
        Err(panic) => Exit::Panic(panic_message(panic.as_ref())),
    };
    done(exit)
}
