"""What both clients return and raise: JobInfo, FrameResult, ClientError."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..media.rle import objects_to_labels

ENDED = ("succeeded", "failed", "cancelled")
# gRPC statuses that mean the request itself was wrong (like an HTTP 4xx other than 429).
_CALLER_FAULTS = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE", "ALREADY_EXISTS",
                  "PERMISSION_DENIED", "UNAUTHENTICATED"}


class ClientError(Exception):
    """An error answered by the service (or the job's failure), with the service's error code."""

    def __init__(self, code: str, message: str, status: int | None = None, grpc_status: str | None = None):
        super().__init__(f"{status or grpc_status} {code}: {message}" if (status or grpc_status) else
                         f"{code}: {message}")
        self.code, self.message, self.status, self.grpc_status = code, message, status, grpc_status

    @property
    def caller_fault(self) -> bool:
        """True when retrying the same request cannot help (bad input, unknown job, wrong state)."""
        if self.status is not None:
            return 400 <= self.status < 500 and self.status != 429
        return self.grpc_status in _CALLER_FAULTS


@dataclass
class JobInfo:
    id: str
    status: str
    frames_total: int
    frames_done: int
    objects: list[int]
    width: int
    height: int
    error_code: str = ""
    error_message: str = ""
    created_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    options: dict = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass
class FrameResult:
    index: int
    objects: list[dict]  # {"id", "rle": {"size", "counts"}, "area", "bbox", "score"} per object of the job
    events: list[dict] = field(default_factory=list)  # {"type", "id", ("score" | "ratio")}
    published_at: float | None = None

    def labels(self, size: tuple[int, int]) -> np.ndarray:
        """The frame as a label map (H,W) uint8."""
        return objects_to_labels(self.objects, size)

    def as_dict(self) -> dict:
        """The frame as the HTTP API's frames endpoint gives it."""
        return {"index": self.index, "objects": self.objects, "events": self.events}
