//! A seeded nemesis: random faults at random moments for random durations, bounded in count
//! and in time, through [`FaultProxy`]s and on processes, replayable from its seed.
//!
//! A [`Plan`] says which faults may hit which target and within which bounds; from a seed it
//! computes a [`Schedule`] up front (same seed, same plan: same schedule, which prints as a
//! table). [`Schedule::run`] then applies each fault at its moment, heals it after its
//! duration, and records both in a [`History`]. Faults never overlap: each is healed before
//! the next starts, and everything is healed when the run ends or is stopped.
//!
//! | fault | effect | healed by |
//! |---|---|---|
//! | `cut` | the proxy closes its open connections | (instant) |
//! | `refuse` | the proxy refuses new connections | listening again |
//! | `down` | both: the broker looks dead | listening again |
//! | `hold` | the proxy holds bytes silently both ways (a partition) | release |
//! | `hold-requests` / `hold-answers` | one direction only | release |
//! | `latency` | every chunk delayed both ways | no delay |
//! | `answer-late` | answers delayed (requests take effect, the client may time out) | no delay |
//! | `pause` | SIGSTOP on a process | SIGCONT |
//! | `kill` | SIGKILL on a process | restart on the same port (a [`Victim`]'s `restart`) |
//!
//! ```no_run
//! # fn main() -> wharf_testkit::Result<()> {
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use std::time::Duration;
//! use wharf_testkit::nemesis::{self, FaultKind, Plan, Targets};
//! let redis = Arc::new(wharf_testkit::RedisServer::start()?);
//! let proxy = Arc::new(wharf_testkit::FaultProxy::start(redis.direct_addr())?);
//! let seed = nemesis::seed(); // WHARF_NEMESIS_SEED or random; printed
//! let plan = Plan::new(Duration::from_secs(20))
//!     .proxy_faults(0, &[FaultKind::Cut, FaultKind::Hold, FaultKind::AnswerLate])
//!     .process_faults(0, &[FaultKind::Pause], Duration::from_millis(500));
//! let schedule = plan.schedule(seed);
//! eprintln!("{schedule}");
//! let history = wharf_testkit::History::new("example", seed);
//! let targets = Targets::new().proxy(proxy).process(redis);
//! let report = schedule.run(&targets, &history, &AtomicBool::new(false))?;
//! # let _ = report; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::error::{Error, Result};
use crate::history::History;
use crate::kafka::Tansu;
use crate::proxy::{Direction, FaultProxy};
use crate::redis::RedisServer;
use crate::spawner;

/// The variable holding a seed to replay.
pub const SEED_VAR: &str = "WHARF_NEMESIS_SEED";
/// The variable holding how long a nemesis run lasts, in minutes (decimals allowed).
pub const MINUTES_VAR: &str = "WHARF_NEMESIS_MINUTES";

/// How often a running schedule checks its stop flag while it waits.
const TICK: Duration = Duration::from_millis(20);

