//! Building and starting supervisors, at the root or as children of other supervisors.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::supervisor::child_spec::{ChildSpec, Shutdown, Started};
use crate::supervisor::engine::{Config, Engine};
use crate::supervisor::handle::{
    Command, DEFAULT_CALL_TIMEOUT, DynamicSupervisorHandle, Outcome, SupervisorHandle,
};

/// Which children a supervisor restarts when one of them exits and must be restarted.
///
/// In a group restart (`OneForAll`, `RestForOne`) every child of the group starts again
/// unless it is [`Restart::Temporary`](crate::supervisor::Restart::Temporary), including a
/// child that had already ended by itself (a transient child that exited normally), as in
/// OTP. Temporary children of the group are stopped and stay stopped. A transient child
/// that did a one-off job and returned `Ok` therefore runs again with its group: make it
/// temporary if it must run once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (reverse start order), then all start again in
    /// start order. For children that cannot work without each other.
    OneForAll,
    /// The child that exited and every child started after it. For children that depend on
    /// the ones started before them.
    RestForOne,
}

/// Capacity of a supervisor's command mailbox.
const COMMAND_CAPACITY: usize = 64;

/// Entry point for static supervisors: `Supervisor::builder("root")`.
#[derive(Debug)]
pub struct Supervisor;

