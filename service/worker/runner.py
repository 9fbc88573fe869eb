"""The worker process: load the model once, then claim jobs one at a time and publish every frame.

Delivery is at least once (a Redis consumer group); exactly-once publication per frame index comes
from the broker's scripts (frame i can only be appended when i frames exist, and only by the owner).
A job taken over from a dead worker is replayed from frame 0 without publishing, to rebuild the
tracker's state, and published from the first missing frame on.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import time
from pathlib import Path

import torch

from ..config import Settings
from ..errors import classify
from ..jobs.broker import Claim, WorkerQueue
from ..jobs.model import ENDED, Job
from ..media.inputs import inspect_inputs
from ..media.rle import frame_objects
from ..pipeline import track
from ..vos import Tracker, load_model

log = logging.getLogger("agss.worker")


class _Abort(Exception):
    """The current job must stop here: cancelled, taken over, or handed back on shutdown."""


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None):
        self.settings = settings
        self.queue = WorkerQueue(settings, worker_id)
        self.id = self.queue.worker_id
        self.device = torch.device(settings.device)
        self.stop = threading.Event()
        self._models: dict[str, torch.nn.Module] = {}
        self._current: Claim | None = None
        self._abort_reason: str | None = None
        self._jobs_done = 0
        # Loaded before anything is claimed: a worker that cannot load its model takes no job.
        self.model_for(settings.model)

    def model_for(self, name: str) -> torch.nn.Module:
        """The worker's model, or another one named by a job (kept loaded: at most two)."""
        if name not in self._models:
            t0 = time.monotonic()
            if len(self._models) >= 2:
                self._models.pop(next(k for k in self._models if k != self.settings.model))
            self._models[name] = load_model(name, device=self.device)
            log.info("model loaded", extra={"worker_id": self.id, "duration_s": round(time.monotonic() - t0, 2)})
        return self._models[name]

    # -- lifecycle -----------------------------------------------------------------------------------
    def install_signals(self) -> None:
        def on_term(signum, frame):
            log.info("stopping: %s", signal.Signals(signum).name, extra={"worker_id": self.id})
            self.stop.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    def run(self) -> None:
        self.queue.ensure_group()
        self._beat()  # ready as soon as the model is loaded
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        beat.start()
        log.info("ready", extra={"worker_id": self.id})
        try:
            while not self.stop.is_set():
                claim = self.queue.claim(block_ms=1000)
                if claim:
                    self.process(claim)
        finally:
            self.queue.leave()
            log.info("stopped", extra={"worker_id": self.id})

    def _beat(self) -> None:
        gpu = torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0
        gpu_peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0
        self.queue.heartbeat({"worker": self.id, "device": str(self.device), "jobs_done": self._jobs_done,
                              "job": self._current.job_id if self._current else None,
                              "gpu_memory_bytes": gpu, "gpu_memory_peak_bytes": gpu_peak})

    def _heartbeat_loop(self) -> None:
        while not self.stop.wait(self.settings.heartbeat_seconds):
            try:
                self._beat()
                claim = self._current
                if claim is not None:
                    status = self.queue.renew(claim)
                    if status == "lost" or status in ENDED:
                        self._abort_reason = "lost" if status == "lost" else status
            except Exception:  # noqa: BLE001 - a missed beat must not kill the thread
                log.warning("heartbeat failed", exc_info=True, extra={"worker_id": self.id})

    # -- one job ---------------------------------------------------------------------------------------
    def process(self, claim: Claim) -> None:
        ctx = {"job_id": claim.job_id, "worker_id": self.id, "attempt": claim.deliveries}
        if claim.deliveries > self.settings.max_attempts:
            reason = f"gave up after {claim.deliveries - 1} attempts (workers stopped while running it)"
            self.queue.dead_letter(claim, reason)
            log.error("dead-lettered: %s", reason, extra=ctx)
            return
        state = self.queue.start(claim)
        if state != "ok":
            log.info("skipped: job is %s", state, extra=ctx)
            return
        self._current, self._abort_reason = claim, None
        t0 = time.monotonic()
        try:
            job = self.queue.get(claim.job_id)
            log.info("job started", extra={**ctx, "frame": job.frames_done})
            n = self._run_job(claim, job)
            res = self.queue.finish(claim, "succeeded", frames_total=n)
            dt = time.monotonic() - t0
            log.info("job %s", "succeeded" if res == "ok" else f"not finished ({res})",
                     extra={**ctx, "status": "succeeded", "duration_s": round(dt, 2), "fps": round(n / dt, 2)})
            self._jobs_done += 1
        except _Abort as e:
            reason = str(e)
            if reason == "shutdown":
                log.info("handed back: %s", self.queue.handback(claim), extra=ctx)
            else:
                if reason != "lost":  # cancelled or otherwise ended: nobody needs the entry any more
                    self.queue.ack(claim)
                log.info("job stopped: %s", reason, extra=ctx)
        except Exception as e:  # noqa: BLE001 - one job's failure must not end the worker
            spec = classify(e)
            if isinstance(e, torch.cuda.OutOfMemoryError):
                code, msg = "out_of_memory", "the GPU ran out of memory on this video; try a smaller long_side"
                torch.cuda.empty_cache()
            elif spec is not None:
                code, msg = spec.code, str(e)
            else:
                code, msg = "internal", f"{type(e).__name__}: {e}"
                log.exception("job crashed", extra=ctx)
            self.queue.finish(claim, "failed", code, msg)
            log.warning("job failed: %s", msg, extra={**ctx, "status": "failed", "code": code})
        finally:
            self._current = None

    def _run_job(self, claim: Claim, job: Job) -> int:
        opts = job.options
        model = self.model_for(opts.get("model") or self.settings.model)
        tracker = Tracker(model, flow=opts.get("flow") or self.settings.flow,
                          long_side=opts.get("long_side") or self.settings.long_side)
        with tempfile.TemporaryDirectory(prefix="agss-job-") as tmp:
            video, masks = self.queue.download_inputs(job.id, Path(tmp), job.video_name, job.masks_name)
            inputs = inspect_inputs(video, masks)
            resume_from = job.frames_done  # frames before this were published by an earlier owner
            n = 0
            timings: dict[str, float] = {}
            last_publish_rtt = 0.0
            for frame, labels in track(inputs, tracker, timings):
                if self.stop.is_set():
                    raise _Abort("shutdown")
                if self._abort_reason:
                    raise _Abort(self._abort_reason)
                n += 1
                if frame.index < resume_from:
                    continue
                t0 = time.perf_counter()
                objects = frame_objects(labels, inputs.object_ids)
                # "publish" is the RLE encoding plus the previous frame's round trip to Redis
                timings["publish"] = time.perf_counter() - t0 + last_publish_rtt
                t1 = time.perf_counter()
                res = self.queue.publish(claim, frame.index, objects, timings)
                last_publish_rtt = time.perf_counter() - t1
                if res != "ok":
                    raise _Abort(res)
        return n
