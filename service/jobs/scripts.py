"""Lua scripts, one per state change of a job, each atomic so that API and workers never race; and one
typed wrapper per script (keyword arguments in, a parsed `Outcome` out).

Ownership of a running job is the consumer-group pending entry: a worker may publish, renew or end a
job only while the queue entry is pending under its own name. Another worker takes the entry over
with XAUTOCLAIM once it has been idle for the lease time; from then on the old owner's scripts
answer 'lost' and it stops.

A wrapper builds a `ScriptCall`; `SyncScripts` (workers) and `AsyncScripts` (API) run it on their
client and parse the reply, so both sides share one definition of every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .keys import GROUP, Keys
from .records import JobStatus, text

# Per-key accounting (service/jobs/apikeys.py): {prefix}owner:{key id} counts the key's queued and
# running jobs and holds its rate bucket; {prefix}owner:{key id}:parked lists jobs that wait for one of
# its running slots. The scripts build these names from the prefix and the job's owner.
_USAGE = """
local function usage_move(prefix, owner, from, to)
  if owner == '' then return end
  local k = prefix .. 'owner:' .. owner
  if from ~= '' then redis.call('HINCRBY', k, 'n:' .. from, -1) end
  if to ~= '' then redis.call('HINCRBY', k, 'n:' .. to, 1) end
end
local function unpark(prefix, owner, queue)
  if owner == '' then return end
  local parked = prefix .. 'owner:' .. owner .. ':parked'
  while true do
    local id = redis.call('LPOP', parked)
    if not id then return end
    if redis.call('HGET', prefix .. 'job:' .. id, 'status') == 'queued' then
      redis.call('XADD', queue, '*', 'job', id)
      return
    end
  end
end
"""

# KEYS: job, stats, queue, idem ("" for none)
# ARGV: job id, max queued, idem ttl, prefix, owner, owner's max queued, owner's rate, now, input bytes,
#       max queued input bytes (0: no bound), then field, value, ...
SUBMIT = _USAGE + """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'exists', existing} end
end
local queued = tonumber(redis.call('HGET', KEYS[2], 'n:queued') or '0')
if queued >= tonumber(ARGV[2]) then return {'full', tostring(queued)} end
local bytes, max_bytes = tonumber(ARGV[9]), tonumber(ARGV[10])
local held = tonumber(redis.call('HGET', KEYS[2], 'input_bytes') or '0')
if max_bytes > 0 and held + bytes > max_bytes then return {'full_bytes', tostring(held)} end
local owner = ARGV[5]
if owner ~= '' then
  local k = ARGV[4] .. 'owner:' .. owner
  local mine = tonumber(redis.call('HGET', k, 'n:queued') or '0')
  if tonumber(ARGV[6]) > 0 and mine >= tonumber(ARGV[6]) then return {'quota', tostring(mine)} end
  local rate, now = tonumber(ARGV[7]), tonumber(ARGV[8])
  if rate > 0 then
    local burst = math.max(1, rate)
    local tokens = tonumber(redis.call('HGET', k, 'tokens') or tostring(burst))
    local ts = tonumber(redis.call('HGET', k, 'ts') or ARGV[8])
    tokens = math.min(burst, tokens + math.max(now - ts, 0) * rate)
    if tokens < 1 then return {'rate', tostring((1 - tokens) / rate)} end
    redis.call('HSET', k, 'tokens', tostring(tokens - 1), 'ts', ARGV[8])
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
redis.call('HINCRBY', KEYS[2], 'n:queued', 1)
redis.call('HINCRBY', KEYS[2], 'submitted', 1)
redis.call('HINCRBY', KEYS[2], 'input_bytes', bytes)
usage_move(ARGV[4], owner, '', 'queued')
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

# KEYS: job, stats   ARGV: worker id, now, prefix, max attempts
# A job whose key already runs its max_running jobs is parked ('parked'): it stays queued, and goes back
# to the queue when one of that key's running jobs ends or is handed back. A job delivered more than
# max attempts times in a row without a frame published in between is 'exhausted' (its workers keep
# dying on it: the caller dead-letters it); workers killed while it makes progress do not count.
START = _USAGE + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
local function stalled()
  local done = tonumber(redis.call('HGET', KEYS[1], 'frames_done') or '0')
  local mark = tonumber(redis.call('HGET', KEYS[1], 'progress_mark') or '-1')
  local stalls = tonumber(redis.call('HGET', KEYS[1], 'stalls') or '0')
  if done > mark then stalls = 0 end
  stalls = stalls + 1
  redis.call('HSET', KEYS[1], 'progress_mark', done, 'stalls', stalls)
  return stalls > tonumber(ARGV[4])
