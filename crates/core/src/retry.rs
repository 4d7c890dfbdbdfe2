//! How often an operation is tried, and how long to wait between tries.

use std::time::Duration;

use crate::Backoff;

/// At most `max_attempts` tries of one operation, with a [`Backoff`] between failed ones.
///
/// One shape for every wharf crate that retries (the Kafka consumers of
/// `wharf-kafka-wrapper`, the actors of `wharf-sharded-consumer`): each says what counts as
/// an attempt, what happens once the attempts are spent (both dead-letter the message), and
/// which policy it uses when none is given.
///
/// After the `n`-th failed attempt, [`delay_after(n)`](Self::delay_after) is
/// `backoff.delay(n - 1)` while `n` is below `max_attempts`, and `None` from then on:
/// give up.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::new(3, Backoff::constant(Duration::from_millis(100)));
/// assert_eq!(policy.max_attempts(), 3);
/// // After the first and the second failure: wait, then try again.
/// assert_eq!(policy.delay_after(1), Some(Duration::from_millis(100)));
/// assert_eq!(policy.delay_after(2), Some(Duration::from_millis(100)));
/// // After the third: the attempts are spent.
/// assert_eq!(policy.delay_after(3), None);
///
/// assert_eq!(RetryPolicy::no_retries().delay_after(1), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryPolicy {
    /// At most `max_attempts` tries (at least 1), waiting `backoff` between failed ones.
    pub const fn new(max_attempts: u32, backoff: Backoff) -> Self {
        Self {
            max_attempts: if max_attempts == 0 { 1 } else { max_attempts },
            backoff,
        }
    }

    /// One try: the first failure gives up.
    pub const fn no_retries() -> Self {
        Self::new(1, Backoff::none())
    }

    /// The bound on tries.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait between failed tries.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// After `failures` failed tries: how long to wait before the next one, or `None` when
    /// the tries are spent.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        (failures < self.max_attempts).then(|| self.backoff.delay(failures.saturating_sub(1)))
    }
}

impl Default for RetryPolicy {
    /// 5 tries, with [`Backoff::default`] between them (100 ms doubling to 10 s, 50%
    /// jitter). Crates that retry may use a default of their own: see theirs.
    fn default() -> Self {
        Self::new(5, Backoff::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_at_the_last_attempt() {
        let p = RetryPolicy::new(3, Backoff::constant(Duration::from_millis(5)));
        assert_eq!(p.delay_after(1), Some(Duration::from_millis(5)));
        assert_eq!(p.delay_after(2), Some(Duration::from_millis(5)));
        assert_eq!(p.delay_after(3), None);
        assert_eq!(RetryPolicy::no_retries().delay_after(1), None);
    }

    #[test]
    fn the_wait_after_the_nth_failure_is_the_backoffs_delay_before_try_n() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
            .with_jitter(0.0);
        let p = RetryPolicy::new(4, b);
        assert_eq!(p.delay_after(1), Some(Duration::from_millis(100)));
        assert_eq!(p.delay_after(2), Some(Duration::from_millis(200)));
        assert_eq!(p.delay_after(3), Some(Duration::from_millis(400)));
    }

    #[test]
    fn at_least_one_try() {
        assert_eq!(RetryPolicy::new(0, Backoff::none()).max_attempts(), 1);
    }

    #[test]
    fn the_default_is_five_tries_with_the_default_backoff() {
        let d = RetryPolicy::default();
        assert_eq!(d.max_attempts(), 5);
        assert_eq!(d.backoff(), Backoff::default());
    }
}
