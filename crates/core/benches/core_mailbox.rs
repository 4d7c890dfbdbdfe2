//! `core-mailbox`: request/response round trips per second through a supervised service
//! handle (`wharf_core::service`, a deadline on every call), against, in the same run and on
//! the same runtime: a bare tokio mpsc + oneshot pair, the same pair with
//! `tokio::time::timeout` around each call, kameo's `ask`, and ractor's `call` with and
//! without a timeout. Every contender is a counter that adds the request to its total and
//! answers the total, behind a mailbox of the same capacity (ractor's is unbounded).
//!
//! It also measures how late a call ends after its deadline, against a service that never
//! answers: wharf's deadline against `tokio::time::timeout` around a bare call.
//!
//! Run with `scripts/bench core-mailbox`; writes `$WHARF_BENCH_OUT` (default
//! `target/wharf-bench/core-mailbox.json`). Rounds alternate the contenders, starting each
//! round with the next one, so drift in the machine's load hits all of them alike.
//!
//! `CORE_MAILBOX_ONLY=<contender> [CORE_MAILBOX_CALLS=n] [CORE_MAILBOX_CALLERS=c]` runs one
//! contender, `n` calls in all (default 100,000) from `c` callers (default 1), and writes
//! nothing: for instruction counts under
//! `valgrind --tool=callgrind` (subtract a run with fewer calls to remove the setup).
//! `CORE_MAILBOX_ONLY=lateness` measures only how late calls end after their deadline.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use wharf_core::service::{ServiceHandle, mailbox};
use wharf_core::supervisor::{ChildSpec, Started, Supervisor, SupervisorHandle};
use wharf_testkit::bench::{self, Entry, median};

const CAPACITY: usize = 1024;
const ROUNDS: usize = 15;
/// The deadline of every call that has one (wharf's default).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Wharf,
    Bare,
    BareTimeout,
    Kameo,
    Ractor,
    RactorTimeout,
}

impl Contender {
    const ALL: [Self; 6] = [
        Self::Wharf,
        Self::Bare,
        Self::BareTimeout,
        Self::Kameo,
        Self::Ractor,
        Self::RactorTimeout,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::Wharf => "wharf",
            Self::Bare => "bare",
            Self::BareTimeout => "bare-timeout",
            Self::Kameo => "kameo-ask",
            Self::Ractor => "ractor-call",
            Self::RactorTimeout => "ractor-call-timeout",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Wharf => "wharf ServiceHandle::call (30 s deadline)",
            Self::Bare => "bare tokio mpsc + oneshot",
            Self::BareTimeout => "bare tokio mpsc + oneshot in tokio::time::timeout (30 s)",
            Self::Kameo => "kameo 0.22 ActorRef::ask (no timeout)",
            Self::Ractor => "ractor 0.16 ActorRef::call (no timeout)",
            Self::RactorTimeout => "ractor 0.16 ActorRef::call (30 s timeout)",
        }
    }
}

// ----- wharf -----

async fn supervised_counter() -> (ServiceHandle<u64, u64>, SupervisorHandle) {
    let (handle, mailbox) = mailbox::<u64, u64>("counter", CAPACITY);
    let spec = ChildSpec::new("counter", move |ctx| {
        let mailbox = mailbox.clone();
        async move {
            let mut inbox = mailbox.attach().await;
            let mut total = 0_u64;
            Ok::<_, wharf_core::Error>(Started::task(async move {
                while let Some(request) = inbox.recv_until(&ctx).await {
                    let (n, reply) = request.into_parts();
                    total = total.wrapping_add(n);
                    reply.send(total);
                }
                Ok::<_, wharf_core::Error>(())
            }))
        }
    });
    let sup = Supervisor::builder("bench")
        .child(spec)
        .start()
        .await
        .unwrap();
    (handle.with_call_timeout(CALL_TIMEOUT), sup)
}

// ----- the bare pair -----

type Bare = mpsc::Sender<(u64, oneshot::Sender<u64>)>;

fn bare_counter() -> Bare {
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(CAPACITY);
    tokio::spawn(async move {
        let mut total = 0_u64;
        while let Some((n, reply)) = rx.recv().await {
            total = total.wrapping_add(n);
            let _ = reply.send(total);
        }
    });
    tx
}

