//! The names of the metrics this crate records, through the
//! [`metrics`](https://docs.rs/metrics) facade (install any `metrics` recorder, e.g. a
//! Prometheus exporter, to collect them; without one they cost next to nothing).
//!
//! Supervisors record them all; a service's mailbox and the in-memory transport record
//! none. Every metric carries the label `supervisor` (the id given to
//! [`Supervisor::builder`](crate::supervisor::Supervisor::builder) or
//! [`DynamicSupervisor::builder`](crate::supervisor::DynamicSupervisor::builder)); those
//! about one child carry `child` too (the id of its [`ChildSpec`](crate::supervisor::ChildSpec),
//! or the id a dynamic supervisor gave it). The guide (`docs/core.md`, "Events and
//! metrics") shows them with the `tracing` events that go with them.

/// Counter, in starts: a child's setup answered `Started::task` and its task runs (first
/// starts and restarts alike).
///
/// Labels: `supervisor`, `child`.
pub const CHILD_STARTS: &str = "wharf_supervisor_child_starts_total";

/// Counter, in exits: a child's task ended, by label `reason`: `normal` (it returned
/// `Ok`), `error` (it returned `Err`), `panic`, `aborted` (its task was aborted or
/// dropped from outside), `shutdown` (its supervisor stopped it).
///
/// Labels: `supervisor`, `child`, `reason`.
pub const CHILD_EXITS: &str = "wharf_supervisor_child_exits_total";

/// Counter, in restarts: a supervisor started a child again after it exited (by the
/// child's restart type and the supervisor's strategy), whether or not the new setup
/// succeeded.
///
/// Labels: `supervisor`, `child`.
pub const RESTARTS: &str = "wharf_supervisor_restarts_total";

/// Counter, in escalations: a supervisor exceeded its restart intensity, stopped its
/// children and exited with `Error::IntensityExceeded`, so its parent decides.
///
/// Labels: `supervisor`.
pub const ESCALATIONS: &str = "wharf_supervisor_escalations_total";
