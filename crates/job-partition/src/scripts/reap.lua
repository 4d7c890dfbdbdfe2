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
