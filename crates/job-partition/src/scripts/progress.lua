local id, tok = ARGV[2], ARGV[3]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'token')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
redis.call('HSET', j, 'progress', ARGV[4])
return 1
