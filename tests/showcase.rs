//! The showcase (`examples/showcase/`, what `scripts/demo` runs) loses nothing on real
//! brokers, with and without chaos: every order Kafka acknowledged became one issued ticket,
//! one webhook event read back from SQS and one audit record read back from Pulsar.
//!
//! The tests run the example's binary, which `cargo test --workspace --all-features` (the
//! test command) builds together with the tests. They run one at a time: each starts its own
//! four brokers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One showcase at a time (each runs four brokers on a 2-core budget).
static SERIAL: Mutex<()> = Mutex::new(());

/// A run never takes longer than this: load + drain + broker start-up and read-back.
const LIMIT: Duration = Duration::from_secs(240);

/// The example binary built next to this test (`target/<profile>/examples/showcase`).
fn showcase_binary() -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/showcase-<hash> -> target/<profile>/examples/showcase
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("examples").join("showcase");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --example showcase --features full` \
         (cargo test --workspace --all-features builds it)",
        binary.display()
    );
    // Its sources are the files of examples/showcase/: the binary must be newer than each.
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/showcase");
    let built = binary.metadata().and_then(|m| m.modified()).unwrap();
    let edited = std::fs::read_dir(&sources)
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .metadata()
                .and_then(|m| m.modified())
                .unwrap()
        })
        .max()
        .expect("examples/showcase/ has the example's files");
    assert!(
        built >= edited,
        "{} is older than a file of examples/showcase/: rebuild it (cargo test --workspace \
         --all-features, or cargo build --example showcase --features full)",
        binary.display()
    );
    binary
}

/// Runs the showcase with `args`; answers (exit code, stdout + stderr).
fn run_showcase(args: &[&str]) -> (Option<i32>, String) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new(showcase_binary())
        .args(args)
        .args(["--quiet", "--drain", "90"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the showcase did not start");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = format!(
        "{}\n--- stderr ---\n{}",
        out.join().unwrap(),
        err.join().unwrap()
    );
    let Some(status) = status else {
        panic!("the showcase did not finish within {LIMIT:?}:\n{output}");
    };
    (status.code(), output)
}

/// The summary's last line: `lost: N`.
fn lost_line(output: &str) -> Option<&str> {
    output.lines().rev().find(|l| l.starts_with("lost: "))
}

#[test]
fn without_faults_every_order_becomes_one_ticket_one_event_and_one_audit_record() {
    let (code, output) = run_showcase(&["--duration", "10", "--rate", "50", "--customers", "20"]);
    assert_eq!(lost_line(&output), Some("lost: 0"), "{output}");
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("issued twice: 0"), "{output}");
    let produced = output
        .lines()
        .find(|l| l.starts_with("orders produced"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
        .unwrap_or(0);
    assert!(
        produced >= 400,
        "expected about 500 orders, saw {produced}:\n{output}"
    );
}

#[test]
fn with_chaos_every_fault_recovers_and_nothing_is_lost() {
    let (code, output) = run_showcase(&[
        "--duration",
        "15",
        "--rate",
        "50",
        "--customers",
        "20",
        "--chaos",
    ]);
    assert_eq!(lost_line(&output), Some("lost: 0"), "{output}");
    assert_eq!(code, Some(0), "{output}");
    for fault in [
        "Kafka connection cut",
        "Pulsar broker killed and restarted",
        "SQS unreachable",
        "job worker worker-b killed",
    ] {
        let line = output
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(fault))
            .unwrap_or_else(|| panic!("the summary does not list the fault {fault:?}:\n{output}"));
        assert!(
            line.contains(" s after"),
            "{fault} did not recover: {line}\n{output}"
        );
    }
}
