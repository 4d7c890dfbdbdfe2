local n = tonumber(ARGV[2])
local t = now_ms()
local out = {}
local known = {}
for i = 0, n - 1 do
  local b = 3 + i * 12
  local id, q, name, args = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local qkey, xkey = ARGV[b + 4], ARGV[b + 5]
  local at, delay = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local trace, qttl, prio, rgroup = ARGV[b + 8], ARGV[b + 9], ARGV[b + 10], ARGV[b + 11]
  local dup = nil
  if qkey ~= '' then
    dup = qkey_holder(qkey)
    if not dup then redis.call('SET', P .. 'qkey:' .. qkey, id) end
  end
  if dup then
    out[#out + 1] = 'dup:' .. dup
  else
    local run_at = 0
    if at > 0 then run_at = at elseif delay > 0 then run_at = t + delay end
    insert(id, q, name, args, qkey, xkey, run_at, trace, qttl, prio, rgroup, t)
    if not known[q] then redis.call('SADD', P .. 'queues', q) known[q] = true end
    out[#out + 1] = id
  end
end
return out
