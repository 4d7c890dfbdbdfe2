//! The reading task: takes deliveries from the source, decodes their keys, and hands them
//! to executors in batches.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_core::transport::{Delivery, Source};

use crate::ShardKey;
use crate::budget::Budget;
use crate::config::Config;
use crate::shard::Inbound;
use crate::stats::Metrics;

/// How long the reader pauses after the source reported a receive error (the source
/// reconnects by itself; this only keeps a source that fails at once from spinning).
const SOURCE_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// The longest a delivery waits in a partial batch while the source keeps delivering
/// (checked every [`CLOCK_EVERY`] deliveries, so the clock is read rarely).
const MAX_BATCH_DELAY: Duration = Duration::from_millis(1);
const CLOCK_EVERY: u32 = 64;

/// Which executor owns a key: the same answer in the reader and in the handles.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    hasher: foldhash::fast::FixedState,
    executors: usize,
}

impl Router {
    pub(crate) fn new(executors: usize) -> Self {
        // A fixed seed unlike the registries' random ones, so that the bits that pick the
        // executor are not the bits the registry's buckets are chosen by.
        Self {
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_5a4d_ed00_0001),
            executors: executors.max(1),
        }
    }

    pub(crate) fn executor_of(&self, key: &ShardKey) -> usize {
        (self.hasher.hash_one(key.as_bytes()) % self.executors as u64) as usize
    }
}

pub(crate) struct Reader {
    config: Arc<Config>,
    router: Router,
    budget: Arc<Budget>,
    outboxes: Vec<mpsc::Sender<Vec<Inbound>>>,
    batches: Vec<Vec<Inbound>>,
    stop: CancellationToken,
    metrics: Metrics,
    /// Budget units taken and not yet used by a delivery. Given back before every wait, so
    /// that while the consumer waits the budget counts only deliveries.
    credit: usize,
    rejected_round_robin: usize,
    /// When each batch got its first delivery.
    batch_started: Vec<Option<tokio::time::Instant>>,
    since_clock: u32,
}

impl Reader {
    pub(crate) fn new(
        config: Arc<Config>,
        router: Router,
        budget: Arc<Budget>,
        outboxes: Vec<mpsc::Sender<Vec<Inbound>>>,
        stop: CancellationToken,
        metrics: Metrics,
    ) -> Self {
        let batches: Vec<Vec<Inbound>> = outboxes
            .iter()
            .map(|_| Vec::with_capacity(config.batch_size))
            .collect();
        let batch_started = vec![None; batches.len()];
        Self {
            config,
            router,
            budget,
            outboxes,
            batches,
            stop,
            metrics,
            credit: 0,
            rejected_round_robin: 0,
            batch_started,
            since_clock: 0,
        }
    }

    /// Reads until the source ends or the consumer stops. Deliveries not yet handed to an
    /// executor are released (newest first) before it returns; dropping `self` closes the
    /// executors' inboxes.
    pub(crate) async fn run<S: Source>(mut self, source: &mut S) {
        self.pump(source).await;
        for batch in &mut self.batches {
            while let Some(inbound) = batch.pop() {
                drop(inbound);
                self.budget.give_back(1);
            }
        }
        self.budget.give_back(std::mem::take(&mut self.credit));
    }

