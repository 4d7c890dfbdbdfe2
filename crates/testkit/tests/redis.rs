//! Redis: the shared server and owned servers answer the real `redis` client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wharf_testkit::{RedisServer, unique_name};

const STEP: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    tokio::time::timeout(STEP, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}

async fn ping(url: &str) -> redis::RedisResult<String> {
    let mut con = connect(url).await?;
    tokio::time::timeout(STEP, redis::cmd("PING").query_async(&mut con))
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}

#[tokio::test]
async fn the_shared_redis_answers_set_and_get() {
    let redis = wharf_testkit::redis().unwrap();
    let key = unique_name("smoke");
    let mut con = connect(redis.address()).await.unwrap();

    let () = tokio::time::timeout(STEP, con.set(&key, "value"))
        .await
        .unwrap()
        .unwrap();
    let got: String = tokio::time::timeout(STEP, con.get(&key))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(got, "value");
}

#[tokio::test]
async fn every_test_gets_the_same_shared_redis() {
    let first = wharf_testkit::redis().unwrap();
    let second =
        tokio::task::spawn_blocking(|| wharf_testkit::redis().unwrap().address().to_owned())
            .await
            .unwrap();
    assert_eq!(first.address(), second);
    if !first.is_external() {
        assert!(first.address().starts_with("redis://127.0.0.1:"), "{first}");
    }
}

#[tokio::test]
async fn an_owned_redis_restarts_on_the_same_port_after_a_kill() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    assert_eq!(ping(&url).await.unwrap(), "PONG");

    redis.kill().unwrap();
    assert!(!redis.is_running());
    assert!(ping(&url).await.is_err(), "Redis still answers after kill");

    redis.restart().unwrap();
    assert!(redis.is_running());
    assert_eq!(redis.url(), url);
    assert_eq!(ping(&url).await.unwrap(), "PONG");
}

#[tokio::test]
async fn an_owned_redis_stops_gracefully() {
    let redis = RedisServer::start().unwrap();
    redis.stop().unwrap();
    assert!(!redis.is_running());
    assert_eq!(redis.pid(), None);
    assert!(
        redis.log_tail().contains("Redis"),
        "log: {}",
        redis.log_tail()
    );
}

#[tokio::test]
async fn a_redis_behind_the_proxy_is_reached_through_it() {
    let redis = RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    assert!(redis.url().contains(&proxy.port().to_string()));

    assert_eq!(ping(&redis.url()).await.unwrap(), "PONG");
    assert_eq!(proxy.connections_accepted(), 1);

    proxy.down().unwrap();
    assert!(
        ping(&redis.url()).await.is_err(),
        "Redis reachable while the proxy is down"
    );
    proxy.restore().unwrap();
    assert_eq!(ping(&redis.url()).await.unwrap(), "PONG");
}

#[test]
fn dropping_an_owned_redis_kills_it_and_removes_its_directory() {
    let redis = RedisServer::start().unwrap();
    let pid = redis.pid().unwrap();
    let dir = redis.dir().to_path_buf();
    drop(redis);
    assert!(
        !process_exists(pid),
        "redis-server {pid} still running after drop"
    );
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
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

#[tokio::test]
async fn an_owned_redis_takes_extra_arguments_and_a_password_protected_one_counts_as_ready() {
    let redis = RedisServer::start_with_args(&["--requirepass", "s3cret-pw"]).unwrap();

    let refused = ping(&redis.url()).await.unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("auth"),
        "{refused}"
    );
    let authed = format!("redis://:s3cret-pw@127.0.0.1:{}/", redis.port());
    assert_eq!(ping(&authed).await.unwrap(), "PONG");
}

#[test]
fn an_owned_tls_redis_answers_over_tls_with_a_certificate_of_its_ca_for_127_0_0_1() {
    let redis = RedisServer::start_tls().unwrap();
    let ca = redis.tls_ca_certificate().unwrap();
    let port = redis.port().to_string();
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{port}/"));
    assert!(ca.exists(), "{} missing", ca.display());

    // A verified handshake: the chain ends at the kit's CA and the certificate names the IP.
    let handshake = run(Command::new("openssl").args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-CAfile",
        &ca.display().to_string(),
        "-verify_ip",
        "127.0.0.1",
        "-verify_return_error",
    ]));
    assert!(
        handshake.contains("Verify return code: 0 (ok)"),
        "{handshake}"
    );

    // Redis itself over TLS; plain text gets no answer.
    let pong = run(Command::new("redis-cli").args([
        "--tls",
        "--cacert",
        &ca.display().to_string(),
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "PING",
    ]));
    assert_eq!(pong.trim(), "PONG");
    let plain = run(Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port, "PING"]));
    assert!(!plain.contains("PONG"), "{plain}");
}

/// Runs a command with stdin closed and a deadline; its stdout and stderr.
fn run(command: &mut Command) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{command:?} did not finish within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
