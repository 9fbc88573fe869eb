"""Running the tracker over checked inputs: shared by `agss-vos segment` and the worker."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .media.frames import Frame
from .media.inputs import InputSummary
from .vos import Tracker


def track(inputs: InputSummary, tracker: Tracker) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield (frame, labels (H,W) uint8) for every frame, feeding each mask on its frame."""
    for frame in inputs.frames:
        key = inputs.assignment.get(frame.index)
        new = inputs.masks.load(key)[0] if key is not None else None
        yield frame, tracker.step(frame.rgb, new)
