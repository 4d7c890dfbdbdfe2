//! A recorded history of operations: what a workload asked for and what it got, for a
//! checker to judge against a promise.
//!
//! The shape is Jepsen's: each operation is an **invoke** event and, later, one completion:
//! **ok** (it happened), **fail** (it certainly did not) or **info** (unknown: a timeout, a
//! lost answer, a crash). Every event carries the process that did it, the operation's kind
//! and a JSON value, and two clocks: wall time (microseconds since the Unix epoch, for people)
//! and the machine's monotonic clock (nanoseconds, `CLOCK_MONOTONIC`, the same in every
//! process of the machine, for measuring overlaps across processes).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Events kept in memory by one [`History`] unless told otherwise: a checker that finds
/// events dropped reports the history as incomplete instead of judging half of it.
pub const DEFAULT_CAPACITY: usize = 2_000_000;

/// What an event says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation started.
    Invoke,
    /// It took effect.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown whether it took effect (a timeout, a lost answer), or a note with no outcome.
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Invoke, ok, fail or info.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation this event belongs to: the invoke's id, shared by its completion. Unique
    /// within one process's history (see [`History::op_prefix`] for several processes).
    pub op: String,
    /// Who did it: `producer`, `worker-a`, `nemesis`...
    pub process: String,
    /// The operation: `enqueue`, `run`, `cancel`, `fault`...
    pub f: String,
    /// What was asked (invoke) or answered (completion).
    pub value: serde_json::Value,
    /// Wall time, microseconds since the Unix epoch.
    pub wall_us: u64,
    /// `CLOCK_MONOTONIC`, nanoseconds: comparable between processes of one machine.
    pub mono_ns: u64,
}

/// A thread-safe, bounded recorder of [`Event`]s, optionally also appended to a file line by
/// line as they happen (so a process killed with SIGKILL leaves everything it recorded).
///
/// ```
/// # fn main() -> wharf_testkit::Result<()> {
/// use serde_json::json;
/// use wharf_testkit::History;
/// let history = History::new("doc", 7);
/// let op = history.invoke("producer", "enqueue", json!({"n": 1}));
/// history.ok(&op, "producer", "enqueue", json!({"id": "abc"}));
/// assert_eq!(history.events().len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct History {
    name: String,
    seed: u64,
    prefix: String,
    next: AtomicU64,
    capacity: usize,
    dropped: AtomicU64,
    events: Mutex<Vec<Event>>,
    sink: Mutex<Option<File>>,
}

impl History {
    /// An empty history named `name` for a run with `seed` (both name its file).
    pub fn new(name: &str, seed: u64) -> Self {
        Self::with_capacity(name, seed, DEFAULT_CAPACITY)
    }

    /// Like [`new`](Self::new), keeping at most `capacity` events in memory; later ones are
    /// counted in [`dropped`](Self::dropped) (and still written to the sink, if any).
    pub fn with_capacity(name: &str, seed: u64, capacity: usize) -> Self {
        History {
            name: name.to_owned(),
            seed,
            prefix: String::new(),
            next: AtomicU64::new(0),
            capacity,
            dropped: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            sink: Mutex::new(None),
        }
    }

    /// Prefixes every operation id with `prefix`, so that histories recorded by several
    /// processes merge without clashes.
    pub fn op_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Also appends every event, as one JSON line, to `path` (created, or appended to) as it
    /// is recorded. For a process that may be killed: read it back with [`load`](Self::load).
    pub fn stream_to(self, path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening history file {}", path.display()), e))?;
        *lock(&self.sink) = Some(file);
        Ok(self)
    }

