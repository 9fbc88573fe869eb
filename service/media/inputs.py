"""Checks on a (video, masks) pair before any work is done on it: the same checks for the CLI and API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MediaError
from .frames import FrameSource, open_frames
from .masks import MAX_OBJECTS, MaskSet, read_masks


@dataclass
class InputSummary:
    frames: FrameSource
    masks: MaskSet
    assignment: dict[int, str]  # frame index -> mask key
    object_ids: list[int]
    palette: bytes | None
    size: tuple[int, int]  # (H,W)

    @property
    def frame_count(self) -> int:
        return self.frames.count


def inspect_inputs(video: str | Path, masks: str | Path) -> InputSummary:
    """Open both inputs, read every mask once (one at a time) and check that they fit together."""
    frames = open_frames(video)
    mask_set = read_masks(masks)
    assignment = mask_set.assign(frames.names, frames.count)
    ids: set[int] = set()
    palette = None
    for n, (_, key) in enumerate(sorted(assignment.items())):
        labels, pal = mask_set.load(key)
        if labels.shape != frames.size:
            raise MediaError(f"mask {key}.png is {labels.shape[1]}x{labels.shape[0]}, the frames are "
                             f"{frames.size[1]}x{frames.size[0]}")
        if n == 0:
            palette = pal
        ids.update(int(i) for i in np.unique(labels) if i)
    if not ids:
        raise MediaError("the masks contain no object (every pixel is background or void)")
    if len(ids) > MAX_OBJECTS:
        raise MediaError(f"the masks name {len(ids)} objects; at most {MAX_OBJECTS} are supported")
    return InputSummary(frames, mask_set, assignment, sorted(ids), palette, frames.size)
