"""Running one job: the whole video from Redis to a folder, the tracker over it, each frame published.

Every few seconds of work (AGSS_CHECKPOINT_SECONDS), and when it hands a job back, the worker saves the
tracker's state to Redis. A worker that takes a job over restores the latest checkpoint, re-runs only
the frames after it without publishing them again, and publishes from the first missing frame on.
"""

from __future__ import annotations

import logging
import shutil
import time

from ..jobs.records import Job
from ..media.inputs import inspect_inputs
from ..tracking.pipeline import track
from ..vos.tracker import Tracker, dumps, loads
from .run import Abort, Run, RuntimePrompts, run_folder

log = logging.getLogger("agss.worker")


def run_job(run: Run, job: Job) -> int:
    """-> frames in the video. Raises Abort when cancelled, taken over or stopping."""
    opts, settings, queue = job.options, run.settings, run.queue
    model = run.model_for(opts.get("model") or settings.model)
    flow = opts.get("flow") or settings.flow
    ctx = {"job_id": job.id, "worker_id": queue.worker_id}
    folder = run_folder(job.id)
    try:
        video, masks = queue.download_inputs(job.id, folder, job.video_name, job.masks_name)
        inputs = inspect_inputs(video, masks)
        tracker, start = Tracker(model, flow=flow, long_side=opts.get("long_side") or settings.long_side,
                                 occlusions=settings.occlusions), 0
        runtime = RuntimePrompts(queue, job.id)
        saved = queue.load_checkpoint(job.id)
        if saved is not None and saved[0] <= job.frames_done:
            start, state, _ = saved
            tracker = Tracker.from_state(model, loads(state), flow=flow)
            runtime.forget_before(start)
            log.info("resumed from a checkpoint", extra={**ctx, "frame": start})
        timings: dict[str, float] = {}
        last_publish_rtt, last_save = 0.0, time.monotonic()
        n = start
        for res in track(inputs, tracker, timings, extra=runtime, start=start):
            run.check()
            n = res.frame.index + 1
            if res.frame.index < job.frames_done:  # published by an earlier owner: re-run, not re-published
                if run.stop.is_set():
                    raise Abort("shutdown")
                continue
            t0 = time.perf_counter()
            objects = res.objects(sorted(set(inputs.object_ids) | runtime.ids | set(tracker.ids)))
            # "publish" is the RLE encoding plus the previous frame's round trip to Redis
            timings["publish"] = time.perf_counter() - t0 + last_publish_rtt
            t1 = time.perf_counter()
            out = queue.publish(run.claim, res.frame.index, objects, res.events, timings)
            last_publish_rtt = time.perf_counter() - t1
            if not out.ok:
                raise Abort(str(out))
            if run.stop.is_set() or time.monotonic() - last_save >= settings.checkpoint_seconds:
                saved_ok = queue.save_checkpoint(run.claim, n, dumps(tracker.state_dict()))
                last_save = time.monotonic()
                if run.stop.is_set():
                    log.info("checkpoint before hand-back: %s", saved_ok, extra={**ctx, "frame": n})
                    raise Abort("shutdown")
            if settings.frame_delay_seconds:
                time.sleep(settings.frame_delay_seconds)
        return n
    finally:
        shutil.rmtree(folder, ignore_errors=True)
