//! The job-partition checker: judges a nemesis run's history (enqueues, cancels and every run
//! of a job, from every process; the nemesis's faults) and Redis's final state against the
//! crate's promises:
//!
//! - every acknowledged enqueue is stored once and ends completed, dead or cancelled; a job
//!   is stored only if an enqueue asked for it, and never after a `Duplicate` answer;
//! - each final state matches the history: `completed` only after a run that succeeded,
//!   `dead` only at `max_attempts`, `cancelled` only after a cancel; a cancel answered
//!   `Cancelled` is final and no run starts after it;
//! - never two runs of one execution key at once, nor of one job: the overlap is measured
//!   between run start and end as the job's own code saw them (`perform` started; it returned
//!   or its future was dropped; a killed process's runs end when it was killed), on the
//!   machine's monotonic clock, as `tests/partition.rs` measures it;
//! - the queue's global limit is never exceeded by runs at once;
//! - queue keys unique: two jobs of one queue key never live at once (enqueue to finish);
//! - a job starts at most max_attempts times, no two runs share an attempt number, and Redis
//!   counts at most one claim more (the claim that finds the last attempt cut short and sends
//!   the job to the dead set without starting it; docs/job-partition.md, "Attempts");
//! - nothing left locked or queued at the end (execution locks, waiters, queue keys, queue
//!   sets), and every run ended.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use wharf_job_partition::Jobs;
use wharf_testkit::{Event, EventType};

/// What the workload configured.
#[derive(Debug, Clone)]
pub struct Expect {
    pub limit: u32,
    pub max_attempts: u32,
}

/// One job as Redis holds it at the end.
#[derive(Debug, Clone)]
pub struct RedisJob {
    pub id: String,
    pub state: String,
    pub attempts: u32,
    pub n: u64,
    pub qkey: String,
    pub xkey: String,
    pub enq_at: u64,
    pub fin_at: Option<u64>,
}

/// Redis at the end of the run.
#[derive(Debug, Clone, Default)]
pub struct RedisState {
    pub jobs: Vec<RedisJob>,
    /// Execution locks, execution waiters and queue keys still present.
    pub locked: Vec<String>,
    /// Sizes of the queue's wait, delayed, active and parked sets.
    pub queue_sets: Vec<(String, u64)>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub operations: usize,
    pub by_op: BTreeMap<String, usize>,
    pub faults: usize,
    pub fault_kinds: BTreeMap<String, usize>,
    pub final_states: BTreeMap<String, usize>,
    pub max_running: usize,
    pub max_overlap_ms: f64,
    pub aborted_runs: usize,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "checker: {} operations {:?}; {} faults {:?}; final states {:?}; at most {} runs at once; \
             {} runs aborted; largest overlap of one key or job {:.1} ms; {} violation(s)",
            self.operations,
            self.by_op,
            self.faults,
            self.fault_kinds,
            self.final_states,
            self.max_running,
            self.aborted_runs,
            self.max_overlap_ms,
            self.violations.len()
        )
    }
}

async fn raw<T: redis::FromRedisValue>(jobs: &Jobs, cmd: &mut redis::Cmd) -> T {
    let v = jobs.raw(cmd).await.unwrap();
    redis::FromRedisValue::from_redis_value(v).unwrap()
}

/// Reads every job of partition `p` and what is left locked or queued.
pub async fn read_redis(jobs: &Jobs, p: &str, queue: &str) -> RedisState {
    let prefix = format!("{{wharf:{p}}}:");
    let keys: Vec<String> = raw(jobs, redis::cmd("KEYS").arg(format!("{prefix}job:*"))).await;
    let mut state = RedisState::default();
    for key in keys {
        let h: HashMap<String, String> = raw(jobs, redis::cmd("HGETALL").arg(&key)).await;
        let get = |f: &str| h.get(f).cloned().unwrap_or_default();
        let args: Value = serde_json::from_str(&get("args")).unwrap_or(Value::Null);
        state.jobs.push(RedisJob {
            id: key.trim_start_matches(&format!("{prefix}job:")).to_owned(),
            state: get("state"),
            attempts: get("attempts").parse().unwrap_or(0),
            n: args["n"].as_u64().unwrap_or(0),
            qkey: get("qkey"),
            xkey: get("xkey"),
            enq_at: get("enq_at").parse().unwrap_or(0),
            fin_at: get("fin_at").parse().ok(),
        });
    }
    for pattern in ["xlock:*", "xwait:*", "qkey:*"] {
        let left: Vec<String> =
            raw(jobs, redis::cmd("KEYS").arg(format!("{prefix}{pattern}"))).await;
        state.locked.extend(left);
    }
    for set in ["wait", "delayed", "active", "parked"] {
        let n: u64 = raw(
            jobs,
            redis::cmd("ZCARD").arg(format!("{prefix}q:{queue}:{set}")),
        )
        .await;
        state.queue_sets.push((set.to_owned(), n));
    }
    state
}

