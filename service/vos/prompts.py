"""A box or clicks for an object -> a mask on that frame, by OpenCV GrabCut (no weights needed).

This is a classical interactive segmentation: a starting point to correct, not a learned model. It
runs on a crop around the prompt, scaled down to at most WORK_SIDE pixels, so it takes a fraction of
a second on a CPU; the mask is scaled back to the frame.

    box      [x0, y0, x1, y1] in pixels (x1, y1 exclusive); everything outside is background
    points   [[x, y, 1], ...] positive clicks (on the object), [[x, y, 0], ...] negative ones
Both may be given together. With points alone, the region searched is the box around the positive
clicks, widened by CLICK_MARGIN of the frame's shorter side.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .errors import TrackerInputError

WORK_SIDE = 320  # long side of the crop GrabCut works on
ITERATIONS = 5
CLICK_RADIUS = 0.012  # of the frame's diagonal: the disk a click marks as surely object or background
CLICK_MARGIN = 0.15


def _check(rgb: np.ndarray, box: Sequence[float] | None, points: Sequence[Sequence[float]]) -> None:
    h, w = rgb.shape[:2]
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise TrackerInputError(f"box {list(box)} is not inside the {w}x{h} frame with x0 < x1 and y0 < y1")
    for p in points:
        if len(p) != 3 or p[2] not in (0, 1) or not (0 <= p[0] < w and 0 <= p[1] < h):
            raise TrackerInputError(f"point {list(p)} must be [x, y, 1|0] inside the {w}x{h} frame")
    if box is None and not any(p[2] == 1 for p in points):
        raise TrackerInputError("a prompt needs a box or at least one positive click")


def prompt_to_mask(rgb: np.ndarray, box: Sequence[float] | None = None,
                   points: Sequence[Sequence[float]] = ()) -> np.ndarray:
    """(H,W,3) uint8 RGB, a box and/or clicks -> (H,W) bool mask of the object."""
    _check(rgb, box, points)
    h, w = rgb.shape[:2]
    if box is None:
        pos = np.array([p[:2] for p in points if p[2] == 1], np.float32)
        margin = CLICK_MARGIN * min(h, w)
        box = (max(pos[:, 0].min() - margin, 0), max(pos[:, 1].min() - margin, 0),
               min(pos[:, 0].max() + margin + 1, w), min(pos[:, 1].max() + margin + 1, h))
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    # A crop with some background around the box, scaled to WORK_SIDE.
    pad = max(8, int(0.1 * max(x1 - x0, y1 - y0)))
    cx0, cy0, cx1, cy1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
    s = min(1.0, WORK_SIDE / max(cx1 - cx0, cy1 - cy0))
    cw, ch = max(int(round((cx1 - cx0) * s)), 1), max(int(round((cy1 - cy0) * s)), 1)
    crop = cv2.resize(np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1]), (cw, ch), interpolation=cv2.INTER_AREA)
    seed = np.full((ch, cw), cv2.GC_BGD, np.uint8)
    bx0, by0 = int((x0 - cx0) * s), int((y0 - cy0) * s)
    bx1, by1 = max(int(np.ceil((x1 - cx0) * s)), bx0 + 1), max(int(np.ceil((y1 - cy0) * s)), by0 + 1)
    seed[by0:by1, bx0:bx1] = cv2.GC_PR_FGD
    radius = max(2, int(CLICK_RADIUS * np.hypot(h, w) * s))
    for x, y, positive in points:
        px, py = int((x - cx0) * s), int((y - cy0) * s)
        if 0 <= px < cw and 0 <= py < ch:
            cv2.circle(seed, (px, py), radius, cv2.GC_FGD if positive else cv2.GC_BGD, -1)
    if (seed == cv2.GC_BGD).all():
        return np.zeros((h, w), bool)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    try:
        cv2.grabCut(bgr, seed, None, bgd, fgd, ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        # GrabCut needs both classes in the seed; a box covering the whole crop has no background.
        seed[(seed == cv2.GC_PR_FGD)] = cv2.GC_FGD
    fg = np.isin(seed, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    out = np.zeros((h, w), bool)
    out[cy0:cy1, cx0:cx1] = cv2.resize(fg.astype(np.float32), (cx1 - cx0, cy1 - cy0)) > 0.5
    out[:y0, :] = out[y1:, :] = False  # never outside the box
    out[:, :x0] = out[:, x1:] = False
    return out
