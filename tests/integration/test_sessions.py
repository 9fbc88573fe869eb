"""Live sessions over the WebSocket and gRPC, with real API, gRPC and worker processes and a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from service.client import Client
from service.client.session import GrpcSession, WsSession
from service.jobs.keys import Keys
from service.media.masks import read_label_png
from service.media.rle import encode, objects_to_labels

from ..conftest import REAL, require
from .conftest import FIRST_MASK


def _frames(n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted(require(REAL / "bmx-trees" / "JPEGImages").iterdir())[:n]]


def _first_prompt() -> dict:
    gt, _ = read_label_png(FIRST_MASK.read_bytes())
    return {"frames": {"next": {"1": encode(gt == 1)}}}


def _open(api: str, stack, options: dict):
    return WsSession.create(stack.url, options) if api == "ws" else GrpcSession(stack.grpc_target, options)


def _stream(session, frames: list[bytes], fps: float, then_end: bool = True, extra=None) -> threading.Thread:
    """Send frames at a fixed rate from another thread (and `extra(i)` before frame i)."""

    def run() -> None:
        for i, f in enumerate(frames):
            if extra:
                extra(i)
            session.send_frame(f)
            time.sleep(1 / fps)
        if then_end:
            session.end()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _collect(session) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in session.messages():
        out.setdefault(m["type"], []).append(m)
    return out


@pytest.mark.parametrize("api", ["ws", "grpc"])
def test_every_frame_at_10_fps_equals_the_offline_run(make_stack, small_model_dir, tmp_path, api):
    n = 8
    frames = _frames(n)
    seq = tmp_path / "seq"
    seq.mkdir()
    for i, f in enumerate(frames):
        (seq / f"{i:05d}.jpg").write_bytes(f)
    subprocess.run([sys.executable, "-m", "service.cli", "segment", str(seq), "--masks", str(FIRST_MASK), "--out",
                    str(tmp_path / "off"), "--model", str(small_model_dir), "--long-side", "256", "--quiet"],
                   check=True, timeout=300)
    offline = [np.array(Image.open(p)) for p in sorted((tmp_path / "off").glob("*.png"))]
    stack = make_stack(workers=1, grpc=api == "grpc")
    with _open(api, stack, {"policy": "all"}) as s:
        s.send_prompts(_first_prompt())
        _stream(s, frames, fps=10)
        got = _collect(s)
    assert [m["index"] for m in got["ack"]] == list(range(n))
    assert [m["index"] for m in got["frame"]] == list(range(n)) and "dropped" not in got and "error" not in got
    for m, ref in zip(got["frame"], offline, strict=True):
        assert np.array_equal(objects_to_labels(m["objects"], (480, 854)), ref)
        t = m["timings"]
        assert t["received"] <= t["started"] <= t["published"] and t["step_s"] > 0
    assert got["end"][0]["status"] == "succeeded" and got["end"][0]["ended_by"] == "client"


@pytest.mark.parametrize("api", ["ws", "grpc"])
def test_latest_serves_the_newest_frames_and_reports_every_drop(make_stack, tmp_path, api):
    n = 24
    # A slow worker (0.4 s a frame) fed at 20 frames per second: most frames must be dropped.
    stack = make_stack(workers=1, grpc=api == "grpc", agss_frame_delay_seconds=0.4, agss_model="flow-only")
    frames = _frames(n)
    with _open(api, stack, {"policy": "latest"}) as s:
        s.send_prompts(_first_prompt())
        _stream(s, frames, fps=20)
        got = _collect(s)
    computed = [m["index"] for m in got["frame"]]
    dropped = [m["index"] for m in got.get("dropped", [])]
    assert sorted(computed + dropped) == list(range(n))  # every index answered, exactly once
    assert len(dropped) >= n // 3 and computed[-1] == n - 1  # the newest frame was served
    with Client(stack.url) as c:
        info = c.session(s.id)
    assert info["frames_dropped"] == len(dropped) and info["frames_done"] == n


def test_corrupt_and_refused_frames_and_bad_prompts_do_not_end_the_session(make_stack, tmp_path):
    stack = make_stack(workers=1, agss_model="flow-only")
    frames = _frames(3)
    with WsSession.create(stack.url, {"policy": "all"}) as s:
        s.send_prompts(_first_prompt())
        s.send_frame(frames[0])
        s.send_frame(b"\xff\xd8\xff not really a jpeg")
        s.send_frame(b"GIF89a")  # not JPEG or PNG: refused at once, no index
        s.send_prompts({"frames": {"next": {"1": {"colour": "red"}}}})
        s.send_frame(frames[1])
        s.end()
        got = _collect(s)
    errors = {m["index"]: m for m in got["error"]}
    assert errors[1]["code"] == "bad_input" and "cannot decode" in errors[1]["message"]
    assert errors[None]["code"] in ("unsupported_format", "bad_input")
    assert sum(1 for m in got["error"] if m["index"] is None) == 2  # the GIF, the prompt
    assert [m["index"] for m in got["frame"]] == [0, 2]


def test_prompts_mid_stream_take_effect_on_the_next_frame(make_stack, tmp_path):
    """flow-only, flow none: the masks stay where they are given, so their effect shows exactly."""
    stack = make_stack(workers=1, agss_model="flow-only", agss_flow="none")
    frames = _frames(6)
    box = [20, 20, 220, 170]
    fix = np.zeros((480, 854), bool)
    fix[300:420, 600:800] = True
    with WsSession.create(stack.url, {"policy": "all"}) as s:
        s.send_prompts(_first_prompt())
        for i in range(3):
            s.send_frame(frames[i])
        messages = s.messages()
        seen = next(m for m in messages if m["type"] == "frame" and m["index"] == 2)
        s.send_prompts({"frames": {"next": {"5": {"box": box}, "1": encode(fix)}}})
        for f in frames[3:]:
            s.send_frame(f)
        s.end()
        rest = [m for m in messages if m["type"] == "frame"]
    assert seen and [m["index"] for m in rest] == [3, 4, 5]
    third = objects_to_labels(rest[0]["objects"], (480, 854))
    assert np.array_equal(third == 1, fix)  # the correction, on the next frame
    assert (third == 5).sum() > 1000 and not (third == 5)[:, 230:].any()  # the box's object, inside its box
    assert {"type": "started", "id": 5} in rest[0]["events"] and {"type": "corrected", "id": 1} in rest[0]["events"]
    assert [o["id"] for o in rest[-1]["objects"]] == [1, 5]


def test_a_killed_worker_is_replaced_and_no_index_is_answered_twice(make_stack, redis_url, prefix, tmp_path):
    n = 30
    stack = make_stack(workers=2, agss_lease_seconds=2, agss_checkpoint_seconds=0.3, agss_model="flow-only")
    frames = _frames(n)
    with WsSession.create(stack.url, {"policy": "all", "max_pending": 64}) as s:
        s.send_prompts(_first_prompt())
        r = redis.from_url(redis_url)

        def kill_at(i: int) -> None:
            if i == 12:
                holder = r.hget(Keys(prefix).job(s.id), "worker").decode()
                os.kill(int(holder.rsplit("-", 2)[1]), signal.SIGKILL)

        _stream(s, frames, fps=8, extra=kill_at)
        got = _collect(s)
    answered = [m["index"] for m in got["frame"]] + [m["index"] for m in got.get("dropped", [])]
    assert sorted(answered) == list(range(n)) and len(set(answered)) == n  # the connection stayed open
    assert got["end"][0]["status"] == "succeeded"
    resumed = [ln for p in (tmp_path / "logs0").glob("worker*.log") for ln in p.read_text().splitlines()
               if "resumed from a checkpoint" in ln]
    assert len(resumed) == 1


def test_two_api_processes_share_the_session(make_stack, redis_url, prefix, tmp_path):
    stack = make_stack(workers=1, agss_model="flow-only")
    other = stack.start_api_on_another_port()
    with Client(stack.url) as c:
        info = c.create_session({"policy": "all"})
    with WsSession(other, info["id"]) as s:  # created through one API, served through the other
        s.send_prompts(_first_prompt())
        _stream(s, _frames(3), fps=10)
        got = _collect(s)
    assert [m["index"] for m in got["frame"]] == [0, 1, 2]


def test_idle_timeout_delete_and_frames_stay_readable(make_stack, tmp_path):
    stack = make_stack(workers=1, agss_model="flow-only")
    with Client(stack.url) as c:
        idle = c.create_session({"idle_timeout_seconds": 1})
        with WsSession(stack.url, idle["id"]) as s:
            s.send_prompts(_first_prompt())
            s.send_frame(_frames(1)[0])
            got = _collect(s)  # no end sent: the session ends by itself
        assert [m["index"] for m in got["frame"]] == [0]
        assert got["end"][0]["ended_by"] == "idle" and c.session(idle["id"])["status"] == "succeeded"
        page = httpx.get(f"{stack.url}/v1/sessions/{idle['id']}/frames").json()
        assert [f["index"] for f in page["frames"]] == [0] and page["frames"][0]["timings"]["step_s"] > 0
        gone = c.create_session({})
        assert c.delete_session(gone["id"])["status"] == "cancelled"
        r = httpx.post(f"{stack.url}/v1/sessions/{gone['id']}/frames", content=_frames(1)[0])
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        assert httpx.get(f"{stack.url}/v1/sessions/nope").status_code == 404
        r = httpx.post(f"{stack.url}/v1/sessions", json={"policy": "sometimes"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "malformed_request"


def test_the_live_command_streams_a_folder_and_writes_every_answer(make_stack, tmp_path):
    stack = make_stack(workers=1, grpc=True, agss_model="flow-only")
    seq = require(REAL / "bmx-trees")
    for where in (["--server", stack.url], ["--grpc", stack.grpc_target]):
        out = tmp_path / where[0].strip("-")
        p = subprocess.run([sys.executable, "-m", "service.cli", "live", str(seq / "JPEGImages"), "--masks",
                            str(FIRST_MASK), *where, "--fps", "8", "--max-frames", "5", "--policy", "all", "--out",
                            str(out), "--overlay", str(tmp_path / f"{out.name}.mp4"), "--quiet"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "5 frames answered, 0 dropped, 0 errors" in p.stderr
        assert sorted(f.name for f in out.iterdir()) == [f"{i:05d}.png" for i in range(5)]
        first = np.array(Image.open(out / "00000.png"))
        gt, _ = read_label_png(FIRST_MASK.read_bytes())
        assert np.array_equal(first, gt)
    bad = subprocess.run([sys.executable, "-m", "service.cli", "live", str(seq / "JPEGImages"), "--masks",
                          str(tmp_path / "missing.png"), "--server", stack.url], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
