//! The sharded-consumer checker: judges a nemesis run's history (produces; deliveries received
//! from the source and how each was settled; every handler call; every dead-letter publish;
//! the nemesis's faults) against the crate's promises:
//!
//! - **one handler call per key at a time**: the calls of one key, from their start to their
//!   end as the handler's own code saw them (answered, panicked, or dropped at the deadline;
//!   a call that blocks its thread ends when it returns), never overlap on the monotonic
//!   clock; the largest overlap is measured;
//! - **per-key order**: no message of a key starts being handled before every earlier
//!   acknowledged message of that key was handled or dead-lettered (the producers publish a
//!   key's messages one after another, so the topic holds them in that order); replays after
//!   a redelivery are allowed, first handlings are judged;
//! - **settled once**: each delivery is settled exactly once (the history refuses a second
//!   completion), acknowledged only after its handler answered `Ack` or its dead letter was
//!   published, and never handled again after that; its attempts count 1, 2, ... without a
//!   gap; at most one dead letter is published for it;
//! - **nothing lost**: every acknowledged produce was acknowledged at the source after it was
//!   handled or dead-lettered; nothing is handled that no producer sent;
//! - **dead letters only after the retry budget**: a dead letter is published only after
//!   `max_attempts` calls of its delivery, none of which answered `Ack` in time, and says so
//!   in its attempts header.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;
use wharf_testkit::{Event, EventType};

/// What the workload configured.
#[derive(Debug, Clone)]
pub struct Expect {
    pub max_attempts: u32,
    pub handler_timeout: Duration,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub operations: usize,
    pub by_op: BTreeMap<String, usize>,
    pub faults: usize,
    pub fault_kinds: BTreeMap<String, usize>,
    /// Handler calls that misbehaved on purpose, per mode.
    pub user_faults: BTreeMap<String, usize>,
    /// How handler calls ended.
    pub call_ends: BTreeMap<String, usize>,
    /// How deliveries were settled.
    pub settled: BTreeMap<String, usize>,
    pub produced_ok: usize,
    pub dead_lettered: usize,
    pub redelivered: usize,
    pub max_overlap_ms: f64,
    /// Produces Kafka acknowledged at offset -1 (librdkafka's answer when the broker calls a
    /// retried batch a duplicate) that no delivery ever carried: not the consumer's to lose.
    pub acked_without_offset_never_delivered: Vec<u64>,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "checker: {} operations {:?}; {} faults {:?}; user-code faults {:?}; {} produces \
             acknowledged; handler calls ended {:?}; deliveries settled {:?} ({} redeliveries); \
             {} dead-lettered; largest overlap of one key's calls {:.1} ms; acknowledged by Kafka \
             at offset -1 and never delivered: {:?}; {} violation(s)",
            self.operations,
            self.by_op,
            self.faults,
            self.fault_kinds,
            self.user_faults,
            self.produced_ok,
            self.call_ends,
            self.settled,
            self.redelivered,
            self.dead_lettered,
            self.max_overlap_ms,
            self.acked_without_offset_never_delivered,
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
    fn kind(&self) -> Option<EventType> {
        self.done.as_ref().map(|d| d.kind)
    }
    fn answer(&self, field: &str) -> Option<&str> {
        self.done.as_ref().and_then(|d| d.value[field].as_str())
    }
    fn n(&self) -> Option<u64> {
        self.invoke.value["n"].as_u64()
    }
    fn d(&self) -> &str {
        self.invoke.value["d"].as_str().unwrap_or("")
    }
}

