"""The job record as stored in its Redis hash, and its public JSON form."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ENDED = ("succeeded", "failed", "cancelled")
OPTION_KEYS = ("model", "flow", "long_side")


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z") if ts else None


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Job:
    id: str
    status: str = "queued"
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

    def to_hash(self) -> dict[str, str]:
        d = {}
        for k, v in self.__dict__.items():
            d[k] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        return d

    @classmethod
    def from_hash(cls, h: dict) -> Job:
        d = {_s(k): _s(v) for k, v in h.items()}
        job = cls(id=d["id"])
        for k, f in cls.__dataclass_fields__.items():
            if k not in d or k == "id":
                continue
            v = d[k]
            if f.type in ("int",):
                v = int(float(v or 0))
            elif f.type in ("float",):
                v = float(v or 0)
            elif f.type.startswith("list") or f.type == "dict":
                v = json.loads(v) if v else ([] if f.type.startswith("list") else {})
            setattr(job, k, v)
        return job

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def public(self) -> dict:
        """The JSON the API returns for a job."""
        return {
            "id": self.id, "status": self.status, "frames_total": self.frames_total,
            "frames_done": self.frames_done, "objects": self.objects,
            "width": self.width, "height": self.height, "options": self.options,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "created_at": iso(self.created_at), "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }

    def palette_bytes(self) -> bytes | None:
        return bytes.fromhex(self.palette) if self.palette else None