async fn bare_call(tx: &Bare, n: u64) -> u64 {
    let (reply_tx, reply_rx) = oneshot::channel();
    tx.send((n, reply_tx)).await.unwrap();
    reply_rx.await.unwrap()
}

// ----- kameo -----

struct KameoCounter {
    total: u64,
}

impl kameo::Actor for KameoCounter {
    type Args = Self;
    type Error = kameo::error::Infallible;

    async fn on_start(
        state: Self::Args,
        _: kameo::actor::ActorRef<Self>,
    ) -> Result<Self, Self::Error> {
        Ok(state)
    }
}

struct Add(u64);

impl kameo::message::Message<Add> for KameoCounter {
    type Reply = u64;

    async fn handle(
        &mut self,
        Add(n): Add,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> u64 {
        self.total = self.total.wrapping_add(n);
        self.total
    }
}

fn kameo_counter() -> kameo::actor::ActorRef<KameoCounter> {
    use kameo::actor::Spawn;
    KameoCounter::spawn_with_mailbox(KameoCounter { total: 0 }, kameo::mailbox::bounded(CAPACITY))
}

// ----- ractor -----

struct RactorCounter;

enum RactorMsg {
    Add(u64, ractor::RpcReplyPort<u64>),
}

impl ractor::Actor for RactorCounter {
    type Msg = RactorMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        (): (),
    ) -> Result<u64, ractor::ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        RactorMsg::Add(n, reply): RactorMsg,
        total: &mut u64,
    ) -> Result<(), ractor::ActorProcessingErr> {
        *total = total.wrapping_add(n);
        let _ = reply.send(*total);
        Ok(())
    }
}

async fn ractor_call(actor: &ractor::ActorRef<RactorMsg>, timeout: Option<Duration>) -> u64 {
    match actor
        .call(|reply| RactorMsg::Add(1, reply), timeout)
        .await
        .unwrap()
    {
        ractor::rpc::CallResult::Success(total) => total,
        _ => panic!("ractor call failed"),
    }
}

// ----- the runs -----

#[derive(Clone)]
struct Targets {
    wharf: ServiceHandle<u64, u64>,
    bare: Bare,
    kameo: kameo::actor::ActorRef<KameoCounter>,
    ractor: ractor::ActorRef<RactorMsg>,
}

impl Targets {
    /// `per_caller` calls of `contender`, one after the other.
    async fn calls(self, contender: Contender, per_caller: usize) {
        use std::hint::black_box;
        match contender {
            Contender::Wharf => {
                for _ in 0..per_caller {
                    black_box(self.wharf.call(1).await.unwrap());
                }
            }
            Contender::Bare => {
                for _ in 0..per_caller {
                    black_box(bare_call(&self.bare, 1).await);
                }
            }
            Contender::BareTimeout => {
                for _ in 0..per_caller {
                    let call = bare_call(&self.bare, 1);
                    black_box(tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap());
                }
            }
            Contender::Kameo => {
                for _ in 0..per_caller {
                    black_box(self.kameo.ask(Add(1)).await.unwrap());
                }
            }
            Contender::Ractor => {
                for _ in 0..per_caller {
                    black_box(ractor_call(&self.ractor, None).await);
                }
            }
            Contender::RactorTimeout => {
                for _ in 0..per_caller {
                    black_box(ractor_call(&self.ractor, Some(CALL_TIMEOUT)).await);
                }
            }
        }
    }

    /// Round trips per second for `callers` concurrent callers making `per_caller` calls each.
    async fn run(&self, contender: Contender, callers: usize, per_caller: usize) -> f64 {
        let began = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| tokio::spawn(self.clone().calls(contender, per_caller)))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        (callers * per_caller) as f64 / began.elapsed().as_secs_f64()
    }
}

async fn start_targets() -> (Targets, SupervisorHandle) {
    let (wharf, sup) = supervised_counter().await;
    let (ractor, _) = ractor::Actor::spawn(None, RactorCounter, ()).await.unwrap();
    let targets = Targets {
        wharf,
        bare: bare_counter(),
        kameo: kameo_counter(),
        ractor,
    };
    (targets, sup)
}

// ----- how late a call ends after its deadline -----

/// Callers and calls each for the lateness figures, and the timeout of those calls.
const LATE_CALLERS: usize = 16;
const LATE_CALLS: usize = 25;
const LATE_TIMEOUT: Duration = Duration::from_millis(10);

