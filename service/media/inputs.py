"""Checks on a (video, prompts) pair before any work is done on it: the same checks for the CLI and API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..vos.labels import MAX_OBJECTS
from .errors import MediaError
from .frames import FrameSource, open_frames
from .masks import MaskSet, read_masks
from .prompts import PromptFile, object_ids


@dataclass
class InputSummary:
    frames: FrameSource
    prompts: MaskSet | PromptFile
    schedule: dict[int, str | int]  # frame index -> key of its prompts in `prompts`
    object_ids: list[int]  # every object some prompt starts or corrects, sorted
    palette: bytes | None
    size: tuple[int, int]  # (H,W)

    @property
    def frame_count(self) -> int:
        return self.frames.count


def read_prompts(path: str | Path) -> MaskSet | PromptFile:
    """Masks as a PNG, a folder or zip of PNGs named after frames, or a JSON prompts file."""
    p = Path(path)
    if p.suffix.lower() == ".json" or (p.is_file() and p.read_bytes()[:1] in (b"{", b"[")):
        if not p.is_file():
            raise MediaError(f"{p}: no such file")
        return PromptFile(p)
    return read_masks(p)


def inspect_inputs(video: str | Path, masks: str | Path) -> InputSummary:
    """Open both inputs, read every prompt once (one frame at a time) and check that they fit together."""
    frames = open_frames(video)
    prompts = read_prompts(masks)
    schedule = prompts.assign(frames.names, frames.count)
    per_frame = []
    for f, key in sorted(schedule.items()):
        objs = prompts.frame_prompts(key)
        for i, p in objs.items():
            p.check(frames.size, f"{Path(masks).name}: frame {f}, object {i}")
        per_frame.append(objs)
    ids = object_ids(per_frame)
    if not ids:
        raise MediaError("the masks contain no object (every pixel is background or void)")
    if len(ids) > MAX_OBJECTS:
        raise MediaError(f"the masks name {len(ids)} objects; at most {MAX_OBJECTS} are supported")
    return InputSummary(frames, prompts, schedule, sorted(ids), prompts.palette(), frames.size)