end
if st == 'queued' then
  local owner = redis.call('HGET', KEYS[1], 'owner') or ''
  if owner ~= '' then
    local limit = tonumber(redis.call('HGET', ARGV[3] .. 'apikey:' .. owner, 'max_running') or '0')
    local running = tonumber(redis.call('HGET', ARGV[3] .. 'owner:' .. owner, 'n:running') or '0')
    if limit > 0 and running >= limit then
      redis.call('RPUSH', ARGV[3] .. 'owner:' .. owner .. ':parked', redis.call('HGET', KEYS[1], 'id'))
      return 'parked'
    end
  end
  if stalled() then return 'exhausted:' .. redis.call('HGET', KEYS[1], 'stalls') end
  usage_move(ARGV[3], owner, 'queued', 'running')
  redis.call('HINCRBY', KEYS[2], 'n:queued', -1)
  redis.call('HINCRBY', KEYS[2], 'n:running', 1)
  if tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0') == 0 then
    redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
  end
elseif st ~= 'running' then
  return 'state:' .. st
elseif stalled() then
  return 'exhausted:' .. redis.call('HGET', KEYS[1], 'stalls')
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'claimed_at', ARGV[2])
return 'ok'
"""

# KEYS: queue, job, frames, stats
# ARGV: group, msg id, worker, index, objects (JSON), events (JSON), meta (JSON: timings, dropped, error),
#       publish time, dropped (1 or 0), then stage/seconds pairs
PUBLISH = _OWNER + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
local st = redis.call('HGET', KEYS[2], 'status')
if st ~= 'running' then return 'state:' .. (st or 'missing') end
local done = tonumber(redis.call('HGET', KEYS[2], 'frames_done') or '0')
if tonumber(ARGV[4]) ~= done then return 'order:' .. done end
redis.call('XADD', KEYS[3], '0-' .. (done + 1), 'objects', ARGV[5], 'events', ARGV[6], 'meta', ARGV[7],
           't', ARGV[8])
redis.call('HSET', KEYS[2], 'frames_done', done + 1)
if ARGV[9] == '1' then
  redis.call('HINCRBY', KEYS[2], 'frames_dropped', 1)
  redis.call('HINCRBY', KEYS[4], 'frames_dropped', 1)
else
  redis.call('HINCRBY', KEYS[4], 'frames', 1)
end
if #ARGV > 9 then
  for i = 10, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[4], 'stage:' .. ARGV[i], ARGV[i + 1]) end
  redis.call('HINCRBY', KEYS[4], 'stage_frames', 1)
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 'ok'
"""

# KEYS: queue, job   ARGV: group, msg id, worker  -> job status, or 'lost'
RENEW = _OWNER + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
local st = redis.call('HGET', KEYS[2], 'status')
if not st then return 'missing' end
return 'status:' .. st
"""

# KEYS: job, stats, frames, video, masks, queue, prompts, checkpoint, input
# ARGV: allowed from-states (comma list), to-state, now, result ttl, msg id or '', worker or '', group,
#       error code, error message, frames_total or '', ended_by or '', prefix
FINISH = _OWNER + _USAGE + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if not string.find(',' .. ARGV[1] .. ',', ',' .. st .. ',', 1, true) then return 'state:' .. st end
if ARGV[6] ~= '' and not owner_ok(KEYS[6], ARGV[7], ARGV[5], ARGV[6]) then return 'lost' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'error_code', ARGV[8],
           'error_message', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'frames_total', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'ended_by', ARGV[11]) end
redis.call('HINCRBY', KEYS[2], 'n:' .. st, -1)
redis.call('HINCRBY', KEYS[2], 'n:' .. ARGV[2], 1)
local held = tonumber(redis.call('HGET', KEYS[1], 'input_bytes') or '0')
-- (-0 would reach Redis as "-0", which is not an integer to it: a session holds no input bytes)
if held ~= 0 then redis.call('HINCRBY', KEYS[2], 'input_bytes', -held) end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
usage_move(ARGV[12], owner, st, '')
if st == 'running' then unpark(ARGV[12], owner, KEYS[6]) end
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0')
if started > 0 and ARGV[2] == 'succeeded' then
  redis.call('HINCRBYFLOAT', KEYS[2], 'job_seconds_sum', tonumber(ARGV[3]) - started)
  redis.call('HINCRBY', KEYS[2], 'job_seconds_count', 1)
end
redis.call('XADD', KEYS[3], '1-0', 'end', ARGV[2])
redis.call('DEL', KEYS[4], KEYS[5], KEYS[7], KEYS[8], KEYS[9])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('XACK', KEYS[6], ARGV[7], ARGV[5])
  redis.call('XDEL', KEYS[6], ARGV[5])
end
return 'ok'
"""