/// Every caller makes `LATE_CALLS` calls, one after the other, to a service that takes
/// requests and never answers; returns how long after its deadline each call ended (µs).
async fn lateness_of<F, Fut>(call: F) -> Vec<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let tasks: Vec<_> = (0..LATE_CALLERS)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut late = Vec::with_capacity(LATE_CALLS);
                for _ in 0..LATE_CALLS {
                    let began = Instant::now();
                    assert!(call().await, "a call to a silent service got an answer");
                    let took = began.elapsed();
                    assert!(took >= LATE_TIMEOUT, "a call ended before its deadline");
                    late.push((took - LATE_TIMEOUT).as_secs_f64() * 1e6);
                }
                late
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// Lateness (p50, p99, max, in µs) of wharf's deadline and of `tokio::time::timeout` around
/// a bare call, each against a service that holds every request and never answers.
async fn measure_lateness() -> [(f64, f64, f64); 2] {
    let (silent, mailbox) = mailbox::<u64, u64>("silent", CAPACITY);
    let holder = tokio::spawn(async move {
        let mut inbox = mailbox.attach().await;
        let mut held = Vec::new();
        while let Some(request) = inbox.recv().await {
            held.push(request);
        }
    });
    let silent = silent.with_call_timeout(LATE_TIMEOUT);
    let wharf = lateness_of(move || {
        let silent = silent.clone();
        async move { matches!(silent.call(1).await, Err(wharf_core::Error::Timeout { .. })) }
    })
    .await;

    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(CAPACITY);
    let bare_holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = rx.recv().await {
            held.push(request);
        }
    });
    let tokio_timer = lateness_of(move || {
        let tx = tx.clone();
        async move {
            tokio::time::timeout(LATE_TIMEOUT, bare_call(&tx, 1))
                .await
                .is_err()
        }
    })
    .await;
    holder.abort();
    bare_holder.abort();
    [wharf, tokio_timer].map(|late| {
        (
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            percentile(&late, 1.0),
        )
    })
}

/// One row of the report: each contender's median, and the median of wharf's per-round
/// ratio to it.
struct Row {
    callers: usize,
    per_caller: usize,
    medians: Vec<(Contender, f64)>,
    round_ratios: Vec<(Contender, f64)>,
}

impl Row {
    fn median_of(&self, contender: Contender) -> f64 {
        self.medians
            .iter()
            .find(|(c, _)| *c == contender)
            .map_or(f64::NAN, |(_, m)| *m)
    }

    fn round_ratio_of(&self, contender: Contender) -> f64 {
        self.round_ratios
            .iter()
            .find(|(c, _)| *c == contender)
            .map_or(f64::NAN, |(_, m)| *m)
    }
}

async fn measure(targets: &Targets, callers: usize, per_caller: usize) -> Row {
    for contender in Contender::ALL {
        targets.run(contender, callers, per_caller / 10).await;
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); Contender::ALL.len()];
    for round in 0..ROUNDS {
        for i in 0..Contender::ALL.len() {
            let at = (round + i) % Contender::ALL.len();
            let rate = targets.run(Contender::ALL[at], callers, per_caller).await;
            results[at].push(rate);
        }
    }
    let wharf = &results[0];
    let medians = Contender::ALL
        .iter()
        .zip(&results)
        .map(|(c, r)| (*c, median(r)))
        .collect();
    let round_ratios = Contender::ALL
        .iter()
        .zip(&results)
        .map(|(c, r)| {
            let ratios: Vec<f64> = wharf.iter().zip(r).map(|(w, b)| w / b).collect();
            (*c, median(&ratios))
        })
        .collect();
    Row {
        callers,
        per_caller,
        medians,
        round_ratios,
    }
}

fn entries(rows: &[Row]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for row in rows {
        let callers = row.callers;
        let base_name = format!(
            "core-mailbox/{callers}-caller{}",
            if callers == 1 { "" } else { "s" }
        );
        for baseline in &Contender::ALL[1..] {
            let name = match baseline {
                Contender::Bare => base_name.clone(),
                other => format!("{base_name}/vs-{}", other.key()),
            };
            let entry = Entry {
                name,
                metric: "round_trips_per_second".into(),
                unit: "round trips/s".into(),
                higher_is_better: true,
                ours: row.median_of(Contender::Wharf).round(),
                baseline: row.median_of(*baseline).round(),
                baseline_label: baseline.label().into(),
                params: json!({
                    "callers": callers,
                    "round_trips_per_round": callers * row.per_caller,
                    "rounds": ROUNDS,
                    "statistic": "median of rounds; rounds alternate the contenders",
                    "median_of_per_round_ratios": row.round_ratio_of(*baseline),
                    "mailbox_capacity": CAPACITY,
                    "call_timeout_s": CALL_TIMEOUT.as_secs(),
                    "runtime": "tokio multi_thread, 2 workers",
                }),
            };
            out.push(entry.to_json());
        }
    }
    out
}

