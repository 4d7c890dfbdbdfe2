//! The webhooks-emitter checker: judges a nemesis run's history (every `emit` and `emit_sync`
//! with its answer, every failure an emitter reported through its failure hook, every message
//! read back from SQS, the emitters' final counters and metrics, the nemesis's faults)
//! against the crate's promises:
//!
//! - every accepted event is in SQS or counted as failed: an `emit` answered `Ok` is read
//!   back from the queue or handed to the failure hook (once); an `emit_sync` answered `Sent`
//!   is read back, and its `MessageId` is the one a message carrying it has;
//! - `maybe_sent: false` is a promise: an event failed so (an `emit_sync` error, a hook call)
//!   is never in SQS; nor is an event the emitter refused (a full buffer); and nothing is in
//!   SQS that no call emitted;
//! - no `emit_sync` waits past its timeout, and no `emit` waits at all: invoke to completion,
//!   on the monotonic clock, is at most the call's timeout (zero for `emit`) plus the slack;
//! - counters match the history: per emitter, `emitted` is the events accepted, `sent +
//!   failed = emitted` with nothing left buffered, `failed` counts every hook call and every
//!   accepted `emit_sync` error whose event is not in SQS (and at most every such error), no
//!   more events counted `sent` than were read back; the metrics (all emitters share the
//!   queue label) are the sums of the counters.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;
use wharf_testkit::{Event, EventType};
use wharf_webhooks_emitter::metrics as m;

/// What the workload configured.
#[derive(Debug, Clone)]
pub struct Expect {
    /// What a call may take past its timeout (scheduling).
    pub slack: Duration,
    /// The emitters' process names.
    pub emitters: Vec<String>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub operations: usize,
    pub by_op: BTreeMap<String, usize>,
    pub faults: usize,
    pub fault_kinds: BTreeMap<String, usize>,
    /// emit: accepted, refused.
    pub emits: (usize, usize),
    /// emit_sync: sent, failed `maybe_sent: true`, failed `maybe_sent: false`, refused.
    pub syncs: (usize, usize, usize, usize),
    pub hook_calls: usize,
    pub failures_by_kind: BTreeMap<String, usize>,
    pub messages_read: usize,
    /// Messages the reader got again after their visibility timeout (counted once above).
    pub reread: usize,
    pub events_in_sqs: usize,
    /// Events in more than one message (at least once: a retried request that had arrived).
    pub duplicates: usize,
    pub max_emit_ms: f64,
    /// The most an `emit_sync` took past its own timeout (negative: all answered before).
    pub max_sync_over_ms: f64,
    pub counters: BTreeMap<String, u64>,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "checker: {} operations {:?}; {} faults {:?}; emit accepted {} / refused {}; \
             emit_sync sent {} / failed maybe-sent {} / failed not-sent {} / refused {}; \
             {} hook calls; failures by kind {:?}; {} messages read ({} received again), {} events \
             in SQS, {} in more than one message; slowest emit {:.1} ms; emit_sync at most {:.1} ms past its timeout; \
             counters {:?}; {} violation(s)",
            self.operations,
            self.by_op,
            self.faults,
            self.fault_kinds,
            self.emits.0,
            self.emits.1,
            self.syncs.0,
            self.syncs.1,
            self.syncs.2,
            self.syncs.3,
            self.hook_calls,
            self.failures_by_kind,
            self.messages_read,
            self.reread,
            self.events_in_sqs,
            self.duplicates,
            self.max_emit_ms,
            self.max_sync_over_ms,
            self.counters,
            self.violations.len()
        )
    }
}

#[derive(Debug, Clone)]
struct Call {
    invoke: Event,
    done: Option<Event>,
}

/// A message read back: its SQS message id and event id.
#[derive(Debug, Clone)]
struct Read {
    message_id: String,
    id: String,
}

