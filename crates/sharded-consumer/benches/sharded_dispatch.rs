//! `sharded-dispatch`: the sharded consumer against a fixed pool of workers chosen by key
//! hash (Broadway's `partition_by` design), on the in-memory queue, same run.
//!
//! - `messages_per_second`: 1,000,000 messages over 10,000 keys, already queued, handled by a
//!   handler that counts per key; timed from the start of consumption to the last ack.
//! - `p99_latency_us`: 200,000 messages published at a steady 100,000/s (bursts of 100 on a
//!   1 ms tokio interval) while consumed; latency from publish to the handler's call. The
//!   two sides alternate which goes first; each round also prints p50, p99.9, the maximum,
//!   the p99 counted from when each message was due by the schedule (coordinated omission),
//!   and how long the process's threads waited for a CPU and how often they were preempted
//!   (`/proc/self/task/*/schedstat` and `status`): on a shared machine those decide the p99.
//! - `bytes_per_idle_key`: live heap bytes added per idle key actor after 100,000 keys
//!   were each handled once (a counting global allocator in this binary), against a tokio
//!   task with its own channel per key (the naive actor-per-key design).
//!
//! Several rounds, medians reported. Writes `$WHARF_BENCH_OUT` (JSON) when set.
//!
//! Modes: `BENCH_ONLY=latency` runs the latency rounds alone (`BENCH_LATENCY_ROUNDS`,
//! default 9; `BENCH_KEYS`, default 10,000; `BENCH_LATENCY_WARM=1` creates every key before
//! the clock starts; `BENCH_SCHED_DETAIL=1` prints each thread's parks per side and the
//! latency by position in the burst; `BENCH_POOL_WORKERS` sizes the fixed pool);
//! `BENCH_ONLY=growth` is `sharded-growth` (see `growth_main`).
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
use wharf_testkit::bench::{self, Entry, median, rss_bytes};

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
    /// When each message reached the handler, since `epoch`.
    received_ns: Vec<AtomicU64>,
    /// When the consumer's reading task took each message from the source, since `epoch`.
    read_ns: Vec<AtomicU64>,
}

/// The latency rounds' source: stamps when the reading task takes each message, to split a
/// message's latency into the wait for the reader and the way from the reader to the handler.
struct Stamped<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S: Source> Source for Stamped<S> {
    type Error = S::Error;

    async fn recv(&mut self) -> Option<Result<Delivery, S::Error>> {
        let next = self.inner.recv().await;
        if let Some(Ok(delivery)) = &next {
            let payload = delivery.message().payload();
            if payload.len() == 16 {
                let seq = u64::from_le_bytes(payload[..8].try_into().unwrap()) as usize;
                if let Some(slot) = self.clock.read_ns.get(seq) {
                    slot.store(
                        self.clock.epoch.elapsed().as_nanos() as u64,
                        Ordering::Relaxed,
                    );
                }
            }
        }
        next
    }
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
        if let Some(slot) = self.received_ns.get(seq) {
            slot.store(now, Ordering::Relaxed);
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
    // Broadway's default processor concurrency: twice the schedulers
    // (`BENCH_POOL_WORKERS` to compare at another size).
    env_usize(
        "BENCH_POOL_WORKERS",
        2 * std::thread::available_parallelism().map_or(1, usize::from),
    )
    .max(1)
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

/// One latency round: the distribution, and what the machine did to the process meanwhile.
#[derive(Debug, Clone, Copy)]
struct LatencyRun {
    /// Percentiles from the moment each message was published (µs).
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// p99 from the moment each message was *due* by the schedule (µs): counts the time a
    /// delayed publisher (coordinated omission) made messages wait before being published.
    p99_due: f64,
    /// Time this process's threads spent runnable but waiting for a CPU (ms), from
    /// `/proc/self/task/*/schedstat`: the other load of the machine.
    runqueue_wait_ms: f64,
    /// Involuntary context switches of this process's threads (preemptions).
    preempted: u64,
    /// Voluntary context switches (a thread parking: each is a later wake-up).
    parked: u64,
}

/// (run-queue wait in ns, involuntary and voluntary context switches), summed over this
/// process's threads.
fn sched_totals() -> (u64, u64, u64) {
    let (mut wait, mut preempted, mut parked) = (0, 0, 0);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let dir = task.path();
            if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
                wait += s
                    .split_whitespace()
                    .nth(1)
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
                let field = |name: &str| {
                    s.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                preempted += field("nonvoluntary_ctxt_switches:");
                parked += field("voluntary_ctxt_switches:");
            }
        }
    }
    (wait, preempted, parked)
}

