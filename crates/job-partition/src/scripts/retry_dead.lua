local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'qkey', 'prio')
if f[1] ~= 'dead' then return 'not_dead' end
local q = f[2]
if f[3] and f[3] ~= '' then
  local h = qkey_holder(f[3])
  if h and h ~= id then return 'dup:' .. h end
  redis.call('SET', P .. 'qkey:' .. f[3], id)
end
redis.call('ZREM', qk(q, 'dead'), id)
local seq = place(f[4])
redis.call('HSET', j, 'state', 'queued', 'seq', seq, 'attempts', 0)
redis.call('HDEL', j, 'error', 'fin_at', 'cancel')
redis.call('ZADD', qk(q, 'wait'), seq, id)
return 'ok'
