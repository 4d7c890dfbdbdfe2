//! An actor as the registry holds it: a [`Slot`] per key (its state, its queue of waiting
//! messages and requests, whether a turn runs) and the [`Held`] message a key retries or
//! dead-letters before anything else.

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
pub(super) struct Slot<H: Handler> {
    /// `None` before `init`, after a failure or a stop, and while a turn owns it.
    pub(super) state: Option<H::State>,
    pub(super) busy: bool,
    pub(super) in_ready: bool,
    pub(super) last_active_ms: u64,
    pub(super) queue: VecDeque<Delivery>,
    pub(super) held: Option<Box<Held>>,
    pub(super) requests: VecDeque<Request<H>>,
}

impl<H: Handler> Slot<H> {
    pub(super) fn new(now_ms: u64) -> Self {
        Self {
            state: None,
            busy: false,
            in_ready: false,
            last_active_ms: now_ms,
            queue: VecDeque::new(),
            held: None,
            requests: VecDeque::new(),
        }
    }

    pub(super) fn has_work(&self) -> bool {
        !self.requests.is_empty() || self.held.is_some() || !self.queue.is_empty()
    }

    pub(super) fn is_idle(&self) -> bool {
        !self.busy && !self.has_work()
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