/// The seed of this run: `$WHARF_NEMESIS_SEED`, or a random one. Printed to stderr either
/// way, with the line that replays it.
pub fn seed() -> u64 {
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    eprintln!("nemesis seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}

/// How long a run lasts: `$WHARF_NEMESIS_MINUTES` when set (a long run from
/// `scripts/nemesis`), else `default` (the short pass of `cargo test`).
pub fn run_length(default: Duration) -> Duration {
    std::env::var(MINUTES_VAR)
        .ok()
        .and_then(|m| m.trim().parse::<f64>().ok())
        .filter(|m| m.is_finite() && *m > 0.0)
        .map(|m| Duration::from_secs_f64(m * 60.0))
        .unwrap_or(default)
}

/// A kind of fault; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// Close the proxy's open connections.
    Cut,
    /// Refuse new connections.
    Refuse,
    /// Refuse new connections and close open ones.
    Down,
    /// Hold bytes silently, both directions.
    Hold,
    /// Hold the client's requests only.
    HoldRequests,
    /// Hold the broker's answers only (requests still take effect).
    HoldAnswers,
    /// Delay every chunk, both directions.
    Latency,
    /// Delay the answers only.
    AnswerLate,
    /// SIGSTOP a process, SIGCONT at the end.
    Pause,
    /// SIGKILL a process, restart it at the end.
    Kill,
}

impl FaultKind {
    /// Every kind that acts through a proxy.
    pub const PROXY: [FaultKind; 8] = [
        FaultKind::Cut,
        FaultKind::Refuse,
        FaultKind::Down,
        FaultKind::Hold,
        FaultKind::HoldRequests,
        FaultKind::HoldAnswers,
        FaultKind::Latency,
        FaultKind::AnswerLate,
    ];

    /// Its name in schedules and histories.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Cut => "cut",
            FaultKind::Refuse => "refuse",
            FaultKind::Down => "down",
            FaultKind::Hold => "hold",
            FaultKind::HoldRequests => "hold-requests",
            FaultKind::HoldAnswers => "hold-answers",
            FaultKind::Latency => "latency",
            FaultKind::AnswerLate => "answer-late",
            FaultKind::Pause => "pause",
            FaultKind::Kill => "kill",
        }
    }

    fn on_process(self) -> bool {
        matches!(self, FaultKind::Pause | FaultKind::Kill)
    }
}

/// What a fault hits: a proxy or a process, by its index in the [`Targets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The n-th proxy.
    Proxy(usize),
    /// The n-th process.
    Process(usize),
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// How long it lasts before it is healed.
    pub duration: Duration,
    /// What it does.
    pub kind: FaultKind,
    /// What it hits.
    pub target: Target,
    /// The added delay, for [`FaultKind::Latency`] and [`FaultKind::AnswerLate`].
    pub latency: Duration,
}

#[derive(Debug, Clone)]
struct Choice {
    kind: FaultKind,
    target: Target,
    max_duration: Option<Duration>,
}

/// Which faults may hit which target, and the bounds of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    run_for: Duration,
    max_faults: usize,
    max_fault_time: Duration,
    duration: (Duration, Duration),
    gap: (Duration, Duration),
    latency: (Duration, Duration),
    choices: Vec<Choice>,
}

impl Plan {
    /// A plan for a run of `run_for`, with no fault yet. Defaults: faults of 0.2 to 4 s,
    /// 0.1 to 2 s apart, at most one per second of the run and half the run in faults,
    /// latencies of 50 ms to 1.5 s.
    pub fn new(run_for: Duration) -> Self {
        Plan {
            run_for,
            max_faults: usize::try_from(run_for.as_secs())
                .unwrap_or(usize::MAX)
                .max(1),
            max_fault_time: run_for / 2,
            duration: (Duration::from_millis(200), Duration::from_secs(4)),
            gap: (Duration::from_millis(100), Duration::from_secs(2)),
            latency: (Duration::from_millis(50), Duration::from_millis(1500)),
            choices: Vec::new(),
        }
    }

    /// At most `n` faults.
    pub fn max_faults(mut self, n: usize) -> Self {
        self.max_faults = n;
        self
    }

    /// At most `total` of the run spent with a fault in effect.
    pub fn max_fault_time(mut self, total: Duration) -> Self {
        self.max_fault_time = total;
        self
    }

    /// Each fault lasts between `min` and `max`.
    pub fn fault_duration(mut self, min: Duration, max: Duration) -> Self {
        self.duration = (min, max.max(min));
        self
    }

    /// Between two faults, between `min` and `max` of calm.
    pub fn gap(mut self, min: Duration, max: Duration) -> Self {
        self.gap = (min, max.max(min));
        self
    }