    async fn pump<S: Source>(&mut self, source: &mut S) {
        loop {
            if self.credit == 0 && !self.take_credit().await {
                return;
            }
            // What the source has ready is taken without waiting; before waiting, the
            // partial batches are handed over, so a batch never waits to fill.
            let next = match source.recv().now_or_never() {
                Some(next) => next,
                None => {
                    if !self.flush_all().await {
                        return;
                    }
                    // Give back every unit held, so that the in-flight count is exact while
                    // the source is idle (it used to keep one here, and an idle consumer
                    // reported one delivery in flight). There was room when the wait began
                    // and only this task takes, so the delivery waited for has room too.
                    self.give_back_credit();
                    let next = tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return,
                        next = source.recv() => next,
                    };
                    if matches!(next, Some(Ok(_))) {
                        self.credit = self.budget.take_for_received(self.config.batch_size);
                    }
                    next
                }
            };
            match next {
                None => {
                    tracing::debug!(consumer = %self.config.name, "source ended");
                    self.flush_all().await;
                    return;
                }
                Some(Err(error)) => {
                    self.metrics.source_errors.increment(1);
                    tracing::warn!(consumer = %self.config.name, error = %error, "receiving from the source failed; it will retry");
                    self.give_back_credit();
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(SOURCE_ERROR_PAUSE) => {}
                    }
                }
                Some(Ok(delivery)) => {
                    self.credit -= 1;
                    let executor = self.route(delivery);
                    if self.batches[executor].len() >= self.config.batch_size
                        && !self.send(executor).await
                    {
                        return;
                    }
                    if !self.send_overdue().await {
                        return;
                    }
                }
            }
        }
    }

    /// Takes budget for the next deliveries, waiting while the consumer is full. `false`
    /// when the consumer stops meanwhile.
    async fn take_credit(&mut self) -> bool {
        loop {
            self.credit = self.budget.take_up_to(self.config.batch_size);
            if self.credit > 0 {
                return true;
            }
            // Full: hand over what is batched (it holds budget too), then wait for room.
            if !self.flush_all().await {
                return false;
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return false,
                () = self.budget.wait_for_room() => {}
            }
        }
    }

    fn route(&mut self, delivery: Delivery) -> usize {
        match self.config.decoder.decode(delivery.message()) {
            Ok(key) => {
                let executor = self.router.executor_of(&key);
                self.push(executor, Inbound::Message { key, delivery });
                executor
            }
            Err(rejected) => {
                let executor = self.rejected_round_robin % self.batches.len();
                self.rejected_round_robin = self.rejected_round_robin.wrapping_add(1);
                tracing::warn!(consumer = %self.config.name, reason = rejected.reason(), "message rejected: its sharding key cannot be decoded");
                let reason = rejected.into_reason();
                self.push(executor, Inbound::Rejected { delivery, reason });
                executor
            }
        }
    }

    fn push(&mut self, executor: usize, inbound: Inbound) {
        let batch = &mut self.batches[executor];
        if batch.is_empty() {
            self.batch_started[executor] = Some(tokio::time::Instant::now());
        }
        batch.push(inbound);
    }

    fn give_back_credit(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.credit));
    }

    /// Hands executor `i` its batch, waiting for room in its inbox (after giving back the
    /// budget it holds unused). `false` when the consumer stops meanwhile (the batch stays,
    /// to be released).
    async fn send(&mut self, i: usize) -> bool {
        if self.outboxes[i].capacity() == 0 {
            // About to wait for the executor: hold no budget meanwhile.
            self.budget.give_back(std::mem::take(&mut self.credit));
        }
        let reserved = tokio::select! {
            biased;
            permit = self.outboxes[i].reserve() => permit.ok(),
            () = self.stop.cancelled() => None,
        };
        let Some(permit) = reserved else {
            return false;
        };
        let batch = std::mem::replace(
            &mut self.batches[i],
            Vec::with_capacity(self.config.batch_size),
        );
        permit.send(batch);
        self.batch_started[i] = None;
        true
    }

    /// Hands over the batches that waited long enough under a steady stream (a source that
    /// always has the next delivery ready never lets a partial batch go otherwise). The
    /// clock is read once per batch and once per [`CLOCK_EVERY`] deliveries. `false` when
    /// the consumer stops meanwhile.
    async fn send_overdue(&mut self) -> bool {
        self.since_clock += 1;
        if self.since_clock < CLOCK_EVERY {
            return true;
        }
        self.since_clock = 0;
        let now = tokio::time::Instant::now();
        for i in 0..self.batches.len() {
            let overdue = self.batch_started[i].is_some_and(|t| now - t >= MAX_BATCH_DELAY);
            if overdue && !self.send(i).await {
                return false;
            }
        }
        true
    }

    async fn flush_all(&mut self) -> bool {
        for i in 0..self.batches.len() {
            if !self.batches[i].is_empty() && !self.send(i).await {
                return false;
            }
        }
        true
    }
}
