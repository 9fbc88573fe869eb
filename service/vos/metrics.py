"""DAVIS-2017 semi-supervised metrics: region J (IoU) and boundary F, per object and frame.

Follows the protocol of the DAVIS-2017 evaluation: boundaries are 1-pixel maps offset towards the
origin, matched within a disk of radius ceil(0.008 * image diagonal); void pixels are ignored; the
first and last frames are not scored; means are per object; J&F = (mean J + mean F) / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOUND_TH = 0.008


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """IoU of two boolean masks (H,W); 1 when both are empty."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    keep = ~void.astype(bool) if void is not None else np.ones_like(gt)
    union = np.count_nonzero((gt | pred) & keep)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred & keep) / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boolean mask (H,W) -> boundary map (H,W): a pixel differs from its E, S or SE neighbour."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).astype(np.uint8)


def f_measure(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two boolean masks (H,W)."""
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    keep = ~void.astype(bool) if void is not None else np.ones(gt.shape, bool)
    fg_b = seg2bmap(pred.astype(bool) & keep)
    gt_b = seg2bmap(gt.astype(bool) & keep)
    n_fg, n_gt = np.count_nonzero(fg_b), np.count_nonzero(gt_b)
    if n_fg == 0 or n_gt == 0:
        # both empty: perfect; one empty: precision or recall is 0, so F is 0
        return 1.0 if n_fg == n_gt else 0.0
    kernel = _disk(int(radius))
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(fg_b & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class ObjectScore:
    sequence: str
    object_id: int
    j: float  # mean over scored frames
    f: float

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


class SequenceScorer:
    """Accumulates per-object J and F frame by frame, so a sequence never has to sit in memory.

    Frames are fed in order; the first and the last frame fed are not scored (DAVIS protocol). Objects
    are the ids present in the ground truth of any frame.
    """

    def __init__(self, name: str):
        self.name = name
        self._pending: dict[int, tuple[float, float]] | None = None  # last frame's scores, held back
        self._sums: dict[int, list[float]] = {}
        self._frames = 0
        self._first: dict[int, tuple[float, float]] = {}

    def add(self, gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> None:
        """gt, pred label maps (H,W) uint8; void (H,W) bool or None."""
        if gt.shape != pred.shape:
            raise ValueError(f"prediction is {pred.shape[1]}x{pred.shape[0]}, ground truth {gt.shape[1]}x{gt.shape[0]}")
        ids = set(int(i) for i in np.unique(gt) if i) | set(self._sums)
        scores = {i: (jaccard(gt == i, pred == i, void), f_measure(gt == i, pred == i, void)) for i in ids}
        if self._frames == 0:
            self._first = scores
        elif self._pending is not None:
            self._accumulate(self._pending)
        for i in ids:
            self._sums.setdefault(i, [0.0, 0.0, 0])
        self._pending = scores if self._frames > 0 else None
        self._frames += 1

    def _accumulate(self, scores: dict[int, tuple[float, float]]) -> None:
        for i, (j, f) in scores.items():
            s = self._sums.setdefault(i, [0.0, 0.0, 0])
            s[0] += j
            s[1] += f
            s[2] += 1

    def result(self) -> list[ObjectScore]:
        """Per-object means over frames 1..n-2 (all frames when fewer than 3 were given)."""
        if self._frames < 3:
            # Too short for the protocol's exclusions: score every frame rather than none.
            self._accumulate(self._first)
            if self._pending is not None:
                self._accumulate(self._pending)
            self._first, self._pending = {}, None
        out = []
        for i in sorted(self._sums):
            j, f, n = self._sums[i]
            if n:
                out.append(ObjectScore(self.name, i, j / n, f / n))
        return out


def summarize(scores: list[ObjectScore]) -> dict[str, float]:
    """Means over all objects of all sequences: J, F, J&F."""
    if not scores:
        return {"J": float("nan"), "F": float("nan"), "J&F": float("nan")}
    j = float(np.mean([s.j for s in scores]))
    f = float(np.mean([s.f for s in scores]))
    return {"J": j, "F": f, "J&F": (j + f) / 2}
