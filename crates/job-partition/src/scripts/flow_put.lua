-- Stores a flow's parent (one job in enqueue.lua's layout, ARGV[2] = 1), held `waiting`
-- until its children settle. Its children are stored first (spawn.lua), so every one of
-- them exists and will report. Then: total, policy (fail | ignore | report), the children
-- as JSON ([[partition, queue, id, name], ...]). Returns the parent's id.
local A = #ARGV
local total, policy, kids = ARGV[A - 2], ARGV[A - 1], ARGV[A]
local function enqueue_jobs()
--@ENQUEUE@
end
local id = enqueue_jobs()[1]
hold(id)
redis.call('HSET', jk(id), 'flow_total', total, 'flow_done', 0, 'flow_failed', 0,
  'flow_policy', policy, 'flow_kids', kids)
redis.call('ZADD', P .. 'flows', now_ms(), id)
return id