/// Voluntary context switches per thread ("name/tid"), for `BENCH_SCHED_DETAIL`.
fn parks_per_thread() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let tid = task.file_name().to_string_lossy().into_owned();
            if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
                let n = s
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                out.insert(format!("{}/{tid}", name.trim()), n);
            }
        }
    }
    out
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const BURST: usize = 100;

fn burst_every() -> Duration {
    Duration::from_secs_f64(BURST as f64 / LATENCY_RATE as f64)
}

/// Publishes `LATENCY_MESSAGES` at `LATENCY_RATE`, in bursts of `BURST` on a tokio interval
/// (its 1 ms timer resolution is the burst period), each message stamped as it is published.
/// Returns the schedule's start, for the due times.
async fn paced_publish(queue: &MemoryQueue, clock: &Clock, keys: usize) -> u64 {
    let publisher = queue.publisher();
    let mut tick = tokio::time::interval(burst_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut start_ns = None;
    for start in (0..LATENCY_MESSAGES).step_by(BURST) {
        tick.tick().await;
        start_ns.get_or_insert_with(|| clock.epoch.elapsed().as_nanos() as u64);
        for seq in start..(start + BURST).min(LATENCY_MESSAGES) {
            let sent = clock.epoch.elapsed().as_nanos() as u64;
            let mut payload = Vec::with_capacity(16);
            payload.extend_from_slice(&(seq as u64).to_le_bytes());
            payload.extend_from_slice(&sent.to_le_bytes());
            publisher
                .publish(Message::new(payload).with_key(key_of(seq, keys)))
                .await
                .unwrap();
        }
    }
    start_ns.unwrap_or(0)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

fn new_clock() -> Arc<Clock> {
    Arc::new(Clock {
        epoch: Instant::now(),
        latencies_ns: (0..LATENCY_MESSAGES).map(|_| AtomicU64::new(0)).collect(),
        received_ns: (0..LATENCY_MESSAGES).map(|_| AtomicU64::new(0)).collect(),
        read_ns: (0..LATENCY_MESSAGES).map(|_| AtomicU64::new(0)).collect(),
    })
}

/// With `warm`, every key's actor (or pool map entry) exists before the clock starts.
async fn latency(ours: bool, keys: usize, warm: bool) -> LatencyRun {
    let queue = MemoryQueue::new(LATENCY_MESSAGES + keys);
    let clock = new_clock();
    let stop = CancellationToken::new();
    let run = if ours {
        let consumer = sharded(Some(clock.clone()), None);
        let stop = stop.clone();
        let source = Stamped {
            inner: queue.source(),
            clock: clock.clone(),
        };
        tokio::spawn(async move { consumer.run(source, stop).await.unwrap() })
    } else {
        let source = Stamped {
            inner: queue.source(),
            clock: clock.clone(),
        };
        tokio::spawn(pool_run(source, Some(clock.clone()), stop.clone()))
    };
    if warm {
        let publisher = queue.publisher();
        for k in 0..keys {
            publisher
                .publish(Message::new("w").with_key(format!("key-{k}")))
                .await
                .unwrap();
        }
        wait_acked(&queue, keys as u64).await;
    }
    let before = sched_totals();
    let threads_before = parks_per_thread();
    let start = paced_publish(&queue, &clock, keys).await;
    let acked = LATENCY_MESSAGES as u64 + if warm { keys as u64 } else { 0 };
    wait_acked(&queue, acked).await;
    let after = sched_totals();
    if std::env::var("BENCH_SCHED_DETAIL").is_ok() {
        let side = if ours { "sharded" } else { "pool" };
        let mut detail: Vec<String> = parks_per_thread()
            .into_iter()
            .map(|(thread, n)| {
                let was = threads_before.get(&thread).copied().unwrap_or(0);
                format!("{thread}: {}", n.saturating_sub(was))
            })
            .collect();
        detail.sort();
        println!("  {side} parks per thread: {}", detail.join(", "));
    }
    stop.cancel();
    run.await.unwrap();
    let mut lat: Vec<u64> = clock
        .latencies_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .collect();
    if std::env::var("BENCH_SCHED_DETAIL").is_ok() {
        burst_profile(ours, &clock);
    }
    lat.sort_unstable();
    let every = burst_every().as_nanos() as u64;
    let mut due: Vec<u64> = clock
        .received_ns
        .iter()
        .enumerate()
        .map(|(seq, r)| {
            let due = start + (seq / BURST) as u64 * every;
            r.load(Ordering::Relaxed).saturating_sub(due)
        })
        .collect();
    due.sort_unstable();
    LatencyRun {
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
        max: percentile(&lat, 1.0),
        p99_due: percentile(&due, 0.99),
        runqueue_wait_ms: after.0.saturating_sub(before.0) as f64 / 1e6,
        preempted: after.1.saturating_sub(before.1),
        parked: after.2.saturating_sub(before.2),
    }
}

/// For `BENCH_SCHED_DETAIL`: the median and p99 latency of the message at each position in its
/// burst, and how long publishing a burst took (median), to tell a wake-up delay (the first
/// message late) from a slower drain (the latency growing along the burst).
fn burst_profile(ours: bool, clock: &Clock) {
    let lat: Vec<u64> = clock
        .latencies_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .collect();
    let sent: Vec<u64> = clock
        .received_ns
        .iter()
        .zip(&lat)
        .map(|(r, l)| r.load(Ordering::Relaxed).saturating_sub(*l))
        .collect();
    let quantile = |mut v: Vec<u64>, q: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0
    };
    let median_of = |v: Vec<u64>| quantile(v, 0.5);
    let bursts = LATENCY_MESSAGES / BURST;
    let at = |pos: usize| {
        let v: Vec<u64> = (0..bursts).map(|b| lat[b * BURST + pos]).collect();
        format!("{:.0}/{:.0}", quantile(v.clone(), 0.5), quantile(v, 0.99))
    };
    let spread = median_of(
        (0..bursts)
            .map(|b| sent[b * BURST + BURST - 1].saturating_sub(sent[b * BURST]))
            .collect(),
    );
    let positions = [0, 1, 5, 10, 25, 50, 75, 90, 99];
    let profile: Vec<String> = positions
        .iter()
        .map(|&p| format!("#{p} {}", at(p)))
        .collect();
    let read: Vec<u64> = clock
        .read_ns
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .collect();
    let received: Vec<u64> = clock
        .received_ns
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .collect();
    let split = |pos: usize| {
        let to_reader: Vec<u64> = (0..bursts)
            .map(|b| read[b * BURST + pos].saturating_sub(sent[b * BURST + pos]))
            .collect();
        let to_handler: Vec<u64> = (0..bursts)
            .map(|b| received[b * BURST + pos].saturating_sub(read[b * BURST + pos]))
            .collect();
        format!(
            "#{pos} to the reader {:.0}/{:.0}, reader to handler {:.0}/{:.0}",
            quantile(to_reader.clone(), 0.5),
            quantile(to_reader, 0.99),
            quantile(to_handler.clone(), 0.5),
            quantile(to_handler, 0.99)
        )
    };
    let side = if ours { "sharded" } else { "pool" };
    println!(
        "  {side} split, median/p99 over bursts (us): {}; {}",
        split(0),
        split(BURST - 1)
    );
    println!(
        "  {side} latency by position in burst, median/p99 over bursts (us): {}; publishing a burst took {spread:.0} us",
        profile.join(", ")
    );
}

/// Latency rounds, the side that goes first alternating; prints each round.
async fn latency_rounds(
    rounds: usize,
    keys: usize,
    warm: bool,
) -> (Vec<LatencyRun>, Vec<LatencyRun>) {
    let (mut ours, mut pool) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (o, p) = if round % 2 == 0 {
            let o = latency(true, keys, warm).await;
            (o, latency(false, keys, warm).await)
        } else {
            let p = latency(false, keys, warm).await;
            (latency(true, keys, warm).await, p)
        };
        println!(
            "latency round {round} (load {:.1}): sharded p99 {:>7.1} us (p50 {:>5.1}, p99.9 {:>7.1}, max {:>7.1}, p99 from due {:>7.1}; runqueue wait {:>6.1} ms, {:>4} preemptions, {:>6} parks)   pool p99 {:>7.1} us (p50 {:>5.1}, p99.9 {:>7.1}, max {:>7.1}, p99 from due {:>7.1}; runqueue wait {:>6.1} ms, {:>4} preemptions, {:>6} parks)   ratio {:.2}",
            load_average(),
            o.p99,
            o.p50,
            o.p999,
            o.max,
            o.p99_due,
            o.runqueue_wait_ms,
            o.preempted,
            o.parked,
            p.p99,
            p.p50,
            p.p999,
            p.max,
            p.p99_due,
            p.runqueue_wait_ms,
            p.preempted,
            p.parked,
            o.p99 / p.p99,
        );
        ours.push(o);
        pool.push(p);
    }
    (ours, pool)
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

// ----- how the costs grow with the number of keys (`scripts/bench sharded-growth`) -----

async fn throughput_over(ours: bool, keys: usize) -> f64 {
    let queue = prefilled(MESSAGES, keys);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = if ours {
        let consumer = sharded(None, None);
        let (source, stop) = (queue.source(), stop.clone());
        tokio::spawn(async move { consumer.run(source, stop).await.unwrap() })
    } else {
        tokio::spawn(pool_run(queue.source(), None, stop.clone()))
    };
    wait_acked(&queue, MESSAGES as u64).await;
    let elapsed = started.elapsed();
    stop.cancel();
    run.await.unwrap();
    MESSAGES as f64 / elapsed.as_secs_f64()
}

/// Memory held once `keys` keys have each been handled once and stay idle (no eviction):
/// (live heap bytes added, RSS bytes added). Messages are published in chunks of 10,000
/// and handled before the next, so the queue never holds more than a chunk.
async fn memory_over(ours: bool, keys: usize) -> (f64, f64) {
    let queue = MemoryQueue::new(keys + 10_000);
    let stop = CancellationToken::new();
    let run = if ours {
        let consumer = sharded(None, None);
        let (source, stop) = (queue.source(), stop.clone());
        tokio::spawn(async move { consumer.run(source, stop).await.unwrap() })
    } else {
        tokio::spawn(pool_run(queue.source(), None, stop.clone()))
    };
    let publisher = queue.publisher();
    // Warm up with one key, as `ours_bytes_per_idle_key` does.
    for _ in 0..10_000 {
        publisher
            .try_publish(Message::new("x").with_key("warm-up"))
            .unwrap();
    }
    wait_acked(&queue, 10_000).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rss0 = rss_bytes();
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let mut done = 10_000u64;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        for i in chunk {
            publisher
                .try_publish(Message::new("x").with_key(format!("key-{i}")))
                .unwrap();
        }
        done += chunk.len() as u64;
        wait_acked(&queue, done).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = LIVE.load(Ordering::Relaxed) as f64;
    COUNTING.store(false, Ordering::SeqCst);
    let rss = rss_bytes() - rss0;
    stop.cancel();
    run.await.unwrap();
    (live, rss)
}

/// Runs `memory_over` in a fresh process of this binary: (live heap bytes, RSS bytes) added.
fn memory_in_child(side: &str, keys: usize) -> (f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_GROWTH_MEMORY_CHILD", format!("{side}:{keys}"))
        .env("BENCH_ONLY", "growth")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut figures = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(f64::NAN));
    (
        figures.next().unwrap_or(f64::NAN),
        figures.next().unwrap_or(f64::NAN),
    )
}

