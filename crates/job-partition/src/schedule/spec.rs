//! What a schedule is: when it ticks (a cron expression in a time zone, or a fixed
//! interval) and what happens to ticks missed while no scheduler ran.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{Offset, TimeZone};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::{Cron, JobType};

use crate::error::{Error, Result};

/// The most ticks one schedule fires in one step (missed ticks caught up plus ticks on
/// time), and the largest bound [`Missed::RunEach`] takes.
pub const MAX_CATCH_UP: u32 = 100;

/// How many tick times one step looks at before it gives up counting and jumps to the next
/// tick after now (a 1-second cron that was stopped for more than a day).
const SCAN_MAX: usize = 100_000;

/// The next tick of a schedule that never ticks again (a cron expression with no future
/// match): stored as such, listed as no next tick.
pub(crate) const NEVER: i64 = i64::MAX;

/// What a schedule does with ticks that came due while no scheduler ran (ticks later than
/// the schedule's [`grace`](Schedule::grace) when a scheduler sees them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missed {
    /// Drop them: the schedule goes on from its next tick.
    Skip,
    /// Enqueue one job for all of them (the default).
    RunOnce,
    /// Enqueue one job per missed tick, for at most this many (the latest ones;
    /// 1 to [`MAX_CATCH_UP`]).
    RunEach(u32),
}

impl Missed {
    fn stored(self) -> String {
        match self {
            Missed::Skip => "skip".into(),
            Missed::RunOnce => "once".into(),
            Missed::RunEach(n) => format!("each:{n}"),
        }
    }

    fn from_stored(s: &str) -> Option<Self> {
        match s {
            "skip" => Some(Missed::Skip),
            "once" => Some(Missed::RunOnce),
            _ => s.strip_prefix("each:")?.parse().ok().map(Missed::RunEach),
        }
    }
}

/// When a schedule ticks, and its policy for missed ticks.
///
/// Built with [`Schedule::cron`], [`Schedule::cron_in`] or [`Schedule::every`], which check
/// the expression, the time zone and the interval at once: a bad one is an
/// [`Error::InvalidSchedule`] there, never at a tick.
///
/// ```
/// use std::time::Duration;
/// use wharf_job_partition::{Missed, Schedule};
///
/// // 09:30:00 on weekdays, Berlin time (CET or CEST, whichever is in force).
/// let daily = Schedule::cron_in("0 30 9 * * MON-FRI", "Europe/Berlin")?
///     .missed(Missed::RunOnce);
/// // Every 5 minutes from registration, catching up at most 3 missed ticks.
/// let every = Schedule::every(Duration::from_secs(300))?.missed(Missed::RunEach(3));
/// # let _ = (daily, every);
/// # Ok::<(), wharf_job_partition::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    when: When,
    missed: Missed,
    grace: Duration,
}

#[derive(Debug, Clone)]
enum When {
    Cron {
        cron: Box<Cron>,
        expr: String,
        tz: Tz,
    },
    Every {
        ms: i64,
    },
}

impl Schedule {
    /// Ticks at the times a cron expression matches, in UTC. The expression has 5 fields
    /// (minute, hour, day of month, month, day of week) or 6 with seconds first; names
    /// (`MON`, `JAN`), ranges, lists, steps, `L`, `W` and `#` work as in Vixie cron and the
    /// Open Cron Pattern Specification.
    pub fn cron(expr: &str) -> Result<Self> {
        Self::cron_in(expr, "UTC")
    }

