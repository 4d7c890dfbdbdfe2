-- Rate limits (prepended to claim.lua): at most `rate_max` starts per `rate_ms` of a
-- queue, counted apart for each job's `rgroup` (no group: the queue's shared group). Each
-- group's starts are a sorted set of start times (a sliding window, so no window of rate_ms
-- ever holds more than rate_max starts); a job whose group is full waits in `Q limited`,
-- scored by the time its group's oldest start leaves the window, and is not looked at again
-- before then.
-- `r`: the queue's `rate_max` and `rate_ms` fields as read (the claim reads them with the
-- queue's other settings, in one command).
local function rate_cfg(r)
  local max, ms = tonumber(r[1] or ''), tonumber(r[2] or '')
  if max and ms and max > 0 and ms > 0 then return max, ms end
  return nil
end

local function rate_key(q, group) return qk(q, 'rate:' .. group) end

-- Back to the queue, at their original place: limited jobs whose window allows them now.
local function rate_release(q, t)
  local lk = qk(q, 'limited')
  local due = redis.call('ZRANGEBYSCORE', lk, '-inf', t, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', lk, id)
    local seq = redis.call('HGET', jk(id), 'seq')
    if seq then
      redis.call('HSET', jk(id), 'state', 'queued')
      redis.call('ZADD', qk(q, 'wait'), seq, id)
    end
  end
end

-- If the job's group (its `rgroup` field as read, or false) has no start left in the
-- window, park it in `Q limited` until the window allows it and answer true.
local function rate_hold(q, id, t, max, ms, group)
  local rk = rate_key(q, group or '')
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', t - ms)
  if redis.call('ZCARD', rk) < max then return false end
  local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  redis.call('ZADD', qk(q, 'limited'), tonumber(oldest[2]) + ms, id)
  redis.call('HSET', jk(id), 'state', 'ratelimited')
  return true
end

-- Count a start in its group's window (`group`: the job's `rgroup` as read, or false).
local function rate_count(q, id, tok, t, ms, group)
  local rk = rate_key(q, group or '')
  redis.call('ZADD', rk, t, id .. ':' .. tok)
  redis.call('PEXPIRE', rk, ms)
end

-- The answer of a claim that started nothing while jobs wait for their window:
-- {'', ms until the first of them may start}, so the worker sleeps until then (a list of
-- two, which the claim's per-job parser skips).
local function rate_wait(q, t)
  local first = redis.call('ZRANGE', qk(q, 'limited'), 0, 0, 'WITHSCORES')
  if not first[1] then return {} end
  return { '', tostring(math.max(tonumber(first[2]) - t, 1)) }
end
