//! `wharf-jobs`: inspect and administer [wharf-job-partition] jobs in Redis.
//!
//! ```text
//! wharf-jobs queues billing                 # counts per state of each queue of a partition
//! wharf-jobs --json dead billing invoices   # the newest dead jobs, as JSON
//! wharf-jobs --watch 2 leases billing mail  # the running jobs' leases, every 2 s
//! wharf-jobs retry-dead billing invoices    # every dead job of the queue back in its queue
//! wharf-jobs jobs billing invoices --state dead --search acme   # dead jobs whose args say acme
//! ```
//!
//! Run `wharf-jobs help` or `wharf-jobs help COMMAND`. The Redis URL comes from `--url` or
//! `WHARF_REDIS_URL` (default `redis://127.0.0.1:6379`); it is never printed.
//!
//! Exit status: 0 done; 1 failed (Redis unreachable, a command refused); 2 bad usage;
//! 3 not found (an unknown partition, queue or job id: nothing was changed).
//!
//! [wharf-job-partition]: https://docs.rs/wharf-job-partition

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use wharf_job_partition::{
    BatchInfo, CancelOutcome, ChildFailure, Config, Deleted, Enqueued, Error as JobsError, Filter,
    FlowInfo, JobInfo, JobList, JobRecord, Jobs, Lease, QueueCounts, RateLimit, RunNow,
    ScheduleInfo,
};

/// Exit status when a command failed (Redis unreachable, a refusal).
const FAILED: u8 = 1;
/// Exit status for bad usage (clap's own for a parse error).
const USAGE: u8 = 2;
/// Exit status when a partition, queue or job does not exist.
const NOT_FOUND: u8 = 3;

/// The most dead jobs `retry-dead` and `dead` handle in one call.
const MAX_BULK: usize = 100_000;

const AFTER_HELP: &str = "\
The Redis URL comes from --url or WHARF_REDIS_URL (default redis://127.0.0.1:6379); it is
never printed. A PARTITION or QUEUE that does not exist is an error (a misspelling must not
create a queue); --create lets pause, resume and limit set up a queue before its first job.

Exit status: 0 done; 1 failed (Redis unreachable, a command refused); 2 bad usage;
3 not found (an unknown partition, queue or job id: nothing was changed).";

