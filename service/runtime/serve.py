"""`agss-vos serve`: Redis (embedded unless AGSS_REDIS_URL is set), the HTTP and gRPC APIs and N worker
processes, in one process tree. Ctrl-C or SIGTERM stops everything in order: API, workers (each hands
its job back), then the embedded Redis (which saves its data); exit code 0. If serve itself is killed,
its workers and embedded Redis get SIGTERM from the kernel (parent-death signal)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import uvicorn

from ..api.app import create_app
from ..config import Settings
from ..jobs.apikeys import register_settings_file
from .redis import EmbeddedRedis
from .supervisor import Supervisor

log = logging.getLogger("agss.serve")


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it once it has shut down, which would kill serve before
    it stops its workers and Redis: serve handles SIGINT and SIGTERM itself."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _apis(settings: Settings) -> None:
    """HTTP and gRPC in one event loop until SIGINT or SIGTERM (a second one forces the exit)."""
    from ..grpc.server import start_server, stop_server
    from ..jobs.store import JobStore

    store = JobStore(settings)
    grpc_server, health = await start_server(settings, store)
    config = uvicorn.Config(create_app(settings), host=settings.http_host, port=settings.http_port,
                            log_config=None, access_log=False,
                            timeout_graceful_shutdown=settings.shutdown_seconds,
                            timeout_keep_alive=settings.keepalive_seconds)
    log.info("http api on http://%s:%s, grpc on port %s, %d workers", settings.http_host, settings.http_port,
             settings.grpc_port, settings.workers)
    server = _Server(config)

    def on_signal() -> None:
        server.force_exit = server.should_exit
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await server.serve()
    finally:
        await stop_server(grpc_server, health)
        await store.close()


def serve(settings: Settings) -> int:
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis").start()
        settings = settings.model_copy(update={"redis_url": embedded.url})
        log.info("embedded redis on %s, data in %s", embedded.url, embedded.data_dir)
        register_settings_file(settings)
    if "storage" not in settings.model_fields_set:  # one machine: inputs wait in a folder, not in Redis
        settings = settings.model_copy(update={"storage": "local"})
    workers = Supervisor({**os.environ, "AGSS_REDIS_URL": settings.redis_url, "AGSS_STORAGE": settings.storage},
                         restart=True)
    try:
        for _ in range(settings.workers):
            workers.spawn("worker")
        asyncio.run(_apis(settings))
    finally:
        workers.stop()
        if embedded:
            embedded.stop()
    return 0
