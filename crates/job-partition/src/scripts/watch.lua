local id, register = ARGV[2], ARGV[3] == '1'
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'result', 'error')
if not f[1] then return { 'unknown' } end
if FINISHED[f[1]] then return { f[1], f[2] or '', f[3] or '' } end
if register then redis.call('HINCRBY', j, 'waiters', 1) end
return { 'pending' }
