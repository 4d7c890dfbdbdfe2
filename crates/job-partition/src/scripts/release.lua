local id, tok = ARGV[2], ARGV[3]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'token', 'queue', 'seq')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
redis.call('ZREM', qk(f[3], 'active'), id)
redis.call('HDEL', j, 'worker')
redis.call('HINCRBY', j, 'attempts', -1)
redis.call('HSET', j, 'state', 'queued')
redis.call('ZADD', qk(f[3], 'wait'), f[4], id)
return 1
