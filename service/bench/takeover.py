"""`agss-vos bench takeover`: how long a worker that takes a job over needs before it publishes the next
frame, for a job killed early and late in a long video, with checkpoints against replaying from frame 0
(checkpoints off), in one run.

For each case: a job runs on one of two workers; once `k` frames are published its worker is killed
with SIGKILL; the other worker takes the job over after the lease. The delay measured is from that
takeover (the job's `claimed_at`) to the publication of the first missing frame.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass

import redis

from ..client import Client
from ..jobs.keys import Keys, frame_id
from ..runtime.redis import EmbeddedRedis
from ..runtime.supervisor import Stack
from ..vos.options import DEFAULT_MODEL


@dataclass
class TakeoverRow:
    mode: str  # "checkpoints" or "replay"
    target: int  # kill once this many frames are published
    killed_at: int  # frames published when the worker was killed
    delay_s: float  # takeover -> next frame published


def _one(redis_url: str, video: str, masks: str, model: str, kill_at: int, checkpoints: bool,
         long_side: int | None) -> TakeoverRow:
    env = {"AGSS_MODEL": model, "AGSS_LEASE_SECONDS": "2", "AGSS_HEARTBEAT_SECONDS": "0.5",
           "AGSS_CHECKPOINT_SECONDS": "5" if checkpoints else "1e9"}
    if long_side:
        env["AGSS_LONG_SIDE"] = str(long_side)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    r = redis.from_url(redis_url)
    with Stack(redis_url, prefix, workers=2, env=env) as stack, Client(stack.url) as c:
        job = c.submit(video, masks)
        if job.frames_total <= kill_at + 1:
            raise ValueError(f"the video has {job.frames_total} frames; it must be longer than {kill_at + 1}")
        while c.status(job.id).frames_done < kill_at:
            time.sleep(0.01)
        holder = r.hget(keys.job(job.id), "worker").decode()
        os.kill(int(holder.rsplit("-", 2)[1]), signal.SIGKILL)
        killed = c.status(job.id).frames_done
        while r.hget(keys.job(job.id), "worker").decode() == holder:
            time.sleep(0.01)
        claimed = float(r.hget(keys.job(job.id), "claimed_at"))
        while True:
            entry = r.xrange(keys.frames(job.id), min=frame_id(killed), max=frame_id(killed), count=1)
            if entry:
                break
            time.sleep(0.005)
        delay = float(entry[0][1][b"t"]) - claimed
        c.cancel(job.id)
    r.close()
    return TakeoverRow("checkpoints" if checkpoints else "replay", kill_at, killed, delay)


def bench_takeover(video: str, masks: str, kill_at: tuple[int, ...] = (10, 200), model: str | None = None,
                   long_side: int | None = None) -> list[TakeoverRow]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, persist=False) as r:
        for k in kill_at:
            for checkpoints in (True, False):
                rows.append(_one(r.url, video, masks, model or DEFAULT_MODEL, k, checkpoints, long_side))
    return rows


def format_rows(rows: list[TakeoverRow]) -> str:
    lines = ["| mode | killed after frames | takeover -> next frame published (s) |", "|---|---:|---:|"]
    lines += [f"| {r.mode} | {r.killed_at} | {r.delay_s:.2f} |" for r in sorted(rows, key=lambda r: (r.mode, r.target))]
    return "\n".join(lines)
