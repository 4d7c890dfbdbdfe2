//! Supervision trees with Erlang/OTP semantics, and what OTP lacks.
//!
//! A supervisor starts children from [`ChildSpec`]s, watches them, restarts them by a
//! [`Strategy`] and their [`Restart`] type, gives up after too many restarts (escalating to
//! its own parent), and stops them in reverse start order with a grace period each.
//!
//! | you need | use |
//! | --- | --- |
//! | a fixed set of children started in order, restarted by a strategy | [`Supervisor::builder`] |
//! | many children of one kind, added and removed at run time, bounded | [`DynamicSupervisor::builder`] |
//! | a supervisor below another one | [`SupervisorBuilder::into_child`] |
//! | a service whose callers keep their handle across its restarts | [`crate::service`] |
//!
//! ## OTP semantics kept
//! - **Two-phase start.** A start function does its setup and answers [`Started::Run`],
//!   [`Started::Ignore`] or an error; the supervisor waits for that answer before starting the
//!   next child. A failed start fails the supervisor's start with
//!   [`Error::StartFailed`](crate::Error::StartFailed) naming the child.
//! - **Strategies** one_for_one, one_for_all, rest_for_one; **restart types** permanent,
//!   transient (restarted only after an `Err` or a panic), temporary (never).
//! - **Intensity.** More than `max_restarts` within `period` stops every child and ends the
//!   supervisor with [`Error::IntensityExceeded`](crate::Error::IntensityExceeded); as a child,
//!   that is an abnormal exit its parent handles.
//! - **Shutdown** in reverse start order: a cancellation signal ([`ChildContext::cancelled`]),
//!   the child's grace period ([`Shutdown`]), then abort.
//! - **Ignore** keeps the spec and runs nothing; one_for_all and rest_for_one restarts run an
//!   ignored child's start again, as OTP does.
//! - **Group restarts start every non-temporary child of the group**, including one that had
//!   ended by itself: a transient child that exited normally stays stopped only until its
//!   group restarts (OTP's `supervisor` keeps its spec and `restart_multiple_children`
//!   starts it with the others). Temporary children are stopped with the group and never
//!   started again.
//!
//! ## Where wharf differs from OTP
//! - **Backoff between restarts** (exponential, jittered), so a dead broker is not hammered.
//!   `Backoff::none()` gives OTP's immediate restarts. A child that ran at least one intensity
//!   period starts again from the first delay. A restart whose setup fails counts as a
//!   restart and is tried again after the next delay.
//! - **Panics are exits.** A panic in setup or in the run phase is caught; its message is
//!   the exit reason and it counts as abnormal.
//! - **Observability.** `tracing` events for every start, exit, restart and escalation, and
//!   a `metrics` counter for each, named in [`crate::metrics`].
//! - **Introspection** of a running tree: [`SupervisorHandle::snapshot`] walks nested
//!   supervisors and reports ids, states, restart counts and last exits.
//! - **Bounded setup**: a child's setup that does not answer within its
//!   [`ChildSpec::start_timeout`] (default 30 s) is aborted and counts as a failed start.
//!
//! ## Example
//! ```
//! use std::time::Duration;
//! use wharf_core::Backoff;
//! use wharf_core::supervisor::{ChildSpec, Started, Strategy, Supervisor};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wharf_core::Error> {
//! let worker = ChildSpec::new("worker", |ctx| async move {
//!     Ok::<_, std::io::Error>(Started::task(async move {
//!         ctx.cancelled().await;
//!         Ok::<_, std::io::Error>(())
//!     }))
//! });
//! let root = Supervisor::builder("root")
//!     .strategy(Strategy::OneForOne)
//!     .intensity(3, Duration::from_secs(5))
//!     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)))
//!     .child(worker)
//!     .start()
//!     .await?;
//! let tree = root.snapshot().await?;
//! assert_eq!(tree.children[0].id, "worker");
//! root.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod builder;
mod child_spec;
mod engine;
mod exit;
mod handle;
mod introspect;

#[doc(inline)]
pub use builder::{
    DynamicSupervisor, DynamicSupervisorBuilder, Strategy, Supervisor, SupervisorBuilder,
};
#[doc(inline)]
pub use child_spec::{ChildContext, ChildSpec, ChildTask, Restart, Shutdown, Started};
#[doc(inline)]
pub use exit::panic_message;
#[doc(inline)]
pub use handle::{DynamicSupervisorHandle, SupervisorHandle};
#[doc(inline)]
pub use introspect::{ChildCounts, ChildId, ChildInfo, ChildSnapshot, ChildState, TreeSnapshot};
