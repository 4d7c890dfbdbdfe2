//! The kafka-wrapper checker: judges a nemesis run's history (every produce and its receipt,
//! every handler call of the group's members, the group's committed offsets as a client of
//! its own read them during the run; the nemesis's faults), the topic's final contents and
//! where a fresh member of the group starts, against the crate's promises:
//!
//! - every acknowledged produce is in the topic at its receipt's partition and offset, with
//!   its payload, and a member of the group handled it (at least once);
//! - a handler gets the record stored at the partition and offset it is told;
//! - no committed offset passes an unhandled message: when a committed offset `C` of a
//!   partition was read, every record of that partition below `C` had been handled (its
//!   handler call had returned `Ack`) before the read answered;
//! - after the run, a fresh member of the group starts each partition exactly at the group's
//!   final committed offset (the first record at or after it; the start of the partition
//!   when nothing was committed), and every record below that offset was handled;
//! - per partition, first deliveries come in offset order: a record is first handed to a
//!   handler only after every earlier record of its partition that is ever handled was.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wharf_testkit::{Event, EventType};

/// What was read after the run.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every record of the topic: partition -> offset -> payload.
    pub log: BTreeMap<i32, BTreeMap<i64, String>>,
    /// The group's committed offsets once its members shut down.
    pub final_committed: BTreeMap<i32, i64>,
    /// The first offset of each partition a fresh member of the group was handed.
    pub fresh_first: BTreeMap<i32, i64>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub operations: usize,
    pub by_op: BTreeMap<String, usize>,
    pub faults: usize,
    pub fault_kinds: BTreeMap<String, usize>,
    pub acked: usize,
    pub unknown_produces: usize,
    /// Acknowledged with offset -1 (librdkafka's "unknown": the broker stored it but the
    /// answer named no offset); judged by payload.
    pub acked_without_offset: usize,
    /// Records stored more than once (a producer's retry of a record already stored).
    pub duplicates: usize,
    pub records: usize,
    pub deliveries: usize,
    pub redeliveries: usize,
    pub commit_samples: usize,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "checker: {} operations {:?}; {} faults {:?}; {} produces acknowledged ({} without \
             an offset), {} unknown; {} records in the topic ({} stored twice); {} deliveries \
             ({} again); {} commit samples; {} violation(s)",
            self.operations,
            self.by_op,
            self.faults,
            self.fault_kinds,
            self.acked,
            self.acked_without_offset,
            self.unknown_produces,
            self.records,
            self.duplicates,
            self.deliveries,
            self.redeliveries,
            self.commit_samples,
            self.violations.len()
        )
    }
}

/// The invoke of each completed operation, by op id.
fn invokes(events: &[Event]) -> HashMap<&str, &Event> {
    events
        .iter()
        .filter(|e| e.kind == EventType::Invoke)
        .map(|e| (e.op.as_str(), e))
        .collect()
}

/// (partition, offset, payload) of every acknowledged produce.
pub fn receipts(events: &[Event]) -> Vec<(i32, i64, String)> {
    let invoked = invokes(events);
    events
        .iter()
        .filter(|e| e.kind == EventType::Ok && e.f == "produce")
        .filter_map(|e| {
            let payload = invoked.get(e.op.as_str())?.value["payload"].as_str()?;
            Some((
                i32::try_from(e.value["partition"].as_i64()?).ok()?,
                e.value["offset"].as_i64()?,
                payload.to_owned(),
            ))
        })
        .collect()
}

/// The records the history itself names, partition -> offset -> payload: where each handler
/// call was told its record is, and where each acknowledged produce was stored (receipts
/// with an offset). The stand-in for a partition that could not be read back in time: the
/// checks then cover every record a receipt or a handler names, but not a record stored
/// without either (a produce whose outcome was unknown and that no member was handed). A
/// second payload at an offset is left out here and flagged by `check` (it compares every
/// call and receipt with the log).
pub fn log_from_history(events: &[Event]) -> BTreeMap<i32, BTreeMap<i64, String>> {
    let mut log: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    for c in calls(events) {
        log.entry(c.partition)
            .or_default()
            .entry(c.offset)
            .or_insert(c.payload);
    }
    for (p, o, payload) in receipts(events) {
        if o >= 0 {
            log.entry(p).or_default().entry(o).or_insert(payload);
        }
    }
    log
}

