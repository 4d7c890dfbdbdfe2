//! `wharf-jobs`: inspect and administer wharf-job-partition jobs in Redis.
//!
//! Run `wharf-jobs help` for the commands. The Redis URL comes from `--url URL` or
//! `WHARF_REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::process::ExitCode;

use wharf_job_partition::{CancelOutcome, Config, Enqueued, Jobs};

const USAGE: &str = "\
wharf-jobs: inspect and administer wharf-job-partition jobs in Redis

usage: wharf-jobs [--url REDIS_URL] COMMAND [ARGS]

commands:
  partitions                          list partitions
  queues PARTITION                    list a partition's queues with counts per state
  show PARTITION JOB_ID               show one job
  cancel PARTITION JOB_ID             cancel a waiting or running job
  dead PARTITION QUEUE [N]            list the newest N (default 20) dead jobs
  retry PARTITION JOB_ID              put a dead job back in its queue
  purge PARTITION QUEUE               delete the queue's waiting jobs
  purge-dead PARTITION QUEUE          empty the queue's dead set
  pause PARTITION QUEUE               stop every worker starting jobs of the queue
  resume PARTITION QUEUE              let workers start jobs of the queue again
  limit PARTITION QUEUE N|none        set the queue's global limit of running jobs

The URL comes from --url or WHARF_REDIS_URL (default redis://127.0.0.1:6379).
Exit status: 0 done, 1 failed, 2 bad usage.";

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
    match run(&jobs, &words).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bad usage\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; Ok(false) when the words are not a command.
async fn run(jobs: &Jobs, words: &[&str]) -> wharf_job_partition::Result<bool> {
    match words {
        ["partitions"] => {
            for p in jobs.partitions().await? {
                println!("{p}");
            }
        }
        ["queues", p] => {
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
                if let Some(l) = c.limit {
                    settings.push(format!("limit={l}"));
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
                println!("error:           {}", j.error.unwrap_or_default());
            }
            None => println!("no job {id} in partition {p} (unknown, or trimmed by retention)"),
        },
        ["cancel", p, id] => match jobs.cancel(p, id).await? {
            CancelOutcome::Cancelled => println!("cancelled"),
            CancelOutcome::Cancelling => {
                println!("running: its worker aborts it within about a second")
            }
            CancelOutcome::AlreadyFinished(s) => println!("already finished: {s}"),
            CancelOutcome::Unknown => println!("no such job"),
            other => println!("{other:?}"),
        },
        ["dead", p, q] | ["dead", p, q, _] => {
            let n = match words.get(3) {
                Some(n) => match n.parse() {
                    Ok(n) => n,
                    Err(_) => return Ok(false),
                },
                None => 20,
            };
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
        ["purge", p, q] => println!("deleted {} waiting jobs", jobs.purge(p, q).await?),
        ["purge-dead", p, q] => println!("deleted {} dead jobs", jobs.purge_dead(p, q).await?),
        ["pause", p, q] => {
            jobs.pause(p, q).await?;
            println!("paused {p}/{q}");
        }
        ["resume", p, q] => {
            jobs.resume(p, q).await?;
            println!("resumed {p}/{q}");
        }
        ["limit", p, q, n] => {
            let limit = match *n {
                "none" | "0" => None,
                n => match n.parse() {
                    Ok(n) => Some(n),
                    Err(_) => return Ok(false),
                },
            };
            jobs.set_limit(p, q, limit).await?;
            println!(
                "limit of {p}/{q}: {}",
                limit.map_or("none".into(), |l: u32| l.to_string())
            );
        }
        _ => return Ok(false),
    }
    Ok(true)
}
