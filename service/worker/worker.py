"""The worker process: load the model once, then claim jobs and live sessions one at a time from Redis,
run them (worker/jobs.py, worker/sessions.py), hand them back on SIGTERM, renew their lease meanwhile."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time

import redis
import torch

from ..config import Settings
from ..errors import classify
from ..jobs.queue import Claim, WorkerQueue
from ..jobs.records import JobStatus, Kind
from ..vos.checkpoint import load_model
from ..vos.network import SegmentationModel
from .jobs import run_job
from .run import Abort, Run
from .sessions import run_session

log = logging.getLogger("agss.worker")
SWEEP_SECONDS = 600


def _no_op(signum: int, frame: object) -> None:
    """The Python-level handler of SIGTERM/SIGINT: replaces the default (exit); the work is in the relay."""


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None):
        self.settings = settings
        self.stop = threading.Event()
        self.queue = WorkerQueue(settings, worker_id, stop=self.stop)
        self.id = self.queue.worker_id
        self.device = torch.device(settings.device)
        self._models: dict[str, SegmentationModel] = {}
        self._current: Claim | None = None
        self._abort_reason: str | None = None
        # The heartbeat thread renews the claim it read; by the time the answer comes that run may have ended
        # and another begun. The lock keeps a stale answer from stopping the next run.
        self._claim_lock = threading.Lock()
        self._jobs_done = 0
        # Loaded before anything is claimed: a worker that cannot load its model takes no job.
        self.model_for(settings.model)

    def model_for(self, name: str) -> SegmentationModel:
        """The worker's model, or another one named by a job (kept loaded: at most two)."""
        if name not in self._models:
            t0 = time.monotonic()
            if len(self._models) >= 2:
                self._models.pop(next(k for k in self._models if k != self.settings.model))
            self._models[name] = load_model(name, device=self.device, models_dir=self.settings.models_dir,
                                            backend=self.settings.backend)
            log.info("model loaded", extra={"worker_id": self.id, "duration_s": round(time.monotonic() - t0, 2)})
        return self._models[name]

    # -- lifecycle -----------------------------------------------------------------------------------
    def install_signals(self) -> None:
        """SIGTERM and SIGINT stop the worker (it hands its job back). A Python signal handler runs in the
        main thread between two of its bytecodes, possibly while that thread holds the lock of `stop`
        (inside Event.wait) or of stderr: setting the event or logging there deadlocks (seen: a second
        SIGTERM while the loop waited on `stop`). So the handler does nothing; the interpreter writes
        each signal's number to a socket (set_wakeup_fd), and a thread of its own acts on it."""
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        self._signal_sockets = (ours, theirs)  # kept open as long as the worker lives
        signal.set_wakeup_fd(theirs.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _no_op)
        threading.Thread(target=self._relay_signals, args=(ours,), name="signals", daemon=True).start()

    def _relay_signals(self, sock: socket.socket) -> None:
        try:
            while data := sock.recv(64):
                for signum in data:
                    # Once: a second signal (docker stop, systemd, Ctrl-C twice) changes nothing.
                    if signum in (signal.SIGTERM, signal.SIGINT) and not self.stop.is_set():
                        log.info("stopping: %s", signal.Signals(signum).name, extra={"worker_id": self.id})
                        self.stop.set()
        except OSError:  # the socket closed with the worker
            return

    def run(self) -> None:
        self.queue.ensure_group()
        self._beat()  # ready as soon as the model is loaded
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        beat.start()
        log.info("ready", extra={"worker_id": self.id})
        next_sweep = 0.0
        try:
            while not self.stop.is_set():
                try:
                    if time.monotonic() > next_sweep:
                        self._sweep_inputs()
                        next_sweep = time.monotonic() + SWEEP_SECONDS
                    claim = self.queue.claim(block_ms=1000)
                    if claim:
                        self.process(claim)
                except redis.RedisError as e:  # Redis restarting: wait for it, as the API answers 503 meanwhile
                    log.warning("redis unavailable: %s", e, extra={"worker_id": self.id})
                    self.stop.wait(1.0)
        finally:
            self.queue.leave()
            log.info("stopped", extra={"worker_id": self.id})

    def _sweep_inputs(self) -> None:
        """Local input folders of jobs that expired unprocessed (nobody else deletes them)."""
        sweep = getattr(self.queue.inputs, "sweep", None)
        if sweep:
            n = sweep(lambda job_id: self.queue.alive(job_id))
            if n:
                log.info("removed %d expired input folders", n, extra={"worker_id": self.id})

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
                    out = self.queue.renew(claim)
                    if not out.ok:
                        self._abort(claim, out.kind)  # lost, missing
                    elif out.status.ended:
                        self._abort(claim, out.status.value)  # cancelled
            except Exception:  # noqa: BLE001 - a missed beat must not kill the thread
                log.warning("heartbeat failed", exc_info=True, extra={"worker_id": self.id})

    def _abort(self, claim: Claim, reason: str) -> None:
        """Tell the run of `claim` to stop with `reason`, if that run is still the current one."""
        with self._claim_lock:
            if self._current is claim:
                self._abort_reason = reason

    # -- one job or session ----------------------------------------------------------------------------
    def process(self, claim: Claim) -> None:
        ctx = {"job_id": claim.job_id, "worker_id": self.id, "attempt": claim.deliveries}
        started = self.queue.start(claim)
        if started.kind == "exhausted":
            reason = (f"gave up after {int(started.value) - 1} attempts in a row without progress (workers "
                      "stopped while running it)")
            self.queue.dead_letter(claim, reason)
            log.error("dead-lettered: %s", reason, extra=ctx)
            return
        if not started.ok:  # ended, expired, or parked until its key has a free running slot
            log.info("not started: %s", started, extra=ctx)
            return
        with self._claim_lock:
            self._current, self._abort_reason = claim, None
        run = Run(claim, self.queue, self.settings, self.stop, self.model_for, lambda: self._abort_reason)
        t0 = time.monotonic()
        try:
            job = self.queue.get(claim.job_id)
            log.info("%s started", job.kind, extra={**ctx, "frame": job.frames_done})
            if job.kind == Kind.SESSION:
                n, ended_by = run_session(run, job)
                res = self.queue.finish(claim, JobStatus.SUCCEEDED, frames_total=n, ended_by=ended_by)
            else:
                n = run_job(run, job)
                res = self.queue.finish(claim, JobStatus.SUCCEEDED, frames_total=n)
                self.queue.delete_inputs(claim.job_id)
            dt = time.monotonic() - t0
            log.info("%s %s", job.kind, "succeeded" if res.ok else f"not finished ({res})",
                     extra={**ctx, "status": "succeeded", "duration_s": round(dt, 2), "fps": round(n / dt, 2)})
            self._jobs_done += 1
        except Abort as e:
            reason = str(e)
            if reason == "shutdown":
                log.info("handed back: %s", self.queue.handback(claim), extra=ctx)
            else:
                if reason != "lost":  # cancelled or otherwise ended: nobody needs the entry or the inputs
                    self.queue.ack(claim)
                    self.queue.delete_inputs(claim.job_id)
                log.info("stopped: %s", reason, extra=ctx)
        except redis.RedisError:
            # Redis is gone for longer than the client's retries: the job is not the job's fault. It stays
            # running in Redis; after the lease this or another worker resumes it from its checkpoint.
            raise
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
            self.queue.finish(claim, JobStatus.FAILED, code, msg)
            self.queue.delete_inputs(claim.job_id)
            log.warning("job failed: %s", msg, extra={**ctx, "status": "failed", "code": code})
        finally:
            with self._claim_lock:
                self._current = None
