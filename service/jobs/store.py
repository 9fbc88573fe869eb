"""The API side of the job store (asyncio): submit, read, stream frames, cancel, counters.

API processes and workers share nothing but Redis; the worker side is jobs/queue.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio as aredis

from ..config import Settings
from ..media.errors import MediaError
from . import scripts
from .apikeys import KeyInfo
from .errors import BacklogFullError, JobConflictError, JobNotFoundError, QueueFullError, QuotaError
from .keys import GROUP, Keys, frame_id, frame_index
from .records import Job, JobStatus, Kind, now, text
from .storage import input_store


@dataclass
class FramePage:
    frames: list[dict]  # [{"index": i, "objects": [...], "published_at": t}]
    next: int
    status: JobStatus


def _scoped(idempotency_key: str, caller: KeyInfo | None) -> str:
    """Idempotency keys are per API key: two tenants may use the same one."""
    return f"{caller.id}:{idempotency_key}" if caller else idempotency_key


def _refusal(out: scripts.Outcome, what: str) -> None:
    """The submit script's refusals as errors, with the time after which to try again."""
    if out.kind == "full":
        raise QueueFullError(f"the queue is full ({out.value} {what} waiting); try again later", retry_after=5)
    if out.kind == "full_bytes":
        raise QueueFullError(f"the inputs of queued jobs take {out.value} bytes, the bound; try again later",
                             retry_after=5)
    if out.kind == "quota":
        raise QuotaError(f"this key has {out.value} jobs queued, its max_queued", retry_after=5)
    if out.kind == "rate":
        raise QuotaError("this key submits faster than its rate allows", retry_after=float(out.value))


def parse_entries(entries, limit: int) -> tuple[list[dict], bool]:
    """Frame stream entries -> frames {"index", "objects", "events", "published_at", and "timings",
    "dropped" or "error" where set}, and whether the end marker came."""
    frames, ended = [], False
    for eid, fields in entries:
        i = frame_index(eid)
        if i < 0:
            ended = True
            break
        if len(frames) < limit:
            frame = {"index": i, "objects": json.loads(text(fields[b"objects"])),
                     "events": json.loads(text(fields.get(b"events", b"[]"))),
                     "published_at": float(text(fields.get(b"t", b"0")))}
            frame.update(json.loads(text(fields.get(b"meta", b"{}"))))  # timings; dropped or error
            frames.append(frame)
    return frames, ended


