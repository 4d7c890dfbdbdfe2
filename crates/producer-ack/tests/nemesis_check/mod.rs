//! The producer-ack checker: judges a nemesis run's history (every message produced, by
//! which producer, stream and call, and its outcome; the nemesis's faults) and the topic as a
//! consumer read it back at the end, against the crate's promises:
//!
//! - every message gets exactly one outcome: never none, never two;
//! - each outcome arrives within the send timeout, plus the scheduling slack the crate's
//!   guide allows (the send timeout again, at least 2 s);
//! - every acknowledged message is on the topic, under the id its receipt gave (one of its
//!   copies: delivery is at least once, a re-sent message may be stored twice);
//! - a message that failed as not sent (an error whose `may_have_been_stored()` is false) is
//!   not on the topic;
//! - order: per stream (one task producing through one handle, one call after the other) and
//!   per key, the first copies of the acknowledged messages are in the order they were
//!   produced (the crate re-sends unacknowledged messages in order before newer ones, and a
//!   key's messages all go to its partition). Unkeyed messages are not judged for order: they
//!   rotate over the partitions, and a message re-sent after a reconnect may go to another
//!   partition than its first copy, behind newer messages stored there meanwhile (the
//!   documented limit "order is per partition", seen in the first runs of this test);
//! - a keyed message is stored on its key's partition: every copy of every message of one key
//!   is on one partition;
//! - nothing is on the topic that no one produced.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use wharf_testkit::{Event, EventType};

/// What the workload configured.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The producers' send timeout.
    pub send_timeout: Duration,
    /// How late after its send timeout an outcome may arrive (scheduling on a loaded machine).
    pub slack: Duration,
}

/// One message as the consumer read it back, in the order read (per partition: the order
/// stored).
#[derive(Debug, Clone)]
pub struct Stored {
    pub payload: String,
    pub key: Option<String>,
    /// `ledger:entry:partition[:batch]`, as `MessageId`'s `Display`.
    pub id: String,
    pub partition: i32,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What was violated, at most 20 lines per kind of violation.
    pub violations: Vec<String>,
    /// How many violations in all.
    pub violation_count: usize,
    /// Messages produced.
    pub messages: usize,
    /// Per way of producing (`produce`, `batch`, `closure`, `channel`).
    pub by_how: BTreeMap<String, usize>,
    /// Outcomes: `ok` (acknowledged), `fail` (not sent), `info` (an error after which the
    /// broker may have stored it), per error kind for the last two.
    pub outcomes: BTreeMap<String, usize>,
    pub faults: usize,
    pub fault_kinds: BTreeMap<String, usize>,
    /// Messages read back (copies included), distinct messages among them, and copies beyond
    /// the first.
    pub read_back: usize,
    /// Copies the consumer was given twice (one id).
    pub redelivered: usize,
    pub distinct_read: usize,
    pub duplicates: usize,
    /// Messages whose outcome was an error that may have stored them, found on the topic.
    pub unacked_stored: usize,
    /// The slowest outcome, from the call.
    pub slowest: Duration,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "checker: {} messages {:?}; outcomes {:?}; slowest outcome {:.0} ms; {} faults {:?}; \
             read back {} ({} given twice to the consumer; {} distinct messages, {} stored \
             twice, {} unacknowledged but stored); \
             {} violation(s)",
            self.messages,
            self.by_how,
            self.outcomes,
            self.slowest.as_secs_f64() * 1000.0,
            self.faults,
            self.fault_kinds,
            self.read_back,
            self.redelivered,
            self.distinct_read,
            self.duplicates,
            self.unacked_stored,
            self.violation_count
        )
    }
}

/// One produced message, from its invoke.
#[derive(Debug, Clone)]
struct Message {
    op: String,
    payload: String,
    stream: String,
    seq: u64,
    key: Option<String>,
    how: String,
    invoked_ns: u64,
}

