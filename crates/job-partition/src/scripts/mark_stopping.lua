local id, tok, reason = ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', jk(id), 'state', 'token')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
redis.call('HSET', jk(id), 'stopping', tok .. ' ' .. reason)
return 1
