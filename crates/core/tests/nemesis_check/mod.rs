//! The core checker: judges a nemesis run's history (calls through service handles; every
//! child's starts, runs and exits; supervisors' generations, escalations and shutdowns; the
//! nemesis's faults) against wharf-core's promises:
//!
//! - **every call resolves in time**: each call ends, with an answer or a typed error
//!   (`Timeout`, `ServiceCrashed`, `Stopped`), at most its timeout plus the stated slack after
//!   it began, and a `Timeout` never comes before the deadline; an answer comes from an
//!   incarnation of the service that was running during the call;
//! - **restarts follow the strategy**, replayed exit by exit: a child the supervisor stops
//!   (it saw its cancellation, or was aborted after its grace) is one the strategy covers
//!   after a sibling's restartable exit (one_for_all: every sibling; rest_for_one: those
//!   started after it; one_for_one: none), or the supervisor is shutting down or escalating;
//!   a restart starts only a child the strategy scheduled (a transient child that exited
//!   normally is not restarted alone); a group starts again only once every member it
//!   stopped has ended;
//! - **intensity**: counting restartable exits and failed restart setups in a sliding window
//!   of `period`, the supervisor escalates when the count exceeds `max_restarts`, and only
//!   then. The checker sees an exit when the child's code ended; the supervisor counts it when
//!   its loop gets to it, which can be later when the loop is busy (stopping a group, running
//!   a setup): counts within `margin` of the window's edge go either way.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use wharf_testkit::{Event, EventType};

/// What the workload configured.
#[derive(Debug, Clone)]
pub struct Expect {
    pub max_restarts: u32,
    pub period: Duration,
    pub slack: Duration,
    pub transient: usize,
    pub children: usize,
}

/// The uncertainty between a child's exit as the history records it and as its supervisor
/// counts it, on top of the time its loop spends running setups (measured from the history):
/// stopping a group (grace periods), scheduling on a loaded machine.
pub const MARGIN: Duration = Duration::from_millis(400);

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub operations: usize,
    pub by_op: BTreeMap<String, usize>,
    pub faults: usize,
    pub fault_kinds: BTreeMap<String, usize>,
    pub call_results: BTreeMap<String, usize>,
    /// The latest a call ended after its deadline, in ms.
    pub max_late_ms: f64,
    pub exits: BTreeMap<String, usize>,
    pub restarts: usize,
    pub generations: usize,
    pub escalations: usize,
    /// Intensity decisions judged exactly / left open (within the margin).
    pub intensity_exact: usize,
    pub intensity_open: usize,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "checker: {} operations {:?}; {} faults {:?}; calls {:?}, latest {:.1} ms after its \
             deadline; exits {:?}; {} restarts; {} supervisor generations, {} escalations; \
             intensity decisions {} exact, {} within the margin; {} violation(s)",
            self.operations,
            self.by_op,
            self.faults,
            self.fault_kinds,
            self.call_results,
            self.max_late_ms,
            self.exits,
            self.restarts,
            self.generations,
            self.escalations,
            self.intensity_exact,
            self.intensity_open,
            self.violations.len()
        )
    }
}

#[derive(Debug, Clone)]
struct Op {
    invoke: Event,
    done: Option<Event>,
}

impl Op {
    fn start(&self) -> u64 {
        self.invoke.mono_ns
    }
    fn end(&self) -> Option<u64> {
        self.done.as_ref().map(|d| d.mono_ns)
    }
    fn get(&self, field: &str) -> &Value {
        &self.invoke.value[field]
    }
    fn answer(&self, field: &str) -> Option<&str> {
        self.done.as_ref().and_then(|d| d.value[field].as_str())
    }
}

