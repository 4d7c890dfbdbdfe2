local lease = tonumber(ARGV[2])
local t = now_ms()
local out = {}
for i = 3, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', jk(id), 'state', 'token', 'queue', 'cancel')
  if f[1] == 'running' and f[2] == tok then
    redis.call('ZADD', qk(f[3], 'active'), 'XX', t + lease, id)
    if f[4] == '1' then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = 2
  end
end
return out
