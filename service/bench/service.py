"""`agss-vos bench service`: the whole service (submit to last frame received) against the tracker
alone, on the same video, in one run."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..client import Client, GrpcClient
from ..media.inputs import inspect_inputs
from ..runtime.redis import EmbeddedRedis
from ..runtime.supervisor import Stack
from ..tracking.pipeline import track
from ..vos.checkpoint import load_model
from ..vos.options import DEFAULT_MODEL
from ..vos.tracker import Tracker


@dataclass
class GrpcBench:
    clients: int
    wall_s: float  # submit to last frame received by the slowest client
    job_s: float  # the job's own run time (started_at to finished_at)
    delays_s: list[float]  # publish -> arrival, every frame at every client


@dataclass
class ServiceBench:
    frames: int
    tracker_s: list[float]  # one per round
    service_s: list[float]
    first_frame_s: list[float]
    grpc: list[GrpcBench] = field(default_factory=list)

    def grpc_table(self) -> str:
        if not self.grpc:
            return ""
        rows = ["| gRPC streaming clients | frames/s (submit to last frame) | job run time s | delay median ms "
                "| delay p99 ms |", "|---:|---:|---:|---:|---:|"]
        for g in self.grpc:
            d = np.array(g.delays_s) * 1000
            rows.append(f"| {g.clients} | {self.frames / g.wall_s:.2f} | {g.job_s:.2f} | {np.median(d):.1f} "
                        f"| {np.percentile(d, 99):.1f} |")
        one, many = self.grpc[0], self.grpc[-1]
        rows.append(f"\njob run time with {many.clients} clients / with {one.clients}: {many.job_s / one.job_s:.3f}")
        return "\n".join(rows)

    def table(self) -> str:
        ta, ts = min(self.tracker_s), min(self.service_s)
        fa, fs = self.frames / ta, self.frames / ts
        return "\n".join([
            f"best of {len(self.tracker_s)} rounds each; seconds per round: tracker "
            f"{', '.join(f'{a:.2f}' for a in self.tracker_s)}; service {', '.join(f'{b:.2f}' for b in self.service_s)}",
            "| path | frames | seconds | frames/s |", "|---|---:|---:|---:|",
            f"| tracker alone (decode + flow + network) | {self.frames} | {ta:.2f} | {fa:.2f} |",
            f"| service: submit to last frame received | {self.frames} | {ts:.2f} | {fs:.2f} |",
            f"\nthroughput ratio service / tracker: {fs / fa:.3f}",
            f"submit to first frame received: median {sorted(self.first_frame_s)[len(self.first_frame_s) // 2]:.2f} s",
            "", self.grpc_table(),
        ])


def _grpc_run(stack: Stack, video: str, masks: str, clients: int) -> GrpcBench:
    """One job, `clients` concurrent StreamFrames readers from the moment it is created."""
    from datetime import datetime

    delays: list[float] = []
    done_at: list[float] = []
    lock = threading.Lock()
    with GrpcClient(stack.grpc_target) as c:
        t0 = time.perf_counter()
        job = c.submit(video, masks)

        def read() -> None:
            with GrpcClient(stack.grpc_target) as own:
                mine = [time.time() - f.published_at for f in own.frames(job.id)]
            with lock:
                delays.extend(mine)
                done_at.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=read) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        j = c.status(job.id)

    def ts(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    return GrpcBench(clients, max(done_at), ts(j.finished_at) - ts(j.started_at), delays)


def bench_service(video: str, masks: str, model: str | None = None, long_side: int | None = None,
                  flow: str = "dis", rounds: int = 3, grpc_clients: int = 50) -> ServiceBench:
    """The tracker alone runs with no service process alive (before the stack starts and after it
    stops: idle workers still spin their thread pools for a while after each job, which slowed an
    in-process baseline measured beside them by a third); the service rounds run in between."""
    model = model or DEFAULT_MODEL
    net = load_model(model)
    res = ServiceBench(0, [], [], [])

    def tracker_round() -> None:
        tracker = Tracker(net, flow=flow, long_side=long_side)
        t0 = time.perf_counter()
        res.frames = sum(1 for _ in track(inspect_inputs(video, masks), tracker))
        res.tracker_s.append(time.perf_counter() - t0)

    before = (rounds + 1) // 2
    for _ in range(before):
        tracker_round()
    env = {"AGSS_MODEL": model, "AGSS_FLOW": flow, "AGSS_WORKERS": "1"}
    if long_side:
        env["AGSS_LONG_SIDE"] = str(long_side)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, persist=False) as r:
        with Stack(r.url, f"bench-{uuid.uuid4().hex[:8]}:", workers=1, env=env, grpc=grpc_clients > 0) as stack, \
                Client(stack.url) as c:
            for _ in range(rounds):
                t0 = time.perf_counter()
                job = c.submit(video, masks)
                first = None
                got = 0
                for _ in c.frames(job.id, wait=30):
                    first = first or time.perf_counter() - t0
                    got += 1
                res.service_s.append(time.perf_counter() - t0)
                res.first_frame_s.append(first or 0.0)
                if got != res.frames:
                    raise RuntimeError(f"service returned {got} frames, the tracker {res.frames}")
            if grpc_clients > 0:
                res.grpc = [_grpc_run(stack, video, masks, 1), _grpc_run(stack, video, masks, grpc_clients)]
    for _ in range(rounds - before):
        tracker_round()
    return res
