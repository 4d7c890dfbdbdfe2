local id = ARGV[2]
local j = jk(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'qkey', 'xkey')
local st, q = f[1], f[2]
if not st then return 'unknown' end
if st == 'running' then return 'running' end
for _, part in ipairs({ 'wait', 'delayed', 'parked', 'limited', 'done', 'dead' }) do
  redis.call('ZREM', qk(q, part), id)
end
if f[4] and f[4] ~= '' then
  redis.call('ZREM', P .. 'xwait:' .. f[4], id)
  release_xkey(id, f[4])
end
release_qkey(id, f[3])
if not FINISHED[st] then link_out(id, 'cancelled', now_ms()) end
if st == 'waiting' then redis.call('ZREM', P .. 'flows', id) end
redis.call('DEL', j)
return 'deleted'
