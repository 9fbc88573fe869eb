"""Prompts: what is given about an object on a frame. A mask (from a label PNG, COCO RLE or polygons),
or a box and/or clicks that the tracker turns into a mask on that frame; or a removal.

JSON prompt files and request bodies (docs/PROMPTS.md has the whole schema):

    {"frames": {"12": {"3": {"size": [h, w], "counts": "..."},       # COCO RLE
                       "7": {"polygons": [[x0, y0, x1, y1, ...]]},   # COCO polygons, pixels
                       "9": {"box": [x0, y0, x1, y1]},               # GrabCut from a box
                       "4": {"points": [[x, y, 1], [x, y, 0]]},      # positive / negative clicks
                       "5": {"remove": true}}}}                       # not tracked from here on

or the same as a list: {"prompts": [{"frame": 12, "id": 3, "rle": {...}}, {"frame": 12, "id": 9,
"box": [...]}]}. Frames are 0-based indices. A box may carry clicks too. An empty mask (RLE with no
foreground, `"polygons": []`) also removes the object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as coco

from ..vos.labels import MAX_OBJECTS
from . import rle
from .errors import MediaError

MAX_POLYGON_POINTS = 100_000


@dataclass(frozen=True)
class Prompt:
    """One object on one frame. Exactly one of: `rle` (COCO RLE), `polygons`, `box`/`points`, `remove`."""

    rle: dict | None = None
    polygons: tuple[tuple[float, ...], ...] | None = None
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float, int], ...] = ()
    remove: bool = False
    label_mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # from a label PNG

    @property
    def needs_frame(self) -> bool:
        """A box or clicks become a mask only with the frame's pixels."""
        return self.box is not None or bool(self.points)

    def mask(self, size: tuple[int, int]) -> np.ndarray | None:
        """(H,W) bool mask, or None for a box/clicks prompt. An empty mask means: remove the object."""
        h, w = size
        if self.remove:
            return np.zeros((h, w), bool)
        if self.label_mask is not None:
            return self.label_mask
        if self.rle is not None:
            return rle.decode(self.rle).astype(bool)
        if self.polygons is not None:
            if not self.polygons:
                return np.zeros((h, w), bool)
            merged = coco.merge(coco.frPyObjects([list(p) for p in self.polygons], h, w))
            return rle.decode({"size": merged["size"], "counts": merged["counts"].decode("ascii")}).astype(bool)
        return None

    def check(self, size: tuple[int, int], where: str) -> None:
        """Refuses a prompt that does not fit a frame of (H,W)."""
        h, w = size
        if self.rle is not None and [int(v) for v in self.rle["size"]] != [h, w]:
            raise MediaError(f"{where}: RLE size {self.rle['size']} is not the frame's [{h}, {w}]")
        if self.label_mask is not None and self.label_mask.shape != (h, w):
            raise MediaError(f"{where}: mask is {self.label_mask.shape[1]}x{self.label_mask.shape[0]}, the frames "
                             f"are {w}x{h}")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise MediaError(f"{where}: box {list(self.box)} is not inside the {w}x{h} frame "
                                 "(x0 < x1 <= width, y0 < y1 <= height)")
        for x, y, _ in self.points:
            if not (0 <= x < w and 0 <= y < h):
                raise MediaError(f"{where}: point [{x}, {y}] is outside the {w}x{h} frame")
        if self.rle is not None:
            try:
                rle.decode(self.rle)
            except ValueError as e:
                raise MediaError(f"{where}: {e}") from None

    def to_json(self) -> dict:
        """The JSON form `parse_object` reads (not for prompts that came from a label PNG)."""
        if self.remove:
            return {"remove": True}
        if self.rle is not None:
            return dict(self.rle)
        if self.polygons is not None:
            return {"polygons": [list(p) for p in self.polygons]}
        if self.label_mask is not None:
            return rle.encode(self.label_mask)
        out: dict = {}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.points:
            out["points"] = [list(p) for p in self.points]
        return out

    @property
    def empty(self) -> bool:
        """Known to remove the object without looking at the frame."""
        if self.remove or (self.polygons is not None and not self.polygons):
            return True
        if self.label_mask is not None:
            return not self.label_mask.any()
        if self.rle is not None:
            return rle.decode(self.rle).max(initial=0) == 0
        return False


