//! Which clock a call's deadline runs on.
//!
//! Deadlines run on the system's monotonic clock, enforced by the deadline thread, except
//! when the caller runs on a tokio runtime whose clock is paused (`tokio::time::pause()`,
//! `#[tokio::test(start_paused = true)]`): a test's paused time is the time its code lives
//! in, and tokio moves it forward only to its own timers, so the call then waits on one
//! (see `ServiceHandle::exchange`).
//!
//! tokio has no public "is the clock paused" on stable; its documented behaviour is enough
//! to tell. A paused clock returns the same `Instant::now()` until it is advanced, which
//! happens only between polls (an explicit `advance`, or the runtime auto-advancing when it
//! has nothing to do), never between two reads made one after the other by the task being
//! polled. A running clock moves with the system's. And only a current_thread runtime can
//! pause its clock (tokio refuses `pause` and `start_paused` on the multi-thread one), so a
//! call on any other runtime, or on none, costs one thread-local read here.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Whether the tokio runtime this thread is in has its clock paused.
pub(super) fn tokio_paused() -> bool {
    let on_current_thread = Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::CurrentThread);
    on_current_thread && frozen()
}

/// Whether tokio's clock (as this thread sees it) stands still while the system's moves.
fn frozen() -> bool {
    let first = tokio::time::Instant::now();
    if tokio::time::Instant::now() != first {
        return false;
    }
    // The same reading twice: a frozen clock, or the system's clock did not tick between the
    // two reads. Let it tick: a running clock has then moved past `first`.
    let seen = std::time::Instant::now();
    while std::time::Instant::now() <= seen {
        std::hint::spin_loop();
    }
    tokio::time::Instant::now() == first
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn outside_a_runtime_the_clock_is_not_paused() {
        assert!(!tokio_paused());
    }

    #[test]
    fn a_running_current_thread_clock_is_not_paused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        assert!(!runtime.block_on(async { tokio_paused() }));
    }

    #[test]
    fn a_paused_clock_is_paused_and_a_resumed_one_is_not() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            assert!(tokio_paused(), "started paused");
            tokio::time::advance(std::time::Duration::from_secs(3600)).await;
            assert!(tokio_paused(), "advanced, still paused");
            tokio::time::resume();
            assert!(
                !tokio_paused(),
                "resumed, an hour ahead of the system clock"
            );
            tokio::time::pause();
            assert!(tokio_paused(), "paused again");
        });
    }

    #[test]
    fn a_multi_thread_runtime_is_never_paused() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("a runtime");
        assert!(!runtime.block_on(async { tokio_paused() }));
    }
}
