-- ARGV: P, max. Returns per schedule (by next tick, paused last; at most max) a list:
-- name, then its hash's fields and values.
local names = redis.call('ZRANGE', P .. 'scheds', 0, tonumber(ARGV[2]) - 1)
local out = {}
for _, name in ipairs(names) do
  local row = { name }
  local f = redis.call('HGETALL', P .. 'sched:' .. name)
  for i = 1, #f do row[#row + 1] = f[i] end
  out[#out + 1] = row
end
return out
