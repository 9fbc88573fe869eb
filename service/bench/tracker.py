"""`agss-vos bench tracker`: seconds per whole Tracker.step (flow, network, label map at input size),
per inference backend, the backends interleaved frame by frame on the same scene so that machine
noise falls on all of them alike."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..vos.flow import FlowEstimator, make_flow
from ..vos.network import Reference, SegmentationModel
from ..vos.tracker import Tracker

STAGES = ("flow", "network", "rest")


class _TimedModel:
    """Passes every call through to `model`, adding the seconds spent in it to `spent`."""

    def __init__(self, model: SegmentationModel):
        self.model = model
        self.spent = 0.0

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.spent += time.perf_counter() - t0

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        return self._timed(self.model.preprocess, rgb)

    def encode_reference(self, image0: torch.Tensor, masks0: torch.Tensor) -> Reference:
        return self._timed(self.model.encode_reference, image0, masks0)

    def object_probs(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        return self._timed(self.model.object_probs, image, warped_prev, ref)


class _TimedFlow:
    def __init__(self, flow: FlowEstimator):
        self.flow, self.name, self.spent = flow, flow.name, 0.0

    def __call__(self, cur_gray: np.ndarray, prev_gray: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.flow(cur_gray, prev_gray)
        finally:
            self.spent += time.perf_counter() - t0


@dataclass
class TrackerTimes:
    """Medians over the timed steps, in seconds: the whole step and its stages (flow; network: the
    model's preprocess and object step; rest: resizing, warping, normalisation, the label map)."""

    backend: str
    seconds_per_frame: float
    stages: dict[str, float]
    network_h: int
    network_w: int
    label_mismatch: float = 0.0  # fraction of pixels whose label differs from the first backend's
    steps: list[float] = field(default_factory=list, repr=False)

    def __getitem__(self, key: str) -> float:  # the old dict interface: r["seconds_per_frame"]
        if key in ("seconds_per_frame", "network_h", "network_w"):
            return getattr(self, key)
        return self.stages[key]


def synthetic_scene(objects: int, input_size: tuple[int, int] = (480, 854),
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame (H,W,3) uint8 and a label map (H,W) uint8 with `objects` rectangles."""
    rng = np.random.default_rng(seed)
    h, w = input_size
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    labels = np.zeros((h, w), np.uint8)
    for k in range(objects):
        y, x = int(rng.integers(0, h - h // 4)), int(rng.integers(0, w - w // 5))
        labels[y:y + h // 4, x:x + w // 5] = k + 1
    return base, labels


@torch.no_grad()
def bench_backends(models: dict[str, SegmentationModel], objects: int = 3, frames: int = 20,
                   input_size: tuple[int, int] = (480, 854), long_side: int | None = None, flow: str = "dis",
                   seed: int = 0, occlusions: bool | dict[str, bool] = True) -> list[TrackerTimes]:
    """Seconds per Tracker.step for each model (backend name -> model), on a moving synthetic scene
    with `objects` objects, every frame stepped by each tracker in turn. Medians over `frames` steps
    after the first (which encodes the references and, for OpenVINO, compiles). `occlusions`: the
    trackers' setting, for all or by name."""
    base, labels = synthetic_scene(objects, input_size, seed)
    names = list(models)
    timed = {n: _TimedModel(models[n]) for n in names}
    flows = {n: _TimedFlow(make_flow(flow)) for n in names}
    occ = occlusions if isinstance(occlusions, dict) else dict.fromkeys(names, occlusions)
    trackers = {n: Tracker(timed[n], flow=flows[n], long_side=long_side, occlusions=occ[n]) for n in names}
    steps: dict[str, list[float]] = {n: [] for n in names}
    stages: dict[str, dict[str, list[float]]] = {n: {s: [] for s in STAGES} for n in names}
    mismatch: dict[str, list[float]] = {n: [] for n in names}
    for t in range(frames + 1):
        frame = np.roll(base, 3 * t, axis=1)
        out = {}
        # Rotate who goes first so that no backend always runs right after another's cache traffic.
        for n in names[t % len(names):] + names[:t % len(names)]:
            timed[n].spent, flows[n].spent = 0.0, 0.0
            t0 = time.perf_counter()
            out[n] = trackers[n].step(frame, labels if t == 0 else None)
            total = time.perf_counter() - t0
            if t:
                steps[n].append(total)
                stages[n]["flow"].append(flows[n].spent)
                stages[n]["network"].append(timed[n].spent)
                stages[n]["rest"].append(total - flows[n].spent - timed[n].spent)
        if t:
            for n in names:
                mismatch[n].append(float(np.mean(out[n] != out[names[0]])))
    return [TrackerTimes(n, float(np.median(steps[n])), {s: float(np.median(v)) for s, v in stages[n].items()},
                         trackers[n].net_size[0], trackers[n].net_size[1], float(np.max(mismatch[n])), steps[n])
            for n in names]


def bench_tracker(model: SegmentationModel, objects: int = 3, frames: int = 20,
                  input_size: tuple[int, int] = (480, 854), long_side: int | None = None, flow: str = "dis",
                  seed: int = 0) -> dict[str, float]:
    """One model alone: {"seconds_per_frame", "network_h", "network_w", "flow", "network", "rest"}."""
    r = bench_backends({"model": model}, objects, frames, input_size, long_side, flow, seed)[0]
    return {"seconds_per_frame": r.seconds_per_frame, "network_h": r.network_h, "network_w": r.network_w,
            **r.stages}
