"""Running the tracker over checked inputs: shared by `agss-vos segment`, job workers and sessions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..media.frames import Frame
from ..media.inputs import InputSummary
from ..media.prompts import FramePrompts, Prompt
from ..media.rle import frame_objects
from ..vos.prompts import prompt_to_mask
from ..vos.tracker import Tracker


@dataclass
class FrameResult:
    frame: Frame
    labels: np.ndarray  # (H,W) uint8 object ids
    scores: dict[int, float]
    events: list[dict]

    def objects(self, ids: list[int]) -> list[dict]:
        """One entry per id (empty masks included): {"id", "rle", "area", "bbox", "score"}."""
        out = frame_objects(self.labels, ids)
        for o in out:
            o["score"] = self.scores.get(o["id"], 0.0)
        return out

    def report(self, ids: list[int]) -> dict:
        """The frame's line of `segment --report`: no masks, the numbers a reviewer scans."""
        objs = [{k: o[k] for k in ("id", "area", "bbox", "score")} for o in self.objects(ids)]
        return {"frame": self.frame.index, "name": self.frame.name, "objects": objs, "events": self.events}


def resolve(prompts: FramePrompts, rgb: np.ndarray) -> dict[int, np.ndarray]:
    """Prompts of one frame -> {id: (H,W) bool mask}; boxes and clicks are segmented on the frame."""
    size = rgb.shape[:2]
    out = {}
    for i, p in prompts.items():
        m = p.mask(size)
        out[i] = m if m is not None else prompt_to_mask(rgb, p.box, p.points)
    return out


def merge(*sources: FramePrompts | None) -> FramePrompts:
    """Prompts of one frame from several sources; a later source wins for the same object."""
    out: dict[int, Prompt] = {}
    for s in sources:
        out.update(s or {})
    return out


def track(inputs: InputSummary, tracker: Tracker, timings: dict | None = None,
          extra: Callable[[int], FramePrompts | None] | None = None, start: int = 0) -> Iterator[FrameResult]:
    """Every frame from `start` with its labels, scores and events, feeding each frame's prompts on that frame.

    `extra(i)` adds prompts that arrived after the inputs were checked (a running job's prompts).
    `start` > 0 continues a tracker restored from a state saved after `start` frames.
    With `timings`, it holds the last frame's seconds per stage: decode, prompt, flow, network.
    """
    frames = inputs.frames.iter_from(start)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            return
        key = inputs.schedule.get(frame.index)
        prompts = merge(inputs.prompts.frame_prompts(key) if key is not None else None,
                        extra(frame.index) if extra else None)
        decoded = time.perf_counter()
        masks = resolve(prompts, frame.rgb) if prompts else None
        prompted = time.perf_counter()
        labels = tracker.step(frame.rgb, masks)
        if timings is not None:
            timings.update(decode=decoded - t0, prompt=prompted - decoded, **tracker.timings)
        yield FrameResult(frame, labels, dict(tracker.scores), list(tracker.events))
