"""Where a job's uploaded inputs wait for a worker: a folder every process can read (`local`, the default of
`agss-vos serve`, and of any deployment with shared storage), or Redis itself, in chunks (`redis`, for
deployments whose only shared state is one Redis). Either way the bytes of all queued inputs are
bounded (AGSS_MAX_QUEUED_INPUT_BYTES, checked by the submit script), so Redis memory has a known bound.

The API puts (async), the worker fetches (blocking); inputs are deleted when the job ends (the finish
script deletes Redis chunks; local folders are deleted by whoever ends the job, and swept when a job
expired unprocessed).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from ..config import Settings
from .errors import JobConflictError
from .keys import Keys

CHUNKS_PER_ROUND = 8  # chunks in memory at once while moving a video to or from Redis


class RedisInputs:
    def __init__(self, settings: Settings, keys: Keys):
        self.settings, self.keys = settings, keys

    async def put(self, r, job_id: str, video: Path, masks: Path) -> None:
        k, chunk, ttl = self.keys, self.settings.upload_chunk_bytes, self.settings.input_ttl_seconds
        with open(video, "rb") as f:
            while True:
                pipe = r.pipeline(transaction=False)
                n = 0
                for _ in range(CHUNKS_PER_ROUND):
                    data = await asyncio.to_thread(f.read, chunk)
                    if not data:
                        break
                    pipe.rpush(k.video(job_id), data)
                    n += 1
                if n:
                    pipe.expire(k.video(job_id), ttl)
                    await pipe.execute()
                if n < CHUNKS_PER_ROUND:
                    break
        await r.set(k.masks(job_id), masks.read_bytes(), ex=ttl)

    def fetch(self, r, job_id: str, folder: Path, video_name: str, masks_name: str) -> tuple[Path, Path]:
        video = folder / f"video{Path(video_name).suffix.lower()}"
        masks = folder / f"masks{Path(masks_name).suffix.lower()}"
        k = self.keys.video(job_id)
        n = r.llen(k)
        if n == 0:
            raise JobConflictError("the job's inputs are gone (expired or already processed)")
        with open(video, "wb") as f:
            for i in range(0, n, CHUNKS_PER_ROUND):
                for data in r.lrange(k, i, min(i + CHUNKS_PER_ROUND - 1, n - 1)):
                    f.write(data)
        data = r.get(self.keys.masks(job_id))
        if data is None:
            raise JobConflictError("the job's masks are gone (expired or already processed)")
        masks.write_bytes(data)
        return video, masks

    async def drop(self, r, job_id: str) -> None:
        await r.delete(self.keys.video(job_id), self.keys.masks(job_id))

    def delete(self, job_id: str) -> None:
        """Nothing to do: the finish script deletes the chunks with the job's other inputs."""


class LocalInputs:
    def __init__(self, settings: Settings, keys: Keys):
        self.root = Path(settings.storage_dir or settings.data_dir / "inputs").resolve()
        self.settings = settings

    def _folder(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise JobConflictError(f"not a job id: {job_id!r}")
        return self.root / job_id

    async def put(self, r, job_id: str, video: Path, masks: Path) -> None:
        def copy() -> None:
            d = self._folder(job_id)
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, d / f"video{video.suffix}")
            shutil.copyfile(masks, d / f"masks{masks.suffix}")

        await asyncio.to_thread(copy)

    def fetch(self, r, job_id: str, folder: Path, video_name: str, masks_name: str) -> tuple[Path, Path]:
        d = self._folder(job_id)
        video = d / f"video{Path(video_name).suffix.lower()}"
        masks = d / f"masks{Path(masks_name).suffix.lower()}"
        if not video.is_file() or not masks.is_file():
            raise JobConflictError("the job's inputs are gone (expired or already processed)")
        return video, masks  # read in place: no copy

    async def drop(self, r, job_id: str) -> None:
        await asyncio.to_thread(self.delete, job_id)

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self._folder(job_id), ignore_errors=True)

    def sweep(self, alive) -> int:
        """Remove input folders older than the input TTL whose job `alive(job_id)` says is gone or ended."""
        if not self.root.is_dir():
            return 0
        n, cutoff = 0, time.time() - self.settings.input_ttl_seconds
        for d in self.root.iterdir():
            if d.is_dir() and d.stat().st_mtime < cutoff and not alive(d.name):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n


def input_store(settings: Settings, keys: Keys) -> RedisInputs | LocalInputs:
    return LocalInputs(settings, keys) if settings.storage == "local" else RedisInputs(settings, keys)