    /// Latency faults add between `min` and `max`.
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency = (min, max.max(min));
        self
    }

    /// Proxy `proxy` (index in the [`Targets`]) may suffer each of `kinds` (process kinds
    /// are ignored here).
    pub fn proxy_faults(mut self, proxy: usize, kinds: &[FaultKind]) -> Self {
        for kind in kinds.iter().filter(|k| !k.on_process()) {
            self.choices.push(Choice {
                kind: *kind,
                target: Target::Proxy(proxy),
                max_duration: None,
            });
        }
        self
    }

    /// Process `process` may be paused or killed (`kinds` among [`FaultKind::Pause`],
    /// [`FaultKind::Kill`]), each time for at most `max_duration` (a pause longer than a
    /// lease, say, may break a promise that only holds for shorter ones).
    pub fn process_faults(
        mut self,
        process: usize,
        kinds: &[FaultKind],
        max_duration: Duration,
    ) -> Self {
        for kind in kinds.iter().filter(|k| k.on_process()) {
            self.choices.push(Choice {
                kind: *kind,
                target: Target::Process(process),
                max_duration: Some(max_duration),
            });
        }
        self
    }

    /// The schedule for `seed`: the same seed gives the same schedule.
    pub fn schedule(&self, seed: u64) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut faults = Vec::new();
        let mut at = Duration::ZERO;
        let mut budget = self.max_fault_time;
        while faults.len() < self.max_faults && !self.choices.is_empty() {
            at += between(&mut rng, self.gap);
            let choice = &self.choices[rng.random_range(0..self.choices.len())];
            let mut range = self.duration;
            if let Some(max) = choice.max_duration {
                range = (range.0.min(max), range.1.min(max));
            }
            let duration = between(&mut rng, range).min(budget);
            let latency = between(&mut rng, self.latency);
            if duration.is_zero() || at + duration > self.run_for {
                break;
            }
            faults.push(Fault {
                at,
                duration,
                kind: choice.kind,
                target: choice.target,
                latency,
            });
            budget -= duration;
            at += duration;
        }
        Schedule {
            seed,
            run_for: self.run_for,
            faults,
        }
    }
}

fn between(rng: &mut StdRng, (min, max): (Duration, Duration)) -> Duration {
    if max <= min {
        return min;
    }
    let span = u64::try_from((max - min).as_micros()).unwrap_or(u64::MAX);
    min + Duration::from_micros(rng.random_range(0..=span))
}

/// The faults of one run, computed up front from a seed by [`Plan::schedule`].
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The seed it was computed from.
    pub seed: u64,
    /// How long the run lasts.
    pub run_for: Duration,
    /// The faults, in order, never overlapping.
    pub faults: Vec<Fault>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nemesis schedule (seed {}, {} faults over {:?}):",
            self.seed,
            self.faults.len(),
            self.run_for
        )?;
        for fault in &self.faults {
            write!(
                f,
                "  at {:>8.3}s for {:>6.3}s  {:<13} {:?}",
                fault.at.as_secs_f64(),
                fault.duration.as_secs_f64(),
                fault.kind.name(),
                fault.target
            )?;
            if matches!(fault.kind, FaultKind::Latency | FaultKind::AnswerLate) {
                write!(f, " +{:?}", fault.latency)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A process the nemesis may pause (SIGSTOP), kill (SIGKILL) and restart.
pub trait Victim: Send + Sync + fmt::Debug {
    /// Its name in histories.
    fn name(&self) -> String;
    /// Its process id while it runs.
    fn pid(&self) -> Option<u32>;
    /// Kills it with SIGKILL and reaps it.
    fn kill(&self) -> Result<()>;
    /// Starts it again (on the same port, for a broker) and returns once it is ready.
    fn restart(&self) -> Result<()>;
}

impl Victim for RedisServer {
    fn name(&self) -> String {
        format!("redis-server:{}", self.port())
    }
    fn pid(&self) -> Option<u32> {
        RedisServer::pid(self)
    }
    fn kill(&self) -> Result<()> {
        RedisServer::kill(self)
    }
    fn restart(&self) -> Result<()> {
        RedisServer::restart(self)
    }
}

/// Tansu: paused, killed and restarted on the same port (and behind the same proxy). Only a
/// durable one ([`Tansu::start_durable`]) keeps its topics and offsets across a kill.
impl Victim for Tansu {
    fn name(&self) -> String {
        format!("tansu:{}", self.port())
    }
    fn pid(&self) -> Option<u32> {
        Tansu::pid(self)
    }
    fn kill(&self) -> Result<()> {
        Tansu::kill(self)
    }
    fn restart(&self) -> Result<()> {
        Tansu::restart(self)
    }
}

/// A child process started from a command-line maker, which the nemesis may kill and start
/// again (a worker process of the system under test, say). Killed on drop, and by the kernel
/// when the test binary dies.
pub struct RespawningChild {
    name: String,
    make: Box<dyn Fn(u32) -> Command + Send + Sync>,
    incarnation: Mutex<u32>,
    child: Mutex<Option<Child>>,
}

impl fmt::Debug for RespawningChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespawningChild")
            .field("name", &self.name)
            .field("pid", &Victim::pid(self))
            .finish_non_exhaustive()
    }
}

