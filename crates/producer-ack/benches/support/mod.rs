//! What both Pulsar benchmarks share: the broker, the percentiles, the report's table (medians
//! and the JSON file come from `wharf_testkit::bench`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use wharf_testkit::bench::{self, Entry};

/// The broker: `$WHARF_TEST_PULSAR_URL`, or a pulsar-lite of our own (kept alive by the guard).
pub fn broker() -> (String, Option<wharf_testkit::PulsarLite>) {
    if let Ok(url) = std::env::var(wharf_testkit::BrokerKind::Pulsar.override_var()) {
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

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints the table and writes the JSON array to `$WHARF_BENCH_OUT` when set.
pub fn report(figures: &[Entry]) {
    println!(
        "\n{:<16} {:<20} {:>14} {:>14} {:>7}  baseline",
        "bench", "metric", "ours", "baseline", "ratio"
    );
    let mut json = Vec::new();
    for f in figures {
        println!(
            "{:<16} {:<20} {:>14.1} {:>14.1} {:>7.3}  {}",
            f.name,
            f.metric,
            f.ours,
            f.baseline,
            f.ratio(),
            f.baseline_label
        );
        json.push(f.to_json());
    }
    if let Some(path) = bench::write_report(&json).unwrap() {
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
