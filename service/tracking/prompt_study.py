"""What prompts are worth, measured on annotated sequences (`agss-vos validate --prompts`).

For each sequence, in one run with one model:
- `mask`: the run started from the true first-frame masks (J&F, DAVIS protocol);
- `box`: the run started from GrabCut masks of each object's true bounding box on the first frame, as a
  user who draws boxes gets them, and `grabcut_j`, the J of those masks against the truth;
- a correction: the frame `c` where the `mask` run has drifted most (lowest mean J over objects, among
  frames 10 % to 80 % into the video, so that frames are left after it), the true masks given there as a
  correction, and the J&F of the frames after `c` without and with it. The corrected run continues from
  the tracker's saved state at `c` (Tracker.state_dict / from_state), so both runs share frames 0..c-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vos.metrics import SequenceScorer, jaccard, summarize
from ..vos.network import SegmentationModel
from ..vos.tracker import Tracker
from .evaluation import box_started

FIRST, LAST = 0.1, 0.8  # where in the video the correction frame is looked for


@dataclass
class PromptResult:
    sequence: str
    mask_jf: float
    box_jf: float
    grabcut_j: float  # mean over objects, first frame
    correction_frame: int
    j_at_correction: float  # the uncorrected run's mean J on that frame
    after_uncorrected: float  # J&F of the frames after the correction frame
    after_corrected: float


def _mean_j(gt: np.ndarray, pred: np.ndarray, ids: list[int]) -> float:
    return float(np.mean([jaccard(gt == i, pred == i) for i in ids]))


def _score(name: str, gts: list[np.ndarray], preds: list[np.ndarray]) -> float:
    scorer = SequenceScorer(name)
    for gt, pred in zip(gts, preds, strict=True):
        scorer.add(gt, pred)
    return summarize(scorer.result())["J&F"]


def study(model: SegmentationModel, name: str, frames: np.ndarray, labels: np.ndarray, flow: str = "dis",
          long_side: int | None = None) -> PromptResult:
    """frames (T,H,W,3) uint8 RGB, labels (T,H,W) uint8 ground truth on every frame -> the measures above."""
    n = len(frames)
    ids = [int(i) for i in np.unique(labels[0]) if i]
    tracker = Tracker(model, flow=flow, long_side=long_side)
    preds, states = [], []
    for t in range(n):
        states.append(tracker.state_dict())  # before frame t: where a correction on t would start
        preds.append(tracker.step(frames[t], labels[0] if t == 0 else None))
    per_frame = [_mean_j(labels[t], preds[t], ids) for t in range(n)]
    lo, hi = max(1, int(FIRST * n)), max(2, int(LAST * n))
    c = lo + int(np.argmin(per_frame[lo:hi]))

    fixed = Tracker.from_state(model, states[c], flow=flow)
    after = [fixed.step(frames[c], labels[c])] + [fixed.step(frames[t]) for t in range(c + 1, n)]
    # Frames c..n-1 are scored as a sequence of their own: c (given) and the last are not counted.
    rest = list(labels[c:])
    start, js = box_started([frames[0]], [labels[0]])
    box = Tracker(model, flow=flow, long_side=long_side)
    box_preds = [box.step(frames[t], start[0] if t == 0 else None) for t in range(n)]
    return PromptResult(name, _score(name, list(labels), preds), _score(name, list(labels), box_preds),
                        float(np.mean(js)), c, per_frame[c], _score(name, rest, preds[c:]),
                        _score(name, rest, after))


def format_table(results: list[PromptResult]) -> str:
    lines = ["| sequence | from mask | from box | GrabCut J | corrected frame (its J) | after it, uncorrected "
             "| after it, corrected |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.sequence} | {r.mask_jf:.4f} | {r.box_jf:.4f} | {r.grabcut_j:.4f} | "
                     f"{r.correction_frame} ({r.j_at_correction:.3f}) | {r.after_uncorrected:.4f} | "
                     f"{r.after_corrected:.4f} |")
    mean = {k: float(np.mean([getattr(r, k) for r in results])) for k in
            ("mask_jf", "box_jf", "grabcut_j", "after_uncorrected", "after_corrected")}
    lines.append(f"| mean | {mean['mask_jf']:.4f} | {mean['box_jf']:.4f} | {mean['grabcut_j']:.4f} | | "
                 f"{mean['after_uncorrected']:.4f} | {mean['after_corrected']:.4f} |")
    return "\n".join(lines)
