"""The Redis broker: the API side (async: submit, read, cancel) and the worker side (sync: claim, renew,
publish, finish). API and workers share nothing but Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio as aredis

from ..config import Settings
from . import scripts
from .errors import JobConflictError, JobNotFoundError, QueueFullError
from .keys import GROUP, Keys, frame_id, frame_index
from .model import Job, now


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class FramePage:
    frames: list[dict]  # [{"index": i, "objects": [...]}]
    next: int
    status: str


def _parse_entries(entries, limit: int) -> tuple[list[dict], bool]:
    """Stream entries -> frames {"index", "objects", "published_at"}, and whether the end marker came."""
    frames, ended = [], False
    for eid, fields in entries:
        i = frame_index(eid)
        if i < 0:
            ended = True
            break
        if len(frames) < limit:
            frames.append({"index": i, "objects": json.loads(_s(fields[b"objects"])),
                           "published_at": float(_s(fields.get(b"t", b"0")))})
    return frames, ended


class JobStore:
    """API-side operations (asyncio)."""

    def __init__(self, settings: Settings, client: aredis.Redis | None = None):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.r = client or aredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=None,
                                           health_check_interval=30)
        self._submit = self.r.register_script(scripts.SUBMIT)
        self._finish = self.r.register_script(scripts.FINISH)

    async def close(self) -> None:
        await self.r.aclose()

    async def ping(self) -> bool:
        return bool(await self.r.ping())

    async def workers_alive(self) -> int:
        n = 0
        async for _ in self.r.scan_iter(match=self.keys.worker_pattern(), count=100):
            n += 1
        return n

    async def find_idempotent(self, key: str) -> str | None:
        v = await self.r.get(self.keys.idem(key))
        return _s(v) if v else None

    async def submit(self, job: Job, video_path: Path, masks: bytes, idempotency_key: str | None = None) -> Job:
        """Store the inputs, then queue the job. Returns the existing job for a repeated idempotency key."""
        k = self.keys
        chunk = self.settings.upload_chunk_bytes
        ttl = self.settings.input_ttl_seconds
        with open(video_path, "rb") as f:
            while True:
                pipe = self.r.pipeline(transaction=False)
                n = 0
                for _ in range(8):  # at most 8 chunks in memory at once
                    data = await asyncio.to_thread(f.read, chunk)
                    if not data:
                        break
                    pipe.rpush(k.video(job.id), data)
                    n += 1
                if n:
                    pipe.expire(k.video(job.id), ttl)
                    await pipe.execute()
                if n < 8:
                    break
        await self.r.set(k.masks(job.id), masks, ex=ttl)
        flat = [x for kv in job.to_hash().items() for x in kv]
        idem = k.idem(idempotency_key) if idempotency_key else ""
        status, value = await self._submit(
            keys=[k.job(job.id), k.stats, k.queue, idem],
            args=[job.id, self.settings.max_queued_jobs, self.settings.result_ttl_seconds, *flat])
        status, value = _s(status), _s(value)
        if status != "ok":
            await self.r.delete(k.video(job.id), k.masks(job.id))
        if status == "exists":
            return await self.get(value)
        if status == "full":
            raise QueueFullError(f"the queue is full ({value} jobs waiting); try again later")
        return job

    async def get(self, job_id: str) -> Job:
        h = await self.r.hgetall(self.keys.job(job_id))
        if not h:
            raise JobNotFoundError(f"no job {job_id!r}")
        return Job.from_hash(h)

    async def frames(self, job_id: str, start: int = 0, limit: int = 100, wait: float = 0) -> FramePage:
        """Frames from `start` on (at most `limit`); with `wait`, block until one exists or the job ends."""
        k = self.keys.frames(job_id)
        job = await self.get(job_id)
        entries = await self.r.xrange(k, min=frame_id(start), max="+", count=limit + 1)
        if not entries and wait > 0 and not job.ended:
            res = await self.r.xread({k: f"0-{start}"}, count=limit + 1, block=int(wait * 1000))
            entries = res[0][1] if res else []
            if entries:
                job = await self.get(job_id)
        frames, _ = _parse_entries(entries, limit)
        nxt = frames[-1]["index"] + 1 if frames else start
        return FramePage(frames, nxt, job.status)

    async def stream(self, job_id: str, start: int = 0, block_ms: int = 15000) -> AsyncIterator[dict]:
        """Every frame from `start` as it is published; returns when the end marker is read."""
        k = self.keys.frames(job_id)
        last = f"0-{start}"
        while True:
            res = await self.r.xread({k: last}, count=100, block=block_ms)
            if not res:
                job = await self.get(job_id)  # also raises when the job has expired
                if job.ended and not await self.r.exists(k):
                    return
                continue
            entries = res[0][1]
            frames, ended = _parse_entries(entries, len(entries))
            for f in frames:
                yield f
            if ended:
                return
            last = _s(entries[-1][0])

    async def cancel(self, job_id: str) -> Job:
        k = self.keys
        res = _s(await self._finish(
            keys=[k.job(job_id), k.stats, k.frames(job_id), k.video(job_id), k.masks(job_id), k.queue],
            args=["queued,running", "cancelled", now(), self.settings.result_ttl_seconds, "", "", GROUP,
                  "cancelled", "cancelled by the client", ""]))
        if res == "missing":
            raise JobNotFoundError(f"no job {job_id!r}")
        if res.startswith("state:"):
            raise JobConflictError(f"job {job_id} has already ended ({res[6:]})")
        return await self.get(job_id)

    async def stats(self) -> dict:
        h = {_s(a): _s(b) for a, b in (await self.r.hgetall(self.keys.stats)).items()}
        try:
            pending = (await self.r.xpending(self.keys.queue, GROUP))["pending"]
        except redis.ResponseError:
            pending = 0
        workers = []
        async for key in self.r.scan_iter(match=self.keys.worker_pattern(), count=100):
            raw = await self.r.get(key)
            if raw:
                workers.append(json.loads(raw))
        return {"stats": h, "pending": pending, "workers": len(workers), "worker_info": workers}


@dataclass
class Claim:
    msg_id: str
    job_id: str
    deliveries: int


class WorkerQueue:
    """Worker-side operations (blocking)."""

    def __init__(self, settings: Settings, worker_id: str | None = None, client: redis.Redis | None = None):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.r = client or redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=60)
        self._start = self.r.register_script(scripts.START)
        self._publish = self.r.register_script(scripts.PUBLISH)
        self._renew = self.r.register_script(scripts.RENEW)
        self._finish = self.r.register_script(scripts.FINISH)
        self._handback = self.r.register_script(scripts.HANDBACK)

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
        self.r.delete(self.keys.worker(self.worker_id))

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
        msg_id = _s(msg_id)
        if not fields:  # the entry was trimmed away
            self.r.xack(self.keys.queue, GROUP, msg_id)
            return None
        p = self.r.xpending_range(self.keys.queue, GROUP, msg_id, msg_id, 1)
        deliveries = int(p[0]["times_delivered"]) if p else 1
        return Claim(msg_id, _s(fields[b"job"]), deliveries)

    def start(self, claim: Claim) -> str:
        """Mark the job running; 'ok', or the state that forbids it (an ended job is acked and skipped)."""
        res = _s(self._start(keys=[self.keys.job(claim.job_id), self.keys.stats], args=[self.worker_id, now()]))
        if res != "ok":
            self.r.xack(self.keys.queue, GROUP, claim.msg_id)
        return res

    def get(self, job_id: str) -> Job:
        h = self.r.hgetall(self.keys.job(job_id))
        if not h:
            raise JobNotFoundError(job_id)
        return Job.from_hash(h)

    def download_inputs(self, job_id: str, folder: Path, video_name: str, masks_name: str) -> tuple[Path, Path]:
        """Inputs from Redis to files (the video chunk by chunk, never whole in memory)."""
        video = folder / f"video{Path(video_name).suffix.lower()}"
        masks = folder / f"masks{Path(masks_name).suffix.lower()}"
        k = self.keys.video(job_id)
        n = self.r.llen(k)
        if n == 0:
            raise JobConflictError("the job's inputs are gone (expired or already processed)")
        with open(video, "wb") as f:
            for i in range(0, n, 8):
                for chunk in self.r.lrange(k, i, min(i + 7, n - 1)):
                    f.write(chunk)
        data = self.r.get(self.keys.masks(job_id))
        if data is None:
            raise JobConflictError("the job's masks are gone (expired or already processed)")
        masks.write_bytes(data)
        return video, masks

    def publish(self, claim: Claim, index: int, objects: list[dict], stages: dict[str, float] | None = None) -> str:
        """Append frame `index`; `stages` (seconds per stage) go to the shared counters in the same call."""
        k = self.keys
        pairs = [x for kv in (stages or {}).items() for x in kv]
        return _s(self._publish(keys=[k.queue, k.job(claim.job_id), k.frames(claim.job_id), k.stats],
                                args=[GROUP, claim.msg_id, self.worker_id, index,
                                      json.dumps(objects, separators=(",", ":")), now(), *pairs]))

    def renew(self, claim: Claim) -> str:
        return _s(self._renew(keys=[self.keys.queue, self.keys.job(claim.job_id)],
                              args=[GROUP, claim.msg_id, self.worker_id]))

    def finish(self, claim: Claim, status: str, code: str = "", message: str = "",
               frames_total: int | None = None, check_owner: bool = True) -> str:
        k, j = self.keys, claim.job_id
        return _s(self._finish(
            keys=[k.job(j), k.stats, k.frames(j), k.video(j), k.masks(j), k.queue],
            args=["queued,running", status, now(), self.settings.result_ttl_seconds, claim.msg_id,
                  self.worker_id if check_owner else "", GROUP, code, message[:1000],
                  "" if frames_total is None else frames_total]))

    def dead_letter(self, claim: Claim, reason: str) -> None:
        self.r.xadd(self.keys.deadletter, {"job": claim.job_id, "reason": reason, "worker": self.worker_id,
                                           "deliveries": claim.deliveries, "at": now()}, maxlen=10000)
        self.finish(claim, "failed", "attempts_exhausted", reason, check_owner=False)

    def ack(self, claim: Claim) -> None:
        self.r.xack(self.keys.queue, GROUP, claim.msg_id)

    def handback(self, claim: Claim) -> str:
        return _s(self._handback(keys=[self.keys.queue, self.keys.job(claim.job_id), self.keys.stats],
                                 args=[GROUP, claim.msg_id, self.worker_id]))
