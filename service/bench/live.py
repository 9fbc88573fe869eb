"""`agss-vos bench live`: frames sent at fixed rates to a live session over the WebSocket and over gRPC;
the delay from a frame being sent to its masks arriving (median, 99th percentile) next to the tracker's
own step time in the same run, the delay the service adds (the one minus the other), and the fraction
of frames dropped at a rate below and a rate above what the worker sustains.

The tracker alone is timed first, in this process, on the same frames; the rates default to half and
twice the frames per second it sustains. A short session warms the worker up first, uncounted.
Sessions use policy `latest`, so frames sent too fast are dropped (and reported), not queued.

`bench_failover` (`--failover`) kills the session's worker a third of the way in, with a second worker
standing by, and reports the delay before, during and after the takeover.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

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

WARMUP = 8  # frames of the uncounted first session


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
    # delay minus step minus the time the frame waited while the worker was still computing an earlier one
    # (the tracker's time, not the service's: it appears when a step takes longer than the frame interval)
    overhead_ms: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # of the computed frames, as delays_ms
    dropped_indices: list[int] = field(default_factory=list)

    def row(self) -> str:
        def q(v: list[float], p: float) -> str:
            return f"{np.percentile(v, p):.1f}" if v else "-"

        cells = [self.transport, f"{self.fps:.1f}", str(self.sent), f"{self.dropped / self.sent:.2f}",
                 q(self.delays_ms, 50), q(self.delays_ms, 99), q(self.steps_ms, 50), q(self.added_ms, 50),
                 q(self.added_ms, 99), q(self.overhead_ms, 50), q(self.overhead_ms, 99)]
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
            "| added median ms | added p99 ms | service median ms | service p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(r.row() for r in self.runs),
            "\nadded = delay (client: sent -> masks received) - the worker's tracker step for that frame;"
            "\nservice = added - the time the frame waited while the worker was still computing an earlier frame",
        ])


def _jpegs(video: str, masks: str, limit: int | None) -> tuple[list[bytes], list[np.ndarray], dict]:
    """The video's frames as JPEGs (played forward, back, forward... up to `limit` frames when it is shorter)."""
    inputs = inspect_inputs(video, masks)
    rgbs = [f.rgb for f, _ in zip(inputs.frames, range(limit or 10**9), strict=False)]
    if limit and len(rgbs) > 1:
        cycle = rgbs + rgbs[-2:0:-1]  # no frame twice in a row: the motion stays the video's
        rgbs = [cycle[i % len(cycle)] for i in range(limit)]
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
             for x in rgbs]
    doc = {"frames": {str(f): {str(i): p.to_json() for i, p in inputs.prompts.frame_prompts(k).items()}
                      for f, k in inputs.schedule.items() if f < len(rgbs)}}
    return jpegs, rgbs, doc


def _one(session: LiveSession, transport: str, jpegs: list[bytes], doc: dict, fps: float,
         before_frame=None) -> LiveRun:
    """`before_frame(n)`, if given, is called just before frame n is sent."""
    times: list[float] = []

    def send() -> None:
        session.send_prompts(doc)
        start = time.monotonic()
        for n, data in enumerate(jpegs):
            time.sleep(max(0.0, start + n / fps - time.monotonic()))
            if before_frame:
                before_frame(n)
            times.append(time.time())
            session.send_frame(data)
        session.end()

    t = threading.Thread(target=send, daemon=True)
    t.start()
    delays, steps, busy, dropped, computed, indices, dropped_at = [], [], [], 0, 0, [], []
    free_at = 0.0  # when the worker published the frame before (its clock: this machine's)
    for msg in session.messages():
        now = time.time()
        if msg["type"] == "dropped":
            dropped += 1
            dropped_at.append(msg["index"])
        elif msg["type"] == "frame":
            computed += 1
            indices.append(msg["index"])
            timings = msg["timings"]
            delays.append((now - times[msg["index"]]) * 1000)
            steps.append(timings["step_s"] * 1000)
            busy.append(max(0.0, min(timings["started"], free_at) - timings["received"]) * 1000)
            free_at = timings["published"]
    t.join()
    session.close()
    added = [d - s for d, s in zip(delays, steps, strict=True)]
    return LiveRun(transport, fps, len(jpegs), computed, dropped, delays, steps, added,
                   [a - b for a, b in zip(added, busy, strict=True)], indices, dropped_at)


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
        # The first session of a worker pays for one-off work (the compiled runtime builds its graphs for
        # the video's size); a short one, not counted, so that the runs measure the steady state.
        _one(WsSession.create(stack.url, {"policy": "all"}), "ws", jpegs[:WARMUP], doc, capacity / 2)
        for fps in rates:
            for transport in transports:
                options = {"policy": "latest"}
                session = (WsSession.create(stack.url, options) if transport == "ws" else
                           GrpcSession(stack.grpc_target, options))
                runs.append(_one(session, transport, jpegs, doc, fps))
    return LiveBench(step_ms, runs)