fn print_table(rows: &[Row]) {
    print!("{:<58}", "contender");
    for row in rows {
        print!(
            " {:>13} {:>7}",
            format!("{} caller(s)", row.callers),
            "wharf/x"
        );
    }
    println!();
    for contender in Contender::ALL {
        print!("{:<58}", contender.label());
        for row in rows {
            let rate = row.median_of(contender);
            let ratio = row.median_of(Contender::Wharf) / rate;
            print!(" {rate:>13.0} {ratio:>7.3}");
        }
        println!();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One contender alone, for instruction counts.
fn profile(only: &str) {
    let contender = Contender::ALL
        .into_iter()
        .find(|c| c.key() == only)
        .unwrap_or_else(|| panic!("CORE_MAILBOX_ONLY: no contender `{only}`"));
    let calls: usize = std::env::var("CORE_MAILBOX_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let callers: usize = std::env::var("CORE_MAILBOX_CALLERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let rate = runtime().block_on(async {
        let (targets, sup) = start_targets().await;
        let rate = targets.run(contender, callers, calls / callers).await;
        sup.shutdown().await.unwrap();
        rate
    });
    println!(
        "{}: {calls} calls, {rate:.0} round trips/s",
        contender.key()
    );
}

fn main() {
    if std::env::var("CORE_MAILBOX_ONLY").as_deref() == Ok("lateness") {
        let [ours, tokio_timer] = runtime().block_on(measure_lateness());
        println!(
            "lateness (p50 / p99 / max, us): wharf {ours:.0?}; tokio::time::timeout {tokio_timer:.0?}"
        );
        return;
    }
    if let Ok(only) = std::env::var("CORE_MAILBOX_ONLY") {
        profile(&only);
        return;
    }
    let (rows, lateness) = runtime().block_on(async {
        let (targets, sup) = start_targets().await;
        let mut rows = Vec::new();
        for (callers, per_caller) in [(1_usize, 100_000_usize), (16, 10_000)] {
            rows.push(measure(&targets, callers, per_caller).await);
        }
        sup.shutdown().await.unwrap();
        (rows, measure_lateness().await)
    });
    print_table(&rows);
    let [ours, tokio_timer] = lateness;
    println!(
        "lateness after a {LATE_TIMEOUT:?} deadline, {LATE_CALLERS} callers x {LATE_CALLS} calls \
         (p50 / p99 / max, us): wharf {:.0} / {:.0} / {:.0}; tokio::time::timeout {:.0} / {:.0} / {:.0}",
        ours.0, ours.1, ours.2, tokio_timer.0, tokio_timer.1, tokio_timer.2
    );
    let mut report = entries(&rows);
    report.push(
        Entry {
            name: "core-mailbox/deadline-lateness-p99".into(),
            metric: "microseconds_past_the_deadline".into(),
            unit: "µs".into(),
            higher_is_better: false,
            ours: ours.1.round(),
            baseline: tokio_timer.1.round(),
            baseline_label: "tokio::time::timeout around a bare mpsc + oneshot call".into(),
            params: json!({
                "callers": LATE_CALLERS,
                "calls_per_caller": LATE_CALLS,
                "call_timeout_ms": LATE_TIMEOUT.as_millis(),
                "service": "takes every request and never answers",
                "ours_p50_max_us": [ours.0.round(), ours.2.round()],
                "baseline_p50_max_us": [tokio_timer.0.round(), tokio_timer.2.round()],
                "runtime": "tokio multi_thread, 2 workers",
            }),
        }
        .to_json(),
    );
    let out = std::env::var(bench::OUT_VAR)
        .unwrap_or_else(|_| "target/wharf-bench/core-mailbox.json".to_owned());
    bench::write_report_to(std::path::Path::new(&out), &report).unwrap();
    println!("wrote {out}");
}
