//! What both Pulsar benchmarks share: the broker, medians, the JSON report.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The broker: `$WHARF_PULSAR_URL`, or a pulsar-lite of our own (kept alive by the guard).
pub fn broker() -> (String, Option<wharf_testkit::PulsarLite>) {
    if let Ok(url) = std::env::var("WHARF_PULSAR_URL") {
        return (url, None);
    }
    let broker = wharf_testkit::PulsarLite::start().expect("pulsar-lite starts");
    (broker.url(), Some(broker))
}

pub fn topic(prefix: &str) -> String {
    format!(
        "persistent://public/default/{}",
        wharf_testkit::unique_name(prefix)
    )
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One figure of the report.
pub struct Figure {
    pub name: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub ours: f64,
    pub baseline: f64,
    pub baseline_label: String,
    pub params: serde_json::Value,
}

/// Prints the table and writes the JSON array to `$WHARF_BENCH_OUT` when set.
pub fn report(figures: &[Figure]) {
    println!(
        "\n{:<16} {:<20} {:>14} {:>14} {:>7}  baseline",
        "bench", "metric", "ours", "baseline", "ratio"
    );
    let mut json = Vec::new();
    for f in figures {
        let ratio = f.ours / f.baseline;
        println!(
            "{:<16} {:<20} {:>14.1} {:>14.1} {:>7.3}  {}",
            f.name, f.metric, f.ours, f.baseline, ratio, f.baseline_label
        );
        json.push(serde_json::json!({
            "name": f.name,
            "metric": f.metric,
            "unit": f.unit,
            "higher_is_better": f.higher_is_better,
            "ours": f.ours,
            "baseline": f.baseline,
            "baseline_label": f.baseline_label,
            "ratio": ratio,
            "params": f.params,
        }));
    }
    if let Ok(path) = std::env::var("WHARF_BENCH_OUT") {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        println!("wrote {}", path.display());
    }
}

/// The python of the git-ignored venv holding `pulsar-client`, installed on first use.
pub fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../../.wharf/venv-pulsar-client/bin/python");
    if !python.exists() {
        let installed = std::process::Command::new("bash")
            .arg(root.join("benches/install_pulsar_client.sh"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !installed {
            eprintln!("pulsar-client could not be installed: no peer figure");
            return None;
        }
    }
    Some(python)
}