impl Supervisor {
    /// A builder with OTP-like defaults: one_for_one, at most 3 restarts in 5 s, and a
    /// jittered backoff from 100 ms to 10 s between restarts.
    pub fn builder(id: impl Into<String>) -> SupervisorBuilder {
        SupervisorBuilder {
            cfg: Config {
                id: Arc::from(id.into()),
                strategy: Strategy::OneForOne,
                max_restarts: 3,
                period: Duration::from_secs(5),
                backoff: Backoff::default(),
                max_children: None,
                dynamic: false,
            },
            children: Vec::new(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// Configures a supervisor, then starts it at the root or turns it into a child spec.
#[derive(Debug)]
pub struct SupervisorBuilder {
    cfg: Config,
    children: Vec<ChildSpec>,
    call_timeout: Duration,
}

impl SupervisorBuilder {
    /// Sets the restart strategy (default one_for_one).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.cfg.strategy = strategy;
        self
    }

    /// More than `max_restarts` restarts within `period` make the supervisor stop its
    /// children and exit abnormally (escalate to its parent). Default: 3 in 5 s.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.cfg.max_restarts = max_restarts;
        self.cfg.period = period;
        self
    }

    /// The delay before each restart (default 100 ms doubling to 10 s, jittered). A child
    /// that ran at least one intensity period before it exited starts again from the
    /// first delay. `Backoff::none()` restarts at once, as OTP does.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.backoff = backoff;
        self
    }

    /// Adds a child; children start in the order they are added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Adds several children, in order.
    pub fn children(mut self, specs: impl IntoIterator<Item = ChildSpec>) -> Self {
        self.children.extend(specs);
        self
    }

    /// How long handle calls wait for an answer (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Starts the supervisor at the root of a tree: every child's setup, one after the other.
    ///
    /// Fails with [`Error::StartFailed`] naming the first child whose start failed (the
    /// children already started are stopped first), or [`Error::DuplicateChild`].
    pub async fn start(self) -> Result<SupervisorHandle, Error> {
        start_root(self.cfg, self.children, self.call_timeout).await
    }

    /// Turns the supervisor into a child of another supervisor, with a handle that stays
    /// valid across its restarts. Its start function starts all its children (so the
    /// parent's next child waits for the whole subtree); it escalates to the parent by
    /// exiting with [`Error::IntensityExceeded`]. Its shutdown policy is
    /// [`Shutdown::Infinity`]: each of its own children has a bounded grace period.
    pub fn into_child(self) -> (ChildSpec, SupervisorHandle) {
        nested(self.cfg, self.children, self.call_timeout)
    }

    /// Like [`into_child`](Self::into_child), dropping the handle.
    pub fn into_child_spec(self) -> ChildSpec {
        self.into_child().0
    }
}

/// Entry point for dynamic supervisors: many children of one kind, added and removed at
/// run time (OTP's `simple_one_for_one`, Elixir's `DynamicSupervisor`).
#[derive(Debug)]
pub struct DynamicSupervisor;

impl DynamicSupervisor {
    /// A builder: one_for_one, at most 3 restarts in 5 s, jittered backoff, and a bound of
    /// 1024 children.
    pub fn builder(id: impl Into<String>) -> DynamicSupervisorBuilder {
        DynamicSupervisorBuilder {
            cfg: Config {
                id: Arc::from(id.into()),
                strategy: Strategy::OneForOne,
                max_restarts: 3,
                period: Duration::from_secs(5),
                backoff: Backoff::default(),
                max_children: Some(1024),
                dynamic: true,
            },
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// Configures a dynamic supervisor.
#[derive(Debug)]
pub struct DynamicSupervisorBuilder {
    cfg: Config,
    call_timeout: Duration,
}

impl DynamicSupervisorBuilder {
    /// The bound on the number of children (default 1024).
    pub fn max_children(mut self, max: usize) -> Self {
        self.cfg.max_children = Some(max);
        self
    }

    /// Restart intensity, as for [`SupervisorBuilder::intensity`].
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.cfg.max_restarts = max_restarts;
        self.cfg.period = period;
        self
    }

    /// Restart backoff, as for [`SupervisorBuilder::backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.backoff = backoff;
        self
    }

    /// How long handle calls wait for an answer (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Starts it at the root of a tree, with no children.
    pub async fn start(self) -> Result<DynamicSupervisorHandle, Error> {
        let inner = start_root(self.cfg, Vec::new(), self.call_timeout).await?;
        Ok(DynamicSupervisorHandle { inner })
    }

    /// Turns it into a child of another supervisor. A restart of the dynamic supervisor
    /// starts it empty, as in OTP; the handle stays valid across restarts.
    pub fn into_child(self) -> (ChildSpec, DynamicSupervisorHandle) {
        let (spec, inner) = nested(self.cfg, Vec::new(), self.call_timeout);
        (spec, DynamicSupervisorHandle { inner })
    }
}

fn channels(
    cfg: &Config,
    call_timeout: Duration,
) -> (
    SupervisorHandle,
    mpsc::Receiver<Command>,
    watch::Sender<Option<Outcome>>,
) {
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (done_tx, done_rx) = watch::channel(None);
    let handle = SupervisorHandle {
        id: Arc::clone(&cfg.id),
        tx,
        done: done_rx,
        call_timeout,
    };
    (handle, rx, done_tx)
}

async fn start_root(
    cfg: Config,
    children: Vec<ChildSpec>,
    call_timeout: Duration,
) -> Result<SupervisorHandle, Error> {
    let (handle, mut cmds, done_tx) = channels(&cfg, call_timeout);
    let engine = Engine::start_all(cfg, &children).await?;
    tokio::spawn(async move {
        let outcome = engine.run(&mut cmds, CancellationToken::new()).await;
        done_tx.send_replace(Some(outcome));
    });
    Ok(handle)
}

fn nested(
    cfg: Config,
    children: Vec<ChildSpec>,
    call_timeout: Duration,
) -> (ChildSpec, SupervisorHandle) {
    let (handle, cmds, done_tx) = channels(&cfg, call_timeout);
    // The mailbox belongs to the slot: each incarnation takes it for its lifetime.
    let cmds = Arc::new(Mutex::new(cmds));
    let done_tx = Arc::new(done_tx);
    let children = Arc::new(children);
    let id = cfg.id.to_string();
    let spec = ChildSpec::new(id, move |ctx| {
        let (cfg, children, cmds, done_tx) = (
            cfg.clone(),
            Arc::clone(&children),
            Arc::clone(&cmds),
            Arc::clone(&done_tx),
        );
        async move {
            let mut cmds = cmds.lock_owned().await;
            let engine = Engine::start_all(cfg, &children).await?;
            done_tx.send_replace(None);
            Ok::<_, Error>(Started::task(async move {
                let outcome = engine.run(&mut cmds, ctx.token()).await;
                done_tx.send_replace(Some(outcome.clone()));
                match outcome {
                    Outcome::Shutdown => Ok(()),
                    Outcome::Escalated {
                        max_restarts,
                        period,
                        last_failure,
                    } => Err(Error::IntensityExceeded {
                        supervisor: ctx.id().to_owned(),
                        max_restarts,
                        period,
                        last_failure,
                    }),
                }
            }))
        }
    })
    .shutdown(Shutdown::Infinity)
    .start_timeout(None);
    let spec = ChildSpec {
        nested: Some(handle.clone()),
        ..spec
    };
    (spec, handle)
}
