//! What every benchmark under `crates/*/benches/` shares: the median of its rounds and the
//! JSON report `scripts/bench` collects.
//!
//! A report is a JSON array with one object per figure, with the keys `name`, `metric`,
//! `unit`, `higher_is_better`, `ours`, `baseline`, `baseline_label`, `ratio` and `params`
//! ([`Entry`] builds one). `scripts/bench` names the file in `$WHARF_BENCH_OUT`;
//! [`write_report`] writes it there.
//!
//! ```no_run
//! use wharf_testkit::bench::{Entry, median, write_report};
//!
//! # fn main() -> std::io::Result<()> {
//! let entry = Entry {
//!     name: "my-bench".into(),
//!     metric: "messages_per_second".into(),
//!     unit: "msg/s".into(),
//!     higher_is_better: true,
//!     ours: median(&[980.0, 1010.0, 1000.0]),
//!     baseline: median(&[490.0, 505.0, 500.0]),
//!     baseline_label: "the raw client".into(),
//!     params: serde_json::json!({ "rounds": 3 }),
//! };
//! if let Some(path) = write_report(&[entry.to_json()])? {
//!     println!("wrote {}", path.display());
//! }
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

/// The environment variable naming the report's path.
pub const OUT_VAR: &str = "WHARF_BENCH_OUT";

/// The median of `values`: the middle value of an odd count, the mean of the two middle
/// values of an even count, and `f64::NAN` for an empty slice (so a baseline that never ran
/// is written as `null`). Values are ordered with [`f64::total_cmp`], so a NaN among them
/// does not panic (positive NaNs sort last).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One figure of a report: wharf's result against a baseline measured in the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The benchmark's name, as `scripts/bench` knows it (`sharded-dispatch`).
    pub name: String,
    /// What was measured (`messages_per_second`).
    pub metric: String,
    /// The unit of `ours` and `baseline` (`msg/s`).
    pub unit: String,
    /// Whether a larger figure is the better one.
    pub higher_is_better: bool,
    /// wharf's figure.
    pub ours: f64,
    /// The baseline's figure; `f64::NAN` when it could not be measured.
    pub baseline: f64,
    /// What the baseline is, precisely enough to reproduce it.
    pub baseline_label: String,
    /// The workload and settings (any JSON; an object by convention).
    pub params: serde_json::Value,
}

impl Entry {
    /// `ours / baseline`.
    pub fn ratio(&self) -> f64 {
        self.ours / self.baseline
    }

    /// The report's JSON object, with `ratio` added. A figure that is not finite (a NaN
    /// baseline, a ratio over a zero baseline) is written as `null`, JSON having no NaN.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "ours": self.ours,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": self.ratio(),
            "params": self.params,
        })
    }
}

/// Writes `entries` as a pretty-printed JSON array to the path in `$WHARF_BENCH_OUT`, creating
/// its parent directories, and returns that path; returns `Ok(None)` and writes nothing when
/// the variable is not set.
pub fn write_report(entries: &[serde_json::Value]) -> std::io::Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os(OUT_VAR) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    write_report_to(&path, entries)?;
    Ok(Some(path))
}

/// Writes `entries` as a pretty-printed JSON array to `path`, creating its parent directories.
pub fn write_report_to(path: &Path, entries: &[serde_json::Value]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(entries)?)
}

/// This process's resident set size in bytes, from `/proc/self/statm` (NaN where it cannot
/// be read): what the memory benchmarks measure before and after filling a structure.
pub fn rss_bytes() -> f64 {
    // SAFETY: sysconf has no preconditions; a failure answers -1, taken as 4 KiB pages.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as f64,
        _ => 4096.0,
    };
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn entry(ours: f64, baseline: f64) -> Entry {
        Entry {
            name: "bench".into(),
            metric: "messages_per_second".into(),
            unit: "msg/s".into(),
            higher_is_better: true,
            ours,
            baseline,
            baseline_label: "raw".into(),
            params: serde_json::json!({ "rounds": 3 }),
        }
    }

    #[test]
    fn median_of_an_odd_count_is_the_middle_value() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_two_middle_values() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn median_of_one_value_is_that_value() {
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn median_of_nothing_is_nan() {
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn median_does_not_reorder_its_input() {
        let values = [3.0, 1.0, 2.0];
        median(&values);
        assert_eq!(values, [3.0, 1.0, 2.0]);
    }

    #[test]
    fn an_entry_has_every_key_of_the_report_and_its_ratio() {
        let json = entry(300.0, 100.0).to_json();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "baseline",
                "baseline_label",
                "higher_is_better",
                "metric",
                "name",
                "ours",
                "params",
                "ratio",
                "unit"
            ]
        );
        assert_eq!(json["ratio"], 3.0);
    }

    #[test]
    fn an_entry_without_a_baseline_writes_null() {
        let json = entry(300.0, f64::NAN).to_json();
        assert!(json["baseline"].is_null() && json["ratio"].is_null());
    }

    #[test]
    fn write_report_to_creates_the_directory_and_writes_a_pretty_array() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/bench.json");
        let entries = [entry(2.0, 1.0).to_json()];

        write_report_to(&path, &entries).unwrap();

        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, serde_json::to_string_pretty(&entries).unwrap());
    }
}
