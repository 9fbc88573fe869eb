"""The `agss.v1.Segmentation` RPCs: a thin adapter over service/jobs, like the HTTP routes.

Errors are raised as the typed errors of service/jobs and service/media; grpc/interceptor.py turns them
into status codes for every RPC.
"""

from __future__ import annotations

import asyncio
import json

import grpc
from pydantic import ValidationError

from ..config import Settings
from ..errors import classify, expected_types
from ..jobs import intake
from ..jobs.errors import BadOptionsError, UploadTooLargeError
from ..jobs.records import Job, JobStatus, iso
from ..jobs.store import JobStore
from ..media.errors import MediaError
from .interceptor import caller
from .pb import segmentation_pb2 as pb2
from .pb import segmentation_pb2_grpc as pb2_grpc


def job_message(job: Job) -> pb2.Job:
    return pb2.Job(id=job.id, status=job.status.value, frames_total=job.frames_total, frames_done=job.frames_done,
                   objects=job.objects, error_code=job.error_code, error_message=job.error_message,
                   width=job.width, height=job.height, created_at=iso(job.created_at) or "",
                   started_at=iso(job.started_at) or "", finished_at=iso(job.finished_at) or "")


def frame_message(frame: dict) -> pb2.Frame:
    return pb2.Frame(index=frame["index"], published_at=frame.get("published_at", 0.0), objects=[
        pb2.ObjectMask(id=o["id"], rle=pb2.Rle(size=o["rle"]["size"], counts=o["rle"]["counts"]), area=o["area"],
                       bbox=o["bbox"], score=o.get("score", 0.0)) for o in frame["objects"]],
        events=[pb2.Event(**e) for e in frame.get("events", [])], timings=frame.get("timings", {}))


def session_message(s: Job) -> pb2.Session:
    return pb2.Session(id=s.id, status=s.status.value, frames_received=s.frames_in, frames_done=s.frames_done,
                       frames_dropped=s.frames_dropped, policy=s.policy.value, objects=s.objects,
                       ended_by=s.ended_by)


def track_response(frame: dict) -> pb2.TrackResponse:
    """An answered frame of a live session as the message a Track client receives."""
    if frame.get("dropped"):
        return pb2.TrackResponse(dropped=frame["index"])
    if frame.get("error"):
        return pb2.TrackResponse(error=pb2.TrackError(index=frame["index"], **frame["error"]))
    return pb2.TrackResponse(frame=frame_message(frame))


def track_error(exc: Exception, index: int = -1) -> pb2.TrackResponse:
    spec = classify(exc)
    return pb2.TrackResponse(error=pb2.TrackError(index=index, code=spec.code if spec else "internal",
                                                  message=str(exc) if spec else "internal error"))


async def _video_chunks(request_iterator):
    async for req in request_iterator:
        if req.WhichOneof("part") != "video_chunk":
            raise BadOptionsError("only the first CreateJobRequest may carry a spec")
        yield req.video_chunk


