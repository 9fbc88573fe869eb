"""`agss-vos serve`: Redis (embedded unless AGSS_REDIS_URL is set), the HTTP and gRPC APIs and N worker
processes, in one process tree. Ctrl-C stops everything in order: API, workers (SIGTERM: each hands
back or finishes its job), then the embedded Redis (which saves its data)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading

import uvicorn

from .api.app import create_app
from .config import Settings
from .embedded_redis import EmbeddedRedis

log = logging.getLogger("agss.serve")


class WorkerPool:
    def __init__(self, n: int, env: dict):
        self.n, self.env = n, env
        self.procs: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def _spawn(self) -> subprocess.Popen:
        # Own process group: a Ctrl-C on the terminal reaches serve only, which then stops workers in order.
        return subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=self.env,
                                start_new_session=True)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.n)]
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(2.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self._stopping.is_set():
                    log.warning("worker exited with %s; starting another", p.returncode)
                    self.procs[i] = self._spawn()

    def stop(self, grace: float = 60.0) -> None:
        self._stopping.set()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _apis(settings: Settings) -> None:
    """HTTP and gRPC in one event loop; uvicorn owns the signals, gRPC stops when it returns."""
    from .grpc.server import start_server
    from .jobs.broker import JobStore

    store = JobStore(settings)
    grpc_server, health = await start_server(settings, store)
    config = uvicorn.Config(create_app(settings), host=settings.http_host, port=settings.http_port,
                            log_config=None, access_log=False)
    log.info("http api on http://%s:%s, grpc on port %s, %d workers", settings.http_host, settings.http_port,
             settings.grpc_port, settings.workers)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await health.enter_graceful_shutdown()
        await grpc_server.stop(5)
        await store.close()


def serve(settings: Settings) -> int:
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis").start()
        settings = settings.model_copy(update={"redis_url": embedded.url})
        log.info("embedded redis on %s, data in %s", embedded.url, embedded.data_dir)
    env = {**os.environ, "AGSS_REDIS_URL": settings.redis_url}
    pool = WorkerPool(settings.workers, env)
    try:
        pool.start()
        asyncio.run(_apis(settings))
    finally:
        pool.stop()
        if embedded:
            embedded.stop()
    return 0
