//! Test support: a real `redis-server` per test binary (wharf-testkit), a client per test,
//! and the job types the tests run.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wharf_job_partition::{Config, Jobs};
pub use wharf_testkit::eventually;

/// The response timeout of the tests' clients: short enough for the 3 s leases the tests
/// use (a lease must cover margin + response timeout + 2 heartbeats), long enough for a
/// loaded machine.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The URL of this test binary's Redis: wharf-testkit's shared `redis-server` (or
/// `WHARF_TEST_REDIS_URL`, which worker processes spawned by the tests are given).
pub fn redis_url() -> String {
    wharf_testkit::redis()
        .expect("start redis-server (run scripts/install)")
        .address()
        .to_owned()
}

/// A connected client.
pub async fn jobs() -> Jobs {
    Jobs::connect(Config::new(redis_url()).response_timeout(RESPONSE_TIMEOUT))
        .await
        .unwrap()
}

/// A partition name no other test uses.
pub fn partition(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

// ---- runs seen in this process ---------------------------------------------------------

/// One run of a job's `perform` in this process: when it started and when its code stopped
/// running (its future returned, or was dropped: aborted).
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub attempt: u32,
    pub started: Instant,
    pub ended: Option<Instant>,
    pub aborted: bool,
}

static RUNS: OnceLock<Mutex<HashMap<String, Vec<Run>>>> = OnceLock::new();

/// The runs of a partition's jobs in this process so far.
pub fn runs(partition: &str) -> Vec<Run> {
    RUNS.get_or_init(Default::default)
        .lock()
        .unwrap()
        .get(partition)
        .cloned()
        .unwrap_or_default()
}

/// Records a run: created when `perform` starts; `done()` when it reaches its end. Dropped
/// without `done()` (the future was dropped mid-way), it records an abort.
pub struct RunGuard {
    partition: String,
    index: usize,
    /// Also count the abort in Redis (`{p}:aborted`), for runs in another process.
    mark_in_redis: bool,
    finished: bool,
}

impl RunGuard {
    pub fn start(ctx: &JobContext) -> Self {
        let mut all = RUNS.get_or_init(Default::default).lock().unwrap();
        let v = all.entry(ctx.partition().to_owned()).or_default();
        v.push(Run {
            id: ctx.id().to_owned(),
            attempt: ctx.attempt(),
            started: Instant::now(),
            ended: None,
            aborted: false,
        });
        Self {
            partition: ctx.partition().to_owned(),
            index: v.len() - 1,
            mark_in_redis: false,
            finished: false,
        }
    }

    fn end(&mut self, aborted: bool) {
        let mut all = RUNS.get_or_init(Default::default).lock().unwrap();
        if let Some(r) = all
            .get_mut(&self.partition)
            .and_then(|v| v.get_mut(self.index))
        {
            r.ended = Some(Instant::now());
            r.aborted = aborted;
        }
    }

    pub fn done(mut self) {
        self.finished = true;
        self.end(false);
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.end(true);
        if self.mark_in_redis {
            // A plain blocking connection: this runs in a destructor.
            let url = redis_url();
            let mut c = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection_with_timeout(Duration::from_secs(5))
                .unwrap();
            let _: i64 = redis::cmd("INCR")
                .arg(format!("{{{}}}:aborted", self.partition))
                .query(&mut c)
                .unwrap();
        }
    }
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

/// The most starts in any window of `window_ms` (start times in Redis ms).
pub fn max_per_window(mut starts: Vec<i64>, window_ms: i64) -> usize {
    starts.sort_unstable();
    (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|&&s| s < starts[i] + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Each job's start time (`started_at`, the claim's Redis time in ms).
pub async fn started_at(jobs: &Jobs, p: &str, ids: &[String]) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        let s: String = cmd(
            jobs,
            redis::cmd("HGET")
                .arg(format!("{{wharf:{p}}}:job:{id}"))
                .arg("started_at"),
        )
        .await;
        out.push(s.parse().unwrap());
    }
    out
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
    /// Count an abort in Redis too (`{p}:aborted`): for runs in another process.
    #[serde(default)]
    pub mark_abort: bool,
    /// Add the running process's id to the set `{p}:pids` (which processes ran the jobs).
    #[serde(default)]
    pub note_pid: bool,
}

const ENTER: &str = "local c = redis.call('INCR', KEYS[1]) \
    if c > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], c) end return c";

impl Job for Record {
    const NAME: &'static str = "record";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let mut guard = RunGuard::start(&ctx);
        guard.mark_in_redis = self.mark_abort;
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
        if self.note_pid {
            let _: i64 = cmd(
                &jobs,
                redis::cmd("SADD")
                    .arg(format!("{{{p}}}:pids"))
                    .arg(std::process::id()),
            )
            .await;
        }
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        let _: i64 = cmd(&jobs, redis::cmd("DECR").arg(format!("{{{p}}}:cur"))).await;
        if ctx.attempt() <= self.fail_times {
            guard.done();
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
        guard.done();
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

/// Blocks its thread (`std::thread::sleep`) for `block_ms`: job code no abort can reach.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Blocker {
    pub key: String,
    pub block_ms: u64,
    pub timeout_ms: u64,
    pub attempts: u32,
}

impl Job for Blocker {
    const NAME: &'static str = "blocker";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let guard = RunGuard::start(&ctx);
        std::thread::sleep(Duration::from_millis(self.block_ms));
        guard.done();
        Ok(())
    }

