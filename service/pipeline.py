"""Running the tracker over checked inputs: shared by `agss-vos segment` and the worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from .media.frames import Frame
from .media.inputs import InputSummary
from .vos import Tracker


def track(inputs: InputSummary, tracker: Tracker, timings: dict | None = None
          ) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield (frame, labels (H,W) uint8) for every frame, feeding each mask on its frame.

    With `timings`, it holds the last frame's seconds per stage: decode, flow, network.
    """
    frames = iter(inputs.frames)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            return
        key = inputs.assignment.get(frame.index)
        new = inputs.masks.load(key)[0] if key is not None else None
        decoded = time.perf_counter()
        labels = tracker.step(frame.rgb, new)
        if timings is not None:
            timings.update(decode=decoded - t0, **tracker.timings)
        yield frame, labels
