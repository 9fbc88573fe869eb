"""COCO run-length encoding (the compressed string form of pycocotools), in NumPy.

Runs are counted in column-major (Fortran) order, starting with a run of zeros; the counts are then
written as pycocotools' LEB128-like text: 5 bits per character, offset by 48, each count after the
second stored as the difference to the count two before it.
"""

from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> np.ndarray:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    return np.concatenate([[0], runs]) if flat[0] else runs


def _counts_to_string(counts: np.ndarray) -> str:
    out = []
    for i, c in enumerate(counts.tolist()):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def _string_to_counts(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            ch = ord(s[p]) - 48
            x |= (ch & 0x1F) << (5 * k)
            more = bool(ch & 0x20)
            p += 1
            k += 1
            if not more and (ch & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict:
    """Binary mask (H,W) -> {"size": [H, W], "counts": str}."""
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": _counts_to_string(_runs(mask))}


def decode(rle: dict) -> np.ndarray:
    """{"size": [H, W], "counts": str} -> uint8 mask (H,W)."""
    h, w = rle["size"]
    counts = _string_to_counts(rle["counts"])
    if sum(counts) != h * w:
        raise ValueError("RLE counts do not add up to the mask size")
    vals = np.zeros(len(counts), np.uint8)
    vals[1::2] = 1
    return np.repeat(vals, counts).reshape((h, w), order="F")


def area_bbox(mask: np.ndarray) -> tuple[int, list[int]]:
    """Pixel count and [x, y, w, h] bounding box (zeros for an empty mask)."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return 0, [0, 0, 0, 0]
    xs = np.flatnonzero(mask.any(axis=0))
    return int(np.count_nonzero(mask)), [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def frame_objects(labels: np.ndarray, ids: list[int]) -> list[dict]:
    """Label map (H,W) -> one entry per object id: {"id", "rle", "area", "bbox"} (empty ids included)."""
    out = []
    for obj in ids:
        m = labels == obj
        area, bbox = area_bbox(m)
        out.append({"id": int(obj), "rle": encode(m), "area": area, "bbox": bbox})
    return out


def objects_to_labels(objects: list[dict], size: tuple[int, int]) -> np.ndarray:
    """Inverse of frame_objects: -> label map (H,W) uint8."""
    labels = np.zeros(size, np.uint8)
    for o in objects:
        if o["area"]:
            labels[decode(o["rle"]).astype(bool)] = o["id"]
    return labels
