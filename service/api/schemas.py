"""Response models of the HTTP API: the OpenAPI document describes every response and every error."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..errors import all_specs
from ..jobs.records import JobStatus


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code (see the error table in the README)")
    message: str = Field(description="what went wrong, for a person")


class ErrorBody(BaseModel):
    error: ErrorDetail


MAX_INDEX = 2**31 - 1  # frame indices are int32, as in the gRPC contract (and Redis stream ids stay valid)


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for these HTTP statuses: the error body, and which codes each status carries."""
    out: dict[int | str, dict] = {}
    for status in statuses:
        codes = [f"`{s.code}` ({s.meaning})" for s in all_specs() if s.http == status]
        out[status] = {"model": ErrorBody, "description": "; ".join(codes) or "error"}
    return out


def links(status: int, param: str, *operation_ids: str) -> dict[int | str, dict]:
    """OpenAPI links from a created resource to the operations on it (clients and schemathesis follow them)."""
    return {status: {"links": {op: {"operationId": op, "parameters": {param: "$response.body#/id"}}
                               for op in operation_ids}}}


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]", min_length=2, max_length=2)
    counts: str = Field(description="COCO compressed RLE (pycocotools), column-major")


class ObjectMask(BaseModel):
    id: int = Field(description="object id, as given in the masks")
    rle: Rle
    area: int = Field(description="pixels in the mask")
    bbox: list[int] = Field(description="[x, y, w, h]; zeros when the mask is empty")
    score: float = Field(0.0, description="mean probability inside the mask, 0..1 (1 for a given mask, 0 when "
                                          "empty)")


class Event(BaseModel):
    type: str = Field(description="started | corrected | removed | lost | reappeared | area_jump")
    id: int = Field(description="the object")
    score: float | None = Field(None, description="lost, reappeared: the object's score")
    ratio: float | None = Field(None, description="area_jump: this frame's area over the previous frame's")


class Frame(BaseModel):
    index: int = Field(description="0-based frame index")
    objects: list[ObjectMask] = Field(description="one entry per object of the job, empty masks included")
    events: list[Event] = Field(default_factory=list, description="what a reviewer should look at on this frame")
    dropped: bool | None = Field(None, description="live sessions: the frame was not computed (policy latest)")
    error: ErrorDetail | None = Field(None, description="live sessions: why this frame could not be used")
    timings: dict[str, float] | None = Field(None, description="live sessions: server-side times (Unix seconds: "
                                                               "received, started, published) and durations (_s)")


class FramesPage(BaseModel):
    frames: list[Frame]
    next: int = Field(description="the `start` of the next page")
    status: JobStatus = Field(description="the job's status when the page was read")


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    status: JobStatus
    frames_total: int = Field(description="frames in the video (exact once it has been decoded)")
    frames_done: int = Field(description="frames published so far")
    objects: list[int] = Field(description="object ids found in the masks")
    width: int
    height: int
    options: dict
    error: JobError | None = Field(description="why the job failed or was cancelled")
    created_at: str | None = Field(description="ISO 8601, UTC")
    started_at: str | None
    finished_at: str | None


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    workers: int = Field(description="workers with a live heartbeat")


class SessionOut(BaseModel):
    id: str
    status: JobStatus = Field(description="queued until a worker takes it; running; succeeded once ended")
    frames_received: int
    frames_done: int = Field(description="frames answered (computed, dropped or failed)")
    frames_dropped: int
    objects: list[int]
    width: int = Field(description="0 until the first frame is decoded")
    height: int
    options: dict
    policy: str
    idle_timeout_seconds: float
    max_pending: int
    error: JobError | None
    ended_by: str | None = Field(description="client, idle or cancel")
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class FrameAck(BaseModel):
    index: int = Field(description="the index the frame got; its answer has the same index")
