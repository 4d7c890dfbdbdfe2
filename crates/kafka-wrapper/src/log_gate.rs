//! At most one warning or error per client per window: what keeps an outage from flooding
//! the logs.
//!
//! While Kafka is unreachable, librdkafka reports every failed connection attempt of every
//! broker connection of every client, through its log callback (at error level) and its error
//! callback, several times within a few milliseconds; the wrapper adds its own warnings on the
//! same path (failed commits, failed dead-letter sends, rebuilds). Each client's warnings and
//! errors go through one [`LogGate`]: the first of a window is logged at its level, the rest
//! go to `debug` and are counted, and once the window is over one summary line says how many
//! there were and what the last one said. Gates are kept by client name for the wrapper's
//! whole life, so a rebuilt client shares its predecessor's window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a client stays quiet after one of its warnings or errors was logged.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one warning or error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it at its level; `suppressed` lines of the previous window were not summarised yet.
    Log { suppressed: u64 },
    /// Log it at `debug`: another one was logged less than a window ago.
    Quiet,
}

/// One summary line owed for a window that ended with suppressed lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) suppressed: u64,
    pub(crate) last: String,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line of this client was logged at its level (a summary included).
    logged_at: Option<Instant>,
    suppressed: u64,
    last: String,
}

/// The warning/error budget of one client.
#[derive(Debug)]
pub(crate) struct LogGate {
    name: Arc<str>,
    window: Duration,
    state: Mutex<State>,
}

