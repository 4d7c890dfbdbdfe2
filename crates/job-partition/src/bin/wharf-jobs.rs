//! `wharf-jobs`: inspect and administer wharf-job-partition jobs in Redis.
//!
//! Run `wharf-jobs help` for the commands. The Redis URL comes from `--url URL` or
//! `WHARF_REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::process::ExitCode;

use std::time::Duration;

use wharf_job_partition::{CancelOutcome, Config, Enqueued, Jobs, Lease, RateLimit};

const USAGE: &str = "\
wharf-jobs: inspect and administer wharf-job-partition jobs in Redis

usage: wharf-jobs [--url REDIS_URL] [--create] COMMAND [ARGS]

commands:
  partitions                          list partitions
  queues PARTITION                    list a partition's queues with counts per state
  leases PARTITION QUEUE              list the leases of the queue's running jobs, and
                                      which ones a dead worker holds (until when)
  show PARTITION JOB_ID               show one job
  cancel PARTITION JOB_ID             cancel a waiting or running job
  dead PARTITION QUEUE [N]            list the newest N (default 20) dead jobs
  retry PARTITION JOB_ID              put a dead job back in its queue
  purge PARTITION QUEUE               delete the queue's waiting jobs
  purge-dead PARTITION QUEUE          empty the queue's dead set
  pause PARTITION QUEUE               stop every worker starting jobs of the queue
  resume PARTITION QUEUE              let workers start jobs of the queue again
  limit PARTITION QUEUE N|none        set the queue's global limit of running jobs
                                      (0: no job starts; none: no limit)
  rate PARTITION QUEUE                show the queue's rate limit and its rate-limited jobs
  rate PARTITION QUEUE N WINDOW|none  at most N starts per WINDOW (e.g. 500ms, 10s, 1m) for
                                      each rate group of the queue; none: no rate limit
  schedules PARTITION                 list the partition's schedules (next tick, paused)
  schedule-pause PARTITION NAME       stop a schedule's ticks
  schedule-resume PARTITION NAME      restart a schedule from its next tick after now
  schedule-remove PARTITION NAME      delete a schedule (its enqueued jobs stay)