# KEYS: queue, job, stats   ARGV: group, msg id, worker, prefix   (SIGTERM: give the job back to the queue)
HANDBACK = _OWNER + _USAGE + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
local st = redis.call('HGET', KEYS[2], 'status')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if st ~= 'running' then return 'state:' .. (st or 'missing') end
redis.call('HSET', KEYS[2], 'status', 'queued', 'worker', '')
redis.call('HINCRBY', KEYS[3], 'n:running', -1)
redis.call('HINCRBY', KEYS[3], 'n:queued', 1)
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
usage_move(ARGV[4], owner, 'running', 'queued')
redis.call('XADD', KEYS[1], '*', 'job', redis.call('HGET', KEYS[2], 'id'))
unpark(ARGV[4], owner, KEYS[1])
return 'ok'
"""

# KEYS: job, prompts   ARGV: ids they start (JSON list), ttl, then frame / prompts of that frame (JSON) pairs
# All frames or none: a frame the worker has published or is computing is refused with 'order:N' (a job
# computes frame frames_done while running; a session the frame in `current`); a job's frame past the
# end with 'range:N'. A session's frame -1 is the next frame the client sends.
ADD_PROMPTS = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st ~= 'queued' and st ~= 'running' then return 'state:' .. st end
local session = redis.call('HGET', KEYS[1], 'kind') == 'session'
local done = tonumber(redis.call('HGET', KEYS[1], 'frames_done') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'frames_total') or '0')
local current = tonumber(redis.call('HGET', KEYS[1], 'current') or '-1')
local nxt = tonumber(redis.call('HGET', KEYS[1], 'frames_in') or '0')
local frames = {}
for i = 3, #ARGV, 2 do
  local f = tonumber(ARGV[i])
  if session then
    if f < 0 then f = nxt end
    if f < done or f <= current then return 'order:' .. math.max(done, current) end
  else
    if f < done or (f == done and st == 'running') then return 'order:' .. done end
    if f >= total then return 'range:' .. total end
  end
  frames[#frames + 1] = f
end
for k, f in ipairs(frames) do redis.call('XADD', KEYS[2], '*', 'frame', f, 'prompts', ARGV[2 * k + 2]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
local objs = cjson.decode(redis.call('HGET', KEYS[1], 'objects') or '[]')
local have = {}
for _, v in ipairs(objs) do have[v] = true end
for _, v in ipairs(cjson.decode(ARGV[1])) do
  if not have[v] then table.insert(objs, v); have[v] = true end
end
table.sort(objs)
if #objs > 0 then redis.call('HSET', KEYS[1], 'objects', cjson.encode(objs)) end
return 'ok'
"""

# KEYS: queue, job, checkpoint   ARGV: group, msg id, worker, frame, state, now, ttl, input position
# Only the owner, only while running, and never ahead of the published frames.
SAVE_CHECKPOINT = _OWNER + """
if not owner_ok(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
local st = redis.call('HGET', KEYS[2], 'status')
if st ~= 'running' then return 'state:' .. (st or 'missing') end
local done = tonumber(redis.call('HGET', KEYS[2], 'frames_done') or '0')
if tonumber(ARGV[4]) > done then return 'order:' .. done end
redis.call('HSET', KEYS[3], 'frame', ARGV[4], 'state', ARGV[5], 'worker', ARGV[3], 'at', ARGV[6], 'pos', ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return 'ok'
"""

