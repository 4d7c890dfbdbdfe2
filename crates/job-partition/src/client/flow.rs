//! Flows (a parent job that runs once all its children have settled) and batches (jobs
//! whose callbacks run once the last of them has settled).
//!
//! Members (a flow's children, a batch's jobs) may sit in any queue of any partition; each
//! partition is its own hash tag, so the step that counts a member's outcome into its flow
//! or batch cannot be the step that finishes the member. It takes two:
//!
//! 1. the script that finishes a member (complete, fail to dead, cancel, delete, purge, a
//!    lease expiry of a cancelled job) records its outcome in the member's own partition's
//!    **outbox**, atomically with the finish (so under the lease: a fenced-off worker
//!    records nothing);
//! 2. [`Jobs::forward`] counts it in the flow's or batch's partition (`settle.lua`,
//!    idempotent: a member counts once) and then removes it from the outbox.
//!
//! The worker that finished the member forwards at once; if it dies between the steps,
//! the entry stays in the outbox and the lease check of any worker of that partition
//! (every second) forwards it. Counting twice is impossible (step 2 is idempotent), and the
//! member whose count completes the flow or batch releases the parent or callbacks in the
//! same script, so they are released exactly once.
//!
//! Creation is ordered for the same reason: the members are stored first (one script per
//! partition), the parent or callbacks last. A member that settles before its flow is
//! stored is kept in the outbox and forwarded again until the flow exists (or, after
//! [`MISSING_GRACE`], dropped: its flow's creation failed).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::enqueue::{Pending, pending};
use super::{JobState, Jobs};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::keys::{self, check_name};
use crate::scripts::scripts;

/// Most children a flow may have (each child's outcome and result is kept in the parent's
/// record until the parent is trimmed, so the parent's record stays bounded).
pub const MAX_FLOW_CHILDREN: usize = 1000;

/// Most jobs a batch may have.
pub const MAX_BATCH_JOBS: usize = 10_000;

/// How long a member's outcome is kept for a flow or batch that does not exist (yet): its
/// creation stores the members first, so one may finish before its flow is stored. Past
/// this, the outcome is dropped (the creation failed or was interrupted).
pub const MISSING_GRACE: Duration = Duration::from_secs(60);

/// Jobs stored per spawn script call (bounds the script's run time).
const CHUNK: usize = 500;

/// What a flow does when a child did not complete (died, was cancelled or deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChildFailure {
    /// The parent does not run: once every child has settled it goes to the dead set, its
    /// error naming the failed children (the default).
    #[default]
    FailParent,
    /// The parent runs; [`Children::failed`] is empty and failed children are left out.
    Ignore,
    /// The parent runs with the failures listed in [`Children::failed`].
    Report,
}

impl ChildFailure {
    fn as_str(self) -> &'static str {
        match self {
            Self::FailParent => "fail",
            Self::Ignore => "ignore",
            Self::Report => "report",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "ignore" => Self::Ignore,
            "report" => Self::Report,
            _ => Self::FailParent,
        }
    }
}

/// Where a member of a flow or a batch was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// Its partition.
    pub partition: String,
    /// Its queue.
    pub queue: String,
    /// Its id.
    pub id: String,
}

struct Planned {
    partition: String,
    queue: String,
    job: Result<Pending>,
}

fn plan<J: Job<S>, S>(partition: &str, queue: &str, job: &J) -> Planned {
    Planned {
        partition: partition.to_owned(),
        queue: queue.to_owned(),
        job: pending(job, 0, 0),
    }
}

