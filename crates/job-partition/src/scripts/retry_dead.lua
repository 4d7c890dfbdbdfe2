local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'qkey')
if f[1] ~= 'dead' then return 'not_dead' end
local q = f[2]
if f[3] and f[3] ~= '' then
  local k = P .. 'qkey:' .. f[3]
  local h = redis.call('GET', k)
  if h and h ~= id then
    local st = redis.call('HGET', jk(h), 'state')
    if st and not FINISHED[st] then return 'dup:' .. h end
  end
  redis.call('SET', k, id)
end
redis.call('ZREM', qk(q, 'dead'), id)
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', j, 'state', 'queued', 'seq', seq, 'attempts', 0)
redis.call('HDEL', j, 'error', 'fin_at', 'cancel')
redis.call('ZADD', qk(q, 'wait'), seq, id)
return 'ok'