# KEYS: job, input   ARGV: frame bytes, now, max pending, max kept, ttl  -> {'ok', index} | refusal
# A live session's frame gets the next index. Policy `all` refuses a frame while max pending wait; the
# input keeps at most `max kept` entries (older ones have been computed, or are reported as dropped).
SESSION_PUSH = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if st ~= 'queued' and st ~= 'running' then return {'state', st} end
if redis.call('HGET', KEYS[1], 'closing') == '1' then return {'state', 'closing'} end
local i = tonumber(redis.call('HGET', KEYS[1], 'frames_in') or '0')
local done = tonumber(redis.call('HGET', KEYS[1], 'frames_done') or '0')
if redis.call('HGET', KEYS[1], 'policy') == 'all' and i - done >= tonumber(ARGV[3]) then
  return {'full', tostring(i - done)}
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', 'index', i, 'data', ARGV[1], 't', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'frames_in', i + 1, 'last_input_at', ARGV[2])
return {'ok', tostring(i)}
"""

# KEYS: job, input   ARGV: now   The client sends nothing more: the worker ends the session once it has
# answered every frame before the end marker.
SESSION_END = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st ~= 'queued' and st ~= 'running' then return 'state:' .. st end
if redis.call('HGET', KEYS[1], 'closing') ~= '1' then
  redis.call('HSET', KEYS[1], 'closing', 1)
  redis.call('XADD', KEYS[2], '*', 'end', ARGV[1])
end
return 'ok'
"""

SOURCES = {"submit": SUBMIT, "start": START, "publish": PUBLISH, "renew": RENEW, "finish": FINISH,
           "handback": HANDBACK, "add_prompts": ADD_PROMPTS, "save_checkpoint": SAVE_CHECKPOINT,
           "session_push": SESSION_PUSH, "session_end": SESSION_END}


@dataclass(frozen=True)
class Outcome:
    """A script's answer.

    kind: ok | missing (no such job) | lost (the caller no longer owns it) | state (the job's status
    forbids it; `status` says which) | order (publish out of turn, or a prompt for a frame already
    done; `value` is the frame the job is on) | range (a frame past the end; `value` is the frame
    count) | full (queue bound; `value` is the queue length) | exists (idempotency key; `value` is the
    job id).
    `status` is also set on a successful renew (the job's current status).
    """

    kind: str
    status: JobStatus | None = None
    value: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def __str__(self) -> str:
        extra = self.status.value if self.status else self.value
        return f"{self.kind}:{extra}" if extra else self.kind


def parse(reply: Any) -> Outcome:
    """'ok' | 'lost' | 'missing' | 'state:S' | 'status:S' | 'order:N' | [kind, value]."""
    if isinstance(reply, list):
        return Outcome(text(reply[0]), value=text(reply[1]))
    kind, _, rest = text(reply).partition(":")
    if kind == "status":
        return Outcome("ok", JobStatus(rest))
    if kind == "state":
        return Outcome("state", JobStatus(rest) if rest in JobStatus._value2member_map_ else None, rest)
    return Outcome(kind, value=rest)


@dataclass(frozen=True)
class ScriptCall:
    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    parse: Callable[[Any], Outcome] = parse


def submit(k: Keys, *, job_id: str, record: dict[str, str], max_queued: int, idem_key: str | None,
           idem_ttl: int, owner: str = "", owner_max_queued: int = 0, owner_rate: float = 0.0, at: float = 0.0,
           input_bytes: int = 0, max_input_bytes: int = 0) -> ScriptCall:
    """Create the job record and queue it, unless the idempotency key is known ('exists'), the queue or the
    bytes of queued inputs are at their bound ('full', 'full_bytes'), or the owner's key is over its
    queued quota ('quota') or its rate ('rate', value: seconds until a submission is allowed)."""
    flat = [x for kv in record.items() for x in kv]
    return ScriptCall("submit", [k.job(job_id), k.stats, k.queue, k.idem(idem_key) if idem_key else ""],
                      [job_id, max_queued, idem_ttl, k.prefix, owner, owner_max_queued, owner_rate, at,
                       input_bytes, max_input_bytes, *flat])


def start(k: Keys, *, job_id: str, worker: str, at: float, max_attempts: int) -> ScriptCall:
    """queued -> running under `worker` (running stays running: a takeover); 'parked' when the owner's key
    runs its max_running jobs already; 'exhausted' after max_attempts deliveries without progress."""
    return ScriptCall("start", [k.job(job_id), k.stats], [worker, at, k.prefix, max_attempts])