#[derive(Debug, Clone)]
struct Run {
    op: String,
    process: String,
    id: String,
    n: u64,
    attempt: u32,
    xkey: Option<String>,
    start: u64,
    end: Option<u64>,
    /// ok, fail, aborted, killed
    how: &'static str,
}

#[derive(Debug, Clone)]
struct Call {
    invoke: Event,
    done: Option<Event>,
}

/// Judges `events` (every process's, merged) and Redis's final `state`.
pub fn check(events: &[Event], state: &RedisState, expect: &Expect) -> Outcome {
    let mut out = Outcome::default();
    let mut v = Vec::new();

    // Pair invokes with their completions.
    let mut calls: BTreeMap<String, Call> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // Moments processes were killed: (target name, mono ns).
    let mut kills: Vec<(String, u64)> = Vec::new();
    for e in events {
        match e.kind {
            EventType::Invoke => {
                out.operations += 1;
                *out.by_op.entry(e.f.clone()).or_default() += 1;
                order.push(e.op.clone());
                calls.insert(
                    e.op.clone(),
                    Call {
                        invoke: e.clone(),
                        done: None,
                    },
                );
            }
            _ => {
                let Some(call) = calls.get_mut(&e.op) else {
                    v.push(format!("a completion without its invoke: {e:?}"));
                    continue;
                };
                if e.f == "fault" {
                    if e.value["applied"] == Value::Bool(true) {
                        let kind = call.invoke.value["kind"].as_str().unwrap_or("").to_owned();
                        out.faults += 1;
                        *out.fault_kinds.entry(kind.clone()).or_default() += 1;
                        if kind == "kill" {
                            let target = call.invoke.value["target"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned();
                            kills.push((target, e.mono_ns));
                        }
                    }
                    continue;
                }
                if call.done.is_none() {
                    call.done = Some(e.clone());
                } else {
                    v.push(format!("operation {} completed twice: {e:?}", e.op));
                }
            }
        }
    }

    // Runs.
    let mut runs = Vec::new();
    for op in &order {
        let call = &calls[op];
        if call.invoke.f != "run" {
            continue;
        }
        let i = &call.invoke;
        let base = i.process.split('.').next().unwrap_or("").to_owned();
        let mut run = Run {
            op: op.clone(),
            process: i.process.clone(),
            id: i.value["id"].as_str().unwrap_or("").to_owned(),
            n: i.value["n"].as_u64().unwrap_or(0),
            attempt: i.value["attempt"].as_u64().unwrap_or(0) as u32,
            xkey: i.value["xkey"].as_str().map(str::to_owned),
            start: i.mono_ns,
            end: None,
            how: "open",
        };
        match &call.done {
            Some(d) => {
                run.end = Some(d.mono_ns);
                run.how = match d.kind {
                    EventType::Ok => "ok",
                    EventType::Fail => "fail",
                    _ => "aborted",
                };
            }
            None => {
                // Its process was killed: the run ended then.
                if let Some((_, at)) = kills
                    .iter()
                    .find(|(target, at)| *target == base && *at >= run.start)
                {
                    run.end = Some(*at);
                    run.how = "killed";
                }
            }
        }
        if run.how == "aborted" || run.how == "killed" {
            out.aborted_runs += 1;
        }
        if run.end.is_none() {
            v.push(format!(
                "run of job {} (n {}, attempt {}) on {} never ended and its process was not killed",
                run.id, run.n, run.attempt, run.process
            ));
        }
        runs.push(run);
    }

    check_overlaps(&runs, &mut out, &mut v);
    check_limit(&runs, expect, &mut out, &mut v);
    check_jobs(&calls, &order, &runs, state, expect, &mut out, &mut v);

    for key in &state.locked {
        v.push(format!("left locked at the end: {key}"));
    }
    for (set, n) in &state.queue_sets {
        if *n > 0 {
            v.push(format!(
                "{n} job(s) left in the queue's {set} set at the end"
            ));
        }
    }
    out.violations = v;
    out
}

/// Never two runs of one execution key, or of one job, at once.
fn check_overlaps(runs: &[Run], out: &mut Outcome, v: &mut Vec<String>) {
    let mut groups: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        groups.entry(format!("job {}", r.id)).or_default().push(r);
        if let Some(x) = &r.xkey {
            groups
                .entry(format!("execution key {x}"))
                .or_default()
                .push(r);
        }
    }
    for (what, mut group) in groups {
        group.sort_by_key(|r| r.start);
        let mut latest: Option<&Run> = None;
        for r in group {
            if let Some(prev) = latest {
                let prev_end = prev.end.unwrap_or(u64::MAX);
                if r.start < prev_end {
                    let overlap_ms =
                        (prev_end.min(r.end.unwrap_or(u64::MAX)) - r.start) as f64 / 1e6;
                    out.max_overlap_ms = out.max_overlap_ms.max(overlap_ms);
                    v.push(format!(
                        "two runs of {what} at once for {overlap_ms:.1} ms: job {} attempt {} on {} ({}) \
                         and job {} attempt {} on {} ({})",
                        prev.id, prev.attempt, prev.process, prev.how, r.id, r.attempt, r.process, r.how
                    ));
                }
                if r.end.unwrap_or(u64::MAX) > prev_end {
                    latest = Some(r);
                }
            } else {
                latest = Some(r);
            }
        }
    }
}

