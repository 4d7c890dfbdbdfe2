//! Exponential backoff with jitter, for restarts and reconnect loops.

use std::time::Duration;

/// Exponential backoff with jitter.
///
/// The delay before attempt `n` (counting from 0) is `initial * multiplier^n`, capped at
/// `max`, then scattered by `jitter`: with jitter `j`, the delay is drawn uniformly from
/// `[d * (1 - j), d]`. Jitter keeps many clients that failed together (a broker blinked)
/// from retrying together.
///
/// Supervisors wait this long before restarting a child, so a dead broker is not hammered;
/// broker crates use it for reconnect loops.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
/// let first = backoff.delay(0);
/// assert!(first <= Duration::from_millis(100));
/// assert!(backoff.delay(20) <= Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Backoff {
    /// Doubling backoff from `initial` up to `max`, with 50% jitter.
    pub const fn exponential(initial: Duration, max: Duration) -> Self {
        // `Ord::max` is not `const`.
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        Self {
            initial,
            max,
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// No delay at all: restart or retry at once (OTP's behaviour).
    pub const fn none() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// A constant delay, without jitter.
    pub const fn constant(delay: Duration) -> Self {
        Self {
            initial: delay,
            max: delay,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// Sets the growth factor between attempts (values below 1.0 are treated as 1.0).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the jitter as a fraction of the delay, clamped to `0.0..=1.0`.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The first delay, before jitter.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before attempt `attempt` (0-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let factor = self.multiplier.powi(exp);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::from_secs_f64(secs)
    }

    /// The delay before attempt `attempt` (0-based), jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        let low = 1.0 - self.jitter;
        let scale = low + rand::random::<f64>() * self.jitter;
        base.mul_f64(scale)
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 10 s, 50% jitter.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.base_delay(0), Duration::from_millis(100));
        assert_eq!(b.base_delay(1), Duration::from_millis(200));
        assert_eq!(b.base_delay(3), Duration::from_millis(800));
        assert_eq!(b.base_delay(4), Duration::from_secs(1));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..1000 {
            let d = b.delay(2);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }

    #[test]
    fn jitter_actually_scatters() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| b.delay(3)).collect();
        assert!(distinct.len() > 10);
    }

    #[test]
    fn none_and_constant_do_not_grow() {
        assert_eq!(Backoff::none().delay(7), Duration::ZERO);
        let c = Backoff::constant(Duration::from_millis(30));
        assert_eq!(c.delay(0), c.delay(9));
    }
}