/// One handler call: (partition, offset, payload, started ns, returned ns if it did).
struct Call {
    process: String,
    partition: i32,
    offset: i64,
    payload: String,
    start: u64,
    end: Option<u64>,
}

fn calls(events: &[Event]) -> Vec<Call> {
    let mut ends: HashMap<&str, u64> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e.kind == EventType::Ok && e.f == "handle")
    {
        ends.insert(e.op.as_str(), e.mono_ns);
    }
    let mut calls: Vec<Call> = events
        .iter()
        .filter(|e| e.kind == EventType::Invoke && e.f == "handle")
        .map(|e| Call {
            process: e.process.clone(),
            partition: e.value["partition"].as_i64().unwrap_or(-1) as i32,
            offset: e.value["offset"].as_i64().unwrap_or(-1),
            payload: e.value["payload"].as_str().unwrap_or_default().to_owned(),
            start: e.mono_ns,
            end: ends.get(e.op.as_str()).copied(),
        })
        .collect();
    calls.sort_by_key(|c| c.start);
    calls
}

pub fn check(events: &[Event], observed: &Observed) -> Outcome {
    let mut out = Outcome::default();
    let mut v = Vec::new();
    let invoked = invokes(events);
    for e in events.iter().filter(|e| e.kind == EventType::Invoke) {
        if e.process == "nemesis" {
            continue;
        }
        out.operations += 1;
        *out.by_op.entry(e.f.clone()).or_default() += 1;
    }
    for e in events
        .iter()
        .filter(|e| e.process == "nemesis" && e.kind == EventType::Ok)
    {
        out.faults += 1;
        if let Some(kind) = invoked
            .get(e.op.as_str())
            .and_then(|i| i.value["kind"].as_str())
        {
            *out.fault_kinds.entry(kind.to_owned()).or_default() += 1;
        }
    }
    out.unknown_produces = events
        .iter()
        .filter(|e| e.kind == EventType::Info && e.f == "produce")
        .count();
    out.records = observed.log.values().map(BTreeMap::len).sum();

    let calls = calls(events);
    out.deliveries = calls.len();
    // Earliest return of a handler call, per (partition, offset).
    let mut handled_at: HashMap<(i32, i64), u64> = HashMap::new();
    for c in &calls {
        if let Some(end) = c.end {
            let at = handled_at.entry((c.partition, c.offset)).or_insert(end);
            *at = (*at).min(end);
        }
        match observed
            .log
            .get(&c.partition)
            .and_then(|l| l.get(&c.offset))
        {
            Some(stored) if *stored == c.payload => {}
            Some(stored) => v.push(format!(
                "{} was handed {:?} as partition {} offset {}, which holds {stored:?}",
                c.process, c.payload, c.partition, c.offset
            )),
            None => v.push(format!(
                "{} was handed partition {} offset {}, which the topic does not hold",
                c.process, c.partition, c.offset
            )),
        }
    }

    // Every acknowledged produce is stored where its receipt says and was handled. A receipt
    // without an offset (-1) is looked for by payload in its partition.
    let mut stored_at: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (p, records) in &observed.log {
        for (o, payload) in records {
            stored_at
                .entry(payload.as_str())
                .or_default()
                .push((*p, *o));
        }
    }
    out.duplicates = stored_at
        .iter()
        .filter(|(payload, at)| **payload != "marker" && at.len() > 1)
        .count();
    let receipts = receipts(events);
    out.acked = receipts.len();
    for (p, o, payload) in &receipts {
        let at: Vec<(i32, i64)> = if *o < 0 {
            out.acked_without_offset += 1;
            stored_at
                .get(payload.as_str())
                .map(|at| at.iter().copied().filter(|(q, _)| q == p).collect())
                .unwrap_or_default()
        } else {
            match observed.log.get(p).and_then(|l| l.get(o)) {
                Some(stored) if stored == payload => vec![(*p, *o)],
                Some(stored) => {
                    v.push(format!(
                        "produce {payload:?} acknowledged at partition {p} offset {o}, which holds {stored:?}"
                    ));
                    continue;
                }
                None => Vec::new(),
            }
        };
        if at.is_empty() {
            v.push(format!(
                "produce {payload:?} acknowledged at partition {p} offset {o}, which the topic does not hold (lost)"
            ));
        } else if !at.iter().any(|at| handled_at.contains_key(at)) {
            v.push(format!(
                "produce {payload:?} acknowledged at partition {p} offset {o} was never handled"
            ));
        }
    }

    // Per partition: the records in offset order, and for each prefix the latest moment one of
    // them was first handled (u64::MAX once one was never handled), with the first such.
    struct Prefix {
        offsets: Vec<i64>,
        latest: Vec<(u64, i64)>,
        first_unhandled: Vec<Option<i64>>,
    }
    let mut prefixes: BTreeMap<i32, Prefix> = BTreeMap::new();
    for (p, records) in &observed.log {
        let mut prefix = Prefix {
            offsets: Vec::new(),
            latest: Vec::new(),
            first_unhandled: Vec::new(),
        };
        let (mut latest, mut unhandled) = ((0u64, -1i64), None);
        for (o, payload) in records {
            if payload == "marker" {
                continue; // produced after the run, for the fresh member only
            }
            match handled_at.get(&(*p, *o)) {
                Some(t) => latest = latest.max((*t, *o)),
                None => {
                    latest = (u64::MAX, *o);
                    unhandled = unhandled.or(Some(*o));
                }
            }
            prefix.offsets.push(*o);
            prefix.latest.push(latest);
            prefix.first_unhandled.push(unhandled);
        }
        prefixes.insert(*p, prefix);
    }
    // The latest first-handling among the records of `p` below `c`, with the first unhandled
    // one of them if any.
    let below = |p: i32, c: i64| -> Option<((u64, i64), Option<i64>)> {
        let prefix = prefixes.get(&p)?;
        let n = prefix.offsets.partition_point(|o| *o < c);
        (n > 0).then(|| (prefix.latest[n - 1], prefix.first_unhandled[n - 1]))
    };

    // No committed offset passes an unhandled message.
    for e in events
        .iter()
        .filter(|e| e.kind == EventType::Ok && e.f == "committed")
    {
        out.commit_samples += 1;
        let Some(offsets) = e.value["offsets"].as_object() else {
            continue;
        };
        for (p, c) in offsets {
            let (Ok(p), Some(c)) = (p.parse::<i32>(), c.as_i64()) else {
                continue;
            };
            if let Some(((latest, at), unhandled)) = below(p, c)
                && latest > e.mono_ns
            {
                let what = match unhandled {
                    Some(o) => format!("offset {o}, never handled"),
                    None => format!(
                        "offset {at}, whose handler returned only {:.1} ms after the commit was read",
                        (latest - e.mono_ns) as f64 / 1e6
                    ),
                };
                v.push(format!(
                    "committed offset {c} of partition {p} (read at {} µs) passes {what}",
                    e.wall_us
                ));
            }
        }
    }

    // A fresh member starts at the final committed offsets, and nothing below is unhandled.
    for p in observed.log.keys() {
        let committed = observed.final_committed.get(p).copied();
        let start = observed.log[p]
            .keys()
            .copied()
            .find(|o| committed.is_none_or(|c| *o >= c));
        let fresh = observed.fresh_first.get(p).copied();
        if fresh != start {
            v.push(format!(
                "a fresh member of the group started partition {p} at {fresh:?}; the committed \
                 offset {committed:?} says it should start at {start:?}"
            ));
        }
        if let Some(c) = committed
            && let Some((_, Some(o))) = below(*p, c)
        {
            v.push(format!(
                "the final committed offset {c} of partition {p} passes offset {o}, never handled"
            ));
        }
    }

    // Per-partition order of first deliveries.
    let mut seen: HashMap<i32, BTreeSet<i64>> = HashMap::new();
    let mut last_first: HashMap<i32, (i64, String)> = HashMap::new();
    for c in &calls {
        if !seen.entry(c.partition).or_default().insert(c.offset) {
            out.redeliveries += 1;
            continue;
        }
        if let Some((last, by)) = last_first.get(&c.partition)
            && c.offset < *last
        {
            v.push(format!(
                "partition {}: offset {} first delivered (to {}) after offset {last} (to {by})",
                c.partition, c.offset, c.process
            ));
        }
        last_first.insert(c.partition, (c.offset, c.process.clone()));
    }

    out.violations = v;
    out
}