/// A parent job and its children, for [`Jobs::enqueue_flow`].
///
/// The parent runs (once) after every child has settled; children are new jobs given by
/// value, never existing ones, and a child cannot be a flow: a flow is a tree of depth one,
/// so a cycle cannot be built. Mistakes found while building (a name that is not valid, a
/// job that does not encode) are reported by [`Jobs::enqueue_flow`], before anything is
/// written.
pub struct Flow {
    parent: Result<Pending>,
    children: Vec<Planned>,
    policy: ChildFailure,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("children", &self.children.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Flow {
    /// A flow whose parent is `parent` (its partition and queue are given to
    /// [`Jobs::enqueue_flow`]).
    pub fn new<J: Job<S>, S>(parent: &J) -> Self {
        Self {
            parent: pending(parent, 0, 0),
            children: Vec::new(),
            policy: ChildFailure::default(),
        }
    }

    /// Adds a child, to run in `queue` of `partition` (any partition, any queue).
    pub fn child<J: Job<S>, S>(mut self, partition: &str, queue: &str, job: &J) -> Self {
        self.children.push(plan(partition, queue, job));
        self
    }

    /// What happens when a child dies or is cancelled (default [`ChildFailure::FailParent`]).
    pub fn on_child_failure(mut self, policy: ChildFailure) -> Self {
        self.policy = policy;
        self
    }
}

/// A batch of jobs and the callbacks to run when the last of them settles, for
/// [`Jobs::enqueue_batch`].
pub struct Batch {
    jobs: Vec<Planned>,
    on_success: Option<Planned>,
    on_complete: Option<Planned>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("jobs", &self.jobs.len())
            .field("on_success", &self.on_success.is_some())
            .field("on_complete", &self.on_complete.is_some())
            .finish()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch (a batch needs at least one job).
    pub fn new() -> Self {
        Self {
            jobs: Vec::new(),
            on_success: None,
            on_complete: None,
        }
    }

    /// Adds a job, to run in `queue` of `partition` (any partition, any queue).
    pub fn job<J: Job<S>, S>(mut self, partition: &str, queue: &str, job: &J) -> Self {
        self.jobs.push(plan(partition, queue, job));
        self
    }

    /// A job enqueued in `queue` of the batch's partition when every job of the batch has
    /// completed (none died or was cancelled); when one failed, it is recorded `cancelled`
    /// with the count in its error and never runs.
    pub fn on_success<J: Job<S>, S>(mut self, queue: &str, job: &J) -> Self {
        self.on_success = Some(plan("", queue, job));
        self
    }

    /// A job enqueued in `queue` of the batch's partition when every job of the batch has
    /// settled, whatever the outcomes ([`JobContext::batch`](crate::JobContext::batch) gives
    /// the counts).
    pub fn on_complete<J: Job<S>, S>(mut self, queue: &str, job: &J) -> Self {
        self.on_complete = Some(plan("", queue, job));
        self
    }
}

/// The answer to [`Jobs::enqueue_flow`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowEnqueued {
    /// The parent's id (also the flow's id: [`Jobs::flow`]).
    pub parent: String,
    /// The children, in the order they were added.
    pub children: Vec<Member>,
}

/// The answer to [`Jobs::enqueue_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchEnqueued {
    /// The batch's id ([`Jobs::batch`]).
    pub id: String,
    /// Its jobs, in the order they were added.
    pub jobs: Vec<Member>,
    /// The on_success callback's id.
    pub on_success: Option<String>,
    /// The on_complete callback's id.
    pub on_complete: Option<String>,
}

/// A child that did not complete, as its parent sees it ([`Children::failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedChild {
    /// The child's id.
    pub id: String,
    /// [`JobState::Dead`] or [`JobState::Cancelled`] (a deleted or purged child counts as
    /// cancelled).
    pub state: JobState,
    /// Its last error (empty for a cancelled child).
    pub error: String,
}

/// The outcomes of a flow's children, read by the parent with
/// [`JobContext::children`](crate::JobContext::children).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Children<T> {
    /// Every completed child by id, with the result it set (None when it set none).
    pub results: BTreeMap<String, Option<T>>,
    /// The children that did not complete ([`ChildFailure::Report`]; always empty with
    /// [`ChildFailure::Ignore`]).
    pub failed: Vec<FailedChild>,
}

/// A flow, as [`Jobs::flow`] and [`Jobs::flows`] show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowInfo {
    /// The parent's id.
    pub id: String,
    /// The parent's registered name.
    pub name: String,
    /// The parent's queue.
    pub queue: String,
    /// The parent's state: [`JobState::Waiting`] until its children have settled.
    pub state: JobState,
    /// How many children.
    pub total: u64,
    /// How many have settled (completed, died or were cancelled) and been counted.
    pub done: u64,
    /// How many of those did not complete.
    pub failed: u64,
    /// The policy for a failed child.
    pub policy: ChildFailure,
    /// The children with their outcome once counted (`None`: not settled yet); empty in
    /// [`Jobs::flows`]'s list.
    pub children: Vec<(Member, Option<JobState>)>,
}

