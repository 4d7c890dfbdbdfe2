//! One call's reply: written once by whoever ends the call first (the service's answer, its
//! end, the mailbox closing, or the deadline thread), read once by the caller.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::task::AtomicWaker;

/// Where a call stood when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The mailbox was full: the request was never queued.
    WaitingForRoom,
    /// Queued, not taken: the request was withdrawn and will never be served.
    Queued,
    /// Taken by the service, which had not answered: it may still take effect.
    Taken,
}

/// Why a call got no answer; the caller turns it into an [`Error`](crate::Error) with the
/// service's name (kept out of the cell so a call touches no shared reference count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unanswered {
    /// Taken by the service, which panicked while handling it.
    Panicked,
    /// Taken by the service, which returned or was stopped before answering.
    Ended,
    /// Never taken: the service stopped for good while it was queued.
    Stopped,
    /// Its deadline passed.
    TimedOut(Stage),
}

pub(super) type Outcome<Resp> = Result<Resp, Unanswered>;

/// The cell a caller waits on.
pub(super) struct ReplyCell<Resp> {
    deadline: Option<Instant>,
    /// Set once the outcome is written or the caller gave up: read without the lock by the
    /// caller's polls and by the mailbox's scans.
    finished: AtomicBool,
    state: Mutex<CellState<Resp>>,
    waker: AtomicWaker,
}

struct CellState<Resp> {
    outcome: Option<Outcome<Resp>>,
    /// An outcome was written (and maybe already taken).
    written: bool,
    /// The caller no longer waits.
    abandoned: bool,
}

impl<Resp> ReplyCell<Resp> {
    pub(super) fn new(deadline: Option<Instant>) -> Arc<Self> {
        Arc::new(Self {
            deadline,
            finished: AtomicBool::new(false),
            state: Mutex::new(CellState {
                outcome: None,
                written: false,
                abandoned: false,
            }),
            waker: AtomicWaker::new(),
        })
    }

    /// Whether the call has ended: answered, failed, or abandoned by its caller.
    pub(super) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether the call is still open and its deadline is at or before `now`.
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        !self.is_finished() && self.deadline.is_some_and(|deadline| deadline <= now)
    }

    /// The deadline of a call still open.
    pub(super) fn open_deadline(&self) -> Option<Instant> {
        if self.is_finished() {
            None
        } else {
            self.deadline
        }
    }

    /// Ends the call with `outcome`, unless it has already ended or its caller left; then
    /// the outcome is handed back (dropped by the caller of this function, not under a lock).
    pub(super) fn complete(&self, outcome: Outcome<Resp>) -> Result<(), Outcome<Resp>> {
        {
            let mut state = self.lock();
            if state.written || state.abandoned {
                return Err(outcome);
            }
            state.outcome = Some(outcome);
            state.written = true;
        }
        self.finished.store(true, Ordering::Release);
        self.waker.wake();
        Ok(())
    }

    /// The caller's wait: the outcome once written.
    #[inline]
    pub(super) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome<Resp>> {
        if !self.is_finished() {
            self.waker.register(cx.waker());
            if !self.is_finished() {
                return Poll::Pending;
            }
        }
        // Taken twice only if polled after it was ready, which `PendingCall` never does.
        Poll::Ready(self.lock().outcome.take().unwrap_or(Err(Unanswered::Ended)))
    }

    /// The caller no longer waits: later outcomes are refused, and one already written is
    /// dropped here, on the caller's side.
    pub(super) fn abandon(&self) {
        let outcome = {
            let mut state = self.lock();
            state.abandoned = true;
            state.outcome.take()
        };
        self.finished.store(true, Ordering::Release);
        drop(outcome);
    }

    fn lock(&self) -> MutexGuard<'_, CellState<Resp>> {
        // No user code runs under this lock (values are dropped after it), so a poisoned
        // lock still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Answers one request exactly once. Dropped without an answer (the service crashed, or
/// returned without replying), it tells the caller so with [`Error::ServiceCrashed`].
///
/// [`Error::ServiceCrashed`]: crate::Error::ServiceCrashed
pub struct Responder<Resp> {
    cell: Option<Arc<ReplyCell<Resp>>>,
    /// Taken by the service (a drop then means it crashed or ended), or still queued (a drop
    /// then means the mailbox closed).
    pub(super) taken: bool,
}

impl<Resp> fmt::Debug for Responder<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.cell.is_none())
            .finish()
    }
}

impl<Resp> Responder<Resp> {
    pub(super) fn new(cell: Arc<ReplyCell<Resp>>) -> Self {
        Self {
            cell: Some(cell),
            taken: false,
        }
    }

