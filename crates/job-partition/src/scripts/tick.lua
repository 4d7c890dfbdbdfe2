-- Fires one schedule's due ticks: enqueues their jobs (with enqueue.lua's body, below) and
-- advances the schedule's next tick, in one step, only if the schedule is still where the
-- caller read it (same version and next tick, not paused). Two schedulers that read the
-- same tick race here; exactly one wins, the other gets {} and enqueues nothing.
-- The schedule's arguments come last, so enqueue.lua's per-job layout can change freely.
local A = #ARGV
local name, ver, expect, nxt, last = ARGV[A - 4], ARGV[A - 3], ARGV[A - 2], ARGV[A - 1], ARGV[A]
local sk = P .. 'sched:' .. name
local h = redis.call('HMGET', sk, 'ver', 'next_ms', 'paused')
if h[1] ~= ver or h[2] ~= expect or h[3] == '1' then return {} end
redis.call('HSET', sk, 'next_ms', nxt)
if last ~= '' then redis.call('HSET', sk, 'last_ms', last) end
redis.call('HINCRBY', sk, 'fired', tonumber(ARGV[2]))
redis.call('ZADD', P .. 'scheds', nxt, name)
local function enqueue_jobs()
--@ENQUEUE@
end
local out = enqueue_jobs()
table.insert(out, 1, 'ok')
return out
