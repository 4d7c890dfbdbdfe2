-- ARGV: P, kind (flows | batches), max. Returns per waiting flow (oldest first) or batch
-- (newest first; expired records are dropped from the index) a list: id, then fields.
local kind, max = ARGV[2], tonumber(ARGV[3])
local out = {}
if kind == 'flows' then
  for _, id in ipairs(redis.call('ZRANGE', P .. 'flows', 0, max - 1)) do
    local f = redis.call('HMGET', jk(id), 'name', 'queue', 'state', 'flow_total', 'flow_done',
      'flow_failed', 'flow_policy', 'enq_at')
    if f[1] then
      local row = { id }
      for i = 1, 8 do row[#row + 1] = f[i] or '' end
      out[#out + 1] = row
    end
  end
  return out
end
local zk = P .. 'batches'
for _, id in ipairs(redis.call('ZREVRANGE', zk, 0, max - 1)) do
  local f = redis.call('HMGET', P .. 'batch:' .. id, 'state', 'total', 'succeeded', 'failed',
    'created', 'fin_at', 'on_success', 'on_complete')
  if f[1] then
    local row = { id }
    for i = 1, 8 do row[#row + 1] = f[i] or '' end
    out[#out + 1] = row
  else
    redis.call('ZREM', zk, id)
  end
end
return out
