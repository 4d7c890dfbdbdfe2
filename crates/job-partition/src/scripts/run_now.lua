local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue')
if not f[1] then return 'unknown' end
if f[1] ~= 'scheduled' and f[1] ~= 'retrying' then return 'state:' .. f[1] end
if redis.call('ZREM', qk(f[2], 'delayed'), id) == 0 then return 'state:' .. f[1] end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', j, 'state', 'queued', 'seq', seq)
redis.call('ZADD', qk(f[2], 'wait'), seq, id)
return 'queued'