    fn execution_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
    fn max_execution_time(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.timeout_ms))
    }
    fn max_attempts(&self) -> u32 {
        self.attempts
    }
}

/// Waits cooperatively (10 ms sleeps) for `first_ms` on its first attempt and `again_ms`
/// on later ones, under execution key `key`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Hold {
    pub key: String,
    pub first_ms: u64,
    pub again_ms: u64,
}

impl Job for Hold {
    const NAME: &'static str = "hold";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let guard = RunGuard::start(&ctx);
        let ms = if ctx.attempt() == 1 {
            self.first_ms
        } else {
            self.again_ms
        };
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        guard.done();
        Ok(())
    }

    fn execution_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

// ---- metrics ------------------------------------------------------------------------------

/// Installs the metrics recorder of this test binary (one per process), once.
pub fn recorder() -> &'static metrics_util::debugging::Snapshotter {
    static SNAPSHOTTER: OnceLock<metrics_util::debugging::Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// The value of a counter, or of a gauge moved by increments, of partition `p`, summed over
/// the series that carry `label` (every series of the name when None). A snapshot drains
/// the recorder, so values are summed over snapshots.
pub fn metric(name: &str, p: &str, label: Option<(&str, &str)>) -> f64 {
    use metrics_util::debugging::DebugValue;
    /// (name, labels, sum)
    type Totals = Vec<(String, Vec<(String, String)>, f64)>;
    static TOTALS: Mutex<Totals> = Mutex::new(Vec::new());
    let mut totals = TOTALS.lock().unwrap();
    for (k, _, _, v) in recorder().snapshot().into_vec() {
        let key = k.key();
        let value = match v {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(_) => continue,
        };
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        match totals
            .iter_mut()
            .find(|t| t.0 == key.name() && t.1 == labels)
        {
            Some(t) => t.2 += value,
            None => totals.push((key.name().to_owned(), labels, value)),
        }
    }
    let has = |labels: &[(String, String)], (k, v): (&str, &str)| {
        labels.iter().any(|l| l.0 == k && l.1 == v)
    };
    totals
        .iter()
        .filter(|t| t.0 == name && has(&t.1, ("partition", p)))
        .filter(|t| label.is_none_or(|l| has(&t.1, l)))
        .map(|t| t.2)
        .sum()
}

// ---- flows and batches -------------------------------------------------------------------

/// A flow's child or a batch's job: counts its runs in `{p}:step_runs` (field n), sets
/// result `n * 10`, or fails for good when `fail`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Step {
    pub n: u64,
    pub fail: bool,
    pub sleep_ms: u64,
}

impl Job for Step {
    const NAME: &'static str = "step";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let p = ctx.partition().to_owned();
        let jobs = client(&p);
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        let _: i64 = cmd(
            &jobs,
            redis::cmd("HINCRBY")
                .arg(format!("{{{p}}}:step_runs"))
                .arg(self.n)
                .arg(1),
        )
        .await;
        if self.fail {
            return Err(format!("step {} failed on purpose", self.n).into());
        }
        ctx.set_result(&(self.n * 10))?;
        Ok(())
    }
    fn max_attempts(&self) -> u32 {
        1
    }
}

/// A flow's parent: counts its runs in `{p}:parent_runs` (field tag) and stores what it saw
/// of its children in `{p}:gathered:<tag>` as JSON `{"results": {id: n}, "failed": [[id,
/// state, error]]}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Gather {
    pub tag: String,
}

impl Job for Gather {
    const NAME: &'static str = "gather";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let p = ctx.partition().to_owned();
        let jobs = client(&p);
        let kids = ctx.children::<u64>().await?;
        let seen = serde_json::json!({
            "results": kids.results,
            "failed": kids.failed.iter().map(|f| (f.id.clone(), f.state.as_str(), f.error.clone())).collect::<Vec<_>>(),
        });
        let _: () = cmd(
            &jobs,
            redis::cmd("SET")
                .arg(format!("{{{p}}}:gathered:{}", self.tag))
                .arg(seen.to_string()),
        )
        .await;
        let _: i64 = cmd(
            &jobs,
            redis::cmd("HINCRBY")
                .arg(format!("{{{p}}}:parent_runs"))
                .arg(&self.tag)
                .arg(1),
        )
        .await;
        Ok(())
    }
}

/// A batch's callback: counts its runs in `{p}:callback_runs` (field tag) and stores the
/// batch's counts in `{p}:counts:<tag>` as `total succeeded failed`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Callback {
    pub tag: String,
}

impl Job for Callback {
    const NAME: &'static str = "callback";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let p = ctx.partition().to_owned();
        let jobs = client(&p);
        let c = ctx.batch().await?.ok_or("not a batch callback")?;
        let _: () = cmd(
            &jobs,
            redis::cmd("SET")
                .arg(format!("{{{p}}}:counts:{}", self.tag))
                .arg(format!("{} {} {}", c.total, c.succeeded, c.failed)),
        )
        .await;
        let _: i64 = cmd(
            &jobs,
            redis::cmd("HINCRBY")
                .arg(format!("{{{p}}}:callback_runs"))
                .arg(&self.tag)
                .arg(1),
        )
        .await;
        Ok(())
    }
}

/// A registry with the flow and batch job types.
pub fn flow_registry() -> wharf_job_partition::Registry {
    wharf_job_partition::Registry::new()
        .register::<Step>()
        .register::<Gather>()
        .register::<Callback>()
}
