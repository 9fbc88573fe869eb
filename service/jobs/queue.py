"""The worker side of the job store (blocking): claim, start, renew, publish, finish, hand back.

Delivery is at least once (a Redis consumer group); exactly-once publication per frame index comes
from the scripts (frame i can only be appended when i frames exist, and only by the owner).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ..config import Settings
from . import scripts
from .errors import JobNotFoundError
from .keys import GROUP, Keys, frame_id, frame_index
from .records import Job, JobStatus, now, text
from .scripts import Outcome
from .storage import input_store

log = logging.getLogger("agss.worker")
RETRIES = 12  # with the backoff below: about 10 s


class StoppableRetry(Retry):
    """redis-py's Retry, except that nothing is retried once `stop` is set: a worker that is shutting down
    does not wait out a Redis outage (serve stops its embedded Redis together with its workers)."""

    def __init__(self, stop: threading.Event, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retryable(error: Exception) -> bool:
            return not self.stop.is_set() and (is_retryable is None or is_retryable(error))

        return super().call_with_retry(do, fail, retryable, with_failure_count)

    def __deepcopy__(self, memo: dict) -> StoppableRetry:  # each connection deep-copies its retry; one stop
        return StoppableRetry(self.stop, copy.deepcopy(self._backoff, memo), self._retries,
                              tuple(self._supported_errors))


@dataclass
class Claim:
    msg_id: str
    job_id: str
    deliveries: int


class WorkerQueue:
    """Worker-side operations on jobs."""

    def __init__(self, settings: Settings, worker_id: str | None = None, client: redis.Redis | None = None,
                 stop: threading.Event | None = None):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # A worker rides out a Redis restart: commands are retried for about ten seconds (a longer outage
        # abandons the job, which is resumed from its checkpoint after the lease). Every script is safe to
        # run again after a lost reply (a repeated publish answers 'order', taken as done). Once `stop` is
        # set (the worker is shutting down), nothing is retried.
        self.r = client or redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=60,
            retry=StoppableRetry(stop or threading.Event(), ExponentialBackoff(cap=1.0, base=0.1), RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self.run = scripts.SyncScripts(self.r)
        self.inputs = input_store(settings, self.keys)

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.keys.queue, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def heartbeat(self, info: dict) -> None:
        ttl = max(int(self.settings.heartbeat_seconds * 3), 2)
        self.r.set(self.keys.worker(self.worker_id), json.dumps(info), ex=ttl)

    def leave(self) -> None:
        """Deregister, trying once: at shutdown Redis may be gone already (serve stopping, or killed, stops
        its embedded Redis with the workers), and the heartbeat key expires by itself then."""
        key = self.keys.worker(self.worker_id)
        try:
            if not self.settings.redis_url:  # a client handed in (tests): its own retries
                self.r.delete(key)
                return
            with redis.from_url(self.settings.redis_url, socket_connect_timeout=1, socket_timeout=5,
                                retry=Retry(NoBackoff(), 0)) as once:
                once.delete(key)
        except redis.RedisError as e:
            log.info("left without deregistering (%s); the heartbeat expires by itself", e,
                     extra={"worker_id": self.worker_id})

    def claim(self, block_ms: int = 1000) -> Claim | None:
        """A job whose owner went silent for the lease time, else a new one (waits up to block_ms)."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        _, entries, *_ = self.r.xautoclaim(self.keys.queue, GROUP, self.worker_id, lease_ms, "0-0", count=1)
        if not entries:
            res = self.r.xreadgroup(GROUP, self.worker_id, {self.keys.queue: ">"}, count=1, block=block_ms)
            entries = res[0][1] if res else []
        if not entries:
            return None
        msg_id, fields = entries[0]
        if msg_id is None or not fields:
            # Deleted while pending (an XDEL from outside: normal operation acks before it deletes). Redis 7
            # leaves such an entry out of XAUTOCLAIM's answer; 6.2 answers (nil, nil) and hands it to us, and
            # since every claim scans from 0-0 it would meet the same entry first forever: ack ours that are gone.
            self._ack_deleted()
            return None
        msg_id = text(msg_id)
        p = self.r.xpending_range(self.keys.queue, GROUP, msg_id, msg_id, 1)
        deliveries = int(p[0]["times_delivered"]) if p else 1
        return Claim(msg_id, text(fields[b"job"]), deliveries)

    def _ack_deleted(self) -> None:
        for p in self.r.xpending_range(self.keys.queue, GROUP, "-", "+", 100, consumername=self.worker_id):
            if not self.r.xrange(self.keys.queue, p["message_id"], p["message_id"]):
                self.r.xack(self.keys.queue, GROUP, p["message_id"])

    def start(self, claim: Claim) -> Outcome:
        """Mark the job running. A job that can no longer run (ended, expired) or is parked is acked and
        skipped; an exhausted one is left to the caller to dead-letter."""
        out = self.run(scripts.start(self.keys, job_id=claim.job_id, worker=self.worker_id, at=now(),
                                     max_attempts=self.settings.max_attempts))
        if not out.ok and out.kind != "exhausted":
            self.ack(claim)
        return out

    def alive(self, job_id: str) -> bool:
        """The job exists and has not ended."""
        status = self.r.hget(self.keys.job(job_id), "status")
        return status is not None and not JobStatus(text(status)).ended

    def get(self, job_id: str) -> Job:
        h = self.r.hgetall(self.keys.job(job_id))
        if not h:
            raise JobNotFoundError(job_id)
        return Job.from_hash(h)

    def download_inputs(self, job_id: str, folder: Path, video_name: str, masks_name: str) -> tuple[Path, Path]:
        """The job's inputs as files (from Redis into `folder`, chunk by chunk; or in place from local storage)."""
        return self.inputs.fetch(self.r, job_id, folder, video_name, masks_name)

    def delete_inputs(self, job_id: str) -> None:
        """After the job ended (the finish script already deleted inputs kept in Redis)."""
        self.inputs.delete(job_id)

    def publish(self, claim: Claim, index: int, objects: list[dict], events: list[dict] | None = None,
                stages: dict[str, float] | None = None, meta: dict | None = None, dropped: bool = False) -> Outcome:
        """Append frame `index`; `stages` (seconds per stage) go to the shared counters in the same call;
        `meta` (timings, or a dropped or error mark of a session's frame) is merged into the frame's JSON."""
        compact = {"separators": (",", ":")}
        out = self.run(scripts.publish(self.keys, job_id=claim.job_id, msg_id=claim.msg_id, worker=self.worker_id,
                                        index=index, objects=json.dumps(objects, **compact),
                                        events=json.dumps(events or [], **compact),
                                        meta=json.dumps(meta or {}, **compact), at=now(), dropped=dropped,
                                        stages=stages))
        if out.kind == "order" and out.value == str(index + 1):
            return Outcome("ok")  # a retry after a lost reply: the frame is in
        return out

    def save_checkpoint(self, claim: Claim, frame: int, state: bytes, pos: str = "") -> Outcome:
        """The tracker state after `frame` frames, for a worker that takes the job over."""
        return self.run(scripts.save_checkpoint(self.keys, job_id=claim.job_id, msg_id=claim.msg_id,
                                                worker=self.worker_id, frame=frame, state=state, at=now(),
                                                ttl=self.settings.input_ttl_seconds, pos=pos))

    def load_checkpoint(self, job_id: str) -> tuple[int, bytes, str] | None:
        """(frames covered, state, input position) of the job's latest checkpoint, if any."""
        h = self.r.hmget(self.keys.checkpoint(job_id), "frame", "state", "pos")
        return (int(h[0]), h[1], text(h[2] or b"")) if h[0] is not None and h[1] is not None else None

    # -- live sessions ----------------------------------------------------------------------------------------
    def read_input(self, session_id: str, after: str, block_ms: int, count: int = 256) -> list[tuple[str, dict]]:
        """A session's input entries after stream id `after` (waits up to block_ms for the first)."""
        res = self.r.xread({self.keys.input(session_id): after}, count=count, block=block_ms)
        return [(text(eid), {text(k): v for k, v in fields.items()}) for eid, fields in (res[0][1] if res else [])]

    def unanswered(self, session_id: str, start: int, end: int) -> set[int]:
        """Indices in [start, end) published as dropped or failed (a takeover does not re-run them)."""
        if end <= start:
            return set()
        out = set()
        for eid, fields in self.r.xrange(self.keys.frames(session_id), min=frame_id(start), max=frame_id(end - 1)):
            meta = json.loads(text(fields.get(b"meta", b"{}")))
            if meta.get("dropped") or meta.get("error"):
                out.add(frame_index(eid))
        return out

    def trim_input(self, session_id: str, pos: str) -> None:
        """Input entries before `pos` are covered by a checkpoint: no takeover needs them."""
        if pos:
            self.r.xtrim(self.keys.input(session_id), minid=pos)

    def mark(self, session_id: str, **fields) -> None:
        """Fields of the session record only its worker writes: the frame it is on (`current`, which
        closes that frame to prompts), the frame size once the first frame is decoded."""
        self.r.hset(self.keys.job(session_id), mapping=fields)

    def prompts_since(self, job_id: str, after: str = "0-0") -> tuple[str, list[tuple[int, str]]]:
        """Prompts added to a running job after stream id `after`: (last id, [(frame, JSON of its prompts)])."""
        entries = self.r.xrange(self.keys.prompts(job_id), min=f"({after}" if after != "0-0" else "-", max="+")
        out = [(int(f[b"frame"]), text(f[b"prompts"])) for _, f in entries]
        return (text(entries[-1][0]) if entries else after), out

    def renew(self, claim: Claim) -> Outcome:
        return self.run(scripts.renew(self.keys, job_id=claim.job_id, msg_id=claim.msg_id, worker=self.worker_id))

    def finish(self, claim: Claim, status: JobStatus, code: str = "", message: str = "",
               frames_total: int | None = None, check_owner: bool = True, ended_by: str = "") -> Outcome:
        return self.run(scripts.finish(
            self.keys, job_id=claim.job_id, to=status, at=now(), result_ttl=self.settings.result_ttl_seconds,
            msg_id=claim.msg_id, worker=self.worker_id if check_owner else "", code=code, message=message,
            frames_total=frames_total, ended_by=ended_by))

    def dead_letter(self, claim: Claim, reason: str) -> Outcome:
        """Give up on a job its workers keep dying on: failed, with an entry in the dead-letter stream."""
        self.r.xadd(self.keys.deadletter, {"job": claim.job_id, "reason": reason, "worker": self.worker_id,
                                           "deliveries": claim.deliveries, "at": now()}, maxlen=10000)
        return self.finish(claim, JobStatus.FAILED, "attempts_exhausted", reason, check_owner=False)

    def ack(self, claim: Claim) -> None:
        """Done with the queue entry: acknowledged and deleted (the queue holds only live entries)."""
        pipe = self.r.pipeline()
        pipe.xack(self.keys.queue, GROUP, claim.msg_id)
        pipe.xdel(self.keys.queue, claim.msg_id)
        pipe.execute()

    def handback(self, claim: Claim) -> Outcome:
        return self.run(scripts.handback(self.keys, job_id=claim.job_id, msg_id=claim.msg_id, worker=self.worker_id))
