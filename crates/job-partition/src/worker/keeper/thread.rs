//! What the lease thread does: its loop (stop jobs at their deadlines, heartbeats, lease
//! checks), its connection, one heartbeat, one queue's lease check.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
// std's clock, not tokio's: the worker's runtime may run on paused time in tests; the
// keeper's deadlines are real.
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;

use super::{LeaseId, Shared, Stop, lock};
use crate::client::{Beat, Jobs};
use crate::metrics as metric;

/// Calls in flight, so a slow Redis gets one call per partition or queue at a time.
#[derive(Default)]
struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    fn begin(&self, what: &str) -> bool {
        lock(&self.0).insert(what.to_owned())
    }
    fn end(&self, what: &str) {
        lock(&self.0).remove(what);
    }
}

pub(super) async fn run(shared: Arc<Shared>, config: crate::Config, stop: CancellationToken) {
    let conn: Arc<OnceLock<Jobs>> = Arc::default();
    tokio::spawn(connect(
        Arc::clone(&shared),
        config,
        Arc::clone(&conn),
        stop.clone(),
    ));
    let beats = Arc::new(InFlight::default());
    let checks = Arc::new(InFlight::default());
    let failures = Arc::new(AtomicU32::new(0));
    let t = shared.timing;
    let mut next_beat = Instant::now();
    let mut next_check = Instant::now();
    loop {
        let now = Instant::now();
        let reports = enforce(&shared, now);
        if let Some(jobs) = conn.get() {
            for r in reports {
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    let call = jobs.mark_stopping(&r.partition, &r.id, &r.token, &r.reason);
                    if let Ok(Err(e)) = tokio::time::timeout(t.response_timeout, call).await {
                        tracing::debug!(error = %e, queue = %r.queue, "could not flag the job as stopping");
                    }
                });
            }
            if now >= next_beat {
                next_beat = now + t.beat;
                for partition in partitions(&shared) {
                    if beats.begin(&partition) {
                        tokio::spawn(beat(
                            Arc::clone(&shared),
                            jobs.clone(),
                            partition,
                            Arc::clone(&beats),
                            Arc::clone(&failures),
                        ));
                    }
                }
            }
            if now >= next_check {
                next_check = now + t.reap_every;
                let queues: Vec<(String, String)> = lock(&shared.queues).keys().cloned().collect();
                let mut served: Vec<String> = queues.iter().map(|(p, _)| p.clone()).collect();
                served.sort_unstable();
                served.dedup();
                for p in served {
                    let what = format!("{p}\noutbox");
                    if checks.begin(&what) {
                        let (jobs, checks) = (jobs.clone(), Arc::clone(&checks));
                        tokio::spawn(async move {
                            drain_outbox(&jobs, &p, t.response_timeout).await;
                            checks.end(&what);
                        });
                    }
                }
                for (p, q) in queues {
                    let what = format!("{p}\n{q}");
                    if checks.begin(&what) {
                        let (jobs, checks) = (jobs.clone(), Arc::clone(&checks));
                        tokio::spawn(async move {
                            check_queue(&jobs, &p, &q, t.response_timeout).await;
                            checks.end(&what);
                        });
                    }
                }
            }
        }
        let wake = next_wake(&shared, now).min(next_beat).min(next_check);
        shared.planned.store(shared.nanos(wake), Ordering::Release);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

