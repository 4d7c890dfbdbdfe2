//! docs/RELIABILITY.md cites the tests that back each promise; this keeps it honest: every
//! cited test must exist where the page says, so renaming or deleting a test that backs a
//! promise fails here until the page is updated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// One citation: where the page says a test lives.
#[derive(Debug)]
struct Citation {
    line: usize,
    text: String,
    file: PathBuf,
    /// `None` for "`src/FILE.rs` unit tests": the file must hold tests.
    function: Option<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The crate folder a `## ...` heading stands for: `## wharf-job-partition` is
/// `crates/job-partition`; any other heading means the workspace root.
fn section_dir(heading: &str) -> Option<PathBuf> {
    let name = heading.trim_start_matches('#').trim();
    let krate = name.strip_prefix("wharf-")?;
    Some(root().join("crates").join(krate))
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_rust_path(s: &str) -> bool {
    s.ends_with(".rs")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-'))
}

/// Parses one backticked token into a citation, if it is one. `FILE::NAME` and `src/...` are
/// the section's crate's; a path into `tests/` (`tests/FILE.rs::NAME`) is the workspace's own
/// tests folder in every section, where tests that join several crates live.
fn citation(dir: &Option<PathBuf>, line: usize, token: &str) -> Option<Citation> {
    let crate_dir = dir.clone().unwrap_or_else(|| root().to_path_buf());
    let (place, function) = match token.split_once("::") {
        Some((place, function)) if is_ident(function) => (place, Some(function.to_owned())),
        Some(_) => return None,
        None if is_rust_path(token)
            && (token.starts_with("src/") || token.starts_with("tests/")) =>
        {
            (token, None)
        }
        None => return None,
    };
    let file = if is_rust_path(place) && place.starts_with("tests/") {
        root().join(place)
    } else if is_rust_path(place) {
        crate_dir.join(place)
    } else if is_ident(place) {
        crate_dir.join("tests").join(format!("{place}.rs"))
    } else {
        return None;
    };
    Some(Citation {
        line,
        text: token.to_owned(),
        file,
        function,
    })
}

fn citations(page: &str) -> Vec<Citation> {
    let mut dir = None;
    let mut found = Vec::new();
    for (n, line) in page.lines().enumerate() {
        if line.starts_with("## ") {
            dir = section_dir(line);
            continue;
        }
        // Only table rows cite tests; prose may show code.
        if !line.starts_with('|') {
            continue;
        }
        for (i, token) in line.split('`').enumerate() {
            if i % 2 == 1
                && let Some(c) = citation(&dir, n + 1, token)
            {
                found.push(c);
            }
        }
    }
    found
}

fn holds(c: &Citation) -> Result<(), String> {
    let source = std::fs::read_to_string(&c.file)
        .map_err(|e| format!("{} ({}): {e}", c.text, c.file.display()))?;
    let ok = match &c.function {
        Some(f) => source.contains(&format!("fn {f}(")),
        None => {
            source.contains("#[test]")
                || source.contains("#[tokio::test")
                || source.contains("proptest!")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "line {}: `{}`: {} has no {}",
            c.line,
            c.text,
            c.file.display(),
            c.function
                .as_deref()
                .map_or("tests".to_owned(), |f| format!("fn {f}"))
        ))
    }
}

#[test]
fn every_test_the_reliability_page_cites_exists() {
    let page = std::fs::read_to_string(root().join("docs/RELIABILITY.md")).unwrap();
    let cited = citations(&page);
    // Every crate's section cites many tests: a parser that found few is broken, not done.
    assert!(
        cited.len() > 150,
        "only {} citations found: is the table format unchanged?",
        cited.len()
    );
    let missing: Vec<String> = cited.iter().filter_map(|c| holds(c).err()).collect();
    assert!(
        missing.is_empty(),
        "docs/RELIABILITY.md cites tests that do not exist ({} of {}):\n{}",
        missing.len(),
        cited.len(),
        missing.join("\n")
    );
}

#[test]
fn a_renamed_test_is_caught() {
    let page = "## wharf-core\n| p | `supervision::no_such_test_exists_here` | - | - |\n";
    let cited = citations(page);
    assert_eq!(cited.len(), 1);
    assert!(holds(&cited[0]).is_err());
    let page = "## wharf-core\n| p | `supervision::duplicate_child_ids_are_refused` | - | - |\n";
    assert!(holds(&citations(page)[0]).is_ok());
}

#[test]
fn a_workspace_test_cited_in_a_crate_section_is_found_in_the_workspace_tests() {
    let page = "## wharf-sharded-consumer\n\
                | p | `tests/sharded_kafka.rs::two_consumers_in_one_group_handle_each_key_on_exactly_one_of_them`, \
                `consumer::errors_name_the_key_plainly` | - | - |\n";
    let cited = citations(page);
    assert_eq!(cited.len(), 2);
    assert_eq!(cited[0].file, root().join("tests/sharded_kafka.rs"));
    assert_eq!(
        cited[1].file,
        root().join("crates/sharded-consumer/tests/consumer.rs")
    );
    for c in &cited {
        assert!(holds(c).is_ok(), "{:?}", holds(c));
    }
}