/// A batch, as [`Jobs::batch`] and [`Jobs::batches`] show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The batch's id.
    pub id: String,
    /// Whether every job has settled (the callbacks were released then). A settled batch's
    /// record is kept 7 days.
    pub settled: bool,
    /// How many jobs.
    pub total: u64,
    /// How many completed.
    pub succeeded: u64,
    /// How many died or were cancelled.
    pub failed: u64,
    /// When it was created (Redis' clock, ms since the epoch).
    pub created_ms: u64,
    /// The on_success callback's id.
    pub on_success: Option<String>,
    /// The on_complete callback's id.
    pub on_complete: Option<String>,
}

/// A batch's counts, as its callbacks see them
/// ([`JobContext::batch`](crate::JobContext::batch)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchCounts {
    /// How many jobs.
    pub total: u64,
    /// How many completed.
    pub succeeded: u64,
    /// How many died or were cancelled.
    pub failed: u64,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidFlow {
        reason: reason.into(),
    }
}

/// Checks a member's names and job; the job, ready to store. A callback (`callback`) has
/// no partition of its own: it runs in its batch's.
fn checked(what: &str, p: Planned, callback: bool) -> Result<(String, String, Pending)> {
    let job = p.job?;
    if !callback {
        check_name("partition", &p.partition)
            .map_err(|e| invalid(format!("{what}: {}", strip(e))))?;
    }
    check_name("queue", &p.queue).map_err(|e| invalid(format!("{what}: {}", strip(e))))?;
    if !job.qkey.is_empty() {
        return Err(invalid(format!(
            "{what} (job `{}`) has a queue_key: jobs of flows and batches cannot have one (a duplicate would leave its flow waiting); return None from queue_key",
            job.name
        )));
    }
    Ok((p.partition, p.queue, job))
}

fn strip(e: Error) -> String {
    match e {
        Error::Config(m) => m,
        other => other.to_string(),
    }
}

