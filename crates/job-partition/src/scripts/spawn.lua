-- Stores the members of a flow or a batch (enqueue.lua's body, below), each linked to its
-- flow or batch: `link` = ARGV[#ARGV] (`<partition>\t<f|b>\t<flow or batch id>`), so the
-- step that finishes one records its outcome in this partition's outbox (see link_out).
-- Members have no queue key (refused before this runs), so every one is stored.
local link = ARGV[#ARGV]
local function enqueue_jobs()
--@ENQUEUE@
end
local out = enqueue_jobs()
for _, id in ipairs(out) do redis.call('HSET', jk(id), 'link', link) end
return out
