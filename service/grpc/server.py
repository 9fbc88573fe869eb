"""The gRPC server: the Segmentation servicer behind the error interceptor, plus health and reflection."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..config import Settings
from ..jobs.apikeys import authenticate
from ..jobs.store import JobStore
from .interceptor import ServiceInterceptor
from .pb import segmentation_pb2 as pb2
from .pb import segmentation_pb2_grpc as pb2_grpc
from .servicer import SegmentationServicer

log = logging.getLogger("agss.grpc")
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["Segmentation"].full_name


async def start_server(settings: Settings, store: JobStore) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    # The receive limit fits the spec message (which carries the masks) and any sane chunk size.
    limit = settings.max_mask_bytes + (4 << 20)
    async def auth(header: str | None):
        return await authenticate(settings.auth, store.r, store.keys, header)

    server = grpc.aio.server(interceptors=[ServiceInterceptor(auth)],
                             options=[("grpc.max_receive_message_length", limit),
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


async def stop_server(server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, grace: float = 5) -> None:
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace)


async def serve_grpc(settings: Settings) -> None:
    """`agss-vos grpc`: the gRPC API alone, until SIGTERM or SIGINT."""
    store = JobStore(settings)
    server, health_servicer = await start_server(settings, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stop_server(server, health_servicer)
    await store.close()
