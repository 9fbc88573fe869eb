"""The worker loop in-process (service/worker/worker.py, worker/jobs.py) against a real Redis: real uploads
checked by intake, the flow-only model (masks carried by the flow alone; with flow "none" every frame's
labels are the masks it was given, so the published frames are known exactly), hand-back and takeover
from a checkpoint, cancel, a lost lease, failures and their codes, the heartbeat, the sweep of local
inputs, signals. Runs that must be interrupted mid-video wait for a published frame and then act; the
video is long enough (and paced by AGSS_FRAME_DELAY_SECONDS) that the run cannot end first."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from service.config import Settings
from service.jobs import intake
from service.jobs.keys import GROUP, Keys
from service.jobs.queue import WorkerQueue
from service.jobs.records import Job, JobStatus, now
from service.jobs.store import parse_entries
from service.media import encode_label_png, rle
from service.vos import load_model
from service.vos.backends import OnnxRuntimeModel
from service.vos.tracker import Tracker, dumps, loads
from service.worker.worker import Worker

from .conftest import store_call

H, W = 48, 64


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


MASK3 = _box(5, 25, 5, 30)


def _inputs(folder: Path, n: int) -> tuple[Path, Path]:
    video = folder / f"clip-{uuid.uuid4().hex[:6]}.zip"
    with zipfile.ZipFile(video, "w") as zf:
        for i, f in enumerate(_frames(n)):
            zf.writestr(f"{i:05d}.png", cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes())
    masks = folder / "first.png"
    masks.write_bytes(encode_label_png(MASK3.astype(np.uint8) * 3))
    return video, masks


@pytest.fixture
def env(redis_url, prefix, tmp_path):
    settings = Settings(redis_url=redis_url, key_prefix=prefix, model="flow-only", flow="none", long_side=64,
                        checkpoint_seconds=3600, heartbeat_seconds=30, lease_seconds=30, max_attempts=3,
                        result_ttl_seconds=600, data_dir=tmp_path / "data")
    r = redis.from_url(redis_url)
    yield settings, r, Keys(prefix), tmp_path
    r.close()


def _submit(settings: Settings, folder: Path, n: int = 4, options: dict | None = None) -> Job:
    video, masks = _inputs(folder, n)
    return store_call(settings, lambda s: intake.accept(s, video, video.name, masks, masks.name, options or {}, None))


def _job(settings: Settings, job_id: str) -> Job:
    return store_call(settings, lambda s: s.get(job_id))


def _published(r, k: Keys, job_id: str) -> list[dict]:
    frames, _ = parse_entries(r.xrange(k.frames(job_id)), 10_000)
    return frames


def _labels(frame: dict) -> np.ndarray:
    return rle.objects_to_labels(frame["objects"], (H, W))


def _log(caplog, message: str):
    """The worker's log record with this message (the JSON log line's fields are its attributes)."""
    found = [r for r in caplog.records if r.name == "agss.worker" and r.getMessage() == message]
    assert found, f"no log line {message!r} in {[r.getMessage() for r in caplog.records]}"
    return found[-1]


def _wait(cond, what: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_job_is_run_and_every_frame_published_once(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    job = _submit(settings, tmp, n=5)
    import tempfile

    stale = Path(tempfile.mkdtemp(prefix=f"agss-job-{job.id}-"))  # left by a worker killed on this host
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    claim = w.queue.claim(block_ms=100)
    t0 = time.monotonic()
    w.process(claim)
    wall = time.monotonic() - t0
    assert not stale.exists()
    loaded = _log(caplog, "model loaded")
    assert loaded.worker_id == "w1" and loaded.duration_s >= 0
    started = _log(caplog, "job started")
    assert (started.job_id, started.worker_id, started.attempt, started.frame) == (job.id, "w1", 1, 0)
    ok = _log(caplog, "job succeeded")
    assert (ok.job_id, ok.worker_id, ok.status) == (job.id, "w1", "succeeded") and ok.fps > 0 and ok.duration_s > 0
    done = _job(settings, job.id)
    assert done.status == JobStatus.SUCCEEDED and done.frames_total == 5 and done.frames_done == 5
    assert done.worker == "w1" and done.error_code == ""
    frames = _published(r, k, job.id)
    assert [f["index"] for f in frames] == [0, 1, 2, 3, 4]
    for f in frames:
        (obj,) = f["objects"]
        assert obj["id"] == 3 and obj["area"] == int(MASK3.sum()) and obj["bbox"] == [5, 5, 25, 20]
        assert obj["score"] == 1.0 if f["index"] == 0 else 0 < obj["score"] <= 1
        assert np.array_equal(_labels(f), MASK3 * 3)
    stats = {a.decode(): b.decode() for a, b in r.hgetall(k.stats).items()}  # seconds per stage, per frame
    assert {f"stage:{s}" for s in ("decode", "prompt", "flow", "network", "publish")} <= set(stats)
    assert stats["stage_frames"] == "5" and stats["frames"] == "5" and stats["n:succeeded"] == "1"
    for s in ("decode", "prompt", "flow", "network", "publish"):  # parts of the run: within its wall time
        assert 0 <= float(stats[f"stage:{s}"]) <= wall, (s, stats[f"stage:{s}"], wall)
    assert [e["type"] for e in frames[0]["events"]] == ["started"]
    assert r.xpending(k.queue, GROUP)["pending"] == 0 and r.xlen(k.queue) == 0
    assert not r.exists(k.video(job.id)) and not r.exists(k.masks(job.id)) and not r.exists(k.checkpoint(job.id))
    assert w._jobs_done == 1 and w._current is None
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"agss-job-{job.id}-*"))  # the run folder is gone


def test_prompts_added_before_the_run_start_their_objects_on_their_frame(env):
    settings, r, k, tmp = env
    job = _submit(settings, tmp, n=4)
    nine = _box(30, 45, 40, 60)
    frames, new = intake.job_prompts(job, {"frames": {"2": {"9": rle.encode(nine)}}})
    store_call(settings, lambda s: s.add_prompts(job.id, frames, new))
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    w.process(w.queue.claim(block_ms=100))
    out = _published(r, k, job.id)
    assert [[o["id"] for o in f["objects"]] for f in out] == [[3, 9]] * 4  # every frame lists every object
    assert [next(o["area"] for o in f["objects"] if o["id"] == 9) for f in out] == [0, 0, nine.sum(), nine.sum()]
    assert np.array_equal(_labels(out[3]), np.where(nine, 9, MASK3 * 3))


def _run_in_thread(w: Worker, claim):
    t = threading.Thread(target=w.process, args=(claim,), daemon=True)
    t.start()
    return t


def _loop(settings: Settings, r, k: Keys, worker_id: str) -> tuple[Worker, threading.Thread]:
    """A worker's whole run loop in a thread (heartbeats every 50 ms), once it has beaten."""
    w = Worker(settings.model_copy(update={"heartbeat_seconds": 0.05}), worker_id=worker_id)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    _wait(lambda: r.exists(k.worker(worker_id)), "no heartbeat")
    return w, t


