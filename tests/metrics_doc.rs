//! Each crate's guide (`docs/<crate>.md`) has a table of its metrics; the crate's `metrics`
//! module (`crates/<crate>/src/metrics.rs`) is the source: one documented constant per
//! metric, whose doc opens with `<Type>, in <unit>:` and ends with `Labels: ...` or
//! `No labels.`. This checks every table against the constants (a missing row, an extra
//! row, a wrong type, unit or labels fails, naming the row), that every constant's doc has
//! that shape, and that no metric name is spelled as a string anywhere else in the crates'
//! code (sources, tests, benches): the name is written once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crates with a `metrics` module and a guide.
const CRATES: &[&str] = &[
    "core",
    "job-partition",
    "kafka-wrapper",
    "producer-ack",
    "sharded-consumer",
    "webhooks-emitter",
];

/// The header of the metrics table in every guide.
const HEADER: &str = "| name | type | unit | labels | what moves it |";

/// What the page and the module both say of one metric.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Metric {
    kind: String,
    unit: String,
    labels: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The backticked names in `text`, in order: "`a`, `b`" is `[a, b]`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The metrics a module declares, by name (None: its doc lacks the shape the table is
/// checked against, which `errors` gets).
fn constants(
    source: &str,
    file: &str,
    errors: &mut Vec<String>,
) -> BTreeMap<String, Option<Metric>> {
    let mut found = BTreeMap::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in source.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
            continue;
        }
        let Some(rest) = line.strip_prefix("pub const ") else {
            doc.clear();
            continue;
        };
        let Some((constant, value)) = rest.split_once(": &str = \"") else {
            doc.clear();
            continue;
        };
        let name = value.trim_end_matches("\";").to_owned();
        let metric = parse_doc(&doc)
            .map_err(|why| errors.push(format!("{file}: `{constant}` ({name}): {why}")))
            .ok();
        found.insert(name, metric);
        doc.clear();
    }
    found
}

/// Type and unit from the doc's first line, labels from its last.
fn parse_doc(doc: &[&str]) -> Result<Metric, String> {
    let first = doc.first().ok_or("no doc comment")?;
    let (kind, rest) = first
        .split_once(", in ")
        .ok_or("its doc does not open with `<Type>, in <unit>:`")?;
    let unit = rest
        .split_once(':')
        .map(|(unit, _)| unit)
        .ok_or("its doc does not open with `<Type>, in <unit>:`")?;
    let kind = kind.to_lowercase();
    if !["counter", "gauge", "histogram"].contains(&kind.as_str()) {
        return Err(format!("type `{kind}` is not Counter, Gauge or Histogram"));
    }
    let last = doc.last().copied().unwrap_or_default();
    let labels = if last == "No labels." {
        Vec::new()
    } else if let Some(list) = last.strip_prefix("Labels: ") {
        backticked(list)
    } else {
        return Err("its doc does not end with `Labels: ...` or `No labels.`".into());
    };
    Ok(Metric {
        kind,
        unit: unit.to_owned(),
        labels,
    })
}

/// The rows of the guide's metrics table, by name, with their line numbers.
fn table(page: &str, file: &str) -> Result<BTreeMap<String, (usize, Metric)>, String> {
    let mut lines = page.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.trim() == HEADER)
        .ok_or_else(|| format!("{file}: no metrics table (a table headed `{HEADER}`)"))?;
    lines.next(); // | --- | ...
    let mut rows = BTreeMap::new();
    for (n, line) in lines {
        let Some(inner) = line.trim().strip_prefix('|') else {
            break;
        };
        let cells: Vec<&str> = inner.split('|').map(str::trim).collect();
        let [name, kind, unit, labels, ..] = cells[..] else {
            return Err(format!("{file}:{}: a row needs five cells: {line}", n + 1));
        };
        let labels = if labels == "none" {
            Vec::new()
        } else {
            backticked(labels)
        };
        let metric = Metric {
            kind: kind.to_owned(),
            unit: unit.to_owned(),
            labels,
        };
        rows.insert(name.trim_matches('`').to_owned(), (n + 1, metric));
    }
    Ok(rows)
}

fn show(m: &Metric) -> String {
    let labels = if m.labels.is_empty() {
        "none".to_owned()
    } else {
        m.labels.join(", ")
    };
    format!("{} | {} | {labels}", m.kind, m.unit)
}

/// Compares one crate's table with its constants.
fn check_crate(krate: &str, errors: &mut Vec<String>) -> Vec<String> {
    let module = format!("crates/{krate}/src/metrics.rs");
    let guide = format!("docs/{krate}.md");
    let declared = constants(&read(&root().join(&module)), &module, errors);
    if declared.is_empty() {
        errors.push(format!(
            "{module}: no `pub const NAME: &str = \"...\";` found"
        ));
    }
    let rows = match table(&read(&root().join(&guide)), &guide) {
        Ok(rows) => rows,
        Err(e) => {
            errors.push(e);
            return declared.into_keys().collect();
        }
    };
    for (name, metric) in &declared {
        let Some(metric) = metric else { continue };
        match rows.get(name) {
            None => errors.push(format!(
                "{guide}: no row for `{name}` (declared in {module}: [{}])",
                show(metric)
            )),
            Some((line, row)) if row != metric => errors.push(format!(
                "{guide}:{line}: row `{name}` says [{}], {module} says [{}]",
                show(row),
                show(metric)
            )),
            Some(_) => {}
        }
    }
    for (name, (line, _)) in &rows {
        if !declared.contains_key(name) {
            errors.push(format!(
                "{guide}:{line}: row `{name}` is not a constant of {module}"
            ));
        }
    }
    declared.into_keys().collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_guide_lists_its_crates_metrics_as_the_constants_declare_them() {
    let mut errors = Vec::new();
    let mut names = Vec::new();
    for krate in CRATES {
        names.extend(check_crate(krate, &mut errors));
    }
    assert!(
        errors.is_empty(),
        "the metrics tables disagree with the metrics modules:\n{}",
        errors.join("\n")
    );
    assert!(names.len() > 40, "only {} metrics found", names.len());
}

#[test]
fn no_metric_name_is_spelled_outside_its_metrics_module() {
    // The tables' disagreements are the other test's to report.
    let mut names = Vec::new();
    for krate in CRATES {
        names.extend(check_crate(krate, &mut Vec::new()));
    }
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for krate in CRATES.iter().chain(&["testkit"]) {
        rust_files(&root().join("crates").join(krate), &mut files);
    }
    for file in files {
        if file.ends_with("src/metrics.rs") {
            continue;
        }
        let text = read(&file);
        for name in &names {
            if text.contains(&format!("\"{name}\"")) {
                errors.push(format!(
                    "{}: spells \"{name}\"; use the constant of the crate's `metrics` module",
                    file.strip_prefix(root()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
