//! The handler deadline: every call of a [`Handler`](crate::Handler) method has
//! `handler_timeout` to answer.
//!
//! A call can miss it in two ways, and both count:
//! - it **waits** past the deadline (an await that never resolves): a timer ends it and the
//!   call's future is dropped at the await point where it waits;
//! - it **holds its thread** (a blocking call, a CPU loop) for longer than the deadline in
//!   total: nothing can interrupt that, and the executor's timers cannot fire meanwhile, so
//!   the time spent inside the call's polls is measured, and a call that comes back from
//!   such a poll is failed then, even if it answered.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// How a call missed its deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Late {
    /// No answer when the deadline passed; the call was dropped.
    NoAnswer { limit: Duration },
    /// The call held its thread for `held` in total, more than `limit`.
    Blocked { held: Duration, limit: Duration },
}

impl fmt::Display for Late {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Late::NoAnswer { limit } => write!(
                f,
                "it did not answer within {limit:?} (the handler timeout); the call was dropped \
                 at the await point where it waited"
            ),
            Late::Blocked { held, limit } => write!(
                f,
                "it blocked its thread for {held:?}, more than the handler timeout of {limit:?}; \
                 blocking code cannot be interrupted: run it with tokio::task::spawn_blocking"
            ),
        }
    }
}

/// Runs `call` within `limit` (`None`: no limit).
pub(crate) async fn within<F: Future>(limit: Option<Duration>, call: F) -> Result<F::Output, Late> {
    let Some(limit) = limit else {
        return Ok(call.await);
    };
    let mut call = pin!(call);
    // The timer is made only if the call waits: most calls answer in their first poll.
    let mut timer = pin!(None::<tokio::time::Sleep>);
    let mut held = Duration::ZERO;
    std::future::poll_fn(|cx| {
        let began = std::time::Instant::now();
        let polled = call.as_mut().poll(cx);
        held += began.elapsed();
        if held > limit {
            return Poll::Ready(Err(Late::Blocked { held, limit }));
        }
        if let Poll::Ready(answer) = polled {
            return Poll::Ready(Ok(answer));
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep(limit - held)));
        }
        match timer.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Late::NoAnswer { limit })),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waits_past_the_limit_is_cut_at_the_limit() {
        let began = tokio::time::Instant::now();
        let late = within(Some(Duration::from_secs(3)), std::future::pending::<()>())
            .await
            .unwrap_err();
        assert!(matches!(late, Late::NoAnswer { .. }), "{late:?}");
        assert_eq!(began.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_answers_in_time_is_not_cut() {
        let answer = within(Some(Duration::from_secs(3)), async {
            tokio::time::sleep(Duration::from_millis(2_999)).await;
            7
        })
        .await;
        assert_eq!(answer.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_call_that_holds_its_thread_past_the_limit_fails_even_if_it_answers() {
        let late = within(Some(Duration::from_millis(20)), async {
            std::thread::sleep(Duration::from_millis(60));
            7
        })
        .await
        .unwrap_err();
        assert!(matches!(late, Late::Blocked { held, .. } if held >= Duration::from_millis(60)));
        assert!(late.to_string().contains("spawn_blocking"), "{late}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_waits_as_long_as_it_takes() {
        let answer = within(None, async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            7
        })
        .await;
        assert_eq!(answer.unwrap(), 7);
    }
}