/// Judges `events`.
pub fn check(events: &[Event], expect: &Expect) -> Outcome {
    let mut out = Outcome::default();
    let mut v = Vec::new();

    let mut calls: BTreeMap<String, Call> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
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
                        *out.fault_kinds.entry(kind).or_default() += 1;
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

    for call in calls.values().filter(|c| c.invoke.f == "drain") {
        v.push(format!(
            "the queue was not read empty before a kill, so what the server held may be lost \
             by the server and the run cannot be judged: {:?}",
            call.done.as_ref().map(|d| &d.value)
        ));
    }

    // What SQS holds, by workload key.
    let mut in_sqs: HashMap<String, Vec<Read>> = HashMap::new();
    let mut message_ids = BTreeSet::new();
    for op in &order {
        let call = &calls[op];
        if call.invoke.f != "receive" {
            continue;
        }
        let Some(done) = &call.done else { continue };
        for m in done.value["messages"].as_array().into_iter().flatten() {
            let message_id = m["message_id"].as_str().unwrap_or("").to_owned();
            // Read again after its visibility timeout (a lost receive answer, a failed
            // delete): one message.
            if !message_ids.insert(message_id.clone()) {
                out.reread += 1;
                continue;
            }
            out.messages_read += 1;
            let Some(k) = m["k"].as_str() else {
                v.push(format!("a message in SQS that no workload call sent: {m}"));
                continue;
            };
            in_sqs.entry(k.to_owned()).or_default().push(Read {
                message_id,
                id: m["id"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out.events_in_sqs = in_sqs.len();
    out.duplicates = in_sqs.values().filter(|r| r.len() > 1).count();

    // Failures the hooks reported, by key.
    let mut hooks: HashMap<String, Vec<&Call>> = HashMap::new();
    for op in &order {
        let call = &calls[op];
        if call.invoke.f == "hook" {
            out.hook_calls += 1;
            let k = call.invoke.value["k"].as_str().unwrap_or("").to_owned();
            if let Some(done) = &call.done {
                let kind = done.value["kind"].as_str().unwrap_or("").to_owned();
                *out.failures_by_kind.entry(kind).or_default() += 1;
            }
            hooks.entry(k).or_default().push(call);
        }
    }

    // Per emitter: accepted events, failures that must be counted, failures that may be.
    #[derive(Default)]
    struct Tally {
        accepted: u64,
        hooks: u64,
        sync_errors: u64,
        sync_errors_not_in_sqs: u64,
        accepted_in_sqs: u64,
    }
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut emitted_keys = BTreeSet::new();
    let slack_ms = expect.slack.as_secs_f64() * 1e3;
    out.max_sync_over_ms = f64::NEG_INFINITY;

    for op in &order {
        let call = &calls[op];
        let f = call.invoke.f.as_str();
        if f != "emit" && f != "emit_sync" {
            continue;
        }
        let who = call.invoke.process.clone();
        let k = call.invoke.value["k"].as_str().unwrap_or("").to_owned();
        emitted_keys.insert(k.clone());
        let reads = in_sqs.get(&k).map(Vec::as_slice).unwrap_or(&[]);
        let hooked = hooks.get(&k).map(Vec::as_slice).unwrap_or(&[]);
        let Some(done) = &call.done else {
            v.push(format!("{f} of {k} never completed"));
            continue;
        };
        let took_ms = (done.mono_ns.saturating_sub(call.invoke.mono_ns)) as f64 / 1e6;
        let t = tally.entry(who.clone()).or_default();
        let id = done.value["id"].as_str();
        if let Some(id) = id
            && let Some(r) = reads.iter().find(|r| r.id != id)
        {
            v.push(format!(
                "{f} of {k} answered event id {id}, but message {} carries it as {}",
                r.message_id, r.id
            ));
        }
        if f == "emit" {
            out.max_emit_ms = out.max_emit_ms.max(took_ms);
            if took_ms > slack_ms {
                v.push(format!(
                    "emit of {k} on {who} took {took_ms:.1} ms: emit must not wait (slack {slack_ms} ms)"
                ));
            }
            match done.kind {
                EventType::Ok => {
                    out.emits.0 += 1;
                    t.accepted += 1;
                    t.accepted_in_sqs += u64::from(!reads.is_empty());
                    if hooked.len() > 1 {
                        v.push(format!(
                            "emit of {k}: the failure hook was called {} times",
                            hooked.len()
                        ));
                    }
                    if hooked.is_empty() && reads.is_empty() {
                        v.push(format!(
                            "emit of {k} on {who} was accepted ({}) but is neither in SQS nor \
                             counted as failed (lost)",
                            id.unwrap_or("?")
                        ));
                    }
                    for h in hooked {
                        let value = h.done.as_ref().map(|d| &d.value).unwrap_or(&Value::Null);
                        t.hooks += 1;
                        if value["maybe_sent"] == Value::Bool(false) && !reads.is_empty() {
                            v.push(format!(
                                "emit of {k} on {who} failed with maybe_sent: false ({}) but is \
                                 in SQS as message {}",
                                value["error"], reads[0].message_id
                            ));
                        }
                    }
                }
                _ => {
                    out.emits.1 += 1;
                    refused(f, &k, &who, reads, hooked, &done.value, &mut v);
                }
            }
        } else {
            let timeout_ms = call.invoke.value["timeout_ms"].as_f64().unwrap_or(0.0);
            out.max_sync_over_ms = out.max_sync_over_ms.max(took_ms - timeout_ms);
            if took_ms > timeout_ms + slack_ms {
                v.push(format!(
                    "emit_sync of {k} on {who} answered after {took_ms:.1} ms; its timeout was \
                     {timeout_ms} ms (slack {slack_ms} ms)"
                ));
            }
            if !hooked.is_empty() {
                v.push(format!(
                    "emit_sync of {k}: its failure went to the hook too (it goes to the caller)"
                ));
            }
            let kind = done.value["kind"].as_str().unwrap_or("").to_owned();
            match done.kind {
                EventType::Ok => {
                    out.syncs.0 += 1;
                    t.accepted += 1;
                    t.accepted_in_sqs += u64::from(!reads.is_empty());
                    let mid = done.value["message_id"].as_str().unwrap_or("");
                    if !reads.iter().any(|r| r.message_id == mid) {
                        v.push(format!(
                            "emit_sync of {k} on {who} answered Sent (message {mid}) but no such \
                             message is in SQS (read: {:?})",
                            reads.iter().map(|r| &r.message_id).collect::<Vec<_>>()
                        ));
                    }
                }
                _ if done.value["accepted"] == Value::Bool(true) => {
                    *out.failures_by_kind.entry(kind).or_default() += 1;
                    t.accepted += 1;
                    t.accepted_in_sqs += u64::from(!reads.is_empty());
                    t.sync_errors += 1;
                    t.sync_errors_not_in_sqs += u64::from(reads.is_empty());
                    if done.value["maybe_sent"] == Value::Bool(true) {
                        out.syncs.1 += 1;
                    } else {
                        out.syncs.2 += 1;
                        if !reads.is_empty() {
                            v.push(format!(
                                "emit_sync of {k} on {who} failed with maybe_sent: false ({}) but \
                                 is in SQS as message {}",
                                done.value["error"], reads[0].message_id
                            ));
                        }
                    }
                }
                _ => {
                    out.syncs.3 += 1;
                    refused(f, &k, &who, reads, hooked, &done.value, &mut v);
                }
            }
        }
    }
    if out.max_sync_over_ms == f64::NEG_INFINITY {
        out.max_sync_over_ms = 0.0;
    }
    for (k, reads) in &in_sqs {
        if !emitted_keys.contains(k) {
            v.push(format!(
                "message {} in SQS carries key {k}, which no call emitted",
                reads[0].message_id
            ));
        }
    }
    for k in hooks.keys() {
        if !emitted_keys.contains(k) {
            v.push(format!(
                "the failure hook reported {k}, which no call emitted"
            ));
        }
    }

    // Counters.
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for who in &expect.emitters {
        let shutdown = order
            .iter()
            .map(|op| &calls[op])
            .find(|c| c.invoke.f == "shutdown" && c.invoke.process == *who && c.done.is_some());
        let Some(s) = shutdown.and_then(|c| c.done.as_ref()).map(|d| &d.value) else {
            v.push(format!("{who} has no final counters in the history"));
            continue;
        };
        let get = |name: &str| s[name].as_u64().unwrap_or(u64::MAX);
        let t = tally.remove(who).unwrap_or_default();
        let (emitted, sent, failed, buffered) =
            (get("emitted"), get("sent"), get("failed"), get("buffered"));
        for name in ["emitted", "sent", "failed", "retried", "requests"] {
            *sums.entry(name).or_default() += get(name);
        }
        if emitted != t.accepted {
            v.push(format!(
                "{who} counts {emitted} events emitted; the history has {} accepted",
                t.accepted
            ));
        }
        if buffered != 0 || sent + failed != emitted {
            v.push(format!(
                "{who} ended with sent {sent} + failed {failed} != emitted {emitted} \
                 (buffered {buffered})"
            ));
        }
        let (low, high) = (t.hooks + t.sync_errors_not_in_sqs, t.hooks + t.sync_errors);
        if failed < low || failed > high {
            v.push(format!(
                "{who} counts {failed} events failed; the history has {} hook call(s) and {} \
                 emit_sync error(s) after acceptance, {} of them not in SQS: expected {low} to \
                 {high}",
                t.hooks, t.sync_errors, t.sync_errors_not_in_sqs
            ));
        }
        if sent > t.accepted_in_sqs {
            v.push(format!(
                "{who} counts {sent} events sent, but only {} of its accepted events are in SQS",
                t.accepted_in_sqs
            ));
        }
    }
    let metrics = order
        .iter()
        .map(|op| &calls[op])
        .find(|c| c.invoke.f == "metrics")
        .and_then(|c| c.done.as_ref());
    match metrics {
        None => v.push("no metrics in the history".to_owned()),
        Some(d) => {
            for (name, metric) in [
                ("emitted", m::EMITTED),
                ("sent", m::SENT),
                ("failed", m::FAILED),
                ("retried", m::RETRIED),
                ("requests", m::REQUESTS),
            ] {
                let counted = sums.get(name).copied().unwrap_or(0);
                let exported = d.value[metric].as_u64().unwrap_or(u64::MAX);
                out.counters.insert(name.to_owned(), counted);
                if counted != exported {
                    v.push(format!(
                        "metric {metric} is {exported}; the emitters' counters add up to {counted}"
                    ));
                }
            }
        }
    }
    out.violations = v;
    out
}

/// An event the emitter refused (not accepted): never sent, never a hook call.
fn refused(
    f: &str,
    k: &str,
    who: &str,
    reads: &[Read],
    hooked: &[&Call],
    value: &Value,
    v: &mut Vec<String>,
) {
    if !reads.is_empty() {
        v.push(format!(
            "{f} of {k} on {who} was refused ({}) but is in SQS as message {}",
            value["error"], reads[0].message_id
        ));
    }
    if f == "emit" && !hooked.is_empty() {
        v.push(format!(
            "{f} of {k} on {who} was refused ({}) but the failure hook reported it too",
            value["error"]
        ));
    }
}
