//! The Lua scripts that make every multi-key change atomic.
//!
//! Every script gets `KEYS[1]` = a key of the partition (so Redis Cluster routes it to the
//! partition's shard) and `ARGV[1]` = the partition's key prefix `{wharf:<partition>}:`.
//! All keys a script touches share that hash tag, so they live in one slot. Time comes from
//! the Redis server (`TIME`), never from a client's clock, so leases and schedules agree
//! across machines.

use std::sync::OnceLock;

use redis::Script;

/// Helpers shared by every script (prepended to each body).
const PRELUDE: &str = include_str!("prelude.lua");

/// ARGV: P, count, then per job: id, queue, name, args, qkey, xkey, at_ms, delay_ms, trace
/// (the enqueuing span's W3C context, `<traceparent>[ <tracestate>]`, or empty: stored as the
/// job's `trace` field only when present and at most 600 bytes), qttl (the job's
/// `unique_for` in ms, or 0: how long its queue key stays taken after it completes), prio
/// (0..=3; the job's `seq`, its score in `wait`, is `prio * 2^50 + sequence`), rgroup (its
/// rate-limit group, or empty).
/// Returns per job its id, or `dup:<id of the holder>`.
const ENQUEUE: &str = include_str!("enqueue.lua");

/// ARGV: P, queue, want, lease_ms, worker, beat_ms. Returns flat: id, token, attempt, name,
/// args, enq_at, trace (empty when the job stored none). A queue `limit` of 0 starts nothing (a missing limit is no limit).
/// When nothing started and jobs of the queue wait for their rate window, returns
/// `{'', <ms until the first may start>}` instead.
///
/// A claimed job's `worker` field reads `<worker> <lease_ms> <beat_ms>`: what `LEASES` needs
/// to tell a stalled lease, in the field every claim writes anyway (two more fields in every
/// job's hash cost about 3% more Redis work per job).
const CLAIM: &str = include_str!("claim.lua");

/// Rate-limit helpers, prepended to the claim script (see the file).
const RATE: &str = include_str!("rate.lua");

/// ARGV: P, lease_ms, then pairs id, token. Returns per pair 0 (ok), 1 (cancel asked), 2 (lost).
const HEARTBEAT: &str = include_str!("heartbeat.lua");

/// ARGV: P, id, token, outcome (completed | cancelled), result (JSON, stored as the job's
/// `result` when completed and not empty). Returns 1, 2 (done, and the job is a member of a
/// flow or a batch: its outcome waits in the outbox to be forwarded), or 0 when the lease
/// was lost.
const COMPLETE: &str = include_str!("complete.lua");

/// ARGV: P, id, token, reason, retry_delay_ms (negative: dead), keep_xkey (1: a retrying job
/// keeps its execution key through its backoff, so later jobs of the key wait for it).
/// Returns 1 retry, 2 dead, 3 dead and a member of a flow or a batch (its outcome waits in
/// the outbox), 0 lost.
const FAIL: &str = include_str!("fail.lua");

/// ARGV: P, id. Returns cancelled | cancelling | finished:<state> | unknown.
const CANCEL: &str = include_str!("cancel.lua");

/// ARGV: P, queue, max, trim_max. Requeues (or finishes as cancelled) jobs whose lease
/// expired, then trims finished and dead jobs beyond retention (so an idle queue is trimmed
/// too). A requeued job keeps its execution key and its place (its original sequence number).
const REAP: &str = include_str!("reap.lua");

/// ARGV: P, queue, max. Returns flat: Redis' time (ms), then per lease (soonest expiry
/// first): id, name, worker, expiry_ms, lease_ms, beat_ms. The lease and heartbeat interval
/// come from the `worker` field (`<worker> <lease_ms> <beat_ms>`), or from the fields
/// `lease_ms` and `beat_ms` that workers of an earlier version wrote.
const LEASES: &str = include_str!("leases.lua");

/// ARGV: P, id, token, reason. Flags a running job whose task was told to stop and has not
/// ended: `stopping` = `<token> <reason>`, which holds only while the job runs under that
/// token (so finishing a job need not delete it: that would cost every job a lookup).
/// Returns 1, or 0 when the lease was lost.
const MARK_STOPPING: &str = include_str!("mark_stopping.lua");

/// ARGV: P, id, token. Puts a running job back at its place in its queue (worker shutdown);
/// it keeps its execution and queue keys, and the interrupted attempt is not counted.
/// Returns 1, or 0 when the lease was lost.
const RELEASE: &str = include_str!("release.lua");

/// ARGV: P, queue, which (wait | delayed | parked | dead | done), max. Deletes up to max jobs.
const PURGE: &str = include_str!("purge.lua");

/// ARGV: P, id. Moves a dead job back to its queue with fresh attempts.
/// Returns `ok`, `dup:<holder>` (its queue key is taken) or `not_dead`.
const RETRY_DEAD: &str = include_str!("retry_dead.lua");

/// ARGV: P, id, token, progress (JSON). Stores the job's `progress` while it runs under that
/// token. Returns 1, or 0 when the lease was lost.
const PROGRESS: &str = include_str!("progress.lua");

/// ARGV: P, id, register (1 | 0). Returns `{unknown}`, `{pending}` (with register: the job's
/// `waiters` count is raised, so the script that finishes it pushes its outcome to
/// `outcome:<id>`), or `{state, result, error}` of a finished job. Checking and registering
/// in one step is what keeps an outcome from slipping between them.
const WATCH: &str = include_str!("watch.lua");

