//! `sharded-dispatch`: the sharded consumer against a fixed pool of workers chosen by key
//! hash (Broadway's `partition_by` design), on the in-memory queue, same run.
//!
//! - `messages_per_second`: 1,000,000 messages over 10,000 keys, already queued, handled by a
//!   handler that counts per key; timed from the start of consumption to the last ack.
//! - `p99_latency_us`: 200,000 messages published at a steady 100,000/s while consumed;
//!   latency from publish to the handler's call.
//! - `bytes_per_idle_key`: live heap bytes added per idle key actor after 100,000 keys
//!   were each handled once (a counting global allocator in this binary), against a tokio
//!   task with its own channel per key (the naive actor-per-key design).
//!
//! Several rounds, medians reported. Writes `$WHARF_BENCH_OUT` (JSON) when set.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_core::transport::{Delivery, MemoryQueue, Message, Publisher, Source};
use wharf_sharded_consumer::{Handler, Incoming, Outcome, ShardKey, ShardedConsumer};
use wharf_testkit::bench::{self, Entry, median};

// ----- a counting allocator, switched on only while memory is measured -----

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ----- the workload -----

const MESSAGES: usize = 1_000_000;
const KEYS: usize = 10_000;
const ROUNDS: usize = 5;
const LATENCY_MESSAGES: usize = 200_000;
const LATENCY_RATE: usize = 100_000;
const LATENCY_ROUNDS: usize = 5;
const IDLE_KEYS: usize = 100_000;

/// Publish time and sequence of the latency rounds' messages, read by both handlers.
struct Clock {
    epoch: Instant,
    latencies_ns: Vec<AtomicU64>,
}

impl Clock {
    fn record(&self, payload: &[u8]) {
        if payload.len() != 16 {
            return;
        }
        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap()) as usize;
        let sent = u64::from_le_bytes(payload[8..].try_into().unwrap());
        let now = self.epoch.elapsed().as_nanos() as u64;
        if let Some(slot) = self.latencies_ns.get(seq) {
            slot.store(now.saturating_sub(sent), Ordering::Relaxed);
        }
    }
}

/// Counts messages per key; records latency when the payload carries a timestamp.
struct Counter {
    clock: Option<Arc<Clock>>,
}

impl Handler for Counter {
    type State = u64;
    type Signal = Infallible;
    type Reply = ();
    type Error = Infallible;

    async fn init(&self, _key: &ShardKey) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn handle_message(
        &self,
        count: &mut u64,
        msg: &Incoming<'_>,
    ) -> Result<Outcome, Infallible> {
        *count += 1;
        if let Some(clock) = &self.clock {
            clock.record(msg.payload());
        }
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, _: &mut u64, signal: Infallible) -> Result<(), Infallible> {
        match signal {}
    }
}

/// Key of message `i`: a fixed pseudo-random spread over `keys` keys.
fn key_of(i: usize, keys: usize) -> String {
    let mixed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    format!("key-{}", mixed % keys as u64)
}

fn prefilled(messages: usize, keys: usize) -> MemoryQueue {
    let queue = MemoryQueue::new(messages);
    let publisher = queue.publisher();
    for i in 0..messages {
        publisher
            .try_publish(Message::new(Bytes::from_static(b"x")).with_key(key_of(i, keys)))
            .unwrap();
    }
    queue
}

async fn wait_acked(queue: &MemoryQueue, n: u64) {
    while queue.stats().acked < n {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

// ----- ours -----

fn sharded(clock: Option<Arc<Clock>>, idle: Option<Duration>) -> ShardedConsumer<Counter> {
    let mut builder = ShardedConsumer::builder("bench", Counter { clock }).discard_dead_letters();
    // Knobs for experiments; the figures of record use the defaults.
    if let Some(n) = std::env::var("BENCH_EXECUTORS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.executors(n);
    }
    if let Some(n) = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.batch_size(n);
    }
    if std::env::var("BENCH_NO_HANDLER_TIMEOUT").is_ok() {
        // What the per-call deadline (on by default) costs.
        builder = builder.handler_timeout(None);
    }
    builder
        .idle_timeout(idle)
        .max_in_flight(20_000)
        .max_queue_per_key(256)
        .build()
        .unwrap()
}

async fn ours_throughput() -> f64 {
    let queue = prefilled(MESSAGES, KEYS);
    let consumer = sharded(None, None);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn({
        let (c, s, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { c.run(s, stop).await }
    });
    wait_acked(&queue, MESSAGES as u64).await;
    let elapsed = started.elapsed();
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(consumer.stats().acked, MESSAGES as u64);
    MESSAGES as f64 / elapsed.as_secs_f64()
}

// ----- the baseline: a fixed pool of workers chosen by key hash -----

fn pool_size() -> usize {
    // Broadway's default processor concurrency: twice the schedulers.
    2 * std::thread::available_parallelism().map_or(1, usize::from)
}

async fn pool_worker(mut rx: mpsc::Receiver<Delivery>, clock: Option<Arc<Clock>>) {
    let mut counts: HashMap<Bytes, u64, foldhash::fast::RandomState> = HashMap::default();
    while let Some(delivery) = rx.recv().await {
        let key = delivery.message().key().cloned().unwrap_or_default();
        match counts.get_mut(&key) {
            Some(count) => *count += 1,
            None => {
                counts.insert(Bytes::copy_from_slice(&key), 1);
            }
        }
        if let Some(clock) = &clock {
            clock.record(delivery.message().payload());
        }
        let _ = delivery.ack().await;
    }
}

async fn pool_run(mut source: impl Source, clock: Option<Arc<Clock>>, stop: CancellationToken) {
    let router = foldhash::fast::FixedState::with_seed(1);
    let mut workers = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..pool_size() {
        let (tx, rx) = mpsc::channel(1000);
        senders.push(tx);
        workers.push(tokio::spawn(pool_worker(rx, clock.clone())));
    }
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = source.recv() => next,
        };
        let Some(Ok(delivery)) = next else { break };
        let key = delivery.message().key().cloned().unwrap_or_default();
        let worker = (router.hash_one(&key[..]) % senders.len() as u64) as usize;
        if senders[worker].send(delivery).await.is_err() {
            break;
        }
    }
    drop(senders);
    for worker in workers {
        let _ = worker.await;
    }
}

