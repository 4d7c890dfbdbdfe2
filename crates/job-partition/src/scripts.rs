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
const PRELUDE: &str = r#"
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jk(id) return P .. 'job:' .. id end
local function qk(q, part) return P .. 'q:' .. q .. ':' .. part end
local FINISHED = { completed = true, cancelled = true, dead = true }

local function cfg()
  local c = redis.call('HMGET', P .. 'config', 'keep_done', 'keep_done_ms', 'keep_dead')
  return tonumber(c[1] or '1000') or 1000, tonumber(c[2] or '86400000') or 86400000,
         tonumber(c[3] or '10000') or 10000
end

-- Give the execution key to the first job waiting for it (in enqueue order) and put that
-- job back at its place in its queue; free the key when nobody waits.
local function handoff(xkey)
  local wk = P .. 'xwait:' .. xkey
  local lk = P .. 'xlock:' .. xkey
  while true do
    local head = redis.call('ZPOPMIN', wk)
    if not head[1] then redis.call('DEL', lk) return end
    local hid, seq = head[1], head[2]
    local hq = redis.call('HGET', jk(hid), 'queue')
    if hq then
      redis.call('ZREM', qk(hq, 'parked'), hid)
      redis.call('ZADD', qk(hq, 'wait'), seq, hid)
      redis.call('HSET', jk(hid), 'state', 'queued')
      redis.call('SET', lk, hid)
      return
    end
  end
end

local function release_xkey(id, xkey)
  if not xkey or xkey == '' then return end
  if redis.call('GET', P .. 'xlock:' .. xkey) == id then handoff(xkey) end
end

local function release_qkey(id, qkey)
  if not qkey or qkey == '' then return end
  local k = P .. 'qkey:' .. qkey
  if redis.call('GET', k) == id then redis.call('DEL', k) end
end

-- Record a finished job (completed or cancelled) within the retention bounds.
local function finish(id, q, state, t)
  local j = jk(id)
  redis.call('HINCRBY', qk(q, 'meta'), state, 1)
  local keep_n, keep_ms = cfg()
  if keep_n <= 0 then redis.call('DEL', j) return end
  redis.call('HSET', j, 'state', state, 'fin_at', t)
  local dk = qk(q, 'done')
  redis.call('ZADD', dk, t, id)
  local n = redis.call('ZCARD', dk)
  if n > keep_n then
    local old = redis.call('ZPOPMIN', dk, n - keep_n)
    for i = 1, #old, 2 do redis.call('DEL', jk(old[i])) end
  end
  if keep_ms > 0 then
    local old = redis.call('ZRANGEBYSCORE', dk, '-inf', t - keep_ms, 'LIMIT', 0, 100)
    for _, o in ipairs(old) do redis.call('DEL', jk(o)) redis.call('ZREM', dk, o) end
  end
end

-- Move a job to the bounded dead set of its queue.
local function to_dead(id, q, reason, t)
  local j = jk(id)
  redis.call('HSET', j, 'state', 'dead', 'error', reason, 'fin_at', t)
  redis.call('HINCRBY', qk(q, 'meta'), 'dead', 1)
  local dk = qk(q, 'dead')
  redis.call('ZADD', dk, t, id)
  local _, _, keep_dead = cfg()
  local n = redis.call('ZCARD', dk)
  if n > keep_dead then
    local old = redis.call('ZPOPMIN', dk, n - keep_dead)
    for i = 1, #old, 2 do redis.call('DEL', jk(old[i])) end
  end
end

local function park(id, seq, q, xkey)
  redis.call('ZADD', P .. 'xwait:' .. xkey, seq, id)
  redis.call('ZADD', qk(q, 'parked'), seq, id)
  redis.call('HSET', jk(id), 'state', 'parked')
end

-- Does job h hold its execution key (running, handed the key and queued, or waiting out
-- a retry backoff that keeps the key)?
local function holds(h)
  local st = redis.call('HGET', jk(h), 'state')
  return st == 'running' or st == 'queued' or st == 'retrying'
end

-- Trim a queue's finished jobs beyond retention (by age, then by count) and its dead set
-- by count: at most max job hashes per call, so one call never blocks Redis for long.
local function trim(q, t, max)
  local keep_n, keep_ms, keep_dead = cfg()
  local left = max
  local dk = qk(q, 'done')
  if keep_ms > 0 then
    local old = redis.call('ZRANGEBYSCORE', dk, '-inf', t - keep_ms, 'LIMIT', 0, left)
    for _, o in ipairs(old) do redis.call('DEL', jk(o)) redis.call('ZREM', dk, o) end
    left = left - #old
  end
  local over = redis.call('ZCARD', dk) - math.max(keep_n, 0)
  if over > 0 and left > 0 then
    local old = redis.call('ZPOPMIN', dk, math.min(over, left))
    for i = 1, #old, 2 do redis.call('DEL', jk(old[i])) end
    left = left - #old / 2
  end
  local xk = qk(q, 'dead')
  over = redis.call('ZCARD', xk) - math.max(keep_dead, 0)
  if over > 0 and left > 0 then
    local old = redis.call('ZPOPMIN', xk, math.min(over, left))
    for i = 1, #old, 2 do redis.call('DEL', jk(old[i])) end
  end
