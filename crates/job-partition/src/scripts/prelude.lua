local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jk(id) return P .. 'job:' .. id end
local function qk(q, part) return P .. 'q:' .. q .. ':' .. part end
local FINISHED = { completed = true, cancelled = true, dead = true }

-- Run `cmd key <list...>` in chunks of `step` values (a Lua `unpack` takes at most about
-- 8,000), for commands that take any number of them: ZADD (score, member pairs), ZREM.
local function many(cmd, key, list, step)
  for s = 1, #list, step do
    redis.call(cmd, key, unpack(list, s, math.min(s + step - 1, #list)))
  end
end
local function zadd_all(key, list) many('ZADD', key, list, 1000) end
-- DEL of any number of keys, in chunks.
local function del_all(keys)
  for s = 1, #keys, 500 do redis.call('DEL', unpack(keys, s, math.min(s + 499, #keys))) end
end

-- A job's place in its queue: priority (0 first .. 3) above the enqueue sequence, so
-- `wait` (and an execution key's waiters) pop by priority, then in enqueue order. 2^50
-- sequence numbers per priority; 4 * 2^50 stays an exact integer in a double.
local function place(prio)
  local seq = redis.call('INCR', P .. 'seq')
  return string.format('%.0f', (tonumber(prio or '') or 0) * 1125899906842624 + seq)
end

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

-- Release a completed job's queue key, or keep it taken for its `unique_for` (ms): the key
-- then reads `~<id>` and expires by itself.
local function keep_qkey(id, qkey, ms)
  if not qkey or qkey == '' then return end
  local k = P .. 'qkey:' .. qkey
  if redis.call('GET', k) ~= id then return end
  local n = tonumber(ms or '') or 0
  if n > 0 then redis.call('SET', k, '~' .. id, 'PX', n) else redis.call('DEL', k) end
end

-- The job a queue key is taken by: a pending one (queued, running, retrying...), or a
-- completed one within its `unique_for`; nil when the key is free.
local function qkey_holder(qkey)
  local h = redis.call('GET', P .. 'qkey:' .. qkey)
  if not h then return nil end
  if string.sub(h, 1, 1) == '~' then return string.sub(h, 2) end
  local st = redis.call('HGET', jk(h), 'state')
  if st and not FINISHED[st] then return h end
  return nil
end

-- Store a new job (its queue key already taken for it) and queue or schedule it.
local function insert(id, q, name, args, qkey, xkey, run_at, trace, qttl, prio, rgroup, t)
  local seq = place(prio)
  local j = jk(id)
  redis.call('HSET', j, 'name', name, 'args', args, 'queue', q, 'qkey', qkey, 'xkey', xkey,
    'enq_at', t, 'seq', seq, 'attempts', 0, 'token', 0)
  if trace ~= '' and #trace <= 600 then redis.call('HSET', j, 'trace', trace) end
  if qttl ~= '' and qttl ~= '0' then redis.call('HSET', j, 'qttl', qttl) end
  if prio ~= '' and prio ~= '0' then redis.call('HSET', j, 'prio', prio) end
  if rgroup ~= '' then redis.call('HSET', j, 'rgroup', rgroup) end
  if run_at > t then
    redis.call('HSET', j, 'state', 'scheduled', 'run_at', run_at)
    redis.call('ZADD', qk(q, 'delayed'), run_at, id)
  else
    redis.call('HSET', j, 'state', 'queued')
    redis.call('ZADD', qk(q, 'wait'), seq, id)
  end
end

-- Tell the callers waiting for a job's outcome (Jobs::wait_for registered them in the
-- job's `waiters`): one copy of the outcome each, in a list that expires by itself.
-- `waiters` is the field as the caller already read it (false: none), or nil (read here):
-- completing a job nobody waits for costs no extra command.
local function notify(id, state, waiters)
  if waiters == false then return end
  local j = jk(id)
  local f = redis.call('HMGET', j, 'waiters', 'result', 'error')
  local n = tonumber(f[1] or '0') or 0
  if n <= 0 then return end
  redis.call('HDEL', j, 'waiters')
  local k = P .. 'outcome:' .. id
  local msg = cjson.encode({ state, f[2] or '', f[3] or '' })
  for _ = 1, math.min(n, 100) do redis.call('RPUSH', k, msg) end
  redis.call('PEXPIRE', k, 300000)
end

-- A member of a flow or a batch (its `link`: `<partition>\t<f|b>\t<flow or batch id>`)
-- records its outcome in its own partition's outbox, in the step that finishes it: the
-- worker (or, after a crash, any worker's lease check) forwards it to the flow's or
-- batch's partition (settle.lua counts it once), then removes it (outbox_ack.lua).
-- Answers whether the job is linked. `link` is the field as the caller already read it
-- (false: none), or nil (read here).
local function link_out(id, state, t, link)
  -- One field read for the jobs that are not members (most): the rest only for members.
  if link == nil then link = redis.call('HGET', jk(id), 'link') end
  if not link then return false end
  local f = redis.call('HMGET', jk(id), 'result', 'error', 'enq_at')
  redis.call('HSET', P .. 'outbox', id,
    cjson.encode({ link, state, f[1] or '', f[2] or '', f[3] or '0' }))
  redis.call('ZADD', P .. 'outbox:at', t, id)
  return true
end

-- Record a finished job (completed or cancelled) within the retention bounds. Answers
-- whether it is linked to a flow or a batch (see link_out).
-- Keep a queue's done set `dk` within its retention (the newest `keep_n`, none older than
-- `keep_ms`), deleting the jobs it lets go; `added` jobs were just put in it (the age sweep
-- takes up to 100 per added job, so it keeps up). `finish` and complete.lua's batches share it.
local function trim_done(dk, t, keep_n, keep_ms, added)
  local n = redis.call('ZCARD', dk)
  if n > keep_n then
    local old = redis.call('ZPOPMIN', dk, n - keep_n)
    local gone = {}
    for i = 1, #old, 2 do gone[#gone + 1] = jk(old[i]) end
    del_all(gone)
  end
  if keep_ms > 0 then
    local old = redis.call('ZRANGEBYSCORE', dk, '-inf', t - keep_ms, 'LIMIT', 0, 100 * added)
    if old[1] then
      local gone = {}
      for k, o in ipairs(old) do gone[k] = jk(o) end
      del_all(gone)
      many('ZREM', dk, old, 1000)
    end
  end
end

local function finish(id, q, state, t, waiters)
  local j = jk(id)
  notify(id, state, waiters)
  local linked = link_out(id, state, t)
  redis.call('HINCRBY', qk(q, 'meta'), state, 1)
  local keep_n, keep_ms = cfg()
  if keep_n <= 0 then redis.call('DEL', j) return linked end
  redis.call('HSET', j, 'state', state, 'fin_at', t)
  local dk = qk(q, 'done')
  redis.call('ZADD', dk, t, id)
  trim_done(dk, t, keep_n, keep_ms, 1)
  return linked
end

-- Move a job to the bounded dead set of its queue. Answers whether it is linked to a flow
-- or a batch (see link_out).
local function to_dead(id, q, reason, t)
  local j = jk(id)
  redis.call('HSET', j, 'state', 'dead', 'error', reason, 'fin_at', t)
  notify(id, 'dead')
  local linked = link_out(id, 'dead', t)
  redis.call('HINCRBY', qk(q, 'meta'), 'dead', 1)
  local dk = qk(q, 'dead')
  redis.call('ZADD', dk, t, id)
  local _, _, keep_dead = cfg()
  local n = redis.call('ZCARD', dk)
  if n > keep_dead then
    local old = redis.call('ZPOPMIN', dk, n - keep_dead)
    for i = 1, #old, 2 do redis.call('DEL', jk(old[i])) end
  end
  return linked
end

-- Hold a just stored job (a flow's parent, a batch's callback) out of its queue until its
-- flow or batch settles: state `waiting`, its place (`seq`) kept for its release.
local function hold(id)
  local f = redis.call('HMGET', jk(id), 'queue')
  redis.call('ZREM', qk(f[1], 'wait'), id)
  redis.call('ZREM', qk(f[1], 'delayed'), id)
  redis.call('HSET', jk(id), 'state', 'waiting')
end

-- Put a held job in its queue, at its place.
local function unhold(id)
  local f = redis.call('HMGET', jk(id), 'queue', 'seq')
  redis.call('HSET', jk(id), 'state', 'queued')
  redis.call('ZADD', qk(f[1], 'wait'), f[2], id)
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