impl RespawningChild {
    /// Starts `make(0)`; each restart runs `make(n)` with the next incarnation number `n`.
    pub fn start(
        name: &str,
        make: impl Fn(u32) -> Command + Send + Sync + 'static,
    ) -> Result<Self> {
        let me = RespawningChild {
            name: name.to_owned(),
            make: Box::new(make),
            incarnation: Mutex::new(0),
            child: Mutex::new(None),
        };
        me.spawn(0)?;
        Ok(me)
    }

    fn spawn(&self, incarnation: u32) -> Result<()> {
        let child = spawner::spawn((self.make)(incarnation))
            .map_err(|e| Error::io(format!("starting {}", self.name), e))?;
        *lock(&self.child) = Some(child);
        Ok(())
    }

    /// Whether it has exited (reaping it if so).
    pub fn has_exited(&self) -> bool {
        !matches!(
            lock(&self.child).as_mut().map(Child::try_wait),
            Some(Ok(None))
        )
    }
}

impl Victim for RespawningChild {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }
    fn kill(&self) -> Result<()> {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| Error::io(format!("reaping {}", self.name), e))?;
        }
        Ok(())
    }
    fn restart(&self) -> Result<()> {
        Victim::kill(self)?;
        let next = {
            let mut n = lock(&self.incarnation);
            *n += 1;
            *n
        };
        self.spawn(next)
    }
}

impl Drop for RespawningChild {
    fn drop(&mut self) {
        let _ = Victim::kill(self);
    }
}

/// What a schedule acts on: proxies and processes, indexed in the order added.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    proxies: Vec<Arc<FaultProxy>>,
    processes: Vec<Arc<dyn Victim>>,
}

impl Targets {
    /// No target yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a proxy (the next [`Target::Proxy`] index).
    pub fn proxy(mut self, proxy: Arc<FaultProxy>) -> Self {
        self.proxies.push(proxy);
        self
    }

    /// Adds a process (the next [`Target::Process`] index).
    pub fn process(mut self, process: Arc<dyn Victim>) -> Self {
        self.processes.push(process);
        self
    }

