//! An actor as the registry holds it: a [`Slot`] per key (its state, whether a turn runs,
//! and out of line its [`Backlog`]: its queue of waiting messages and requests and the
//! [`Held`] message a key retries or dead-letters before anything else).

use std::collections::VecDeque;

use tokio::time::Instant;
use wharf_core::transport::Delivery;

use crate::Handler;
use crate::turn::Request;

/// A message waiting to be tried again, or to be dead-lettered. At most one per key: it is
/// the key's oldest unsettled message, so the key's queue waits behind it.
pub(super) struct Held {
    pub(super) delivery: Delivery,
    /// The number of the next try (or of the last one, for a dead letter).
    pub(super) attempt: u32,
    pub(super) due_at: Option<Instant>,
    pub(super) dead_letter: Option<String>,
}

/// One key's actor, as an entry of the registry.
///
/// Most keys are idle most of the time, with nothing waiting: what only a key with waiting
/// work needs (its queue, its held message, its requests) is kept out of line, in a
/// [`Backlog`] allocated when work first waits and dropped when none is left, so that an
/// idle key's entry stays small (about half the size it had with the queues inline).
pub(super) struct Slot<H: Handler> {
    /// `None` before `init`, after a failure or a stop, and while a turn owns it.
    pub(super) state: Option<H::State>,
    pub(super) busy: bool,
    pub(super) in_ready: bool,
    pub(super) last_active_ms: u64,
    backlog: Option<Box<Backlog<H>>>,
}

/// The work waiting for a key.
pub(super) struct Backlog<H: Handler> {
    pub(super) queue: VecDeque<Delivery>,
    pub(super) held: Option<Held>,
    pub(super) requests: VecDeque<Request<H>>,
}

impl<H: Handler> Backlog<H> {
    fn has_work(&self) -> bool {
        !self.requests.is_empty() || self.held.is_some() || !self.queue.is_empty()
    }
}

impl<H: Handler> Slot<H> {
    pub(super) fn new(now_ms: u64) -> Self {
        Self {
            state: None,
            busy: false,
            in_ready: false,
            last_active_ms: now_ms,
            backlog: None,
        }
    }

    pub(super) fn has_work(&self) -> bool {
        self.backlog.as_ref().is_some_and(|b| b.has_work())
    }

    pub(super) fn is_idle(&self) -> bool {
        !self.busy && !self.has_work()
    }

    /// The key's waiting work, if any was ever queued and not yet drained.
    pub(super) fn backlog(&self) -> Option<&Backlog<H>> {
        self.backlog.as_deref()
    }

    /// The key's waiting work, allocated if it had none.
    pub(super) fn backlog_mut(&mut self) -> &mut Backlog<H> {
        self.backlog.get_or_insert_with(|| {
            Box::new(Backlog {
                queue: VecDeque::new(),
                held: None,
                requests: VecDeque::new(),
            })
        })
    }

    /// The key's waiting work, without allocating any.
    pub(super) fn backlog_if_any(&mut self) -> Option<&mut Backlog<H>> {
        self.backlog.as_deref_mut()
    }

    /// Drops the backlog if nothing waits in it any more.
    pub(super) fn trim(&mut self) {
        if self.backlog.as_ref().is_some_and(|b| !b.has_work()) {
            self.backlog = None;
        }
    }

    pub(super) fn queued(&self) -> usize {
        self.backlog().map_or(0, |b| b.queue.len())
    }

    pub(super) fn requests_waiting(&self) -> usize {
        self.backlog().map_or(0, |b| b.requests.len())
    }

    pub(super) fn held(&self) -> Option<&Held> {
        self.backlog().and_then(|b| b.held.as_ref())
    }
}

pub(super) fn dead_held(delivery: Delivery, attempt: u32, reason: String) -> Held {
    Held {
        delivery,
        attempt,
        due_at: None,
        dead_letter: Some(reason),
    }
}