def publish(k: Keys, *, job_id: str, msg_id: str, worker: str, index: int, objects: str, events: str,
            meta: str, at: float, dropped: bool = False, stages: dict[str, float] | None = None) -> ScriptCall:
    """Append frame `index` if the caller owns the job, it is running and `index` is the next one."""
    pairs = [x for kv in (stages or {}).items() for x in kv]
    return ScriptCall("publish", [k.queue, k.job(job_id), k.frames(job_id), k.stats],
                      [GROUP, msg_id, worker, index, objects, events, meta, at, 1 if dropped else 0, *pairs])


def renew(k: Keys, *, job_id: str, msg_id: str, worker: str) -> ScriptCall:
    """Reset the lease of the caller's job; the outcome carries the job's status."""
    return ScriptCall("renew", [k.queue, k.job(job_id)], [GROUP, msg_id, worker])


def finish(k: Keys, *, job_id: str, to: JobStatus, at: float, result_ttl: int, msg_id: str = "",
           worker: str = "", code: str = "", message: str = "", frames_total: int | None = None,
           ended_by: str = "", allowed: Sequence[JobStatus] = (JobStatus.QUEUED, JobStatus.RUNNING)) -> ScriptCall:
    """End the job (from one of `allowed`); with `worker`, only if it still owns the job. Its inputs are
    deleted, its record and frames expire after `result_ttl`, an end marker closes the frame stream."""
    return ScriptCall("finish", [k.job(job_id), k.stats, k.frames(job_id), k.video(job_id), k.masks(job_id),
                                 k.queue, k.prompts(job_id), k.checkpoint(job_id), k.input(job_id)],
                      [",".join(s.value for s in allowed), to.value, at, result_ttl, msg_id, worker, GROUP, code,
                       message[:1000], "" if frames_total is None else frames_total, ended_by, k.prefix])


def handback(k: Keys, *, job_id: str, msg_id: str, worker: str) -> ScriptCall:
    """Give a running job back to the queue (the worker is stopping)."""
    return ScriptCall("handback", [k.queue, k.job(job_id), k.stats], [GROUP, msg_id, worker, k.prefix])


def add_prompts(k: Keys, *, job_id: str, frames: dict[int, str], new_ids: list[int], ttl: int) -> ScriptCall:
    """Queue prompts (frame -> JSON of that frame's prompts) for frames the job has not reached, all or
    none; the ids they start join the job's objects."""
    pairs = [x for f in sorted(frames) for x in (f, frames[f])]
    return ScriptCall("add_prompts", [k.job(job_id), k.prompts(job_id)],
                      ["[" + ",".join(str(int(i)) for i in sorted(new_ids)) + "]", ttl, *pairs])


def save_checkpoint(k: Keys, *, job_id: str, msg_id: str, worker: str, frame: int, state: bytes, at: float,
                    ttl: int, pos: str = "") -> ScriptCall:
    """Store the tracker state after `frame` frames (the owner only, never past the published frames);
    `pos` is a session's input stream id consumed up to then."""
    return ScriptCall("save_checkpoint", [k.queue, k.job(job_id), k.checkpoint(job_id)],
                      [GROUP, msg_id, worker, frame, state, at, ttl, pos])


def session_push(k: Keys, *, session_id: str, data: bytes, at: float, max_pending: int, max_kept: int,
                 ttl: int) -> ScriptCall:
    """A frame of a live session: its index, or why it is refused (missing, state, full)."""
    return ScriptCall("session_push", [k.job(session_id), k.input(session_id)],
                      [data, at, max_pending, max_kept, ttl])


def session_end(k: Keys, *, session_id: str, at: float) -> ScriptCall:
    """The client sends nothing more."""
    return ScriptCall("session_end", [k.job(session_id), k.input(session_id)], [at])


class SyncScripts:
    """Runs ScriptCalls on a blocking client (workers)."""

    def __init__(self, client) -> None:
        self._scripts = {name: client.register_script(src) for name, src in SOURCES.items()}

    def __call__(self, call: ScriptCall) -> Outcome:
        return call.parse(self._scripts[call.script](keys=list(call.keys), args=list(call.args)))


class AsyncScripts:
    """Runs ScriptCalls on an asyncio client (API)."""

    def __init__(self, client) -> None:
        self._scripts = {name: client.register_script(src) for name, src in SOURCES.items()}

    async def __call__(self, call: ScriptCall) -> Outcome:
        return call.parse(await self._scripts[call.script](keys=list(call.keys), args=list(call.args)))
