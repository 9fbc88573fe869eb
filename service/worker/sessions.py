"""Running one live session: frames and prompts arrive through Redis as the client sends them; each frame's
masks are published as soon as they are computed, with the server-side timings.

Policy `latest`: when several frames wait, the newest is computed and the others are published as
dropped; policy `all`: every frame is computed (the API refuses frames beyond the session's bound). A
frame that cannot be decoded, or does not fit the session, is published with its error and the session
goes on. The session ends when the client says so (after its last frame is answered), after its idle
timeout, or when it is cancelled.

Takeover: the worker saves the tracker state with the input position every few seconds. Another worker
restores it, re-runs the input frames after it that were already answered (without answering them
again, and skipping those that were dropped), then goes on live.
"""

from __future__ import annotations

import logging
import time

from ..errors import classify
from ..jobs.records import Job, Policy
from ..media.errors import MediaError
from ..media.frames import decode_image
from ..media.rle import frame_objects
from ..tracking.pipeline import resolve
from ..vos.errors import TrackerInputError
from ..vos.tracker import Tracker, dumps, loads
from .run import Abort, Run, RuntimePrompts

log = logging.getLogger("agss.worker")
POLL_MS = 200  # longest wait for input before the worker looks at its stop flag and the idle timeout


class _Session:
    def __init__(self, run: Run, session: Job):
        self.run, self.session = run, session
        opts, settings = session.options, run.settings
        model = run.model_for(opts.get("model") or settings.model)
        flow = opts.get("flow") or settings.flow
        self.tracker = Tracker(model, flow=flow, long_side=opts.get("long_side") or settings.long_side,
                               occlusions=settings.occlusions)
        self.prompts = RuntimePrompts(run.queue, session.id)
        self.next = session.frames_done  # the next index to answer
        self.pos = "0-0"  # input stream id consumed up to
        self.covered = 0  # frames the tracker state has seen
        self.skip: set[int] = set()  # answered earlier as dropped or failed: not re-run
        saved = run.queue.load_checkpoint(session.id)
        if saved is not None and saved[0] <= session.frames_done:
            self.covered, state, self.pos = saved[0], saved[1], saved[2] or "0-0"
            self.tracker = Tracker.from_state(model, loads(state), flow=flow)
            self.prompts.forget_before(self.covered)
            self.skip = run.queue.unanswered(session.id, self.covered, session.frames_done)
            log.info("resumed from a checkpoint", extra={"job_id": session.id, "frame": self.covered})

    def ids(self) -> list[int]:
        return sorted(set(self.tracker.ids) | self.prompts.ids)

    def publish(self, index: int, objects: list[dict], events: list[dict], meta: dict, dropped: bool = False,
                stages: dict[str, float] | None = None) -> None:
        out = self.run.queue.publish(self.run.claim, index, objects, events, stages, meta, dropped)
        if not out.ok:
            raise Abort(str(out))
        self.next = index + 1

    def drop_until(self, index: int) -> None:
        """Frames before `index` that will not be computed are answered as dropped, in order."""
        while self.next < index:
            self.publish(self.next, [], [], {"dropped": True}, dropped=True)

    def compute(self, index: int, data: bytes, received: float, replay: bool = False) -> None:
        t0 = time.time()
        if not replay:
            self.run.queue.mark(self.session.id, current=index)  # closes the frame to prompts
        prompts = self.prompts(index)
        try:
            rgb = decode_image(data, f"frame {index}")
            t1 = time.time()
            masks = resolve(prompts, rgb) if prompts else None
            t2 = time.time()
            first = self.tracker.input_size is None
            labels = self.tracker.step(rgb, masks)
        except (MediaError, TrackerInputError) as e:  # this frame is unusable; the session goes on
            if not replay:
                spec = classify(e)
                self.publish(index, [], [], {"error": {"code": spec.code, "message": str(e)}})
            return
        t3 = time.time()
        if first:
            h, w = self.tracker.input_size
            self.run.queue.mark(self.session.id, height=h, width=w)
        if replay:
            return
        objects = frame_objects(labels, self.ids())
        for o in objects:
            o["score"] = self.tracker.scores.get(o["id"], 0.0)
        stages = {"decode": t1 - t0, "prompt": t2 - t1, **self.tracker.timings}
        timings = {"received": received, "started": t0, "queued_s": round(t0 - received, 4),
                   "step_s": round(t3 - t2, 4), **{f"{k}_s": round(v, 4) for k, v in stages.items()}}
        timings["published"] = time.time()
        self.publish(index, objects, self.tracker.events, {"timings": timings}, stages=stages)
        if self.run.settings.frame_delay_seconds:
            time.sleep(self.run.settings.frame_delay_seconds)

    def checkpoint(self) -> None:
        self.run.queue.save_checkpoint(self.run.claim, self.next, dumps(self.tracker.state_dict()), self.pos)
        self.run.queue.trim_input(self.session.id, self.pos)


def run_session(run: Run, session: Job) -> tuple[int, str]:
    """-> (frames answered, how it ended: client | idle). Raises Abort when cancelled, taken over or stopping."""
    s = _Session(run, session)
    settings = run.settings
    last_input = last_save = time.monotonic()
    while True:
        if run.stop.is_set():
            s.checkpoint()
            raise Abort("shutdown")
        run.check()
        entries = run.queue.read_input(session.id, s.pos, POLL_MS)
        now = time.monotonic()
        if not entries:
            if now - last_input > session.idle_timeout:
                return s.next, "idle"
            if now - last_save >= settings.checkpoint_seconds:
                s.checkpoint()
                last_save = now
            continue
        last_input = now
        frames = [(eid, int(f["index"]), f["data"], float(f["t"])) for eid, f in entries if "index" in f]
        ended = any("end" in f for _, f in entries)
        live = []
        for eid, index, data, received in frames:
            if index < s.covered:
                continue
            if index < session.frames_done:  # answered before a takeover: re-run to rebuild the state
                if index not in s.skip:
                    s.compute(index, data, received, replay=True)
                s.pos = eid
                continue
            live.append((eid, index, data, received))
        if session.policy == Policy.LATEST and len(live) > 1:
            live = live[-1:]  # the newest; the others are answered as dropped
        stopped = False
        for eid, index, data, received in live:
            s.drop_until(index)
            s.compute(index, data, received)
            s.pos = eid
            if run.stop.is_set():
                stopped = True  # the frames after this one stay in the input for the next worker
                break
        if stopped:
            continue
        s.pos = max(s.pos, entries[-1][0], key=_stream_id)
        if ended:
            s.drop_until(run.queue.get(session.id).frames_in)  # frames never read (trimmed) count as dropped
            return s.next, "client"
        if time.monotonic() - last_save >= settings.checkpoint_seconds:
            s.checkpoint()
            last_save = time.monotonic()


def _stream_id(eid: str) -> tuple[int, int]:
    ms, seq = eid.split("-")
    return int(ms), int(seq)
