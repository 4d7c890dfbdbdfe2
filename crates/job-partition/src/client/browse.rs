//! Browsing jobs as an operator's console does: a queue's jobs per list with paging, a
//! bounded search (execution key, text in arguments), one job's full record, the live
//! workers and what each runs, the execution keys held and who waits on each; and the
//! actions a console offers beyond [`Jobs::cancel`]: delete, run now, retry every dead job.
//!
//! Every read is bounded: a page holds at most [`MAX_PAGE`] jobs and a search looks at most
//! at [`MAX_SCAN`] jobs per call (it answers where to continue). Paging is by offset into
//! the list's sorted set, so a page costs `O(log N + page)` in Redis whatever the queue's
//! size. Unknown partitions, queues and jobs are errors of their own
//! ([`Error::UnknownPartition`], [`Error::UnknownQueue`], [`Error::UnknownJob`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use super::Jobs;
use super::inspect::{JobInfo, JobState};
use super::lease::Lease;
use crate::error::{Error, Result};
use crate::keys::{self, check_name};

/// The most jobs one page holds ([`Jobs::list`], [`Jobs::search`]).
pub const MAX_PAGE: usize = 500;

/// The most jobs one [`Jobs::search`] call looks at (it answers where to continue).
pub const MAX_SCAN: usize = 10_000;

/// Jobs looked at per Redis round trip while searching.
const SCAN_CHUNK: usize = 500;

/// The leases read per queue for [`Jobs::workers`].
const LEASES_PER_QUEUE: usize = 1_000;

/// Waiters shown per execution key ([`ExecutionKey::waiters`]).
const WAITERS_SHOWN: usize = 20;

/// One of the lists a queue keeps its jobs in, as [`Jobs::list`] pages through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobList {
    /// Ready, in the order workers take them.
    Queued,
    /// Waiting for a time (scheduled, or retrying after a backoff), soonest first.
    Scheduled,
    /// Waiting for their execution key, in enqueue order.
    Parked,
    /// Waiting for their rate group's window, the soonest allowed first.
    RateLimited,
    /// Running (or stopping), the soonest lease expiry first.
    Running,
    /// Completed or cancelled, kept within retention, newest first.
    Finished,
    /// Failed for good, newest first.
    Dead,
}

impl JobList {
    /// Every list, in a job's usual path.
    pub const ALL: [JobList; 7] = [
        Self::Queued,
        Self::Scheduled,
        Self::Parked,
        Self::RateLimited,
        Self::Running,
        Self::Finished,
        Self::Dead,
    ];

    /// Its name (`queued`, `scheduled`, `parked`, `ratelimited`, `running`, `finished`,
    /// `dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Parked => "parked",
            Self::RateLimited => "ratelimited",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Dead => "dead",
        }
    }

    /// The list of this name (see [`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The list a job in this state is kept in (None: it is kept in none).
    pub fn of(state: JobState) -> Option<Self> {
        Some(match state {
            JobState::Queued => Self::Queued,
            JobState::Scheduled | JobState::Retrying => Self::Scheduled,
            JobState::Parked => Self::Parked,
            JobState::RateLimited => Self::RateLimited,
            JobState::Running | JobState::Stopping => Self::Running,
            JobState::Completed | JobState::Cancelled => Self::Finished,
            JobState::Dead => Self::Dead,
            // Held out of every queue list: `Jobs::flows`, `Jobs::batches` show them.
            JobState::Waiting => return None,
        })
    }

    /// The sorted set's suffix in the key layout.
    fn part(self) -> &'static str {
        match self {
            Self::Queued => "wait",
            Self::Scheduled => "delayed",
            Self::Parked => "parked",
            Self::RateLimited => "limited",
            Self::Running => "active",
            Self::Finished => "done",
            Self::Dead => "dead",
        }
    }

    fn newest_first(self) -> bool {
        matches!(self, Self::Finished | Self::Dead)
    }
}

/// A job with its timeline, as [`Jobs::list`] and [`Jobs::job_record`] show it. Times are
/// milliseconds since the Unix epoch on Redis' clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRecord {
    /// The job as [`Jobs::job`] shows it.
    pub info: JobInfo,
    /// When it was enqueued.
    pub enqueued_at_ms: Option<i64>,
    /// When it is (or was) due: its scheduled time or the end of its retry backoff.
    pub run_at_ms: Option<i64>,
    /// When its latest attempt started.
    pub started_at_ms: Option<i64>,
    /// When it finished (completed, cancelled or dead).
    pub finished_at_ms: Option<i64>,
    /// The worker running it (`<pid>-<random>`), while it runs.
    pub worker: Option<String>,
    /// When its lease expires, while it runs.
    pub lease_expires_at_ms: Option<i64>,
}