end
"#;

/// ARGV: P, count, then per job: id, queue, name, args, qkey, xkey, at_ms, delay_ms.
/// Returns per job its id, or `dup:<id of the holder>`.
const ENQUEUE: &str = r#"
local n = tonumber(ARGV[2])
local t = now_ms()
local out = {}
local known = {}
for i = 0, n - 1 do
  local b = 3 + i * 8
  local id, q, name, args = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local qkey, xkey = ARGV[b + 4], ARGV[b + 5]
  local at, delay = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local dup = nil
  if qkey ~= '' then
    local k = P .. 'qkey:' .. qkey
    local h = redis.call('GET', k)
    if h then
      local st = redis.call('HGET', jk(h), 'state')
      if st and not FINISHED[st] then dup = h end
    end
    if not dup then redis.call('SET', k, id) end
  end
  if dup then
    out[#out + 1] = 'dup:' .. dup
  else
    local run_at = 0
    if at > 0 then run_at = at elseif delay > 0 then run_at = t + delay end
    local seq = redis.call('INCR', P .. 'seq')
    local j = jk(id)
    redis.call('HSET', j, 'name', name, 'args', args, 'queue', q, 'qkey', qkey, 'xkey', xkey,
      'enq_at', t, 'seq', seq, 'attempts', 0, 'token', 0)
    if run_at > t then
      redis.call('HSET', j, 'state', 'scheduled', 'run_at', run_at)
      redis.call('ZADD', qk(q, 'delayed'), run_at, id)
    else
      redis.call('HSET', j, 'state', 'queued')
      redis.call('ZADD', qk(q, 'wait'), seq, id)
    end
    if not known[q] then redis.call('SADD', P .. 'queues', q) known[q] = true end
    out[#out + 1] = id
  end
end
return out
"#;

/// ARGV: P, queue, want, lease_ms, worker, beat_ms. Returns flat: id, token, attempt, name,
/// args, enq_at. A queue `limit` of 0 starts nothing (a missing limit is no limit).
///
/// A claimed job's `worker` field reads `<worker> <lease_ms> <beat_ms>`: what `LEASES` needs
/// to tell a stalled lease, in the field every claim writes anyway (two more fields in every
/// job's hash cost about 3% more Redis work per job).
const CLAIM: &str = r#"
local q, want, lease, worker = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local holder = worker .. ' ' .. ARGV[4] .. ' ' .. (ARGV[6] or '0')
local t = now_ms()
local due = redis.call('ZRANGEBYSCORE', qk(q, 'delayed'), '-inf', t, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', qk(q, 'delayed'), id)
  if redis.call('EXISTS', jk(id)) == 1 then
    local seq = redis.call('INCR', P .. 'seq')
    redis.call('HSET', jk(id), 'state', 'queued', 'seq', seq)
    redis.call('ZADD', qk(q, 'wait'), seq, id)
  end
end
local meta = redis.call('HMGET', qk(q, 'meta'), 'paused', 'limit')
if meta[1] == '1' then return {} end
local lim = tonumber(meta[2] or '')
if lim then
  local free = lim - redis.call('ZCARD', qk(q, 'active'))
  if free < want then want = free end
end
local out = {}
local budget = want * 4 + 16
while want > 0 and budget > 0 do
  budget = budget - 1
  local p = redis.call('ZPOPMIN', qk(q, 'wait'))
  if not p[1] then break end
  local id, seq = p[1], p[2]
  local j = jk(id)
  local xkey = redis.call('HGET', j, 'xkey')
  local run = (xkey ~= false)
  if run and xkey ~= '' then
    local lk = P .. 'xlock:' .. xkey
    local h = redis.call('GET', lk)
    if h and h ~= id and holds(h) then
      park(id, seq, q, xkey)
      run = false
    elseif h ~= id then
      local head = redis.call('ZRANGE', P .. 'xwait:' .. xkey, 0, 0, 'WITHSCORES')
      if head[1] and tonumber(head[2]) < tonumber(seq) then
        park(id, seq, q, xkey)
        handoff(xkey)
        run = false
      else
        redis.call('SET', lk, id)
      end
    end
  end
  if run then
    local tok = redis.call('HINCRBY', j, 'token', 1)
    local att = redis.call('HINCRBY', j, 'attempts', 1)
    redis.call('HSET', j, 'state', 'running', 'worker', holder, 'started_at', t)
    redis.call('ZADD', qk(q, 'active'), t + lease, id)
    local f = redis.call('HMGET', j, 'name', 'args', 'enq_at')
    out[#out + 1] = id
    out[#out + 1] = tostring(tok)
    out[#out + 1] = tostring(att)
    out[#out + 1] = f[1] or ''
    out[#out + 1] = f[2] or ''
    out[#out + 1] = f[3] or '0'
    want = want - 1
  end
end
return out
"#;

/// ARGV: P, lease_ms, then pairs id, token. Returns per pair 0 (ok), 1 (cancel asked), 2 (lost).
const HEARTBEAT: &str = r#"
local lease = tonumber(ARGV[2])
local t = now_ms()
local out = {}
for i = 3, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', jk(id), 'state', 'token', 'queue', 'cancel')
  if f[1] == 'running' and f[2] == tok then
    redis.call('ZADD', qk(f[3], 'active'), 'XX', t + lease, id)
    if f[4] == '1' then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = 2
  end
end
return out
"#;

/// ARGV: P, id, token, outcome (completed | cancelled). Returns 1, or 0 when the lease was lost.
const COMPLETE: &str = r#"
local id, tok, outcome = ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', jk(id), 'state', 'token', 'queue', 'qkey', 'xkey')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
local t = now_ms()
redis.call('ZREM', qk(f[3], 'active'), id)
release_xkey(id, f[5])
release_qkey(id, f[4])
redis.call('HDEL', jk(id), 'worker', 'cancel')
finish(id, f[3], outcome, t)
return 1
"#;

/// ARGV: P, id, token, reason, retry_delay_ms (negative: dead), keep_xkey (1: a retrying job
/// keeps its execution key through its backoff, so later jobs of the key wait for it).
/// Returns 1 retry, 2 dead, 0 lost.
const FAIL: &str = r#"
local id, tok, reason, delay = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local keep = ARGV[6] == '1'
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'token', 'queue', 'qkey', 'xkey')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
local t = now_ms()
local q = f[3]
redis.call('ZREM', qk(q, 'active'), id)
if delay < 0 or not keep then release_xkey(id, f[5]) end
redis.call('HDEL', j, 'worker')
redis.call('HSET', j, 'error', reason)
if delay >= 0 then
  redis.call('HSET', j, 'state', 'retrying', 'run_at', t + delay)
  redis.call('ZADD', qk(q, 'delayed'), t + delay, id)
  redis.call('HINCRBY', qk(q, 'meta'), 'retried', 1)
  return 1
end
release_qkey(id, f[4])
to_dead(id, q, reason, t)
return 2
"#;

/// ARGV: P, id. Returns cancelled | cancelling | finished:<state> | unknown.
const CANCEL: &str = r#"
local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'qkey', 'xkey')
local st, q = f[1], f[2]
if not st then return 'unknown' end
if st == 'running' then redis.call('HSET', j, 'cancel', '1') return 'cancelling' end
if FINISHED[st] then return 'finished:' .. st end
redis.call('ZREM', qk(q, 'wait'), id)
redis.call('ZREM', qk(q, 'delayed'), id)
redis.call('ZREM', qk(q, 'parked'), id)
if f[4] and f[4] ~= '' then
  redis.call('ZREM', P .. 'xwait:' .. f[4], id)
  release_xkey(id, f[4])
end
release_qkey(id, f[3])
finish(id, q, 'cancelled', now_ms())
return 'cancelled'
"#;

/// ARGV: P, queue, max, trim_max. Requeues (or finishes as cancelled) jobs whose lease
/// expired, then trims finished and dead jobs beyond retention (so an idle queue is trimmed
/// too). A requeued job keeps its execution key and its place (its original sequence number).
const REAP: &str = r#"
local q, max, trim_max = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4] or '0')
local t = now_ms()
local ex = redis.call('ZRANGEBYSCORE', qk(q, 'active'), '-inf', t, 'LIMIT', 0, max)
for _, id in ipairs(ex) do
  redis.call('ZREM', qk(q, 'active'), id)
  local j = jk(id)
  local f = redis.call('HMGET', j, 'state', 'cancel', 'qkey', 'xkey', 'seq')
  if f[1] == 'running' then
    redis.call('HDEL', j, 'worker')
    redis.call('HINCRBY', qk(q, 'meta'), 'lease_expired', 1)
    if f[2] == '1' then
      release_xkey(id, f[4])
      release_qkey(id, f[3])
      finish(id, q, 'cancelled', t)
    else
      redis.call('HINCRBY', j, 'lease_expiries', 1)
      redis.call('HSET', j, 'state', 'queued')
      redis.call('ZADD', qk(q, 'wait'), f[5], id)
    end
  end
end
if trim_max > 0 then trim(q, t, trim_max) end
return #ex
"#;

/// ARGV: P, queue, max. Returns flat: Redis' time (ms), then per lease (soonest expiry
/// first): id, name, worker, expiry_ms, lease_ms, beat_ms. The lease and heartbeat interval
/// come from the `worker` field (`<worker> <lease_ms> <beat_ms>`), or from the fields
/// `lease_ms` and `beat_ms` that workers of an earlier version wrote.
const LEASES: &str = r#"
local q, max = ARGV[2], tonumber(ARGV[3])
local out = { tostring(now_ms()) }
local act = redis.call('ZRANGE', qk(q, 'active'), 0, max - 1, 'WITHSCORES')
for i = 1, #act, 2 do
  local f = redis.call('HMGET', jk(act[i]), 'name', 'worker', 'lease_ms', 'beat_ms')
  local w, l, b = string.match(f[2] or '', '^(%S+) (%d+) (%d+)$')
  out[#out + 1] = act[i]
  out[#out + 1] = f[1] or ''
  out[#out + 1] = w or f[2] or ''
  out[#out + 1] = act[i + 1]
  out[#out + 1] = l or f[3] or '0'
  out[#out + 1] = b or f[4] or '0'
end
return out
"#;

/// ARGV: P, id, token, reason. Flags a running job whose task was told to stop and has not
/// ended: `stopping` = `<token> <reason>`, which holds only while the job runs under that
/// token (so finishing a job need not delete it: that would cost every job a lookup).
/// Returns 1, or 0 when the lease was lost.
const MARK_STOPPING: &str = r#"
local id, tok, reason = ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', jk(id), 'state', 'token')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
redis.call('HSET', jk(id), 'stopping', tok .. ' ' .. reason)
return 1
"#;

/// ARGV: P, id, token. Puts a running job back at its place in its queue (worker shutdown);
/// it keeps its execution and queue keys, and the interrupted attempt is not counted.
/// Returns 1, or 0 when the lease was lost.
const RELEASE: &str = r#"
local id, tok = ARGV[2], ARGV[3]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'token', 'queue', 'seq')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
redis.call('ZREM', qk(f[3], 'active'), id)
redis.call('HDEL', j, 'worker')
redis.call('HINCRBY', j, 'attempts', -1)
redis.call('HSET', j, 'state', 'queued')
redis.call('ZADD', qk(f[3], 'wait'), f[4], id)
return 1
"#;

/// ARGV: P, queue, which (wait | delayed | parked | dead | done), max. Deletes up to max jobs.
const PURGE: &str = r#"
local q, which, max = ARGV[2], ARGV[3], tonumber(ARGV[4])
local zk = qk(q, which)
local ids = redis.call('ZRANGE', zk, 0, max - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', zk, id)
  local f = redis.call('HMGET', jk(id), 'qkey', 'xkey')
  if f[2] and f[2] ~= '' then
    redis.call('ZREM', P .. 'xwait:' .. f[2], id)
    release_xkey(id, f[2])
  end
  release_qkey(id, f[1])
  redis.call('DEL', jk(id))
end
return #ids
"#;

/// ARGV: P, id. Moves a dead job back to its queue with fresh attempts.
/// Returns `ok`, `dup:<holder>` (its queue key is taken) or `not_dead`.
const RETRY_DEAD: &str = r#"
local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'qkey')
if f[1] ~= 'dead' then return 'not_dead' end
local q = f[2]
if f[3] and f[3] ~= '' then
  local k = P .. 'qkey:' .. f[3]
  local h = redis.call('GET', k)
  if h and h ~= id then
    local st = redis.call('HGET', jk(h), 'state')
    if st and not FINISHED[st] then return 'dup:' .. h end
  end
  redis.call('SET', k, id)
end
redis.call('ZREM', qk(q, 'dead'), id)
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', j, 'state', 'queued', 'seq', seq, 'attempts', 0)
redis.call('HDEL', j, 'error', 'fin_at', 'cancel')
redis.call('ZADD', qk(q, 'wait'), seq, id)
return 'ok'
"#;

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
}

fn build(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// The scripts, built on first use.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        enqueue: build(ENQUEUE),
        claim: build(CLAIM),
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
    })
}
