"""`agss-vos bench memory`: peak memory of the worker and the API over video length, through the service.

One synthetic video (a textured scene panning under the camera, one object) is written at two lengths,
short and long (100 and 10,000 frames by default). Each length goes once through a job (HTTP upload,
frames long-polled and thrown away) and once through a live session (every frame sent over the
WebSocket, policy `all`, with at most WINDOW frames unanswered), each run on a fresh stack so that
every process's peak is its own: the worker's and the API's peak resident memory (VmHWM from /proc)
and Redis's peak, next to each other. Memory flat in video length means the long runs peak where the
short ones do.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import redis

from ..client import Client
from ..client.session import WsSession
from ..runtime.redis import EmbeddedRedis
from ..runtime.supervisor import Stack
from ..vos.options import DEFAULT_MODEL

WINDOW = 32  # frames a live client keeps unanswered


@dataclass
class MemoryRow:
    path: str  # "job" or "session"
    frames: int
    seconds: float
    worker_mb: float
    api_mb: float
    redis_mb: float


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def write_video(path: Path, frames: int, size: tuple[int, int] = (240, 428), fps: float = 25.0) -> Path:
    """An mp4 of a textured scene panning left, a bright disc moving over it; -> path."""
    h, w = size
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 255, (h // 6, 3 * w // 6, 3), dtype=np.uint8), (3 * w, h))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not out.isOpened():
        raise RuntimeError(f"{path}: cannot write an mp4 here")
    for t in range(frames):
        x = (3 * t) % (2 * w)
        frame = np.ascontiguousarray(texture[:, x:x + w])
        cx = int(w / 2 + w / 4 * np.sin(t / 20))
        cv2.circle(frame, (cx, h // 2), h // 6, (255, 255, 255), -1)
        out.write(frame)
    out.release()
    return path


def first_mask(path: Path, size: tuple[int, int] = (240, 428)) -> Path:
    """The disc of frame 0 as a label PNG (id 1)."""
    h, w = size
    labels = np.zeros((h, w), np.uint8)
    cv2.circle(labels, (w // 2, h // 2), h // 6, 1, -1)
    cv2.imwrite(str(path), labels)
    return path


def _jpegs(video: Path):
    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    finally:
        cap.release()


def _job(stack: Stack, video: Path, mask: Path) -> int:
    with Client(stack.url) as c:
        job = c.submit(video, mask)
        n = sum(1 for _ in c.frames(job.id, wait=10))
        if c.status(job.id).status != "succeeded":
            raise RuntimeError(f"job {job.id}: {c.status(job.id)}")
    return n


def _session(stack: Stack, video: Path, mask: Path) -> int:
    from ..media.rle import encode

    labels = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    free = threading.Semaphore(WINDOW)
    with WsSession.create(stack.url, {"policy": "all"}) as s:
        s.send_prompts({"frames": {"0": {"1": encode(labels == 1)}}})

        def send() -> None:
            for data in _jpegs(video):
                free.acquire()
                s.send_frame(data)
            s.end()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answered = 0
        for msg in s.messages():
            if msg["type"] in ("frame", "dropped", "error"):
                answered += 1
                free.release()
                if msg["type"] != "frame":
                    raise RuntimeError(f"session frame {msg['index']}: {msg}")
        sender.join()
    return answered


def _logs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def bench_memory(lengths: tuple[int, ...] = (100, 10_000), model: str | None = None, long_side: int | None = None,
                 paths: tuple[str, ...] = ("job", "session"), log=print) -> list[MemoryRow]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="agss-bench-memory-") as tmp:
        mask = first_mask(Path(tmp) / "mask.png")
        videos = {n: write_video(Path(tmp) / f"v{n}.mp4", n) for n in lengths}
        env = {"AGSS_MODEL": model or DEFAULT_MODEL, **({"AGSS_LONG_SIDE": str(long_side)} if long_side else {}),
               "AGSS_STORAGE": "local", "AGSS_STORAGE_DIR": str(Path(tmp) / "inputs")}
        for path in paths:
            for n in lengths:
                with EmbeddedRedis(Path(tmp) / f"redis-{path}-{n}", persist=False) as r, \
                        Stack(r.url, f"bench-{uuid.uuid4().hex[:8]}:", workers=1, env=env,
                              log_dir=_logs(Path(tmp) / f"logs-{path}-{n}")) as stack:
                    t0 = time.monotonic()
                    got = (_job if path == "job" else _session)(stack, videos[n], mask)
                    seconds = time.monotonic() - t0
                    if got != n:
                        raise RuntimeError(f"{path} of {n} frames: {got} answered")
                    worker, api = stack.workers[0].pid, stack.supervisor.procs("api")[0].pid
                    client = redis.from_url(r.url)
                    redis_mb = client.info("memory")["used_memory_peak"] / 1e6
                    client.close()
                    row = MemoryRow(path, n, seconds, peak_rss_mb(worker), peak_rss_mb(api), redis_mb)
                    log(f"{path} {n} frames: {seconds:.0f} s, worker {row.worker_mb:.0f} MB, api {row.api_mb:.0f} MB, "
                        f"redis {row.redis_mb:.1f} MB")
                    rows.append(row)
    return rows


def format_rows(rows: list[MemoryRow]) -> str:
    lines = ["| path | frames | seconds | worker peak RSS MB | API peak RSS MB | Redis peak MB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.path} | {r.frames} | {r.seconds:.0f} | {r.worker_mb:.0f} | {r.api_mb:.0f} | "
                     f"{r.redis_mb:.1f} |")
    return "\n".join(lines)
