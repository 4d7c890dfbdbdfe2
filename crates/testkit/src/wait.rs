//! Waiting on observable state with a deadline: the one way wharf's tests wait.
//!
//! A test that sleeps a fixed time and then checks passes trivially on a slow machine when
//! the check is negative, and fails on a loaded one when it is positive. Instead, wait for
//! the state itself, with a deadline derived from the configured timeouts, so that a bug
//! fails the test instead of hanging it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// A condition did not hold within its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotYet {
    /// What was waited for, as the test described it.
    pub what: String,
    /// How long it was waited for.
    pub within: Duration,
}

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.within, self.what
        )
    }
}

impl std::error::Error for NotYet {}

/// Polls `check` every 10 ms until it answers `true`, for at most `within`; `what` names the
/// condition in the error. The last poll happens at or after the deadline, so a condition that
/// becomes true just in time is seen.
///
/// Uses tokio's clock: under `tokio::time::pause()` the wait advances virtual time and costs
/// no wall time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wharf_testkit::NotYet> {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// let done = AtomicU32::new(0);
/// wharf_testkit::eventually("the counter to reach 3", Duration::from_secs(5), || async {
///     done.fetch_add(1, Ordering::Relaxed) + 1 >= 3
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<(), NotYet>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(what, within, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Like [`eventually`], for a check that produces a value once the condition holds: polls
/// until `check` answers `Some`, and returns that value.
pub async fn eventually_some<T, F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
) -> Result<T, NotYet>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(NotYet {
                what: what.to_owned(),
                within,
            });
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_never_holds_fails_at_its_deadline_naming_it() {
        let start = tokio::time::Instant::now();
        let err = eventually("the impossible", Duration::from_secs(3), || async { false })
            .await
            .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("timed out after 3s waiting for the impossible".to_owned())
        );
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_is_returned_as_soon_as_the_check_produces_it() {
        let mut polls = 0;
        let value = eventually_some("the fifth poll", Duration::from_secs(1), || {
            polls += 1;
            let n = polls;
            async move { (n == 5).then_some(n * 10) }
        })
        .await;
        assert_eq!(value, Ok(50));
    }
}
