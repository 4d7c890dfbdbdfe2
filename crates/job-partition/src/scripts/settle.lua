-- Counts one member's outcome into its flow (kind `f`: the parent job's hash) or batch
-- (kind `b`), in the flow's or batch's partition. ARGV: P, kind, flow or batch id, member
-- id, state (completed | cancelled | dead), result (JSON or ''), error.
-- Idempotent: a member is counted once (HSETNX of its `kid:<id>` field), however many
-- times its outcome is forwarded (a worker and a lease check racing, a crash between
-- counting and acknowledging). The member that completes the count releases the parent or
-- the callbacks in the same step, so they are released exactly once.
-- Returns counted | released | dup | closed (the flow or batch no longer waits: cancelled,
-- deleted, or finished) | missing (not stored yet, or trimmed).
local kind, tid, cid, st, res, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local t = now_ms()
local failed = st ~= 'completed'
if kind == 'f' then
  local j = jk(tid)
  local f = redis.call('HMGET', j, 'state', 'flow_total', 'queue', 'flow_policy')
  if not f[1] then return 'missing' end
  if f[1] ~= 'waiting' or not f[2] then return 'closed' end
  if redis.call('HSETNX', j, 'kid:' .. cid, cjson.encode({ st, res, err })) == 0 then
    return 'dup'
  end
  if failed then redis.call('HINCRBY', j, 'flow_failed', 1) end
  local done = redis.call('HINCRBY', j, 'flow_done', 1)
  if done < tonumber(f[2]) then return 'counted' end
  redis.call('ZREM', P .. 'flows', tid)
  local nf = tonumber(redis.call('HGET', j, 'flow_failed') or '0') or 0
  if nf > 0 and f[4] == 'fail' then
    local h = redis.call('HGETALL', j)
    local why = {}
    for i = 1, #h, 2 do
      if #why < 5 and string.sub(h[i], 1, 4) == 'kid:' then
        local o = cjson.decode(h[i + 1])
        if o[1] ~= 'completed' then
          why[#why + 1] = string.sub(h[i], 5) .. ' ' .. o[1] .. (o[3] ~= '' and (': ' .. o[3]) or '')
        end
      end
    end
    to_dead(tid, f[3], nf .. ' of ' .. f[2] .. ' children failed (policy: fail the parent): '
      .. table.concat(why, '; '), t)
  else
    unhold(tid)
  end
  return 'released'
end
local bk = P .. 'batch:' .. tid
local b = redis.call('HMGET', bk, 'state', 'total', 'on_success', 'on_complete')
if not b[1] then return 'missing' end
if b[1] ~= 'open' then return 'closed' end
if redis.call('HSETNX', bk, 'kid:' .. cid, st) == 0 then return 'dup' end
redis.call('HINCRBY', bk, failed and 'failed' or 'succeeded', 1)
local c = redis.call('HMGET', bk, 'succeeded', 'failed')
local ok, nf = tonumber(c[1]), tonumber(c[2])
if ok + nf < tonumber(b[2]) then return 'counted' end
redis.call('HSET', bk, 'state', 'done', 'fin_at', t)
-- A settled batch's record is kept 7 days (what `wharf-jobs batches` shows), then expires.
redis.call('PEXPIRE', bk, 604800000)
local function release(id, run)
  if id == '' then return end
  local j = jk(id)
  local f = redis.call('HMGET', j, 'state', 'queue')
  if f[1] ~= 'waiting' then return end
  redis.call('HSET', j, 'batch_total', b[2], 'batch_succeeded', ok, 'batch_failed', nf)
  if run then
    unhold(id)
  else
    redis.call('HSET', j, 'error', nf .. ' of ' .. b[2] .. ' jobs of the batch failed: on_success does not run')
    finish(id, f[2], 'cancelled', t)
  end
end
release(b[3], nf == 0)
release(b[4], true)
return 'released'
