//! Per-partition record of which offsets were handed out and which are done.

use std::collections::VecDeque;

/// Tracks dispatched and completed offsets of one partition so that only a contiguous
/// prefix of handled messages is ever committed: the committable position is the lowest
/// offset still in flight, or one past the highest dispatched when nothing is.
///
/// Offsets are dispatched in increasing order; completions usually come in order too
/// (handlers run one at a time per partition), which costs O(1); out-of-order completion
/// costs a binary search.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// (offset, done) in dispatch order; the front is never done.
    in_flight: VecDeque<(i64, bool)>,
    next: Option<i64>,
}

impl OffsetTracker {
    /// `offset` was handed to a handler (or queued for one).
    pub(crate) fn dispatched(&mut self, offset: i64) {
        if self.next.is_some_and(|n| offset < n) {
            // Re-fetched after a seek or pause: already tracked.
            return;
        }
        self.in_flight.push_back((offset, false));
        self.next = Some(offset + 1);
    }

    /// `offset` was handled (acked or dead-lettered).
    pub(crate) fn completed(&mut self, offset: i64) {
        // In order (one handler call at a time) the offset is the front one.
        match self.in_flight.front_mut() {
            Some((o, done)) if *o == offset => *done = true,
            _ => {
                if let Ok(i) = self.in_flight.binary_search_by_key(&offset, |(o, _)| *o) {
                    self.in_flight[i].1 = true;
                }
            }
        }
        while self.in_flight.front().is_some_and(|(_, done)| *done) {
            self.in_flight.pop_front();
        }
    }

    /// The offset to commit: every message before it was handled. `None` before the first
    /// dispatch.
    pub(crate) fn committable(&self) -> Option<i64> {
        let next = self.next?;
        Some(self.in_flight.front().map_or(next, |(o, _)| *o))
    }

    /// Forgets offsets that were queued but will never be handled (partition revoked,
    /// consumer stopped); they stay uncommitted, so they are delivered again.
    pub(crate) fn abandon_in_flight(&mut self) {
        if let Some((first, _)) = self.in_flight.front().copied() {
            self.next = Some(first);
            self.in_flight.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_up_to_the_first_unhandled_offset() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.committable(), None);
        for o in 10..15 {
            t.dispatched(o);
        }
        t.completed(10);
        t.completed(12);
        t.completed(13);
        assert_eq!(
            t.committable(),
            Some(11),
            "11 is still in flight, so 12 and 13 must wait"
        );
        t.completed(11);
        assert_eq!(t.committable(), Some(14));
        t.completed(14);
        assert_eq!(t.committable(), Some(15));
    }

    #[test]
    fn gaps_in_offsets_do_not_block_commits() {
        let mut t = OffsetTracker::default();
        t.dispatched(3);
        t.dispatched(7); // 4..6 are compacted away or transaction markers
        t.completed(3);
        t.completed(7);
        assert_eq!(t.committable(), Some(8));
    }

    proptest::proptest! {
        /// Whatever order handlers finish in (several in flight per partition), the
        /// committable offset is the oldest unfinished one, or one past the last dispatched:
        /// never past a message that was not handled.
        #[test]
        fn never_commits_past_an_unfinished_message(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..60),
        ) {
            let mut t = OffsetTracker::default();
            let mut offsets = Vec::new();
            let mut next = 100;
            for g in gaps {
                t.dispatched(next);
                offsets.push(next);
                next += g;
            }
            let mut pending = offsets.clone();
            for i in order {
                if pending.is_empty() {
                    break;
                }
                let done = pending.remove(i.index(pending.len()));
                t.completed(done);
                let expected = pending
                    .iter()
                    .min()
                    .copied()
                    .unwrap_or(offsets[offsets.len() - 1] + 1);
                proptest::prop_assert_eq!(t.committable(), Some(expected));
            }
        }
    }

    #[test]
    fn abandoned_messages_are_not_committed() {
        let mut t = OffsetTracker::default();
        t.dispatched(0);
        t.dispatched(1);
        t.dispatched(2);
        t.completed(0);
        t.abandon_in_flight();
        assert_eq!(t.committable(), Some(1));
    }
}
