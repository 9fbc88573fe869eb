"""Lua scripts: each state change of a job is one atomic script, so API and workers never race.

Ownership of a running job is the consumer-group pending entry: a worker may publish, renew or end a
job only while the queue entry is pending under its own name. Another worker takes the entry over
with XAUTOCLAIM once it has been idle for the lease time; from then on the old owner's scripts
answer 'lost' and it stops.
"""

# KEYS: job, stats, queue, idem ("" for none)   ARGV: job id, max queued, idem ttl, field, value, ...
SUBMIT = """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'exists', existing} end
end
local queued = tonumber(redis.call('HGET', KEYS[2], 'n:queued') or '0')
if queued >= tonumber(ARGV[2]) then return {'full', tostring(queued)} end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HINCRBY', KEYS[2], 'n:queued', 1)
redis.call('HINCRBY', KEYS[2], 'submitted', 1)
redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[3]) end
return {'ok', ARGV[1]}
"""

_OWNER = """
local function owner_ok(queue, group, msg, worker)
  local p = redis.call('XPENDING', queue, group, msg, msg, 1)
  return #p > 0 and p[1][2] == worker
end
"""

# KEYS: job, stats   ARGV: worker id, now
START = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'queued' then
  redis.call('HINCRBY', KEYS[2], 'n:queued', -1)
  redis.call('HINCRBY', KEYS[2], 'n:running', 1)
  if tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0') == 0 then
    redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
  end
elseif st ~= 'running' then
  return st
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1])
return 'ok'
"""

# KEYS: queue, job, frames, stats
# ARGV: group, msg id, worker, index, payload, publish time, then stage/seconds pairs
PUBLISH = _OWNER + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
local st = redis.call('HGET', KEYS[2], 'status')
if st ~= 'running' then return 'state:' .. (st or 'missing') end
local done = tonumber(redis.call('HGET', KEYS[2], 'frames_done') or '0')
if tonumber(ARGV[4]) ~= done then return 'order:' .. done end
redis.call('XADD', KEYS[3], '0-' .. (done + 1), 'objects', ARGV[5], 't', ARGV[6])
redis.call('HSET', KEYS[2], 'frames_done', done + 1)
redis.call('HINCRBY', KEYS[4], 'frames', 1)
if #ARGV > 6 then
  for i = 7, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[4], 'stage:' .. ARGV[i], ARGV[i + 1]) end
  redis.call('HINCRBY', KEYS[4], 'stage_frames', 1)
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 'ok'
"""

# KEYS: queue, job   ARGV: group, msg id, worker  -> job status, or 'lost'
RENEW = _OWNER + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return redis.call('HGET', KEYS[2], 'status') or 'missing'
"""

# KEYS: job, stats, frames, video, masks, queue
# ARGV: allowed from-states (comma list), to-state, now, result ttl, msg id or '', worker or '', group,
#       error code, error message, frames_total or ''
FINISH = _OWNER + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if not string.find(',' .. ARGV[1] .. ',', ',' .. st .. ',', 1, true) then return 'state:' .. st end
if ARGV[6] ~= '' and not owner_ok(KEYS[6], ARGV[7], ARGV[5], ARGV[6]) then return 'lost' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'error_code', ARGV[8],
           'error_message', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'frames_total', ARGV[10]) end
redis.call('HINCRBY', KEYS[2], 'n:' .. st, -1)
redis.call('HINCRBY', KEYS[2], 'n:' .. ARGV[2], 1)
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0')
if started > 0 and ARGV[2] == 'succeeded' then
  redis.call('HINCRBYFLOAT', KEYS[2], 'job_seconds_sum', tonumber(ARGV[3]) - started)
  redis.call('HINCRBY', KEYS[2], 'job_seconds_count', 1)
end
redis.call('XADD', KEYS[3], '1-0', 'end', ARGV[2])
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
if ARGV[5] ~= '' then redis.call('XACK', KEYS[6], ARGV[7], ARGV[5]) end
return 'ok'
"""

# KEYS: queue, job, stats   ARGV: group, msg id, worker   (SIGTERM: give the job back to the queue)
HANDBACK = _OWNER + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
local st = redis.call('HGET', KEYS[2], 'status')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if st ~= 'running' then return 'state:' .. (st or 'missing') end
redis.call('HSET', KEYS[2], 'status', 'queued', 'worker', '')
redis.call('HINCRBY', KEYS[3], 'n:running', -1)
redis.call('HINCRBY', KEYS[3], 'n:queued', 1)
redis.call('XADD', KEYS[1], '*', 'job', redis.call('HGET', KEYS[2], 'id'))
return 'ok'
"""