/// `scripts/bench sharded-growth`: throughput, p99 at 100,000 msg/s and memory at 1k, 10k,
/// 100k and 1M keys (`BENCH_GROWTH_KEYS` to choose, comma-separated; `WHARF_BENCH_ROUNDS`
/// rounds, default 3), the fixed pool alongside.
pub(crate) fn growth_main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(child) = std::env::var("BENCH_GROWTH_MEMORY_CHILD") {
        // A fresh process per measurement, so that no memory freed by an earlier phase
        // (and kept by the allocator) hides what the keys take.
        let (side, keys) = child.split_once(':').unwrap();
        let (live, rss) = runtime.block_on(memory_over(side == "ours", keys.parse().unwrap()));
        println!("{live} {rss}");
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_GROWTH_KEYS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000]);
    let rounds = env_usize("WHARF_BENCH_ROUNDS", 3).max(1);
    let label = "fixed pool of workers chosen by key hash (Broadway partition_by)";
    let mut json = Vec::new();
    runtime.block_on(async {
        for &keys in &sizes {
            let (mut to, mut tp, mut lo, mut lp, mut ratios) = (vec![], vec![], vec![], vec![], vec![]);
            for round in 0..rounds {
                let (o, p) = if round % 2 == 0 {
                    let o = throughput_over(true, keys).await;
                    (o, throughput_over(false, keys).await)
                } else {
                    let p = throughput_over(false, keys).await;
                    (throughput_over(true, keys).await, p)
                };
                to.push(o);
                tp.push(p);
                let (o, p) = if round % 2 == 0 {
                    let o = latency(true, keys, false).await;
                    (o, latency(false, keys, false).await)
                } else {
                    let p = latency(false, keys, false).await;
                    (latency(true, keys, false).await, p)
                };
                println!(
                    "{keys:>8} keys, round {round} (load {:.1}): sharded {:>10.0} msg/s, p99 {:>7.1} us (runqueue wait {:>5.1} ms)   pool {:>10.0} msg/s, p99 {:>7.1} us (runqueue wait {:>5.1} ms)",
                    load_average(), to[round], o.p99, o.runqueue_wait_ms, tp[round], p.p99, p.runqueue_wait_ms
                );
                lo.push(o.p99);
                lp.push(p.p99);
                ratios.push(o.p99 / p.p99);
            }
            let (live_o, rss_o) = memory_in_child("ours", keys);
            let (live_p, rss_p) = memory_in_child("pool", keys);
            println!(
                "{keys:>8} keys: sharded live heap {:>7.1} B/key, RSS {:>7.1} B/key   pool live heap {:>7.1} B/key, RSS {:>7.1} B/key",
                live_o / keys as f64, rss_o / keys as f64, live_p / keys as f64, rss_p / keys as f64
            );
            let params = serde_json::json!({"keys": keys, "rounds": rounds, "cores": std::thread::available_parallelism().map_or(1, usize::from)});
            let entry = |metric: &str, unit: &str, higher: bool, ours: f64, base: f64, extra: serde_json::Value| {
                let mut params = params.clone();
                if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
                    p.extend(e.clone());
                }
                Entry {
                    name: "sharded-growth".into(),
                    metric: metric.into(),
                    unit: unit.into(),
                    higher_is_better: higher,
                    ours,
                    baseline: base,
                    baseline_label: label.into(),
                    params,
                }
                .to_json()
            };
            json.push(entry("messages_per_second", "messages/s", true, median(&to), median(&tp), serde_json::json!({"messages": MESSAGES, "source": "in-memory queue, pre-filled"})));
            json.push(entry("p99_latency_us", "us", false, median(&lo), median(&lp), serde_json::json!({"messages": LATENCY_MESSAGES, "rate_per_second": LATENCY_RATE, "median_of_per_round_ratios": median(&ratios)})));
            json.push(entry("rss_bytes_per_key", "bytes", false, rss_o / keys as f64, rss_p / keys as f64, serde_json::json!({"measured": "RSS (/proc/self/statm) added while each key was handled once and kept (no eviction), chunks of 10,000 messages"})));
            json.push(entry("live_heap_bytes_per_key", "bytes", false, live_o / keys as f64, live_p / keys as f64, serde_json::json!({"measured": "live heap bytes added (counting global allocator), same phase"})));
        }
    });
    if let Some(out) = bench::write_report(&json).unwrap() {
        println!("wrote {}", out.display());
    }
}