FramePrompts = dict[int, Prompt]  # object id -> prompt


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise MediaError(f"{where}: expected a number, got {v!r}")
    return float(v)


def parse_object(obj: object, where: str) -> Prompt:
    """One object's prompt from JSON (see the module docstring)."""
    if not isinstance(obj, dict):
        raise MediaError(f"{where}: expected an object with one of rle/size+counts, polygons, box, points, remove")
    obj = dict(obj)
    if "rle" in obj:
        obj.update(obj.pop("rle") if isinstance(obj["rle"], dict) else {"counts": obj.pop("rle")})
    kinds = [k for k in ("counts", "polygons", "remove") if k in obj]
    if ("box" in obj or "points" in obj) and kinds or len(kinds) > 1 or not (kinds or "box" in obj or "points" in obj):
        raise MediaError(f"{where}: give exactly one of: an RLE (size, counts), polygons, a box and/or points, "
                         "or remove")
    unknown = set(obj) - {"size", "counts", "polygons", "box", "points", "remove"}
    if unknown:
        raise MediaError(f"{where}: unknown fields {sorted(unknown)}")
    if "counts" in obj:
        size = obj.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise MediaError(f"{where}: an RLE needs size [height, width]")
        if not isinstance(obj["counts"], str):
            raise MediaError(f"{where}: counts must be a COCO compressed RLE string")
        return Prompt(rle={"size": list(size), "counts": obj["counts"]})
    if "remove" in obj:
        if obj["remove"] is not True:
            raise MediaError(f"{where}: remove must be true")
        return Prompt(remove=True)
    if "polygons" in obj:
        polys = obj["polygons"]
        if not isinstance(polys, list):
            raise MediaError(f"{where}: polygons must be a list of [x0, y0, x1, y1, ...] lists")
        out = []
        for k, p in enumerate(polys):
            if not isinstance(p, list) or len(p) < 6 or len(p) % 2 or len(p) > 2 * MAX_POLYGON_POINTS:
                raise MediaError(f"{where}.polygons[{k}]: a polygon is [x0, y0, x1, y1, x2, y2, ...] "
                                 "(at least 3 points)")
            out.append(tuple(_number(v, f"{where}.polygons[{k}]") for v in p))
        return Prompt(polygons=tuple(out))
    box = None
    if "box" in obj:
        b = obj["box"]
        if not (isinstance(b, list) and len(b) == 4):
            raise MediaError(f"{where}: box must be [x0, y0, x1, y1]")
        box = tuple(_number(v, f"{where}.box") for v in b)
    points = []
    for k, p in enumerate(obj.get("points") or []):
        if not (isinstance(p, list) and len(p) == 3 and p[2] in (0, 1) and not isinstance(p[2], float)):
            raise MediaError(f"{where}.points[{k}]: a point is [x, y, 1] (on the object) or [x, y, 0] (not on it)")
        points.append((_number(p[0], f"{where}.points[{k}]"), _number(p[1], f"{where}.points[{k}]"), int(p[2])))
    if "points" in obj and not isinstance(obj["points"], list):
        raise MediaError(f"{where}: points must be a list of [x, y, 1|0]")
    if box is None and not any(p[2] == 1 for p in points):
        raise MediaError(f"{where}: points alone need at least one positive click [x, y, 1]")
    return Prompt(box=box, points=tuple(points))


def _object_id(key: object, where: str) -> int:
    try:
        i = int(key)
    except (TypeError, ValueError):
        raise MediaError(f"{where}: object ids are numbers 1..{MAX_OBJECTS}, got {key!r}") from None
    if isinstance(key, float) or not 1 <= i <= MAX_OBJECTS:
        raise MediaError(f"{where}: object ids are numbers 1..{MAX_OBJECTS}, got {key!r}")
    return i


NEXT = -1  # a live session's next frame