class SegmentationServicer(pb2_grpc.SegmentationServicer):
    def __init__(self, settings: Settings, store: JobStore):
        self.settings, self.store = settings, store

    async def CreateJob(self, request_iterator, context) -> pb2.Job:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "spec":
            raise BadOptionsError("the first CreateJobRequest must carry the spec")
        spec = first.spec
        if spec.idempotency_key:
            existing = await self.store.find_idempotent(spec.idempotency_key, caller())
            if existing:
                return job_message(await self.store.get(existing, caller()))
        options = intake.parse_options(spec.options_json)
        if len(spec.masks) > self.settings.max_mask_bytes:
            raise UploadTooLargeError(f"masks are larger than the limit of {self.settings.max_mask_bytes} bytes")
        if not spec.masks:
            raise BadOptionsError("spec.masks is empty")
        with intake.upload_folder("agss-grpc-") as folder:
            masks = folder / f"masks{intake.safe_suffix(spec.masks_filename, '.png')}"
            masks.write_bytes(spec.masks)
            video = folder / f"video{intake.safe_suffix(spec.video_filename, '.bin')}"
            with intake.LimitedFile(video, self.settings.max_upload_bytes, "video") as out:
                size = await out.copy_from_async(_video_chunks(request_iterator))
            if size == 0:
                raise BadOptionsError("no video chunks were sent")
            job = await intake.accept(self.store, video, spec.video_filename, masks, spec.masks_filename, options,
                                      spec.idempotency_key or None, caller())
        return job_message(job)

    async def GetJob(self, request, context) -> pb2.Job:
        return job_message(await self.store.get(request.job_id, caller()))

    async def CancelJob(self, request, context) -> pb2.Job:
        return job_message(await self.store.cancel(request.job_id, caller()))

    async def AddPrompts(self, request, context) -> pb2.Job:
        try:
            doc = json.loads(request.prompts_json)
        except json.JSONDecodeError as e:
            raise MediaError(f"prompts_json is not valid JSON ({e.msg})") from None
        job = await self.store.get(request.job_id, caller())
        frames, new_ids = await asyncio.to_thread(intake.job_prompts, job, doc)
        return job_message(await self.store.add_prompts(request.job_id, frames, new_ids))

    async def Track(self, request_iterator, context):
        first = await anext(request_iterator, None)
        part = first.WhichOneof("part") if first is not None else None
        if part == "spec":
            try:
                raw = json.loads(first.spec.options_json or "{}")
                options = intake.SessionOptions(**raw) if isinstance(raw, dict) else None
            except (json.JSONDecodeError, ValidationError, TypeError) as e:
                raise BadOptionsError(f"spec.options_json: {e}") from None
            if options is None:
                raise BadOptionsError("spec.options_json must be a JSON object")
            session = await self.store.create_session(intake.new_session(self.settings, options), caller())
            start = 0
        elif part == "attach":
            session = await self.store.get_session(first.attach.session_id, caller())
            start = max(first.attach.start_index, 0)
        else:
            raise BadOptionsError("the first TrackRequest must carry a spec or an attach")
        yield pb2.TrackResponse(session=session_message(session))
        out: asyncio.Queue = asyncio.Queue()
        done = object()

        async def relay() -> None:
            try:
                async for frame in self.store.stream(session.id, start):
                    await out.put(track_response(frame))
                await out.put(pb2.TrackResponse(ended=session_message(await self.store.get(session.id))))
            except Exception as e:  # noqa: BLE001 - ends the stream with its status
                await out.put(e)
            await out.put(done)

        async def receive() -> None:
            async for req in request_iterator:
                kind = req.WhichOneof("part")
                try:
                    if kind == "frame":
                        intake.check_frame(req.frame, self.settings.max_frame_bytes)
                        index = await self.store.push_frame(session.id, req.frame, session.max_pending)
                        await out.put(pb2.TrackResponse(ack=index))
                    elif kind == "prompts_json":
                        current = await self.store.get(session.id)
                        doc = json.loads(req.prompts_json)
                        frames, new_ids = await asyncio.to_thread(intake.job_prompts, current, doc)
                        await self.store.add_prompts(session.id, frames, new_ids)
                    elif kind == "end":
                        await self.store.end_session(session.id)
                    else:
                        raise BadOptionsError(f"a {kind} can only be the first TrackRequest")
                except json.JSONDecodeError as e:
                    await out.put(track_error(MediaError(f"prompts_json is not valid JSON ({e.msg})")))
                except expected_types() as e:
                    await out.put(track_error(e))

        tasks = [asyncio.create_task(relay()), asyncio.create_task(receive())]
        try:
            while (item := await out.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()

    async def StreamFrames(self, request, context):
        await self.store.get(request.job_id, caller())
        async for frame in self.store.stream(request.job_id, max(request.start_index, 0)):
            yield frame_message(frame)
        job = await self.store.get(request.job_id)
        if job.status == JobStatus.FAILED:
            await context.abort(grpc.StatusCode.ABORTED, f"job failed: {job.error_code}: {job.error_message}")
        elif job.status == JobStatus.CANCELLED:
            await context.abort(grpc.StatusCode.CANCELLED, f"job cancelled: {job.error_message}")
