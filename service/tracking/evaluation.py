"""DAVIS J&F of a folder of predictions against a folder of ground truth (`agss-vos eval`).

Layouts understood for GT_DIR: a sequence folder of PNGs; a sequence folder with `Annotations/`; a
folder of such sequence folders; or a DAVIS root with `Annotations/<seq>/`. Predictions are found at
PRED_DIR/<seq>/ (or PRED_DIR itself for a single sequence), one PNG per ground-truth frame, same stem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..media.errors import MediaError
from ..media.masks import read_label_png
from ..vos.labels import VOID
from ..vos.metrics import ObjectScore, SequenceScorer, jaccard, summarize
from ..vos.prompts import prompt_to_mask


def _pngs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))


def find_sequences(gt_dir: Path) -> dict[str, Path]:
    """Sequence name -> folder holding its ground-truth PNGs."""
    if not gt_dir.is_dir():
        raise MediaError(f"{gt_dir}: not a folder")
    if _pngs(gt_dir):
        return {gt_dir.name: gt_dir}
    ann = gt_dir / "Annotations"
    if ann.is_dir():
        if _pngs(ann):
            return {gt_dir.name: ann}
        return find_sequences(ann)
    out = {}
    for sub in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
        for name, folder in find_sequences(sub).items():
            out[sub.name if folder in (sub, sub / "Annotations") else name] = folder
    if not out:
        raise MediaError(f"{gt_dir}: no ground-truth PNGs found")
    return out


def evaluate_folder(gt_dir: str | Path, pred_dir: str | Path) -> list[ObjectScore]:
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    seqs = find_sequences(gt_dir)
    scores: list[ObjectScore] = []
    for name, gt_folder in seqs.items():
        pred_folder = pred_dir / name if (pred_dir / name).is_dir() else pred_dir
        if len(seqs) > 1 and pred_folder == pred_dir:
            raise MediaError(f"no predictions for sequence {name} (expected {pred_dir / name})")
        scorer = SequenceScorer(name)
        for gt_path in _pngs(gt_folder):
            pred_path = pred_folder / gt_path.name
            if not pred_path.is_file():
                raise MediaError(f"prediction {pred_path} is missing")
            gt, _ = read_label_png(gt_path.read_bytes(), str(gt_path), keep_void=True)
            pred, _ = read_label_png(pred_path.read_bytes(), str(pred_path))
            if pred.shape != gt.shape:
                raise MediaError(f"{pred_path} is {pred.shape[1]}x{pred.shape[0]}, its ground truth "
                                 f"{gt.shape[1]}x{gt.shape[0]}")
            void = gt == VOID
            gt[void] = 0
            scorer.add(gt, pred, void if void.any() else None)
        scores += scorer.result()
    return scores


def format_table(scores: list[ObjectScore]) -> str:
    lines = [f"{'sequence':<24} {'object':>6} {'J':>7} {'F':>7} {'J&F':>7}"]
    for s in scores:
        lines.append(f"{s.sequence:<24} {s.object_id:>6} {s.j:>7.4f} {s.f:>7.4f} {s.jf:>7.4f}")
    m = summarize(scores)
    lines.append(f"{'mean (' + str(len(scores)) + ' objects)':<31} {m['J']:>7.4f} {m['F']:>7.4f} {m['J&F']:>7.4f}")
    return "\n".join(lines)


def box_started(frames0: list[np.ndarray], labels0: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """What a user who draws boxes gets on the first frame: for each sequence's first frame (H,W,3) and
    its true labels (H,W), the label map of GrabCut masks from each object's bounding box (a later id
    wins overlaps), and the J of every such mask against the truth."""
    starts, js = [], []
    for rgb, gt in zip(frames0, labels0, strict=True):
        out = np.zeros_like(gt)
        for i in (int(v) for v in np.unique(gt) if v):
            ys, xs = np.nonzero(gt == i)
            m = prompt_to_mask(rgb, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
            out[m] = i
            js.append(jaccard(gt == i, m))
        starts.append(out)
    return starts, js
