local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'qkey', 'xkey')
local st, q = f[1], f[2]
if not st then return 'unknown' end
if st == 'running' then redis.call('HSET', j, 'cancel', '1') return 'cancelling' end
if FINISHED[st] then return 'finished:' .. st end
redis.call('ZREM', qk(q, 'wait'), id)
redis.call('ZREM', qk(q, 'delayed'), id)
redis.call('ZREM', qk(q, 'parked'), id)
redis.call('ZREM', qk(q, 'limited'), id)
if f[4] and f[4] ~= '' then
  redis.call('ZREM', P .. 'xwait:' .. f[4], id)
  release_xkey(id, f[4])
end
release_qkey(id, f[3])
if st == 'waiting' then redis.call('ZREM', P .. 'flows', id) end
finish(id, q, 'cancelled', now_ms())
return 'cancelled'
