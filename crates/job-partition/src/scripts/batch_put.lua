-- Stores a batch's record and its callbacks (0 to 2 jobs in enqueue.lua's layout), each
-- held `waiting` until the batch settles. Its members are stored first (spawn.lua). Then:
-- the callbacks' `batch` field (`<partition>\t<batch id>`), the batch's id, total, the
-- on_success callback's index among the jobs (1-based, or 0), the on_complete callback's
-- (or 0). Returns the callbacks' ids.
local A = #ARGV
local bref, bid, total = ARGV[A - 4], ARGV[A - 3], ARGV[A - 2]
local si, ci = tonumber(ARGV[A - 1]), tonumber(ARGV[A])
local function enqueue_jobs()
--@ENQUEUE@
end
local ids = enqueue_jobs()
for _, id in ipairs(ids) do
  hold(id)
  redis.call('HSET', jk(id), 'batch', bref)
end
local t = now_ms()
local bk = P .. 'batch:' .. bid
redis.call('HSET', bk, 'state', 'open', 'total', total, 'succeeded', 0, 'failed', 0,
  'created', t, 'on_success', ids[si] or '', 'on_complete', ids[ci] or '')
redis.call('ZADD', P .. 'batches', t, bid)
return ids