/// Pairs invokes with their completions, per operation name, in invoke order.
fn pair(events: &[Event], v: &mut Vec<String>, out: &mut Outcome) -> BTreeMap<String, Vec<Op>> {
    let mut ops: HashMap<&str, Op> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for e in events {
        if e.kind == EventType::Invoke {
            out.operations += 1;
            *out.by_op.entry(e.f.clone()).or_default() += 1;
            order.push(&e.op);
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
    let mut by_f: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for op in order {
        let op = ops.remove(op).unwrap();
        by_f.entry(op.invoke.f.clone()).or_default().push(op);
    }
    by_f
}

/// Whether a handler call's `Ack` ended its delivery's handling: yes when it answered `Ack`
/// well within the handler timeout; no when it failed (`Err`, a panic, dropped at its
/// deadline) or answered `Retry`; unknown for an `Ack` that came back near or past the
/// deadline (one that held its thread that long is failed by the consumer; one that was only
/// starved by another call blocking the executor's thread may be taken).
fn acked_in_time(call: &Op, expect: &Expect) -> Option<bool> {
    if call.kind() != Some(EventType::Ok) || call.answer("outcome") != Some("ack") {
        return Some(false);
    }
    let took = Duration::from_nanos(call.end()? - call.start());
    if took + Duration::from_millis(50) < expect.handler_timeout {
        Some(true)
    } else {
        None
    }
}

/// The acknowledged produces not yet done: acknowledged at the source after being handled or
/// dead-lettered. Empty once the consumer has caught up.
pub fn unsettled(events: &[Event]) -> Vec<u64> {
    let mut v = Vec::new();
    let mut out = Outcome::default();
    let ops = pair(events, &mut v, &mut out);
    let done = done_messages(&ops);
    ops.get("produce")
        .into_iter()
        .flatten()
        .filter(|p| p.kind() == Some(EventType::Ok) && !without_offset(p))
        .filter_map(Op::n)
        .filter(|n| !done.contains(n))
        .collect()
}

/// Kafka acknowledged it at offset -1: librdkafka's success for a retried batch the broker
/// called a duplicate, whose offset it does not know.
fn without_offset(produce: &Op) -> bool {
    produce
        .answer("receipt")
        .is_some_and(|r| r.ends_with("@-1"))
}

/// Messages (by n) a delivery of which was acknowledged at the source after an `Ack` answer
/// or a published dead letter.
fn done_messages(ops: &BTreeMap<String, Vec<Op>>) -> BTreeSet<u64> {
    let empty = Vec::new();
    let mut terminal: BTreeSet<u64> = BTreeSet::new();
    for call in ops.get("handle").unwrap_or(&empty) {
        if call.kind() == Some(EventType::Ok) && call.answer("outcome") == Some("ack") {
            terminal.extend(call.n());
        }
    }
    for dl in ops.get("dead-letter").unwrap_or(&empty) {
        if dl.kind() == Some(EventType::Ok) {
            terminal.extend(dl.n());
        }
    }
    ops.get("deliver")
        .unwrap_or(&empty)
        .iter()
        .filter(|d| d.answer("settled") == Some("ack"))
        .filter_map(Op::n)
        .filter(|n| terminal.contains(n))
        .collect()
}

/// Judges a whole history.
pub fn check(events: &[Event], expect: &Expect) -> Outcome {
    let mut out = Outcome::default();
    let mut v = Vec::new();
    let ops = pair(events, &mut v, &mut out);
    let empty = Vec::new();
    let produces = ops.get("produce").unwrap_or(&empty);
    let deliveries = ops.get("deliver").unwrap_or(&empty);
    let calls = ops.get("handle").unwrap_or(&empty);
    let dead = ops.get("dead-letter").unwrap_or(&empty);

    let times_of: HashMap<u64, u64> = produces
        .iter()
        .filter_map(|p| Some((p.n()?, p.invoke.value["times"].as_u64()?)))
        .collect();
    // Handler calls: each ends; what they did.
    for c in calls {
        let end = match &c.done {
            None => {
                v.push(format!(
                    "handler call {} never ended: {:?}",
                    c.invoke.op, c.invoke.value
                ));
                "open".to_owned()
            }
            Some(d) => match d.kind {
                EventType::Ok => d.value["outcome"].as_str().unwrap_or("?").to_owned(),
                EventType::Fail => "err".to_owned(),
                _ => d.value["aborted"].as_str().unwrap_or("?").to_owned(),
            },
        };
        *out.call_ends.entry(end).or_default() += 1;
        let mode = c.invoke.value["mode"].as_str().unwrap_or("ok");
        let attempt = c.invoke.value["attempt"].as_u64().unwrap_or(0);
        let times = c.n().and_then(|n| times_of.get(&n)).copied().unwrap_or(0);
        if mode != "ok" && attempt <= times {
            *out.user_faults.entry(mode.to_owned()).or_default() += 1;
        }
    }

    check_overlap(calls, &mut out, &mut v);
    check_deliveries(deliveries, calls, dead, expect, &mut out, &mut v);
    check_order_and_loss(produces, deliveries, calls, dead, &ops, &mut out, &mut v);
    out.violations = v;
    out
}

/// One handler call per key at a time.
fn check_overlap(calls: &[Op], out: &mut Outcome, v: &mut Vec<String>) {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for c in calls {
        by_key
            .entry(c.invoke.value["key"].as_str().unwrap_or(""))
            .or_default()
            .push(c);
    }
    for (key, mut group) in by_key {
        group.sort_by_key(|c| c.start());
        let mut latest: Option<&Op> = None;
        for c in group {
            if let Some(prev) = latest {
                let prev_end = prev.end().unwrap_or(u64::MAX);
                if c.start() < prev_end {
                    let overlap_ms =
                        (prev_end.min(c.end().unwrap_or(u64::MAX)) - c.start()) as f64 / 1e6;
                    out.max_overlap_ms = out.max_overlap_ms.max(overlap_ms);
                    v.push(format!(
                        "two handler calls of key {key} at once for {overlap_ms:.1} ms: n {} \
                         attempt {} (delivery {}) and n {} attempt {} (delivery {})",
                        prev.n().unwrap_or(0),
                        prev.invoke.value["attempt"],
                        prev.d(),
                        c.n().unwrap_or(0),
                        c.invoke.value["attempt"],
                        c.d()
                    ));
                }
                if c.end().unwrap_or(u64::MAX) > prev_end {
                    latest = Some(c);
                }
            } else {
                latest = Some(c);
            }
        }
    }
}

/// Settled once, after the answer; attempts without gaps; dead letters after the budget.
fn check_deliveries(
    deliveries: &[Op],
    calls: &[Op],
    dead: &[Op],
    expect: &Expect,
    out: &mut Outcome,
    v: &mut Vec<String>,
) {
    let mut calls_of: HashMap<&str, Vec<&Op>> = HashMap::new();
    for c in calls {
        calls_of.entry(c.d()).or_default().push(c);
    }
    let mut dead_of: HashMap<&str, Vec<&Op>> = HashMap::new();
    for dl in dead {
        dead_of.entry(dl.d()).or_default().push(dl);
    }
    let mut messages = BTreeSet::new();
    for d in deliveries {
        messages.extend(d.n());
        let id = d.d();
        let settled = d.answer("settled").unwrap_or("never").to_owned();
        *out.settled.entry(settled.clone()).or_default() += 1;
        let mine = calls_of.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let dls = dead_of.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let Some(settled_at) = d.end() else {
            v.push(format!(
                "delivery {id} (n {:?}) was never settled (no ack, nack or release)",
                d.n()
            ));
            continue;
        };
        // Attempts 1, 2, ... in call order.
        for (i, c) in mine.iter().enumerate() {
            let attempt = c.invoke.value["attempt"].as_u64().unwrap_or(0);
            if attempt != i as u64 + 1 {
                v.push(format!(
                    "delivery {id} (n {:?}): call {} is attempt {attempt}",
                    d.n(),
                    i + 1
                ));
            }
            if c.start() > settled_at {
                v.push(format!(
                    "delivery {id} (n {:?}) handled again (attempt {attempt}) after it was settled ({settled})",
                    d.n()
                ));
            }
        }
        if mine.len() as u32 > expect.max_attempts {
            v.push(format!(
                "delivery {id} (n {:?}) handled {} times; max_attempts is {}",
                d.n(),
                mine.len(),
                expect.max_attempts
            ));
        }
        // A call that answered Ack in time ends the delivery's handling.
        let first_ack = mine
            .iter()
            .position(|c| acked_in_time(c, expect) == Some(true));
        if let Some(i) = first_ack
            && i + 1 < mine.len()
        {
            v.push(format!(
                "delivery {id} (n {:?}) handled again (attempt {}) after attempt {} answered Ack",
                d.n(),
                i + 2,
                i + 1
            ));
        }
        let published: Vec<&&Op> = dls
            .iter()
            .filter(|dl| dl.kind() == Some(EventType::Ok))
            .collect();
        if published.len() > 1 {
            v.push(format!(
                "delivery {id} (n {:?}) dead-lettered {} times",
                d.n(),
                published.len()
            ));
        }
        if !dls.is_empty() {
            out.dead_lettered += usize::from(!published.is_empty());
            let first = dls[0];
            let attempts = first.invoke.value["attempts"].as_u64().unwrap_or(0);
            if mine.len() as u32 != expect.max_attempts
                || attempts != u64::from(expect.max_attempts)
            {
                v.push(format!(
                    "delivery {id} (n {:?}) dead-lettered after {} call(s) (header says {attempts}); \
                     the retry budget is {}",
                    d.n(),
                    mine.len(),
                    expect.max_attempts
                ));
            }
            if let Some(i) = first_ack {
                v.push(format!(
                    "delivery {id} (n {:?}) dead-lettered although attempt {} answered Ack",
                    d.n(),
                    i + 1
                ));
            }
            if let Some(last) = mine.last()
                && last.end().unwrap_or(u64::MAX) > first.start()
            {
                v.push(format!(
                    "delivery {id} (n {:?}) dead-lettered before its last call ended",
                    d.n()
                ));
            }
        }
        if settled == "ack" {
            let handled_at = first_ack.and_then(|i| mine[i].end());
            let maybe_handled = mine
                .iter()
                .filter(|c| acked_in_time(c, expect).is_none())
                .filter_map(|c| c.end())
                .min();
            let dead_at = published.first().and_then(|dl| dl.end());
            let ready = [handled_at, maybe_handled, dead_at]
                .into_iter()
                .flatten()
                .min();
            match ready {
                None => v.push(format!(
                    "delivery {id} (n {:?}) acknowledged at the source but never answered Ack \
                     nor dead-lettered ({} call(s))",
                    d.n(),
                    mine.len()
                )),
                Some(at) if at > settled_at => v.push(format!(
                    "delivery {id} (n {:?}) acknowledged at the source {:.1} ms before it was \
                     handled or dead-lettered",
                    d.n(),
                    (at - settled_at) as f64 / 1e6
                )),
                Some(_) => {}
            }
        }
    }
    out.redelivered = deliveries.len().saturating_sub(messages.len());
}

/// Per-key order of first handlings, nothing lost, nothing invented.
#[allow(clippy::too_many_arguments)]
fn check_order_and_loss(
    produces: &[Op],
    deliveries: &[Op],
    calls: &[Op],
    dead: &[Op],
    ops: &BTreeMap<String, Vec<Op>>,
    out: &mut Outcome,
    v: &mut Vec<String>,
) {
    let produced: HashMap<u64, &Op> = produces.iter().filter_map(|p| Some((p.n()?, p))).collect();
    let mut first_start: HashMap<u64, u64> = HashMap::new();
    let mut first_done: HashMap<u64, u64> = HashMap::new();
    for c in calls {
        let Some(n) = c.n() else { continue };
        let s = first_start.entry(n).or_insert(u64::MAX);
        *s = (*s).min(c.start());
        if c.kind() == Some(EventType::Ok)
            && c.answer("outcome") == Some("ack")
            && let Some(end) = c.end()
        {
            let f = first_done.entry(n).or_insert(u64::MAX);
            *f = (*f).min(end);
        }
    }
    for dl in dead.iter().filter(|dl| dl.kind() == Some(EventType::Ok)) {
        if let (Some(n), Some(end)) = (dl.n(), dl.end()) {
            let f = first_done.entry(n).or_insert(u64::MAX);
            *f = (*f).min(end);
        }
    }
    for n in deliveries
        .iter()
        .filter_map(Op::n)
        .chain(first_start.keys().copied())
    {
        if !produced.contains_key(&n) {
            v.push(format!(
                "message n {n} handled or delivered but no producer sent it"
            ));
        }
    }

    // Per key, in sequence order.
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for p in produces {
        by_key
            .entry(p.invoke.value["key"].as_str().unwrap_or(""))
            .or_default()
            .push(p);
    }
    for (key, mut msgs) in by_key {
        msgs.sort_by_key(|p| p.invoke.value["seq"].as_u64().unwrap_or(0));
        // The latest moment an earlier acknowledged message of the key was done.
        let mut earlier_done: Option<(u64, u64)> = None;
        for p in msgs {
            let n = p.n().unwrap_or(0);
            if let (Some(&start), Some((done_at, earlier))) = (first_start.get(&n), earlier_done)
                && start < done_at
            {
                v.push(format!(
                    "key {key}: n {n} (seq {}) started {:.1} ms before the earlier n {earlier} was \
                     handled or dead-lettered",
                    p.invoke.value["seq"],
                    (done_at - start) as f64 / 1e6
                ));
            }
            if p.kind() == Some(EventType::Ok) {
                out.produced_ok += 1;
                // A lost message is reported below, not as a break of order.
                let Some(&done_at) = first_done.get(&n) else {
                    continue;
                };
                if earlier_done.is_none_or(|(at, _)| done_at > at) {
                    earlier_done = Some((done_at, n));
                }
            }
        }
    }

    let done = done_messages(ops);
    let delivered: std::collections::HashSet<u64> = deliveries.iter().filter_map(Op::n).collect();
    for p in produces.iter().filter(|p| p.kind() == Some(EventType::Ok)) {
        let n = p.n().unwrap_or(0);
        if !done.contains(&n) && without_offset(p) && !delivered.contains(&n) {
            out.acked_without_offset_never_delivered.push(n);
            continue;
        }
        if !done.contains(&n) {
            v.push(format!(
                "lost: n {n} ({} seq {}) was acknowledged by Kafka ({}) but never handled and \
                 acknowledged, nor dead-lettered",
                p.invoke.value["key"],
                p.invoke.value["seq"],
                p.answer("receipt").unwrap_or("?")
            ));
        }
    }
}