@dataclass
class FailoverRun:
    fps: float
    kill_at: int  # the frame sent just after the worker was killed
    lease_s: float
    frames: int
    answered_once: bool  # every index answered exactly once (frame or dropped)
    before_ms: float  # median delay of the frames before the kill
    worst_ms: float  # the longest delay (a frame that waited for the takeover)
    recovered_after: int  # frames after the kill until the delay is back under twice the median before
    after_ms: float  # median delay of the frames from then on

    def table(self) -> str:
        return "\n".join([
            f"failover: WebSocket, policy all, {self.fps:.1f} frames/s, the session's worker SIGKILLed before frame "
            f"{self.kill_at}, lease {self.lease_s:g} s, checkpoints every 1 s",
            "| frames | every index once | delay before, median ms | worst delay ms | frames until normal | "
            "delay after, median ms |", "|---:|---|---:|---:|---:|---:|",
            f"| {self.frames} | {'yes' if self.answered_once else 'NO'} | {self.before_ms:.1f} | {self.worst_ms:.1f} "
            f"| {self.recovered_after} | {self.after_ms:.1f} |"])


def bench_failover(video: str, masks: str, model: str | None = None, long_side: int | None = None,
                   flow: str = "dis", fps: float = 5.0, frames: int = 150, lease_s: float = 2.0) -> FailoverRun:
    """A live session on one of two workers; its worker is SIGKILLed a third of the way in; the delay before,
    during and after the takeover, and whether every index was answered exactly once."""
    import os
    import signal

    import redis as redis_lib

    from ..jobs.keys import Keys

    jpegs, _, doc = _jpegs(video, masks, frames)
    kill_at = len(jpegs) // 3
    env = {"AGSS_MODEL": model or DEFAULT_MODEL, "AGSS_FLOW": flow, "AGSS_LEASE_SECONDS": str(lease_s),
           "AGSS_HEARTBEAT_SECONDS": "0.5", "AGSS_CHECKPOINT_SECONDS": "1",
           **({"AGSS_LONG_SIDE": str(long_side)} if long_side else {})}
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, persist=False) as r, \
            Stack(r.url, prefix, workers=2, env=env) as stack:
        _one(WsSession.create(stack.url, {"policy": "all"}), "ws", jpegs[:WARMUP], doc, fps)  # both warm
        _one(WsSession.create(stack.url, {"policy": "all"}), "ws", jpegs[:WARMUP], doc, fps)
        client = redis_lib.from_url(r.url)
        session = WsSession.create(stack.url, {"policy": "all", "max_pending": len(jpegs)})

        def kill(n: int) -> None:
            if n == kill_at:
                holder = client.hget(Keys(prefix).job(session.id), "worker").decode()
                os.kill(int(holder.rsplit("-", 2)[1]), signal.SIGKILL)

        run = _one(session, "ws", jpegs, doc, fps, before_frame=kill)
        client.close()
    delays = dict(zip(run.indices, run.delays_ms, strict=True))
    before = [delays[i] for i in sorted(delays) if i < kill_at]
    base = float(np.median(before))
    after_kill = [i for i in sorted(delays) if i >= kill_at]
    # back to normal: from the first frame after which no delay is over twice the median before the kill
    normal = next((k for k in range(len(after_kill)) if max(delays[j] for j in after_kill[k:]) < 2 * base),
                  len(after_kill))
    rest = [delays[i] for i in after_kill[normal:]]
    answered = sorted(run.indices + run.dropped_indices)
    return FailoverRun(fps, kill_at, lease_s, len(jpegs), answered == list(range(len(jpegs))), base,
                       max(run.delays_ms), normal, float(np.median(rest)) if rest else float("nan"))
