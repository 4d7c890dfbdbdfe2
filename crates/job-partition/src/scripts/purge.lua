local q, which, max = ARGV[2], ARGV[3], tonumber(ARGV[4])
local zk = qk(q, which)
local t = now_ms()
local ids = redis.call('ZRANGE', zk, 0, max - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', zk, id)
  local f = redis.call('HMGET', jk(id), 'qkey', 'xkey')
  if f[2] and f[2] ~= '' then
    redis.call('ZREM', P .. 'xwait:' .. f[2], id)
    release_xkey(id, f[2])
  end
  release_qkey(id, f[1])
  if which ~= 'done' and which ~= 'dead' then link_out(id, 'cancelled', t) end
  redis.call('DEL', jk(id))
end
return #ids
