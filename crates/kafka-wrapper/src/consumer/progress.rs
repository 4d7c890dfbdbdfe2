//! What the wrapper's health check reads of each assigned partition: its lag, and whether
//! its client has stalled.
//!
//! A partition's client has *stalled* when the broker holds messages the consumer has not
//! received, its worker is waiting for messages (it holds none: no handler call, no retry,
//! nothing queued), and no message arrived for `stall_after`. A partition whose handler is
//! busy, however long, is not stalled: that is the handler deadline's business, and a
//! rebuild would only deliver the same message again.
//!
//! "The broker holds messages the consumer has not received" compares the broker's high
//! watermark with what the consumer itself received, not with what it committed. Tansu 0.6
//! reports the high watermark of a batch of records as one past the batch's *first* record
//! (30 records in one produce request gave high watermark 1). That watermark is still above
//! everything before the batch, so a consumer that stops before the batch is detected; and
//! since a fetch returns whole batches, a consumer that received the batch's first record
//! holds the rest of it already.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::PartitionLag;

/// One assigned partition as the health check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionView {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The broker's high watermark (possibly under-reported: see the module docs).
    pub(crate) broker_high: i64,
    /// Where this incarnation started reading (its committed offset, or where the reset
    /// policy put it).
    pub(crate) start: i64,
    /// One past the last offset the worker received, if it received any.
    pub(crate) received_end: Option<i64>,
    /// Every message before it was handled, if any message was handed out.
    pub(crate) committable: Option<i64>,
    /// The worker is waiting for messages and holds none.
    pub(crate) idle: bool,
}

impl PartitionView {
    /// One past the last offset known to exist: the broker's word, or the consumer's own
    /// when the broker reports less.
    pub(crate) fn known_end(&self) -> i64 {
        self.broker_high
            .max(self.received_end.unwrap_or(self.start))
    }

    pub(crate) fn lag(&self) -> PartitionLag {
        let high = self.known_end();
        let position = self.committable.unwrap_or(self.start);
        PartitionLag {
            topic: self.topic.clone(),
            partition: self.partition,
            high_watermark: high,
            position,
            lag: (high - position).max(0),
        }
    }

    /// The broker holds messages this consumer has not received.
    fn behind(&self) -> bool {
        self.broker_high > self.received_end.unwrap_or(self.start)
    }
}

/// One consumer's partitions that look stalled: (topic, partition) -> (what it had
/// received then, since when).
type Suspects = HashMap<(String, i32), (Option<i64>, Instant)>;

/// Since when each partition has looked stalled, across health checks.
#[derive(Debug, Default)]
pub(crate) struct StallWatch {
    since: HashMap<String, Suspects>,
}

impl StallWatch {
    /// Records one check of `consumer`'s partitions at `now`, leaving out those `paused`;
    /// returns why it is stalled if one of its partitions has looked stalled for `after`.
    pub(crate) fn check(
        &mut self,
        consumer: &str,
        views: &[PartitionView],
        paused: impl Fn(&str, i32) -> bool,
        now: Instant,
        after: Duration,
    ) -> Option<String> {
        let before = self.since.remove(consumer).unwrap_or_default();
        let mut still = HashMap::new();
        let mut stalled = None;
        for v in views {
            if !v.idle || !v.behind() || paused(&v.topic, v.partition) {
                continue;
            }
            let key = (v.topic.clone(), v.partition);
            let since = match before.get(&key) {
                Some((received, since)) if *received == v.received_end => *since,
                _ => now,
            };
            let waited = now.saturating_duration_since(since);
            if waited >= after && stalled.is_none() {
                stalled = Some(format!(
                    "consumer `{consumer}` stalled: {}/{} has messages up to offset {} on the broker, the consumer received up to {} and nothing for {waited:?} while waiting for more",
                    v.topic,
                    v.partition,
                    v.broker_high,
                    v.received_end.unwrap_or(v.start),
                ));
            }
            still.insert(key, (v.received_end, since));
        }
        if !still.is_empty() {
            self.since.insert(consumer.to_owned(), still);
        }
        stalled
    }

    /// Forgets the consumers `keep` says no to (removed ones).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.since.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    fn view(
        broker_high: i64,
        received_end: Option<i64>,
        committable: Option<i64>,
    ) -> PartitionView {
        PartitionView {
            topic: "t".into(),
            partition: 0,
            broker_high,
            start: 0,
            received_end,
            committable,
            idle: true,
        }
    }

    fn stalled_after(views: &[(Duration, PartitionView)]) -> Option<String> {
        let mut w = StallWatch::default();
        let t0 = Instant::now();
        let mut last = None;
        for (at, v) in views {
            last = w.check("c", std::slice::from_ref(v), |_, _| false, t0 + *at, AFTER);
        }
        last
    }

    #[test]
    fn tansus_under_reported_watermark_never_puts_the_position_past_the_end() {
        // 30 records in one batch: Tansu says high watermark 1; all 30 received, 12 handled.
        let l = view(1, Some(30), Some(12)).lag();
        assert_eq!((l.high_watermark, l.position, l.lag), (30, 12, 18));
    }

    #[test]
    fn an_idle_consumer_behind_the_broker_with_nothing_arriving_is_stalled() {
        let v = view(31, Some(30), Some(30));
        assert!(stalled_after(&[(Duration::ZERO, v.clone()), (AFTER, v.clone())]).is_some());
        assert!(
            stalled_after(&[(Duration::ZERO, v.clone()), (AFTER / 2, v)]).is_none(),
            "not before stall_after"
        );
    }

    #[test]
    fn a_busy_handler_is_not_a_stall_however_long_it_takes() {
        let mut v = view(100, Some(30), Some(0));
        v.idle = false;
        assert!(stalled_after(&[(Duration::ZERO, v.clone()), (AFTER * 10, v)]).is_none());
    }

    #[test]
    fn messages_arriving_restart_the_clock() {
        let a = view(100, Some(30), Some(30));
        let b = view(100, Some(40), Some(40));
        assert!(
            stalled_after(&[
                (Duration::ZERO, a),
                (AFTER / 2, b.clone()),
                (AFTER, b.clone())
            ])
            .is_none()
        );
        assert!(stalled_after(&[(AFTER / 2, b.clone()), (AFTER * 3 / 2, b)]).is_some());
    }

    #[test]
    fn a_consumer_that_received_everything_the_broker_reports_is_not_stalled() {
        // Tansu under-reports: high watermark 1 after a batch of 30 that was all received.
        let v = view(1, Some(30), Some(30));
        assert!(stalled_after(&[(Duration::ZERO, v.clone()), (AFTER * 2, v)]).is_none());
    }

    #[test]
    fn a_paused_partition_is_not_stalled() {
        let mut w = StallWatch::default();
        let t0 = Instant::now();
        let v = [view(31, Some(30), Some(30))];
        w.check("c", &v, |_, _| true, t0, AFTER);
        assert!(
            w.check("c", &v, |_, _| true, t0 + AFTER * 2, AFTER)
                .is_none()
        );
    }
}
