//! Throughput over the last hour: the console samples every queue's lifetime counters
//! (completed, dead) every few seconds into a bounded in-memory ring, and charts the
//! per-minute differences as an inline SVG. Nothing is stored in Redis; a restarted
//! console starts with an empty chart.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{Markup, PreEscaped, html};
use wharf_job_partition::QueueCounts;

const MINUTES: usize = 60;

struct Sample {
    at_ms: i64,
    /// (partition, queue) -> (completed, dead) lifetime totals.
    totals: HashMap<(String, String), (u64, u64)>,
}

/// The ring of samples.
pub(crate) struct Throughput {
    samples: Mutex<VecDeque<Sample>>,
    cap: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Throughput {
    pub(crate) fn new(every: Duration) -> Self {
        let every = every.as_millis().max(1000) as usize;
        Self {
            samples: Mutex::new(VecDeque::new()),
            // One hour and a sample before it.
            cap: 3_600_000 / every + 2,
        }
    }

    pub(crate) fn record(&self, all: &[(String, String, QueueCounts)]) {
        let totals = all
            .iter()
            .map(|(p, q, c)| ((p.clone(), q.clone()), (c.completed_total, c.dead_total)))
            .collect();
        if let Ok(mut s) = self.samples.lock() {
            s.push_back(Sample {
                at_ms: now_ms(),
                totals,
            });
            while s.len() > self.cap {
                s.pop_front();
            }
        }
    }

    /// Per-minute (completed, dead) of the last hour, oldest first, for one queue or all.
    pub(crate) fn per_minute(&self, only: Option<(&str, &str)>) -> Vec<(u64, u64)> {
        let mut out = vec![(0u64, 0u64); MINUTES];
        let Ok(s) = self.samples.lock() else {
            return out;
        };
        let now = now_ms();
        let sum = |smp: &Sample, key: &(String, String)| smp.totals.get(key).copied();
        for (a, b) in s.iter().zip(s.iter().skip(1)) {
            let age = (now - b.at_ms).max(0) as usize / 60_000;
            if age >= MINUTES {
                continue;
            }
            let slot = &mut out[MINUTES - 1 - age];
            for key in b.totals.keys() {
                if let Some((p, q)) = only
                    && (key.0 != p || key.1 != q)
                {
                    continue;
                }
                // A queue the earlier sample lacks is new: it had done nothing.
                if let Some(y) = sum(b, key) {
                    let x = sum(a, key).unwrap_or((0, 0));
                    slot.0 += y.0.saturating_sub(x.0);
                    slot.1 += y.1.saturating_sub(x.1);
                }
            }
        }
        out
    }

    /// How many samples are held.
    pub(crate) fn len(&self) -> usize {
        self.samples.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The chart: a bar per minute, completed (green) under dead (red).
    pub(crate) fn chart(&self, only: Option<(&str, &str)>) -> Markup {
        let data = self.per_minute(only);
        let (w, h, left, bottom) = (720.0f64, 150.0f64, 40.0f64, 18.0f64);
        let max = data.iter().map(|(c, d)| c + d).max().unwrap_or(0).max(1) as f64;
        let slot = (w - left) / MINUTES as f64;
        let mut bars = String::new();
        for (i, (c, d)) in data.iter().enumerate() {
            let x = left + i as f64 * slot + 1.0;
            let ch = (*c as f64 / max) * (h - bottom - 6.0);
            let dh = (*d as f64 / max) * (h - bottom - 6.0);
            let base = h - bottom;
            if *c > 0 {
                bars.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ch:.1}\" fill=\"#1f8a4c\"><title>{c} completed</title></rect>",
                    base - ch,
                    slot - 2.0
                ));
            }
            if *d > 0 {
                bars.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{dh:.1}\" fill=\"#c53030\"><title>{d} dead</title></rect>",
                    base - ch - dh,
                    slot - 2.0
                ));
            }
        }
        let total: (u64, u64) = data
            .iter()
            .fold((0, 0), |acc, (c, d)| (acc.0 + c, acc.1 + d));
        html! {
            div.chart {
                svg width="100%" viewBox=(format!("0 0 {w} {h}")) role="img"
                    aria-label="jobs completed and dead per minute over the last hour" {
                    line x1=(left) y1=(h - bottom) x2=(w) y2=(h - bottom) stroke="#d9dde5" {}
                    line x1=(left) y1="6" x2=(left) y2=(h - bottom) stroke="#d9dde5" {}
                    text x=(left - 4.0) y="12" text-anchor="end" { (max as u64) }
                    text x=(left - 4.0) y=(h - bottom) text-anchor="end" { "0" }
                    text x=(left) y=(h - 4.0) { "60 min ago" }
                    text x=(left + (w - left) / 2.0) y=(h - 4.0) text-anchor="middle" { "30 min ago" }
                    text x=(w) y=(h - 4.0) text-anchor="end" { "now" }
                    (PreEscaped(bars))
                }
                div.legend {
                    span { i.c {} "completed: " (total.0) }
                    span { i.d {} "dead: " (total.1) }
                    span { "sampled by this console every few seconds; " (self.len()) " samples held" }
                }
            }
        }
    }
}