    fn name(&self, target: Target) -> String {
        match target {
            Target::Proxy(i) => match self.proxies.get(i) {
                Some(p) => format!("proxy:{}", p.port()),
                None => format!("proxy#{i}"),
            },
            Target::Process(i) => match self.processes.get(i) {
                Some(p) => p.name(),
                None => format!("process#{i}"),
            },
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Faults applied (and healed).
    pub applied: usize,
    /// Faults that could not be applied or healed, with why.
    pub errors: Vec<String>,
    /// Faults applied, per kind name.
    pub by_kind: BTreeMap<&'static str, usize>,
    /// Time spent with a fault in effect.
    pub fault_time: Duration,
}

impl Schedule {
    /// Applies every fault at its moment and heals it after its duration, recording each as
    /// an operation `fault` of process `nemesis` in `history` (invoke before it is applied,
    /// info `{"applied": true}` once it took effect, ok when healed, fail when it could not be
    /// applied). Blocks until the run's end, or until `stop`
    /// is set (checked every 20 ms); everything is healed on return. Run it on a thread of its
    /// own (`std::thread::spawn`, `tokio::task::spawn_blocking`).
    pub fn run(&self, targets: &Targets, history: &History, stop: &AtomicBool) -> Result<Report> {
        let start = Instant::now();
        let mut report = Report::default();
        for fault in &self.faults {
            if !wait_until(start + fault.at, stop) {
                break;
            }
            let target = targets.name(fault.target);
            let value = json!({
                "kind": fault.kind.name(),
                "target": target,
                "at_ms": fault.at.as_millis() as u64,
                "duration_ms": fault.duration.as_millis() as u64,
                "latency_ms": fault.latency.as_millis() as u64,
            });
            let op = history.invoke("nemesis", "fault", value);
            let applied_at = Instant::now();
            if let Err(e) = apply(fault, targets) {
                history.fail(&op, "nemesis", "fault", json!({"error": e.to_string()}));
                report
                    .errors
                    .push(format!("{} on {target}: {e}", fault.kind.name()));
                let _ = heal(fault, targets);
                continue;
            }
            // When it took effect (a process killed and reaped, say): checkers close what the
            // process was doing at this moment.
            history.info(&op, "nemesis", "fault", json!({"applied": true}));
            wait_until(applied_at + fault.duration, stop);
            match heal(fault, targets) {
                Ok(()) => history.ok(&op, "nemesis", "fault", json!({"healed": true})),
                Err(e) => {
                    history.info(
                        &op,
                        "nemesis",
                        "fault",
                        json!({"heal_error": e.to_string()}),
                    );
                    report
                        .errors
                        .push(format!("healing {} on {target}: {e}", fault.kind.name()));
                }
            }
            report.applied += 1;
            *report.by_kind.entry(fault.kind.name()).or_default() += 1;
            report.fault_time += applied_at.elapsed();
        }
        wait_until(start + self.run_for, stop);
        Ok(report)
    }
}

/// Sleeps until `deadline`; false if `stop` was set first.
fn wait_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(TICK.min(deadline - now));
    }
}

fn proxy(targets: &Targets, target: Target) -> Result<&FaultProxy> {
    match target {
        Target::Proxy(i) => targets.proxies.get(i).map(|p| &**p),
        Target::Process(_) => None,
    }
    .ok_or_else(|| no_target(target))
}

fn process(targets: &Targets, target: Target) -> Result<&dyn Victim> {
    match target {
        Target::Process(i) => targets.processes.get(i).map(|p| &**p),
        Target::Proxy(_) => None,
    }
    .ok_or_else(|| no_target(target))
}

fn no_target(target: Target) -> Error {
    Error::Proxy {
        listen: "-".into(),
        upstream: "-".into(),
        reason: format!(
            "the nemesis plan names {target:?}, which the targets do not have: add it to Targets in the order of the plan's indices"
        ),
    }
}

fn apply(fault: &Fault, targets: &Targets) -> Result<()> {
    let t = fault.target;
    match fault.kind {
        FaultKind::Cut => proxy(targets, t)?.cut(),
        FaultKind::Refuse => proxy(targets, t)?.refuse(),
        FaultKind::Down => proxy(targets, t)?.down(),
        FaultKind::Hold => {
            proxy(targets, t)?.hold();
            Ok(())
        }
        FaultKind::HoldRequests => {
            proxy(targets, t)?.hold_direction(Direction::ToUpstream);
            Ok(())
        }
        FaultKind::HoldAnswers => {
            proxy(targets, t)?.hold_direction(Direction::ToClient);
            Ok(())
        }
        FaultKind::Latency => {
            proxy(targets, t)?.set_latency(fault.latency);
            Ok(())
        }
        FaultKind::AnswerLate => {
            proxy(targets, t)?.set_direction_latency(Direction::ToClient, fault.latency);
            Ok(())
        }
        FaultKind::Pause => signal(process(targets, t)?, libc::SIGSTOP),
        FaultKind::Kill => process(targets, t)?.kill(),
    }
}

