local q, want, lease, worker = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local holder = worker .. ' ' .. ARGV[4] .. ' ' .. (ARGV[6] or '0')
local t = now_ms()
-- The queue's settings, read once: paused, limit, rate_max, rate_ms.
local meta = redis.call('HMGET', qk(q, 'meta'), 'paused', 'limit', 'rate_max', 'rate_ms')
local due = redis.call('ZRANGEBYSCORE', qk(q, 'delayed'), '-inf', t, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', qk(q, 'delayed'), id)
  local prio = redis.call('HMGET', jk(id), 'queue', 'prio')
  if prio[1] then
    local seq = place(prio[2])
    redis.call('HSET', jk(id), 'state', 'queued', 'seq', seq)
    redis.call('ZADD', qk(q, 'wait'), seq, id)
  end
end
local rate_max, rate_ms = rate_cfg({ meta[3], meta[4] })
if rate_max then
  rate_release(q, t)
elseif redis.call('EXISTS', qk(q, 'limited')) == 1 then
  rate_release(q, '+inf')
end
if meta[1] == '1' then return {} end
local lim = tonumber(meta[2] or '')
if lim then
  local free = lim - redis.call('ZCARD', qk(q, 'active'))
  if free < want then want = free end
end
local out = {}
-- The started jobs' entries in `active` (score, id, ...), added in one command at the end:
-- nothing in between reads that set.
local leased = {}
-- Numbers written per job, formatted once (a Lua number becomes a string per use).
local ts, expiry = tostring(t), tostring(t + lease)
local wk = qk(q, 'wait')
local budget = want * 4 + 16
-- Jobs are popped in runs of at most `want` (each run's jobs looked at in their order, as
-- if popped one by one). A handoff puts a job back in `wait`, possibly ahead of the rest
-- of the run: those go back too, and the next run pops them again in order.
while want > 0 and budget > 0 do
  local popped = redis.call('ZPOPMIN', wk, math.min(want, budget))
  if not popped[1] then break end
  local i = 1
  while i < #popped do
    local id, seq = popped[i], popped[i + 1]
    i = i + 2
    budget = budget - 1
    local j = jk(id)
    -- `rgroup` (usually absent, and an absent field costs a look at every field) only
    -- when the queue has a rate limit.
    local f
    if rate_max then
      f = redis.call('HMGET', j, 'xkey', 'token', 'attempts', 'name', 'args', 'enq_at', 'trace',
        'rgroup')
    else
      f = redis.call('HMGET', j, 'xkey', 'token', 'attempts', 'name', 'args', 'enq_at', 'trace')
    end
    local xkey = f[1]
    local run = (xkey ~= false)
    local handed = false
    if run and rate_max and rate_hold(q, id, t, rate_max, rate_ms, f[8]) then run = false end
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
          handed = true
        else
          redis.call('SET', lk, id)
        end
      end
    end
    if run then
      local tok = tostring((tonumber(f[2] or '0') or 0) + 1)
      local att = tostring((tonumber(f[3] or '0') or 0) + 1)
      if rate_max then rate_count(q, id, tok, t, rate_ms, f[8]) end
      redis.call('HSET', j, 'token', tok, 'attempts', att, 'state', 'running', 'worker', holder,
        'started_at', ts)
      leased[#leased + 1] = expiry
      leased[#leased + 1] = id
      out[#out + 1] = id
      out[#out + 1] = tok
      out[#out + 1] = att
      out[#out + 1] = f[4] or ''
      out[#out + 1] = f[5] or ''
      out[#out + 1] = f[6] or '0'
      out[#out + 1] = f[7] or ''
      want = want - 1
    end
    if handed and i < #popped then
      local back = {}
      while i < #popped do
        back[#back + 1] = popped[i + 1]
        back[#back + 1] = popped[i]
        i = i + 2
      end
      zadd_all(wk, back)
    end
  end
end
zadd_all(qk(q, 'active'), leased)
if #out == 0 and rate_max then return rate_wait(q, t) end
return out