fn num(v: Option<&String>) -> u64 {
    v.and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Jobs {
    /// Stores jobs of one partition, each linked to its flow or batch; their ids in order.
    async fn spawn(
        &self,
        partition: &str,
        members: Vec<(String, Pending)>,
        link: &str,
        trace: &str,
    ) -> Result<Vec<String>> {
        self.note_partition(partition).await?;
        let mut out = Vec::with_capacity(members.len());
        for chunk in members.chunks(CHUNK) {
            let mut args = Vec::with_capacity(2 + chunk.len() * 12);
            args.push(chunk.len().to_string());
            for (queue, p) in chunk {
                args.extend(p.script_args(queue, trace));
            }
            args.push(link.to_owned());
            let ids: Vec<String> = self
                .script("enqueue flow", &scripts().spawn, partition, args)
                .await?;
            if ids.len() != chunk.len() {
                return Err(Error::Protocol {
                    op: "enqueue flow",
                    detail: format!("{} ids for {} jobs", ids.len(), chunk.len()),
                });
            }
            out.extend(ids);
        }
        Ok(out)
    }

    /// Stores members grouped by partition (one script per partition and chunk); answers
    /// them in the order given.
    async fn spawn_all(
        &self,
        members: Vec<(String, String, Pending)>,
        link: &str,
        trace: &str,
    ) -> Result<Vec<Member>> {
        let mut by_partition: BTreeMap<String, Vec<(usize, String, Pending)>> = BTreeMap::new();
        for (i, (p, q, job)) in members.into_iter().enumerate() {
            by_partition.entry(p).or_default().push((i, q, job));
        }
        let mut out: Vec<Option<Member>> = Vec::new();
        for (partition, list) in by_partition {
            let order: Vec<(usize, String)> =
                list.iter().map(|(i, q, _)| (*i, q.clone())).collect();
            let jobs = list.into_iter().map(|(_, q, j)| (q, j)).collect();
            let ids = self.spawn(&partition, jobs, link, trace).await?;
            for ((i, queue), id) in order.into_iter().zip(ids) {
                if out.len() <= i {
                    out.resize(i + 1, None);
                }
                out[i] = Some(Member {
                    partition: partition.clone(),
                    queue,
                    id,
                });
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Enqueues a flow: its children now, and its parent (in `queue` of `partition`) to run
    /// once every child has settled, exactly once, whatever crashes in between (see the
    /// guide, "Flows and batches"). The parent reads its children's results with
    /// [`JobContext::children`](crate::JobContext::children).
    ///
    /// Refused with [`Error::InvalidFlow`] before anything is written: no child, more than
    /// [`MAX_FLOW_CHILDREN`], a partition or queue name that is not valid, or a job with a
    /// queue key. A job that does not encode is [`Error::Encode`] (or [`Error::Config`]
    /// for its other limits), also before anything is written. Queues and partitions need
    /// not exist yet (as with [`Jobs::enqueue`]): a child waits until a worker serves its
    /// queue, and its parent with it.
    ///
    /// If this call fails after some children were stored (Redis unreachable midway), the
    /// parent is not stored: those children run on their own, and their outcomes are
    /// dropped after [`MISSING_GRACE`].
    ///
    /// Cancelling the parent while it waits ([`Jobs::cancel`]) ends the flow: the parent
    /// ends `cancelled` and never runs. Its children are **not** cancelled (they may sit in
    /// other partitions, where no single step reaches): they run on, and their outcomes are
    /// dropped. Cancel them by id ([`FlowEnqueued::children`], [`Jobs::flow`]) if they
    /// should not run.
    pub async fn enqueue_flow(
        &self,
        partition: &str,
        queue: &str,
        flow: Flow,
    ) -> Result<FlowEnqueued> {
        check_name("partition", partition)
            .map_err(|e| invalid(format!("the parent: {}", strip(e))))?;
        check_name("queue", queue).map_err(|e| invalid(format!("the parent: {}", strip(e))))?;
        let Flow {
            parent,
            children,
            policy,
        } = flow;
        let (_, _, parent) = checked(
            "the parent",
            Planned {
                partition: partition.to_owned(),
                queue: queue.to_owned(),
                job: parent,
            },
            false,
        )?;
        if children.is_empty() {
            return Err(invalid(
                "the flow has no child: add children with Flow::child, or enqueue the parent alone with Jobs::enqueue",
            ));
        }
        if children.len() > MAX_FLOW_CHILDREN {
            return Err(invalid(format!(
                "the flow has {} children; the limit is {MAX_FLOW_CHILDREN}: split the work into several flows, or use a batch (up to {MAX_BATCH_JOBS} jobs)",
                children.len()
            )));
        }
        let children = children
            .into_iter()
            .enumerate()
            .map(|(i, p)| checked(&format!("child {i}"), p, false))
            .collect::<Result<Vec<_>>>()?;
        self.note_partition(partition).await?;
        let trace = crate::trace::to_store();
        let args = parent.script_args(queue, &trace);
        let parent_id = args[0].clone();
        let link = format!("{partition}\tf\t{parent_id}");
        let total = children.len();
        let members = self.spawn_all(children, &link, &trace).await?;
        let kids: Vec<[&str; 3]> = members
            .iter()
            .map(|m| [m.partition.as_str(), m.queue.as_str(), m.id.as_str()])
            .collect();
        let kids = serde_json::to_string(&kids).map_err(|source| Error::Encode {
            name: "the flow's children".into(),
            source,
        })?;
        let mut a = Vec::with_capacity(16);
        a.push("1".to_owned());
        a.extend(args);
        a.push(total.to_string());
        a.push(policy.as_str().to_owned());
        a.push(kids);
        let id: String = self
            .script("enqueue flow", &scripts().flow_put, partition, a)
            .await?;
        Ok(FlowEnqueued {
            parent: id,
            children: members,
        })
    }

    /// Enqueues a batch: its jobs now, and its callbacks (in `partition`) to run once the
    /// last job has settled, exactly once, whatever crashes in between (see the guide,
    /// "Flows and batches"). A callback reads the counts with
    /// [`JobContext::batch`](crate::JobContext::batch).
    ///
    /// Refused with [`Error::InvalidFlow`] before anything is written: no job, more than
    /// [`MAX_BATCH_JOBS`], a name that is not valid, or a job with a queue key. If this
    /// call fails midway, the callbacks are not stored (the jobs stored run on their own).
    pub async fn enqueue_batch(&self, partition: &str, batch: Batch) -> Result<BatchEnqueued> {
        check_name("partition", partition)
            .map_err(|e| invalid(format!("the batch: {}", strip(e))))?;
        let Batch {
            jobs,
            on_success,
            on_complete,
        } = batch;
        if jobs.is_empty() {
            return Err(invalid(
                "the batch has no job: add jobs with Batch::job before enqueueing it",
            ));
        }
        if jobs.len() > MAX_BATCH_JOBS {
            return Err(invalid(format!(
                "the batch has {} jobs; the limit is {MAX_BATCH_JOBS}: split it into several batches",
                jobs.len()
            )));
        }
        let on_success = on_success
            .map(|p| checked("the on_success callback", p, true))
            .transpose()?;
        let on_complete = on_complete
            .map(|p| checked("the on_complete callback", p, true))
            .transpose()?;
        let members = jobs
            .into_iter()
            .enumerate()
            .map(|(i, p)| checked(&format!("job {i}"), p, false))
            .collect::<Result<Vec<_>>>()?;
        self.note_partition(partition).await?;
        let trace = crate::trace::to_store();
        let id = format!("{:032x}", rand::random::<u128>());
        let link = format!("{partition}\tb\t{id}");
        let total = members.len();
        let members = self.spawn_all(members, &link, &trace).await?;
        let mut a = vec![String::new()];
        let (mut si, mut ci, mut n) = (0, 0, 0);
        for (cb, index) in [(&on_success, &mut si), (&on_complete, &mut ci)] {
            if let Some((_, queue, job)) = cb {
                n += 1;
                *index = n;
                a.extend(job.script_args(queue, &trace));
            }
        }
        a[0] = n.to_string();
        a.push(format!("{partition}\t{id}"));
        a.push(id.clone());
        a.push(total.to_string());
        a.push(si.to_string());
        a.push(ci.to_string());
        let ids: Vec<String> = self
            .script("enqueue batch", &scripts().batch_put, partition, a)
            .await?;
        let pick = |i: usize| (i > 0).then(|| ids.get(i - 1).cloned()).flatten();
        Ok(BatchEnqueued {
            id,
            jobs: members,
            on_success: pick(si),
            on_complete: pick(ci),
        })
    }

    /// Forwards the outcome of member `id` of `partition` (if its outbox holds one) to its
    /// flow or batch, then removes it from the outbox. Idempotent; safe to race.
    pub(crate) async fn forward(&self, partition: &str, id: &str) -> Result<()> {
        let entry: String = self
            .script(
                "forward",
                &scripts().outbox,
                partition,
                vec!["get".into(), id.to_owned()],
            )
            .await?;
        if entry.is_empty() {
            return Ok(());
        }
        self.forward_entry(partition, id, &entry, None).await
    }

    /// Forwards the outbox's entries recorded at least `older_than` ago (those a worker
    /// did not forward: it crashed between the steps, or Redis failed); at most 100 per
    /// call. Run by every worker's lease check, per partition. Answers how many were
    /// forwarded.
    pub(crate) async fn drain_outbox(
        &self,
        partition: &str,
        older_than: Duration,
    ) -> Result<usize> {
        let args = vec![
            "due".to_owned(),
            older_than.as_millis().to_string(),
            "100".to_owned(),
        ];
        let flat: Vec<String> = self
            .script("drain outbox", &scripts().outbox, partition, args)
            .await?;
        let Some((now, rows)) = flat.split_first() else {
            return Ok(0);
        };
        let now: u64 = now.parse().unwrap_or(0);
        let mut n = 0;
        for r in rows.chunks_exact(2) {
            self.forward_entry(partition, &r[0], &r[1], Some(now))
                .await?;
            n += 1;
        }
        Ok(n)
    }

    async fn forward_entry(
        &self,
        partition: &str,
        id: &str,
        entry: &str,
        now: Option<u64>,
    ) -> Result<()> {
        let parsed = serde_json::from_str::<(String, String, String, String, String)>(entry);
        let Some((link, state, result, error, enq_at)) = parsed.ok().filter(|(link, ..)| {
            let mut p = link.split('\t');
            p.next().is_some_and(|t| check_name("partition", t).is_ok())
                && matches!(p.next(), Some("f" | "b"))
                && p.next().is_some()
        }) else {
            // Not written by this crate's scripts: it can never be counted, so it is dropped
            // rather than retried forever (and blocking the entries behind it).
            tracing::error!(
                partition,
                id,
                "dropped an outbox entry that does not parse; are other programs writing wharf's keys?"
            );
            return self.ack(partition, id, entry).await;
        };
        let mut parts = link.split('\t');
        let (Some(target), Some(kind), Some(tid)) = (parts.next(), parts.next(), parts.next())
        else {
            return self.ack(partition, id, entry).await;
        };
        let args = vec![
            kind.to_owned(),
            tid.to_owned(),
            id.to_owned(),
            state,
            result,
            error,
        ];
        let answer: String = self
            .script("settle", &scripts().settle, target, args)
            .await?;
        if answer == "missing" {
            // Its flow may not be stored yet (members are stored first): keep it, unless it
            // is older than the grace (the creation failed).
            let old = now.is_some_and(|t| {
                t.saturating_sub(enq_at.parse().unwrap_or(0)) > MISSING_GRACE.as_millis() as u64
            });
            if !old {
                return Ok(());
            }
            tracing::warn!(
                partition,
                id,
                target,
                flow = tid,
                "dropped a member's outcome: its flow or batch was never stored (its creation failed midway)"
            );
        }
        self.ack(partition, id, entry).await
    }

    /// Removes member `id`'s outbox entry if it is still `entry`.
    async fn ack(&self, partition: &str, id: &str, entry: &str) -> Result<()> {
        let _: i64 = self
            .script(
                "forward",
                &scripts().outbox,
                partition,
                vec!["ack".into(), id.to_owned(), entry.to_owned()],
            )
            .await?;
        Ok(())
    }

    /// A flow by its parent's id (None when no such job, or it is not a flow's parent).
    pub async fn flow(&self, partition: &str, id: &str) -> Result<Option<FlowInfo>> {
        check_name("partition", partition)?;
        let h: HashMap<String, String> = self
            .call("flow", redis::cmd("HGETALL").arg(keys::job(partition, id)))
            .await?;
        let Some(total) = h.get("flow_total") else {
            return Ok(None);
        };
        let kids: Vec<(String, String, String)> = h
            .get("flow_kids")
            .and_then(|k| serde_json::from_str(k).ok())
            .unwrap_or_default();
        let children = kids
            .into_iter()
            .map(|(partition, queue, cid)| {
                let st = h
                    .get(&format!("kid:{cid}"))
                    .and_then(|v| serde_json::from_str::<(String, String, String)>(v).ok())
                    .and_then(|(s, _, _)| JobState::parse(&s));
                (
                    Member {
                        partition,
                        queue,
                        id: cid,
                    },
                    st,
                )
            })
            .collect();
        Ok(Some(FlowInfo {
            id: id.to_owned(),
            name: h.get("name").cloned().unwrap_or_default(),
            queue: h.get("queue").cloned().unwrap_or_default(),
            state: h
                .get("state")
                .and_then(|s| JobState::parse(s))
                .unwrap_or(JobState::Waiting),
            total: total.parse().unwrap_or(0),
            done: num(h.get("flow_done")),
            failed: num(h.get("flow_failed")),
            policy: ChildFailure::parse(h.get("flow_policy").map_or("", String::as_str)),
            children,
        }))
    }

    /// The flows of a partition whose parent still waits, oldest first (at most `limit`),
    /// without their children (read one with [`Jobs::flow`]).
    pub async fn flows(&self, partition: &str, limit: usize) -> Result<Vec<FlowInfo>> {
        check_name("partition", partition)?;
        let rows: Vec<Vec<String>> = self
            .script(
                "flows",
                &scripts().flow_list,
                partition,
                vec!["flows".into(), limit.clamp(1, 10_000).to_string()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.len() >= 9)
            .map(|r| FlowInfo {
                id: r[0].clone(),
                name: r[1].clone(),
                queue: r[2].clone(),
                state: JobState::parse(&r[3]).unwrap_or(JobState::Waiting),
                total: num(r.get(4)),
                done: num(r.get(5)),
                failed: num(r.get(6)),
                policy: ChildFailure::parse(&r[7]),
                children: Vec::new(),
            })
            .collect())
    }

    /// A batch by id (None when unknown, or settled more than 7 days ago).
    pub async fn batch(&self, partition: &str, id: &str) -> Result<Option<BatchInfo>> {
        check_name("partition", partition)?;
        let key = format!("{}batch:{id}", keys::prefix(partition));
        let f: Vec<Option<String>> = self
            .call(
                "batch",
                redis::cmd("HMGET").arg(key).arg(&[
                    "state",
                    "total",
                    "succeeded",
                    "failed",
                    "created",
                    "fin_at",
                    "on_success",
                    "on_complete",
                ]),
            )
            .await?;
        if f.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        let row: Vec<String> = std::iter::once(id.to_owned())
            .chain(f.into_iter().map(Option::unwrap_or_default))
            .collect();
        Ok(Some(batch_row(&row)))
    }

    /// The batches of a partition, newest first (at most `limit`), settled ones for 7 days.
    pub async fn batches(&self, partition: &str, limit: usize) -> Result<Vec<BatchInfo>> {
        check_name("partition", partition)?;
        let rows: Vec<Vec<String>> = self
            .script(
                "batches",
                &scripts().flow_list,
                partition,
                vec!["batches".into(), limit.clamp(1, 10_000).to_string()],
            )
            .await?;
        Ok(rows
            .iter()
            .filter(|r| r.len() >= 9)
            .map(|r| batch_row(r))
            .collect())
    }

    /// The outcomes of flow `id`'s children, by the parent's policy.
    pub(crate) async fn children<T: DeserializeOwned>(
        &self,
        partition: &str,
        id: &str,
    ) -> Result<Children<T>> {
        let h: HashMap<String, String> = self
            .call(
                "children",
                redis::cmd("HGETALL").arg(keys::job(partition, id)),
            )
            .await?;
        let policy = ChildFailure::parse(h.get("flow_policy").map_or("", String::as_str));
        let mut out = Children {
            results: BTreeMap::new(),
            failed: Vec::new(),
        };
        for (k, v) in &h {
            let Some(cid) = k.strip_prefix("kid:") else {
                continue;
            };
            let (state, result, error): (String, String, String) = serde_json::from_str(v)
                .map_err(|source| Error::Decode {
                    what: "child's outcome",
                    source,
                })?;
            if state == "completed" {
                let r = if result.is_empty() {
                    None
                } else {
                    Some(
                        serde_json::from_str(&result).map_err(|source| Error::Decode {
                            what: "child's result",
                            source,
                        })?,
                    )
                };
                out.results.insert(cid.to_owned(), r);
            } else if policy == ChildFailure::Report {
                out.failed.push(FailedChild {
                    id: cid.to_owned(),
                    state: JobState::parse(&state).unwrap_or(JobState::Cancelled),
                    error,
                });
            }
        }
        out.failed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A batch callback's counts (None when the job is not one).
    pub(crate) async fn batch_counts(
        &self,
        partition: &str,
        id: &str,
    ) -> Result<Option<BatchCounts>> {
        let f: Vec<Option<String>> = self
            .call(
                "batch counts",
                redis::cmd("HMGET").arg(keys::job(partition, id)).arg(&[
                    "batch_total",
                    "batch_succeeded",
                    "batch_failed",
                ]),
            )
            .await?;
        let n = |i: usize| f.get(i).cloned().flatten().and_then(|s| s.parse().ok());
        Ok(n(0).map(|total| BatchCounts {
            total,
            succeeded: n(1).unwrap_or(0),
            failed: n(2).unwrap_or(0),
        }))
    }
}

fn batch_row(r: &[String]) -> BatchInfo {
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    BatchInfo {
        id: r[0].clone(),
        settled: r[1] == "done",
        total: num(r.get(2)),
        succeeded: num(r.get(3)),
        failed: num(r.get(4)),
        created_ms: num(r.get(5)),
        on_success: opt(&r[7]),
        on_complete: opt(&r[8]),
    }
}
