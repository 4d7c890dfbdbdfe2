//! Test support: a real `redis-server` per test binary (wharf-testkit), a client per test,
//! and the job types the tests run.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wharf_job_partition::{Config, Jobs};

/// The URL of this test binary's Redis: wharf-testkit's shared `redis-server` (or
/// `WHARF_REDIS_URL`, which worker processes spawned by the tests inherit).
pub fn redis_url() -> String {
    wharf_testkit::redis()
        .expect("start redis-server (run scripts/install)")
        .address()
        .to_owned()
}

/// A connected client.
pub async fn jobs() -> Jobs {
    Jobs::connect(Config::new(redis_url())).await.unwrap()
}

/// A partition name no other test uses.
pub fn partition(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---- job types used by the tests ----------------------------------------------------------

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use wharf_job_partition::{Job, JobContext, JobError};

/// Each test registers the client its jobs should use, under its partition (clients are
/// bound to the test's runtime).
static CLIENTS: OnceLock<Mutex<HashMap<String, Jobs>>> = OnceLock::new();

pub fn register_client(partition: &str, jobs: &Jobs) {
    CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert(partition.to_owned(), jobs.clone());
}

pub fn client(partition: &str) -> Jobs {
    CLIENTS
        .get()
        .unwrap()
        .lock()
        .unwrap()
        .get(partition)
        .cloned()
        .unwrap()
}

pub async fn cmd<T: redis::FromRedisValue>(jobs: &Jobs, c: &mut redis::Cmd) -> T {
    let v = jobs.raw(c).await.unwrap();
    redis::FromRedisValue::from_redis_value(v).unwrap()
}

/// Records its run: bumps `<p>:runs` field n, tracks how many run at once (`<p>:cur`,
/// high-water mark `<p>:max`), optionally sleeps, fails the first `fail_times` attempts.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Record {
    pub n: u64,
    pub sleep_ms: u64,
    pub fail_times: u32,
    pub qkey: Option<String>,
    pub xkey: Option<String>,
    pub timeout_ms: Option<u64>,
    pub attempts: Option<u32>,
}

const ENTER: &str = "local c = redis.call('INCR', KEYS[1]) \
    if c > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], c) end return c";

impl Job for Record {
    const NAME: &'static str = "record";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let p = ctx.partition().to_owned();
        let jobs = client(&p);
        let _: i64 = cmd(
            &jobs,
            redis::cmd("EVAL")
                .arg(ENTER)
                .arg(2)
                .arg(format!("{{{p}}}:cur"))
                .arg(format!("{{{p}}}:max")),
        )
        .await;
        let _: i64 = cmd(
            &jobs,
            redis::cmd("HINCRBY")
                .arg(format!("{{{p}}}:starts"))
                .arg(self.n)
                .arg(1),
        )
        .await;
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        let _: i64 = cmd(&jobs, redis::cmd("DECR").arg(format!("{{{p}}}:cur"))).await;
        if ctx.attempt() <= self.fail_times {
            return Err(format!("planned failure {}", ctx.attempt()).into());
        }
        let _: i64 = cmd(
            &jobs,
            redis::cmd("HINCRBY")
                .arg(format!("{{{p}}}:runs"))
                .arg(self.n)
                .arg(1),
        )
        .await;
        Ok(())
    }

    fn queue_key(&self) -> Option<String> {
        self.qkey.clone()
    }
    fn execution_key(&self) -> Option<String> {
        self.xkey.clone()
    }
    fn max_execution_time(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
    fn max_attempts(&self) -> u32 {
        self.attempts.unwrap_or(5)
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::from_millis(50)
    }
}

/// Appends its seq to `<p>:order:<key>` while holding execution key `key`, and flags any
/// overlap with another job of the same key in `<p>:overlap`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Ordered {
    pub key: u32,
    pub seq: u32,
    pub sleep_ms: u64,
}

impl Job for Ordered {
    const NAME: &'static str = "ordered";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let p = ctx.partition().to_owned();
        let jobs = client(&p);
        let inside: i64 = cmd(
            &jobs,
            redis::cmd("INCR").arg(format!("{{{p}}}:in:{}", self.key)),
        )
        .await;
        if inside != 1 {
            let _: i64 = cmd(&jobs, redis::cmd("INCR").arg(format!("{{{p}}}:overlap"))).await;
        }
        let _: i64 = cmd(
            &jobs,
            redis::cmd("RPUSH")
                .arg(format!("{{{p}}}:order:{}", self.key))
                .arg(self.seq),
        )
        .await;
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        let _: i64 = cmd(
            &jobs,
            redis::cmd("DECR").arg(format!("{{{p}}}:in:{}", self.key)),
        )
        .await;
        Ok(())
    }

    fn execution_key(&self) -> Option<String> {
        Some(format!("k{}", self.key))
    }
}