    /// Ticks at the times a cron expression matches in the IANA time zone `tz` (for example
    /// `Europe/Berlin`). Across daylight saving changes: a fixed-time tick that falls in
    /// the hour skipped in spring runs at the first valid time after it; one that falls in
    /// the hour repeated in autumn runs once; ticks of an expression with a wildcard or a
    /// step in its seconds, minutes or hours field follow real time (a `0 * * * *`
    /// schedule fires 23 times on the spring day and 25 on the autumn day).
    pub fn cron_in(expr: &str, tz: &str) -> Result<Self> {
        let tz: Tz = tz.parse().map_err(|e| Error::InvalidSchedule {
            what: format!("time zone `{tz}`"),
            reason: "use an IANA time zone name such as `UTC` or `Europe/Berlin`".into(),
            source: Some(format!("{e}").into()),
        })?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| Error::InvalidSchedule {
                what: format!("cron expression `{expr}`"),
                reason: format!(
                    "{e}; write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. `0 30 9 * * MON-FRI`"
                ),
                source: Some(Box::new(e)),
            })?;
        Ok(Self::with(When::Cron {
            cron: Box::new(cron),
            expr: expr.trim().to_owned(),
            tz,
        }))
    }

    /// Ticks every `interval`, the first tick one interval after registration (measured
    /// on the Redis server's clock). The interval must be at least 1 ms.
    pub fn every(interval: Duration) -> Result<Self> {
        let ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        if ms < 1 {
            return Err(Error::InvalidSchedule {
                what: format!("interval {interval:?}"),
                reason: "an interval must be at least 1 ms".into(),
                source: None,
            });
        }
        Ok(Self::with(When::Every { ms }))
    }

    fn with(when: When) -> Self {
        Self {
            when,
            missed: Missed::RunOnce,
            grace: Duration::from_secs(60),
        }
    }

    /// What to do with ticks missed while no scheduler ran (default [`Missed::RunOnce`]).
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// How late a tick may fire and still count as on time (default 60 s). A tick found
    /// later than this was missed, and [`Missed`] decides. Keep it above the schedulers'
    /// poll interval plus a Redis timeout.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The first tick strictly after `at`, or `None` when the schedule never ticks again.
    /// For [`Schedule::every`], one interval after `at`.
    pub fn next_after(&self, at: SystemTime) -> Option<SystemTime> {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let next = self.next_after_ms(ms);
        (next != NEVER).then(|| UNIX_EPOCH + Duration::from_millis(next.max(0) as u64))
    }

    /// Checks what the builders cannot: the missed-tick bound.
    pub(crate) fn check(&self) -> Result<()> {
        if let Missed::RunEach(n) = self.missed
            && !(1..=MAX_CATCH_UP).contains(&n)
        {
            return Err(Error::InvalidSchedule {
                what: format!("Missed::RunEach({n})"),
                reason: format!(
                    "the bound must be 1 to {MAX_CATCH_UP}; use Missed::Skip to drop missed ticks"
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// The first tick strictly after `ms` (Unix ms), or [`NEVER`].
    pub(crate) fn next_after_ms(&self, ms: i64) -> i64 {
        match &self.when {
            When::Every { ms: every } => ms.saturating_add(*every),
            When::Cron { cron, tz, .. } => cron_next_after(cron, *tz, ms),
        }
    }

    /// The ticks to fire now and the next tick, for a schedule whose next tick is `next`,
    /// at `now` (both Unix ms on the Redis server's clock).
    pub(crate) fn plan(&self, next: i64, now: i64) -> Plan {
        let keep = 2 * MAX_CATCH_UP as usize;
        let mut recent = VecDeque::with_capacity(keep);
        let mut t = next;
        let mut scanned = 0;
        while t <= now {
            if scanned == SCAN_MAX {
                t = self.next_after_ms(now);
                break;
            }
            if recent.len() == keep {
                recent.pop_front();
            }
            recent.push_back(t);
            scanned += 1;
            t = match &self.when {
                // Interval ticks keep their phase: next, next + d, next + 2d, ...
                When::Every { ms } if now - t > ms.saturating_mul(keep as i64) => {
                    let k = (now - t) / ms - keep as i64;
                    t + k * ms
                }
                When::Every { ms } => t.saturating_add(*ms),
                When::Cron { .. } => self.next_after_ms(t),
            };
        }
        let grace = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        let (missed, on_time): (Vec<i64>, Vec<i64>) =
            recent.into_iter().partition(|&f| now - f > grace);
        let caught_up = match self.missed {
            Missed::Skip => 0,
            Missed::RunOnce => 1,
            Missed::RunEach(n) => n as usize,
        };
        let mut fires: Vec<i64> = missed[missed.len().saturating_sub(caught_up)..].to_vec();
        fires.extend(on_time);
        let over = fires.len().saturating_sub(MAX_CATCH_UP as usize);
        fires.drain(..over);
        Plan { fires, next: t }
    }

    /// The stored form of when it ticks (`cron <tz> <expr>` or `every <ms>`).
    pub(crate) fn stored_when(&self) -> String {
        match &self.when {
            When::Cron { expr, tz, .. } => format!("cron {} {expr}", tz.name()),
            When::Every { ms } => format!("every {ms}"),
        }
    }

    pub(crate) fn stored_missed(&self) -> String {
        self.missed.stored()
    }

    pub(crate) fn grace_ms(&self) -> i64 {
        i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// The schedule stored as `stored_when`, `stored_missed` and `grace_ms` wrote it.
    pub(crate) fn from_stored(when: &str, missed: &str, grace_ms: &str) -> Option<Self> {
        let mut s = match when.split_once(' ')? {
            ("every", ms) => Self::with(When::Every {
                ms: ms.parse().ok().filter(|&m: &i64| m >= 1)?,
            }),
            ("cron", rest) => {
                let (tz, expr) = rest.split_once(' ')?;
                Self::cron_in(expr, tz).ok()?
            }
            _ => return None,
        };
        s.missed = Missed::from_stored(missed)?;
        s.grace = Duration::from_millis(grace_ms.parse().ok()?);
        Some(s)
    }

    /// A short text of the schedule, as listings show it.
    pub(crate) fn describe(&self) -> String {
        match &self.when {
            When::Cron { expr, tz, .. } => format!("cron `{expr}` in {}", tz.name()),
            When::Every { ms } => format!("every {:?}", Duration::from_millis(*ms as u64)),
        }
    }

    /// The policy for missed ticks.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }
}

/// The first tick of `cron` in `tz` strictly after `ms`, in real time.
///
/// croner searches local wall-clock time, which runs back an hour when clocks go back: it
/// may answer a time before `ms` (filtered out here), and for expressions with a wildcard
/// or step in the time fields it does not see the second pass of the repeated hour, which
/// `repeated_hour_tick` scans.
fn cron_next_after(cron: &Cron, tz: Tz, ms: i64) -> i64 {
    // Cron has whole seconds; croner keeps a start's milliseconds in its answer.
    let ms = ms.div_euclid(1000) * 1000;
    let Some(at) = tz.timestamp_millis_opt(ms).single() else {
        return NEVER;
    };
    let Some(next) = cron
        .iter_after(at)
        .take(8)
        .map(|t| t.timestamp_millis())
        .find(|&t| t > ms)
    else {
        return NEVER;
    };
    if cron.determine_job_type() == JobType::FixedTime {
        return next;
    }
    repeated_hour_tick(cron, tz, ms, next).unwrap_or(next)
}

/// A tick in the second pass of a repeated (clocks went back) hour between `ms` and `next`.
fn repeated_hour_tick(cron: &Cron, tz: Tz, ms: i64, next: i64) -> Option<i64> {
    let offset = |t: i64| {
        tz.timestamp_millis_opt(t)
            .single()
            .map(|d| d.offset().fix().local_minus_utc())
    };
    let (before, after) = (offset(ms)?, offset(next)?);
    if after >= before {
        return None;
    }
    // The first second with the later offset (the clocks went back then).
    let (mut lo, mut hi) = (ms / 1000, next / 1000);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset(mid * 1000)? == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let repeated = i64::from(before - after);
    (0..repeated)
        .map(|s| (hi + s) * 1000)
        .take_while(|&t| t < next)
        .filter(|&t| t > ms)
        .find(|&t| {
            tz.timestamp_millis_opt(t)
                .single()
                .is_some_and(|d| cron.is_time_matching(&d).unwrap_or(false))
        })
}

/// One step of a schedule: the ticks to fire (oldest first) and its next tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) fires: Vec<i64>,
    pub(crate) next: i64,
}