/// Inspect and administer wharf-job-partition jobs in Redis.
#[derive(Debug, Parser)]
#[command(name = "wharf-jobs", version, after_help = AFTER_HELP)]
struct Cli {
    /// Redis URL (else WHARF_REDIS_URL, else redis://127.0.0.1:6379).
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// Print JSON (one document per run) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Run a listing again every SECS seconds (at least 0.5) until interrupted (Ctrl-C).
    #[arg(long, global = true, value_name = "SECS")]
    watch: Option<f64>,
    /// Let pause, resume and limit set up a queue that has no job yet.
    #[arg(long, global = true)]
    create: bool,
    /// How long to wait for each Redis reply, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the partitions.
    Partitions,
    /// List a partition's queues with their counts per state and settings.
    Queues {
        /// The partition.
        partition: String,
    },
    /// List the leases of a queue's running jobs, and which a dead worker holds.
    Leases {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
    },
    /// Show one job: its state, arguments, attempts, keys and last error.
    Show {
        /// The partition.
        partition: String,
        /// The job's id.
        id: String,
    },
    /// List a queue's jobs in one state, a page at a time, or search them.
    ///
    /// With --key, --name or --search, looks through up to 10,000 jobs from --offset and
    /// prints the matches and where to continue.
    Jobs {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
        /// The list: queued, scheduled, parked, running, finished or dead.
        #[arg(long, default_value = "queued", value_parser = parse_list)]
        state: JobList,
        /// Skip this many jobs of the list.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many jobs (500 at most).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only jobs with this execution key.
        #[arg(long)]
        key: Option<String>,
        /// Only jobs of this registered name.
        #[arg(long)]
        name: Option<String>,
        /// Only jobs whose arguments (JSON text) contain this text.
        #[arg(long)]
        search: Option<String>,
    },
    /// List the worker processes holding leases in a partition, and the jobs each runs.
    Workers {
        /// The partition.
        partition: String,
    },
    /// List the execution keys of running and parked jobs: who holds each, who waits.
    Keys {
        /// The partition.
        partition: String,
        /// Only this key.
        key: Option<String>,
        /// At most this many keys.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List a queue's newest dead jobs.
    Dead {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
        /// How many (newest first).
        #[arg(default_value_t = 20)]
        n: usize,
    },
    /// Cancel waiting or running jobs (a running one is aborted by its worker).
    Cancel {
        /// The partition.
        partition: String,
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Put dead jobs back in their queue.
    Retry {
        /// The partition.
        partition: String,
        /// The dead jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Put every dead job of a queue back in the queue, with fresh attempts.
    RetryDead {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
    },
    /// Delete jobs that are not running (queued, scheduled, parked, finished or dead),
    /// releasing their queue and execution keys.
    Delete {
        /// The partition.
        partition: String,
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run scheduled jobs (or jobs retrying after a backoff) now.
    RunNow {
        /// The partition.
        partition: String,
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete a queue's waiting jobs.
    Purge {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
    },
    /// Delete every dead job of a queue.
    #[command(visible_alias = "delete-dead")]
    PurgeDead {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
    },
    /// Stop every worker starting jobs of the queue (running ones finish).
    Pause {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
    },
    /// Let workers start jobs of the queue again.
    Resume {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
    },
    /// Show the queue's rate limit, or set it: at most N starts per WINDOW for each rate
    /// group of the queue (`none`: no rate limit).
    Rate {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
        /// A number of starts, or `none`; without it, the limit is shown.
        limit: Option<String>,
        /// The window: 500ms, 10s, 2m, 1h (or a number of milliseconds).
        window: Option<String>,
    },
    /// List a partition's schedules (recurring jobs): next tick, ticks fired, paused.
    Schedules {
        /// The partition.
        partition: String,
    },
    /// Stop a schedule's ticks (its enqueued jobs stay).
    SchedulePause {
        /// The partition.
        partition: String,
        /// The schedule's name.
        name: String,
    },
    /// Restart a paused schedule from its next tick after now.
    ScheduleResume {
        /// The partition.
        partition: String,
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule (its enqueued jobs stay).
    ScheduleRemove {
        /// The partition.
        partition: String,
        /// The schedule's name.
        name: String,
    },
    /// List a partition's flows whose parent still waits: children done/total, failed.
    Flows {
        /// The partition (of the parents).
        partition: String,
    },
    /// Show one flow: its parent's state, policy, and each child with its outcome.
    Flow {
        /// The partition of the parent.
        partition: String,
        /// The parent's id.
        id: String,
    },
    /// List a partition's batches (newest first; settled ones for 7 days) with counts.
    Batches {
        /// The partition (of the batches).
        partition: String,
    },
    /// Show one batch: its counts and callbacks.
    Batch {
        /// The partition of the batch.
        partition: String,
        /// The batch's id.
        id: String,
    },
    /// Serve the web console's jobs pages (wharf-console) until interrupted (Ctrl-C).
    ///
    /// Binds loopback unless told otherwise; with --token, every request needs
    /// `Authorization: Bearer TOKEN`; with --read-only, no action is offered or accepted.
    Web {
        /// Where to listen (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Refuse every action (pages only).
        #[arg(long)]
        read_only: bool,
        /// A bearer token every request must carry (else WHARF_CONSOLE_TOKEN; none: no
        /// authentication, for loopback use).
        #[arg(long, env = "WHARF_CONSOLE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Set the queue's global limit of running jobs (0: no job starts; none: no limit).
    Limit {
        /// The partition.
        partition: String,
        /// The queue.
        queue: String,
        /// A number of jobs, or `none`.
        limit: String,
    },
}

impl Command {
    /// Whether the command only reads (so `--watch` can repeat it).
    fn is_listing(&self) -> bool {
        matches!(
            self,
            Command::Partitions
                | Command::Queues { .. }
                | Command::Leases { .. }
                | Command::Show { .. }
                | Command::Dead { .. }
                | Command::Jobs { .. }
                | Command::Workers { .. }
                | Command::Keys { .. }
                | Command::Schedules { .. }
                | Command::Flows { .. }
                | Command::Flow { .. }
                | Command::Batches { .. }
                | Command::Batch { .. }
                | Command::Rate {
                    window: None,
                    limit: None,
                    ..
                }
        )
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
enum Fail {
    /// Bad usage the parser could not catch (a value out of range): exit 2.
    Usage(String),
    /// A partition, queue or job that does not exist: exit 3.
    NotFound(String),
    /// The command failed: exit 1.
    Failed(String),
}

fn parse_list(name: &str) -> Result<JobList, String> {
    JobList::parse(name).ok_or_else(|| {
        format!(
            "no list {name:?}: one of {}",
            JobList::ALL.map(JobList::as_str).join(", ")
        )
    })
}

impl From<JobsError> for Fail {
    fn from(e: JobsError) -> Self {
        if matches!(
            e,
            JobsError::UnknownPartition { .. }
                | JobsError::UnknownQueue { .. }
                | JobsError::UnknownJob { .. }
                | JobsError::UnknownSchedule { .. }
        ) {
            return Fail::NotFound(e.to_string());
        }
        // The library's message says what went wrong and what to do; its causes follow.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let said = cause.to_string();
            if !text.contains(&said) {
                text.push_str(": ");
                text.push_str(&said);
            }
            source = cause.source();
        }
        Fail::Failed(text)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(e)) => {
            eprintln!("error: {e}\n\nSee wharf-jobs help.");
            ExitCode::from(USAGE)
        }
        Err(Fail::NotFound(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(NOT_FOUND)
        }
        Err(Fail::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(FAILED)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Fail> {
    let watch = match cli.watch {
        None => None,
        Some(s) if !cli.command.is_listing() => {
            return Err(Fail::Usage(format!(
                "--watch {s} repeats listings only (partitions, queues, leases, show, dead), not an action"
            )));
        }
        Some(s) if (0.5..=86_400.0).contains(&s) => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(Fail::Usage(format!(
                "--watch wants seconds between 0.5 and 86400, not {s}"
            )));
        }
    };
    if !(cli.timeout.is_finite() && cli.timeout > 0.0 && cli.timeout <= 3600.0) {
        return Err(Fail::Usage(format!(
            "--timeout wants seconds between 0 and 3600, not {}",
            cli.timeout
        )));
    }
    let timeout = Duration::from_secs_f64(cli.timeout);
    let config = match &cli.url {
        Some(url) => Config::new(url.clone()),
        None => Config::from_env(),
    }
    .response_timeout(timeout)
    .connect_timeout(timeout);
    let jobs = Jobs::connect(config).await?;
    let out = Out { json: cli.json };
    let Some(every) = watch else {
        return command(&jobs, &cli, &out).await;
    };
    loop {
        if !cli.json {
            print!("\x1b[2J\x1b[H"); // clear the terminal, cursor home
        }
        command(&jobs, &cli, &out).await?;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Text or JSON.
struct Out {
    json: bool,
}

impl Out {
    /// Prints `value` as JSON, or `text()` as text.
    fn print(&self, value: Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            let text = text();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

/// The partition must exist.
async fn known_partition(jobs: &Jobs, p: &str) -> Result<(), Fail> {
    let all = jobs.partitions().await?;
    if all.iter().any(|k| k == p) {
        return Ok(());
    }
    Err(Fail::NotFound(format!(
        "no partition `{p}` (known: {}); check the spelling",
        list(&all)
    )))
}

/// The queue must exist, unless `create` (then the partition need not exist either).
async fn known_queue(jobs: &Jobs, p: &str, q: &str, create: bool) -> Result<(), Fail> {
    if create {
        return Ok(());
    }
    known_partition(jobs, p).await?;
    let all = jobs.queues(p).await?;
    if all.iter().any(|k| k == q) {
        return Ok(());
    }
    Err(Fail::NotFound(format!(
        "no queue `{q}` in partition `{p}` (its queues: {}); check the spelling, or pass --create to set up a queue before its first job",
        list(&all)
    )))
}

fn unknown_job(p: &str, id: &str, what: &str) -> Fail {
    Fail::NotFound(format!(
        "no job {id} in partition {p} (unknown, or trimmed by retention){what}"
    ))
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Runs the command once.
async fn command(jobs: &Jobs, cli: &Cli, out: &Out) -> Result<(), Fail> {
    match &cli.command {
        Command::Partitions => {
            let all = jobs.partitions().await?;
            out.print(json!(all), || all.join("\n"));
        }
        Command::Queues { partition } => queues(jobs, partition, out).await?,
        Command::Leases { partition, queue } => {
            known_queue(jobs, partition, queue, false).await?;
            leases(jobs, partition, queue, out).await?;
        }
        Command::Show { partition, id } => {
            let Some(j) = jobs.job(partition, id).await? else {
                return Err(unknown_job(partition, id, ""));
            };
            out.print(job_json(&j), || show_text(&j));
        }
        Command::Dead {
            partition,
            queue,
            n,
        } => {
            known_queue(jobs, partition, queue, false).await?;
            let dead = jobs.dead(partition, queue, (*n).min(MAX_BULK)).await?;
            out.print(json!(dead.iter().map(job_json).collect::<Vec<_>>()), || {
                dead.iter()
                    .map(|j| {
                        format!(
                            "{}  {}  attempts={}  {}",
                            j.id,
                            j.name,
                            j.attempts,
                            j.error.as_deref().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Cancel { partition, ids } => {
            each(ids, out, |id| async move {
                let (outcome, text) = match jobs.cancel(partition, &id).await? {
                    CancelOutcome::Cancelled => ("cancelled", "cancelled".to_owned()),
                    CancelOutcome::Cancelling => (
                        "cancelling",
                        "running: its worker aborts it within about a second".to_owned(),
                    ),
                    CancelOutcome::AlreadyFinished(s) => {
                        ("already_finished", format!("already finished: {s}"))
                    }
                    CancelOutcome::Unknown => {
                        return Err(unknown_job(partition, &id, ": nothing cancelled"));
                    }
                    other => ("other", format!("{other:?}")),
                };
                Ok((
                    json!({ "id": id, "outcome": outcome }),
                    format!("{id}: {text}"),
                ))
            })
            .await?;
        }
        Command::Retry { partition, ids } => {
            each(ids, out, |id| async move {
                retry_one(jobs, partition, &id).await
            })
            .await?;
        }
        Command::RetryDead { partition, queue } => {
            known_queue(jobs, partition, queue, false).await?;
            let r = jobs.retry_all_dead(partition, queue).await?;
            out.print(
                json!({ "retried": r.retried, "duplicates": r.duplicates }),
                || {
                    let mut text = if r.retried == 0 && r.duplicates == 0 {
                        format!("no dead job in {partition}/{queue}")
                    } else {
                        format!("retried {} dead jobs of {partition}/{queue}", r.retried)
                    };
                    if r.duplicates > 0 {
                        text.push_str(&format!(
                            "; {} left dead: another pending job holds each one's queue key",
                            r.duplicates
                        ));
                    }
                    text
                },
            );
        }
        Command::Delete { partition, ids } => {
            each(ids, out, |id| async move {
                match jobs.delete(partition, &id).await? {
                    Deleted::Deleted => Ok((
                        json!({ "id": id, "outcome": "deleted" }),
                        format!("{id}: deleted"),
                    )),
                    Deleted::Running => Err(Fail::Failed(format!(
                        "{id}: running, not deleted (cancel it first: wharf-jobs cancel {partition} {id})"
                    ))),
                    _ => Err(Fail::Failed(format!("{id}: not deleted"))),
                }
            })
            .await?;
        }
        Command::RunNow { partition, ids } => {
            each(ids, out, |id| async move {
                match jobs.run_now(partition, &id).await? {
                    RunNow::Queued => Ok((
                        json!({ "id": id, "outcome": "queued" }),
                        format!("{id}: queued, runs next in turn"),
                    )),
                    RunNow::NotScheduled(state) => Err(Fail::Failed(format!(
                        "{id}: not waiting for a time (it is {}): nothing changed",
                        state.as_str()
                    ))),
                    _ => Err(Fail::Failed(format!("{id}: not moved"))),
                }
            })
            .await?;
        }
        Command::Jobs {
            partition,
            queue,
            state,
            offset,
            limit,
            key,
            name,
            search,
        } => {
            let mut filter = Filter::new();
            if let Some(k) = key {
                filter = filter.execution_key(k.clone());
            }
            if let Some(n) = name {
                filter = filter.name(n.clone());
            }
            if let Some(t) = search {
                filter = filter.args_contain(t.clone());
            }
            if filter == Filter::new() {
                let page = jobs.list(partition, queue, *state, *offset, *limit).await?;
                let shown = page.jobs.len() as u64;
                out.print(
                    json!({
                        "state": state.as_str(),
                        "total": page.total,
                        "offset": page.offset,
                        "jobs": page.jobs.iter().map(|r| record_json(r, page.now_ms)).collect::<Vec<_>>(),
                    }),
                    || {
                        let mut lines: Vec<String> =
                            page.jobs.iter().map(|r| record_line(r, page.now_ms)).collect();
                        lines.push(format!(
                            "{} {} of {} ({} shown from offset {}){}",
                            partition,
                            queue,
                            state.as_str(),
                            shown,
                            page.offset,
                            if page.offset + shown < page.total {
                                format!(
                                    "; {} in all, next page: --offset {}",
                                    page.total,
                                    page.offset + shown
                                )
                            } else {
                                format!("; {} in all", page.total)
                            }
                        ));
                        lines.join("\n")
                    },
                );
            } else {
                let found = jobs
                    .search(partition, queue, *state, &filter, *offset, *limit)
                    .await?;
                out.print(
                    json!({
                        "state": state.as_str(),
                        "scanned": found.scanned,
                        "next_offset": found.next_offset,
                        "jobs": found.jobs.iter().map(|r| record_json(r, found.now_ms)).collect::<Vec<_>>(),
                    }),
                    || {
                        let mut lines: Vec<String> = found
                            .jobs
                            .iter()
                            .map(|r| record_line(r, found.now_ms))
                            .collect();
                        lines.push(format!(
                            "{} matching of {} looked at{}",
                            found.jobs.len(),
                            found.scanned,
                            match found.next_offset {
                                Some(at) => format!("; to look further: --offset {at}"),
                                None => "; the list's end was reached".to_owned(),
                            }
                        ));
                        lines.join("\n")
                    },
                );
            }
        }
        Command::Workers { partition } => {
            known_partition(jobs, partition).await?;
            let workers = jobs.workers(partition).await?;
            out.print(
                json!(workers.iter().map(|w| json!({
                    "worker": w.worker,
                    "renewed_ms_ago": w.renewed_ms_ago,
                    "stalled": w.stalled,
                    "jobs": w.jobs.iter().map(|(q, l)| json!({ "queue": q, "id": l.id, "name": l.name, "expires_in_ms": l.expires_in_ms })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()),
                || {
                    if workers.is_empty() {
                        return format!("no worker holds a lease in {partition}");
                    }
                    let mut lines = Vec::new();
                    for w in &workers {
                        lines.push(format!(
                            "{}  {} job(s)  renewed {} ago{}",
                            w.worker,
                            w.jobs.len(),
                            secs(w.renewed_ms_ago),
                            if w.stalled { "  STALLED (dead or frozen)" } else { "" }
                        ));
                        for (q, l) in &w.jobs {
                            lines.push(format!("    {q}  {}  {}", l.id, l.name));
                        }
                    }
                    lines.join("\n")
                },
            );
        }
        Command::Keys {
            partition,
            key,
            limit,
        } => {
            let keys = match key {
                Some(k) => vec![jobs.execution_key(partition, k).await?],
                None => {
                    known_partition(jobs, partition).await?;
                    jobs.execution_keys(partition, (*limit).min(MAX_BULK))
                        .await?
                }
            };
            out.print(
                json!(
                    keys.iter()
                        .map(|k| json!({
                            "key": k.key,
                            "holder": k.holder,
                            "waiting": k.waiting,
                            "waiters": k.waiters,
                        }))
                        .collect::<Vec<_>>()
                ),
                || {
                    if keys.is_empty() {
                        return format!("no execution key is held or waited for in {partition}");
                    }
                    keys.iter()
                        .map(|k| {
                            format!(
                                "{}  held by {}  {} waiting{}",
                                k.key,
                                k.holder.as_deref().unwrap_or("nobody"),
                                k.waiting,
                                if k.waiters.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", k.waiters.join(" "))
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        Command::Purge { partition, queue } => {
            known_queue(jobs, partition, queue, false).await?;
            let n = jobs.purge(partition, queue).await?;
            out.print(json!({ "deleted": n }), || {
                format!("deleted {n} waiting jobs")
            });
        }
        Command::PurgeDead { partition, queue } => {
            known_queue(jobs, partition, queue, false).await?;
            let n = jobs.purge_dead(partition, queue).await?;
            out.print(json!({ "deleted": n }), || format!("deleted {n} dead jobs"));
        }
        Command::Pause { partition, queue } => {
            known_queue(jobs, partition, queue, cli.create).await?;
            jobs.pause(partition, queue).await?;
            out.print(json!({ "paused": true }), || {
                format!("paused {partition}/{queue}")
            });
        }
        Command::Resume { partition, queue } => {
            known_queue(jobs, partition, queue, cli.create).await?;
            jobs.resume(partition, queue).await?;
            out.print(json!({ "paused": false }), || {
                format!("resumed {partition}/{queue}")
            });
        }
        Command::Rate {
            partition,
            queue,
            limit,
            window,
        } => {
            let set = match (limit.as_deref(), window.as_deref()) {
                (None, _) => None,
                (Some("none"), None) => Some(None),
                (Some(n), Some(w)) if n != "none" => {
                    let n = n.parse::<u32>().map_err(|e| {
                        Fail::Usage(format!("rate wants a number of starts, not {n:?}: {e}"))
                    })?;
                    Some(Some(RateLimit::new(n, parse_window(w)?)?))
                }
                _ => {
                    return Err(Fail::Usage(
                        "rate wants N WINDOW (e.g. 10 2s) or none".to_owned(),
                    ));
                }
            };
            let create = cli.create && set.is_some();
            known_queue(jobs, partition, queue, create).await?;
            if let Some(limit) = set {
                jobs.set_rate_limit(partition, queue, limit).await?;
            }
            let c = jobs.counts(partition, queue).await?;
            out.print(
                json!({
                    "rate_limit": c.rate_limit.map(|r| json!({ "max": r.max(), "window_ms": r.window().as_millis() as u64 })),
                    "rate_limited": c.rate_limited,
                }),
                || match c.rate_limit {
                    Some(r) => format!(
                        "rate limit of {partition}/{queue}: {} starts per {:?} per rate group; {} jobs waiting for their window",
                        r.max(),
                        r.window(),
                        c.rate_limited
                    ),
                    None => format!("rate limit of {partition}/{queue}: none"),
                },
            );
        }
        Command::Schedules { partition } => {
            known_partition(jobs, partition).await?;
            let all = jobs.schedules(partition).await?;
            out.print(
                json!(all.iter().map(schedule_json).collect::<Vec<_>>()),
                || schedules_text(&all),
            );
        }
        Command::Flows { partition } => {
            known_partition(jobs, partition).await?;
            let all = jobs.flows(partition, 1000).await?;
            out.print(json!(all.iter().map(flow_json).collect::<Vec<_>>()), || {
                flows_text(&all)
            });
        }
        Command::Flow { partition, id } => {
            let Some(f) = jobs.flow(partition, id).await? else {
                return Err(unknown_job(partition, id, " or it is not a flow's parent"));
            };
            out.print(flow_json(&f), || flow_text(&f));
        }
        Command::Batches { partition } => {
            known_partition(jobs, partition).await?;
            let all = jobs.batches(partition, 1000).await?;
            out.print(
                json!(all.iter().map(batch_json).collect::<Vec<_>>()),
                || batches_text(&all),
            );
        }
        Command::Batch { partition, id } => {
            let Some(b) = jobs.batch(partition, id).await? else {
                return Err(Fail::NotFound(format!(
                    "no batch {id} in partition {partition} (unknown, or settled more than 7 days ago); `wharf-jobs batches {partition}` lists them"
                )));
            };
            out.print(batch_json(&b), || batches_text(std::slice::from_ref(&b)));
        }
        Command::SchedulePause { partition, name } => {
            jobs.pause_schedule(partition, name).await?;
            out.print(json!({ "schedule": name, "paused": true }), || {
                format!("schedule {partition}/{name}: paused")
            });
        }
        Command::ScheduleResume { partition, name } => {
            jobs.resume_schedule(partition, name).await?;
            out.print(json!({ "schedule": name, "paused": false }), || {
                format!("schedule {partition}/{name}: resumed")
            });
        }
        Command::ScheduleRemove { partition, name } => {
            jobs.remove_schedule(partition, name).await?;
            out.print(json!({ "schedule": name, "removed": true }), || {
                format!("schedule {partition}/{name}: removed")
            });
        }
        Command::Web {
            bind,
            read_only,
            token,
        } => {
            let mut console = wharf_console::Console::builder()
                .title("wharf-jobs")
                .jobs(jobs.clone())
                .read_only(*read_only);
            if let Some(token) = token {
                console = console.bearer_token(token.clone());
            }
            let served = wharf_console::serve(console.build(), *bind)
                .await
                .map_err(|e| Fail::Failed(format!("could not serve the console on {bind}: {e}")))?;
            println!("console: http://{}/", served.local_addr());
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            let _ = tokio::signal::ctrl_c().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), served.shutdown()).await;
        }
        Command::Limit {
            partition,
            queue,
            limit,
        } => {
            let limit = match limit.as_str() {
                "none" => None,
                n => Some(n.parse::<u32>().map_err(|e| {
                    Fail::Usage(format!(
                        "limit wants a number of jobs (0 or more) or `none`, not {n:?}: {e}"
                    ))
                })?),
            };
            known_queue(jobs, partition, queue, cli.create).await?;
            jobs.set_limit(partition, queue, limit).await?;
            out.print(json!({ "limit": limit }), || match limit {
                None => format!("limit of {partition}/{queue}: none (no global limit)"),
                Some(0) => format!("limit of {partition}/{queue}: 0 (no job of the queue starts)"),
                Some(l) => format!("limit of {partition}/{queue}: {l}"),
            });
        }
    }
    Ok(())
}

/// `500ms`, `10s`, `2m`, `1h` or a number of milliseconds.
fn parse_window(w: &str) -> Result<Duration, Fail> {
    let bad = || {
        Fail::Usage(format!(
            "window `{w}` is not valid: write a positive duration such as 500ms, 10s, 2m or 1h"
        ))
    };
    let (num, unit) = match w.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => w.split_at(i),
        None => (w, "ms"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(bad()),
    };
    if ms == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(ms))
}

fn unix_ms(t: Option<std::time::SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

fn schedule_json(s: &ScheduleInfo) -> Value {
    json!({
        "name": s.name,
        "when": s.when,
        "queue": s.queue,
        "job": s.job,
        "paused": s.paused,
        "next_at_ms": unix_ms(s.next_at),
        "last_at_ms": unix_ms(s.last_at),
        "fired": s.fired,
    })
}

fn schedules_text(all: &[ScheduleInfo]) -> String {
    let mut text = format!(
        "{:<24} {:<16} {:<20} {:>8} {:>13}  when",
        "schedule", "queue", "job", "fired", "next in (s)"
    );
    let now = std::time::SystemTime::now();
    for s in all {
        let next = match (s.paused, s.next_at) {
            (true, _) => "paused".to_owned(),
            (false, None) => "never".to_owned(),
            (false, Some(t)) => {
                let secs = t
                    .duration_since(now)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                format!("{secs:.1}")
            }
        };
        text.push_str(&format!(
            "\n{:<24} {:<16} {:<20} {:>8} {:>13}  {}",
            s.name, s.queue, s.job, s.fired, next, s.when
        ));
    }
    text
}

fn policy_name(p: ChildFailure) -> &'static str {
    match p {
        ChildFailure::Ignore => "ignore",
        ChildFailure::Report => "report",
        _ => "fail",
    }
}

fn flow_json(f: &FlowInfo) -> Value {
    json!({
        "id": f.id,
        "name": f.name,
        "queue": f.queue,
        "state": f.state.as_str(),
        "total": f.total,
        "done": f.done,
        "failed": f.failed,
        "policy": policy_name(f.policy),
        "children": f.children.iter().map(|(m, st)| json!({
            "partition": m.partition,
            "queue": m.queue,
            "id": m.id,
            "outcome": st.map(|s| s.as_str()),
        })).collect::<Vec<_>>(),
    })
}

fn flows_text(all: &[FlowInfo]) -> String {
    let mut text = format!(
        "{:<32} {:<20} {:<16} {:>11} {:>7}  policy",
        "parent", "job", "queue", "done/total", "failed"
    );
    for f in all {
        text.push_str(&format!(
            "\n{:<32} {:<20} {:<16} {:>11} {:>7}  {}",
            f.id,
            f.name,
            f.queue,
            format!("{}/{}", f.done, f.total),
            f.failed,
            policy_name(f.policy)
        ));
    }
    text
}

fn flow_text(f: &FlowInfo) -> String {
    let mut text = format!(
        "flow {} ({} in {}): {}, children {}/{} done, {} failed, policy {}",
        f.id,
        f.name,
        f.queue,
        f.state.as_str(),
        f.done,
        f.total,
        f.failed,
        policy_name(f.policy)
    );
    for (m, st) in &f.children {
        text.push_str(&format!(
            "\n  child {} {}/{}: {}",
            m.id,
            m.partition,
            m.queue,
            st.map_or("pending", |s| s.as_str())
        ));
    }
    text
}

fn batch_json(b: &BatchInfo) -> Value {
    json!({
        "id": b.id,
        "settled": b.settled,
        "total": b.total,
        "succeeded": b.succeeded,
        "failed": b.failed,
        "pending": b.total.saturating_sub(b.succeeded + b.failed),
        "created_ms": b.created_ms,
        "on_success": b.on_success,
        "on_complete": b.on_complete,
    })
}

fn batches_text(all: &[BatchInfo]) -> String {
    let mut text = format!(
        "{:<32} {:>8} {:>10} {:>7} {:>8}  state",
        "batch", "total", "succeeded", "failed", "pending"
    );
    for b in all {
        text.push_str(&format!(
            "\n{:<32} {:>8} {:>10} {:>7} {:>8}  {}",
            b.id,
            b.total,
            b.succeeded,
            b.failed,
            b.total.saturating_sub(b.succeeded + b.failed),
            if b.settled { "settled" } else { "open" }
        ));
    }
    text
}

/// Retries one dead job: (JSON, text).
async fn retry_one(jobs: &Jobs, p: &str, id: &str) -> Result<(Value, String), Fail> {
    if jobs.job(p, id).await?.is_none() {
        return Err(unknown_job(p, id, ": nothing retried"));
    }
    Ok(match jobs.retry_dead(p, id).await? {
        Enqueued::Queued(new) => (
            json!({ "id": id, "outcome": "queued", "job": new }),
            format!("{id}: re-enqueued as {new}"),
        ),
        Enqueued::Duplicate(holder) => (
            json!({ "id": id, "outcome": "duplicate", "holder": holder }),
            format!("{id}: not re-enqueued: job {holder} holds its queue key"),
        ),
    })
}

/// Runs `one` for each id, printing each result as it comes; every id is tried. Fails with
/// the first failure's kind when any failed (not found before failed: nothing to undo).
async fn each<F, Fut>(ids: &[String], out: &Out, one: F) -> Result<(), Fail>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Value, String), Fail>>,
{
    let mut results = Vec::with_capacity(ids.len());
    let mut first_failure = None;
    let mut failures = 0usize;
    for id in ids {
        match one(id.clone()).await {
            Ok((value, text)) => {
                if !out.json {
                    println!("{text}");
                }
                results.push(value);
            }
            Err(fail) => {
                let text = match &fail {
                    Fail::Usage(t) | Fail::NotFound(t) | Fail::Failed(t) => t.clone(),
                };
                if !out.json {
                    eprintln!("error: {text}");
                }
                results.push(json!({ "id": id, "error": text }));
                failures += 1;
                first_failure.get_or_insert(fail);
            }
        }
    }
    if out.json {
        println!("{}", json!(results));
    }
    match first_failure {
        None => Ok(()),
        Some(fail) if ids.len() == 1 => Err(fail),
        Some(fail) => {
            let summary = format!("{failures} of {} failed (above)", ids.len());
            Err(match fail {
                Fail::NotFound(_) => Fail::NotFound(summary),
                Fail::Usage(_) => Fail::Usage(summary),
                Fail::Failed(_) => Fail::Failed(summary),
            })
        }
    }
}

fn record_json(r: &JobRecord, now_ms: i64) -> Value {
    let mut v = job_json(&r.info);
    v["enqueued_at_ms"] = json!(r.enqueued_at_ms);
    v["run_at_ms"] = json!(r.run_at_ms);
    v["started_at_ms"] = json!(r.started_at_ms);
    v["finished_at_ms"] = json!(r.finished_at_ms);
    v["worker"] = json!(r.worker);
    v["lease_expires_in_ms"] = json!(r.lease_expires_at_ms.map(|t| t - now_ms));
    v
}

/// One job on one line: id, name, state, attempts, keys, the time that matters, the error.
fn record_line(r: &JobRecord, now_ms: i64) -> String {
    let j = &r.info;
    let when = match (
        r.finished_at_ms,
        r.started_at_ms,
        r.run_at_ms,
        r.enqueued_at_ms,
    ) {
        (Some(t), ..) => format!("finished {} ago", secs(now_ms - t)),
        (None, Some(t), ..) if r.worker.is_some() => format!("started {} ago", secs(now_ms - t)),
        (None, _, Some(t), _) if t > now_ms => format!("due in {}", secs(t - now_ms)),
        (.., Some(t)) => format!("enqueued {} ago", secs(now_ms - t)),
        _ => String::new(),
    };
    let mut line = format!(
        "{}  {}  {}  attempts={}  {when}",
        j.id,
        j.name,
        j.state.as_str(),
        j.attempts
    );
    if let Some(k) = &j.execution_key {
        line.push_str(&format!("  key={k}"));
    }
    if let Some(w) = &r.worker {
        line.push_str(&format!("  worker={w}"));
    }
    if let Some(e) = &j.error {
        line.push_str(&format!("  error: {e}"));
    }
    line
}

fn job_json(j: &JobInfo) -> Value {
    json!({
        "id": j.id,
        "name": j.name,
        "queue": j.queue,
        "state": j.state.as_str(),
        "args": serde_json::from_str::<Value>(&j.args).unwrap_or_else(|_| Value::String(j.args.clone())),
        "attempts": j.attempts,
        "priority": j.priority,
        "error": j.error,
        "progress": j.progress.as_deref().map(|p| serde_json::from_str::<Value>(p).unwrap_or_else(|_| Value::String(p.to_owned()))),
        "result": j.result.as_deref().map(|r| serde_json::from_str::<Value>(r).unwrap_or_else(|_| Value::String(r.to_owned()))),
        "queue_key": j.queue_key,
        "execution_key": j.execution_key,
        "lease_expiries": j.lease_expiries,
        "cancel_requested": j.cancel_requested,
        "stopping": j.stopping,
        "flow_parent": j.flow_parent.as_ref().map(|(p, id)| json!({ "partition": p, "id": id })),
        "batch": j.batch.as_ref().map(|(p, id)| json!({ "partition": p, "id": id })),
    })
}

fn show_text(j: &JobInfo) -> String {
    let mut lines = vec![
        format!("id:              {}", j.id),
        format!("name:            {}", j.name),
        format!("queue:           {}", j.queue),
        format!("state:           {}", j.state.as_str()),
        format!("attempts:        {}", j.attempts),
        format!("priority:        {}", j.priority),
        format!("args:            {}", j.args),
        format!(
            "queue_key:       {}",
            j.queue_key.as_deref().unwrap_or_default()
        ),
        format!(
            "execution_key:   {}",
            j.execution_key.as_deref().unwrap_or_default()
        ),
        format!("lease_expiries:  {}", j.lease_expiries),
        format!("cancel_asked:    {}", j.cancel_requested),
    ];
    if let Some(s) = &j.stopping {
        lines.push(format!("stopping:        {s}"));
    }
    lines.push(format!(
        "error:           {}",
        j.error.as_deref().unwrap_or_default()
    ));
    if let Some(p) = &j.progress {
        lines.push(format!("progress:        {p}"));
    }
    if let Some(r) = &j.result {
        lines.push(format!("result:          {r}"));
    }
    if let Some((p, id)) = &j.flow_parent {
        lines.push(format!(
            "flow parent:     {p}/{id} (wharf-jobs flow {p} {id})"
        ));
    }
    if let Some((p, id)) = &j.batch {
        lines.push(format!(
            "batch:           {p}/{id} (wharf-jobs batch {p} {id})"
        ));
    }
    lines.join("\n")
}

fn counts_json(q: &str, c: &QueueCounts, stalled: Option<&str>) -> Value {
    json!({
        "queue": q,
        "queued": c.queued,
        "scheduled": c.scheduled,
        "parked": c.parked,
        "running": c.running,
        "dead": c.dead,
        "finished_kept": c.finished_kept,
        "completed_total": c.completed_total,
        "cancelled_total": c.cancelled_total,
        "dead_total": c.dead_total,
        "retried_total": c.retried_total,
        "lease_expired_total": c.lease_expired_total,
        "paused": c.paused,
        "limit": c.limit,
        "rate_limit": c.rate_limit.map(|r| json!({ "max": r.max(), "window_ms": r.window().as_millis() as u64 })),
        "rate_limited": c.rate_limited,
        "stalled": stalled,
    })
}

/// One line about a queue's stalled leases, if any.
fn stalled_note(leases: &[Lease]) -> Option<String> {
    let stalled: Vec<&Lease> = leases.iter().filter(|l| l.stalled).collect();
    let soonest = stalled.iter().map(|l| l.expires_in_ms).min()?;
    Some(format!(
        "{} stalled lease(s) held by a dead or frozen worker; the first frees in {}",
        stalled.len(),
        secs(soonest.max(0))
    ))
}

async fn queues(jobs: &Jobs, p: &str, out: &Out) -> Result<(), Fail> {
    known_partition(jobs, p).await?;
    let mut rows = Vec::new();
    for q in jobs.queues(p).await? {
        let c = jobs.counts(p, &q).await?;
        let note = if c.running > 0 {
            stalled_note(&jobs.leases(p, &q, 100).await?)
        } else {
            None
        };
        rows.push((q, c, note));
    }
    out.print(
        json!(
            rows.iter()
                .map(|(q, c, note)| counts_json(q, c, note.as_deref()))
                .collect::<Vec<_>>()
        ),
        || {
            let mut text = format!(
                "{:<24} {:>8} {:>9} {:>7} {:>7} {:>6} {:>10} {:>9} {:>6}  settings",
                "queue",
                "queued",
                "scheduled",
                "parked",
                "running",
                "dead",
                "completed",
                "cancelled",
                "leases"
            );
            for (q, c, note) in &rows {
                let mut settings = Vec::new();
                if c.paused {
                    settings.push("paused".to_owned());
                }
                if let Some(r) = c.rate_limit {
                    settings.push(format!("rate={}/{:?}", r.max(), r.window()));
                }
                if c.rate_limited > 0 {
                    settings.push(format!("rate_limited={}", c.rate_limited));
                }
                if let Some(l) = c.limit {
                    settings.push(format!("limit={l}"));
                }
                if let Some(note) = note {
                    settings.push(format!("({note})"));
                }
                text.push_str(&format!(
                    "\n{:<24} {:>8} {:>9} {:>7} {:>7} {:>6} {:>10} {:>9} {:>6}  {}",
                    q,
                    c.queued,
                    c.scheduled,
                    c.parked,
                    c.running,
                    c.dead,
                    c.completed_total,
                    c.cancelled_total,
                    c.lease_expired_total,
                    settings.join(" ")
                ));
            }
            text
        },
    );
    Ok(())
}

async fn leases(jobs: &Jobs, p: &str, q: &str, out: &Out) -> Result<(), Fail> {
    let leases = jobs.leases(p, q, 1000).await?;
    let c = jobs.counts(p, q).await?;
    let value = json!({
        "running": c.running,
        "limit": c.limit,
        "leases": leases.iter().map(|l| json!({
            "id": l.id,
            "name": l.name,
            "worker": l.worker,
            "expires_in_ms": l.expires_in_ms,
            "renewed_ms_ago": l.renewed_ms_ago,
            "heartbeat_ms": l.heartbeat_ms,
            "stalled": l.stalled,
        })).collect::<Vec<_>>(),
    });
    out.print(value, || {
        let mut lines = vec![format!(
            "{} running{}",
            c.running,
            c.limit.map_or(String::new(), |l| format!(" (limit {l})"))
        )];
        for l in &leases {
            let state = if l.expires_in_ms < 0 {
                format!(
                    "EXPIRED {} ago: the next lease check puts it back in its queue",
                    secs(-l.expires_in_ms)
                )
            } else if l.stalled {
                format!(
                    "STALLED: not renewed for {} (its worker beats every {} ms: dead or frozen); holds its slot and keys until the lease expires in {}",
                    secs(l.renewed_ms_ago),
                    l.heartbeat_ms,
                    secs(l.expires_in_ms)
                )
            } else {
                format!(
                    "renewed {} ago, expires in {}",
                    secs(l.renewed_ms_ago),
                    secs(l.expires_in_ms)
                )
            };
            lines.push(format!("{}  {}  worker={}  {}", l.id, l.name, l.worker, state));
        }
        if let Some(note) = stalled_note(&leases) {
            lines.push(format!("waiting: {note}"));
        }
        lines.join("\n")
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_is_refused_for_actions() {
        let cli = Cli::try_parse_from(["wharf-jobs", "--watch", "1", "purge", "p", "q"]).unwrap();
        assert!(!cli.command.is_listing());
        let cli = Cli::try_parse_from(["wharf-jobs", "--watch", "1", "queues", "p"]).unwrap();
        assert!(cli.command.is_listing());
    }
}