async fn pool_throughput() -> f64 {
    let queue = prefilled(MESSAGES, KEYS);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(pool_run(queue.source(), None, stop.clone()));
    wait_acked(&queue, MESSAGES as u64).await;
    let elapsed = started.elapsed();
    stop.cancel();
    run.await.unwrap();
    MESSAGES as f64 / elapsed.as_secs_f64()
}

// ----- latency under a steady load -----

async fn paced_publish(queue: &MemoryQueue, clock: &Clock) {
    let publisher = queue.publisher();
    let burst = 100;
    let every = Duration::from_secs_f64(burst as f64 / LATENCY_RATE as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for start in (0..LATENCY_MESSAGES).step_by(burst) {
        tick.tick().await;
        for seq in start..(start + burst).min(LATENCY_MESSAGES) {
            let sent = clock.epoch.elapsed().as_nanos() as u64;
            let mut payload = Vec::with_capacity(16);
            payload.extend_from_slice(&(seq as u64).to_le_bytes());
            payload.extend_from_slice(&sent.to_le_bytes());
            publisher
                .publish(Message::new(payload).with_key(key_of(seq, KEYS)))
                .await
                .unwrap();
        }
    }
}

fn p99_us(clock: &Clock) -> f64 {
    let mut all: Vec<u64> = clock
        .latencies_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .collect();
    all.sort_unstable();
    all[(all.len() * 99 / 100).min(all.len() - 1)] as f64 / 1000.0
}

fn new_clock() -> Arc<Clock> {
    Arc::new(Clock {
        epoch: Instant::now(),
        latencies_ns: (0..LATENCY_MESSAGES).map(|_| AtomicU64::new(0)).collect(),
    })
}

async fn latency(ours: bool) -> f64 {
    let queue = MemoryQueue::new(LATENCY_MESSAGES);
    let clock = new_clock();
    let stop = CancellationToken::new();
    let run = if ours {
        let consumer = sharded(Some(clock.clone()), None);
        let (source, stop) = (queue.source(), stop.clone());
        tokio::spawn(async move { consumer.run(source, stop).await.unwrap() })
    } else {
        tokio::spawn(pool_run(queue.source(), Some(clock.clone()), stop.clone()))
    };
    paced_publish(&queue, &clock).await;
    wait_acked(&queue, LATENCY_MESSAGES as u64).await;
    stop.cancel();
    run.await.unwrap();
    p99_us(&clock)
}

// ----- memory per idle key -----

fn settle_allocator() -> isize {
    LIVE.load(Ordering::Relaxed)
}

async fn ours_bytes_per_idle_key() -> f64 {
    let queue = MemoryQueue::new(IDLE_KEYS);
    let consumer = sharded(None, None);
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (c, s, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { c.run(s, stop).await }
    });
    let publisher = queue.publisher();
    // Warm up with one key, so that the queue and the consumer's buffers have grown to
    // their working size before counting starts.
    for _ in 0..IDLE_KEYS {
        publisher
            .try_publish(Message::new("x").with_key("warm-up"))
            .unwrap();
    }
    wait_acked(&queue, IDLE_KEYS as u64).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    for i in 0..IDLE_KEYS {
        publisher
            .try_publish(Message::new("x").with_key(format!("idle-{i}")))
            .unwrap();
    }
    wait_acked(&queue, 2 * IDLE_KEYS as u64).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let grown = settle_allocator();
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(consumer.stats().active_keys, IDLE_KEYS as u64 + 1);

    stop.cancel();
    run.await.unwrap().unwrap();
    grown as f64 / IDLE_KEYS as f64
}

