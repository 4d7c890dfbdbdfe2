//! Rate limits: at most N job starts per time window, per queue and per group, across
//! every worker (checked and counted in the claim script, not in a process).

use std::time::Duration;

use crate::client::Jobs;
use crate::error::{Error, Result};
use crate::keys::{self, check_name};

/// The most starts a rate limit may allow per window (each group keeps one entry per start
/// in its window, so this bounds its memory).
pub const MAX_RATE: u32 = 100_000;

/// The longest window a rate limit may have.
pub const MAX_RATE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most `max` job starts in any `window` (a sliding window: no span of that length ever
/// holds more), for each rate group of a queue ([`Job::rate_group`](crate::Job::rate_group)).
///
/// ```
/// use std::time::Duration;
/// use wharf_job_partition::RateLimit;
///
/// let ten_a_second = RateLimit::new(10, Duration::from_secs(1))?;
/// assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
/// assert!(RateLimit::new(10, Duration::ZERO).is_err());
/// # let _ = ten_a_second;
/// # Ok::<(), wharf_job_partition::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    max: u32,
    window: Duration,
}

impl RateLimit {
    /// `max` starts (1 to [`MAX_RATE`]) per `window` (1 ms to [`MAX_RATE_WINDOW`], whole
    /// milliseconds). Anything else is [`Error::InvalidRateLimit`].
    pub fn new(max: u32, window: Duration) -> Result<Self> {
        if !(1..=MAX_RATE).contains(&max) {
            return Err(Error::InvalidRateLimit {
                reason: format!(
                    "{max} starts per window: allow 1 to {MAX_RATE} (to stop a queue, use Jobs::pause or a limit of 0)"
                ),
            });
        }
        if window < Duration::from_millis(1) || window > MAX_RATE_WINDOW {
            return Err(Error::InvalidRateLimit {
                reason: format!(
                    "a window of {window:?}: give 1 ms to {MAX_RATE_WINDOW:?} (to remove the limit, set None)"
                ),
            });
        }
        let window = Duration::from_millis(window.as_millis() as u64);
        Ok(Self { max, window })
    }

    /// Most starts per window.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The limit as stored in a queue's `meta` hash (`rate_max`, `rate_ms`).
    pub(crate) fn from_stored(max: Option<&String>, ms: Option<&String>) -> Option<Self> {
        let max = max?.parse().ok()?;
        let ms = ms?.parse().ok()?;
        Self::new(max, Duration::from_millis(ms)).ok()
    }
}

impl Jobs {
    /// Sets (or with `None` removes) the rate limit of a queue: at most `limit.max()` job
    /// starts in any `limit.window()`, counted apart for each rate group, for every worker
    /// on every machine. A job whose group is at its limit waits in the state
    /// [`JobState::RateLimited`](crate::JobState::RateLimited) (counted in
    /// [`QueueCounts::rate_limited`](crate::QueueCounts::rate_limited)) until its window
    /// allows it, then starts in its place. Takes effect at the next claim.
    pub async fn set_rate_limit(
        &self,
        partition: &str,
        queue: &str,
        limit: Option<RateLimit>,
    ) -> Result<()> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        self.note_partition(partition).await?;
        let meta = keys::queue(partition, queue, "meta");
        let mut pipe = redis::pipe();
        pipe.atomic();
        match limit {
            Some(l) => pipe
                .cmd("HSET")
                .arg(&meta)
                .arg("rate_max")
                .arg(l.max)
                .arg("rate_ms")
                .arg(l.window.as_millis() as u64)
                .ignore(),
            None => pipe
                .cmd("HDEL")
                .arg(&meta)
                .arg("rate_max")
                .arg("rate_ms")
                .ignore(),
        };
        pipe.cmd("SADD")
            .arg(keys::route(partition))
            .arg(queue)
            .ignore();
        self.pipeline::<()>("set rate limit", &pipe).await?;
        tracing::info!(partition, queue, ?limit, "rate limit set");
        Ok(())
    }
}
