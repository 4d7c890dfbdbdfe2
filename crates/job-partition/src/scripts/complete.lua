-- Any number of finished jobs in one call: ARGV after P is id, token, outcome, result for
-- each. Each job is fenced by its own lease token and recorded exactly as one call per job
-- would (`finish` in the prelude, the one-job form the other scripts use): only the writes
-- to its queue's shared keys (`active`, `done`, the counters in `meta`) and the trimming
-- of `done` are made once per queue for the whole call, after the jobs.
local t = now_ms()
local ts = tostring(t)
local keep_n, keep_ms = cfg()
local out = {}
local queues, per_q = {}, {}
for i = 2, #ARGV, 4 do
  local id, tok, outcome, result = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local j = jk(id)
  local f = redis.call('HMGET', j, 'state', 'token', 'queue', 'qkey', 'xkey', 'qttl', 'waiters',
    'link')
  if f[1] ~= 'running' or f[2] ~= tok then
    out[#out + 1] = 0
  else
    local q = f[3]
    local b = per_q[q]
    if not b then
      b = { active = {}, done = {}, completed = 0, cancelled = 0 }
      per_q[q] = b
      queues[#queues + 1] = q
    end
    b.active[#b.active + 1] = id
    release_xkey(id, f[5])
    if outcome == 'completed' then keep_qkey(id, f[4], f[6]) else release_qkey(id, f[4]) end
    redis.call('HDEL', j, 'worker', 'cancel')
    local res = nil
    if outcome == 'completed' and result and result ~= '' then res = result end
    local linked
    if keep_n <= 0 then
      if res then redis.call('HSET', j, 'result', res) end
      notify(id, outcome, f[7])
      linked = link_out(id, outcome, t, f[8])
      redis.call('DEL', j)
    else
      if res then
        redis.call('HSET', j, 'result', res, 'state', outcome, 'fin_at', ts)
      else
        redis.call('HSET', j, 'state', outcome, 'fin_at', ts)
      end
      notify(id, outcome, f[7])
      linked = link_out(id, outcome, t, f[8])
      b.done[#b.done + 1] = ts
      b.done[#b.done + 1] = id
    end
    if outcome == 'completed' then b.completed = b.completed + 1 else b.cancelled = b.cancelled + 1 end
    if linked then out[#out + 1] = 2 else out[#out + 1] = 1 end
  end
end
for _, q in ipairs(queues) do
  local b = per_q[q]
  many('ZREM', qk(q, 'active'), b.active, 1000)
  if b.completed > 0 then redis.call('HINCRBY', qk(q, 'meta'), 'completed', b.completed) end
  if b.cancelled > 0 then redis.call('HINCRBY', qk(q, 'meta'), 'cancelled', b.cancelled) end
  if #b.done > 0 then
    -- Retention as `finish` keeps it, once for all of this call's jobs of the queue.
    local dk = qk(q, 'done')
    zadd_all(dk, b.done)
    trim_done(dk, t, keep_n, keep_ms, #b.done / 2)
  end
end
return out
