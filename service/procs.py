"""Start the API and worker processes on loopback against a given Redis (benchmarks and tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis

from .config import Settings
from .embedded_redis import free_port
from .healthcheck import check
from .jobs.keys import Keys


class Stack:
    """`agss-vos api` + N `agss-vos worker` processes, with their own key prefix."""

    def __init__(self, redis_url: str, prefix: str, workers: int = 1, env: dict | None = None, log_dir=None,
                 grpc: bool = False):
        self.redis_url, self.prefix = redis_url, prefix
        self.port, self.grpc_port = free_port(), free_port()
        self.env = {**os.environ, "AGSS_REDIS_URL": redis_url, "AGSS_KEY_PREFIX": prefix,
                    "AGSS_HTTP_PORT": str(self.port), "AGSS_GRPC_PORT": str(self.grpc_port), **(env or {})}
        self.with_grpc = grpc
        self.grpc_proc: subprocess.Popen | None = None
        self.n_workers = workers
        self.log_dir = log_dir
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _popen(self, *args: str, name: str) -> subprocess.Popen:
        out = open(os.path.join(self.log_dir, f"{name}.log"), "ab") if self.log_dir else subprocess.DEVNULL
        return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=self.env, stdout=out,
                                stderr=subprocess.STDOUT)

    def start_worker(self) -> subprocess.Popen:
        p = self._popen("worker", name=f"worker{len(self.workers)}")
        self.workers.append(p)
        return p

    @property
    def settings(self) -> Settings:
        return Settings(http_port=self.port, grpc_port=self.grpc_port, redis_url=self.redis_url,
                        key_prefix=self.prefix)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 60.0) -> Stack:
        self.api = self._popen("api", name="api")
        if self.with_grpc:
            self.grpc_proc = self._popen("grpc", name="grpc")
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_ready(self.n_workers, timeout)
        return self

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        """Until the API answers and `workers` workers have sent a heartbeat (model loaded)."""
        r = redis.from_url(self.redis_url)
        pattern = Keys(self.prefix).worker_pattern()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in (("api", self.api), ("grpc", self.grpc_proc)):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}")
            ok = check("api", self.settings) is None
            if ok and self.grpc_proc is not None:
                ok = check("grpc", self.settings) is None
            if ok and sum(1 for _ in r.scan_iter(match=pattern)) >= workers:
                return
            time.sleep(0.2)
        raise TimeoutError("service did not become ready")

    def stop(self) -> None:
        procs = [*self.workers, self.api, self.grpc_proc]
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in procs:
            if p is not None:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