def _frame_index(key: object, where: str, allow_next: bool = False) -> int:
    if allow_next and key == "next":
        return NEXT
    what = "0-based indices" + (' or "next"' if allow_next else "")
    try:
        i = int(key)
    except (TypeError, ValueError):
        raise MediaError(f"{where}: frames are {what}, got {key!r}") from None
    if isinstance(key, float) or i < 0:
        raise MediaError(f"{where}: frames are {what}, got {key!r}")
    return i


def parse_document(doc: object, what: str = "prompts", allow_next: bool = False) -> dict[int, FramePrompts]:
    """A JSON prompts document -> {frame index: {object id: Prompt}} (structure checked, not sizes).
    With `allow_next` (live sessions), the frame "next" is NEXT: the next frame the client sends."""
    out: dict[int, FramePrompts] = {}
    if isinstance(doc, dict):
        doc = {k: v for k, v in doc.items() if k != "type"}  # a live session's message carries its type
    if not isinstance(doc, dict) or not ({"frames", "prompts"} & set(doc)) or len(doc) != 1:
        raise MediaError(f'{what}: expected {{"frames": {{frame: {{id: prompt}}}}}} or {{"prompts": [...]}}')
    if "frames" in doc:
        if not isinstance(doc["frames"], dict):
            raise MediaError(f"{what}.frames must be an object keyed by frame index")
        for fk, objs in doc["frames"].items():
            f = _frame_index(fk, f"{what}.frames", allow_next)
            if not isinstance(objs, dict):
                raise MediaError(f"{what}.frames.{fk} must be an object keyed by object id")
            for ok, obj in objs.items():
                out.setdefault(f, {})[_object_id(ok, f"{what}.frames.{fk}")] = parse_object(
                    obj, f"{what}.frames.{fk}.{ok}")
    else:
        if not isinstance(doc["prompts"], list):
            raise MediaError(f"{what}.prompts must be a list")
        for k, item in enumerate(doc["prompts"]):
            where = f"{what}.prompts[{k}]"
            if not isinstance(item, dict) or "frame" not in item or "id" not in item:
                raise MediaError(f"{where}: each prompt needs a frame and an id")
            body = {a: b for a, b in item.items() if a not in ("frame", "id")}
            out.setdefault(_frame_index(item["frame"], where, allow_next), {})[_object_id(item["id"], where)] = (
                parse_object(body, where))
    if not out:
        raise MediaError(f"{what}: no prompts")
    return out


def frame_json(objs: FramePrompts) -> str:
    """One frame's prompts as compact JSON {id: prompt}, readable by `parse_document({"frames": {f: ...}})`."""
    return json.dumps({str(i): p.to_json() for i, p in sorted(objs.items())}, separators=(",", ":"))


def check_frames(prompts: dict[int, FramePrompts], size: tuple[int, int], frame_count: int | None,
                 what: str = "prompts") -> None:
    """Every prompt fits a frame of (H,W) and names a frame of the video."""
    for f, objs in prompts.items():
        if frame_count is not None and f >= frame_count and f != NEXT:
            raise MediaError(f"{what}: frame {f} does not exist (the video has {frame_count} frames)")
        for i, p in objs.items():
            p.check(size, f"{what}.frames.{f}.{i}")


def object_ids(prompts: Iterable[FramePrompts]) -> set[int]:
    """Ids that some prompt starts or corrects (removals alone do not make an object)."""
    return {i for objs in prompts for i, p in objs.items() if not p.empty}


class PromptFile:
    """A JSON prompts file: keys are frame indices."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MediaError(f"{self.path.name}: not a readable JSON prompts file ({type(e).__name__})") from None
        self.prompts = parse_document(doc, self.path.name)

    def assign(self, frame_names: list[str] | None, frame_count: int | None) -> dict[int, int]:
        """Frame index -> key (the index itself)."""
        for f in self.prompts:
            if frame_count is not None and f >= frame_count:
                raise MediaError(f"{self.path.name}: frame {f} does not exist (the video has {frame_count} frames)")
        return {f: f for f in sorted(self.prompts)}

    def frame_prompts(self, key: int) -> FramePrompts:
        return self.prompts[key]

    def palette(self) -> bytes | None:
        return None
