//! Property: for random streams over many keys, with random handler failures (errors,
//! panics, retries, dead letters), each key's messages are handled in order, each message is
//! acknowledged once or dead-lettered once, and none is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use proptest::prelude::*;
use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;
use wharf_core::transport::{MemoryQueue, Message, Publisher, Source};
use wharf_sharded_consumer::{Handler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer};

const MAX_ATTEMPTS: u32 = 3;

/// How message `seq` behaves: it fails its first `fails` tries, the way `kind` says.
#[derive(Clone, Copy, Debug)]
struct Plan {
    key: u8,
    fails: u32,
    kind: u8,
}

impl Plan {
    /// Whether the message ends in the dead-letter target.
    fn dead(&self) -> bool {
        (self.kind == 3 && self.fails > 0) || self.fails >= MAX_ATTEMPTS
    }
}

struct Chaos {
    plans: Vec<Plan>,
    /// Every call: (key, seq, attempt, succeeded).
    calls: Mutex<Vec<(u8, usize, u32, bool)>>,
}

#[derive(Clone)]
struct ChaosHandler(Arc<Chaos>);

impl Handler for ChaosHandler {
    type State = Vec<usize>;
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<Vec<usize>, String> {
        Ok(Vec::new())
    }

    async fn handle_message(
        &self,
        seen: &mut Vec<usize>,
        msg: &Incoming<'_>,
    ) -> Result<Outcome, String> {
        let seq: usize = std::str::from_utf8(msg.payload()).unwrap().parse().unwrap();
        let plan = self.0.plans[seq];
        let attempt = msg.attempt();
        let fail = attempt <= plan.fails;
        self.0
            .calls
            .lock()
            .unwrap()
            .push((plan.key, seq, attempt, !fail));
        if seq.is_multiple_of(5) {
            tokio::task::yield_now().await; // some turns wait, most finish inline
        }
        if !fail {
            seen.push(seq);
            return Ok(Outcome::Ack);
        }
        match plan.kind {
            0 => Err(format!("injected error {seq}/{attempt}")),
            1 => panic!("injected panic {seq}/{attempt}"),
            2 => Ok(Outcome::Retry(Duration::from_millis(1))),
            _ => Ok(Outcome::DeadLetter(format!("injected dead letter {seq}"))),
        }
    }

    async fn handle_signal(&self, _: &mut Vec<usize>, signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
}

fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("injected"));
            if !injected {
                default(info);
            }
        }));
    });
}

fn plan() -> impl Strategy<Value = Plan> {
    let fails = prop_oneof![6 => Just(0u32), 2 => 1u32..3, 1 => 3u32..5];
    (0u8..16, fails, 0u8..4).prop_map(|(key, fails, kind)| Plan { key, fails, kind })
}

async fn run_case(plans: Vec<Plan>, executors: usize, concurrency: usize, in_flight: usize) {
    let n = plans.len();
    let chaos = Arc::new(Chaos {
        plans: plans.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let queue = MemoryQueue::new(n);
    let dead = MemoryQueue::new(n);
    let publisher = queue.publisher();
    for (seq, plan) in plans.iter().enumerate() {
        publisher
            .publish(Message::new(seq.to_string()).with_key(format!("key-{}", plan.key)))
            .await
            .unwrap();
    }
    queue.close();

    let consumer = ShardedConsumer::builder("property", ChaosHandler(chaos.clone()))
        .dead_letter(dead.publisher())
        .retry(RetryPolicy::new(
            MAX_ATTEMPTS,
            Backoff::constant(Duration::from_millis(1)),
        ))
        .executors(executors)
        .max_concurrency(concurrency)
        .max_in_flight(in_flight)
        .max_queue_per_key(4)
        .batch_size(8)
        .build()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        consumer.run(queue.source(), CancellationToken::new()),
    )
    .await
    .expect("the stream is consumed within 30 s")
    .unwrap();

    // Settled once each: acked (handled or dead-lettered), never dropped or requeued.
    let stats = queue.stats();
    assert_eq!(
        (stats.acked, stats.released, stats.nacked, stats.held()),
        (n as u64, 0, 0, 0),
        "{stats:?}"
    );

    // Dead-lettered exactly the messages that had to be, once each.
    dead.close();
    let mut dead_source = dead.source();
    let mut dead_seqs = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(d) = dead_source.recv().await {
            let d = d.unwrap();
            dead_seqs.push(
                std::str::from_utf8(d.message().payload())
                    .unwrap()
                    .parse::<usize>()
                    .unwrap(),
            );
            d.ack().await.unwrap();
        }
    })
    .await;
    drained.expect("the dead-letter queue drains within 30 s");
    let expected_dead: BTreeSet<usize> = (0..n).filter(|&s| plans[s].dead()).collect();
    assert_eq!(
        dead_seqs.len(),
        expected_dead.len(),
        "each dead letter once"
    );
    assert_eq!(
        dead_seqs.iter().copied().collect::<BTreeSet<_>>(),
        expected_dead
    );

    // Handled successfully exactly the others, once each, and per key in order.
    let calls = chaos.calls.lock().unwrap().clone();
    let succeeded: Vec<usize> = calls.iter().filter(|c| c.3).map(|c| c.1).collect();
    let expected_ok: BTreeSet<usize> = (0..n).filter(|&s| !plans[s].dead()).collect();
    assert_eq!(succeeded.len(), expected_ok.len(), "each handled once");
    assert_eq!(
        succeeded.iter().copied().collect::<BTreeSet<_>>(),
        expected_ok
    );

    let mut per_key: BTreeMap<u8, Vec<(usize, u32)>> = BTreeMap::new();
    for (key, seq, attempt, _) in &calls {
        per_key.entry(*key).or_default().push((*seq, *attempt));
    }
    for (key, seen) in per_key {
        // One message at a time, in order: calls are sorted by (seq, attempt), attempts
        // counting 1, 2, ... per message.
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, sorted, "calls of key-{key} out of order");
        for window in seen.windows(2) {
            let ((s1, a1), (s2, a2)) = (window[0], window[1]);
            assert!(
                (s1 == s2 && a2 == a1 + 1) || (s1 < s2 && a2 == 1),
                "key-{key}: {window:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn each_keys_messages_are_handled_in_order_and_each_is_settled_once(
        plans in prop::collection::vec(plan(), 1..300),
        executors in 1usize..4,
        concurrency in 1usize..6,
        in_flight in 1usize..64,
    ) {
        quiet_injected_panics();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_case(plans, executors, concurrency, in_flight));
    }
}
