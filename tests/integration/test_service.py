"""The service over HTTP, with real Redis, uvicorn and worker processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from service.client import Client, ClientError, JobInfo
from service.jobs.keys import Keys, frame_index
from service.media.rle import decode, objects_to_labels

from .conftest import FIRST_MASK, frames_zip


def offline(video, model, long_side: int, out) -> list[np.ndarray]:
    """`agss-vos segment` on the same input: the reference every served result must equal."""
    subprocess.run([sys.executable, "-m", "service.cli", "segment", str(video), "--masks", str(FIRST_MASK),
                    "--out", str(out), "--model", str(model), "--long-side", str(long_side), "--quiet"],
                   check=True, timeout=300)
    return [np.array(Image.open(p)) for p in sorted(out.glob("*.png"))]


def wait_status(c: Client, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> JobInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.status(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} stayed {job.status}")


def test_http_result_equals_offline_segment(make_stack, small_model_dir, tmp_path):
    video = frames_zip(tmp_path / "v.zip", 6)
    ref = offline(video, small_model_dir, 256, tmp_path / "offline")
    stack = make_stack(workers=1)
    with Client(stack.url) as c:
        job = c.submit(video, FIRST_MASK)
        assert job.status == "queued" and job.frames_total == 6 and job.objects == [1]
        frames = list(c.frames(job.id))
        assert [f.index for f in frames] == list(range(6))
        for f, expected in zip(frames, ref, strict=True):
            assert np.array_equal(objects_to_labels(f.objects, (480, 854)), expected)
            o = f.objects[0]
            m = decode(o["rle"])
            assert o["area"] == int(m.sum())
            if o["area"]:
                ys, xs = np.nonzero(m)
                assert o["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                     int(ys.max() - ys.min() + 1)]
        done = c.status(job.id)
        assert done.status == "succeeded" and done.frames_done == 6
        assert done.started_at and done.finished_at and done.created_at.endswith("Z")
        png = Image.open(io.BytesIO(c.frame_png(job.id, 3)))
        assert png.mode == "P" and np.array_equal(np.array(png), ref[3])
        c.download_result(job.id, tmp_path / "r.zip")
        with zipfile.ZipFile(tmp_path / "r.zip") as zf:
            assert zf.namelist() == [f"{i:05d}.png" for i in range(6)]
            assert np.array_equal(np.array(Image.open(io.BytesIO(zf.read("00005.png")))), ref[5])
    metrics = httpx.get(stack.url + "/metrics").text
    values = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in metrics.splitlines() if ln and ln[0] != "#"}
    assert values["agss_frames_total"] == 6 and values["agss_stage_frames_total"] == 6
    assert values['agss_stage_seconds_total{stage="network"}'] > 0
    assert values['agss_jobs{status="succeeded"}'] == 1 and values["agss_job_duration_seconds_count"] == 1
    assert any(k.startswith("agss_worker_gpu_memory_bytes{") for k in values)
    # the offline client command writes the same masks
    out = tmp_path / "submitted"
    subprocess.run([sys.executable, "-m", "service.cli", "submit", str(video), "--masks", str(FIRST_MASK),
                    "--server", stack.url, "--out", str(out), "--quiet"], check=True, timeout=300)
    got = [np.array(Image.open(p)) for p in sorted(out.glob("*.png"))]
    assert len(got) == 6 and all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))


def resumed_frames(log_dir) -> list[int]:
    """Frames at which workers resumed a job from a checkpoint, from their JSON logs."""
    out = []
    for log in sorted(log_dir.glob("worker*.log")):
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("msg") == "resumed from a checkpoint":
                out.append(json.loads(line)["frame"])
    return out


def test_sigkill_of_the_running_worker(make_stack, small_model_dir, redis_url, prefix, tmp_path):
    """Late in the video: the job completes, every index exactly once, the masks exactly those of an
    uninterrupted run, and the new owner resumes from a checkpoint instead of replaying from frame 0."""
    n = 24
    video = frames_zip(tmp_path / "v.zip", n)
    ref = offline(video, small_model_dir, 256, tmp_path / "offline")
    # Slowed down so that the kill lands mid-job on any machine; checkpoints every few frames.
    stack = make_stack(workers=2, agss_lease_seconds=3, agss_frame_delay_seconds=0.25,
                       agss_checkpoint_seconds=0.5)
    with Client(stack.url) as c:
        job = c.submit(video, FIRST_MASK)
        deadline = time.monotonic() + 120
        while c.status(job.id).frames_done < 12:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = redis.from_url(redis_url)
        holder = r.hget(Keys(prefix).job(job.id), "worker").decode()
        pid = int(holder.rsplit("-", 2)[1])
        victim = next(p for p in stack.workers if p.pid == pid)
        os.kill(pid, signal.SIGKILL)
        victim.wait(10)
        killed_at = c.status(job.id).frames_done
        assert killed_at < n
        done = wait_status(c, job.id, ("succeeded", "failed"), timeout=180)
        assert done.status == "succeeded", done
        frames = list(c.frames(job.id))
    # every index exactly once, in order, in the API and in the stream itself
    assert [f.index for f in frames] == list(range(n))
    ids = [frame_index(e[0]) for e in r.xrange(Keys(prefix).frames(job.id))]
    assert ids == list(range(n)) + [-1]  # the frames, then the end marker
    for f, expected in zip(frames, ref, strict=True):
        assert np.array_equal(objects_to_labels(f.objects, (480, 854)), expected)
    assert r.hget(Keys(prefix).job(job.id), "worker").decode() != holder
    (resumed,) = resumed_frames(tmp_path / "logs0")
    assert 10 <= resumed <= killed_at  # from the checkpoint, not from frame 0
    assert not list(Path(tempfile.gettempdir()).glob(f"agss-job-{job.id}-*"))  # the killed worker's folder too


def _post(url: str, video: bytes | None, masks: bytes | None, vname="v.zip", mname="m.png", **kw):
    files = {}
    if video is not None:
        files["video"] = (vname, video)
    if masks is not None:
        files["masks"] = (mname, masks)
    return httpx.post(url + "/v1/jobs", files=files, timeout=60, **kw)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_uploads_get_clear_4xx_and_service_keeps_serving(make_stack, tmp_path):
    stack = make_stack(workers=1, agss_max_upload_bytes=3 << 20)
    good_video = frames_zip(tmp_path / "v.zip", 4).read_bytes()
    good_mask = FIRST_MASK.read_bytes()
    url = stack.url

    def expect(resp: httpx.Response, status: int, code: str | None = None):
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert set(body) == {"error"} and body["error"]["message"]
        if code:
            assert body["error"]["code"] == code

    mp4 = tmp_path / "v.mp4"
    import cv2

    w = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (854, 480))
    for i in range(5):
        w.write(np.full((480, 854, 3), i * 40, np.uint8))
    w.release()
    expect(_post(url, mp4.read_bytes()[:2000], good_mask, vname="v.mp4"), 400, "bad_input")  # truncated
    expect(_post(url, os.urandom(5000), good_mask, vname="v.bin"), 415, "unsupported_format")
    expect(_post(url, good_video, _png(np.full((240, 427), 255, np.uint8))), 400, "bad_input")  # other size
    expect(_post(url, good_video, _png(np.zeros((480, 854), np.uint8))), 400, "bad_input")  # empty mask
    many = (np.arange(480 * 854).reshape(480, 854) % 257).astype(np.uint16)
    expect(_post(url, good_video, _png(many)), 400, "bad_input")  # 256 objects
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("00000.jpg", (tmp_path / "v.zip").read_bytes()[:10])
        zf.writestr("../../etc/evil.jpg", b"x")
    expect(_post(url, evil.getvalue(), good_mask), 400, "unsafe_archive")
    expect(_post(url, good_video, None), 422, "malformed_request")
    expect(_post(url, good_video, good_mask, data={"options": "{not json"}), 422, "bad_options")
    expect(_post(url, good_video, good_mask, data={"options": '{"flow": "magic"}'}), 422, "bad_options")
    expect(_post(url, good_video, good_mask, data={"options": '{"model": "../../etc"}'}), 422, "bad_options")
    expect(_post(url, os.urandom(4 << 20), good_mask), 413, "too_large")
    expect(httpx.get(url + "/v1/jobs/nope"), 404, "not_found")
    # honest inputs: the declared container is the real one, a cut video is refused, sizes checked upfront
    r = _post(url, good_video[: len(good_video) // 2], good_mask, vname="frames.zip")
    expect(r, 400, "bad_input")
    assert "not a readable zip" in r.json()["error"]["message"]
    avi = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, (854, 480))
    for i in range(12):
        w.write(np.random.default_rng(i).integers(0, 255, (480, 854, 3), dtype=np.uint8))
    w.release()
    r = _post(url, avi.read_bytes()[: avi.stat().st_size // 2], good_mask, vname="v.avi")
    expect(r, 400, "bad_input")
    assert "only" in r.json()["error"]["message"] and "decode" in r.json()["error"]["message"]
    mixed = io.BytesIO()
    with zipfile.ZipFile(mixed, "w") as zf, zipfile.ZipFile(io.BytesIO(good_video)) as good:
        zf.writestr("00000.jpg", good.read(good.namelist()[0]))
        zf.writestr("00001.jpg", cv2.imencode(".jpg", np.zeros((240, 427, 3), np.uint8))[1].tobytes())
    r = _post(url, mixed.getvalue(), good_mask)
    expect(r, 400, "bad_input")
    assert "427x240" in r.json()["error"]["message"]
    # the server and the worker still work
    with Client(url) as c:
        job = c.submit(tmp_path / "v.zip", FIRST_MASK)
        assert len(list(c.frames(job.id))) == 4
        with pytest.raises(ClientError) as e:
            c.cancel(job.id)
        assert e.value.status == 409 and e.value.code == "conflict"


def test_queue_bound_idempotency_cancel_and_readiness(make_stack, redis_url, tmp_path):
    stack = make_stack(workers=0, agss_max_queued_jobs=1)
    video = frames_zip(tmp_path / "v.zip", 3)
    r = httpx.get(stack.url + "/readyz")
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_workers"
    with Client(stack.url) as c:
        a = c.submit(video, FIRST_MASK, idempotency_key="k1")
        again = c.submit(video, FIRST_MASK, idempotency_key="k1")
        assert again.id == a.id
        with pytest.raises(ClientError) as e:
            c.submit(video, FIRST_MASK)
        assert e.value.status == 429 and e.value.code == "queue_full"
        # long-poll on a queued job returns after `wait` with no frames
        t0 = time.monotonic()
        page = httpx.get(f"{stack.url}/v1/jobs/{a.id}/frames", params={"wait": 1}).json()
        assert page == {"frames": [], "next": 0, "status": "queued"} and time.monotonic() - t0 >= 0.9
        assert c.cancel(a.id).status == "cancelled"
        with pytest.raises(ClientError) as e:
            c.cancel(a.id)
        assert e.value.status == 409
        with pytest.raises(ClientError) as e:
            c.download_result(a.id, tmp_path / "x.zip")
        assert e.value.status == 409
        metrics = httpx.get(stack.url + "/metrics").text
        assert 'agss_jobs{status="cancelled"} 1' in metrics and "agss_queue_length 0" in metrics
        # a worker that starts now skips the cancelled job and serves the next one
        b = c.submit(video, FIRST_MASK)
        stack.start_worker()
        assert len(list(c.frames(b.id, wait=5))) == 3
        assert httpx.get(stack.url + "/readyz").status_code == 200


def test_sigterm_hands_the_job_back(make_stack, tmp_path):
    """A video too long to finish before the signal (the worker is slowed down): the job goes back to the
    queue with a checkpoint at the last published frame, and the next worker continues from there."""
    stack = make_stack(workers=1, agss_frame_delay_seconds=0.2)
    video = frames_zip(tmp_path / "v.zip", 30)
    with Client(stack.url) as c:
        job = c.submit(video, FIRST_MASK)
        while c.status(job.id).frames_done < 2:
            time.sleep(0.02)
        w = stack.workers[0]
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0
        after = c.status(job.id)
        assert after.status == "queued" and 2 <= after.frames_done < 30
        stack.start_worker()
        assert [f.index for f in c.frames(job.id, wait=5)] == list(range(30))
    assert resumed_frames(tmp_path / "logs0") == [after.frames_done]


def test_redis_unreachable_is_503(small_model_dir, tmp_path):
    from service.runtime.redis import free_port
    from service.runtime.supervisor import Stack

    s = Stack(f"redis://127.0.0.1:{free_port()}/0", "x:", workers=0, log_dir=str(tmp_path))
    s.start_api()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(s.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        r = httpx.get(s.url + "/v1/jobs/abc")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        assert httpx.get(s.url + "/readyz").status_code == 503
    finally:
        s.stop()


def test_cancel_stops_a_running_job_and_frees_the_worker(make_stack, redis_url, prefix, tmp_path):
    from service.jobs.keys import GROUP

    stack = make_stack(workers=1)
    with Client(stack.url) as c:
        job = c.submit(frames_zip(tmp_path / "long.zip", 40), FIRST_MASK)
        while c.status(job.id).frames_done < 2:
            time.sleep(0.02)
        assert c.cancel(job.id).status == "cancelled"
        r = redis.from_url(redis_url)
        deadline = time.monotonic() + 15
        while r.xpending(Keys(prefix).queue, GROUP)["pending"]:  # the worker acks and lets go
            assert time.monotonic() < deadline
            time.sleep(0.05)
        done = c.status(job.id).frames_done
        assert done < 40
        with pytest.raises(ClientError) as e:
            list(c.frames(job.id))
        assert e.value.code == "cancelled"
        assert c.status(job.id).frames_done == done  # nothing published after the cancel
        nxt = c.submit(frames_zip(tmp_path / "short.zip", 3), FIRST_MASK)
        assert len(list(c.frames(nxt.id, wait=5))) == 3
