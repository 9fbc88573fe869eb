"""An independent, deliberately naive implementation of the DAVIS-2017 J and F, for cross-checks.

Written from the protocol's definition, not from service/vos/metrics.py: boundary pixels by explicit
neighbour comparisons per pixel; boundary matching by Euclidean distance between boundary pixel sets
(a pixel matches when a pixel of the other boundary lies within the tolerance), no morphology.
"""

from __future__ import annotations

import math

import numpy as np


def boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    h, w = m.shape
    out = np.zeros((h, w), bool)
    ys, xs = np.nonzero(m)
    cand = set()
    # Only pixels in or next to the mask can be boundary pixels; look at them one by one.
    for y, x in zip(ys, xs, strict=True):
        for dy in (-1, 0):
            for dx in (-1, 0):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    cand.add((y + dy, x + dx))
    for y, x in cand:
        v = m[y, x]
        if y == h - 1 and x == w - 1:
            continue
        if y == h - 1:
            out[y, x] = v != m[y, x + 1]
        elif x == w - 1:
            out[y, x] = v != m[y + 1, x]
        else:
            out[y, x] = v != m[y, x + 1] or v != m[y + 1, x] or v != m[y + 1, x + 1]
    return out


def _matched(a: np.ndarray, b: np.ndarray, r: float) -> int:
    """How many points of a lie within distance r of some point of b."""
    if len(a) == 0 or len(b) == 0:
        return 0
    n = 0
    for i in range(0, len(a), 512):
        d2 = ((a[i:i + 512, None, :] - b[None, :, :]) ** 2).sum(-1)
        n += int((d2.min(1) <= r * r).sum())
    return n


def f_score(gt: np.ndarray, pred: np.ndarray) -> float:
    r = math.ceil(0.008 * math.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2))
    bg, bp = np.argwhere(boundary(gt)), np.argwhere(boundary(pred))
    if len(bg) == 0 and len(bp) == 0:
        return 1.0
    if len(bg) == 0 or len(bp) == 0:
        return 0.0
    p = _matched(bp, bg, r) / len(bp)
    rc = _matched(bg, bp, r) / len(bg)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def j_score(gt: np.ndarray, pred: np.ndarray) -> float:
    inter = np.logical_and(gt, pred).sum()
    union = np.logical_or(gt, pred).sum()
    return 1.0 if union == 0 else inter / union


def evaluate(gts: list[np.ndarray], preds: list[np.ndarray]) -> dict[int, tuple[float, float]]:
    """Per object id: mean J and mean F over frames 1..n-2."""
    ids = sorted({int(i) for g in gts for i in np.unique(g) if i})
    out = {}
    for obj in ids:
        js = [j_score(g == obj, p == obj) for g, p in zip(gts[1:-1], preds[1:-1], strict=True)]
        fs = [f_score(g == obj, p == obj) for g, p in zip(gts[1:-1], preds[1:-1], strict=True)]
        out[obj] = (float(np.mean(js)), float(np.mean(fs)))
    return out
