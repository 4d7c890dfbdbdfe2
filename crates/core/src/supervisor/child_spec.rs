//! How to start a child, when to restart it, and how to stop it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::error::BoxError;
use crate::supervisor::handle::SupervisorHandle;

/// The run phase of a child: a future that ends when the child's work ends.
///
/// `Ok(())` is a normal exit, `Err` an abnormal one; a panic inside it is caught by the
/// supervisor and treated as an abnormal exit whose reason is the panic message.
pub type ChildTask = BoxFuture<'static, Result<(), BoxError>>;

type StartFn = dyn Fn(ChildContext) -> BoxFuture<'static, Result<Started, BoxError>> + Send + Sync;

/// What a child's start function answers once its setup is done.
///
/// This is OTP's `init` result: the supervisor waits for it before it starts the next
/// child, so later children can rely on earlier ones being ready.
pub enum Started {
    /// Setup succeeded; the supervisor now runs this task as the child.
    Run(ChildTask),
    /// The child has nothing to do (for example: it is not configured). The supervisor keeps
    /// its spec, runs nothing, and the rest of the tree starts normally.
    Ignore,
}

impl Started {
    /// Wraps the child's run phase.
    pub fn task<F, E>(task: F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Started::Run(Box::pin(async move { task.await.map_err(Into::into) }))
    }
}

impl fmt::Debug for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Started::Run(_) => f.write_str("Started::Run(..)"),
            Started::Ignore => f.write_str("Started::Ignore"),
        }
    }
}

/// When a child that exited is restarted (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always restarted, whatever the exit.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit: an `Err` or a panic.
    Transient,
    /// Never restarted.
    Temporary,
}

/// How a child is stopped when its supervisor shuts it down or restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Abort the task at once, without a cancellation signal.
    Brutal,
    /// Signal cancellation, wait this long for the task to end by itself, then abort it.
    Timeout(Duration),
    /// Signal cancellation and wait as long as it takes. Meant for children that are
    /// supervisors themselves, whose own children have bounded grace periods.
    Infinity,
}

impl Default for Shutdown {
    /// Five seconds of grace.
    fn default() -> Self {
        Shutdown::Timeout(Duration::from_secs(5))
    }
}

/// What a child's start function receives: its identity and its cancellation signal.
#[derive(Debug, Clone)]
pub struct ChildContext {
    id: Arc<str>,
    token: CancellationToken,
    incarnation: u32,
}

impl ChildContext {
    pub(crate) fn new(id: Arc<str>, token: CancellationToken, incarnation: u32) -> Self {
        Self {
            id,
            token,
            incarnation,
        }
    }

    /// The child's id, as given to its [`ChildSpec`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many times this child has been restarted before this start (0 the first time).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Resolves when the supervisor asks the child to stop. A child should then finish its
    /// work quickly (within its [`Shutdown`] grace period) and return `Ok(())`.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Whether the supervisor has asked the child to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The cancellation token itself, to hand to sub-tasks of the child.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// The recipe for a supervised child: an id, a start function, a restart type, a shutdown
/// policy.
///
/// The start function is called for the first start and for every restart. It does the
/// child's setup and answers [`Started::Run`] with the run phase, [`Started::Ignore`], or an
/// error. The supervisor waits for that answer (at most [`ChildSpec::start_timeout`]) before
/// it starts the next child; a failed first start fails the supervisor's own start with an
/// error naming this child.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::supervisor::{ChildSpec, Restart, Shutdown, Started};
///
/// let spec = ChildSpec::new("ticker", |ctx| async move {
///     // setup: connect, load, validate... before the next child starts
///     Ok::<_, std::io::Error>(Started::task(async move {
///         ctx.cancelled().await; // run until asked to stop
///         Ok::<_, std::io::Error>(())
///     }))
/// })
/// .restart(Restart::Transient)
/// .shutdown(Shutdown::Timeout(Duration::from_secs(2)));
/// assert_eq!(spec.id(), "ticker");
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: Arc<str>,
    pub(crate) start: Arc<StartFn>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) nested: Option<SupervisorHandle>,
}

impl ChildSpec {
    /// The default bound on a child's setup.
    pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

    /// A permanent child with five seconds of shutdown grace and a 30 s setup bound.
    pub fn new<F, Fut, E>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ChildContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Started, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let start: Arc<StartFn> = Arc::new(move |ctx| {
            let fut = start(ctx);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Self {
            id: Arc::from(id.into()),
            start,
            restart: Restart::default(),
            shutdown: Shutdown::default(),
            start_timeout: Some(Self::DEFAULT_START_TIMEOUT),
            nested: None,
        }
    }

    /// A child whose whole life is one future, with no separate setup phase.
    pub fn from_task<F, Fut, E>(id: impl Into<String>, task: F) -> Self
    where
        F: Fn(ChildContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let task = Arc::new(task);
        Self::new(id, move |ctx| {
            let task = Arc::clone(&task);
            async move { Ok::<_, BoxError>(Started::task(task(ctx))) }
        })
    }

    /// Sets the restart type (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown policy (default five seconds of grace).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Bounds the setup phase; `None` waits as long as it takes (default 30 s).
    pub fn start_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The child's restart type.
    pub fn restart_type(&self) -> Restart {
        self.restart
    }

    /// The child's shutdown policy.
    pub fn shutdown_policy(&self) -> Shutdown {
        self.shutdown
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("start_timeout", &self.start_timeout)
            .field("supervisor", &self.nested.is_some())
            .finish_non_exhaustive()
    }
}