/// The naive design: one tokio task with its own bounded channel per key, parked on `recv`.
async fn task_per_key_bytes_per_idle_key() -> f64 {
    let mut actors: HashMap<Bytes, mpsc::Sender<Delivery>, foldhash::fast::RandomState> =
        HashMap::default();
    let (warm_tx, warm_rx) = mpsc::channel::<Delivery>(16);
    let warm = tokio::spawn(async move {
        let mut rx = warm_rx;
        let mut count = 0u64;
        while rx.recv().await.is_some() {
            count += 1;
        }
        count
    });
    tokio::time::sleep(Duration::from_millis(10)).await;

    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let mut tasks = Vec::with_capacity(IDLE_KEYS);
    for i in 0..IDLE_KEYS {
        let (tx, mut rx) = mpsc::channel::<Delivery>(16);
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            while let Some(delivery) = rx.recv().await {
                count += 1;
                let _ = delivery.ack().await;
            }
            count
        }));
        actors.insert(Bytes::from(format!("idle-{i}")), tx);
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // every task parked on recv
    // `tasks` holds one JoinHandle per key: the bookkeeping a registry of tasks needs.
    let grown = settle_allocator();
    COUNTING.store(false, Ordering::SeqCst);

    drop(actors);
    drop(warm_tx);
    for task in tasks {
        let _ = task.await;
    }
    let _ = warm.await;
    grown as f64 / IDLE_KEYS as f64
}

// ----- report -----

fn main() {
    if std::env::var("BENCH_ONLY_THROUGHPUT").is_ok() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut all = Vec::new();
            for _ in 0..ROUNDS {
                let o = ours_throughput().await;
                all.push(o);
            }
            println!(
                "sharded throughput rounds: {all:?} median {:.0}",
                median(&all)
            );
        });
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let rows = runtime.block_on(async {
        let (mut ours, mut pool) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let o = ours_throughput().await;
            let p = pool_throughput().await;
            println!("round {round}: sharded {o:>12.0} msg/s   pool {p:>12.0} msg/s");
            ours.push(o);
            pool.push(p);
        }
        let (mut ours_lat, mut pool_lat) = (Vec::new(), Vec::new());
        for round in 0..LATENCY_ROUNDS {
            let o = latency(true).await;
            let p = latency(false).await;
            println!("latency round {round}: sharded p99 {o:>8.1} us   pool p99 {p:>8.1} us");
            ours_lat.push(o);
            pool_lat.push(p);
        }
        let (mut ours_mem, mut task_mem) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let o = ours_bytes_per_idle_key().await;
            let t = task_per_key_bytes_per_idle_key().await;
            println!("memory round {round}: sharded {o:>7.0} B/idle key   task per key {t:>7.0} B/idle key");
            ours_mem.push(o);
            task_mem.push(t);
        }
        let pool_label = "fixed pool of workers chosen by key hash (Broadway partition_by)";
        let name = "sharded-dispatch";
        vec![
            Entry {
                name: name.into(),
                metric: "messages_per_second".into(),
                unit: "messages/s".into(),
                higher_is_better: true,
                ours: median(&ours),
                baseline: median(&pool),
                baseline_label: pool_label.into(),
                params: serde_json::json!({"messages": MESSAGES, "keys": KEYS, "handler": "count per key", "source": "in-memory queue, pre-filled", "pool_workers": pool_size(), "cores": cores, "rounds": ROUNDS}),
            },
            Entry {
                name: name.into(),
                metric: "p99_latency_us".into(),
                unit: "us".into(),
                higher_is_better: false,
                ours: median(&ours_lat),
                baseline: median(&pool_lat),
                baseline_label: pool_label.into(),
                params: serde_json::json!({"messages": LATENCY_MESSAGES, "rate_per_second": LATENCY_RATE, "keys": KEYS, "measured": "publish to handler call", "rounds": LATENCY_ROUNDS}),
            },
            Entry {
                name: name.into(),
                metric: "bytes_per_idle_key".into(),
                unit: "bytes".into(),
                higher_is_better: false,
                ours: median(&ours_mem),
                baseline: median(&task_mem),
                baseline_label: "a tokio task with its own mpsc channel (16) per key".into(),
                params: serde_json::json!({"idle_keys": IDLE_KEYS, "state": "u64", "measured": "live heap bytes added (counting global allocator)", "rounds": 3}),
            },
        ]
    });

    println!();
    println!(
        "{:<22} {:>14} {:>14} {:>8}  unit",
        "metric", "ours", "baseline", "ratio"
    );
    let mut json = Vec::new();
    for row in &rows {
        println!(
            "{:<22} {:>14.1} {:>14.1} {:>8.3}  {} (baseline: {})",
            row.metric,
            row.ours,
            row.baseline,
            row.ratio(),
            row.unit,
            row.baseline_label
        );
        json.push(row.to_json());
    }
    if let Some(out) = bench::write_report(&json).unwrap() {
        println!("wrote {}", out.display());
    }
}
