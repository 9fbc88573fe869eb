"""Faults the service survives, with real processes: serve stopped by SIGTERM and by SIGKILL, Redis killed
and restarted from its append-only file mid-job, workers killed at random (the soak), and state that
returns to where it was once jobs expire.

The soak's size comes from AGSS_SOAK_JOBS / AGSS_SOAK_WORKERS (`make soak` runs the long version).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from service.client import Client, ClientError
from service.jobs.keys import Keys, frame_index
from service.runtime.redis import EmbeddedRedis, free_port
from service.runtime.supervisor import Stack

from ..conftest import wait_ready
from .conftest import FIRST_MASK, frames_zip


def _children(pid: int) -> set[int]:
    """Every process descended from `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _why(pids: set[int]) -> str:
    """What each process left running is: its command line and where it waits."""
    out = []
    for p in sorted(pids):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            wchan = Path(f"/proc/{p}/wchan").read_text()
            threads = len(list(Path(f"/proc/{p}/task").iterdir()))
        except OSError:
            continue
        out.append(f"{p}: {cmd} (waits in {wchan}, {threads} threads)")
    return "; ".join(out)


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(p)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_serve_leaves_no_process_behind(tmp_path, sig):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGSS_")}, "AGSS_HTTP_PORT": str(port),
           "AGSS_GRPC_PORT": str(free_port()), "AGSS_MODEL": "flow-only", "AGSS_WORKERS": "2",
           "AGSS_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", {"serve": (proc, log)})
        started = _children(proc.pid)
        assert len(started) >= 3  # two workers and the embedded Redis
        proc.send_signal(sig)
        rc = proc.wait(60)
        deadline = time.monotonic() + 30
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _alive(started)
        assert not left, f"left running: {_why(left)}\nserve's log:\n{log.read_text()[-3000:]}"
        assert rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_redis_killed_mid_job_and_restarted_from_its_append_only_file(tmp_path, prefix):
    """The API answers 503 while Redis is down; workers reconnect; the job completes, every index once."""
    data = tmp_path / "redis"
    r1 = EmbeddedRedis(data, persist=True, fsync="always").start()
    n = 20
    try:
        stack = Stack(r1.url, prefix, workers=1, env={"AGSS_MODEL": "flow-only", "AGSS_LONG_SIDE": "256",
                                                      "AGSS_FRAME_DELAY_SECONDS": "0.2",
                                                      "AGSS_HEARTBEAT_SECONDS": "0.5"},
                      log_dir=tmp_path).start()
        with stack, Client(stack.url) as c:
            job = c.submit(frames_zip(tmp_path / "v.zip", n), FIRST_MASK)
            while c.status(job.id).frames_done < 5:
                time.sleep(0.05)
            r1.proc.kill()  # SIGKILL: no save, no goodbye
            r1.proc.wait()
            killed_at = time.monotonic()
            with pytest.raises(ClientError) as e:
                c.status(job.id)
            assert e.value.status == 503 and e.value.code == "unavailable"
            time.sleep(2)
            r2 = EmbeddedRedis(data, port=r1.port, persist=True, fsync="always").start()
            restarted = time.monotonic()
            try:
                deadline = time.monotonic() + 120
                while c.status(job.id).status != "succeeded":
                    assert time.monotonic() < deadline, c.status(job.id)
                    time.sleep(0.2)
                print(f"\nredis fault: killed after 5 of {n} frames, down {restarted - killed_at:.1f} s (503 "
                      f"meanwhile), job succeeded {time.monotonic() - restarted:.1f} s after the restart")
                frames = list(c.frames(job.id))
                client = redis.from_url(r2.url)
                ids = [frame_index(e[0]) for e in client.xrange(Keys(prefix).frames(job.id))]
            finally:
                stack.stop()
                r2.stop()
        assert [f.index for f in frames] == list(range(n)) and ids == list(range(n)) + [-1]
    finally:
        r1.stop()


def test_state_returns_to_its_level_once_jobs_expire(make_stack, redis_url, prefix, tmp_path):
    stack = make_stack(workers=1, agss_result_ttl_seconds=2, agss_model="flow-only")
    r = redis.from_url(redis_url)
    video = frames_zip(tmp_path / "v.zip", 3)

    def ours() -> list[bytes]:
        return sorted(k for k in r.scan_iter(match=prefix + "*", count=1000) if b":worker:" not in k)

    def settle(c: Client, jobs: list) -> None:
        """Until every job has ended and expired (results live 2 s)."""
        deadline = time.monotonic() + 60
        while any(r.exists(Keys(prefix).job(j.id)) for j in jobs):
            assert time.monotonic() < deadline
            time.sleep(0.2)

    with Client(stack.url) as c:
        settle(c, [c.submit(video, FIRST_MASK, idempotency_key="warm-up")])
        before, memory = ours(), r.info("memory")["used_memory"]
        jobs = [c.submit(video, FIRST_MASK, idempotency_key=f"k{i}") for i in range(12)]
        cancelled = c.submit(video, FIRST_MASK)
        c.cancel(cancelled.id)
        settle(c, [*jobs, cancelled])
        time.sleep(2.5)  # idempotency keys expire with the results
        after = ours()
        stats = {k.decode(): v.decode() for k, v in r.hgetall(Keys(prefix).stats).items()}
    assert after == before, set(after) ^ set(before)
    assert stats["n:succeeded"] == "13" and stats["n:cancelled"] == "1" and stats["input_bytes"] == "0"
    assert r.xlen(Keys(prefix).queue) == 0  # done queue entries are deleted
    used = r.info("memory")["used_memory"]
    print(f"\nbounded state: 14 jobs ended and expired: keys {len(before)} -> {len(after)}, Redis memory "
          f"{memory / 1e6:.2f} -> {used / 1e6:.2f} MB")
    assert used < memory + 256 * 1024
    assert not [d for j in jobs for d in Path(tempfile.gettempdir()).glob(f"agss-job-{j.id}-*")]


def test_soak_random_worker_kills(make_stack, small_model_dir, redis_url, prefix, tmp_path):
    """AGSS_SOAK_JOBS jobs on AGSS_SOAK_WORKERS workers, a random worker SIGKILLed every few seconds (and
    replaced): every job succeeds, every index exactly once, masks equal to the offline run."""
    jobs_n = int(os.environ.get("AGSS_SOAK_JOBS", "4"))
    workers_n = int(os.environ.get("AGSS_SOAK_WORKERS", "3"))
    n = 10
    video = frames_zip(tmp_path / "v.zip", n)
    subprocess.run([sys.executable, "-m", "service.cli", "segment", str(video), "--masks", str(FIRST_MASK), "--out",
                    str(tmp_path / "off"), "--model", str(small_model_dir), "--long-side", "256", "--quiet"],
                   check=True, timeout=300)
    ref = [np.array(Image.open(p)) for p in sorted((tmp_path / "off").glob("*.png"))]
    # Random kills can hit a job's new owner before it publishes anything, several times in a row: more
    # attempts than the default before a job counts as a poison pill.
    stack = make_stack(workers=workers_n, agss_lease_seconds=2, agss_checkpoint_seconds=0.5,
                       agss_frame_delay_seconds=0.1, agss_max_attempts=10)
    rng = random.Random(7)
    done = threading.Event()
    kills = []

    def killer() -> None:
        # The first kill lands mid-job whatever the machine's speed: on the worker of a job that has
        # published 3 of its 10 frames (the 7 left take at least 0.7 s at the frame delay). Then a random
        # worker every 4 s.
        r = redis.from_url(redis_url)
        while not done.is_set() and not kills:
            for j in jobs:
                h = r.hgetall(Keys(prefix).job(j.id))
                if h.get(b"status") == b"running" and int(h.get(b"frames_done", 0)) >= 3 and h.get(b"worker"):
                    pid = int(h[b"worker"].decode().rsplit("-", 2)[1])
                    victim = next((p for p in stack.workers if p.pid == pid and p.poll() is None), None)
                    if victim is not None:
                        victim.kill()
                        kills.append(pid)
                        stack.start_worker()
                    break
            time.sleep(0.01)
        r.close()
        while not done.wait(4):
            alive = [p for p in stack.workers if p.poll() is None]
            if len(alive) > 1:
                victim = rng.choice(alive)
                victim.kill()
                kills.append(victim.pid)
                stack.start_worker()

    t = threading.Thread(target=killer, daemon=True)
    with Client(stack.url) as c:
        jobs = [c.submit(video, FIRST_MASK) for _ in range(jobs_n)]
        t.start()
        try:
            results = {j.id: list(c.frames(j.id, wait=5)) for j in jobs}
        finally:
            done.set()
            t.join()
        statuses = [c.status(j.id).status for j in jobs]
    r = redis.from_url(redis_url)
    assert statuses == ["succeeded"] * jobs_n and kills
    for job_id, frames in results.items():
        assert [f.index for f in frames] == list(range(n))
        assert [frame_index(e[0]) for e in r.xrange(Keys(prefix).frames(job_id))] == list(range(n)) + [-1]
        for f, expected in zip(frames, ref, strict=True):
            assert np.array_equal(f.labels((480, 854)), expected)
    print(f"\nsoak: {jobs_n} jobs, {workers_n} workers, {len(kills)} kills, all succeeded")
    assert httpx.get(stack.url + "/readyz").status_code == 200
