"""`agss-vos bench service`: the whole service (submit to last frame received) against the tracker
alone, on the same video, in one run."""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass

from .client import Client
from .embedded_redis import EmbeddedRedis
from .media.inputs import inspect_inputs
from .pipeline import track
from .procs import Stack
from .vos import Tracker, load_model
from .vos.checkpoint import DEFAULT_MODEL


@dataclass
class ServiceBench:
    frames: int
    tracker_s: float
    service_s: float
    first_frame_s: float

    def table(self) -> str:
        fa, fs = self.frames / self.tracker_s, self.frames / self.service_s
        return "\n".join([
            "| path | frames | seconds | frames/s |", "|---|---:|---:|---:|",
            f"| tracker alone (decode + flow + network) | {self.frames} | {self.tracker_s:.2f} | {fa:.2f} |",
            f"| service: submit to last frame received | {self.frames} | {self.service_s:.2f} | {fs:.2f} |",
            f"\nthroughput ratio service / tracker: {fs / fa:.3f}",
            f"submit to first frame received: {self.first_frame_s:.2f} s",
        ])


def bench_service(video: str, masks: str, model: str | None = None, long_side: int | None = None,
                  flow: str = "dis") -> ServiceBench:
    model = model or DEFAULT_MODEL
    net = load_model(model)
    inputs = inspect_inputs(video, masks)
    tracker = Tracker(net, flow=flow, long_side=long_side)
    t0 = time.perf_counter()
    n = sum(1 for _ in track(inputs, tracker))
    t_tracker = time.perf_counter() - t0
    del net, tracker

    env = {"AGSS_MODEL": model, "AGSS_FLOW": flow, "AGSS_WORKERS": "1"}
    if long_side:
        env["AGSS_LONG_SIDE"] = str(long_side)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, persist=False) as r:
        with Stack(r.url, f"bench-{uuid.uuid4().hex[:8]}:", workers=1, env=env) as stack, Client(stack.url) as c:
            t0 = time.perf_counter()
            job = c.submit(video, masks)
            first = None
            got = 0
            for _ in c.frames(job["id"], wait=30):
                first = first or time.perf_counter() - t0
                got += 1
            t_service = time.perf_counter() - t0
    if got != n:
        raise RuntimeError(f"service returned {got} frames, the tracker {n}")
    return ServiceBench(n, t_tracker, t_service, first or 0.0)
