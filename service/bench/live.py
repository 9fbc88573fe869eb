"""`agss-vos bench live`: frames sent at fixed rates to a live session over the WebSocket and over gRPC;
the delay from a frame being sent to its masks arriving (median, 99th percentile) next to the tracker's
own step time in the same run, the delay the service adds (the one minus the other), and the fraction
of frames dropped at a rate below and a rate above what the worker sustains.

The tracker alone is timed first, in this process, on the same frames; the rates default to half and
twice the frames per second it sustains. Sessions use policy `latest`, so frames sent too fast are
dropped (and reported), not queued.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

import cv2
import numpy as np

from ..client.session import GrpcSession, LiveSession, WsSession
from ..config import Settings
from ..media.inputs import inspect_inputs
from ..runtime.redis import EmbeddedRedis
from ..runtime.supervisor import Stack
from ..tracking.pipeline import resolve
from ..vos.checkpoint import load_model
from ..vos.options import DEFAULT_MODEL
from ..vos.tracker import Tracker


@dataclass
class LiveRun:
    transport: str
    fps: float
    sent: int
    computed: int
    dropped: int
    delays_ms: list[float]  # sent -> masks received, computed frames
    steps_ms: list[float]  # the worker's tracker step of the same frames
    added_ms: list[float]  # delay minus step

    def row(self) -> str:
        def q(v: list[float], p: float) -> str:
            return f"{np.percentile(v, p):.1f}" if v else "-"

        cells = [self.transport, f"{self.fps:.1f}", str(self.sent), f"{self.dropped / self.sent:.2f}",
                 q(self.delays_ms, 50), q(self.delays_ms, 99), q(self.steps_ms, 50), q(self.added_ms, 50),
                 q(self.added_ms, 99)]
        return "| " + " | ".join(cells) + " |"


@dataclass
class LiveBench:
    tracker_step_ms: float  # median, in-process, same frames
    runs: list[LiveRun]

    def table(self) -> str:
        return "\n".join([
            f"tracker alone (same frames, this machine): median step {self.tracker_step_ms:.1f} ms, "
            f"{1000 / self.tracker_step_ms:.2f} frames/s",
            "| transport | sent fps | frames | dropped | delay median ms | delay p99 ms | worker step median ms "
            "| added median ms | added p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(r.row() for r in self.runs),
            "\nadded = delay (client: sent -> masks received) - the worker's tracker step for that frame",
        ])


def _jpegs(video: str, masks: str, limit: int | None) -> tuple[list[bytes], list[np.ndarray], dict]:
    inputs = inspect_inputs(video, masks)
    rgbs = [f.rgb for f, _ in zip(inputs.frames, range(limit or 10**9), strict=False)]
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
             for x in rgbs]
    doc = {"frames": {str(f): {str(i): p.to_json() for i, p in inputs.prompts.frame_prompts(k).items()}
                      for f, k in inputs.schedule.items() if f < len(rgbs)}}
    return jpegs, rgbs, doc


def _one(session: LiveSession, transport: str, jpegs: list[bytes], doc: dict, fps: float) -> LiveRun:
    times: list[float] = []

    def send() -> None:
        session.send_prompts(doc)
        start = time.monotonic()
        for n, data in enumerate(jpegs):
            time.sleep(max(0.0, start + n / fps - time.monotonic()))
            times.append(time.time())
            session.send_frame(data)
        session.end()

    t = threading.Thread(target=send, daemon=True)
    t.start()
    delays, steps, dropped, computed = [], [], 0, 0
    for msg in session.messages():
        now = time.time()
        if msg["type"] == "dropped":
            dropped += 1
        elif msg["type"] == "frame":
            computed += 1
            delays.append((now - times[msg["index"]]) * 1000)
            steps.append(msg["timings"]["step_s"] * 1000)
    t.join()
    session.close()
    return LiveRun(transport, fps, len(jpegs), computed, dropped, delays, steps,
                   [d - s for d, s in zip(delays, steps, strict=True)])


def bench_live(video: str, masks: str, model: str | None = None, long_side: int | None = None, flow: str = "dis",
               rates: list[float] | None = None, frames: int | None = None,
               transports: tuple[str, ...] = ("ws", "grpc")) -> LiveBench:
    model = model or DEFAULT_MODEL
    jpegs, _, doc = _jpegs(video, masks, frames)
    # The tracker alone, on the frames as the worker decodes them.
    decoded_dir = tempfile.TemporaryDirectory()
    for i, data in enumerate(jpegs):
        with open(f"{decoded_dir.name}/{i:05d}.jpg", "wb") as f:
            f.write(data)
    # The tracker alone runs on the backend the workers use (AGSS_BACKEND).
    tracker = Tracker(load_model(model, backend=Settings().backend), flow=flow, long_side=long_side)
    inputs = inspect_inputs(decoded_dir.name, masks)
    steps = []
    for frame in inputs.frames:
        key = inputs.schedule.get(frame.index)
        given = resolve(inputs.prompts.frame_prompts(key), frame.rgb) if key is not None else None
        t0 = time.perf_counter()
        tracker.step(frame.rgb, given)
        if frame.index:
            steps.append(time.perf_counter() - t0)
    decoded_dir.cleanup()
    step_ms = float(np.median(steps)) * 1000
    capacity = 1000 / step_ms
    rates = rates or [round(capacity / 2, 2), round(capacity * 2, 2)]
    env = {"AGSS_MODEL": model, "AGSS_FLOW": flow, **({"AGSS_LONG_SIDE": str(long_side)} if long_side else {})}
    runs = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, persist=False) as r, \
            Stack(r.url, f"bench-{uuid.uuid4().hex[:8]}:", workers=1, env=env, grpc="grpc" in transports) as stack:
        for fps in rates:
            for transport in transports:
                options = {"policy": "latest"}
                session = (WsSession.create(stack.url, options) if transport == "ws" else
                           GrpcSession(stack.grpc_target, options))
                runs.append(_one(session, transport, jpegs, doc, fps))
    return LiveBench(step_ms, runs)
