"""The one way our processes are started and stopped: `agss-vos ROLE` children of a Supervisor.

`agss-vos serve` supervises its workers with it (restarting any that exit); `Stack` (tests and
benchmarks) runs an API, optionally a gRPC server, and workers against a given Redis with it.
Children get SIGTERM if the process that started them dies, however it dies (Linux parent-death
signal, set by the child itself: see `die_with_parent`), so nothing is left running without a parent.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from ..config import Settings
from ..jobs.keys import Keys
from .healthcheck import check
from .redis import free_port

log = logging.getLogger("agss.supervisor")
PARENT_ENV = "AGSS_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Called first thing by a child we started: SIGTERM when our supervisor dies, even by SIGKILL.

    The parent's pid comes in the environment; checking it after prctl closes the race where the
    parent died before the child asked to be told.
    """
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Child:
    name: str
    args: tuple[str, ...]
    proc: subprocess.Popen
    env: dict[str, str]  # on top of the supervisor's


class Supervisor:
    """Starts `python -m service.cli ARGS...` children with one environment; stops them all in order."""

    def __init__(self, env: dict[str, str], log_dir: str | Path | None = None, restart: bool = False,
                 new_session: bool = True):
        self.env, self.log_dir, self.restart, self.new_session = env, log_dir, restart, new_session
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def spawn(self, *args: str, name: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        name = name or f"{args[0]}{sum(1 for c in self.children if c.args == args)}"
        child = Child(name, args, self._popen(name, args, env), env or {})
        with self._lock:
            self.children.append(child)
        if self.restart and self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._thread.start()
        return child.proc

    def _popen(self, name: str, args: tuple[str, ...], env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(Path(self.log_dir) / f"{name}.log", "ab") if self.log_dir else None
        try:
            # A session of its own: a Ctrl-C on the terminal reaches only us, and we stop children in order.
            return subprocess.Popen([sys.executable, "-m", "service.cli", *args],
                                    env={**self.env, **(env or {}), PARENT_ENV: str(os.getpid())}, stdout=out,
                                    stderr=subprocess.STDOUT if out else None, start_new_session=self.new_session)
        finally:
            if out:
                out.close()

    def procs(self, role: str | None = None) -> list[subprocess.Popen]:
        with self._lock:
            return [c.proc for c in self.children if role is None or c.args[0] == role]

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                for c in self.children:
                    if c.proc.poll() is not None and not self._stopping.is_set():
                        log.warning("%s exited with %s; starting another", c.name, c.proc.returncode)
                        c.proc = self._popen(c.name, c.args, c.env)

    def stop(self, grace: float = 60.0, order: tuple[str, ...] = ("worker",)) -> None:
        """SIGTERM to every child (the roles in `order` first, each group waited for), SIGKILL after `grace`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            children = list(self.children)
        groups = [[c for c in children if c.args[0] == role] for role in order]
        groups.append([c for c in children if c.args[0] not in order])
        for group in groups:
            for c in group:
                if c.proc.poll() is None:
                    c.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for c in group:
                try:
                    c.proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Stack:
    """`agss-vos api` (+ `grpc`) + N `agss-vos worker` processes on loopback, with their own key prefix."""

    def __init__(self, redis_url: str, prefix: str, workers: int = 1, env: dict | None = None,
                 log_dir: str | Path | None = None, grpc: bool = False):
        self.redis_url, self.prefix = redis_url, prefix
        self.port, self.grpc_port = free_port(), free_port()
        self.env = {**os.environ, "AGSS_REDIS_URL": redis_url, "AGSS_KEY_PREFIX": prefix,
                    "AGSS_HTTP_HOST": "127.0.0.1", "AGSS_HTTP_PORT": str(self.port),
                    "AGSS_GRPC_PORT": str(self.grpc_port), **(env or {})}
        self.with_grpc = grpc
        self.n_workers = workers
        self.supervisor = Supervisor(self.env, log_dir, new_session=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def settings(self) -> Settings:
        return Settings(http_port=self.port, grpc_port=self.grpc_port, redis_url=self.redis_url,
                        key_prefix=self.prefix)

    @property
    def workers(self) -> list[subprocess.Popen]:
        return self.supervisor.procs("worker")

    def start_api(self) -> subprocess.Popen:
        return self.supervisor.spawn("api", name="api")

    def start_api_on_another_port(self) -> str:
        """A second API process on the same Redis (any replica serves any job or session); its URL."""
        port = free_port()
        self.supervisor.spawn("api", name=f"api-{port}", env={"AGSS_HTTP_PORT": str(port)})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while check("api", self.settings.model_copy(update={"http_port": port})) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API on {url} did not answer")
            time.sleep(0.2)
        return url

    def start_worker(self) -> subprocess.Popen:
        return self.supervisor.spawn("worker", name=f"worker{len(self.workers)}")

    def start(self, timeout: float = 60.0) -> Stack:
        self.start_api()
        if self.with_grpc:
            self.supervisor.spawn("grpc", name="grpc")
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_ready(self.n_workers, timeout)
        return self

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        """Until the API (and gRPC) answer and `workers` workers have sent a heartbeat (model loaded)."""
        r = redis.from_url(self.redis_url)
        pattern = Keys(self.prefix).worker_pattern()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for p in self.supervisor.procs("api") + self.supervisor.procs("grpc"):
                    if p.poll() is not None:
                        raise RuntimeError(f"{p.args[3]} exited with {p.returncode}")
                ok = check("api", self.settings) is None
                if ok and self.with_grpc:
                    ok = check("grpc", self.settings) is None
                if ok and sum(1 for _ in r.scan_iter(match=pattern)) >= workers:
                    return
                time.sleep(0.2)
        finally:
            r.close()
        raise TimeoutError("service did not become ready")

    def stop(self) -> None:
        self.supervisor.stop(grace=30, order=("worker",))

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
