local q, want, lease, worker = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local holder = worker .. ' ' .. ARGV[4] .. ' ' .. (ARGV[6] or '0')
local t = now_ms()
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
local rate_max, rate_ms = rate_cfg(q)
if rate_max then
  rate_release(q, t)
elseif redis.call('EXISTS', qk(q, 'limited')) == 1 then
  rate_release(q, '+inf')
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
  if run and rate_max and rate_hold(q, id, t, rate_max, rate_ms) then run = false end
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
    if rate_max then rate_count(q, id, tok, t, rate_ms) end
    redis.call('HSET', j, 'state', 'running', 'worker', holder, 'started_at', t)
    redis.call('ZADD', qk(q, 'active'), t + lease, id)
    local f = redis.call('HMGET', j, 'name', 'args', 'enq_at', 'trace')
    out[#out + 1] = id
    out[#out + 1] = tostring(tok)
    out[#out + 1] = tostring(att)
    out[#out + 1] = f[1] or ''
    out[#out + 1] = f[2] or ''
    out[#out + 1] = f[3] or '0'
    out[#out + 1] = f[4] or ''
    want = want - 1
  end
end
if #out == 0 and rate_max then return rate_wait(q, t) end
return out
