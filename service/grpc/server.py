"""The gRPC servicer (grpc.aio): a thin adapter over service/jobs, like the HTTP routes."""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..api import intake
from ..config import Settings
from ..errors import classify, expected_types
from ..jobs.broker import JobStore
from ..jobs.errors import BadOptionsError, UploadTooLargeError
from ..jobs.model import Job, iso
from .stubs import load

pb2, pb2_grpc = load()
log = logging.getLogger("agss.grpc")
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["Segmentation"].full_name


def job_message(job: Job) -> pb2.Job:
    return pb2.Job(id=job.id, status=job.status, frames_total=job.frames_total, frames_done=job.frames_done,
                   objects=job.objects, error_code=job.error_code, error_message=job.error_message,
                   width=job.width, height=job.height, created_at=iso(job.created_at) or "",
                   started_at=iso(job.started_at) or "", finished_at=iso(job.finished_at) or "")


def frame_message(frame: dict) -> pb2.Frame:
    return pb2.Frame(index=frame["index"], published_at=frame.get("published_at", 0.0), objects=[
        pb2.ObjectMask(id=o["id"], rle=pb2.Rle(size=o["rle"]["size"], counts=o["rle"]["counts"]), area=o["area"],
                       bbox=o["bbox"]) for o in frame["objects"]])


async def _abort_for(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    spec = classify(exc)
    await context.abort(grpc.StatusCode[spec.grpc], str(exc))


class SegmentationServicer(pb2_grpc.SegmentationServicer):
    def __init__(self, settings: Settings, store: JobStore):
        self.settings, self.store = settings, store

    async def CreateJob(self, request_iterator, context):
        folder = Path(tempfile.mkdtemp(prefix="agss-grpc-"))
        try:
            first = await anext(request_iterator, None)
            if first is None or first.WhichOneof("part") != "spec":
                raise BadOptionsError("the first CreateJobRequest must carry the spec")
            spec = first.spec
            if spec.idempotency_key:
                existing = await self.store.find_idempotent(spec.idempotency_key)
                if existing:
                    return job_message(await self.store.get(existing))
            options = intake.parse_options(spec.options_json)
            if len(spec.masks) > self.settings.max_mask_bytes:
                raise UploadTooLargeError(f"masks are larger than the limit of {self.settings.max_mask_bytes} bytes")
            if not spec.masks:
                raise BadOptionsError("spec.masks is empty")
            masks = folder / f"masks{intake.safe_suffix(spec.masks_filename, '.png')}"
            masks.write_bytes(spec.masks)
            video = folder / f"video{intake.safe_suffix(spec.video_filename, '.bin')}"
            size = 0
            with open(video, "wb") as f:
                async for req in request_iterator:
                    if req.WhichOneof("part") != "video_chunk":
                        raise BadOptionsError("only the first CreateJobRequest may carry a spec")
                    size += len(req.video_chunk)
                    if size > self.settings.max_upload_bytes:
                        raise UploadTooLargeError(f"video is larger than the limit of "
                                                  f"{self.settings.max_upload_bytes} bytes")
                    f.write(req.video_chunk)
            if size == 0:
                raise BadOptionsError("no video chunks were sent")
            job = await intake.accept(self.store, self.settings, folder, video, spec.video_filename, masks,
                                      spec.masks_filename, options, spec.idempotency_key or None)
            return job_message(job)
        except expected_types() as e:
            await _abort_for(context, e)
        finally:
            intake.cleanup(folder)

    async def GetJob(self, request, context):
        try:
            return job_message(await self.store.get(request.job_id))
        except expected_types() as e:
            await _abort_for(context, e)

    async def CancelJob(self, request, context):
        try:
            return job_message(await self.store.cancel(request.job_id))
        except expected_types() as e:
            await _abort_for(context, e)

    async def StreamFrames(self, request, context):
        try:
            await self.store.get(request.job_id)
            async for frame in self.store.stream(request.job_id, max(request.start_index, 0)):
                yield frame_message(frame)
            job = await self.store.get(request.job_id)
        except expected_types() as e:
            await _abort_for(context, e)
            return
        if job.status == "failed":
            await context.abort(grpc.StatusCode.ABORTED, f"job failed: {job.error_code}: {job.error_message}")
        elif job.status == "cancelled":
            await context.abort(grpc.StatusCode.CANCELLED, f"job cancelled: {job.error_message}")


async def start_server(settings: Settings, store: JobStore) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    # The receive limit fits the spec message (which carries the masks) and any sane chunk size.
    limit = settings.max_mask_bytes + (4 << 20)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", 64 << 20)])
    pb2_grpc.add_SegmentationServicer_to_server(SegmentationServicer(settings, store), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"{settings.http_host}:{settings.grpc_port}")
    await server.start()
    log.info("grpc api on %s:%s", settings.http_host, settings.grpc_port)
    return server, health_servicer


async def serve_grpc(settings: Settings) -> None:
    """`agss-vos grpc`: the gRPC API alone, until SIGTERM or SIGINT."""
    store = JobStore(settings)
    server, health_servicer = await start_server(settings, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(5)
    await store.close()
