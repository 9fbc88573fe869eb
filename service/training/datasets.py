"""Readers for annotated video sequences (DAVIS-2016/2017, YouTube-VOS and the flat layout).

Layouts: `ROOT/JPEGImages/<seq>/*.jpg` + `ROOT/Annotations/<seq>/*.png` (DAVIS, YouTube-VOS; a
resolution folder such as `480p/` in between is found), or `ROOT/<seq>/JPEGImages/*.jpg` +
`ROOT/<seq>/Annotations/*.png`. Masks are read as everywhere else (service.media.masks): palette PNGs
(ids, 255 void -> 0) or {0,255} grayscale (-> 1).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..media.frames import IMAGE_EXTS
from ..media.masks import read_label_png


def read_mask(path: Path) -> np.ndarray:
    """(H,W) uint8 object ids."""
    return read_label_png(path.read_bytes(), str(path))[0]


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


@dataclass
class Instance:
    """One annotated object of a still image: its mask inside its box (h,w) bool and the box origin."""

    mask: np.ndarray
    y0: int
    x0: int
    category: int

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class StillImage:
    """A still image (H,W,3) uint8 RGB with its instance masks, for static-image training clips."""

    name: str
    image: np.ndarray
    instances: list[Instance]
    licence: int = 0


def is_coco(root: str | Path) -> bool:
    """A COCO-style folder: `instances.json` next to `images/`."""
    root = Path(root)
    return (root / "instances.json").is_file() and (root / "images").is_dir()


def load_coco(root: str | Path, max_side: int = 480, min_area: int = 100,
              limit: int | None = None) -> list[StillImage]:
    """Images and non-crowd instance masks of a COCO-format folder (`instances.json` + `images/`),
    downscaled so the long side is at most `max_side`; instances smaller than `min_area` pixels
    there (after scaling) are dropped, and so are images left without any."""
    from pycocotools import mask as mask_utils

    root = Path(root)
    data = json.loads((root / "instances.json").read_text())
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd"):
            anns.setdefault(a["image_id"], []).append(a)
    out = []
    for info in sorted(data["images"], key=lambda i: i["file_name"])[:limit]:
        if info["id"] not in anns:
            continue
        bgr = cv2.imread(str(root / "images" / info["file_name"]))
        if bgr is None:
            continue
        H, W = bgr.shape[:2]
        s = min(1.0, max_side / max(H, W))
        size = (round(W * s), round(H * s))
        rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        insts = []
        for a in anns[info["id"]]:
            seg = a["segmentation"]
            rles = mask_utils.frPyObjects(seg, H, W) if isinstance(seg, list) else seg
            if isinstance(rles, list):
                rles = mask_utils.merge(rles)
            with warnings.catch_warnings():  # pycocotools' own numpy-2 deprecation chatter
                warnings.simplefilter("ignore", DeprecationWarning)
                m = mask_utils.decode(rles)
            m = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) > 0
            ys, xs = np.nonzero(m)
            if len(ys) < min_area:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            insts.append(Instance(m[y0:y1, x0:x1].copy(), int(y0), int(x0), int(a["category_id"])))
        if insts:
            out.append(StillImage(info["file_name"], rgb, insts, int(info.get("license", 0))))
    if not out:
        raise FileNotFoundError(f"no annotated images under {root}")
    return out
