-- ARGV: P, name, next_ms, then field/value pairs (the definition). Creates or replaces a
-- schedule; a replaced schedule keeps its paused state and counters, and its version moves
-- on (a tick computed from the old definition is refused by tick.lua). Returns the version.
local name, nxt = ARGV[2], ARGV[3]
local sk = P .. 'sched:' .. name
local old = redis.call('HMGET', sk, 'ver', 'paused', 'fired', 'last_ms', 'created_ms')
local ver = (tonumber(old[1] or '0') or 0) + 1
redis.call('DEL', sk)
for i = 4, #ARGV, 2 do redis.call('HSET', sk, ARGV[i], ARGV[i + 1]) end
local paused = old[2] or '0'
redis.call('HSET', sk, 'ver', ver, 'paused', paused, 'fired', old[3] or '0',
  'next_ms', nxt, 'created_ms', old[5] or now_ms())
if old[4] then redis.call('HSET', sk, 'last_ms', old[4]) end
if paused == '1' then
  redis.call('ZADD', P .. 'scheds', '+inf', name)
else
  redis.call('ZADD', P .. 'scheds', nxt, name)
end
return ver