/// Judges a whole history.
pub fn check(events: &[Event], expect: &Expect) -> Outcome {
    let mut out = Outcome::default();
    let mut v = Vec::new();
    let mut ops: HashMap<&str, Op> = HashMap::new();
    let mut order = Vec::new();
    for e in events {
        if e.kind == EventType::Invoke {
            out.operations += 1;
            *out.by_op.entry(e.f.clone()).or_default() += 1;
            order.push(e.op.as_str());
            ops.insert(
                &e.op,
                Op {
                    invoke: e.clone(),
                    done: None,
                },
            );
            continue;
        }
        let Some(op) = ops.get_mut(e.op.as_str()) else {
            v.push(format!("a completion without its invoke: {e:?}"));
            continue;
        };
        if e.f == "fault" {
            if e.value["applied"] == Value::Bool(true) {
                out.faults += 1;
                let kind = op.invoke.value["kind"].as_str().unwrap_or("").to_owned();
                *out.fault_kinds.entry(kind).or_default() += 1;
            }
            continue;
        }
        if op.done.is_none() {
            op.done = Some(e.clone());
        } else {
            v.push(format!(
                "{} {} completed twice: {:?} then {:?}",
                e.f, e.op, op.done, e
            ));
        }
    }
    let ops: Vec<Op> = order.iter().map(|o| ops.remove(o).unwrap()).collect();
    let of = |f: &'static str| ops.iter().filter(move |o| o.invoke.f == f);

    // Runs, by (service, generation, incarnation).
    let mut runs: HashMap<(String, u64, u64), &Op> = HashMap::new();
    for r in of("run") {
        let svc = format!(
            "{}/c{}",
            r.get("sup").as_str().unwrap_or(""),
            r.get("child")
        );
        runs.insert(
            (
                svc,
                r.get("gen").as_u64().unwrap_or(0),
                r.get("inc").as_u64().unwrap_or(0),
            ),
            r,
        );
    }
    check_calls(of("call"), &runs, expect, &mut out, &mut v);

    // Supervisors, generation by generation.
    let mut gens: BTreeMap<(String, u64), Vec<&Op>> = BTreeMap::new();
    for o in &ops {
        if matches!(
            o.invoke.f.as_str(),
            "start" | "run" | "supervise" | "shutdown"
        ) {
            let key = (
                o.get("sup").as_str().unwrap_or("").to_owned(),
                o.get("gen").as_u64().unwrap_or(0),
            );
            gens.entry(key).or_default().push(o);
        }
    }
    for ((sup, generation), ops) in gens {
        check_generation(&sup, generation, &ops, expect, &mut out, &mut v);
    }
    out.violations = v;
    out
}