    /// The cell of a request not yet answered.
    pub(super) fn cell(&self) -> Option<&Arc<ReplyCell<Resp>>> {
        self.cell.as_ref()
    }

    /// Whether the caller no longer waits for this answer: its deadline passed, or it gave
    /// up (its call was dropped), or the call has otherwise ended. A service may then skip
    /// the work the request asked for; [`send`](Self::send) would return `false`.
    ///
    /// A request withdrawn at its deadline while still queued never reaches the service, so
    /// its responder is never seen; a request the service took and kept (to serve later)
    /// reports its caller's deadline here once it has passed.
    pub fn is_closed(&self) -> bool {
        self.cell.as_ref().is_none_or(|cell| cell.is_finished())
    }

    /// Sends the response; `false` if the caller no longer waits (it timed out or gave up).
    pub fn send(mut self, response: Resp) -> bool {
        match self.cell.take() {
            Some(cell) => cell.complete(Ok(response)).is_ok(),
            None => false,
        }
    }

    /// Ends the call without an answer.
    pub(super) fn fail(mut self, why: Unanswered) {
        if let Some(cell) = self.cell.take() {
            let _ = cell.complete(Err(why));
        }
    }
}

impl<Resp> Drop for Responder<Resp> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else { return };
        let why = if !self.taken {
            Unanswered::Stopped
        } else if std::thread::panicking() {
            Unanswered::Panicked
        } else {
            Unanswered::Ended
        };
        let _ = cell.complete(Err(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn poll(cell: &ReplyCell<u32>) -> Poll<Outcome<u32>> {
        cell.poll_outcome(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn the_first_outcome_wins_and_later_ones_are_handed_back() {
        let cell = ReplyCell::new(None);
        assert_eq!(cell.complete(Ok(1)), Ok(()));
        assert_eq!(
            cell.complete(Err(Unanswered::TimedOut(Stage::Taken))),
            Err(Err(Unanswered::TimedOut(Stage::Taken)))
        );
        assert_eq!(poll(&cell), Poll::Ready(Ok(1)));
    }

    #[test]
    fn a_call_is_pending_until_its_outcome_is_written() {
        let cell = ReplyCell::new(None);
        assert_eq!(poll(&cell), Poll::Pending);
        assert!(!cell.is_finished());
        assert_eq!(cell.complete(Ok(7)), Ok(()));
        assert!(cell.is_finished());
        assert_eq!(poll(&cell), Poll::Ready(Ok(7)));
    }

    #[test]
    fn an_abandoned_call_refuses_its_answer_and_hands_it_back() {
        let cell = ReplyCell::new(None);
        cell.abandon();
        assert!(cell.is_finished());
        assert_eq!(cell.complete(Ok(3)), Err(Ok(3)));
    }

    #[test]
    fn a_responder_dropped_untaken_says_stopped_and_taken_says_ended() {
        let untaken = ReplyCell::<u32>::new(None);
        drop(Responder::new(Arc::clone(&untaken)));
        assert_eq!(poll(&untaken), Poll::Ready(Err(Unanswered::Stopped)));

        let taken = ReplyCell::<u32>::new(None);
        let mut responder = Responder::new(Arc::clone(&taken));
        responder.taken = true;
        drop(responder);
        assert_eq!(poll(&taken), Poll::Ready(Err(Unanswered::Ended)));
    }

    #[test]
    fn a_responder_is_closed_once_its_call_has_ended_without_it() {
        let open = ReplyCell::<u32>::new(None);
        let responder = Responder::new(Arc::clone(&open));
        assert!(!responder.is_closed(), "the caller waits");
        open.abandon();
        assert!(responder.is_closed(), "the caller gave up");

        let timed_out = ReplyCell::<u32>::new(None);
        let responder = Responder::new(Arc::clone(&timed_out));
        assert_eq!(
            timed_out.complete(Err(Unanswered::TimedOut(Stage::Taken))),
            Ok(())
        );
        assert!(responder.is_closed(), "the caller's deadline passed");
        assert!(!responder.send(1));
    }

    #[test]
    fn only_an_open_call_past_its_deadline_is_expired() {
        let now = Instant::now();
        let open = ReplyCell::<u32>::new(Some(now));
        assert!(open.is_expired(now));
        let later = ReplyCell::<u32>::new(now.checked_add(std::time::Duration::from_secs(1)));
        assert!(!later.is_expired(now));
        let answered = ReplyCell::new(Some(now));
        assert_eq!(answered.complete(Ok(1)), Ok(()));
        assert!(!answered.is_expired(now));
    }
}