/// The queue's global limit: runs at once, across processes.
fn check_limit(runs: &[Run], expect: &Expect, out: &mut Outcome, v: &mut Vec<String>) {
    // (time, +1 start / -1 end); ends sort before starts at the same instant.
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for r in runs {
        edges.push((r.start, 1));
        edges.push((r.end.unwrap_or(u64::MAX), -1));
    }
    edges.sort();
    let (mut now, mut max, mut at) = (0i64, 0i64, 0u64);
    for (t, d) in edges {
        now += d;
        if now > max {
            max = now;
            at = t;
        }
    }
    out.max_running = max as usize;
    if max > i64::from(expect.limit) {
        v.push(format!(
            "{max} runs at once (at monotonic {at} ns); the queue's limit is {}",
            expect.limit
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn check_jobs(
    calls: &BTreeMap<String, Call>,
    order: &[String],
    runs: &[Run],
    state: &RedisState,
    expect: &Expect,
    out: &mut Outcome,
    v: &mut Vec<String>,
) {
    let mut by_n: HashMap<u64, Vec<&RedisJob>> = HashMap::new();
    let by_id: HashMap<&str, &RedisJob> = state.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    for j in &state.jobs {
        by_n.entry(j.n).or_default().push(j);
        *out.final_states.entry(j.state.clone()).or_default() += 1;
        if !matches!(j.state.as_str(), "completed" | "dead" | "cancelled") {
            v.push(format!(
                "job {} (n {}) left in state {}",
                j.id, j.n, j.state
            ));
        }
        // A claim counts an attempt; a job claimed after its last allowed attempt was cut
        // short goes to the dead set without starting, so Redis may count one more attempt
        // than max_attempts (the runs are checked against max_attempts below).
        if j.attempts > expect.max_attempts + 1 {
            v.push(format!(
                "job {} (n {}) was claimed {} times; max_attempts is {}",
                j.id, j.n, j.attempts, expect.max_attempts
            ));
        }
        if j.state == "dead" && j.attempts < expect.max_attempts {
            v.push(format!(
                "job {} (n {}) is dead after {} attempt(s), before max_attempts {}",
                j.id, j.n, j.attempts, expect.max_attempts
            ));
        }
    }
    let mut runs_of: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in runs {
        runs_of.entry(r.id.as_str()).or_default().push(r);
    }

    // Enqueues.
    let mut asked: HashMap<u64, &Call> = HashMap::new();
    for op in order {
        let call = &calls[op];
        if call.invoke.f != "enqueue" {
            continue;
        }
        let n = call.invoke.value["n"].as_u64().unwrap_or(0);
        asked.insert(n, call);
        let stored = by_n.get(&n).map(Vec::as_slice).unwrap_or(&[]);
        if stored.len() > 1 {
            v.push(format!("job n {n} stored {} times", stored.len()));
        }
        let Some(done) = &call.done else {
            v.push(format!("enqueue of n {n} never completed in the history"));
            continue;
        };
        match done.kind {
            EventType::Ok => {
                if let Some(id) = done.value["id"].as_str() {
                    if !stored.iter().any(|j| j.id == id) {
                        v.push(format!(
                            "enqueue of n {n} answered Queued({id}) but Redis has no such job (lost)"
                        ));
                    }
                } else if let Some(holder) = done.value["duplicate_of"].as_str() {
                    if !stored.is_empty() {
                        v.push(format!(
                            "enqueue of n {n} answered Duplicate({holder}) but the job was stored"
                        ));
                    }
                    let qkey = call.invoke.value["qkey"].as_str().unwrap_or("");
                    if let Some(h) = by_id.get(holder)
                        && h.qkey != qkey
                    {
                        v.push(format!(
                            "enqueue of n {n} with queue key {qkey} answered Duplicate({holder}), \
                             which holds queue key {:?}",
                            h.qkey
                        ));
                    }
                }
            }
            EventType::Fail if !stored.is_empty() => {
                v.push(format!("enqueue of n {n} failed but the job was stored"));
            }
            _ => {}
        }
    }
    for j in &state.jobs {
        if !asked.contains_key(&j.n) {
            v.push(format!(
                "job {} (n {}) is in Redis but no enqueue asked for it",
                j.id, j.n
            ));
        }
    }

    // Final states against the history.
    let mut cancels: HashMap<&str, Vec<&Call>> = HashMap::new();
    for op in order {
        let call = &calls[op];
        if call.invoke.f == "cancel"
            && let Some(id) = call.invoke.value["id"].as_str()
        {
            cancels.entry(id).or_default().push(call);
        }
    }
    for j in &state.jobs {
        let mine = runs_of.get(j.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        match j.state.as_str() {
            "completed" if !mine.iter().any(|r| r.how == "ok") => v.push(format!(
                "job {} (n {}) is completed but none of its {} run(s) succeeded",
                j.id,
                j.n,
                mine.len()
            )),
            "cancelled" if !cancels.contains_key(j.id.as_str()) => v.push(format!(
                "job {} (n {}) is cancelled but nobody cancelled it",
                j.id, j.n
            )),
            _ => {}
        }
        if mine.len() as u32 > j.attempts {
            v.push(format!(
                "job {} (n {}) ran {} times but Redis counts {} attempt(s)",
                j.id,
                j.n,
                mine.len(),
                j.attempts
            ));
        }
        if mine.len() as u32 > expect.max_attempts {
            v.push(format!(
                "job {} (n {}) started {} times; max_attempts is {}",
                j.id,
                j.n,
                mine.len(),
                expect.max_attempts
            ));
        }
        let mut seen = BTreeMap::new();
        for r in mine {
            if r.attempt > expect.max_attempts {
                v.push(format!(
                    "job {} ran attempt {} > max_attempts {}",
                    j.id, r.attempt, expect.max_attempts
                ));
            }
            if let Some(other) = seen.insert(r.attempt, &r.process) {
                v.push(format!(
                    "job {} ran attempt {} twice (on {other} and {})",
                    j.id, r.attempt, r.process
                ));
            }
        }
        if let Some(cs) = cancels.get(j.id.as_str()) {
            for c in cs {
                let Some(done) = &c.done else { continue };
                if done.value["outcome"] != "cancelled" {
                    continue;
                }
                if j.state != "cancelled" {
                    v.push(format!(
                        "cancel of job {} answered Cancelled but it ended {}",
                        j.id, j.state
                    ));
                }
                if let Some(r) = mine.iter().find(|r| r.start > done.mono_ns) {
                    v.push(format!(
                        "job {} ran (attempt {} on {}) after its cancel answered Cancelled",
                        j.id, r.attempt, r.process
                    ));
                }
            }
        }
    }

    // Queue keys: two jobs of one key never live at once (enqueue to finish, Redis clock).
    let mut by_qkey: BTreeMap<&str, Vec<&RedisJob>> = BTreeMap::new();
    for j in state.jobs.iter().filter(|j| !j.qkey.is_empty()) {
        by_qkey.entry(j.qkey.as_str()).or_default().push(j);
    }
    for (key, mut jobs) in by_qkey {
        jobs.sort_by_key(|j| j.enq_at);
        for pair in jobs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.enq_at < a.fin_at.unwrap_or(u64::MAX) {
                v.push(format!(
                    "queue key {key} held by two jobs at once: {} (enqueued {}, finished {:?}) and {} (enqueued {})",
                    a.id, a.enq_at, a.fin_at, b.id, b.enq_at
                ));
            }
        }
    }
}
