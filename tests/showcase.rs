//! The showcase (`examples/showcase/`, what `scripts/demo` runs) loses nothing on real
//! brokers, with and without chaos: every order Kafka acknowledged became one issued ticket,
//! one webhook event read back from SQS and one audit record read back from Pulsar.
//!
//! With `--trace`, every accepted order's spans form one connected trace (Kafka produce →
//! consume → actor → job → SQS emit + Pulsar produce), with and without chaos; and while
//! it runs, `/metrics` serves every crate's metrics to a Prometheus scrape and the web
//! console serves the live supervision tree and the clients' panels.
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
        "{} is missing: build it with `cargo build --example showcase --features full,otel` \
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
         --all-features, or cargo build --example showcase --features full,otel)",
        binary.display()
    );
    binary
}

/// A showcase running: its output lines as they come, and the whole output at the end.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    started: Instant,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// Starts the showcase with `args` (one at a time).
fn start_showcase(args: &[&str]) -> Running {
    let one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new(showcase_binary())
        .args(args)
        .args(["--quiet", "--drain", "90"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the showcase did not start");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut s = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            s.push_str(&line);
            s.push('\n');
            let _ = tx.send(line);
        }
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        out,
        err,
        started: Instant::now(),
        _one_at_a_time: one_at_a_time,
    }
}