fn heal(fault: &Fault, targets: &Targets) -> Result<()> {
    let t = fault.target;
    match fault.kind {
        FaultKind::Cut => Ok(()),
        FaultKind::Refuse | FaultKind::Down => proxy(targets, t)?.restore(),
        FaultKind::Hold | FaultKind::HoldRequests | FaultKind::HoldAnswers => {
            proxy(targets, t)?.release();
            Ok(())
        }
        FaultKind::Latency | FaultKind::AnswerLate => {
            proxy(targets, t)?.clear_latency();
            Ok(())
        }
        FaultKind::Pause => signal(process(targets, t)?, libc::SIGCONT),
        FaultKind::Kill => process(targets, t)?.restart(),
    }
}

fn signal(victim: &dyn Victim, sig: libc::c_int) -> Result<()> {
    let Some(pid) = victim.pid() else {
        return Ok(());
    };
    let pid = libc::pid_t::try_from(pid).map_err(|_| {
        Error::io(
            format!("signalling {}", victim.name()),
            std::io::Error::other("pid out of range"),
        )
    })?;
    // SAFETY: a plain kill(2) on the pid of a child the victim owns and has not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        return Err(Error::io(
            format!("sending signal {sig} to {} (pid {pid})", victim.name()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plan() -> Plan {
        Plan::new(Duration::from_secs(60))
            .proxy_faults(0, &FaultKind::PROXY)
            .process_faults(
                0,
                &[FaultKind::Pause, FaultKind::Kill],
                Duration::from_secs(1),
            )
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = plan().schedule(42);
        assert_eq!(a.faults, plan().schedule(42).faults);
        assert_ne!(a.faults, plan().schedule(43).faults);
        assert!(!a.faults.is_empty());
    }

    #[test]
    fn a_schedule_keeps_its_bounds() {
        for seed in 0..50 {
            let s = plan()
                .max_faults(20)
                .max_fault_time(Duration::from_secs(25))
                .schedule(seed);
            assert!(s.faults.len() <= 20, "{s}");
            let total: Duration = s.faults.iter().map(|f| f.duration).sum();
            assert!(total <= Duration::from_secs(25), "{s}");
            let mut end = Duration::ZERO;
            for f in &s.faults {
                assert!(f.at >= end, "faults overlap: {s}");
                end = f.at + f.duration;
                if let Target::Process(_) = f.target {
                    assert!(f.duration <= Duration::from_secs(1), "{s}");
                }
            }
            assert!(end <= Duration::from_secs(60), "{s}");
        }
    }

    #[test]
    fn a_run_applies_and_heals_each_fault_and_records_it() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Arc::new(FaultProxy::start(upstream.local_addr().unwrap()).unwrap());
        let schedule = Plan::new(Duration::from_millis(600))
            .fault_duration(Duration::from_millis(50), Duration::from_millis(100))
            .gap(Duration::from_millis(10), Duration::from_millis(20))
            .proxy_faults(0, &[FaultKind::Hold, FaultKind::Down])
            .schedule(7);
        let history = History::new("nemesis-unit", 7);
        let targets = Targets::new().proxy(Arc::clone(&proxy));
        let report = schedule
            .run(&targets, &history, &AtomicBool::new(false))
            .unwrap();
        assert_eq!(report.applied, schedule.faults.len());
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(!proxy.is_held());
        // Listening again after every `down`.
        std::net::TcpStream::connect(proxy.addr()).unwrap();
        let healed = history
            .events()
            .iter()
            .filter(|e| e.kind == crate::history::EventType::Ok)
            .count();
        assert_eq!(healed, schedule.faults.len());
    }
}
