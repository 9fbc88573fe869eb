"""Turning an upload into a queued job: limits, checks of the inputs, the job record.

Shared by the HTTP routes and the gRPC servicer. Uploads arrive as files on disk; nothing here
holds a whole video in memory.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path, PurePath

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..jobs.broker import JobStore
from ..jobs.errors import BadOptionsError, UploadTooLargeError
from ..jobs.model import Job, now
from ..media.inputs import inspect_inputs

FLOWS = ("dis", "farneback", "none")
log = logging.getLogger("agss.api")


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=200)
    flow: str | None = None
    long_side: int | None = Field(None, ge=64, le=2048)

    @field_validator("flow")
    @classmethod
    def _flow(cls, v: str | None) -> str | None:
        if v is not None and v not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}")
        return v

    @field_validator("long_side")
    @classmethod
    def _long_side(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError("long_side must be a multiple of 32")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        # A job names a model of the repository, never a path on the worker's disk.
        if v is not None and (not v or "/" in v or "\\" in v or v.startswith(".")):
            raise ValueError("model must be the name of a model in the repository")
        return v


def parse_options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadOptionsError(f"options is not valid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise BadOptionsError("options must be a JSON object")
    try:
        return JobOptions(**raw).model_dump(exclude_none=True)
    except ValidationError as e:
        first = e.errors()[0]
        raise BadOptionsError(f"options.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def safe_suffix(filename: str | None, default: str) -> str:
    suffix = PurePath(filename or "").suffix.lower()
    return suffix if suffix.isascii() and 1 < len(suffix) <= 6 and suffix[1:].isalnum() else default


def copy_limited(src, dst: Path, limit: int, what: str) -> int:
    """Copy a file object to disk in chunks, refusing more than `limit` bytes."""
    n = 0
    with open(dst, "wb") as out:
        while chunk := src.read(1 << 20):
            n += len(chunk)
            if n > limit:
                raise UploadTooLargeError(f"{what} is larger than the limit of {limit} bytes")
            out.write(chunk)
    return n


def build_job(settings: Settings, folder: Path, video: Path, video_name: str, masks: Path, masks_name: str,
              options: dict) -> Job:
    """Check the inputs (the video decodes frame by frame, masks fit) and describe the job."""
    summary = inspect_inputs(video, masks)
    count = summary.frames.count
    if summary.frames.kind == "video":
        count = sum(1 for _ in summary.frames)  # containers may misstate their frame count
    h, w = summary.size
    return Job(id=uuid.uuid4().hex, frames_total=count, objects=summary.object_ids, width=w, height=h,
               palette=summary.palette.hex() if summary.palette else "", options=options,
               video_name=PurePath(video_name or "video").name[:200],
               masks_name=PurePath(masks_name or "masks.png").name[:200], created_at=now())


def cleanup(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


async def accept(store: JobStore, settings: Settings, folder: Path, video: Path, video_name: str, masks: Path,
                 masks_name: str, options: dict, idempotency_key: str | None) -> Job:
    """Check uploaded files and queue the job (HTTP and gRPC alike). The caller removes `folder`."""
    job = await run_in_threadpool(build_job, settings, folder, video, video_name, masks, masks_name, options)
    job = await store.submit(job, video, masks.read_bytes(), idempotency_key)
    log.info("job queued", extra={"job_id": job.id})
    return job