impl LogGate {
    pub(crate) fn new(name: &str, window: Duration) -> Self {
        Self {
            name: Arc::from(name),
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// The client's name, for the `client` field of what is logged.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Decides about one warning or error saying `what`, at `now`.
    pub(crate) fn admit_at(&self, what: &str, now: Instant) -> Verdict {
        let Ok(mut s) = self.state.lock() else {
            return Verdict::Log { suppressed: 0 };
        };
        if s.logged_at
            .is_some_and(|t| now.duration_since(t) < self.window)
        {
            s.suppressed += 1;
            if s.last.len() < 512 {
                what.clone_into(&mut s.last);
            }
            return Verdict::Quiet;
        }
        s.logged_at = Some(now);
        let suppressed = std::mem::take(&mut s.suppressed);
        s.last.clear();
        Verdict::Log { suppressed }
    }

    /// [`admit_at`](Self::admit_at) now.
    pub(crate) fn admit(&self, what: &str) -> Verdict {
        self.admit_at(what, Instant::now())
    }

    /// The summary owed at `now`, if the window of the last logged line is over and lines
    /// were suppressed in it. The summary counts as the next window's one line.
    pub(crate) fn summary_at(&self, now: Instant) -> Option<Summary> {
        let mut s = self.state.lock().ok()?;
        let over = s
            .logged_at
            .is_some_and(|t| now.duration_since(t) >= self.window);
        if !over || s.suppressed == 0 {
            return None;
        }
        s.logged_at = Some(now);
        Some(Summary {
            suppressed: std::mem::take(&mut s.suppressed),
            last: std::mem::take(&mut s.last),
        })
    }

    /// Logs the summary owed now, if any.
    pub(crate) fn flush(&self) {
        if let Some(s) = self.summary_at(Instant::now()) {
            tracing::warn!(
                client = %self.name,
                suppressed = s.suppressed,
                last = %s.last,
                "{} more Kafka client warnings and errors in the last {:?} were logged at debug",
                s.suppressed,
                self.window
            );
        }
    }
}

/// Every client's gate, by name, for the life of a wrapper.
#[derive(Debug)]
pub(crate) struct LogGates {
    window: Duration,
    gates: Mutex<HashMap<String, Arc<LogGate>>>,
}

impl Default for LogGates {
    fn default() -> Self {
        Self::with_window(WINDOW)
    }
}

impl LogGates {
    pub(crate) fn with_window(window: Duration) -> Self {
        Self {
            window,
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate of client `name` (the same one for every generation of the client).
    pub(crate) fn get(&self, name: &str) -> Arc<LogGate> {
        let Ok(mut gates) = self.gates.lock() else {
            return Arc::new(LogGate::new(name, self.window));
        };
        gates
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(LogGate::new(name, self.window)))
            .clone()
    }

    /// Logs the summaries owed now.
    pub(crate) fn flush(&self) {
        let gates: Vec<Arc<LogGate>> = match self.gates.lock() {
            Ok(g) => g.values().cloned().collect(),
            Err(_) => return,
        };
        for g in gates {
            g.flush();
        }
    }
}

/// Logs a warning through `gate`: at `warn` if the gate admits it, else at `debug`. The
/// event carries `client` and, when a summary was still owed, `suppressed`.
///
/// `gated_warn!(gate, "message", field = value, ...)`.
macro_rules! gated_warn {
    ($gate:expr, $msg:literal $(, $($field:tt)+)?) => {{
        let gate: &$crate::log_gate::LogGate = &$gate;
        match gate.admit($msg) {
            $crate::log_gate::Verdict::Log { suppressed: 0 } => {
                tracing::warn!(client = %gate.name(), $($($field)+ ,)? $msg)
            }
            $crate::log_gate::Verdict::Log { suppressed } => {
                tracing::warn!(client = %gate.name(), suppressed, $($($field)+ ,)? $msg)
            }
            $crate::log_gate::Verdict::Quiet => {
                tracing::debug!(client = %gate.name(), $($($field)+ ,)? $msg)
            }
        }
    }};
}
pub(crate) use gated_warn;

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    const W: Duration = Duration::from_millis(100);

    #[test]
    fn the_first_line_of_a_window_is_logged_and_the_rest_are_counted() {
        let g = LogGate::new("c", W);
        let t0 = Instant::now();
        assert_eq!(g.admit_at("a", t0), Verdict::Log { suppressed: 0 });
        for i in 1..5u32 {
            assert_eq!(
                g.admit_at("b", t0 + W / 10 * i),
                Verdict::Quiet,
                "line {i} of the window"
            );
        }
        assert_eq!(g.summary_at(t0 + W / 2), None, "the window is not over yet");
        let s = g
            .summary_at(t0 + W)
            .expect("a summary once the window is over");
        assert_eq!((s.suppressed, s.last.as_str()), (4, "b"));
        assert_eq!(g.summary_at(t0 + W * 3), None, "one summary per window");
    }

    #[test]
    fn the_summary_opens_the_next_window() {
        let g = LogGate::new("c", W);
        let t0 = Instant::now();
        g.admit_at("a", t0);
        g.admit_at("a", t0 + W / 2);
        assert!(g.summary_at(t0 + W).is_some());
        assert_eq!(
            g.admit_at("a", t0 + W + W / 2),
            Verdict::Quiet,
            "within a window of the summary"
        );
        assert_eq!(g.admit_at("a", t0 + W * 2), Verdict::Log { suppressed: 1 });
    }

    #[test]
    fn a_line_after_a_quiet_window_carries_the_count_not_yet_summarised() {
        let g = LogGate::new("c", W);
        let t0 = Instant::now();
        g.admit_at("a", t0);
        g.admit_at("a", t0 + W / 2);
        g.admit_at("a", t0 + W / 2);
        assert_eq!(g.admit_at("a", t0 + W), Verdict::Log { suppressed: 2 });
        assert_eq!(
            g.summary_at(t0 + W * 5),
            None,
            "counted in that line already"
        );
    }

    #[test]
    fn a_client_keeps_its_gate_across_rebuilds() {
        let gates = LogGates::with_window(W);
        let a = gates.get("consumer");
        a.admit("x");
        assert_eq!(
            gates.get("consumer").admit("x"),
            Verdict::Quiet,
            "the next generation's client shares the window"
        );
        assert_eq!(
            gates.get("other").admit("x"),
            Verdict::Log { suppressed: 0 }
        );
    }
}
