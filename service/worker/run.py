"""What a job or a session run needs from its worker, and what they share: the abort signal, prompts
that arrive while the run goes on, the temporary folder of a run."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..jobs.queue import Claim, WorkerQueue
from ..media.prompts import FramePrompts, object_ids, parse_document
from ..vos.network import SegmentationModel


class Abort(Exception):
    """The run must stop here: cancelled, taken over ('lost'), or handed back ('shutdown')."""


@dataclass
class Run:
    """One claimed job or session, seen from the code that runs it."""

    claim: Claim
    queue: WorkerQueue
    settings: Settings
    stop: threading.Event  # the worker is stopping: hand the run back at the next frame boundary
    model_for: Callable[[str], SegmentationModel]
    abort_reason: Callable[[], str | None]  # set by the heartbeat: cancelled, lost

    def check(self) -> None:
        """Raises Abort if the run was cancelled or taken over."""
        reason = self.abort_reason()
        if reason:
            raise Abort(reason)


class RuntimePrompts:
    """Prompts added while the run goes on (POST /v1/jobs/{id}/prompts, a session's prompt messages), read
    from Redis just before the tracker reaches each frame: the API refuses prompts for a frame once it is
    being computed, so none is lost between the two."""

    def __init__(self, queue: WorkerQueue, job_id: str):
        self.queue, self.job_id = queue, job_id
        self.last = "0-0"
        self.pending: dict[int, FramePrompts] = {}
        self.ids: set[int] = set()

    def __call__(self, frame: int) -> FramePrompts | None:
        """The prompts for `frame`, with those of earlier frames that were never computed (a session's
        dropped frames) before them; those of frames covered by a checkpoint are gone already."""
        self.last, new = self.queue.prompts_since(self.job_id, self.last)
        for f, doc in new:
            objs = parse_document({"frames": {str(f): json.loads(doc)}}, "prompts")[f]
            self.pending.setdefault(f, {}).update(objs)
            self.ids |= object_ids([objs])
        due = sorted(f for f in self.pending if f <= frame)
        out: FramePrompts = {}
        for f in due:
            out.update(self.pending.pop(f))
        return out or None

    def forget_before(self, frame: int) -> None:
        """Prompts of frames a restored checkpoint already covers."""
        self(frame - 1)


def run_folder(job_id: str) -> Path:
    """A temporary folder for a run on this host; folders of the same job left by a worker that was
    killed here are removed first."""
    root = Path(tempfile.gettempdir())
    for stale in root.glob(f"agss-job-{job_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"agss-job-{job_id}-", dir=root))
