local n = tonumber(ARGV[2])
local t = now_ms()
local out = {}
local known = {}
for i = 0, n - 1 do
  local b = 3 + i * 10
  local id, q, name, args = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local qkey, xkey = ARGV[b + 4], ARGV[b + 5]
  local at, delay = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local trace = ARGV[b + 8]
  local rgroup = ARGV[b + 9]
  local dup = nil
  if qkey ~= '' then
    local k = P .. 'qkey:' .. qkey
    local h = redis.call('GET', k)
    if h then
      local st = redis.call('HGET', jk(h), 'state')
      if st and not FINISHED[st] then dup = h end
    end
    if not dup then redis.call('SET', k, id) end
  end
  if dup then
    out[#out + 1] = 'dup:' .. dup
  else
    local run_at = 0
    if at > 0 then run_at = at elseif delay > 0 then run_at = t + delay end
    local seq = redis.call('INCR', P .. 'seq')
    local j = jk(id)
    redis.call('HSET', j, 'name', name, 'args', args, 'queue', q, 'qkey', qkey, 'xkey', xkey,
      'enq_at', t, 'seq', seq, 'attempts', 0, 'token', 0)
    if trace ~= '' and #trace <= 600 then redis.call('HSET', j, 'trace', trace) end
    if rgroup ~= '' then redis.call('HSET', j, 'rgroup', rgroup) end
    if run_at > t then
      redis.call('HSET', j, 'state', 'scheduled', 'run_at', run_at)
      redis.call('ZADD', qk(q, 'delayed'), run_at, id)
    else
      redis.call('HSET', j, 'state', 'queued')
      redis.call('ZADD', qk(q, 'wait'), seq, id)
    end
    if not known[q] then redis.call('SADD', P .. 'queues', q) known[q] = true end
    out[#out + 1] = id
  end
end
return out
