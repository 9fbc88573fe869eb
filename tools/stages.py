"""Seconds per whole Tracker.step, split into flow / network / rest, for the checkout on sys.path: the
per-stage breakdown before and after of docs/BENCHMARKS.md ("Where the step goes, before and after").

    python tools/stages.py scene OBJECTS OUT.npz          # the synthetic 854x480 scene (this checkout)
    PYTHONPATH=DIR python tools/stages.py run SCENE.npz BACKEND [FRAMES]

BACKEND `eager-old` runs the plain model (a checkout from before service/vos/backends.py existed, e.g.
`git worktree add /tmp/old 14aca05`, run with `cd /tmp/old && PYTHONPATH=/tmp/old`); otherwise the
model wrapped for that backend. Medians of FRAMES steps (default 20) after the first, 2 threads.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch


def scene(objects: int, out: str) -> None:
    from service.bench.tracker import synthetic_scene

    base, labels = synthetic_scene(objects, (480, 854), 0)
    np.savez(out, base=base, labels=labels)


def run(path: str, backend: str, frames: int) -> None:
    from service.vos.checkpoint import load_model
    from service.vos.flow import make_flow
    from service.vos.tracker import Tracker

    torch.set_num_threads(2)
    d = np.load(path)
    base, labels = d["base"], d["labels"]
    model = load_model("agss-lite")
    if backend != "eager-old":
        from service.vos.backends import wrap

        model = wrap(model, backend)
    spent = {"flow": 0.0, "network": 0.0}

    def timed(stage, fn):
        def call(*a):
            t0 = time.perf_counter()
            try:
                return fn(*a)
            finally:
                spent[stage] += time.perf_counter() - t0
        return call

    class Timed:  # the model's per-frame calls, timed; everything else passes through
        def __init__(self, m):
            self.m = m
            self.preprocess = timed("network", m.preprocess)
            self.encode_reference = timed("network", m.encode_reference)
            self.object_probs = timed("network", m.object_probs)

        def __getattr__(self, k):
            return getattr(self.m, k)

    flow = make_flow("dis")

    class Flow:
        name = flow.name
        __call__ = staticmethod(timed("flow", flow))

    tracker = Tracker(Timed(model), flow=Flow())
    rows = []
    for t in range(frames + 1):
        spent.update(flow=0.0, network=0.0)
        t0 = time.perf_counter()
        with torch.no_grad():
            tracker.step(np.roll(base, 3 * t, axis=1), labels if t == 0 else None)
        total = time.perf_counter() - t0
        if t:
            rows.append((total, spent["flow"], spent["network"], total - spent["flow"] - spent["network"]))
    m = np.median(np.array(rows), axis=0)
    print(f"{backend}: step {m[0]:.3f} flow {m[1]:.3f} network {m[2]:.3f} rest {m[3]:.3f}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "scene":
        scene(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 20)
    else:
        print(__doc__)
        sys.exit(2)
