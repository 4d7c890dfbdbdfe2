//! What happens to a message whose handler call failed without answering: it overran the
//! handler deadline, or it panicked.

use std::time::Duration;

use wharf_core::Backoff;

/// How a message is tried again after a handler call that *failed* (it overran the
/// consumer's [handler deadline](super::ConsumerSpec::handler_timeout) or it panicked), and
/// when it is given up and dead-lettered.
///
/// `max_attempts` bounds the failed calls of one message: after the `n`-th failure (`n` below
/// `max_attempts`) the message is handled again after `backoff.delay(n - 1)`; the
/// `max_attempts`-th failure sends it to the spec's
/// [dead-letter topic](super::ConsumerSpec::dead_letter_topic), with the reason in the
/// `wharf.dlq.reason` header, like [`Outcome::DeadLetter`](super::Outcome::DeadLetter). Then
/// the partition moves on, and its offset is committed past the message once the dead-letter
/// topic has it.
///
/// A handler's own [`Outcome::Retry`](super::Outcome::Retry) is not a failure: the message is
/// handled again after the delay it asked for, as often as it asks (the handler sees
/// [`attempt`](crate::ConsumedMessage::attempt) and can answer `DeadLetter` itself).
///
/// Failures are counted per delivery: a message delivered again after a rebalance or a
/// rebuild starts from zero.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::Backoff;
/// use wharf_kafka_wrapper::RetryPolicy;
///
/// let policy = RetryPolicy::new(5, Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)));
/// assert_eq!(policy.max_attempts(), 5);
/// assert_eq!(RetryPolicy::no_retries().max_attempts(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryPolicy {
    /// At most `max_attempts` failed calls per message (at least 1), waiting `backoff`
    /// between them.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            backoff,
        }
    }

    /// The first failure dead-letters the message.
    pub fn no_retries() -> Self {
        Self::new(1, Backoff::none())
    }

    /// The bound on failed calls of one message.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait between failed calls.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// After `failures` failed calls: wait this long and call again (`Some`), or give up.
    pub(crate) fn after_failure(&self, failures: u32) -> Option<Duration> {
        (failures < self.max_attempts).then(|| self.backoff.delay(failures.saturating_sub(1)))
    }
}

impl Default for RetryPolicy {
    /// 3 attempts; backoff doubling from 1 s up to 30 s, with 50% jitter (so the waits are
    /// 0.5 to 1 s, then 1 to 2 s).
    fn default() -> Self {
        Self::new(
            3,
            Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_at_the_last_attempt() {
        let p = RetryPolicy::new(3, Backoff::constant(Duration::from_millis(5)));
        assert_eq!(p.after_failure(1), Some(Duration::from_millis(5)));
        assert_eq!(p.after_failure(2), Some(Duration::from_millis(5)));
        assert_eq!(p.after_failure(3), None);
        assert_eq!(RetryPolicy::no_retries().after_failure(1), None);
    }
}