impl JobRecord {
    fn from_hash(id: &str, h: &HashMap<String, String>, lease: Option<i64>) -> Option<Self> {
        let info = JobInfo::from_hash(id, h)?;
        let time = |k: &str| {
            h.get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|t| *t > 0)
        };
        let running = matches!(info.state, JobState::Running | JobState::Stopping);
        let worker = h
            .get("worker")
            .and_then(|w| w.split(' ').next())
            .filter(|w| running && !w.is_empty())
            .map(str::to_owned);
        Some(Self {
            enqueued_at_ms: time("enq_at"),
            run_at_ms: time("run_at"),
            started_at_ms: time("started_at"),
            finished_at_ms: time("fin_at"),
            worker,
            lease_expires_at_ms: lease.filter(|_| running),
            info,
        })
    }
}

/// One page of a list ([`Jobs::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page {
    /// The jobs of the page, in the list's order.
    pub jobs: Vec<JobRecord>,
    /// How many jobs the whole list holds.
    pub total: u64,
    /// The offset of the page's first job.
    pub offset: u64,
    /// Redis' clock when the page was read (milliseconds since the Unix epoch).
    pub now_ms: i64,
}

/// What [`Jobs::search`] looks for; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    /// The job's execution key is exactly this.
    pub execution_key: Option<String>,
    /// The job's arguments (JSON text) contain this text.
    pub args_contain: Option<String>,
    /// The job's registered name is exactly this.
    pub name: Option<String>,
}

impl Filter {
    /// No condition (matches every job).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only jobs with this execution key.
    pub fn execution_key(mut self, key: impl Into<String>) -> Self {
        self.execution_key = Some(key.into());
        self
    }

    /// Only jobs whose arguments contain this text.
    pub fn args_contain(mut self, text: impl Into<String>) -> Self {
        self.args_contain = Some(text.into());
        self
    }

    /// Only jobs of this registered name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    fn matches(&self, name: &str, xkey: &str, args: &str) -> bool {
        self.execution_key.as_deref().is_none_or(|k| k == xkey)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self
                .args_contain
                .as_deref()
                .is_none_or(|t| args.contains(t))
    }
}

/// What one [`Jobs::search`] call found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Found {
    /// The matching jobs, in the list's order.
    pub jobs: Vec<JobRecord>,
    /// How many jobs were looked at.
    pub scanned: u64,
    /// Where to continue (pass it as the next call's offset); None: the list's end was
    /// reached.
    pub next_offset: Option<u64>,
    /// Redis' clock when the search ran (milliseconds since the Unix epoch).
    pub now_ms: i64,
}

/// A worker process seen through the leases it holds ([`Jobs::workers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id (`<pid>-<random>`).
    pub worker: String,
    /// The jobs it runs: (queue, lease).
    pub jobs: Vec<(String, Lease)>,
    /// The shortest time since it renewed one of its leases, in milliseconds.
    pub renewed_ms_ago: i64,
    /// Whether every lease it holds is stalled (the process is likely dead or frozen).
    pub stalled: bool,
}

/// An execution key held or waited for ([`Jobs::execution_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutionKey {
    /// The key.
    pub key: String,
    /// The job holding it (running, handed the key and queued, or retrying with it).
    pub holder: Option<String>,
    /// How many jobs wait for it.
    pub waiting: u64,
    /// The first waiters, in the order they will get it (at most 20).
    pub waiters: Vec<String>,
}

/// What [`Jobs::retry_all_dead`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetriedDead {
    /// Dead jobs put back in their queue.
    pub retried: u64,
    /// Dead jobs left dead because another pending job holds their queue key.
    pub duplicates: u64,
}

/// The answer to [`Jobs::delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deleted {
    /// The job and its record are gone; its queue and execution keys were released.
    Deleted,
    /// The job is running: nothing changed (cancel it first).
    Running,
}

/// The answer to [`Jobs::run_now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunNow {
    /// The job was moved to the end of its queue's ready list.
    Queued,
    /// The job was not waiting for a time (it is in this state): nothing changed.
    NotScheduled(JobState),
}

struct BrowseScripts {
    delete: redis::Script,
    run_now: redis::Script,
}

