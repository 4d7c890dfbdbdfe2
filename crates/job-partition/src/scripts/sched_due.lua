-- ARGV: P, max. Returns Redis' time (ms), the earliest next tick after the due ones (or ''),
-- then per due schedule (at most max) a list: name, then the fields of DUE_FIELDS.
local max = tonumber(ARGV[2])
local t = now_ms()
local zk = P .. 'scheds'
local due = redis.call('ZRANGEBYSCORE', zk, '-inf', t, 'LIMIT', 0, max)
local later = redis.call('ZRANGEBYSCORE', zk, '(' .. t, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local out = { tostring(t), later[2] or '' }
for _, name in ipairs(due) do
  local f = redis.call('HMGET', P .. 'sched:' .. name, 'ver', 'next_ms', 'when', 'missed',
    'grace_ms', 'job', 'args', 'queue', 'qkey', 'xkey', 'rgroup', 'qttl', 'prio')
  if f[1] then
    local row = { name }
    for i = 1, #f do row[#row + 1] = f[i] or '' end
    out[#out + 1] = row
  else
    redis.call('ZREM', zk, name)
  end
end
return out
