"""Readers for annotated video sequences (DAVIS-2016/2017, YouTube-VOS and the flat layout).

Layouts: `ROOT/JPEGImages/<seq>/*.jpg` + `ROOT/Annotations/<seq>/*.png` (DAVIS, YouTube-VOS; a
resolution folder such as `480p/` in between is found), or `ROOT/<seq>/JPEGImages/*.jpg` +
`ROOT/<seq>/Annotations/*.png`. Masks: palette PNGs (ids, 255 void -> 0) or {0,255} grayscale (-> 1).
The training package reads masks itself: `service.vos` imports nothing from the rest of `service`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}


def read_mask(path: Path) -> np.ndarray:
    """(H,W) uint8 object ids."""
    img = Image.open(path)
    arr = np.array(img.getchannel(0) if img.mode == "LA" else img, np.uint8)
    if img.mode != "P" and np.isin(arr, (0, 255)).all():
        return (arr == 255).astype(np.uint8)
    arr[arr == 255] = 0
    return arr


@dataclass
class Sequence:
    """One annotated sequence in memory: frames (T,H,W,3) uint8 RGB and labels (T,H,W) uint8.

    Frames without a mask file (YouTube-VOS annotates every 5th) have label -1 in `annotated`.
    """

    name: str
    frames: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray  # (T,) bool

    @property
    def ids(self) -> list[int]:
        return [int(i) for i in np.unique(self.labels[self.annotated]) if i]


def _find(root: Path) -> list[tuple[str, Path, Path]]:
    """(name, frames folder, masks folder) for every sequence under root."""
    out = []
    jpeg, ann = root / "JPEGImages", root / "Annotations"
    if jpeg.is_dir() and ann.is_dir():
        if any(p.suffix.lower() in IMAGE_EXTS for p in jpeg.iterdir()):
            return [(root.name, jpeg, ann)]
        subs = [p for p in jpeg.iterdir() if p.is_dir()]
        if len(subs) == 1 and not any(q.suffix.lower() in IMAGE_EXTS for q in subs[0].iterdir()):
            return _find_pairs(subs[0], ann / subs[0].name)  # a resolution level such as 480p/
        return _find_pairs(jpeg, ann)
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        out += _find(sub)
    return out


def _find_pairs(jpeg: Path, ann: Path) -> list[tuple[str, Path, Path]]:
    return [(p.name, p, ann / p.name) for p in sorted(jpeg.iterdir()) if p.is_dir() and (ann / p.name).is_dir()]


def load_sequences(root: str | Path, max_side: int | None = None, names: list[str] | None = None) -> list[Sequence]:
    """Every sequence under `root`, optionally downscaled so that the long side is at most max_side."""
    seqs = []
    for name, fdir, mdir in _find(Path(root)):
        if names and name not in names:
            continue
        files = sorted(p for p in fdir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        frames, labels, annotated = [], [], []
        for f in files:
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            m = mdir / (f.stem + ".png")
            lab = read_mask(m) if m.exists() else np.zeros(rgb.shape[:2], np.uint8)
            if max_side and max(rgb.shape[:2]) > max_side:
                s = max_side / max(rgb.shape[:2])
                size = (round(rgb.shape[1] * s), round(rgb.shape[0] * s))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                lab = cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST)
            frames.append(rgb)
            labels.append(lab)
            annotated.append(m.exists())
        if frames:
            seqs.append(Sequence(name, np.stack(frames), np.stack(labels), np.array(annotated)))
    if not seqs:
        raise FileNotFoundError(f"no annotated sequences under {root}")
    return seqs