fn browse_scripts() -> &'static BrowseScripts {
    static S: OnceLock<BrowseScripts> = OnceLock::new();
    const PRELUDE: &str = include_str!("../scripts/prelude.lua");
    S.get_or_init(|| BrowseScripts {
        // ARGV: P, id. Returns deleted | running | unknown.
        delete: redis::Script::new(&format!(
            "{PRELUDE}\n{}",
            include_str!("../scripts/delete.lua")
        )),
        // ARGV: P, id. Returns queued | state:<state> | unknown.
        run_now: redis::Script::new(&format!(
            "{PRELUDE}\n{}",
            include_str!("../scripts/run_now.lua")
        )),
    })
}

fn redis_ms(t: &(i64, i64)) -> i64 {
    t.0 * 1000 + t.1 / 1000
}

impl Jobs {
    /// Fails with [`Error::UnknownPartition`] unless the partition has had a job.
    pub async fn check_partition(&self, partition: &str) -> Result<()> {
        check_name("partition", partition)?;
        let known: bool = self
            .call(
                "check partition",
                redis::cmd("SISMEMBER").arg(keys::PARTITIONS).arg(partition),
            )
            .await?;
        if known {
            Ok(())
        } else {
            Err(Error::UnknownPartition {
                partition: partition.to_owned(),
            })
        }
    }

    /// Fails with [`Error::UnknownPartition`] or [`Error::UnknownQueue`] unless the queue
    /// exists (had a job or a setting).
    pub async fn check_queue(&self, partition: &str, queue: &str) -> Result<()> {
        check_name("queue", queue)?;
        self.check_partition(partition).await?;
        let known: bool = self
            .call(
                "check queue",
                redis::cmd("SISMEMBER")
                    .arg(keys::route(partition))
                    .arg(queue),
            )
            .await?;
        if known {
            Ok(())
        } else {
            Err(Error::UnknownQueue {
                partition: partition.to_owned(),
                queue: queue.to_owned(),
            })
        }
    }

    /// One page of a queue's list: at most `limit` jobs (clamped to 1..=[`MAX_PAGE`])
    /// from `offset`, in the list's order, and the list's total.
    pub async fn list(
        &self,
        partition: &str,
        queue: &str,
        list: JobList,
        offset: u64,
        limit: usize,
    ) -> Result<Page> {
        self.check_queue(partition, queue).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let zkey = keys::queue(partition, queue, list.part());
        let (ids, total, now) = self.ids(&zkey, list, offset, limit).await?;
        let jobs = self.records(partition, &ids).await?;
        Ok(Page {
            jobs,
            total,
            offset,
            now_ms: now,
        })
    }