def test_a_stopping_worker_hands_back_with_a_checkpoint_and_the_next_one_resumes_from_it(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    slow = settings.model_copy(update={"frame_delay_seconds": 0.2})
    job = _submit(settings, tmp, n=40)
    w1 = Worker(slow, worker_id="w1")
    w1.queue.ensure_group()
    t = _run_in_thread(w1, w1.queue.claim(block_ms=100))
    _wait(lambda j=job.id: int(r.hget(k.job(j), "frames_done") or 0) >= 2, "no frame published")
    w1.stop.set()
    t.join(15)
    assert not t.is_alive()
    back = _job(settings, job.id)
    assert back.status == JobStatus.QUEUED and back.worker == "" and 2 <= back.frames_done < 40
    ck = r.hgetall(k.checkpoint(job.id))
    assert int(ck[b"frame"]) == back.frames_done and ck[b"worker"] == b"w1"  # saved before the hand-back
    assert r.exists(k.video(job.id)) and w1._jobs_done == 0  # the inputs stay for the next worker
    assert _log(caplog, "checkpoint before hand-back: ok").frame == back.frames_done
    assert _log(caplog, "handed back: ok").job_id == job.id

    # The checkpoint is what the next worker continues from: replace it by the state of a tracker that
    # followed another object, and the frames after it show that object. (Saved with another flow: the
    # worker's own flow, "none", goes on with it; "dis" would move the masks.)
    tracker = Tracker(load_model("flow-only"), flow="dis", long_side=64)
    tracker.step(_frames(1)[0], {5: _box(30, 45, 40, 60)})
    r.hset(k.checkpoint(job.id), mapping={"state": dumps(tracker.state_dict())})
    w2 = Worker(settings, worker_id="w2")
    w2.process(w2.queue.claim(block_ms=100))
    done = _job(settings, job.id)
    assert done.status == JobStatus.SUCCEEDED and done.frames_total == 40 and done.worker == "w2"
    out = _published(r, k, job.id)
    assert [f["index"] for f in out] == list(range(40))  # each index once
    n = back.frames_done
    assert all(np.array_equal(_labels(f), MASK3 * 3) for f in out[:n])
    assert all(np.array_equal(_labels(f), _box(30, 45, 40, 60) * 5) for f in out[n:])
    assert [o["id"] for o in out[n]["objects"]] == [3, 5]
    resumed = _log(caplog, "resumed from a checkpoint")
    assert (resumed.job_id, resumed.worker_id, resumed.frame) == (job.id, "w2", n)


def test_a_takeover_reruns_without_republishing_and_ignores_a_checkpoint_it_cannot_trust(env):
    settings, r, k, tmp = env
    job = _submit(settings, tmp, n=5)
    w1 = WorkerQueue(settings, "w1")
    w1.ensure_group()
    c1 = w1.claim(block_ms=100)
    assert w1.start(c1).ok
    for i in range(3):  # the first owner published three frames, then died
        assert w1.publish(c1, i, [{"id": 3, "marker": i}]).ok
    w2 = Worker(settings.model_copy(update={"lease_seconds": 0}), worker_id="w2")
    c2 = w2.queue.claim(block_ms=100)
    assert c2.job_id == job.id and c2.deliveries == 2
    w2.process(c2)
    out = _published(r, k, job.id)
    assert [f["index"] for f in out] == [0, 1, 2, 3, 4]
    assert [f["objects"][0].get("marker") for f in out[:3]] == [0, 1, 2]  # not published again
    assert all(np.array_equal(_labels(f), MASK3 * 3) for f in out[3:])  # re-run from frame 0, not from nothing
    assert _job(settings, job.id).status == JobStatus.SUCCEEDED


@pytest.mark.parametrize("storage", ["redis", "local"])
def test_a_job_cancelled_while_it_runs_stops_and_leaves_nothing_behind(env, caplog, storage):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    settings = settings.model_copy(update={"storage": storage, "storage_dir": tmp / "inputs"})
    slow = settings.model_copy(update={"frame_delay_seconds": 0.2})
    job = _submit(settings, tmp, n=40)
    w = Worker(slow, worker_id="w1")
    w.queue.ensure_group()
    t = _run_in_thread(w, w.queue.claim(block_ms=100))
    _wait(lambda: int(r.hget(k.job(job.id), "frames_done") or 0) >= 1, "no frame published")
    cancelled = store_call(settings, lambda s: s.cancel(job.id))
    t.join(15)
    assert not t.is_alive() and cancelled.status == JobStatus.CANCELLED
    after = _job(settings, job.id)
    assert after.status == JobStatus.CANCELLED and after.frames_done < 40 and w._jobs_done == 0
    assert r.xlen(k.queue) == 0 and r.xpending(k.queue, GROUP)["pending"] == 0  # acked and deleted
    assert _log(caplog, "stopped: state:cancelled").job_id == job.id


def test_a_worker_that_lost_its_lease_stops_without_touching_the_job(env):
    settings, r, k, tmp = env
    slow = settings.model_copy(update={"frame_delay_seconds": 0.2})
    job = _submit(settings, tmp, n=40)
    w = Worker(slow, worker_id="w1")
    w.queue.ensure_group()
    claim = w.queue.claim(block_ms=100)
    t = _run_in_thread(w, claim)
    _wait(lambda: int(r.hget(k.job(job.id), "frames_done") or 0) >= 1, "no frame published")
    w2 = WorkerQueue(settings.model_copy(update={"lease_seconds": 0}), "w2")
    taken = w2.claim(block_ms=100)  # the entry is w2's now
    assert taken.msg_id == claim.msg_id
    t.join(15)
    assert not t.is_alive()
    after = _job(settings, job.id)
    assert after.status == JobStatus.RUNNING and after.frames_done < 40  # w2's to continue
    assert r.exists(k.video(job.id)) and r.xpending(k.queue, GROUP)["pending"] == 1


def _raw_submit(settings: Settings, folder: Path, video_bytes: bytes | None = None, options: dict | None = None):
    """A job record written without intake's checks (what a bug or a changed input would leave)."""
    video, masks = _inputs(folder, 3)
    if video_bytes is not None:
        video.write_bytes(video_bytes)
    job = Job(id=uuid.uuid4().hex, frames_total=3, objects=[3], width=W, height=H, options=options or {},
              video_name=video.name, masks_name=masks.name, created_at=now())
    return store_call(settings, lambda s: s.submit(job, video, masks))


@pytest.mark.parametrize("case, code, message", [
    ("garbage", "bad_input", "not a readable zip archive"),
    ("garbage-local", "bad_input", "not a readable zip archive"),
    ("flow", "internal", "ValueError: unknown flow 'magic'; choose one of dis, farneback, none"),
    ("model", "model_not_found", "no-such-model"),
])
def test_a_failing_job_ends_failed_with_its_code_and_the_worker_goes_on(env, case, code, message, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    if case.endswith("-local"):
        settings = settings.model_copy(update={"storage": "local", "storage_dir": tmp / "inputs"})
    job = _raw_submit(settings, tmp, video_bytes=b"x" * 5000 if case.startswith("garbage") else None,
                      options={"flow": "magic"} if case == "flow" else {"model": "no-such-model"}
                      if case == "model" else None)
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    w.process(w.queue.claim(block_ms=100))
    failed = _job(settings, job.id)
    assert failed.status == JobStatus.FAILED and failed.error_code == code, failed
    assert message in failed.error_message
    if code == "internal":
        assert failed.error_message == message
        crashed = _log(caplog, "job crashed")
        assert crashed.exc_info and crashed.job_id == job.id and crashed.levelno == logging.ERROR
    line = _log(caplog, f"job failed: {failed.error_message}")
    assert (line.job_id, line.status, line.code, line.levelno) == (job.id, "failed", code, logging.WARNING)
    assert not r.exists(k.video(job.id)) and r.xpending(k.queue, GROUP)["pending"] == 0
    assert not (tmp / "inputs" / job.id).exists()
    assert w._current is None and w._jobs_done == 0
    assert int(r.hget(k.stats, "n:failed")) == 1 and int(r.hget(k.stats, "n:running") or 0) == 0


def test_a_job_that_cannot_start_is_not_run(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    job = _submit(settings, tmp, n=3)
    store_call(settings, lambda s: s.cancel(job.id))
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    claim = w.queue.claim(block_ms=100)
    assert claim.job_id == job.id
    w.process(claim)
    assert _published(r, k, job.id) == [] and _job(settings, job.id).status == JobStatus.CANCELLED
    assert r.xpending(k.queue, GROUP)["pending"] == 0 and w._current is None
    assert _log(caplog, "not started: state:cancelled").job_id == job.id


def test_the_run_loop_beats_claims_and_leaves(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    w, t = _loop(settings, r, k, "w-loop")
    beat = json.loads(r.get(k.worker("w-loop")))
    assert beat == {"worker": "w-loop", "device": "cpu", "jobs_done": 0, "job": None, "gpu_memory_bytes": 0,
                    "gpu_memory_peak_bytes": 0}
    assert 0 < r.ttl(k.worker("w-loop")) <= 2  # three beats, at least two seconds
    jobs = [_submit(settings, tmp, n=3) for _ in range(2)]
    for job in jobs:
        _wait(lambda j=job: _job(settings, j.id).status == JobStatus.SUCCEEDED, "the job did not run")
    _wait(lambda: json.loads(r.get(k.worker("w-loop")))["jobs_done"] == 2, "the beat does not count the jobs")
    w.stop.set()
    t.join(15)
    assert not t.is_alive() and not r.exists(k.worker("w-loop"))
    assert _log(caplog, "ready").worker_id == "w-loop" and _log(caplog, "stopped").worker_id == "w-loop"
    assert not any(r.getMessage().startswith(("redis unavailable", "heartbeat failed")) for r in caplog.records)


@pytest.mark.parametrize("end, reason", [("cancel", "cancelled"), ("delete", "missing"), ("takeover", "lost")])
def test_the_heartbeat_tells_the_run_that_its_job_ended_or_is_not_its_own(env, end, reason, caplog):
    """Between two frames (0.5 s apart here) only the heartbeat can notice: the run stops with its reason."""
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05, "frame_delay_seconds": 0.5})
    job = _submit(settings, tmp, n=6)
    w = Worker(fast, worker_id="w1")
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    _wait(lambda: int(r.hget(k.job(job.id), "frames_done") or 0) >= 1, "no frame published")
    _wait(lambda: json.loads(r.get(k.worker("w1")))["job"] == job.id, "the beat does not name the job")
    if end == "cancel":
        store_call(settings, lambda s: s.cancel(job.id))
    elif end == "delete":
        r.delete(k.job(job.id))  # expired, or deleted by hand
    else:
        assert WorkerQueue(settings.model_copy(update={"lease_seconds": 0}), "w2").claim(block_ms=100)
    _wait(lambda: w._current is None, "the run did not stop")
    w.stop.set()
    t.join(15)
    assert not t.is_alive() and w._abort_reason == reason and w._jobs_done == 0
    assert _log(caplog, f"stopped: {reason}").job_id == job.id  # stopped by the heartbeat's word, not a publish
    assert int(r.hget(k.job(job.id), "frames_done") or 0) < 6


def test_local_inputs_of_expired_jobs_are_swept(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    local = settings.model_copy(update={"storage": "local", "storage_dir": tmp / "inputs", "input_ttl_seconds": 60})
    live = _submit(local, tmp, n=3)
    old = time.time() - 120
    gone = tmp / "inputs" / "0123456789abcdef"
    gone.mkdir(parents=True)
    (gone / "video.zip").write_bytes(b"x")
    recent = tmp / "inputs" / "fedcba9876543210"
    recent.mkdir()
    for d in (gone, tmp / "inputs" / live.id):
        os.utime(d, (old, old))
    w = Worker(local, worker_id="w1")
    w._sweep_inputs()
    assert not gone.exists() and recent.exists() and (tmp / "inputs" / live.id).is_dir()  # live: its job is queued
    assert _log(caplog, "removed 1 expired input folders").worker_id == "w1"
    w.queue.ensure_group()
    w.process(w.queue.claim(block_ms=100))
    assert _job(local, live.id).status == JobStatus.SUCCEEDED and not (tmp / "inputs" / live.id).exists()
    assert not [x for x in caplog.records if x.getMessage().startswith(("job crashed", "job failed"))]
    Worker(settings, worker_id="w2")._sweep_inputs()  # Redis storage: nothing to sweep


def test_sigterm_and_sigint_stop_the_worker(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, *_ = env
    w = Worker(settings, worker_id="w1")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            w.stop.clear()
            w.install_signals()
            # The relay must be a daemon: one that is not would keep the worker's process from exiting.
            assert [t.daemon for t in threading.enumerate() if t.name == "signals"][-1] is True
            os.kill(os.getpid(), sig)
            _wait(w.stop.is_set, f"{sig.name} did not stop the worker", timeout=5)
            assert _log(caplog, f"stopping: {sig.name}").worker_id == "w1"
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


@pytest.mark.timeout(60, method="thread")  # a deadlocked main thread never runs a SIGALRM handler
def test_a_storm_of_signals_while_the_loop_waits_on_stop_stops_the_worker_once(env, caplog):
    """The handler ran in the main thread and set `stop`: a signal that came while the main thread held the
    event's lock (inside stop.wait) deadlocked the worker for good (seen with serve killed: three SIGTERMs
    in 10 ms, the worker left running in futex_wait)."""
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, *_ = env
    w = Worker(settings, worker_id="w1")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    sent = threading.Event()

    def storm():
        for _ in range(300):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.0005)
        sent.set()

    try:
        w.install_signals()
        t = threading.Thread(target=storm)
        t.start()
        while not sent.is_set():  # what the run loop does: waits on `stop`, holding its lock now and then
            w.stop.wait(0.0001)
        t.join()
        _wait(w.stop.is_set, "the storm did not stop the worker", timeout=10)
        stops = [r for r in caplog.records if r.name == "agss.worker" and r.getMessage() == "stopping: SIGTERM"]
        assert len(stops) == 1 and stops[0].worker_id == "w1"
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def test_a_worker_keeps_its_own_model_and_one_more(env, small_model_dir):
    settings, *_ = env
    w = Worker(settings.model_copy(update={"models_dir": small_model_dir.parent}), worker_id="w1")
    assert w.queue.r.get_retry().stop is w.stop  # its Redis retries end when it stops
    assert w.model_for(small_model_dir.name).config == load_model(small_model_dir).config  # by name, in models_dir
    own = w.model_for("flow-only")
    assert w.model_for("flow-only") is own  # loaded once
    tiny = w.model_for(str(small_model_dir))
    assert w.model_for(str(small_model_dir)) is tiny
    lite = w.model_for("agss-lite")  # a third: the other one that is not the worker's own goes
    assert set(w._models) == {"flow-only", "agss-lite"} and w.model_for("agss-lite") is lite
    assert w.model_for("flow-only") is own and w.model_for(str(small_model_dir)) is not tiny


def test_a_worker_runs_its_models_on_its_backend(env, small_model_dir):
    settings, *_ = env
    w = Worker(settings.model_copy(update={"backend": "onnxruntime"}), worker_id="w1")
    assert isinstance(w.model_for(str(small_model_dir)), OnnxRuntimeModel)


def test_a_job_whose_workers_keep_dying_is_dead_lettered_with_the_count(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    once = settings.model_copy(update={"max_attempts": 1, "lease_seconds": 0})
    job = _submit(settings, tmp, n=3)
    first = WorkerQueue(once, "w0")
    first.ensure_group()
    c = first.claim(block_ms=100)
    assert first.start(c).ok  # ... and w0 dies before it publishes anything
    w = Worker(once, worker_id="w1")
    w.process(w.queue.claim(block_ms=100))
    failed = _job(settings, job.id)
    assert failed.status == JobStatus.FAILED and failed.error_code == "attempts_exhausted"
    assert failed.error_message == ("gave up after 1 attempts in a row without progress (workers stopped while "
                                    "running it)")
    assert _published(r, k, job.id) == [] and w._current is None
    line = _log(caplog, f"dead-lettered: {failed.error_message}")
    assert (line.job_id, line.attempt, line.levelno) == (job.id, 2, logging.ERROR)


def test_a_worker_stopping_while_it_reruns_frames_hands_the_job_back_untouched(env):
    settings, r, k, tmp = env
    job = _submit(settings, tmp, n=5)
    w1 = WorkerQueue(settings, "w1")
    w1.ensure_group()
    c1 = w1.claim(block_ms=100)
    assert w1.start(c1).ok and all(w1.publish(c1, i, [{"id": 3, "marker": i}]).ok for i in range(3))
    w2 = Worker(settings.model_copy(update={"lease_seconds": 0}), worker_id="w2")
    w2.stop.set()  # SIGTERM arrived: the re-run of frames 0-2 stops at the first one
    w2.process(w2.queue.claim(block_ms=100))
    back = _job(settings, job.id)
    assert back.status == JobStatus.QUEUED and back.frames_done == 3 and back.worker == ""
    assert [f["objects"][0]["marker"] for f in _published(r, k, job.id)] == [0, 1, 2]
    assert not r.exists(k.checkpoint(job.id))  # nothing new was computed: no checkpoint


def test_checkpoints_follow_the_period(env):
    settings, r, k, tmp = env
    # The second period is longer than the test, yet shorter than the clock's reading itself (seconds since
    # boot): a period measured from the wrong origin fires at once.
    for period, expect in ((0, True), (time.monotonic() + 60, False)):
        slow = settings.model_copy(update={"frame_delay_seconds": 0.15, "checkpoint_seconds": period})
        job = _submit(settings, tmp, n=30)
        w = Worker(slow, worker_id=f"w{period}")
        w.queue.ensure_group()
        t = _run_in_thread(w, w.queue.claim(block_ms=100))
        _wait(lambda j=job.id: int(r.hget(k.job(j), "frames_done") or 0) >= 2, "no frame published")
        if expect:  # a checkpoint after every frame, saved before the pause that follows it
            _wait(lambda j=job.id: int(r.hget(k.checkpoint(j), "frame") or 0) >= 2, "no checkpoint")
            assert int(r.hget(k.checkpoint(job.id), "frame")) <= int(r.hget(k.job(job.id), "frames_done"))
            state = loads(r.hget(k.checkpoint(job.id), "state"))  # a tracker's state, that restores
            assert Tracker.from_state(load_model("flow-only"), state).ids == [3]
        else:
            assert not r.exists(k.checkpoint(job.id))
        store_call(settings, lambda s, j=job.id: s.cancel(j))
        t.join(15)
        assert not t.is_alive()


def test_a_job_s_long_side_reaches_its_tracker(env):
    settings, r, k, tmp = env
    job = _raw_submit(settings, tmp, options={"long_side": 100})  # past intake's check: the tracker's own
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    w.process(w.queue.claim(block_ms=100))
    failed = _job(settings, job.id)
    assert (failed.error_code, failed.error_message) == ("bad_input",
                                                         "long side must be a positive multiple of 32, got 100")


def test_a_redis_error_in_the_loop_does_not_end_the_worker(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    w, t = _loop(settings, r, k, "w-err")
    r.delete(k.queue)
    r.set(k.queue, "not a stream")  # every claim fails now (WRONGTYPE), as it would while Redis restarts
    _wait(lambda: any(x.getMessage().startswith("redis unavailable: WRONGTYPE") for x in caplog.records),
          "the error was not logged")
    line = next(x for x in caplog.records if x.getMessage().startswith("redis unavailable: "))
    assert line.worker_id == "w-err" and line.levelno == logging.WARNING and t.is_alive()
    r.delete(k.queue)
    w.queue.ensure_group()
    job = _submit(settings, tmp, n=3)
    _wait(lambda: _job(settings, job.id).status == JobStatus.SUCCEEDED, "the worker did not go on")
    w.stop.set()
    t.join(15)
    assert not t.is_alive()


def test_a_live_session_is_run_in_process_until_the_client_ends_it(env, caplog):
    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, r, k, tmp = env
    session = store_call(settings, lambda s: s.create_session(intake.new_session(settings, intake.SessionOptions(
        policy="all"))))
    box = rle.encode(MASK3)
    store_call(settings, lambda s: s.add_prompts(session.id, {0: json.dumps({"3": box})}, [3]))
    for f in _frames(3):
        data = cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()
        store_call(settings, lambda s, d=data: s.push_frame(session.id, d, 8))
    store_call(settings, lambda s: s.end_session(session.id))
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    w.process(w.queue.claim(block_ms=100))
    done = _job(settings, session.id)
    assert (done.status, done.frames_total, done.ended_by) == (JobStatus.SUCCEEDED, 3, "client")
    out = _published(r, k, session.id)
    assert [f["index"] for f in out] == [0, 1, 2]
    assert all(np.array_equal(_labels(f), MASK3 * 3) for f in out)
    assert w._jobs_done == 1 and _log(caplog, "session succeeded").job_id == session.id


def test_a_late_answer_of_the_heartbeat_about_an_ended_run_does_not_stop_the_next(env):
    """The beat reads the current claim, then renews it; if that run ends and the next begins meanwhile, the
    answer about the first (its entry is gone: lost) must not stop the second."""
    settings, r, k, tmp = env
    for _ in range(2):
        _submit(settings, tmp, n=3)
    w = Worker(settings, worker_id="w1")
    w.queue.ensure_group()
    first = w.queue.claim(block_ms=100)
    w.process(first)
    second = w.queue.claim(block_ms=100)
    assert _job(settings, first.job_id).status == JobStatus.SUCCEEDED and second.job_id != first.job_id
    w._current = second  # as process() sets it when the second run starts
    late = w.queue.renew(first)
    assert not late.ok and late.kind == "lost"
    w._abort(first, late.kind)
    assert w._abort_reason is None
    w._abort(second, "cancelled")
    assert w._abort_reason == "cancelled"