/// ARGV: P, id, queue, name, args, qkey (required), xkey, delay_ms, trace, qttl, prio, rgroup. Replaces the
/// job holding the queue key when it has not started (scheduled, queued or parked, no
/// attempt counted): that job ends `cancelled` with `replaced_by` = the new id, and the new
/// job is stored to run after the delay. Returns `{ok, replaced id or ''}` or `{dup, holder}`.
const DEBOUNCE: &str = include_str!("debounce.lua");
/// ARGV: P, count and per job enqueue.lua's layout (the jobs of the ticks), then the
/// schedule's name, the version and next tick the caller read, the new next tick and the
/// last tick fired (or empty). Returns {} when another scheduler fired these ticks first
/// (or the schedule changed), else `ok` then enqueue.lua's answers.
const TICK: &str = include_str!("tick.lua");

/// ARGV: P, max. Returns Redis' time, the next tick after the due ones, and the due schedules.
const SCHED_DUE: &str = include_str!("sched_due.lua");

/// ARGV: P, name, next_ms, field/value pairs. Creates or replaces a schedule.
const SCHED_PUT: &str = include_str!("sched_put.lua");

/// ARGV: P, op, name[, ver, next_ms]. Pauses, resumes or removes a schedule.
const SCHED_ADMIN: &str = include_str!("sched_admin.lua");

/// ARGV: P, max. Every schedule of a partition with its fields.
const SCHED_LIST: &str = include_str!("sched_list.lua");

/// ARGV: P, count, enqueue.lua's per-job layout, then the link
/// (`<partition>\t<f|b>\t<flow or batch id>`). Stores a flow's children or a batch's members,
/// each linked. Returns their ids.
const SPAWN: &str = include_str!("spawn.lua");

/// ARGV: P, 1, the parent in enqueue.lua's layout, total, policy, children (JSON). Stores
/// a flow's parent held `waiting`. Returns its id.
const FLOW_PUT: &str = include_str!("flow_put.lua");

/// ARGV: P, count (0..=2), the callbacks in enqueue.lua's layout, `<partition>\t<batch id>`,
/// batch id, total, index of
/// on_success, index of on_complete. Stores a batch's record and held callbacks.
const BATCH_PUT: &str = include_str!("batch_put.lua");

/// ARGV: P, kind (f | b), flow or batch id, member id, state, result, error. Counts a
/// member's outcome once; the last one releases the parent or the callbacks.
const SETTLE: &str = include_str!("settle.lua");

/// ARGV: P, op (get | due | ack), ... The outbox of members' outcomes (see the file).
const OUTBOX: &str = include_str!("outbox.lua");

/// ARGV: P, kind (flows | batches), max. Waiting flows or batches with their counts.
const FLOW_LIST: &str = include_str!("flow_list.lua");

/// The compiled scripts (their SHA1 computed once per process).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) heartbeat: Script,
    pub(crate) complete: Script,
    pub(crate) fail: Script,
    pub(crate) cancel: Script,
    pub(crate) reap: Script,
    pub(crate) release: Script,
    pub(crate) purge: Script,
    pub(crate) retry_dead: Script,
    pub(crate) leases: Script,
    pub(crate) mark_stopping: Script,
    pub(crate) progress: Script,
    pub(crate) watch: Script,
    pub(crate) debounce: Script,
    pub(crate) tick: Script,
    pub(crate) sched_due: Script,
    pub(crate) sched_put: Script,
    pub(crate) sched_admin: Script,
    pub(crate) sched_list: Script,
    pub(crate) spawn: Script,
    pub(crate) flow_put: Script,
    pub(crate) batch_put: Script,
    pub(crate) settle: Script,
    pub(crate) outbox: Script,
    pub(crate) flow_list: Script,
}

fn build(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// The scripts, built on first use.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        enqueue: build(ENQUEUE),
        claim: build(&format!("{RATE}\n{CLAIM}")),
        heartbeat: build(HEARTBEAT),
        complete: build(COMPLETE),
        fail: build(FAIL),
        cancel: build(CANCEL),
        reap: build(REAP),
        release: build(RELEASE),
        purge: build(PURGE),
        retry_dead: build(RETRY_DEAD),
        leases: build(LEASES),
        mark_stopping: build(MARK_STOPPING),
        progress: build(PROGRESS),
        watch: build(WATCH),
        debounce: build(DEBOUNCE),
        // The tick runs enqueue.lua's body as a function, so a tick's jobs are stored
        // exactly as `Jobs::enqueue` stores them.
        tick: build(&TICK.replace("--@ENQUEUE@", ENQUEUE)),
        sched_due: build(SCHED_DUE),
        sched_put: build(SCHED_PUT),
        sched_admin: build(SCHED_ADMIN),
        sched_list: build(SCHED_LIST),
        // Flows and batches store their jobs with enqueue.lua's body too.
        spawn: build(&SPAWN.replace("--@ENQUEUE@", ENQUEUE)),
        flow_put: build(&FLOW_PUT.replace("--@ENQUEUE@", ENQUEUE)),
        batch_put: build(&BATCH_PUT.replace("--@ENQUEUE@", ENQUEUE)),
        settle: build(SETTLE),
        outbox: build(OUTBOX),
        flow_list: build(FLOW_LIST),
    })
}
