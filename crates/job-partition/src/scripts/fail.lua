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
if to_dead(id, q, reason, t) then return 3 end
return 2
