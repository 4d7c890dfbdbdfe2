local id, tok, outcome = ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', jk(id), 'state', 'token', 'queue', 'qkey', 'xkey', 'qttl', 'waiters')
if f[1] ~= 'running' or f[2] ~= tok then return 0 end
local t = now_ms()
redis.call('ZREM', qk(f[3], 'active'), id)
release_xkey(id, f[5])
if outcome == 'completed' then keep_qkey(id, f[4], f[6]) else release_qkey(id, f[4]) end
redis.call('HDEL', jk(id), 'worker', 'cancel')
if outcome == 'completed' and ARGV[5] and ARGV[5] ~= '' then
  redis.call('HSET', jk(id), 'result', ARGV[5])
end
if finish(id, f[3], outcome, t, f[7]) then return 2 end
return 1