class JobStore:
    """API-side operations on jobs."""

    def __init__(self, settings: Settings, client: aredis.Redis | None = None):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.r = client or aredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=None,
                                           health_check_interval=30, max_connections=settings.redis_max_connections)
        self.run = scripts.AsyncScripts(self.r)
        self.inputs = input_store(settings, self.keys)

    async def close(self) -> None:
        await self.r.aclose()

    async def ping(self) -> bool:
        return bool(await self.r.ping())

    async def workers_alive(self) -> int:
        n = 0
        async for _ in self.r.scan_iter(match=self.keys.worker_pattern(), count=100):
            n += 1
        return n

    async def find_idempotent(self, key: str, caller: KeyInfo | None = None) -> str | None:
        v = await self.r.get(self.keys.idem(_scoped(key, caller)))
        return text(v) if v else None

    async def submit(self, job: Job, video_path: Path, masks_path: Path, idempotency_key: str | None = None,
                     caller: KeyInfo | None = None) -> Job:
        """Store the inputs, then queue the job. Returns the existing job for a repeated idempotency key."""
        job.owner = caller.id if caller else ""
        job.input_bytes = video_path.stat().st_size + masks_path.stat().st_size
        await self.inputs.put(self.r, job.id, video_path, masks_path)
        out = await self.run(scripts.submit(
            self.keys, job_id=job.id, record=job.to_hash(), max_queued=self.settings.max_queued_jobs,
            idem_key=_scoped(idempotency_key, caller) if idempotency_key else None,
            idem_ttl=self.settings.result_ttl_seconds, owner=job.owner,
            owner_max_queued=caller.max_queued if caller else 0, owner_rate=caller.rate if caller else 0.0,
            at=now(), input_bytes=job.input_bytes, max_input_bytes=self.settings.max_queued_input_bytes))
        if not out.ok:
            await self.inputs.drop(self.r, job.id)
        if out.kind == "exists":
            return await self.get(out.value, caller)
        _refusal(out, "jobs")
        return job

    async def get(self, job_id: str, caller: KeyInfo | None = None) -> Job:
        """The job or session; another key's is not found, as if it did not exist."""
        h = await self.r.hgetall(self.keys.job(job_id))
        job = Job.from_hash(h) if h else None
        if job is None or (caller is not None and job.owner != caller.id):
            raise JobNotFoundError(f"no job {job_id!r}")
        return job

    async def frames(self, job_id: str, start: int = 0, limit: int = 100, wait: float = 0,
                     caller: KeyInfo | None = None) -> FramePage:
        """Frames from `start` on (at most `limit`); with `wait`, block until one exists or the job ends."""
        k = self.keys.frames(job_id)
        job = await self.get(job_id, caller)
        entries = await self.r.xrange(k, min=frame_id(start), max="+", count=limit + 1)
        if not entries and wait > 0 and not job.ended:
            res = await self.r.xread({k: f"0-{start}"}, count=limit + 1, block=int(wait * 1000))
            entries = res[0][1] if res else []
            if entries:
                job = await self.get(job_id)
        frames, _ = parse_entries(entries, limit)
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
            frames, ended = parse_entries(entries, len(entries))
            for f in frames:
                yield f
            if ended:
                return
            last = text(entries[-1][0])

    async def cancel(self, job_id: str, caller: KeyInfo | None = None) -> Job:
        await self.get(job_id, caller)
        out = await self.run(scripts.finish(
            self.keys, job_id=job_id, to=JobStatus.CANCELLED, at=now(), result_ttl=self.settings.result_ttl_seconds,
            code="cancelled", message="cancelled by the client", ended_by="cancel"))
        if out.kind == "missing":
            raise JobNotFoundError(f"no job {job_id!r}")
        if out.kind == "state":
            raise JobConflictError(f"job {job_id} has already ended ({out.value})")
        await self.inputs.drop(self.r, job_id)
        return await self.get(job_id)

    async def add_prompts(self, job_id: str, frames: dict[int, str], new_ids: list[int]) -> Job:
        """Prompts for frames the job has not reached (all or none); -> the job with its objects."""
        out = await self.run(scripts.add_prompts(self.keys, job_id=job_id, frames=frames, new_ids=new_ids,
                                                 ttl=self.settings.input_ttl_seconds))
        if out.kind == "missing":
            raise JobNotFoundError(f"no job {job_id!r}")
        if out.kind == "state":
            raise JobConflictError(f"job {job_id} has ended ({out.value}); it takes no more prompts")
        if out.kind == "order":
            raise JobConflictError(f"job {job_id} is on frame {out.value}: prompts are taken for frames after the "
                                   f"one being computed (frame {min(frames)} was asked)")
        if out.kind == "range":
            raise MediaError(f"frame {max(frames)} does not exist (the video has {out.value} frames)")
        return await self.get(job_id)

    # -- live sessions ----------------------------------------------------------------------------------------
    async def create_session(self, session: Job, caller: KeyInfo | None = None) -> Job:
        """Queue a live session: a worker claims it like a job and keeps it until it ends."""
        session.owner = caller.id if caller else ""
        out = await self.run(scripts.submit(
            self.keys, job_id=session.id, record=session.to_hash(), max_queued=self.settings.max_queued_jobs,
            idem_key=None, idem_ttl=self.settings.result_ttl_seconds, owner=session.owner,
            owner_max_queued=caller.max_queued if caller else 0, owner_rate=caller.rate if caller else 0.0,
            at=now()))
        _refusal(out, "jobs and sessions")
        return session

    async def get_session(self, session_id: str, caller: KeyInfo | None = None) -> Job:
        s = await self.get(session_id, caller)
        if s.kind != Kind.SESSION:
            raise JobNotFoundError(f"no session {session_id!r}")
        return s

    async def push_frame(self, session_id: str, data: bytes, max_pending: int) -> int:
        """A frame of a live session -> its index."""
        out = await self.run(scripts.session_push(
            self.keys, session_id=session_id, data=data, at=now(), max_pending=max_pending,
            max_kept=self.settings.session_input_kept, ttl=self.settings.input_ttl_seconds))
        if out.kind == "missing":
            raise JobNotFoundError(f"no session {session_id!r}")
        if out.kind == "state":
            raise JobConflictError(f"session {session_id} takes no more frames ({out.value})")
        if out.kind == "full":
            raise BacklogFullError(f"{out.value} frames are waiting for the worker (policy all, at most "
                                   f"{max_pending}); send slower, or use policy latest")
        return int(out.value)

    async def end_session(self, session_id: str) -> Job:
        """The client sends nothing more; the worker answers what it has, then ends the session."""
        out = await self.run(scripts.session_end(self.keys, session_id=session_id, at=now()))
        if out.kind == "missing":
            raise JobNotFoundError(f"no session {session_id!r}")
        return await self.get(session_id)

    async def stats(self) -> dict:
        """Counters, queue depth and worker heartbeats, for /metrics."""
        h = {text(a): text(b) for a, b in (await self.r.hgetall(self.keys.stats)).items()}
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
