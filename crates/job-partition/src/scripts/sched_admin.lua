-- ARGV: P, op (pause | resume | remove), name, then for resume: the version read and the
-- next tick. Returns ok, unknown (no such schedule) or stale (changed since it was read).
local op, name = ARGV[2], ARGV[3]
local sk = P .. 'sched:' .. name
if redis.call('EXISTS', sk) == 0 then return 'unknown' end
if op == 'remove' then
  redis.call('DEL', sk)
  redis.call('ZREM', P .. 'scheds', name)
elseif op == 'pause' then
  redis.call('HSET', sk, 'paused', '1')
  redis.call('HINCRBY', sk, 'ver', 1)
  redis.call('ZADD', P .. 'scheds', '+inf', name)
elseif op == 'resume' then
  if redis.call('HGET', sk, 'ver') ~= ARGV[4] then return 'stale' end
  redis.call('HSET', sk, 'paused', '0', 'next_ms', ARGV[5])
  redis.call('HINCRBY', sk, 'ver', 1)
  redis.call('ZADD', P .. 'scheds', ARGV[5], name)
end
return 'ok'