/// Judges `events` (the whole history) and `stored` (the topic, read back) against the
/// promises in the module docs. At most 20 violations of each kind are spelled out.
pub fn check(events: &[Event], stored: &[Stored], expect: &Expect) -> Outcome {
    let mut out = Outcome::default();
    let mut limited = Limited::default();
    let mut messages: HashMap<String, Message> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut completions: HashMap<String, Vec<&Event>> = HashMap::new();
    for event in events {
        if event.f == "fault" {
            if event.kind == EventType::Ok {
                out.faults += 1;
            }
            if event.kind == EventType::Invoke
                && let Some(kind) = event.value["kind"].as_str()
            {
                *out.fault_kinds.entry(kind.to_owned()).or_default() += 1;
            }
            continue;
        }
        if event.f != "send" {
            continue;
        }
        match event.kind {
            EventType::Invoke => {
                let v = &event.value;
                let message = Message {
                    op: event.op.clone(),
                    payload: v["msg"].as_str().unwrap_or_default().to_owned(),
                    stream: v["stream"].as_str().unwrap_or_default().to_owned(),
                    seq: v["seq"].as_u64().unwrap_or(0),
                    key: v["key"].as_str().map(str::to_owned),
                    how: v["how"].as_str().unwrap_or_default().to_owned(),
                    invoked_ns: event.mono_ns,
                };
                *out.by_how.entry(message.how.clone()).or_default() += 1;
                order.push(event.op.clone());
                messages.insert(event.op.clone(), message);
            }
            _ => completions.entry(event.op.clone()).or_default().push(event),
        }
    }
    out.messages = messages.len();

    // Exactly one outcome each, in time.
    let bound = expect.send_timeout + expect.slack;
    let mut acked: HashMap<&str, (&Message, String)> = HashMap::new();
    let mut not_sent: HashMap<&str, &Message> = HashMap::new();
    let mut maybe: HashMap<&str, &Message> = HashMap::new();
    for op in &order {
        let message = &messages[op];
        let done = completions.get(op).map(Vec::as_slice).unwrap_or_default();
        match done {
            [] => limited.push(
                "no-outcome",
                format!(
                    "message {} ({} via {}) never got an outcome",
                    message.payload, message.stream, message.how
                ),
            ),
            [_, second, ..] => limited.push(
                "two-outcomes",
                format!(
                    "message {} ({} via {}) got {} outcomes: {:?} then {:?} ({})",
                    message.payload,
                    message.stream,
                    message.how,
                    done.len(),
                    done[0].kind,
                    second.kind,
                    second.value
                ),
            ),
            [_] => {}
        }
        let Some(first) = done.first() else { continue };
        let took = Duration::from_nanos(first.mono_ns.saturating_sub(message.invoked_ns));
        out.slowest = out.slowest.max(took);
        if took > bound {
            limited.push(
                "late",
                format!(
                    "message {} ({} via {}) got its outcome {:.0} ms after the call; the send \
                     timeout is {:?}, with the slack {:?}",
                    message.payload,
                    message.stream,
                    message.how,
                    took.as_secs_f64() * 1000.0,
                    expect.send_timeout,
                    expect.slack
                ),
            );
        }
        let label = match first.kind {
            EventType::Ok => {
                let id = first.value["id"].as_str().unwrap_or_default().to_owned();
                acked.insert(&message.payload, (message, id));
                "ok".to_owned()
            }
            EventType::Fail => {
                not_sent.insert(&message.payload, message);
                format!("fail:{}", first.value["kind"].as_str().unwrap_or("?"))
            }
            _ => {
                maybe.insert(&message.payload, message);
                format!("info:{}", first.value["kind"].as_str().unwrap_or("?"))
            }
        };
        *out.outcomes.entry(label).or_default() += 1;
    }

    // The topic: copies per payload, ids, partitions. A copy read twice under one id is one
    // stored copy (the consumer was given it again), not a duplicate the producer wrote.
    out.read_back = stored.len();
    let mut ids = std::collections::HashSet::new();
    let stored: Vec<&Stored> = stored.iter().filter(|s| ids.insert(&s.id)).collect();
    out.redelivered = out.read_back - stored.len();
    let stored = stored.as_slice();
    let mut copies: HashMap<&str, Vec<&Stored>> = HashMap::new();
    let produced: HashMap<&str, &Message> =
        messages.values().map(|m| (m.payload.as_str(), m)).collect();
    for &s in stored {
        if !produced.contains_key(s.payload.as_str()) {
            limited.push(
                "unknown",
                format!(
                    "the topic holds {:?} (id {}) which no one produced",
                    s.payload, s.id
                ),
            );
        }
        copies.entry(&s.payload).or_default().push(s);
    }
    out.distinct_read = copies.len();
    out.duplicates = stored.len() - copies.len();
    for (payload, (message, id)) in &acked {
        match copies.get(payload) {
            None => limited.push(
                "lost",
                format!(
                    "message {payload} ({} via {}) was acknowledged as {id} but is not on the \
                     topic",
                    message.stream, message.how
                ),
            ),
            Some(found) if !found.iter().any(|s| &s.id == id) => limited.push(
                "wrong-id",
                format!(
                    "message {payload} ({} via {}) was acknowledged as {id} but is on the topic \
                     as {:?}",
                    message.stream,
                    message.how,
                    found.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()
                ),
            ),
            Some(_) => {}
        }
    }
    for (payload, message) in &not_sent {
        if let Some(found) = copies.get(payload) {
            limited.push(
                "not-sent-stored",
                format!(
                    "message {payload} ({} via {}) failed as not sent, yet the topic holds it as \
                     {:?}",
                    message.stream,
                    message.how,
                    found.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()
                ),
            );
        }
    }
    out.unacked_stored = maybe.keys().filter(|p| copies.contains_key(*p)).count();

    // Keys stay on one partition.
    let mut key_partition: BTreeMap<&str, (i32, &str)> = BTreeMap::new();
    for &s in stored {
        let Some(key) = produced
            .get(s.payload.as_str())
            .and_then(|m| m.key.as_deref())
        else {
            continue;
        };
        let (first, seen) = *key_partition
            .entry(key)
            .or_insert((s.partition, &s.payload));
        if first != s.partition {
            limited.push(
                "key-partition",
                format!(
                    "key {key}: message {} is on partition {}, message {seen} on partition {first}",
                    s.payload, s.partition
                ),
            );
        }
    }

    // Order of first copies of acknowledged keyed messages, per stream and key (a key's
    // messages all go to one partition, so its copies are in the order stored).
    let mut last: HashMap<(&str, &str), (u64, &str)> = HashMap::new();
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for &s in stored {
        if seen.insert(&s.payload, ()).is_some() {
            continue; // a later copy: at least once
        }
        let Some((message, _)) = acked.get(s.payload.as_str()) else {
            continue;
        };
        let Some(key) = message.key.as_deref() else {
            continue;
        };
        let place = (message.stream.as_str(), key);
        if let Some((before, before_payload)) = last.get(&place)
            && *before > message.seq
        {
            limited.push(
                "order",
                format!(
                    "stream {} key {key} (partition {}): {} (produced #{}) is stored before {} \
                     (produced #{}), yet both were acknowledged and {} was produced first",
                    message.stream,
                    s.partition,
                    before_payload,
                    before,
                    s.payload,
                    message.seq,
                    s.payload
                ),
            );
        }
        last.insert(place, (message.seq, &s.payload));
    }

    (out.violations, out.violation_count) = limited.finish();
    out
}

/// Violations, at most 20 spelled out per kind (the rest counted).
#[derive(Default)]
struct Limited {
    lines: Vec<String>,
    per_kind: BTreeMap<&'static str, usize>,
}

impl Limited {
    fn push(&mut self, kind: &'static str, line: String) {
        let n = self.per_kind.entry(kind).or_default();
        *n += 1;
        if *n <= 20 {
            self.lines.push(format!("[{kind}] {line}"));
        }
    }

    /// The lines to print, and how many violations there were in all.
    fn finish(mut self) -> (Vec<String>, usize) {
        for (kind, n) in &self.per_kind {
            if *n > 20 {
                self.lines
                    .push(format!("[{kind}] ... and {} more of this kind", n - 20));
            }
        }
        (self.lines, self.per_kind.values().sum())
    }
}
