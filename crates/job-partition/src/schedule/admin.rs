//! Schedules at run time: create or change, list, pause, resume, remove.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::spec::{NEVER, Schedule};
use crate::client::{Jobs, pending};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::keys::{self, check_name};
use crate::scripts::scripts;

/// Most schedules [`Jobs::schedules`] lists per partition.
const LIST_MAX: usize = 1000;

/// One schedule as [`Jobs::schedules`] lists it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule's name.
    pub name: String,
    /// When it ticks, as text (for example ``cron `0 30 9 * * *` in Europe/Berlin``).
    pub when: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The registered name of its job type.
    pub job: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Its next tick (`None` while paused, or when it never ticks again).
    pub next_at: Option<SystemTime>,
    /// The last tick it fired, if any.
    pub last_at: Option<SystemTime>,
    /// How many jobs its ticks have enqueued (or found already queued by their queue key).
    pub fired: u64,
    /// Its definition, as registered (`None` if it could not be read back: written by a
    /// newer version?).
    pub schedule: Option<Schedule>,
}

fn at(ms: Option<&String>) -> Option<SystemTime> {
    let ms: i64 = ms?.parse().ok()?;
    (0..NEVER)
        .contains(&ms)
        .then(|| UNIX_EPOCH + Duration::from_millis(ms as u64))
}