// ----- report -----

fn main() {
    if std::env::var("BENCH_ONLY").as_deref() == Ok("growth") {
        growth_main();
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("latency") {
        // The latency rounds alone: `BENCH_LATENCY_ROUNDS` (default 9), `BENCH_KEYS`
        // (default 10,000), `BENCH_LATENCY_WARM=1` to create every key before the clock.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let rounds = env_usize("BENCH_LATENCY_ROUNDS", 9);
            let keys = env_usize("BENCH_KEYS", KEYS);
            let warm = std::env::var("BENCH_LATENCY_WARM").is_ok();
            let (ours, pool) = latency_rounds(rounds, keys, warm).await;
            let p99 = |runs: &[LatencyRun]| median(&runs.iter().map(|r| r.p99).collect::<Vec<_>>());
            let ratios: Vec<f64> = ours.iter().zip(&pool).map(|(o, p)| o.p99 / p.p99).collect();
            println!(
                "median p99: sharded {:.1} us, pool {:.1} us; ratio of medians {:.2}, median of per-round ratios {:.2}, rounds with sharded <= pool: {}/{}",
                p99(&ours),
                p99(&pool),
                p99(&ours) / p99(&pool),
                median(&ratios),
                ratios.iter().filter(|r| **r <= 1.0).count(),
                ratios.len()
            );
        });
        return;
    }
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
        let (ours_runs, pool_runs) = latency_rounds(LATENCY_ROUNDS, KEYS, false).await;
        let ours_lat: Vec<f64> = ours_runs.iter().map(|r| r.p99).collect();
        let pool_lat: Vec<f64> = pool_runs.iter().map(|r| r.p99).collect();
        let lat_ratios: Vec<f64> = ours_lat.iter().zip(&pool_lat).map(|(o, p)| o / p).collect();
        let ours_wait: Vec<f64> = ours_runs.iter().map(|r| r.runqueue_wait_ms).collect();
        let pool_wait: Vec<f64> = pool_runs.iter().map(|r| r.runqueue_wait_ms).collect();
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
                params: serde_json::json!({"messages": LATENCY_MESSAGES, "rate_per_second": LATENCY_RATE, "keys": KEYS, "measured": "publish to handler call", "rounds": LATENCY_ROUNDS, "order": "alternating", "per_round_ratios": lat_ratios, "median_of_per_round_ratios": median(&lat_ratios), "ours_p99_us": ours_lat, "baseline_p99_us": pool_lat, "ours_runqueue_wait_ms": ours_wait, "baseline_runqueue_wait_ms": pool_wait}),
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