A PARTITION or QUEUE that does not exist is an error (a misspelling must not create a
queue); --create lets pause, resume and limit set up a queue before its first job.
The URL comes from --url or WHARF_REDIS_URL (default redis://127.0.0.1:6379).
Exit status: 0 done, 1 failed (also: unknown partition, queue or job), 2 bad usage.";

/// Why a command did not succeed.
enum Fail {
    /// The words are not a command: exit 2.
    Usage,
    /// The command failed: exit 1 with this message.
    Error(String),
    /// A call to Redis failed: exit 1 with the library's error (its cause kept).
    Jobs(wharf_job_partition::Error),
}

impl From<wharf_job_partition::Error> for Fail {
    fn from(e: wharf_job_partition::Error) -> Self {
        Fail::Jobs(e)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = Config::from_env();
    if let Some(i) = args.iter().position(|a| a == "--url") {
        if i + 1 >= args.len() {
            eprintln!("--url needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        }
        config = Config::new(args[i + 1].clone());
        args.drain(i..=i + 1);
    }
    let create = args.iter().any(|a| a == "--create");
    args.retain(|a| a != "--create");
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    if matches!(
        words.first().copied(),
        None | Some("help" | "--help" | "-h")
    ) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let jobs = match Jobs::connect(config).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&jobs, &words, create).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage) => {
            eprintln!("bad usage\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Error(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(Fail::Jobs(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The partition must exist.
async fn known_partition(jobs: &Jobs, p: &str) -> Result<(), Fail> {
    let all = jobs.partitions().await?;
    if all.iter().any(|k| k == p) {
        return Ok(());
    }
    Err(Fail::Error(format!(
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
    Err(Fail::Error(format!(
        "no queue `{q}` in partition `{p}` (its queues: {}); check the spelling, or pass --create to set up a queue before its first job",
        list(&all)
    )))
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

/// Runs one command.
async fn run(jobs: &Jobs, words: &[&str], create: bool) -> Result<(), Fail> {
    match words {
        ["partitions"] => {
            for p in jobs.partitions().await? {
                println!("{p}");
            }
        }
        ["queues", p] => queues(jobs, p).await?,
        ["leases", p, q] => {
            known_queue(jobs, p, q, false).await?;
            leases(jobs, p, q).await?;
        }
        ["show", p, id] => match jobs.job(p, id).await? {
            Some(j) => {
                println!("id:              {}", j.id);
                println!("name:            {}", j.name);
                println!("queue:           {}", j.queue);
                println!("state:           {}", j.state.as_str());
                println!("attempts:        {}", j.attempts);
                println!("args:            {}", j.args);
                println!("queue_key:       {}", j.queue_key.unwrap_or_default());
                println!("execution_key:   {}", j.execution_key.unwrap_or_default());
                println!("lease_expiries:  {}", j.lease_expiries);
                println!("cancel_asked:    {}", j.cancel_requested);
                if let Some(s) = j.stopping {
                    println!("stopping:        {s}");
                }
                println!("error:           {}", j.error.unwrap_or_default());
            }
            None => {
                return Err(Fail::Error(format!(
                    "no job {id} in partition {p} (unknown, or trimmed by retention)"
                )));
            }
        },
        ["cancel", p, id] => match jobs.cancel(p, id).await? {
            CancelOutcome::Cancelled => println!("cancelled"),
            CancelOutcome::Cancelling => {
                println!("running: its worker aborts it within about a second")
            }
            CancelOutcome::AlreadyFinished(s) => println!("already finished: {s}"),
            CancelOutcome::Unknown => {
                return Err(Fail::Error(format!(
                    "no job {id} in partition {p} (unknown, or trimmed by retention): nothing cancelled"
                )));
            }
            other => println!("{other:?}"),
        },
        ["dead", p, q] | ["dead", p, q, _] => {
            let n = match words.get(3) {
                Some(n) => n.parse().map_err(|_| Fail::Usage)?,
                None => 20,
            };
            known_queue(jobs, p, q, false).await?;
            for j in jobs.dead(p, q, n).await? {
                println!(
                    "{}  {}  attempts={}  {}",
                    j.id,
                    j.name,
                    j.attempts,
                    j.error.unwrap_or_default()
                );
            }
        }
        ["retry", p, id] => match jobs.retry_dead(p, id).await? {
            Enqueued::Queued(id) => println!("re-enqueued {id}"),
            Enqueued::Duplicate(h) => println!("not re-enqueued: job {h} holds its queue key"),
        },
        ["purge", p, q] => {
            known_queue(jobs, p, q, false).await?;
            println!("deleted {} waiting jobs", jobs.purge(p, q).await?);
        }
        ["purge-dead", p, q] => {
            known_queue(jobs, p, q, false).await?;
            println!("deleted {} dead jobs", jobs.purge_dead(p, q).await?);
        }
        ["pause", p, q] => {
            known_queue(jobs, p, q, create).await?;
            jobs.pause(p, q).await?;
            println!("paused {p}/{q}");
        }
        ["resume", p, q] => {
            known_queue(jobs, p, q, create).await?;
            jobs.resume(p, q).await?;
            println!("resumed {p}/{q}");
        }
        ["limit", p, q, n] => {
            let limit = match *n {
                "none" => None,
                n => Some(n.parse::<u32>().map_err(|_| Fail::Usage)?),
            };
            known_queue(jobs, p, q, create).await?;
            jobs.set_limit(p, q, limit).await?;
            match limit {
                None => println!("limit of {p}/{q}: none (no global limit)"),
                Some(0) => println!("limit of {p}/{q}: 0 (no job of the queue starts)"),
                Some(l) => println!("limit of {p}/{q}: {l}"),
            }
        }
        ["rate", p, q] => {
            known_queue(jobs, p, q, false).await?;
            let c = jobs.counts(p, q).await?;
            match c.rate_limit {
                Some(r) => println!(
                    "rate limit of {p}/{q}: {} starts per {:?} per rate group; {} jobs waiting for their window",
                    r.max(),
                    r.window(),
                    c.rate_limited
                ),
                None => println!("rate limit of {p}/{q}: none"),
            }
        }
        ["rate", p, q, n, window] => {
            let limit = match (*n, *window) {
                ("none", _) | (_, "none") => None,
                (n, w) => {
                    let n = n.parse::<u32>().map_err(|_| Fail::Usage)?;
                    Some(RateLimit::new(n, parse_window(w)?)?)
                }
            };
            known_queue(jobs, p, q, create).await?;
            jobs.set_rate_limit(p, q, limit).await?;
            match limit {
                Some(r) => println!(
                    "rate limit of {p}/{q}: {} starts per {:?}",
                    r.max(),
                    r.window()
                ),
                None => println!("rate limit of {p}/{q}: none"),
            }
        }
        ["rate", p, q, "none"] => {
            known_queue(jobs, p, q, create).await?;
            jobs.set_rate_limit(p, q, None).await?;
            println!("rate limit of {p}/{q}: none");
        }
        ["schedules", p] => {
            known_partition(jobs, p).await?;
            schedules(jobs, p).await?;
        }
        ["schedule-pause", p, name] => {
            jobs.pause_schedule(p, name).await?;
            println!("schedule {p}/{name}: paused");
        }
        ["schedule-resume", p, name] => {
            jobs.resume_schedule(p, name).await?;
            println!("schedule {p}/{name}: resumed");
        }
        ["schedule-remove", p, name] => {
            jobs.remove_schedule(p, name).await?;
            println!("schedule {p}/{name}: removed");
        }
        _ => return Err(Fail::Usage),
    }
    Ok(())
}

/// `500ms`, `10s`, `2m`, `1h` or a number of milliseconds.
fn parse_window(w: &str) -> Result<Duration, Fail> {
    let bad = || {
        Fail::Error(format!(
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
    Ok(Duration::from_millis(ms))
}

async fn schedules(jobs: &Jobs, p: &str) -> Result<(), Fail> {
    let all = jobs.schedules(p).await?;
    println!(
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
        println!(
            "{:<24} {:<16} {:<20} {:>8} {:>13}  {}",
            s.name, s.queue, s.job, s.fired, next, s.when
        );
    }
    Ok(())
}

async fn queues(jobs: &Jobs, p: &str) -> Result<(), Fail> {
    known_partition(jobs, p).await?;
    println!(
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
    for q in jobs.queues(p).await? {
        let c = jobs.counts(p, &q).await?;
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
        if c.running > 0
            && let Some(note) = stalled_note(&jobs.leases(p, &q, 100).await?)
        {
            settings.push(format!("({note})"));
        }
        println!(
            "{:<24} {:>8} {:>9} {:>7} {:>7} {:>6} {:>10} {:>9} {:>6}  {}",
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
        );
    }
    Ok(())
}

async fn leases(jobs: &Jobs, p: &str, q: &str) -> Result<(), Fail> {
    let leases = jobs.leases(p, q, 1000).await?;
    let c = jobs.counts(p, q).await?;
    println!(
        "{} running{}",
        c.running,
        c.limit.map_or(String::new(), |l| format!(" (limit {l})"))
    );
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
        println!("{}  {}  worker={}  {}", l.id, l.name, l.worker, state);
    }
    if let Some(note) = stalled_note(&leases) {
        println!("waiting: {note}");
    }
    Ok(())
}