impl Jobs {
    /// Creates the schedule `name` in `partition`, or replaces its definition: each tick
    /// enqueues `job` into `queue`, exactly once however many schedulers run (see
    /// [`Scheduler`](crate::Scheduler)). A replaced schedule keeps its paused state; its
    /// next tick is computed anew from now.
    ///
    /// Fails with [`Error::InvalidSchedule`] (a missed-tick bound out of range) or
    /// [`Error::Config`] (a bad name, arguments too large) before anything is written.
    pub async fn schedule<J: Job>(
        &self,
        partition: &str,
        queue: &str,
        name: &str,
        schedule: &Schedule,
        job: &J,
    ) -> Result<()> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        check_name("schedule", name)?;
        schedule.check()?;
        let p = pending(job, 0, 0)?;
        let now = self.redis_time_ms().await?;
        let next = schedule.next_after_ms(now);
        self.note_partition(partition).await?;
        let args = vec![
            name.to_owned(),
            next.to_string(),
            "when".into(),
            schedule.stored_when(),
            "missed".into(),
            schedule.stored_missed(),
            "grace_ms".into(),
            schedule.grace_ms().to_string(),
            "job".into(),
            p.name,
            "args".into(),
            p.args,
            "queue".into(),
            queue.to_owned(),
            "qkey".into(),
            p.qkey,
            "xkey".into(),
            p.xkey,
            "rgroup".into(),
            p.rgroup,
            "qttl".into(),
            p.qttl_ms.to_string(),
            "prio".into(),
            p.priority.to_string(),
        ];
        let _: i64 = self
            .script("schedule", &scripts().sched_put, partition, args)
            .await?;
        tracing::info!(partition, queue, schedule = name, when = %schedule.describe(), "schedule set");
        Ok(())
    }

    /// The schedules of `partition` (at most 1000), soonest next tick first, paused last.
    pub async fn schedules(&self, partition: &str) -> Result<Vec<ScheduleInfo>> {
        check_name("partition", partition)?;
        let rows: Vec<Vec<String>> = self
            .script(
                "list schedules",
                &scripts().sched_list,
                partition,
                vec![LIST_MAX.to_string()],
            )
            .await?;
        Ok(rows.into_iter().filter_map(info).collect())
    }

    /// Pauses a schedule: no tick fires until [`Jobs::resume_schedule`]; ticks that come
    /// due meanwhile are dropped. Fails with [`Error::UnknownSchedule`] when there is none
    /// of that name.
    pub async fn pause_schedule(&self, partition: &str, name: &str) -> Result<()> {
        self.schedule_admin(partition, name, "pause", vec![]).await
    }

    /// Resumes a paused schedule from its next tick after now (ticks that came due while
    /// it was paused do not fire). Resuming a running schedule changes nothing but its
    /// next tick (computed anew). Fails with [`Error::UnknownSchedule`].
    pub async fn resume_schedule(&self, partition: &str, name: &str) -> Result<()> {
        check_name("partition", partition)?;
        check_name("schedule", name)?;
        let key = format!("{}sched:{name}", keys::prefix(partition));
        // The definition may change between the read and the write: the script refuses a
        // stale version, and this reads again.
        for _ in 0..3 {
            let f: Vec<Option<String>> = self
                .call(
                    "resume schedule",
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg(&["ver", "when", "missed", "grace_ms"]),
                )
                .await?;
            let [Some(ver), Some(when), Some(missed), Some(grace)] =
                <[_; 4]>::try_from(f).unwrap_or_default()
            else {
                return Err(self.unknown(partition, name));
            };
            let Some(s) = Schedule::from_stored(&when, &missed, &grace) else {
                return Err(Error::Protocol {
                    op: "resume schedule",
                    detail: format!(
                        "schedule `{name}` is stored as `{when}`, which this version cannot read"
                    ),
                });
            };
            let next = s.next_after_ms(self.redis_time_ms().await?);
            match self
                .schedule_admin_raw(partition, name, "resume", vec![ver, next.to_string()])
                .await?
                .as_str()
            {
                "stale" => continue,
                _ => return Ok(()),
            }
        }
        Err(Error::Protocol {
            op: "resume schedule",
            detail: format!("schedule `{name}` changed three times while resuming; try again"),
        })
    }

    /// Removes a schedule (jobs its ticks enqueued stay). Fails with
    /// [`Error::UnknownSchedule`].
    pub async fn remove_schedule(&self, partition: &str, name: &str) -> Result<()> {
        self.schedule_admin(partition, name, "remove", vec![]).await
    }

    async fn schedule_admin(
        &self,
        partition: &str,
        name: &str,
        op: &'static str,
        extra: Vec<String>,
    ) -> Result<()> {
        check_name("partition", partition)?;
        check_name("schedule", name)?;
        match self
            .schedule_admin_raw(partition, name, op, extra)
            .await?
            .as_str()
        {
            "unknown" => Err(self.unknown(partition, name)),
            _ => {
                tracing::info!(partition, schedule = name, op, "schedule changed");
                Ok(())
            }
        }
    }

    async fn schedule_admin_raw(
        &self,
        partition: &str,
        name: &str,
        op: &'static str,
        extra: Vec<String>,
    ) -> Result<String> {
        let mut args = vec![op.to_owned(), name.to_owned()];
        args.extend(extra);
        let answer: String = self
            .script("schedule admin", &scripts().sched_admin, partition, args)
            .await?;
        if answer == "unknown" && op == "resume" {
            return Err(self.unknown(partition, name));
        }
        Ok(answer)
    }

    fn unknown(&self, partition: &str, name: &str) -> Error {
        Error::UnknownSchedule {
            partition: partition.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The Redis server's clock, in Unix ms (schedules follow it, not the client's).
    pub(crate) async fn redis_time_ms(&self) -> Result<i64> {
        let t: (String, String) = self.call("time", &redis::cmd("TIME")).await?;
        let secs: i64 = t.0.parse().unwrap_or(0);
        let micros: i64 = t.1.parse().unwrap_or(0);
        if secs == 0 {
            return Err(Error::Protocol {
                op: "time",
                detail: format!("TIME answered {t:?}"),
            });
        }
        Ok(secs * 1000 + micros / 1000)
    }
}

fn info(row: Vec<String>) -> Option<ScheduleInfo> {
    let mut it = row.into_iter();
    let name = it.next()?;
    let mut f = HashMap::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        f.insert(k, v);
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let paused = get("paused") == "1";
    let schedule = Schedule::from_stored(&get("when"), &get("missed"), &get("grace_ms"));
    Some(ScheduleInfo {
        when: schedule
            .as_ref()
            .map(Schedule::describe)
            .unwrap_or_else(|| get("when")),
        queue: get("queue"),
        job: get("job"),
        paused,
        next_at: if paused { None } else { at(f.get("next_ms")) },
        last_at: at(f.get("last_ms")),
        fired: get("fired").parse().unwrap_or(0),
        schedule,
        name,
    })
}
