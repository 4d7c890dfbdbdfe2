local q, max = ARGV[2], tonumber(ARGV[3])
local out = { tostring(now_ms()) }
local act = redis.call('ZRANGE', qk(q, 'active'), 0, max - 1, 'WITHSCORES')
for i = 1, #act, 2 do
  local f = redis.call('HMGET', jk(act[i]), 'name', 'worker', 'lease_ms', 'beat_ms')
  local w, l, b = string.match(f[2] or '', '^(%S+) (%d+) (%d+)$')
  out[#out + 1] = act[i]
  out[#out + 1] = f[1] or ''
  out[#out + 1] = w or f[2] or ''
  out[#out + 1] = act[i + 1]
  out[#out + 1] = l or f[3] or '0'
  out[#out + 1] = b or f[4] or '0'
end
return out
