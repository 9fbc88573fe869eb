"""Turning an upload into a queued job: limits, checks of the inputs, the job record.

Shared by the HTTP routes and the gRPC servicer: both write the upload to disk through one
`LimitedFile`, then `accept` it. Nothing here holds a whole video in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..media.errors import MediaError, UnsupportedFormatError
from ..media.inputs import inspect_inputs
from ..media.prompts import check_frames, frame_json, object_ids, parse_document
from ..vos.labels import MAX_OBJECTS
from ..vos.options import FLOW_NAMES
from .apikeys import KeyInfo
from .errors import BadOptionsError, UploadTooLargeError
from .records import Job, Kind, Policy, now
from .store import JobStore

log = logging.getLogger("agss.intake")
COPY_CHUNK = 1 << 20


class JobOptions(BaseModel):
    """Per-job options (the `options` JSON of a submission)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=200, description="a model name of the workers' repository")
    flow: str | None = Field(None, description=f"optical flow: {', '.join(FLOW_NAMES)}")
    long_side: int | None = Field(None, ge=64, le=2048, description="network input long side, a multiple of 32")

    @field_validator("flow")
    @classmethod
    def _flow(cls, v: str | None) -> str | None:
        if v is not None and v not in FLOW_NAMES:
            raise ValueError(f"flow must be one of {', '.join(FLOW_NAMES)}")
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


def parse_options(raw_text: str | None) -> dict:
    if not raw_text:
        return {}
    try:
        raw = json.loads(raw_text)
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


class LimitedFile:
    """A file being written from an upload that refuses to grow past `limit` bytes."""

    def __init__(self, path: Path, limit: int, what: str):
        self.path, self.limit, self.what = path, limit, what
        self.size = 0
        self._f: BinaryIO = open(path, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLargeError(f"{self.what} is larger than the limit of {self.limit} bytes")
        self._f.write(chunk)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> LimitedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def copy_from(self, src: BinaryIO) -> int:
        """Copy a (blocking) file object in chunks; returns the size."""
        while chunk := src.read(COPY_CHUNK):
            self.write(chunk)
        return self.size

    async def copy_from_async(self, chunks: AsyncIterator[bytes]) -> int:
        async for chunk in chunks:
            self.write(chunk)
        return self.size


@contextmanager
def upload_folder(prefix: str = "agss-upload-") -> Iterator[Path]:
    """A temporary folder for one submission's files, removed however the request ends."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_job(video: Path, video_name: str, masks: Path, masks_name: str, options: dict) -> Job:
    """Check the inputs (the video decodes frame by frame, masks fit) and describe the job."""
    summary = inspect_inputs(video, masks)
    count = summary.frames.verify()  # the whole input, now: not halfway through the job
    h, w = summary.size
    return Job(id=uuid.uuid4().hex, frames_total=count, objects=summary.object_ids, width=w, height=h,
               palette=summary.palette.hex() if summary.palette else "", options=options,
               video_name=PurePath(video_name or "video").name[:200],
               masks_name=PurePath(masks_name or "masks.png").name[:200], created_at=now())


async def accept(store: JobStore, video: Path, video_name: str, masks: Path, masks_name: str, options: dict,
                 idempotency_key: str | None, caller: KeyInfo | None = None) -> Job:
    """Check uploaded files and queue the job (HTTP and gRPC alike)."""
    job = await asyncio.to_thread(build_job, video, video_name, masks, masks_name, options)
    job = await store.submit(job, video, masks, idempotency_key, caller)
    log.info("job queued", extra={"job_id": job.id})
    return job


def job_prompts(job: Job, doc: object) -> tuple[dict[int, str], list[int]]:
    """A prompts document for a running job or session -> ({frame: JSON of its prompts}, ids it starts),
    checked against the frame size (a session's, once its first frame is in), frame count and object
    limit. A session's frame may be "next" (-1)."""
    session = job.kind == Kind.SESSION
    prompts = parse_document(doc, "prompts", allow_next=session)
    if not session or job.width:
        check_frames(prompts, (job.height, job.width), None if session else job.frames_total)
    new = sorted(object_ids(prompts.values()) - set(job.objects))
    if len(job.objects) + len(new) > MAX_OBJECTS:
        raise MediaError(f"the job would have {len(job.objects) + len(new)} objects; at most {MAX_OBJECTS} are "
                         "supported")
    return {f: frame_json(objs) for f, objs in prompts.items()}, new


IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def check_frame(data: bytes, limit: int) -> None:
    """A live session's frame: JPEG or PNG bytes within the size limit (decoded by the worker)."""
    if not data:
        raise MediaError("a frame has no bytes")
    if len(data) > limit:
        raise UploadTooLargeError(f"a frame is larger than the limit of {limit} bytes")
    if not data.startswith(IMAGE_MAGIC):
        raise UnsupportedFormatError("frames must be JPEG or PNG images")


class SessionOptions(JobOptions):
    """A live session's options: the job options, and what to do with frames that arrive too fast."""

    policy: Policy = Field(Policy.LATEST, description="latest: drop waiting frames, keep the newest (each dropped "
                                                      "frame is reported); all: queue every frame up to max_pending, "
                                                      "then refuse")
    idle_timeout_seconds: float | None = Field(None, gt=0, le=24 * 3600,
                                               description="end the session after this long without input")
    max_pending: int | None = Field(None, ge=1, le=10_000, description="frames that may wait (policy all)")


def new_session(settings, options: SessionOptions) -> Job:
    """The record of a live session created with these options."""
    opts = options.model_dump(include={"model", "flow", "long_side"}, exclude_none=True)
    return Job(id=uuid.uuid4().hex, kind=Kind.SESSION, options=opts, policy=options.policy,
               idle_timeout=options.idle_timeout_seconds or settings.session_idle_seconds,
               max_pending=options.max_pending or settings.session_max_pending, created_at=now())