fn check_calls<'a>(
    calls: impl Iterator<Item = &'a Op>,
    runs: &HashMap<(String, u64, u64), &Op>,
    expect: &Expect,
    out: &mut Outcome,
    v: &mut Vec<String>,
) {
    for c in calls {
        let timeout = Duration::from_millis(c.get("timeout_ms").as_u64().unwrap_or(0));
        let svc = c.get("svc").as_str().unwrap_or("");
        let Some(end) = c.end() else {
            v.push(format!("call {} to {svc} never resolved", c.invoke.op));
            *out.call_results.entry("open".into()).or_default() += 1;
            continue;
        };
        let took = Duration::from_nanos(end - c.start());
        let done = c.done.as_ref().unwrap();
        let result = match done.kind {
            EventType::Ok => "ok",
            _ => done.value["error"].as_str().unwrap_or("?"),
        };
        *out.call_results.entry(result.to_owned()).or_default() += 1;
        if took > timeout {
            out.max_late_ms = out.max_late_ms.max((took - timeout).as_secs_f64() * 1e3);
        }
        if took > timeout + expect.slack {
            v.push(format!(
                "call {} to {svc} resolved ({result}) after {took:?}; its deadline was {timeout:?} \
                 (+{:?} slack)",
                c.invoke.op, expect.slack
            ));
        }
        match result {
            "timeout" if took + Duration::from_millis(1) < timeout => v.push(format!(
                "call {} to {svc} timed out after {took:?}, before its deadline {timeout:?}",
                c.invoke.op
            )),
            "other" => v.push(format!(
                "call {} to {svc} failed with an unexpected error: {:?}",
                c.invoke.op, done.value
            )),
            "ok" => {
                let by = done.value["by"].as_str().unwrap_or("").to_owned();
                let key = (
                    by.clone(),
                    done.value["gen"].as_u64().unwrap_or(0),
                    done.value["inc"].as_u64().unwrap_or(0),
                );
                if by != svc {
                    v.push(format!("call {} to {svc} answered by {by}", c.invoke.op));
                }
                match runs.get(&key) {
                    None => v.push(format!(
                        "call {} to {svc} answered by {key:?}, which never ran",
                        c.invoke.op
                    )),
                    Some(run) => {
                        if run.start() > end || run.end().is_some_and(|e| e < c.start()) {
                            v.push(format!(
                                "call {} to {svc} answered by {key:?}, which was not running \
                                 during the call",
                                c.invoke.op
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    StartBegin,
    StartOk,
    StartFailed,
    RunBegin,
    RunEnd,
    Shutdown,
}

#[derive(Debug, Default, Clone)]
struct Child {
    running: bool,
    starting: bool,
    /// Its supervisor must stop it (a sibling's exit its strategy covers).
    doomed: bool,
    /// Its supervisor is to start it again.
    pending: bool,
    /// Started by the group restart still in progress.
    in_round: bool,
}

fn check_generation(
    sup: &str,
    generation: u64,
    ops: &[&Op],
    expect: &Expect,
    out: &mut Outcome,
    v: &mut Vec<String>,
) {
    let Some(supervise) = ops.iter().find(|o| o.invoke.f == "supervise") else {
        return;
    };
    if supervise
        .done
        .as_ref()
        .is_some_and(|d| d.kind == EventType::Fail)
    {
        return; // it did not start
    }
    out.generations += 1;
    let escalated = supervise.answer("ended") == Some("escalated");
    out.escalations += usize::from(escalated);
    let ended_at = supervise.end().unwrap_or(u64::MAX);

    // Every event of the generation, in time order.
    let mut evs: Vec<(u64, Ev, &Op)> = Vec::new();
    for o in ops {
        match o.invoke.f.as_str() {
            "start" => {
                evs.push((o.start(), Ev::StartBegin, o));
                if let Some(d) = &o.done {
                    let ev = if d.kind == EventType::Ok {
                        Ev::StartOk
                    } else {
                        Ev::StartFailed
                    };
                    evs.push((d.mono_ns, ev, o));
                }
            }
            "run" => {
                evs.push((o.start(), Ev::RunBegin, o));
                if let Some(end) = o.end() {
                    evs.push((end, Ev::RunEnd, o));
                }
            }
            "shutdown" => evs.push((o.start(), Ev::Shutdown, o)),
            _ => {}
        }
    }
    evs.sort_by_key(|(t, _, _)| *t);

    let strategy = sup;
    let covered = |failed: usize, other: usize| match strategy {
        "one_for_all" => other != failed,
        "rest_for_one" => other > failed,
        _ => false,
    };
    // The first start is like a group's restart: a child that dies before the others are
    // started is seen once they are.
    let mut kids = vec![
        Child {
            pending: true,
            ..Child::default()
        };
        expect.children
    ];
    // Set once the supervisor is known to be ending: shutdown begun, or intensity exceeded.
    let mut ending: Option<&'static str> = None;
    let mut may_escalate = false;
    // one_for_all / rest_for_one: the first child of the group waiting for its restart.
    let mut group_from: Option<usize> = Some(0);
    // Exits of members during their group's restart, not yet seen by the supervisor.
    let mut deferred: Vec<(u64, usize)> = Vec::new();
    // A group's failed restart, counted once the members it started are stopped.
    let mut fail_note: Option<(u64, usize)> = None;
    let period = expect.period.as_nanos() as u64;
    let margin = MARGIN.as_nanos() as u64;
    let max = expect.max_restarts as usize;
    let name = |i: usize| format!("{sup} (generation {generation}) child c{i}");

    // The supervisor's loop runs each setup to its end before it looks at exits: an exit
    // during a run of setups (a group's restart) is counted once they are over.
    let mut setups: Vec<(u64, u64)> = ops
        .iter()
        .filter(|o| o.invoke.f == "start")
        .map(|o| (o.start(), o.end().unwrap_or(u64::MAX)))
        .collect();
    setups.sort_unstable();
    let counted_by = |t: u64| {
        let mut u = t;
        loop {
            let next = setups
                .iter()
                .filter(|(s, e)| *s <= u && *e > u)
                .map(|(_, e)| *e)
                .max();
            match next {
                Some(e) if e != u64::MAX => u = e,
                _ => return u,
            }
        }
    };
    // (exit as recorded, latest the supervisor may have counted it)
    let mut notes: Vec<(u64, u64)> = Vec::new();
    // Counts a restart; decides whether the supervisor must, may or must not escalate now.
    let mut note = |t: u64,
                    seen: u64,
                    who: usize,
                    ending: &mut Option<&'static str>,
                    may: &mut bool,
                    out: &mut Outcome,
                    v: &mut Vec<String>| {
        let late = counted_by(t).max(seen).saturating_add(margin);
        notes.push((t, late));
        // Counted by the supervisor at some moment in [t, late] for this exit, [n, n_late]
        // for an earlier one: in the window for sure if even the widest gap is within the
        // period; perhaps if the narrowest is.
        let surely = notes
            .iter()
            .filter(|&&(n, _)| late.saturating_sub(n) <= period)
            .count();
        let maybe = notes
            .iter()
            .filter(|&&(_, n_late)| t.saturating_sub(n_late) <= period)
            .count();
        if surely > max {
            out.intensity_exact += 1;
            *ending = Some("escalation");
            if !escalated {
                v.push(format!(
                    "{}: {surely} restarts within {:?} (the limit is {max}) at the exit of c{who}, \
                     but the supervisor did not escalate",
                    format_args!("{sup} (generation {generation})"),
                    expect.period
                ));
            }
        } else if maybe > max {
            out.intensity_open += 1;
            *may = true;
            if escalated {
                *ending = Some("escalation");
            }
        } else {
            out.intensity_exact += 1;
        }
    };

    for (t, ev, op) in evs {
        let i = op.get("child").as_u64().unwrap_or(0) as usize;
        if i >= kids.len() && ev != Ev::Shutdown {
            continue;
        }
        match ev {
            Ev::Shutdown => ending = ending.or(Some("shutdown")),
            Ev::StartBegin => {
                let inc = op.get("inc").as_u64().unwrap_or(0);
                if inc > 0 {
                    out.restarts += 1;
                    if ending == Some("escalation") && !may_escalate {
                        v.push(format!(
                            "{} restarted (incarnation {inc}) after the restart intensity was \
                             exceeded",
                            name(i)
                        ));
                    } else if !kids[i].pending && ending.is_none() {
                        v.push(format!(
                            "{} restarted (incarnation {inc}) though no exit its strategy covers \
                             called for it",
                            name(i)
                        ));
                    }
                    for (j, k) in kids.iter().enumerate() {
                        if k.doomed && k.running && ending.is_none() {
                            v.push(format!(
                                "{} restarted while its sibling c{j}, which the strategy stops \
                                 with it, still ran",
                                name(i)
                            ));
                        }
                    }
                }
                kids[i].starting = true;
                kids[i].pending = false;
                // A new incarnation: what doomed the last one is over.
                kids[i].doomed = false;
            }
            Ev::StartFailed => {
                kids[i].starting = false;
                kids[i].doomed = false;
                kids[i].pending = true;
                let inc = op.get("inc").as_u64().unwrap_or(0);
                if inc > 0 && ending.is_none() {
                    if strategy == "one_for_one" {
                        note(t, t, i, &mut ending, &mut may_escalate, out, v);
                    }
                    // A group's restart that fails stops what it started of the group,
                    // members that had died meanwhile included (their exits are absorbed),
                    // and counts the failure once they are stopped.
                    if strategy != "one_for_one" {
                        fail_note = Some((t, i));
                        deferred.clear();
                        let from = group_from.unwrap_or(i).min(i);
                        group_from = Some(from);
                        for k in kids.iter_mut().skip(from) {
                            if k.running || k.starting {
                                k.doomed = true;
                            }
                            k.pending = true;
                        }
                        if !kids.iter().any(|k| k.doomed && k.running) {
                            fail_note = None;
                            note(t, t, i, &mut ending, &mut may_escalate, out, v);
                        }
                    }
                }
            }
            Ev::RunBegin => {}
            // Started as its supervisor sees it: the setup answered (the run task may be
            // polled a moment later).
            Ev::StartOk => {
                kids[i].starting = false;
                kids[i].running = true;
                kids[i].in_round = group_from.is_some();
                // The group's restart is over once none of it waits or is starting (but the
                // members that died during it, whose exits the supervisor sees next).
                let over = kids.iter().enumerate().all(|(j, k)| {
                    !k.starting && (!k.pending || deferred.iter().any(|&(_, d)| d == j))
                });
                if over && group_from.is_some() {
                    group_from = None;
                    for k in kids.iter_mut() {
                        k.in_round = false;
                    }
                    let mut applied: Vec<usize> = Vec::new();
                    for (te, d) in std::mem::take(&mut deferred) {
                        // Stopping the group of an earlier one finds this exit: absorbed.
                        if applied.iter().any(|&a| covered(a, d)) {
                            continue;
                        }
                        applied.push(d);
                        note(te, t, d, &mut ending, &mut may_escalate, out, v);
                        if ending.is_some() {
                            break;
                        }
                        let from = if strategy == "one_for_all" { 0 } else { d };
                        group_from = Some(group_from.unwrap_or(from).min(from));
                        for (j, other) in kids.iter_mut().enumerate() {
                            if covered(d, j) {
                                other.pending = true;
                                if other.running || other.starting {
                                    other.doomed = true;
                                }
                            }
                        }
                    }
                }
            }
            Ev::RunEnd => {
                let exit = op.answer("exit").unwrap_or("?");
                *out.exits.entry(exit.to_owned()).or_default() += 1;
                let was_doomed = std::mem::take(&mut kids[i].doomed);
                kids[i].running = false;
                if let Some((tf, fi)) = fail_note
                    && !kids.iter().any(|k| k.doomed && k.running)
                {
                    fail_note = None;
                    note(tf, t, fi, &mut ending, &mut may_escalate, out, v);
                }
                let k = &mut kids[i];
                let stopped = matches!(exit, "cancelled" | "aborted");
                if was_doomed || ending.is_some() {
                    k.pending = true;
                    continue;
                }
                if stopped {
                    v.push(format!(
                        "{} was stopped by its supervisor ({exit}) though no sibling exit its \
                         strategy covers, no shutdown and no escalation called for it",
                        name(i)
                    ));
                    k.pending = true;
                    continue;
                }
                let restartable = !(i == expect.transient && exit == "normal");
                if !restartable {
                    continue;
                }
                k.pending = true;
                // A member that dies while its group is being started again: the supervisor,
                // busy starting the rest, sees the exit once the group's restart is over.
                let in_restart = k.in_round && group_from.is_some();
                k.in_round = false;
                if in_restart {
                    deferred.push((t, i));
                    continue;
                }
                note(t, t, i, &mut ending, &mut may_escalate, out, v);
                if ending.is_some() {
                    continue;
                }
                if strategy != "one_for_one" {
                    let from = if strategy == "one_for_all" { 0 } else { i };
                    group_from = Some(group_from.unwrap_or(from).min(from));
                }
                for (j, other) in kids.iter_mut().enumerate() {
                    if covered(i, j) {
                        other.pending = true;
                        if other.running || other.starting {
                            other.doomed = true;
                        }
                    }
                }
            }
        }
    }
    if escalated && ending != Some("escalation") {
        v.push(format!(
            "{sup} (generation {generation}) escalated ({}) though its restarts never exceeded \
             {max} within {:?}, even counting those within {MARGIN:?} of the window's edge",
            supervise.answer("error").unwrap_or(""),
            expect.period
        ));
    }
    let _ = ended_at;
}
