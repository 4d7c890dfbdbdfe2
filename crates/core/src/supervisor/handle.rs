//! Handles to running supervisors.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;
use crate::supervisor::child_spec::ChildSpec;
use crate::supervisor::introspect::{
    ChildCounts, ChildId, ChildInfo, ChildSnapshot, ChildState, TreeSnapshot,
};

/// How long a handle waits for its supervisor to answer a question, by default.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests from handles to a supervisor's loop.
pub(crate) enum Command {
    Snapshot(oneshot::Sender<(u64, Vec<ChildInfo>)>),
    Shutdown(oneshot::Sender<()>),
    StartChild(ChildSpec, oneshot::Sender<Result<ChildId, Error>>),
    TerminateChild(ChildId, oneshot::Sender<Result<(), Error>>),
}

/// How a supervisor's loop ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Shutdown,
    Escalated {
        max_restarts: u32,
        period: Duration,
        last_failure: String,
    },
}

/// A cloneable handle to a running supervisor: ask what runs, shut it down, wait for it.
///
/// The handle belongs to the supervisor's slot, not to one run of it: when a supervisor is
/// itself a child that gets restarted, the same handle talks to the next incarnation.
#[derive(Clone)]
pub struct SupervisorHandle {
    pub(crate) id: Arc<str>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) done: watch::Receiver<Option<Outcome>>,
    pub(crate) call_timeout: Duration,
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("id", &self.id)
            .field("finished", &self.done.borrow().is_some())
            .finish_non_exhaustive()
    }
}

impl SupervisorHandle {
    /// The supervisor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sets how long calls on this handle wait for the supervisor to answer (default 5 s).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Whether the supervisor's current run has ended (shut down or escalated).
    pub fn is_finished(&self) -> bool {
        self.done.borrow().is_some()
    }

    async fn call<T>(
        &self,
        what: &str,
        timeout: Option<Duration>,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let exchange = async {
            self.tx
                .send(make(reply_tx))
                .await
                .map_err(|_| Error::Stopped(self.id.to_string()))?;
            reply_rx
                .await
                .map_err(|_| Error::Stopped(self.id.to_string()))
        };
        match timeout {
            None => exchange.await,
            Some(limit) => {
                tokio::time::timeout(limit, exchange)
                    .await
                    .map_err(|_| Error::Timeout {
                        what: format!("{what} on supervisor `{}`", self.id),
                        after: limit,
                    })?
            }
        }
    }

    /// The supervisor's children in start order, with their states and restart counts.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, Error> {
        let (_, children) = self
            .call("which_children", Some(self.call_timeout), Command::Snapshot)
            .await?;
        Ok(children)
    }

    /// Counts of children, like OTP's `count_children`.
    pub async fn count_children(&self) -> Result<ChildCounts, Error> {
        let children = self.which_children().await?;
        let mut counts = ChildCounts {
            specs: children.len(),
            ..ChildCounts::default()
        };
        for child in &children {
            if matches!(child.state, ChildState::Running | ChildState::Starting) {
                counts.active += 1;
            }
            if child.is_supervisor {
                counts.supervisors += 1;
            } else {
                counts.workers += 1;
            }
        }
        Ok(counts)
    }

    /// A snapshot of this supervisor and of every supervisor below it.
    ///
    /// A nested supervisor that does not answer within the call timeout (it may be busy
    /// restarting) appears without its subtree.
    pub fn snapshot(&self) -> impl Future<Output = Result<TreeSnapshot, Error>> + Send + '_ {
        Box::pin(async move {
            let (restarts, children) = self
                .call("snapshot", Some(self.call_timeout), Command::Snapshot)
                .await?;
            let mut out = Vec::with_capacity(children.len());
            for child in children {
                let subtree = match &child.nested {
                    Some(nested) => nested.snapshot().await.ok().map(Box::new),
                    None => None,
                };
                out.push(ChildSnapshot {
                    child_id: child.child_id,
                    id: child.id,
                    state: child.state,
                    restarts: child.restarts,
                    last_exit: child.last_exit,
                    subtree,
                });
            }
            Ok(TreeSnapshot {
                id: self.id.to_string(),
                restarts,
                children: out,
            })
        })
    }

    /// Stops every child in reverse start order (each with its shutdown policy), then the
    /// supervisor. Returns how the supervisor ended: `Err` if it had already escalated.
    pub async fn shutdown(&self) -> Result<(), Error> {
        // No timeout: shutdown takes as long as the children's grace periods allow.
        let _ = self.call("shutdown", None, Command::Shutdown).await;
        self.join().await
    }

    /// Waits until the supervisor ends: `Ok(())` after a shutdown,
    /// [`Error::IntensityExceeded`] after an escalation.
    pub async fn join(&self) -> Result<(), Error> {
        let mut done = self.done.clone();
        let outcome = match done.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            // The loop vanished without a word: it can only have been aborted.
            Err(_) => return Err(Error::Stopped(self.id.to_string())),
        };
        match outcome {
            Some(Outcome::Escalated {
                max_restarts,
                period,
                last_failure,
            }) => Err(Error::IntensityExceeded {
                supervisor: self.id.to_string(),
                max_restarts,
                period,
                last_failure,
            }),
            _ => Ok(()),
        }
    }
}

/// A handle to a running dynamic supervisor: add and remove children at run time.
#[derive(Clone, Debug)]
pub struct DynamicSupervisorHandle {
    pub(crate) inner: SupervisorHandle,
}

impl DynamicSupervisorHandle {
    /// Starts a child from `spec` and waits for its setup. The spec's id need not be unique:
    /// the returned [`ChildId`] is.
    ///
    /// Fails with [`Error::TooManyChildren`] at the bound, [`Error::StartFailed`] if the setup
    /// fails; a child whose start answers `Ignore` is not kept, and this answers
    /// [`Error::StartFailed`] with that reason.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ChildId, Error> {
        let limit = spec
            .start_timeout
            .map(|t| t.saturating_add(self.inner.call_timeout));
        self.inner
            .call("start_child", limit, |reply| {
                Command::StartChild(spec, reply)
            })
            .await?
    }

    /// Stops a child (with its shutdown policy) and forgets it.
    pub async fn terminate_child(&self, child: ChildId) -> Result<(), Error> {
        // Bounded by the child's own shutdown policy; the call itself is not timed.
        self.inner
            .call("terminate_child", None, |reply| {
                Command::TerminateChild(child, reply)
            })
            .await?
    }

    /// The children, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, Error> {
        self.inner.which_children().await
    }

    /// Counts of children.
    pub async fn count_children(&self) -> Result<ChildCounts, Error> {
        self.inner.count_children().await
    }

    /// The plain supervisor handle (snapshot, shutdown, join).
    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.inner
    }

    /// Stops every child in reverse start order, then the supervisor.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.shutdown().await
    }
}
