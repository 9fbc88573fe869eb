"""Training clips: real sequences, multi-object composites made from them, and synthetic videos.

Every generator returns a Clip of T frames at a fixed size (multiples of 32) with exact labels; the
first frame is the reference (its masks are given), the rest are predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .datasets import Sequence


@dataclass
class Clip:
    frames: np.ndarray  # (T,H,W,3) uint8 RGB
    labels: np.ndarray  # (T,H,W) uint8, ids 1..K in the first frame

    @property
    def ids(self) -> list[int]:
        return [int(i) for i in np.unique(self.labels[0]) if i]


def _frame_indices(n: int, length: int, rng: np.random.Generator, max_skip: int = 3) -> np.ndarray:
    skip = int(rng.integers(1, max_skip + 1))
    while skip > 1 and (length - 1) * skip >= n:
        skip -= 1
    span = (length - 1) * skip
    start = int(rng.integers(0, max(n - span, 1)))
    idx = start + skip * np.arange(length)
    idx = np.minimum(idx, n - 1)
    return idx[::-1].copy() if rng.random() < 0.3 else idx  # sometimes backwards in time


def _fit(frames: np.ndarray, labels: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
         scale_range=(0.8, 1.25)) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, crop (centred near the first frame's objects), flip: -> frames at `size`."""
    h, w = size
    H, W = frames.shape[1:3]
    s = max(h / H, w / W) * rng.uniform(*scale_range)
    nh, nw = max(h, round(H * s)), max(w, round(W * s))
    ys, xs = np.nonzero(labels[0])
    cy = int(ys.mean() * nh / H) if len(ys) else nh // 2
    cx = int(xs.mean() * nw / W) if len(xs) else nw // 2
    y0 = int(np.clip(cy - h // 2 + rng.integers(-h // 4, h // 4 + 1), 0, nh - h))
    x0 = int(np.clip(cx - w // 2 + rng.integers(-w // 4, w // 4 + 1), 0, nw - w))
    flip = rng.random() < 0.5
    out_f = np.empty((len(frames), h, w, 3), np.uint8)
    out_l = np.empty((len(frames), h, w), np.uint8)
    for t in range(len(frames)):
        f = cv2.resize(frames[t], (nw, nh), interpolation=cv2.INTER_LINEAR)[y0:y0 + h, x0:x0 + w]
        lab = cv2.resize(labels[t], (nw, nh), interpolation=cv2.INTER_NEAREST)[y0:y0 + h, x0:x0 + w]
        out_f[t], out_l[t] = (f[:, ::-1], lab[:, ::-1]) if flip else (f, lab)
    return out_f, out_l


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Ids present in the first frame become 1..K; everything else background."""
    ids = [i for i in np.unique(labels[0]) if i]
    lut = np.zeros(256, np.uint8)
    for k, i in enumerate(ids, 1):
        lut[i] = k
    return lut[labels]


def _annotated_indices(seq: Sequence, length: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of a clip drawn among annotated frames only (YouTube-VOS annotates every 5th):
    an unannotated frame would otherwise be trained on as an empty ground truth."""
    valid = np.flatnonzero(seq.annotated)
    return valid[_frame_indices(len(valid), length, rng)]


def real_clip(seq: Sequence, rng: np.random.Generator, length: int, size: tuple[int, int]) -> Clip:
    idx = _annotated_indices(seq, length, rng)
    frames, labels = _fit(seq.frames[idx], seq.labels[idx], size, rng)
    return Clip(frames, _relabel(labels))


def composite_clip(bg: Sequence, donors: list[Sequence], rng: np.random.Generator, length: int,
                   size: tuple[int, int]) -> Clip:
    """Objects cut from donor sequences (with their own motion and deformation) pasted with a random
    affine drift and scale onto the background sequence, in a random occlusion order (the background
    sequence's own object is one of the layers)."""
    idx = _annotated_indices(bg, length, rng)
    orig_f, orig_l = bg.frames[idx], bg.labels[idx]
    frames, labels = orig_f.copy(), orig_l.copy()
    H, W = frames.shape[1:3]
    for layer in rng.permutation(len(donors) + 1):  # bottom to top
        if layer == 0:  # the background's own object, at its place in the order
            for t in range(length):
                m = orig_l[t] > 0
                frames[t][m] = orig_f[t][m]
                labels[t][m] = orig_l[t][m]
            continue
        donor = donors[layer - 1]
        didx = _annotated_indices(donor, length, rng)
        dm = donor.labels[didx] > 0
        if not dm[0].any():
            continue
        ys, xs = np.nonzero(dm.any(0))
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        s = rng.uniform(0.35, 0.8) * min(H / (y1 - y0), W / (x1 - x0), 2.0)
        ty, tx = rng.uniform(0, H * 0.6), rng.uniform(0, W * 0.6)
        vy, vx = rng.normal(0, H * 0.02), rng.normal(0, W * 0.02)
        for t in range(length):
            m = np.float32([[s, 0, tx + vx * t - x0 * s], [0, s, ty + vy * t - y0 * s]])
            obj = cv2.warpAffine(donor.frames[didx[t]], m, (W, H), flags=cv2.INTER_LINEAR)
            mask = cv2.warpAffine(dm[t].astype(np.uint8), m, (W, H), flags=cv2.INTER_NEAREST) > 0
            frames[t][mask] = obj[mask]
            labels[t][mask] = 200 + layer  # ids apart from the background's own
    f, lab = _fit(frames, labels, size, rng)
    return Clip(f, _relabel(lab))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Procedural texture: smoothed noise at a random scale, random colours, a gradient."""
    base = rng.random((max(2, h // int(rng.integers(4, 32))), max(2, w // int(rng.integers(4, 32))), 3))
    tex = cv2.resize(base.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    tex = tex * rng.uniform(0.3, 1.0, 3) + rng.uniform(0, 0.5, 3)
    gy = np.linspace(0, rng.uniform(-0.3, 0.3), h, dtype=np.float32)[:, None, None]
    fine = rng.normal(0, rng.uniform(0, 0.08), (h, w, 1)).astype(np.float32)
    return np.clip((tex + gy + fine) * 255, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cx, cy = w // 2, h // 2
    if rng.random() < 0.5:
        cv2.ellipse(mask, (cx, cy), (int(w * rng.uniform(0.2, 0.48)), int(h * rng.uniform(0.2, 0.48))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.25, 0.48, n)
        pts = np.stack([cx + r * w * np.cos(ang), cy + r * h * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask


def synthetic_clip(rng: np.random.Generator, length: int, size: tuple[int, int], max_objects: int = 3) -> Clip:
    """Textured shapes moving over a textured background with camera motion; objects may enter or
    leave; motion blur and lighting changes."""
    h, w = size
    big = _texture(rng, h + 64, w + 64)
    cam = rng.normal(0, 3, 2)
    k = int(rng.integers(1, max_objects + 1))
    objs = []
    for _ in range(k):
        oh, ow = int(rng.integers(h // 6, h // 2)), int(rng.integers(w // 8, w // 2))
        objs.append({"tex": _texture(rng, oh, ow), "mask": _shape_mask(rng, oh, ow),
                     "pos": np.array([rng.uniform(0, h - oh), rng.uniform(0, w - ow)]),
                     "vel": rng.normal(0, 4, 2), "scale_v": rng.uniform(-0.02, 0.02), "rot_v": rng.normal(0, 2)})
    frames = np.empty((length, h, w, 3), np.uint8)
    labels = np.zeros((length, h, w), np.uint8)
    gain = rng.uniform(-0.03, 0.03)
    for t in range(length):
        oy, ox = np.clip(32 + cam * t, 0, 64).astype(int)
        f = big[oy:oy + h, ox:ox + w].astype(np.float32)
        lab = np.zeros((h, w), np.uint8)
        for i, o in enumerate(objs, 1):
            oh, ow = o["mask"].shape
            s = 1 + o["scale_v"] * t
            m = cv2.getRotationMatrix2D((ow / 2, oh / 2), o["rot_v"] * t, s)
            m[:, 2] += o["pos"][::-1] + o["vel"][::-1] * t
            tex = cv2.warpAffine(o["tex"], m, (w, h)).astype(np.float32)
            msk = cv2.warpAffine(o["mask"], m, (w, h), flags=cv2.INTER_NEAREST) > 0
            f[msk] = tex[msk]
            lab[msk] = i
        f = f * (1 + gain * t)
        if rng.random() < 0.2:
            kk = int(rng.integers(2, 5))
            f = cv2.blur(f, (kk, 1))
        frames[t] = np.clip(f, 0, 255).astype(np.uint8)
        labels[t] = lab
    return Clip(frames, _relabel(labels))


def make_clip(seqs: list[Sequence], rng: np.random.Generator, length: int, size: tuple[int, int],
              p_composite: float = 0.5, p_synthetic: float = 0.15) -> Clip:
    """One training clip: a composite, a synthetic video, or a real sequence; never empty at frame 0."""
    for _ in range(20):
        u = rng.random()
        if u < p_synthetic:
            clip = synthetic_clip(rng, length, size)
        elif u < p_synthetic + p_composite and len(seqs) > 1:
            bg = seqs[int(rng.integers(len(seqs)))]
            donors = [seqs[int(i)] for i in rng.choice(len(seqs), int(rng.integers(1, 3)), replace=False)]
            clip = composite_clip(bg, [d for d in donors if d is not bg], rng, length, size)
        else:
            clip = real_clip(seqs[int(rng.integers(len(seqs)))], rng, length, size)
        if clip.ids and all((clip.labels[0] == i).sum() >= 64 for i in clip.ids):
            return clip
    return synthetic_clip(rng, length, size)