/// Connects (retrying with backoff) and publishes the connection.
async fn connect(
    shared: Arc<Shared>,
    config: crate::Config,
    conn: Arc<OnceLock<Jobs>>,
    stop: CancellationToken,
) {
    let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
    let mut n = 0;
    loop {
        match Jobs::connect(config.clone()).await {
            Ok(jobs) => {
                let _ = conn.set(jobs);
                shared.connected.store(true, Ordering::Release);
                // Heartbeats start now rather than at the next planned look.
                shared.wake.notify_one();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the lease thread could not connect to Redis; no job is claimed until it does");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.delay(n)) => {}
        }
        n += 1;
    }
}

fn partitions(shared: &Shared) -> Vec<Arc<str>> {
    let held = lock(&shared.held);
    let mut v: Vec<Arc<str>> = held.values().map(|h| Arc::clone(&h.partition)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A job told to stop whose task has not ended, to flag in Redis.
struct Report {
    partition: Arc<str>,
    queue: Arc<str>,
    id: String,
    token: String,
    reason: String,
}

/// Stops jobs past their lease or run deadline; answers the stops to report as overdue.
fn enforce(shared: &Shared, now: Instant) -> Vec<Report> {
    let report_after = shared.timing.report_after();
    let mut reports = Vec::new();
    for h in lock(&shared.held).values_mut() {
        if now >= h.lease_until && h.why != Some(Stop::Lost) && h.stop(Stop::Lost, now) {
            metrics::counter!(metric::JOBS, "partition" => h.partition.clone(), "queue" => h.queue.clone(), "state" => "lost_lease")
                .increment(1);
            tracing::warn!(id = %h.id, job = %h.name,
                "could not renew the job's lease in time: stopped it before the lease can expire in Redis (another worker may run it after that)");
        }
        if let Some(t) = h.run_until
            && now >= t
            && h.stop(Stop::TimedOut, now)
        {
            metrics::counter!(metric::JOBS, "partition" => h.partition.clone(), "queue" => h.queue.clone(), "state" => "timed_out")
                .increment(1);
        }
        let overdue = h.stopped_at.is_some_and(|t| now >= t + report_after);
        if overdue && !h.reported && h.abort.is_some() {
            h.reported = true;
            let why = h.why.map_or("stopped", Stop::reason);
            let since = h.stopped_at.map(|t| now - t).unwrap_or_default();
            tracing::error!(id = %h.id, job = %h.name, why, since_ms = since.as_millis() as u64,
                "the job was told to stop and its task has not ended: its code blocks its thread or ignores cancellation. It keeps its lease, execution key, queue key and queue slot until it ends; run blocking work with spawn_blocking and check JobContext::is_cancelled");
            metrics::counter!(metric::JOBS, "partition" => h.partition.clone(), "queue" => h.queue.clone(), "state" => "stop_overdue")
                .increment(1);
            metrics::gauge!(metric::STOPPING, "partition" => h.partition.clone(), "queue" => h.queue.clone())
                .increment(1.0);
            let reason = format!(
                "{why}; its task has not ended {} ms later",
                since.as_millis()
            );
            reports.push(Report {
                partition: h.partition.clone(),
                queue: h.queue.clone(),
                id: h.id.clone(),
                token: h.token.clone(),
                reason,
            });
        }
    }
    reports
}

/// The next moment `enforce` has something to do.
fn next_wake(shared: &Shared, now: Instant) -> Instant {
    let report_after = shared.timing.report_after();
    let mut wake = now + Duration::from_secs(3600);
    for h in lock(&shared.held).values() {
        let mut consider = |t: Instant| {
            if t > now && t < wake {
                wake = t;
            }
        };
        if h.why != Some(Stop::Lost) {
            consider(h.lease_until);
        }
        if h.why.is_none()
            && let Some(t) = h.run_until
        {
            consider(t);
        }
        if !h.reported
            && let Some(t) = h.stopped_at
        {
            consider(t + report_after);
        }
    }
    wake
}

/// One heartbeat for every held job of a partition.
async fn beat(
    shared: Arc<Shared>,
    jobs: Jobs,
    partition: Arc<str>,
    in_flight: Arc<InFlight>,
    failures: Arc<AtomicU32>,
) {
    let t = shared.timing;
    let (leases, snapshot): (Vec<LeaseId>, Vec<(String, String)>) = lock(&shared.held)
        .iter()
        .filter(|(_, h)| h.partition == partition)
        .map(|(l, h)| (*l, (h.id.clone(), h.token.clone())))
        .unzip();
    // Taken before the request is written: never later than the moment Redis runs it.
    let sent = Instant::now();
    let answer = tokio::time::timeout(
        t.response_timeout,
        jobs.heartbeat(&partition, t.lease, &snapshot),
    )
    .await;
    in_flight.end(&partition);
    let beats = match answer {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return beat_failed(&failures, &e.to_string()),
        Err(_) => {
            let why = format!(
                "no answer within the response timeout ({} ms)",
                t.response_timeout.as_millis()
            );
            return beat_failed(&failures, &why);
        }
    };
    if failures.swap(0, Ordering::Relaxed) > 0 {
        tracing::info!("heartbeats reach Redis again");
    }
    let until = sent + t.lease - t.margin;
    let now = Instant::now();
    let mut stopped = false;
    let mut held = lock(&shared.held);
    for (lease, b) in leases.into_iter().zip(beats) {
        let Some(h) = held.get_mut(&lease) else {
            continue;
        };
        match b {
            Beat::Ok | Beat::CancelAsked => {
                if until > h.lease_until {
                    h.lease_until = until;
                }
                if b == Beat::CancelAsked {
                    stopped |= h.stop(Stop::Cancel, now);
                }
            }
            Beat::Lost => {
                if h.stop(Stop::Lost, now) {
                    stopped = true;
                    metrics::counter!(metric::JOBS, "partition" => partition.clone(), "queue" => h.queue.clone(), "state" => "lost_lease")
                        .increment(1);
                    tracing::warn!(id = %h.id, job = %h.name, "Redis says the job's lease was lost: stopped it here");
                }
            }
        }
    }
    drop(held);
    if stopped {
        shared.wake_by(now + t.report_after());
    }
}

fn beat_failed(failures: &AtomicU32, error: &str) {
    let n = failures.fetch_add(1, Ordering::Relaxed);
    // The first failure, then one in twenty: an outage must not flood the log.
    if n.is_multiple_of(20) {
        tracing::warn!(
            error,
            failures = n + 1,
            "heartbeat failed; jobs whose lease cannot be renewed in time are stopped before it can expire"
        );
    }
}

/// Forwards the outcomes of flow and batch members that their worker did not (it crashed
/// between finishing the job and counting it, or Redis failed): see `client::flow`.
async fn drain_outbox(jobs: &Jobs, partition: &str, timeout: Duration) {
    // Entries younger than this are most likely being forwarded by their worker right now
    // (forwarding twice is harmless, only wasted).
    const YOUNG: Duration = Duration::from_millis(500);
    #[cfg(feature = "test-util")]
    if std::env::var_os(crate::testing::STALL_BEFORE_FORWARD).is_some() {
        // A process playing one that dies between the two steps forwards nothing.
        return;
    }
    match tokio::time::timeout(
        timeout.saturating_mul(8),
        jobs.drain_outbox(partition, YOUNG),
    )
    .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            partition,
            members = n,
            "counted flow and batch members their worker had not"
        ),
        Ok(Err(e)) => {
            tracing::warn!(partition, error = %e, "forwarding the outbox failed; will retry")
        }
        Err(_) => tracing::warn!(partition, "forwarding the outbox timed out; will retry"),
    }
}

/// Requeues expired leases (of any worker), trims retention, and publishes the queue's
/// depths and its stalled leases (held by workers that stopped renewing them).
async fn check_queue(jobs: &Jobs, partition: &str, queue: &str, timeout: Duration) {
    match tokio::time::timeout(timeout, jobs.reap(partition, queue)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!(
            partition,
            queue,
            jobs = n,
            "requeued jobs whose worker lost its lease"
        ),
        Ok(Err(e)) => {
            tracing::warn!(partition, queue, error = %e, "lease check failed; will retry")
        }
        Err(_) => tracing::warn!(partition, queue, "lease check timed out; will retry"),
    }
    publish_depths(jobs, partition, queue, timeout).await;
    let Ok(Ok(leases)) = tokio::time::timeout(timeout, jobs.leases(partition, queue, 100)).await
    else {
        return;
    };
    let stalled: Vec<_> = leases.iter().filter(|l| l.stalled).collect();
    let soonest = stalled
        .iter()
        .map(|l| l.expires_in_ms.max(0))
        .min()
        .unwrap_or(0);
    metrics::gauge!(metric::STALLED_LEASES, "partition" => partition.to_owned(), "queue" => queue.to_owned())
        .set(stalled.len() as f64);
    metrics::gauge!(metric::STALLED_LEASE_EXPIRES_IN, "partition" => partition.to_owned(), "queue" => queue.to_owned())
        .set(soonest as f64 / 1000.0);
}

/// Sets the queue's depth gauges from one pipelined round trip (`Jobs::counts`). A failed
/// or late answer leaves them as they were: the next check, a second later, sets them.
async fn publish_depths(jobs: &Jobs, partition: &str, queue: &str, timeout: Duration) {
    let Ok(Ok(c)) = tokio::time::timeout(timeout, jobs.counts(partition, queue)).await else {
        return;
    };
    for (state, n) in [
        ("queued", c.queued),
        ("scheduled", c.scheduled),
        ("parked", c.parked),
        ("running", c.running),
        ("dead", c.dead),
    ] {
        metrics::gauge!(metric::QUEUE_DEPTH, "partition" => partition.to_owned(), "queue" => queue.to_owned(), "state" => state)
            .set(n as f64);
    }
}
