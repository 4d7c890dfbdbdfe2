-- ARGV: P, op, ... The outbox of a partition's members of flows and batches (see link_out).
-- op `get`, id: that member's entry ('' when none).
-- op `due`, older_than_ms, max: Redis' time, then per entry recorded at least
--   older_than_ms ago (oldest first): id, entry.
-- op `ack`, id, entry: removes the member's entry if it is still that one (a member run
--   again after a retry of a dead job records a new one, which is forwarded on its own).
local op = ARGV[2]
local hk, zk = P .. 'outbox', P .. 'outbox:at'
if op == 'get' then return redis.call('HGET', hk, ARGV[3]) or '' end
if op == 'ack' then
  if redis.call('HGET', hk, ARGV[3]) == ARGV[4] then
    redis.call('HDEL', hk, ARGV[3])
    redis.call('ZREM', zk, ARGV[3])
    return 1
  end
  return 0
end
local t = now_ms()
local ids = redis.call('ZRANGEBYSCORE', zk, '-inf', t - tonumber(ARGV[3]), 'LIMIT', 0, tonumber(ARGV[4]))
local out = { tostring(t) }
for _, id in ipairs(ids) do
  local m = redis.call('HGET', hk, id)
  if m then
    out[#out + 1] = id
    out[#out + 1] = m
  else
    redis.call('ZREM', zk, id)
  end
end
return out
