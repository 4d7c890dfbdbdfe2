//! A view of a running supervision tree.

use std::fmt;

use crate::supervisor::handle::SupervisorHandle;

/// Identifies one child of a supervisor. In a dynamic supervisor it is what
/// [`start_child`](crate::supervisor::DynamicSupervisorHandle::start_child) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(pub(crate) u64);

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a child is in its life.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Its setup is running.
    Starting,
    /// Its run phase is running.
    Running,
    /// It exited and waits for its restart (backoff, or its group's restart).
    Restarting,
    /// Its start answered `Ignore`: the spec is kept, nothing runs.
    Ignored,
    /// It exited and will not be restarted (transient after a normal exit, temporary, or
    /// stopped by its supervisor).
    Stopped,
}

/// One child as its supervisor sees it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// The child's unique id within its supervisor.
    pub child_id: ChildId,
    /// The id of the child's spec.
    pub id: String,
    /// Its current state.
    pub state: ChildState,
    /// How many times it was restarted.
    pub restarts: u32,
    /// How its last incarnation ended, if one did.
    pub last_exit: Option<String>,
    /// Whether the child is itself a supervisor.
    pub is_supervisor: bool,
    pub(crate) nested: Option<SupervisorHandle>,
}

/// Counts of a supervisor's children, like OTP's `count_children`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildCounts {
    /// All child specs the supervisor holds.
    pub specs: usize,
    /// Children whose task is running (or starting).
    pub active: usize,
    /// Children that are supervisors.
    pub supervisors: usize,
    /// Children that are workers.
    pub workers: usize,
}

/// A snapshot of a supervisor and, recursively, of the supervisors below it.
#[derive(Debug, Clone)]
pub struct TreeSnapshot {
    /// The supervisor's id.
    pub id: String,
    /// Total restarts this supervisor performed.
    pub restarts: u64,
    /// Its children in start order.
    pub children: Vec<ChildSnapshot>,
}

/// One child in a [`TreeSnapshot`].
#[derive(Debug, Clone)]
pub struct ChildSnapshot {
    /// The child's unique id within its supervisor.
    pub child_id: ChildId,
    /// The id of the child's spec.
    pub id: String,
    /// Its current state.
    pub state: ChildState,
    /// How many times it was restarted.
    pub restarts: u32,
    /// How its last incarnation ended, if one did.
    pub last_exit: Option<String>,
    /// The subtree, when the child is a supervisor that answered in time.
    pub subtree: Option<Box<TreeSnapshot>>,
}

impl TreeSnapshot {
    /// Finds a descendant by a path of child ids, e.g. `["brokers", "kafka"]`.
    pub fn find(&self, path: &[&str]) -> Option<&ChildSnapshot> {
        let (first, rest) = path.split_first()?;
        let child = self.children.iter().find(|c| c.id == *first)?;
        if rest.is_empty() {
            return Some(child);
        }
        child.subtree.as_ref()?.find(rest)
    }

    fn render_children(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        for child in &self.children {
            write!(
                f,
                "{:indent$}- {} {:?}, restarts {}",
                "",
                child.id,
                child.state,
                child.restarts,
                indent = depth * 2
            )?;
            if let Some(sub) = &child.subtree {
                write!(f, " (supervisor; {} restarts inside)", sub.restarts)?;
            }
            if let Some(exit) = &child.last_exit {
                write!(f, ", last: {exit}")?;
            }
            writeln!(f)?;
            if let Some(sub) = &child.subtree {
                sub.render_children(f, depth + 1)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for TreeSnapshot {
    /// An indented tree, one child a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (restarts: {})", self.id, self.restarts)?;
        self.render_children(f, 1)
    }
}