    /// The seed this history was recorded under.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records the start of an operation; returns its id, for its completion.
    pub fn invoke(&self, process: &str, f: &str, value: serde_json::Value) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let op = format!("{}{n}", self.prefix);
        self.record(EventType::Invoke, &op, process, f, value);
        op
    }

    /// Records that operation `op` took effect.
    pub fn ok(&self, op: &str, process: &str, f: &str, value: serde_json::Value) {
        self.record(EventType::Ok, op, process, f, value);
    }

    /// Records that operation `op` certainly did not take effect.
    pub fn fail(&self, op: &str, process: &str, f: &str, value: serde_json::Value) {
        self.record(EventType::Fail, op, process, f, value);
    }

    /// Records that it is unknown whether `op` took effect.
    pub fn info(&self, op: &str, process: &str, f: &str, value: serde_json::Value) {
        self.record(EventType::Info, op, process, f, value);
    }

    /// Records any event.
    pub fn record(
        &self,
        kind: EventType,
        op: &str,
        process: &str,
        f: &str,
        value: serde_json::Value,
    ) {
        let event = Event {
            kind,
            op: op.to_owned(),
            process: process.to_owned(),
            f: f.to_owned(),
            value,
            wall_us: wall_us(),
            mono_ns: mono_ns(),
        };
        if let Some(file) = lock(&self.sink).as_mut()
            && let Ok(mut line) = serde_json::to_vec(&event)
        {
            line.push(b'\n');
            // One write per line with O_APPEND: lines of several writers never interleave.
            let _ = file.write_all(&line);
        }
        let mut events = lock(&self.events);
        if events.len() < self.capacity {
            events.push(event);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds events recorded elsewhere (another process's [`load`](Self::load)ed file).
    pub fn extend(&self, more: impl IntoIterator<Item = Event>) {
        let mut events = lock(&self.events);
        for event in more {
            if events.len() < self.capacity {
                events.push(event);
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A copy of the events kept, sorted by monotonic time.
    pub fn events(&self) -> Vec<Event> {
        let mut events = lock(&self.events).clone();
        events.sort_by_key(|e| e.mono_ns);
        events
    }

    /// Events not kept because the history was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Operations invoked so far (every process's, once merged).
    pub fn operations(&self) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| e.kind == EventType::Invoke)
            .count()
    }

    /// Where [`write`](Self::write) puts this history: `<target>/nemesis/<name>-<seed>.jsonl`,
    /// `<target>` being `$CARGO_TARGET_DIR` or the workspace's `target`.
    pub fn default_path(&self) -> PathBuf {
        output_dir().join(format!("{}-{}.jsonl", self.name, self.seed))
    }

    /// Writes every event kept, one JSON line each in time order, to
    /// [`default_path`](Self::default_path); returns the path.
    pub fn write(&self) -> Result<PathBuf> {
        let path = self.default_path();
        self.write_to(&path)?;
        Ok(path)
    }

    /// Writes every event kept to `path`, one JSON line each, in time order.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut out = Vec::new();
        for event in self.events() {
            if let Ok(line) = serde_json::to_vec(&event) {
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
        }
        std::fs::write(path, out)
            .map_err(|e| Error::io(format!("writing history {}", path.display()), e))
    }

    /// Reads a history file ([`write_to`](Self::write_to) or [`stream_to`](Self::stream_to)).
    /// A last line cut short by a kill is skipped; a file that does not exist is empty.
    pub fn load(path: &Path) -> Result<Vec<Event>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(format!("opening history {}", path.display()), e));
            }
        };
        let mut events = Vec::new();
        for line in BufReader::new(file).lines() {
            let line =
                line.map_err(|e| Error::io(format!("reading history {}", path.display()), e))?;
            if let Ok(event) = serde_json::from_str(&line) {
                events.push(event);
            }
        }
        Ok(events)
    }
}

/// `$CARGO_TARGET_DIR/nemesis`, or `<workspace>/target/nemesis`.
pub fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("nemesis")
}

/// Microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine (what
/// `std::time::Instant` reads on Linux), so times recorded in several processes compare.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
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
    use serde_json::json;

    #[test]
    fn a_streamed_history_reads_back_with_the_same_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let history = History::new("t", 1)
            .op_prefix("w-")
            .stream_to(&path)
            .unwrap();
        let op = history.invoke("w", "run", json!({"n": 3}));
        history.info(&op, "w", "run", json!({"aborted": true}));
        let back = History::load(&path).unwrap();
        assert_eq!(back, history.events());
        assert_eq!(back[0].op, "w-0");
    }

    #[test]
    fn a_full_history_counts_what_it_dropped() {
        let history = History::with_capacity("t", 1, 2);
        for _ in 0..3 {
            history.invoke("p", "x", json!(null));
        }
        assert_eq!((history.events().len(), history.dropped()), (2, 1));
    }
}