impl Running {
    /// The first output line that starts with `prefix`, waiting for it at most until the
    /// run's [`LIMIT`]; `None` when the program ended or the limit passed without it.
    fn line_starting(&self, prefix: &str) -> Option<String> {
        loop {
            let left = LIMIT.checked_sub(self.started.elapsed())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits for the end (killing the program at [`LIMIT`]): (exit code, stdout + stderr).
    fn finish(mut self) -> (Option<i32>, String) {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if self.started.elapsed() > LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let output = format!(
            "{}\n--- stderr ---\n{}",
            self.out.join().unwrap(),
            self.err.join().unwrap()
        );
        let Some(status) = status else {
            panic!("the showcase did not finish within {LIMIT:?}:\n{output}");
        };
        (status.code(), output)
    }
}

/// Runs the showcase with `args`; answers (exit code, stdout + stderr).
fn run_showcase(args: &[&str]) -> (Option<i32>, String) {
    start_showcase(args).finish()
}

/// GET `path` from `addr` over plain HTTP/1.1 (bounded by timeouts): the status line and
/// the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    use std::io::Write as _;
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

/// The number in `line` after `before` (e.g. "320" in "trace: 320 of 320 ...").
fn number_after(line: &str, before: &str) -> Option<u64> {
    line.split_once(before)?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The orders Kafka acknowledged, from the summary's "orders produced" row.
fn orders_produced(output: &str) -> u64 {
    output
        .lines()
        .find(|l| l.starts_with("orders produced"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
        .unwrap_or(0)
}

/// Checks `--trace`'s report: every accepted order's spans form one connected trace, and
/// its SQS event and Pulsar record carry their sending spans' context.
fn assert_every_order_is_one_trace(output: &str) {
    let produced = orders_produced(output);
    let line = output
        .lines()
        .find(|l| l.contains("accepted orders form one connected trace"))
        .unwrap_or_else(|| panic!("no trace report:\n{output}"));
    assert_eq!(
        (number_after(line, "trace:"), number_after(line, " of ")),
        (Some(produced), Some(produced)),
        "every accepted order must be one connected trace: {line}\n{output}"
    );
    let carried = output
        .lines()
        .find(|l| l.contains("carry their sending span's context"))
        .unwrap_or_else(|| panic!("no report of the carried contexts:\n{output}"));
    assert_eq!(
        (
            number_after(carried, "trace:"),
            number_after(carried, " of ")
        ),
        (Some(produced), Some(produced)),
        "{carried}\n{output}"
    );
    // One order's tree, every stage in it, each under the one before.
    let tree: Vec<&str> = output
        .lines()
        .skip_while(|l| !l.starts_with("trace of order"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    let depth = |stage: &str| {
        tree.iter()
            .find(|l| {
                l.trim_start_matches([' ', '│', '├', '└', '─'])
                    .starts_with(stage)
            })
            .map(|l| l.find(stage).unwrap())
            .unwrap_or_else(|| panic!("the sampled tree has no {stage}:\n{output}"))
    };
    let chain = [
        "order_produce",
        "sharded_message",
        "customer_actor",
        "wharf_job",
    ];
    for pair in chain.windows(2) {
        assert!(
            depth(pair[0]) < depth(pair[1]),
            "{} is not under {}:\n{output}",
            pair[1],
            pair[0]
        );
    }
    assert!(depth("wharf_job") < depth("sqs_emit"), "{output}");
    assert!(depth("wharf_job") < depth("pulsar_produce"), "{output}");
}

/// The summary's last line: `lost: N`.
fn lost_line(output: &str) -> Option<&str> {
    output.lines().rev().find(|l| l.starts_with("lost: "))
}

/// What a Prometheus scrape of the running showcase must show: a series of each crate's
/// (names from the crates' `metrics` modules), the gauges an operator watches among them.
const SCRAPED: [&str; 9] = [
    wharf::core::metrics::CHILD_STARTS,
    wharf::kafka_wrapper::metrics::CONSUMER_LAG,
    wharf::sharded_consumer::metrics::KEYS_ACTIVE,
    wharf::job_partition::metrics::JOBS,
    wharf::job_partition::metrics::QUEUE_DEPTH,
    wharf::webhooks_emitter::metrics::BUFFERED,
    wharf::producer_ack::metrics::PENDING,
    wharf::producer_ack::metrics::WINDOW,
    wharf::producer_ack::metrics::ACKNOWLEDGED,
];

#[test]
fn without_faults_every_order_becomes_one_ticket_one_event_and_one_audit_record() {
    let running = start_showcase(&[
        "--duration",
        "10",
        "--rate",
        "50",
        "--customers",
        "20",
        "--trace",
    ]);
    // While it runs, Prometheus can scrape every crate's metrics at the printed address.
    let metrics = running.line_starting("metrics: http://");
    let scraped = metrics.as_deref().map(|line| {
        let addr = line
            .trim_start_matches("metrics: http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = http_get(&addr, "/metrics").unwrap();
            let missing: Vec<&str> = SCRAPED
                .iter()
                .copied()
                .filter(|name| !body.lines().any(|l| l.starts_with(name)))
                .collect();
            if missing.is_empty() || Instant::now() > deadline {
                break (status, missing, body);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    // The operator's console serves the live supervision tree and the clients' panels.
    let console = running.line_starting("console: http://").map(|line| {
        let addr = line
            .trim_start_matches("console: http://")
            .trim_end_matches('/')
            .to_owned();
        let tree = http_get(&addr, "/service/tree").unwrap();
        let clients = http_get(&addr, "/service/clients").unwrap();
        (tree, clients)
    });
    let (code, output) = running.finish();
    let (status, missing, body) =
        scraped.unwrap_or_else(|| panic!("no `metrics:` line:\n{output}"));
    let ((tree_status, tree), (clients_status, clients)) =
        console.unwrap_or_else(|| panic!("no `console:` line:\n{output}"));
    assert!(tree_status.contains(" 200 "), "{tree_status}\n{tree}");
    for child in [
        "kafka", "webhooks", "audit", "worker-a", "worker-b", "orders", "load",
    ] {
        assert!(
            tree.contains(child),
            "the console's tree lacks {child}:\n{tree}"
        );
    }
    assert!(
        clients_status.contains(" 200 "),
        "{clients_status}\n{clients}"
    );
    assert!(
        clients.contains("audit") && clients.contains("webhooks"),
        "{clients}"
    );
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(
        missing.is_empty(),
        "series missing from /metrics: {missing:?}\n{body}"
    );
    assert!(
        body.contains("# TYPE wharf_kafka_consumer_lag gauge"),
        "{body}"
    );

    assert_eq!(lost_line(&output), Some("lost: 0"), "{output}");
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("issued twice: 0"), "{output}");
    let produced = orders_produced(&output);
    assert!(
        produced >= 400,
        "expected about 500 orders, saw {produced}:\n{output}"
    );
    assert_every_order_is_one_trace(&output);
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
        "--trace",
    ]);
    assert_eq!(lost_line(&output), Some("lost: 0"), "{output}");
    assert_eq!(code, Some(0), "{output}");
    for fault in [
        "Kafka connection cut",
        "Kafka broker killed and restarted",
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
    // Faults retry and redeliver, within the order's trace: still one trace per order.
    assert_every_order_is_one_trace(&output);
}
