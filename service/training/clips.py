"""Training clips: real sequences, multi-object composites made from them, synthetic videos, and
static-image clips (objects of one still image moved with their own affine and elastic warps).

Every generator returns a Clip of T frames at a fixed size (multiples of 32) with exact labels; the
first frame is the reference (its masks are given), the rest are predicted (a far-reference clip,
`Clip.far_reference`, also gives the masks of frame 1, where its propagation starts). `fast` clips are the
hard cases the held-out numbers point at: large displacements between frames, motion blur, small
objects leaving the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .datasets import Sequence, StillImage


@dataclass
class Clip:
    frames: np.ndarray  # (T,H,W,3) uint8 RGB
    labels: np.ndarray  # (T,H,W) uint8, ids 1..K in the first frame
    # Frame 0 only gives the reference encoding; propagation starts from frame 1's exact masks. Inference
    # keeps the first frame's reference for the whole video, so it is often many frames away from the
    # frame being segmented, where an ordinary clip's reference is at most a few frames away.
    far_reference: bool = False

    @property
    def start(self) -> int:
        """The frame whose exact masks propagation starts from (the reference frame unless it is far)."""
        return int(self.far_reference)

    @property
    def ids(self) -> list[int]:
        return [int(i) for i in np.unique(self.labels[0]) if i]


def _frame_indices(n: int, length: int, rng: np.random.Generator, max_skip: int = 3) -> np.ndarray:
    # Beyond the ordinary skips of 1..3, only the large ones: they are what fast clips are for.
    skip = int(rng.integers(1, max_skip + 1)) if max_skip <= 3 else int(rng.integers(3, max_skip + 1))
    while skip > 1 and (length - 1) * skip >= n:
        skip -= 1
    span = (length - 1) * skip
    start = int(rng.integers(0, max(n - span, 1)))
    idx = start + skip * np.arange(length)
    idx = np.minimum(idx, n - 1)
    return idx[::-1].copy() if rng.random() < 0.3 else idx  # sometimes backwards in time


def _fit(frames: np.ndarray, labels: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
         scale_range=(0.8, 1.25), centre: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, crop (centred near the objects of frame `centre`), flip: -> frames at `size`."""
    h, w = size
    H, W = frames.shape[1:3]
    s = max(h / H, w / W) * rng.uniform(*scale_range)
    nh, nw = max(h, round(H * s)), max(w, round(W * s))
    ys, xs = np.nonzero(labels[centre])
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


def _annotated_indices(seq: Sequence, length: int, rng: np.random.Generator, max_skip: int = 3) -> np.ndarray:
    """Frame indices of a clip drawn among annotated frames only (YouTube-VOS annotates every 5th):
    an unannotated frame would otherwise be trained on as an empty ground truth."""
    valid = np.flatnonzero(seq.annotated)
    return valid[_frame_indices(len(valid), length, rng, max_skip)]


def motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Linear motion blur of an image (H,W,C) or (H,W) along `angle` (radians) over `length` pixels."""
    n = int(round(length))
    if n < 2:
        return img
    k = np.zeros((n, n), np.float32)
    c = (n - 1) / 2
    dx, dy = np.cos(angle) * c, np.sin(angle) * c
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    return cv2.filter2D(img, -1, k / max(k.sum(), 1.0), borderType=cv2.BORDER_REFLECT)


def _blur_frames(frames: np.ndarray, rng: np.random.Generator, max_len: float) -> np.ndarray:
    """Camera-shake style motion blur on every frame but the reference (its masks are exact)."""
    out = frames.copy()
    for t in range(1, len(frames)):
        out[t] = motion_blur(frames[t], rng.uniform(2, max_len), rng.uniform(0, np.pi))
    return out


def real_clip(seq: Sequence, rng: np.random.Generator, length: int, size: tuple[int, int],
              fast: bool = False, far_reference: bool = False) -> Clip:
    """A real sequence; `fast` takes every 3rd to 8th frame (large displacements) with motion blur.
    `far_reference`: one more frame in front, drawn anywhere in the sequence outside the clip's span, gives
    the reference (Clip.far_reference); the crop is centred on the objects where propagation starts."""
    idx = _annotated_indices(seq, length, rng, max_skip=8 if fast else 3)
    if far_reference:
        valid = np.flatnonzero(seq.annotated)
        outside = valid[(valid < idx.min()) | (valid > idx.max())]
        idx = np.concatenate([[int(rng.choice(outside if len(outside) else valid))], idx])
    frames, labels = _fit(seq.frames[idx], seq.labels[idx], size, rng, centre=int(far_reference))
    if fast and rng.random() < 0.5:
        frames = _blur_frames(frames, rng, max(size) * 0.04)
    return Clip(frames, _relabel(labels), far_reference)


def _exit_path(rng: np.random.Generator, bh: float, bw: float, target: np.ndarray,
               length: int) -> tuple[float, float, float, float]:
    """Start (top, left) and velocity (vy, vx) per frame of a pasted object of size bh x bw that, within the
    clip, either leaves the frame over an edge (it starts half to wholly inside) or moves onto the
    background object `target` (H,W bool, its mask in the last frame), where the occlusion order decides
    which of the two disappears behind the other. Over a clip of a few frames neither happens by drift."""
    H, W = target.shape
    ys, xs = np.nonzero(target)
    steps = max(length - 1, 1)
    if len(ys) and rng.random() < 0.5:  # onto the background object, from about its own size away
        end = np.array([ys.mean() - bh / 2, xs.mean() - bw / 2])
        ang = rng.uniform(0, 2 * np.pi)
        start = end + rng.uniform(0.5, 1.5) * max(bh, bw) * np.array([np.sin(ang), np.cos(ang)])
    else:  # over one edge: top, bottom, left or right
        side = int(rng.integers(4))
        inside = rng.uniform(0.5, 1.0)
        start = np.array([rng.uniform(0, max(H - bh, 1)), rng.uniform(0, max(W - bw, 1))])
        end = start.copy()
        axis, extent, size = (0, bh, H) if side < 2 else (1, bw, W)
        if side % 2 == 0:  # towards 0
            start[axis], end[axis] = -extent * (1 - inside), -extent * rng.uniform(1.0, 1.3)
        else:
            start[axis], end[axis] = size - extent * inside, size + extent * rng.uniform(0.0, 0.3)
    v = (end - start) / int(rng.integers(1, steps + 1))  # there at a random frame of the clip, then beyond
    return float(start[0]), float(start[1]), float(v[0]), float(v[1])


def composite_clip(bg: Sequence, donors: list[Sequence], rng: np.random.Generator, length: int,
                   size: tuple[int, int], fast: bool = False, p_exit: float = 0.0) -> Clip:
    """Objects cut from donor sequences (with their own motion and deformation) pasted with a random
    affine drift and scale onto the background sequence, in a random occlusion order (the background
    sequence's own object is one of the layers). `fast`: larger frame skips, several times the drift
    (objects may leave the frame), smaller pasted objects, motion blur along each object's motion.
    `p_exit`: the fraction of pasted objects that leave the frame or meet the background's object within
    the clip (`_exit_path`), so that objects vanish and come apart as they do over a long video."""
    idx = _annotated_indices(bg, length, rng, max_skip=6 if fast else 3)
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
        didx = _annotated_indices(donor, length, rng, max_skip=6 if fast else 3)
        dm = donor.labels[didx] > 0
        if not dm[0].any():
            continue
        ys, xs = np.nonzero(dm.any(0))
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        s = rng.uniform(*((0.15, 0.6) if fast else (0.35, 0.8))) * min(H / (y1 - y0), W / (x1 - x0), 2.0)
        ty, tx = rng.uniform(0, H * 0.6), rng.uniform(0, W * 0.6)
        speed = rng.uniform(0.06, 0.15) if fast else 0.02
        vy, vx = rng.normal(0, H * speed), rng.normal(0, W * speed)
        if p_exit > 0 and rng.random() < p_exit:
            ty, tx, vy, vx = _exit_path(rng, (y1 - y0) * s, (x1 - x0) * s, orig_l[-1] > 0, length)
        for t in range(length):
            m = np.float32([[s, 0, tx + vx * t - x0 * s], [0, s, ty + vy * t - y0 * s]])
            obj = cv2.warpAffine(donor.frames[didx[t]], m, (W, H), flags=cv2.INTER_LINEAR)
            mask = cv2.warpAffine(dm[t].astype(np.uint8), m, (W, H), flags=cv2.INTER_NEAREST) > 0
            if fast and t:
                obj = motion_blur(obj, 0.5 * np.hypot(vx, vy) * size[1] / W, np.arctan2(vy, vx))
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


def _smooth_field(rng: np.random.Generator, h: int, w: int, amplitude: float) -> np.ndarray:
    """A smooth random displacement field (h,w,2) float32 with values of about +-amplitude pixels."""
    coarse = rng.normal(0, 1, (4, 4, 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(amplitude)


def _elastic(patch: np.ndarray, alpha: np.ndarray, f1: np.ndarray, f2: np.ndarray, phase: float) -> tuple:
    """Warp an object patch (h,w,3) and its alpha (h,w) by a field oscillating between f1 and f2."""
    h, w = alpha.shape
    d = (np.cos(phase) * f1 + np.sin(phase) * f2).astype(np.float32)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + d[..., 0], gy + d[..., 1]
    return (cv2.remap(patch, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT),
            cv2.remap(alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))


def _object_track(rng: np.random.Generator, size: tuple[int, int], obj_hw: tuple[int, int], fast: bool) -> dict:
    """A random trajectory for one pasted object: scale (small objects included), position at the
    reference frame (inside the frame), velocity (large when fast: it may leave the frame), rotation
    and scale rates, and an elastic deformation whose strength is drawn per object."""
    h, w = size
    oh, ow = obj_hw
    area = np.exp(rng.uniform(np.log(0.004), np.log(0.2))) * h * w  # log-uniform: many small objects
    s = float(np.clip(np.sqrt(area / max(oh * ow * 0.6, 1)), 0.05, 4.0))
    cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
    speed = rng.uniform(0.05, 0.15) * w if fast else rng.uniform(0, 0.03) * w
    ang = rng.uniform(0, 2 * np.pi)
    return {"s": s, "c": np.array([cx, cy]), "v": speed * np.array([np.cos(ang), np.sin(ang)]),
            "acc": rng.normal(0, 0.01 * w, 2), "rot": rng.normal(0, 6 if fast else 2), "grow": rng.normal(0, 0.04),
            "elastic": rng.uniform(0, 0.12) if rng.random() < 0.6 else 0.0, "phase": rng.uniform(0, 2 * np.pi),
            "omega": rng.uniform(0.3, 1.2) * (1 + fast)}


def _paste_object(img: StillImage, inst_idx: int, margin: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Patch (h,w,3) of the image around an instance and its alpha (h,w) float32."""
    inst = img.instances[inst_idx]
    H, W = img.image.shape[:2]
    mh, mw = inst.mask.shape
    y0, x0 = max(inst.y0 - margin, 0), max(inst.x0 - margin, 0)
    y1, x1 = min(inst.y0 + mh + margin, H), min(inst.x0 + mw + margin, W)
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    alpha[inst.y0 - y0:inst.y0 - y0 + mh, inst.x0 - x0:inst.x0 - x0 + mw] = inst.mask
    return img.image[y0:y1, x0:x1], alpha


def static_clip(images: list[StillImage], rng: np.random.Generator, length: int, size: tuple[int, int],
                max_objects: int = 4, fast: bool = False, p_distractor: float = 0.3) -> Clip:
    """A clip made from one still image: 1..max_objects of its instances, each moved with its own
    affine trajectory and elastic deformation, over a background that moves like a camera (another
    image, or the same image with those objects inpainted away), in a random occlusion order. Objects
    may leave the frame; an unlabelled copy of an object may move in as a similar-looking distractor.
    `fast`: large displacements between frames and motion blur along each object's motion."""
    h, w = size
    src = images[int(rng.integers(len(images)))]
    n = min(len(src.instances), int(rng.integers(1, max_objects + 1)))
    picked = [int(i) for i in rng.choice(len(src.instances), n, replace=False)]
    if len(images) > 1 and rng.random() < 0.5:
        bg = images[int(rng.integers(len(images)))].image
    else:  # the objects' own surroundings, with the objects themselves painted out
        hole = np.zeros(src.image.shape[:2], np.uint8)
        for i in picked:
            inst = src.instances[i]
            mh, mw = inst.mask.shape
            hole[inst.y0:inst.y0 + mh, inst.x0:inst.x0 + mw] |= inst.mask.astype(np.uint8)
        hole = cv2.dilate(hole, np.ones((7, 7), np.uint8))
        bg = cv2.inpaint(src.image, hole, 5, cv2.INPAINT_TELEA)
    # Background: scaled to cover the frame with room to move, then a camera path (pan, zoom, roll).
    bs = max(h / bg.shape[0], w / bg.shape[1]) * rng.uniform(1.1, 1.5)
    cam_v = rng.normal(0, (0.04 if fast else 0.01) * w, 2)
    zoom_v, roll_v = rng.normal(0, 0.015), rng.normal(0, 1.0)
    origin = np.array([rng.uniform(0, bg.shape[1] * bs - w), rng.uniform(0, bg.shape[0] * bs - h)])
    layers = []  # (patch, alpha, track, label)
    for k, i in enumerate(picked, 1):
        patch, alpha = _paste_object(src, i)
        layers.append((patch, alpha, _object_track(rng, size, alpha.shape, fast), k))
    if rng.random() < p_distractor:
        j = int(rng.integers(len(layers)))
        patch, alpha = layers[j][0][:, ::-1].copy(), layers[j][1][:, ::-1].copy()
        layers.append((patch, alpha, _object_track(rng, size, alpha.shape, fast), 0))
    order = rng.permutation(len(layers))
    fields = [(_smooth_field(rng, *lay[1].shape, lay[2]["elastic"] * max(lay[1].shape)),
               _smooth_field(rng, *lay[1].shape, lay[2]["elastic"] * max(lay[1].shape))) for lay in layers]
    gain = rng.uniform(-0.03, 0.03)
    blur_p = 0.7 if fast else 0.1
    blurred = [rng.random() < blur_p for _ in layers]
    frames = np.empty((length, h, w, 3), np.uint8)
    labels = np.zeros((length, h, w), np.uint8)
    for t in range(length):
        z = bs * (1 + zoom_v * t)
        m = cv2.getRotationMatrix2D((0.0, 0.0), roll_v * t, z)
        m[:, 2] -= origin + cam_v * t
        f = cv2.warpAffine(bg, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        lab = np.zeros((h, w), np.uint8)
        for li in order:
            patch, alpha, tr, label = layers[li]
            f1, f2 = fields[li]
            p, a = (patch, alpha) if tr["elastic"] == 0 else _elastic(patch, alpha, f1, f2,
                                                                      tr["phase"] + tr["omega"] * t)
            ph, pw = a.shape
            c = tr["c"] + tr["v"] * t + 0.5 * tr["acc"] * t * t
            mo = cv2.getRotationMatrix2D((pw / 2, ph / 2), tr["rot"] * t, tr["s"] * (1 + tr["grow"]) ** t)
            mo[:, 2] += c - np.array([pw / 2, ph / 2])
            obj = cv2.warpAffine(p, mo, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
            al = cv2.warpAffine(a, mo, (w, h), flags=cv2.INTER_LINEAR)
            hard = al > 0.5
            if blurred[li] and t:
                v = tr["v"] + tr["acc"] * t
                length_px = float(np.hypot(*v)) * rng.uniform(0.3, 0.8)
                obj = motion_blur(obj * al[..., None], length_px, float(np.arctan2(v[1], v[0])))
                al = motion_blur(al, length_px, float(np.arctan2(v[1], v[0])))
                obj = obj / np.maximum(al, 1e-3)[..., None]
            f = f * (1 - al[..., None]) + obj * al[..., None]
            lab[hard] = label
        frames[t] = np.clip(f * (1 + gain * t), 0, 255).astype(np.uint8)
        labels[t] = lab
    return Clip(frames, _relabel(labels))


def make_clip(seqs: list[Sequence], rng: np.random.Generator, length: int, size: tuple[int, int],
              p_composite: float = 0.5, p_synthetic: float = 0.15, *, images: list[StillImage] | None = None,
              p_static: float = 0.0, p_fast: float = 0.0, p_far_reference: float = 0.0, p_exit: float = 0.0) -> Clip:
    """One training clip: a static-image clip (with probability p_static, when `images` are given),
    a composite, a synthetic video, or a real sequence; a fraction p_fast of them fast (see the module
    docstring), a fraction p_far_reference of the real ones with a far reference frame (`real_clip`), a
    fraction p_exit of the composites' pasted objects leaving or meeting another (`composite_clip`).
    Never empty where propagation starts: every object has at least 64 pixels there (and in the reference)."""
    for _ in range(20):
        # No draw is spent on options that are off, so a recipe without them draws the clips it always did.
        fast = p_fast > 0 and rng.random() < p_fast
        if images and p_static > 0 and rng.random() < p_static:
            clip = static_clip(images, rng, length, size, fast=fast)
        else:
            u = rng.random()
            if u < p_synthetic:
                clip = synthetic_clip(rng, length, size)
            elif u < p_synthetic + p_composite and len(seqs) > 1:
                bg = seqs[int(rng.integers(len(seqs)))]
                donors = [seqs[int(i)] for i in rng.choice(len(seqs), int(rng.integers(1, 3)), replace=False)]
                clip = composite_clip(bg, [d for d in donors if d is not bg], rng, length, size, fast=fast,
                                      p_exit=p_exit)
            else:
                far = p_far_reference > 0 and rng.random() < p_far_reference
                clip = real_clip(seqs[int(rng.integers(len(seqs)))], rng, length, size, fast=fast, far_reference=far)
        if clip.ids and all((clip.labels[t] == i).sum() >= 64 for i in clip.ids for t in {0, clip.start}):
            return clip
    return synthetic_clip(rng, length, size)
