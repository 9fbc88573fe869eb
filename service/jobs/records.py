"""The job record as stored in its Redis hash, and its public JSON form."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in ENDED

    def __str__(self) -> str:
        return self.value


ENDED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z") if ts else None


def text(v: bytes | str | int | float) -> str:
    """A Redis reply value as text."""
    return v.decode() if isinstance(v, bytes) else str(v)


class Kind(str, Enum):
    JOB = "job"  # a whole video, uploaded at once
    SESSION = "session"  # frames sent as they are captured

    def __str__(self) -> str:
        return self.value


class Policy(str, Enum):
    """What a live session does with frames that arrive faster than the worker computes them."""

    LATEST = "latest"  # drop waiting frames, keep the newest (each dropped frame is reported)
    ALL = "all"  # queue every frame up to a bound, then refuse new ones

    def __str__(self) -> str:
        return self.value


@dataclass
class Job:
    """A job or a live session (a job whose frames arrive over time): one record, one queue, one worker."""

    id: str
    kind: Kind = Kind.JOB
    status: JobStatus = JobStatus.QUEUED
    frames_total: int = 0
    frames_done: int = 0
    objects: list[int] = field(default_factory=list)
    width: int = 0
    height: int = 0
    palette: str = ""  # hex of 768 bytes, or "" for the DAVIS palette
    options: dict = field(default_factory=dict)
    video_name: str = ""
    masks_name: str = ""
    error_code: str = ""
    error_message: str = ""
    worker: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    claimed_at: float = 0.0  # when the current (or last) worker took the job
    owner: str = ""  # id of the API key that made it ("" when authentication is off)
    input_bytes: int = 0  # bytes of its stored inputs (counted against AGSS_MAX_QUEUED_INPUT_BYTES)
    # Live sessions
    policy: Policy = Policy.LATEST
    idle_timeout: float = 0.0  # seconds without input after which the session ends
    max_pending: int = 0  # frames waiting for the worker, at most (policy all)
    frames_in: int = 0  # frames received
    frames_dropped: int = 0
    closing: int = 0  # 1 once the client has said it sends nothing more
    ended_by: str = ""  # client | idle | cancel

    def to_hash(self) -> dict[str, str]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        return out

    @classmethod
    def from_hash(cls, h: dict) -> Job:
        d = {text(k): text(v) for k, v in h.items()}
        job = cls(id=d["id"])
        for f in fields(cls):
            if f.name not in d or f.name == "id":
                continue
            v: object = d[f.name]
            if f.name == "status":
                v = JobStatus(v)
            elif f.name == "kind":
                v = Kind(v)
            elif f.name == "policy":
                v = Policy(v)
            elif f.type == "int":
                v = int(float(v or 0))
            elif f.type == "float":
                v = float(v or 0)
            elif f.type.startswith("list") or f.type == "dict":
                v = json.loads(v) if v else ([] if f.type.startswith("list") else {})
            setattr(job, f.name, v)
        return job

    @property
    def ended(self) -> bool:
        return self.status.ended

    def public(self) -> dict:
        """The JSON the API returns for a job or a session (api/schemas.py JobOut, SessionOut)."""
        if self.kind == Kind.SESSION:
            return {
                "id": self.id, "status": self.status.value, "frames_received": self.frames_in,
                "frames_done": self.frames_done, "frames_dropped": self.frames_dropped, "objects": self.objects,
                "width": self.width, "height": self.height, "options": self.options, "policy": self.policy.value,
                "idle_timeout_seconds": self.idle_timeout, "max_pending": self.max_pending,
                "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
                "ended_by": self.ended_by or None, "created_at": iso(self.created_at),
                "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            }
        return {
            "id": self.id, "status": self.status.value, "frames_total": self.frames_total,
            "frames_done": self.frames_done, "objects": self.objects,
            "width": self.width, "height": self.height, "options": self.options,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "created_at": iso(self.created_at), "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }

    def palette_bytes(self) -> bytes | None:
        return bytes.fromhex(self.palette) if self.palette else None
