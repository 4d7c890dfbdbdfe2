//! Whether the brokers count as reachable, judged on the wrapper's own clock.
//!
//! The supervision loop probes the brokers with a metadata request every `health_interval`.
//! The brokers are *unreachable* once no probe has succeeded for `unreachable_after`,
//! counted from the moment the last successful probe *began* (at first, from the moment the
//! generation was built). The judgement never waits for a probe: a probe still waiting for
//! its answer (a silent partition holds it until its timeout) cannot delay it, and no probe
//! waits longer than what is left of the budget, so none outlives the judgement by more than
//! librdkafka's timer granularity.
//!
//! Counting from the *start* of a probe errs on the side of the broker being gone: an answer
//! that arrives says the broker was there when the request left, not later.
//!
//! Probes do not overlap, and one begins every `health_interval` or, if the previous one
//! took longer, as soon as it ended. So while each probe is answered within `r`, the time
//! since the start of the last successful one stays below `max(health_interval, r) + r`: a
//! broker that answers within half of `unreachable_after` is never judged unreachable, since
//! `unreachable_after` is at least twice `health_interval` (checked by
//! [`KafkaConfig::validate`](crate::KafkaConfig)).

use std::time::{Duration, Instant};

/// The reachability judgement of one generation of clients.
#[derive(Debug)]
pub(crate) struct Reachability {
    unreachable_after: Duration,
    /// When the generation was built.
    since: Instant,
    /// When the last successful probe began (`since` before the first one).
    last_ok: Instant,
    ever_ok: bool,
    last_error: Option<String>,
}

impl Reachability {
    /// A judgement that starts counting at `now`.
    pub(crate) fn new(now: Instant, unreachable_after: Duration) -> Self {
        Self {
            unreachable_after,
            since: now,
            last_ok: now,
            ever_ok: false,
            last_error: None,
        }
    }

    /// A probe that began at `started` was answered.
    pub(crate) fn succeeded(&mut self, started: Instant) {
        self.last_ok = self.last_ok.max(started);
        self.ever_ok = true;
    }

    /// A probe failed with `error`.
    pub(crate) fn failed(&mut self, error: String) {
        self.last_error = Some(error);
    }

    /// Whether any probe of this generation succeeded.
    pub(crate) fn ever_ok(&self) -> bool {
        self.ever_ok
    }

    /// When the brokers count as unreachable unless a probe succeeds first: no probe waits
    /// for its answer past it.
    pub(crate) fn deadline(&self) -> Instant {
        self.last_ok + self.unreachable_after
    }

    /// Why the brokers are unreachable at `now`, or `None` while they are not.
    pub(crate) fn verdict(&self, now: Instant) -> Option<String> {
        if now < self.deadline() {
            return None;
        }
        let error = self
            .last_error
            .as_deref()
            .unwrap_or("no probe has ended yet");
        Some(if self.ever_ok {
            format!(
                "no broker reachable: no metadata request succeeded for {:?} (the last one that did began {:.1?} ago; last error: {error})",
                self.unreachable_after,
                now.saturating_duration_since(self.last_ok),
            )
        } else {
            format!(
                "no broker reachable: no metadata request succeeded in the {:.1?} since the clients were built (unreachable_after {:?}; last error: {error})",
                now.saturating_duration_since(self.since),
                self.unreachable_after,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    const AFTER: Duration = Duration::from_secs(2);

    #[test]
    fn unreachable_once_no_probe_succeeded_for_the_budget_from_the_generation_start() {
        let t0 = Instant::now();
        let mut r = Reachability::new(t0, AFTER);
        r.failed("timed out".into());
        assert_eq!(r.verdict(t0 + AFTER - Duration::from_millis(1)), None);
        let why = r.verdict(t0 + AFTER).expect("unreachable at the deadline");
        assert!(
            why.contains("since the clients were built") && why.contains("timed out"),
            "{why}"
        );
    }

    #[test]
    fn the_budget_counts_from_the_start_of_the_last_successful_probe() {
        let t0 = Instant::now();
        let mut r = Reachability::new(t0, AFTER);
        let began = t0 + Duration::from_millis(500);
        // Answered late: what counts is when it began.
        r.succeeded(began);
        assert_eq!(r.deadline(), began + AFTER);
        assert_eq!(r.verdict(began + AFTER - Duration::from_millis(1)), None);
        assert!(r.verdict(began + AFTER).is_some());
        assert!(r.ever_ok());
    }

    #[test]
    fn an_older_probe_answered_last_does_not_move_the_deadline_back() {
        let t0 = Instant::now();
        let mut r = Reachability::new(t0, AFTER);
        r.succeeded(t0 + Duration::from_secs(1));
        r.succeeded(t0 + Duration::from_millis(200));
        assert_eq!(r.deadline(), t0 + Duration::from_secs(1) + AFTER);
    }
}
