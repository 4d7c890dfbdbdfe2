//! Idle eviction: a sweep of the registry every `idle_timeout / 4` (at most every second)
//! stops the actors idle past their timeout and samples the deepest key queue.

use std::time::Duration;

use super::Shard;
use super::schedule::Work;
use crate::{Handler, ShardKey, StopReason};

impl<H: Handler> Shard<H> {
    pub(super) fn sweep(&mut self) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        self.next_sweep = Some(self.now + sweep_every(idle));
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.now_ms;
        let mut expired = Vec::new();
        let mut deepest = 0usize;
        for (key, slot) in self.slots.iter_mut() {
            deepest = deepest.max(slot.queued());
            slot.trim();
            if slot.is_idle() && now_ms.saturating_sub(slot.last_active_ms) >= idle_ms {
                expired.push(key.clone());
            }
        }
        self.totals.record_depth(deepest as u64, &self.metrics);
        if self.stopping || self.cancelled {
            return;
        }
        for key in expired {
            self.stop_actor(key, StopReason::Idle);
        }
        // Give memory back after a wave of evictions.
        self.slots.shrink();
    }

    pub(super) fn stop_actor(&mut self, key: ShardKey, reason: StopReason) {
        let Some(slot) = self.slots.get_mut(key.as_bytes()) else {
            return;
        };
        if slot.busy {
            return;
        }
        slot.busy = true;
        let state = slot.state.take();
        if let Some(done) = self.launch(key, state, Work::Stop(reason))
            && let Some(key) = self.apply(done)
        {
            if reason == StopReason::Shutdown {
                self.remove_if_idle(&key);
            } else {
                self.run_key(key);
            }
        }
    }

    fn remove_if_idle(&mut self, key: &ShardKey) {
        if self
            .slots
            .get(key.as_bytes())
            .is_some_and(|s| s.is_idle() && s.state.is_none())
        {
            self.slots.remove(key.as_bytes());
            self.counts.active -= 1;
        }
    }
}

pub(super) fn sweep_every(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}
