local id, q, name, args = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local qkey, xkey, delay, trace, qttl = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local prio, rgroup = ARGV[11], ARGV[12] or ''
local t = now_ms()
local replaced = ''
local h = qkey_holder(qkey)
if h then
  local f = redis.call('HMGET', jk(h), 'state', 'queue', 'xkey', 'attempts')
  local waiting = f[1] == 'scheduled' or f[1] == 'queued' or f[1] == 'parked'
  if not waiting or tonumber(f[4] or '0') ~= 0 then return { 'dup', h } end
  local hq = f[2]
  redis.call('ZREM', qk(hq, 'wait'), h)
  redis.call('ZREM', qk(hq, 'delayed'), h)
  redis.call('ZREM', qk(hq, 'parked'), h)
  if f[3] and f[3] ~= '' then
    redis.call('ZREM', P .. 'xwait:' .. f[3], h)
    release_xkey(h, f[3])
  end
  redis.call('HSET', jk(h), 'replaced_by', id)
  finish(h, hq, 'cancelled', t)
  replaced = h
end
redis.call('SET', P .. 'qkey:' .. qkey, id)
insert(id, q, name, args, qkey, xkey, t + delay, trace, qttl, prio, rgroup, t)
redis.call('SADD', P .. 'queues', q)
return { 'ok', replaced }
