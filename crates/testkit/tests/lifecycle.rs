//! Broker processes never outlive the test binary that started them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

const HELPER_VAR: &str = "WHARF_TESTKIT_LIFECYCLE_HELPER";

/// Run by `brokers_die_when_the_test_binary_aborts` in a child test process.
#[test]
#[ignore = "helper for brokers_die_when_the_test_binary_aborts"]
fn helper_start_brokers_then_abort() {
    // Only as the child of the test below: `--include-ignored` must not abort the whole binary.
    if std::env::var_os(HELPER_VAR).is_none() {
        return;
    }
    let shared = wharf_testkit::redis().unwrap();
    let owned = wharf_testkit::RedisServer::start().unwrap();
    let kafka = wharf_testkit::Tansu::start().unwrap();
    let pulsar = wharf_testkit::PulsarLite::start().unwrap();
    let sqs = wharf_testkit::Moto::start().unwrap();
    // Started on another thread than this test's: it must survive that thread's end but not
    // the process's.
    let from_thread = std::thread::spawn(wharf_testkit::RedisServer::start)
        .join()
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        from_thread.is_running(),
        "a broker died with the thread that started it"
    );
    let pids = [
        shared.pid(),
        owned.pid(),
        kafka.pid(),
        pulsar.pid(),
        sqs.pid(),
        from_thread.pid(),
    ];
    let pids: Vec<String> = pids.iter().map(|p| p.unwrap().to_string()).collect();
    println!("PIDS {}", pids.join(" "));
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

#[test]
fn brokers_die_when_the_test_binary_aborts() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_start_brokers_then_abort",
            "--nocapture",
        ])
        .env_remove(wharf_testkit::BrokerKind::Redis.override_var())
        .env_remove("WHARF_BIN_DIR")
        .env(HELPER_VAR, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pids: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .unwrap_or_else(|| {
            panic!(
                "helper printed no PIDS: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 6);
    assert!(!output.status.success(), "the helper should have aborted");

    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids {
        while process_exists(pid) {
            assert!(
                Instant::now() < deadline,
                "broker process {pid} outlived the aborted test binary"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A live process that is not a zombie.
fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
