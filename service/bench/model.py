"""`agss-vos bench model`: seconds per frame step, single-shot vs one pass per object, in one run.

Both ways run the same network on the same inputs, interleaved per object count, so that a noisy
shared machine affects both alike. Weights are random: timing does not depend on their values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..vos.network import AGSSVOS, PRESETS, AGSSConfig
from ..vos.tracker import network_size


@dataclass
class BenchRow:
    objects: int
    single_shot_s: float
    per_object_s: float

    @property
    def ratio(self) -> float:
        return self.per_object_s / self.single_shot_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@torch.no_grad()
def bench_model(config: str | AGSSConfig = "resnet50", long_side: int | None = None,
                objects: tuple[int, ...] = (1, 2, 4, 8), repeats: int = 3, device: str = "cpu",
                input_size: tuple[int, int] = (480, 854), seed: int = 0) -> tuple[list[BenchRow], tuple[int, int]]:
    """Returns rows per object count and the network input size (h,w) used (DAVIS 854x480 by default)."""
    cfg = PRESETS[config] if isinstance(config, str) else config
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = AGSSVOS(cfg).to(dev).eval()
    h, w = network_size(*input_size, long_side or cfg.long_side)
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, h, w, generator=g).to(dev)
    rows = []
    for k in objects:
        masks = (torch.rand(k, h, w, generator=g) > 0.7).float().to(dev)
        ref_all = model.encode_reference(image, masks)
        refs_one = [model.encode_reference(image, masks[i:i + 1]) for i in range(k)]  # RGMP: one per object

        def single(masks=masks, ref=ref_all):
            model(image, masks, ref)

        def per_object(masks=masks, refs=refs_one):
            for i, ref in enumerate(refs):
                model(image, masks[i:i + 1], ref)

        single()  # warm-up: allocator, kernels
        per_object()
        rows.append(BenchRow(k, _time(single, repeats, dev), _time(per_object, repeats, dev)))
    return rows, (h, w)


def format_rows(rows: list[BenchRow]) -> str:
    lines = ["| objects | single-shot s/frame | one pass per object s/frame | ratio |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.objects} | {r.single_shot_s:.3f} | {r.per_object_s:.3f} | {r.ratio:.2f}x |")
    return "\n".join(lines)


def plot_rows(rows: list[BenchRow], path: str | Path, title: str) -> None:
    """A line plot of seconds per frame against object count, drawn with OpenCV (no matplotlib)."""
    W, H, m = 720, 440, 70
    img = np.full((H, W, 3), 255, np.uint8)
    xs = [r.objects for r in rows]
    ymax = max(max(r.per_object_s, r.single_shot_s) for r in rows) * 1.1
    xmax = max(xs)

    def pt(x: float, y: float) -> tuple[int, int]:
        return (int(m + (x / xmax) * (W - 2 * m)), int(H - m - (y / ymax) * (H - 2 * m)))

    cv2.line(img, pt(0, 0), pt(xmax, 0), (0, 0, 0), 1)
    cv2.line(img, pt(0, 0), pt(0, ymax), (0, 0, 0), 1)
    for x in xs:
        cv2.putText(img, str(x), (pt(x, 0)[0] - 5, H - m + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for i in range(5):
        y = ymax * i / 4
        cv2.putText(img, f"{y:.2f}", (8, pt(0, y)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    series = [("single-shot (AGSS)", [r.single_shot_s for r in rows], (200, 80, 0)),
              ("one pass per object", [r.per_object_s for r in rows], (0, 0, 200))]
    for n, (label, ys, color) in enumerate(series):
        pts = np.array([pt(x, y) for x, y in zip(xs, ys, strict=True)], np.int32)
        cv2.polylines(img, [pts], False, color, 2)
        for p in pts:
            cv2.circle(img, tuple(int(v) for v in p), 4, color, -1)
        cv2.putText(img, label, (m + 10, m - 30 + 18 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
    cv2.putText(img, title, (m, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    cv2.putText(img, "objects", (W // 2 - 30, H - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "s/frame", (8, m - 45), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
