//! The deadline thread: one per process, it fails the calls that pass their deadline.
//!
//! A call registers nothing of its own here. Its deadline lives in its reply cell, and the
//! cell sits in one of its mailbox's lists (waiting for room, queued, taken), which the
//! mailbox scans when this thread asks it to. Each mailbox keeps at most one live entry in
//! the schedule below: the time of its earliest deadline, rounded up to [`GRANULARITY`].
//! A call only touches the schedule when its deadline is earlier than that entry (the first
//! call after a quiet spell, or a shorter timeout than the calls before it), so calls that
//! answer in time cost a clock read and a comparison made under the mailbox's lock.
//!
//! A thread rather than a tokio timer, because the deadline must hold whatever the service
//! does: a service blocking its runtime's only thread, or stuck between two incarnations,
//! cannot stop this thread from waking its callers, and callers on any runtime (or none)
//! are woken through their wakers.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

const GRANULARITY_NANOS: u64 = 1_000_000;

/// Deadlines are checked on a grid of this step: a mailbox is scanned at the first grid
/// point at or after its earliest deadline.
pub(super) const GRANULARITY: Duration = Duration::from_nanos(GRANULARITY_NANOS);

/// A mailbox, as the deadline thread (and an incarnation's stop watcher) sees it.
pub(super) trait Watched: Send + Sync {
    /// Called at (or after) `tick`, the time this mailbox asked to be looked at: fails every
    /// call whose deadline is at or before `now`, and returns the tick at which to look
    /// again (its earliest remaining deadline), or `None` when nothing is left to watch or
    /// when `tick` is no longer the mailbox's current entry (a superseded one).
    fn expire(&self, tick: u64, now: Instant) -> Option<u64>;

    /// Wakes the incarnation waiting for a request, if one is (to see that it must stop).
    fn wake_consumer(&self);
}

/// One entry of the schedule: look at `target` at `tick`.
struct Due {
    tick: u64,
    target: Weak<dyn Watched>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.tick == other.tick
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    // Reversed: `BinaryHeap` is a max-heap and the earliest tick must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.tick.cmp(&self.tick)
    }
}

struct Deadlines {
    schedule: Mutex<BinaryHeap<Due>>,
    wake: Condvar,
}

static DEADLINES: OnceLock<Option<Deadlines>> = OnceLock::new();

/// Starts the deadline thread if it is not running; `false` if it could not be started
/// (the operating system refused a thread), in which case callers fall back to a timer of
/// their own.
pub(super) fn start() -> bool {
    DEADLINES
        .get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("wharf-deadlines".to_owned())
                .spawn(|| {
                    if let Some(deadlines) = DEADLINES.wait() {
                        deadlines.run();
                    }
                });
            match spawned {
                Ok(_) => Some(Deadlines {
                    schedule: Mutex::new(BinaryHeap::new()),
                    wake: Condvar::new(),
                }),
                Err(err) => {
                    tracing::error!(
                        error = %err,
                        "could not start the thread that enforces service call deadlines; \
                         each call will arm a tokio timer instead"
                    );
                    None
                }
            }
        })
        .is_some()
}

/// Whether the deadline thread runs (after [`start`]).
pub(super) fn running() -> bool {
    matches!(DEADLINES.get(), Some(Some(_)))
}

/// Ticks count [`GRANULARITY`] steps from this instant, taken once per process.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The first tick at or after `at`.
pub(super) fn tick_at_or_after(at: Instant) -> u64 {
    let since = at.saturating_duration_since(base()).as_nanos();
    u64::try_from(since.div_ceil(u128::from(GRANULARITY_NANOS))).unwrap_or(u64::MAX)
}

/// The instant of `tick`.
pub(super) fn instant_of(tick: u64) -> Instant {
    let offset = Duration::from_nanos(tick.saturating_mul(GRANULARITY_NANOS));
    base().checked_add(offset).unwrap_or_else(far_future)
}

/// Asks the deadline thread to call `target.expire(tick, ..)` once `tick` has passed.
pub(super) fn schedule(tick: u64, target: Weak<dyn Watched>) {
    let Some(Some(deadlines)) = DEADLINES.get() else {
        return;
    };
    let mut schedule = lock(&deadlines.schedule);
    let earliest = schedule.peek().is_none_or(|due| tick < due.tick);
    schedule.push(Due { tick, target });
    drop(schedule);
    if earliest {
        deadlines.wake.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing runs user code while holding this lock, so a poisoned one is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Deadlines {
    fn run(&self) {
        let mut schedule = lock(&self.schedule);
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(next) = schedule.peek() {
                if instant_of(next.tick) > now {
                    break;
                }
                if let Some(next) = schedule.pop() {
                    due.push(next);
                }
            }
            if due.is_empty() {
                schedule = match schedule.peek().map(|next| instant_of(next.tick)) {
                    Some(at) => {
                        let wait = at.saturating_duration_since(now);
                        self.wake
                            .wait_timeout(schedule, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => self
                        .wake
                        .wait(schedule)
                        .unwrap_or_else(PoisonError::into_inner),
                };
                continue;
            }
            drop(schedule);
            let again: Vec<Due> = due
                .into_iter()
                .filter_map(|entry| Self::look(entry, now))
                .collect();
            schedule = lock(&self.schedule);
            schedule.extend(again);
        }
    }

    /// Lets one mailbox expire its calls; the entry to schedule next, if any.
    fn look(entry: Due, now: Instant) -> Option<Due> {
        // A panic here can only come from a user type's `Drop` (a request failed by its
        // deadline, or a mailbox whose last reference this thread held): it must not stop
        // the deadlines of every other call in the process.
        catch_unwind(AssertUnwindSafe(|| {
            let target = entry.target.upgrade()?;
            let next = target.expire(entry.tick, now)?;
            Some(Due {
                tick: next,
                target: entry.target,
            })
        }))
        .unwrap_or_else(|_| {
            tracing::error!("a value dropped by the service deadline thread panicked");
            None
        })
    }
}

fn far_future() -> Instant {
    // About 30 years: later than any tick that matters, near enough not to overflow.
    let years = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    Instant::now()
        .checked_add(years)
        .unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_tick_is_never_before_its_instant_and_at_most_one_step_after(nanos in 0_u64..(1 << 50)) {
            let at = base() + Duration::from_nanos(nanos);
            let looked_at = instant_of(tick_at_or_after(at));
            prop_assert!(looked_at >= at);
            prop_assert!(looked_at - at < GRANULARITY);
        }

        #[test]
        fn ticks_round_trip_through_their_instants(tick in 0_u64..(1 << 40)) {
            prop_assert_eq!(tick_at_or_after(instant_of(tick)), tick);
        }
    }

    #[test]
    fn an_instant_before_the_base_is_looked_at_on_the_first_tick() {
        let before = base().checked_sub(Duration::from_secs(1));
        if let Some(before) = before {
            assert_eq!(tick_at_or_after(before), 0);
        }
    }

    #[test]
    fn the_schedule_yields_the_earliest_tick_first() {
        let nobody: Weak<dyn Watched> = Weak::<Nobody>::new();
        let mut schedule = BinaryHeap::new();
        for tick in [30, 10, 20] {
            schedule.push(Due {
                tick,
                target: nobody.clone(),
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| schedule.pop().map(|due| due.tick)).collect();
        assert_eq!(order, [10, 20, 30]);
    }

    struct Nobody;

    impl Watched for Nobody {
        fn expire(&self, _: u64, _: Instant) -> Option<u64> {
            None
        }

        fn wake_consumer(&self) {}
    }
}