    /// Searches a queue's list from `offset`: looks at up to [`MAX_SCAN`] jobs and answers
    /// the first `limit` (clamped to 1..=[`MAX_PAGE`]) that match `filter`, with where to
    /// continue. Costs about one Redis round trip per 500 jobs looked at.
    pub async fn search(
        &self,
        partition: &str,
        queue: &str,
        list: JobList,
        filter: &Filter,
        offset: u64,
        limit: usize,
    ) -> Result<Found> {
        self.check_queue(partition, queue).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let zkey = keys::queue(partition, queue, list.part());
        let mut matched: Vec<(String, i64)> = Vec::new();
        let mut at = offset;
        let mut scanned = 0u64;
        let mut now = 0;
        let mut next_offset = None;
        'scan: while (scanned as usize) < MAX_SCAN {
            let (ids, total, t) = self.ids(&zkey, list, at, SCAN_CHUNK).await?;
            now = t;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &ids {
                pipe.cmd("HMGET")
                    .arg(keys::job(partition, id))
                    .arg("name")
                    .arg("xkey")
                    .arg("args");
            }
            let mut conn = self.conn.clone();
            let fields: Vec<(Option<String>, Option<String>, Option<String>)> =
                self.bounded("search", pipe.query_async(&mut conn)).await?;
            for ((id, score), (name, xkey, args)) in ids.into_iter().zip(fields) {
                at += 1;
                scanned += 1;
                let (name, xkey, args) = (
                    name.unwrap_or_default(),
                    xkey.unwrap_or_default(),
                    args.unwrap_or_default(),
                );
                if filter.matches(&name, &xkey, &args) {
                    matched.push((id, score));
                    if matched.len() >= limit {
                        next_offset = (at < total).then_some(at);
                        break 'scan;
                    }
                }
            }
            if at >= total {
                break;
            }
            next_offset = Some(at);
        }
        let jobs = self.records(partition, &matched).await?;
        Ok(Found {
            jobs,
            scanned,
            next_offset,
            now_ms: now,
        })
    }

    /// A job with its timeline, worker and lease.
    pub async fn job_record(&self, partition: &str, id: &str) -> Result<JobRecord> {
        self.check_partition(partition).await?;
        let h: HashMap<String, String> = self
            .call("job", redis::cmd("HGETALL").arg(keys::job(partition, id)))
            .await?;
        let unknown = || Error::UnknownJob {
            partition: partition.to_owned(),
            id: id.to_owned(),
        };
        let queue = h.get("queue").cloned().ok_or_else(unknown)?;
        let lease: Option<f64> = self
            .call(
                "job lease",
                redis::cmd("ZSCORE")
                    .arg(keys::queue(partition, &queue, "active"))
                    .arg(id),
            )
            .await?;
        JobRecord::from_hash(id, &h, lease.map(|l| l as i64)).ok_or_else(unknown)
    }

    /// The worker processes holding leases in a partition, and the jobs each runs (at most
    /// 1,000 leases read per queue). A worker that holds no lease right now is not seen.
    pub async fn workers(&self, partition: &str) -> Result<Vec<WorkerInfo>> {
        self.check_partition(partition).await?;
        let mut by_worker: BTreeMap<String, Vec<(String, Lease)>> = BTreeMap::new();
        for queue in self.queues(partition).await? {
            for lease in self.leases(partition, &queue, LEASES_PER_QUEUE).await? {
                by_worker
                    .entry(lease.worker.clone())
                    .or_default()
                    .push((queue.clone(), lease));
            }
        }
        Ok(by_worker
            .into_iter()
            .map(|(worker, jobs)| WorkerInfo {
                renewed_ms_ago: jobs
                    .iter()
                    .map(|(_, l)| l.renewed_ms_ago)
                    .min()
                    .unwrap_or(0),
                stalled: jobs.iter().all(|(_, l)| l.stalled),
                worker,
                jobs,
            })
            .collect())
    }

    /// The execution keys of a partition's running and parked jobs (at most `limit` keys,
    /// found among at most [`MAX_SCAN`] jobs), each with its holder and waiters, sorted by
    /// key.
    pub async fn execution_keys(&self, partition: &str, limit: usize) -> Result<Vec<ExecutionKey>> {
        self.check_partition(partition).await?;
        let mut ids: Vec<String> = Vec::new();
        for queue in self.queues(partition).await? {
            for list in [JobList::Running, JobList::Parked] {
                let room = MAX_SCAN.saturating_sub(ids.len());
                if room == 0 {
                    break;
                }
                let zkey = keys::queue(partition, &queue, list.part());
                let (page, _, _) = self.ids(&zkey, list, 0, room).await?;
                ids.extend(page.into_iter().map(|(id, _)| id));
            }
        }
        let mut found: Vec<String> = Vec::new();
        for chunk in ids.chunks(SCAN_CHUNK) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGET").arg(keys::job(partition, id)).arg("xkey");
            }
            let mut conn = self.conn.clone();
            let xkeys: Vec<Option<String>> = self
                .bounded("execution keys", pipe.query_async(&mut conn))
                .await?;
            found.extend(xkeys.into_iter().flatten().filter(|k| !k.is_empty()));
        }
        found.sort();
        found.dedup();
        found.truncate(limit);
        let mut out = Vec::with_capacity(found.len());
        for key in found {
            out.push(self.execution_key(partition, &key).await?);
        }
        Ok(out)
    }

    /// One execution key: its holder and the jobs waiting for it.
    pub async fn execution_key(&self, partition: &str, key: &str) -> Result<ExecutionKey> {
        check_name("partition", partition)?;
        keys::check_key("an execution key", key)?;
        let p = keys::prefix(partition);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(format!("{p}xlock:{key}"));
        pipe.cmd("ZCARD").arg(format!("{p}xwait:{key}"));
        pipe.cmd("ZRANGE")
            .arg(format!("{p}xwait:{key}"))
            .arg(0)
            .arg(WAITERS_SHOWN - 1);
        let mut conn = self.conn.clone();
        let (holder, waiting, waiters): (Option<String>, u64, Vec<String>) = self
            .bounded("execution key", pipe.query_async(&mut conn))
            .await?;
        Ok(ExecutionKey {
            key: key.to_owned(),
            holder,
            waiting,
            waiters,
        })
    }

    /// Puts every dead job of a queue back in it with fresh attempts (one script per job,
    /// 500 ids read at a time). A job whose queue key another pending job holds stays dead
    /// and is counted in [`RetriedDead::duplicates`].
    pub async fn retry_all_dead(&self, partition: &str, queue: &str) -> Result<RetriedDead> {
        self.check_queue(partition, queue).await?;
        let zkey = keys::queue(partition, queue, "dead");
        let mut done = RetriedDead::default();
        loop {
            // Duplicates stay at the head of the dead set: skip past them.
            let ids: Vec<String> = self
                .call(
                    "list dead",
                    redis::cmd("ZRANGE")
                        .arg(&zkey)
                        .arg(done.duplicates)
                        .arg(done.duplicates + SCAN_CHUNK as u64 - 1),
                )
                .await?;
            if ids.is_empty() {
                return Ok(done);
            }
            for id in ids {
                match self.retry_dead(partition, &id).await {
                    Ok(super::Enqueued::Queued(_)) => done.retried += 1,
                    Ok(super::Enqueued::Duplicate(_)) => done.duplicates += 1,
                    // Trimmed or retried by someone else meanwhile: it left the set.
                    Err(Error::Config(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Deletes a job that is not running, wherever it waits or lies (queued, scheduled,
    /// retrying, parked, finished, dead), releasing its queue and execution keys (the next
    /// waiter of its execution key gets it). Nothing is recorded of it afterwards.
    pub async fn delete(&self, partition: &str, id: &str) -> Result<Deleted> {
        self.check_partition(partition).await?;
        let a: String = self
            .script(
                "delete",
                &browse_scripts().delete,
                partition,
                vec![id.to_owned()],
            )
            .await?;
        match a.as_str() {
            "deleted" => Ok(Deleted::Deleted),
            "running" => Ok(Deleted::Running),
            "unknown" => Err(Error::UnknownJob {
                partition: partition.to_owned(),
                id: id.to_owned(),
            }),
            other => Err(Error::Protocol {
                op: "delete",
                detail: other.to_owned(),
            }),
        }
    }

    /// Runs a scheduled job (or one retrying after a backoff) now: moves it to the end of
    /// its queue's ready list, where the next worker takes it in turn.
    pub async fn run_now(&self, partition: &str, id: &str) -> Result<RunNow> {
        self.check_partition(partition).await?;
        let a: String = self
            .script(
                "run now",
                &browse_scripts().run_now,
                partition,
                vec![id.to_owned()],
            )
            .await?;
        if a == "queued" {
            return Ok(RunNow::Queued);
        }
        if a == "unknown" {
            return Err(Error::UnknownJob {
                partition: partition.to_owned(),
                id: id.to_owned(),
            });
        }
        match a.strip_prefix("state:").and_then(parse_state) {
            Some(state) => Ok(RunNow::NotScheduled(state)),
            None => Err(Error::Protocol {
                op: "run now",
                detail: a,
            }),
        }
    }

    /// A page of ids with their scores, the set's size and Redis' time, in one round trip.
    async fn ids(
        &self,
        zkey: &str,
        list: JobList,
        offset: u64,
        limit: usize,
    ) -> Result<(Vec<(String, i64)>, u64, i64)> {
        let stop = offset.saturating_add(limit.max(1) as u64 - 1);
        let mut pipe = redis::pipe();
        let range = pipe.cmd("ZRANGE").arg(zkey).arg(offset).arg(stop);
        if list.newest_first() {
            range.arg("REV");
        }
        range.arg("WITHSCORES");
        pipe.cmd("ZCARD").arg(zkey);
        pipe.cmd("TIME");
        let mut conn = self.conn.clone();
        let (ids, total, time): (Vec<(String, f64)>, u64, (i64, i64)) =
            self.bounded("list", pipe.query_async(&mut conn)).await?;
        let ids = ids.into_iter().map(|(id, s)| (id, s as i64)).collect();
        Ok((ids, total, redis_ms(&time)))
    }

    /// The records of these jobs (skipping any deleted meanwhile), one round trip.
    async fn records(&self, partition: &str, ids: &[(String, i64)]) -> Result<Vec<JobRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in ids {
            pipe.cmd("HGETALL").arg(keys::job(partition, id));
        }
        let mut conn = self.conn.clone();
        let hashes: Vec<HashMap<String, String>> =
            self.bounded("list", pipe.query_async(&mut conn)).await?;
        Ok(ids
            .iter()
            .zip(hashes)
            .filter_map(|((id, score), h)| JobRecord::from_hash(id, &h, Some(*score)))
            .collect())
    }
}

fn parse_state(s: &str) -> Option<JobState> {
    [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Parked,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Dead,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}
